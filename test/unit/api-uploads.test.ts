// POST /api/v1/uploads and images registered from uploads: a streamed body stored under the asset store's
// tmp/ with its sha-256, the size cap (413), the content type (415), roles, unknown ids, and the upload used
// once and then removed.
import t from 'tap';
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { resourcesFixture, type ResourcesFixture } from '../helpers/resources-app.ts';
import { Uploads } from '../../src/api/routes/uploads.ts';

const KERNEL = Buffer.alloc(300_000, 9);
const INITRD = Buffer.from('uploaded-initrd'.repeat(500));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function upload(f: ResourcesFixture, who: { authorization: string } | undefined, body: Buffer | Readable, extra: Record<string, string> = {}, query = '') {
  return f.app.inject({ method: 'POST', url: `/api/v1/uploads${query}`, headers: { ...(who ?? {}), 'content-type': 'application/octet-stream', ...extra }, payload: body });
}

async function finished(f: ResourcesFixture, id: string): Promise<Record<string, unknown>> {
  for (let i = 0; i < 200; i++) {
    const job = (await f.call('GET', `/api/v1/jobs/${id}`, f.as.viewer)).json() as Record<string, unknown>;
    if (job.state !== 'running') return job;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`job ${id} still running`);
}

const tmpFiles = async (f: ResourcesFixture) => (await readdir(join(f.assets.dir, 'tmp'))).filter((n) => n.startsWith('upload-'));

t.test('a streamed upload: sha-256 and size, then an image registered from uploads; the uploads are used once', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, bmc: false });
  // A stream in small chunks: the handler reads it as it comes (nothing waits for a whole body).
  const chunks = Array.from({ length: 30 }, (_, i) => KERNEL.subarray(i * 10_000, (i + 1) * 10_000));
  const res = await upload(f, f.as.admin, Readable.from(chunks), {}, '?filename=vmlinuz');
  t.equal(res.statusCode, 201, res.body);
  const k = res.json() as { id: string; size: number; sha256: string; filename: string; expiresAt: string };
  t.match(k, { id: /^upl_[0-9a-f]{16}$/, size: KERNEL.length, sha256: sha(KERNEL), filename: 'vmlinuz', expiresAt: String });
  t.ok(Date.parse(k.expiresAt) > Date.now() + 59 * 60_000, 'kept for an hour');
  const i = (await upload(f, f.as.admin, INITRD, { 'content-type': 'application/octet-stream; charset=binary' })).json() as { id: string; sha256: string };
  t.equal(i.sha256, sha(INITRD));
  t.equal((await tmpFiles(f)).length, 2, 'both in the asset store\'s tmp/');

  const add = await f.call('POST', '/api/v1/images', f.as.admin, { name: 'uploaded', kernel: { upload: k.id }, initrd: { upload: i.id, sha256: sha(INITRD) } });
  t.equal(add.statusCode, 202, add.body);
  const done = await finished(f, (add.json() as { job: { id: string } }).job.id);
  t.match(done, { state: 'succeeded', result: { image: 'uploaded', size: KERNEL.length + INITRD.length } });
  const image = (await f.call('GET', '/api/v1/images/uploaded', f.as.viewer)).json();
  t.match(image, { files: { kernel: { sha256: sha(KERNEL), size: KERNEL.length, source: 'upload:vmlinuz' }, initrd: { sha256: sha(INITRD), source: 'upload:upload' } } });
  t.same(await tmpFiles(f), [], 'used uploads are removed');

  const again = await f.call('POST', '/api/v1/images', f.as.admin, { name: 'again', kernel: { upload: k.id }, initrd: { upload: i.id } });
  t.equal(again.statusCode, 404);
  t.match(again.json(), { code: 'UPLOAD_NOT_FOUND', message: /^body\.kernel\.upload: / });
});

t.test('the size cap: 413 ASSET_TOO_LARGE by Content-Length or while streaming; nothing kept', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, bmc: false });
  const big = Buffer.alloc(f.config.boot.maxAssetBytes + 1);
  const byLength = await upload(f, f.as.admin, big);
  t.equal(byLength.statusCode, 413);
  t.equal(byLength.json().code, 'ASSET_TOO_LARGE');
  // No Content-Length (a chunked stream): counted as it arrives.
  const streamed = await upload(f, f.as.admin, Readable.from([big.subarray(0, 600_000), big.subarray(600_000)]));
  t.equal(streamed.statusCode, 413, streamed.body);
  t.equal(streamed.json().code, 'ASSET_TOO_LARGE');
  t.same(await tmpFiles(f), [], 'no partial file left');
  const exact = await upload(f, f.as.admin, Buffer.alloc(f.config.boot.maxAssetBytes));
  t.equal(exact.statusCode, 201, 'exactly the limit is allowed');
});

t.test('roles, credentials, content type and bad references', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, bmc: false });
  t.equal((await upload(f, undefined, INITRD)).statusCode, 401);
  for (const role of ['viewer', 'operator'] as const) {
    const res = await upload(f, f.as[role], INITRD);
    t.equal(res.statusCode, 403, role);
    t.equal(res.json().code, 'AUTH_FORBIDDEN');
  }
  const json = await f.app.inject({ method: 'POST', url: '/api/v1/uploads', headers: { ...f.as.admin, 'content-type': 'application/json' }, payload: '{"a":1}' });
  t.equal(json.statusCode, 415);
  t.equal(json.json().code, 'UPLOAD_CONTENT_TYPE');
  const none = await f.app.inject({ method: 'POST', url: '/api/v1/uploads', headers: { ...f.as.admin }, payload: Buffer.from('x') });
  t.equal(none.statusCode, 415);
  const badName = await upload(f, f.as.admin, INITRD, {}, '?filename=%0a');
  t.equal(badName.statusCode, 400);
  t.equal(badName.json().code, 'VALIDATION_FAILED');
  t.same(await tmpFiles(f), []);

  const unknown = await f.call('POST', '/api/v1/images', f.as.admin, { name: 'x', kernel: { upload: 'upl_0123456789abcdef' }, initrd: { upload: 'upl_0123456789abcdef' } });
  t.equal(unknown.statusCode, 404);
  t.equal(unknown.json().code, 'UPLOAD_NOT_FOUND');
  const malformed = await f.call('POST', '/api/v1/images', f.as.admin, { name: 'x', kernel: { upload: '../etc/passwd' }, initrd: { upload: 'upl_0123456789abcdef' } });
  t.equal(malformed.statusCode, 400);
  t.match(malformed.json(), { code: 'VALIDATION_FAILED', message: /body\.kernel/ });
  const both = await f.call('POST', '/api/v1/images', f.as.admin, { name: 'x', kernel: { upload: 'upl_0123456789abcdef', url: 'http://x/k' }, initrd: { url: 'http://x/i' } });
  t.equal(both.statusCode, 400);
  t.match(both.json(), { code: 'VALIDATION_FAILED', message: /^body\.kernel: give either url or upload/ });
  const neither = await f.call('POST', '/api/v1/images', f.as.admin, { name: 'x', kernel: {}, initrd: { url: 'http://x/i' } });
  t.equal(neither.statusCode, 400);

  // A sha256 that does not match the upload fails the job; the upload may be used again.
  const k = (await upload(f, f.as.admin, KERNEL)).json() as { id: string };
  const i = (await upload(f, f.as.admin, INITRD)).json() as { id: string };
  const wrong = await f.call('POST', '/api/v1/images', f.as.admin, { name: 'x', kernel: { upload: k.id, sha256: '0'.repeat(64) }, initrd: { upload: i.id } });
  t.equal(wrong.statusCode, 202);
  t.match(await finished(f, (wrong.json() as { job: { id: string } }).job.id), { state: 'failed', error: { code: 'ASSET_CHECKSUM_MISMATCH' } });
  const retry = await f.call('POST', '/api/v1/images', f.as.admin, { name: 'x', kernel: { upload: k.id }, initrd: { upload: i.id } });
  t.equal(retry.statusCode, 202, retry.body);
  t.match(await finished(f, (retry.json() as { job: { id: string } }).job.id), { state: 'succeeded' });
});

t.test('the route is in the OpenAPI document', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, bmc: false });
  const doc = (await f.call('GET', '/api/openapi.json', f.as.viewer)).json() as { paths: Record<string, Record<string, unknown>> };
  t.ok(doc.paths['/api/v1/uploads']?.post, 'POST /api/v1/uploads');
});

t.test('an upload unused for its time to live is deleted', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, bmc: false });
  const uploads = new Uploads(join(f.assets.dir, 'tmp'), 50);
  const { id, path } = uploads.newPath();
  const { writeFile } = await import('node:fs/promises');
  await writeFile(path, 'x');
  uploads.add({ id, path, filename: 'f', size: 1, sha256: sha(Buffer.from('x')) });
  t.ok(uploads.get(id));
  await new Promise((r) => setTimeout(r, 120));
  t.equal(uploads.get(id), undefined);
  t.same(await tmpFiles(f), []);
});

t.test('over a real socket: a body past the cap gets its 413, not a reset', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, bmc: false });
  const { request } = await import('node:http');
  await f.app.listen({ port: 0, host: '127.0.0.1' });
  const port = (f.app.server.address() as { port: number }).port;
  const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/api/v1/uploads', headers: { ...f.as.admin, 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' } }, (r) => {
      let body = '';
      r.on('data', (c: Buffer) => { body += c.toString(); });
      r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    const chunk = Buffer.alloc(64 * 1024);
    let sent = 0;
    const more = (): void => {
      while (sent < 3 * 1024 * 1024) {
        sent += chunk.length;
        if (!req.write(chunk)) { req.once('drain', more); return; }
      }
      req.end();
    };
    more();
  });
  t.equal(res.status, 413);
  t.equal(JSON.parse(res.body).code, 'ASSET_TOO_LARGE');
  t.same(await tmpFiles(f), []);
});
