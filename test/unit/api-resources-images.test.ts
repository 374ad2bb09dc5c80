// /api/v1/images and /api/v1/jobs: an image added from URLs (a real HTTP server on loopback) as a job with
// progress, failures as job error codes, cancellation, removal, roles, and refusals that name the field.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resourcesFixture, type ResourcesFixture } from '../helpers/resources-app.ts';

const KERNEL = Buffer.alloc(300_000, 7);
const INITRD = Buffer.from('initrd-bytes'.repeat(1000));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Files { base: string; slowStarted: Promise<void>; releaseSlow: () => void }

async function fileServer(t: Test): Promise<Files> {
  let releaseSlow: () => void = () => undefined;
  let slowStarted: () => void = () => undefined;
  const started = new Promise<void>((r) => { slowStarted = r; });
  const hanging = new Set<ServerResponse>();
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path === '/kernel') return res.end(KERNEL);
    if (path === '/initrd') return res.end(INITRD);
    if (path === '/big') { res.setHeader('content-length', String(2 * 1024 * 1024)); return res.end(Buffer.alloc(2 * 1024 * 1024)); }
    if (path === '/slow') {
      // 2,000 bytes (in two writes: the asset store reports progress at most every 250 ms, on a chunk),
      // then nothing until released: a download in progress.
      res.setHeader('content-length', String(KERNEL.length));
      res.write(KERNEL.subarray(0, 1000));
      hanging.add(res);
      setTimeout(() => { res.write(KERNEL.subarray(1000, 2000)); slowStarted(); }, 300);
      releaseSlow = () => res.end(KERNEL.subarray(2000));
      return undefined;
    }
    res.statusCode = 404;
    res.end('no');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { for (const h of hanging) h.destroy(); server.closeAllConnections(); server.close(() => r()); }));
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, slowStarted: started, releaseSlow: () => releaseSlow() };
}

async function finished(f: ResourcesFixture, id: string): Promise<Record<string, unknown>> {
  for (let i = 0; i < 200; i++) {
    const job = (await f.call('GET', `/api/v1/jobs/${id}`, f.as.viewer)).json() as Record<string, unknown>;
    if (job.state !== 'running') return job;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`job ${id} still running`);
}

t.test('add from URLs: 202 with a job, progress, the image registered, events; then removed', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, bmc: false });
  const files = await fileServer(t);
  const body = { name: 'debian-12', kernel: { url: `${files.base}/kernel`, sha256: sha(KERNEL) }, initrd: { url: `${files.base}/initrd?sig=SECRET` }, cmdline: 'console=ttyS0' };
  t.equal((await f.call('POST', '/api/v1/images', f.as.operator, body)).statusCode, 403, 'operators do not add images');
  const res = await f.call('POST', '/api/v1/images', f.as.admin, body);
  t.equal(res.statusCode, 202, res.body);
  const { job } = res.json() as { job: { id: string; state: string; kind: string; subject: string; actor: string } };
  t.match(job, { id: /^job_[0-9a-f]{16}$/, kind: 'image.add', subject: 'debian-12', actor: 'a-admin', state: 'running' });
  t.equal(res.headers.location, `/api/v1/jobs/${job.id}`);
  const done = await finished(f, job.id);
  t.match(done, {
    state: 'succeeded', finishedAt: String, result: { image: 'debian-12', size: KERNEL.length + INITRD.length },
    progress: { bytes: KERNEL.length + INITRD.length, total: KERNEL.length + INITRD.length, parts: { kernel: { bytes: KERNEL.length, total: KERNEL.length, done: true }, initrd: { done: true } } },
  });
  const image = (await f.call('GET', '/api/v1/images/debian-12', f.as.viewer)).json();
  t.match(image, { name: 'debian-12', cmdline: 'console=ttyS0', files: { kernel: { sha256: sha(KERNEL), size: KERNEL.length, source: `${files.base}/kernel` }, initrd: { sha256: sha(INITRD), source: `${files.base}/initrd` } } });
  t.notMatch(JSON.stringify(image), /SECRET/, 'the query (a signed URL\'s secret) is not stored');
  const list = (await f.call('GET', '/api/v1/images', f.as.viewer)).json();
  t.same(list.images.map((i: { name: string }) => i.name), ['debian-12']);
  t.match(list, { ephemeralImage: null, ipxe: [] });
  t.match(await f.eventsOf('image.add.started'), [{ actor: 'a-admin', subject: 'debian-12' }]);
  t.match(await f.eventsOf('image.added'), [{ actor: 'a-admin', subject: 'debian-12' }]);
  t.notMatch(JSON.stringify(await f.eventsOf()), /SECRET/);
  t.match((await f.call('GET', '/api/v1/jobs', f.as.viewer)).json(), { items: [{ id: job.id, state: 'succeeded' }] });

  const again = await f.call('POST', '/api/v1/images', f.as.admin, body);
  t.equal(again.statusCode, 409);
  t.equal(again.json().code, 'IMAGE_EXISTS');

  t.equal((await f.call('DELETE', '/api/v1/images/debian-12', f.as.operator)).statusCode, 403);
  const removed = await f.call('DELETE', '/api/v1/images/debian-12', f.as.admin);
  t.equal(removed.statusCode, 200);
  t.same(removed.json(), { name: 'debian-12', removedBlobs: 2 });
  t.match(await f.eventsOf('image.removed'), [{ actor: 'a-admin', subject: 'debian-12', data: { removedBlobs: 2 } }]);
  t.equal((await f.call('GET', '/api/v1/images/debian-12', f.as.viewer)).statusCode, 404);
  t.equal((await f.call('DELETE', '/api/v1/images/debian-12', f.as.admin)).statusCode, 404);
});

t.test('failures end the job with their error code, and register nothing', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, bmc: false });
  const files = await fileServer(t);
  const cases: [Record<string, unknown>, string][] = [
    [{ kernel: { url: `${files.base}/kernel`, sha256: '0'.repeat(64) }, initrd: { url: `${files.base}/initrd` } }, 'ASSET_CHECKSUM_MISMATCH'],
    [{ kernel: { url: `${files.base}/missing` }, initrd: { url: `${files.base}/initrd` } }, 'ASSET_FETCH_FAILED'],
    [{ kernel: { url: `${files.base}/big` }, initrd: { url: `${files.base}/initrd` } }, 'ASSET_TOO_LARGE'],
  ];
  for (const [i, [sources, code]] of cases.entries()) {
    const res = await f.call('POST', '/api/v1/images', f.as.admin, { name: `bad-${i}`, ...sources });
    t.equal(res.statusCode, 202);
    const job = await finished(f, (res.json() as { job: { id: string } }).job.id);
    t.match(job, { state: 'failed', error: { code } }, code);
    t.equal((await f.call('GET', `/api/v1/images/bad-${i}`, f.as.viewer)).statusCode, 404, 'nothing registered');
  }
  t.equal((await f.eventsOf('image.add.failed')).length, 3);
});

t.test('a running job: its name is taken, an admin cancels it', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, bmc: false });
  const files = await fileServer(t);
  const body = { name: 'slow', kernel: { url: `${files.base}/slow` }, initrd: { url: `${files.base}/initrd` } };
  const res = await f.call('POST', '/api/v1/images', f.as.admin, body);
  const id = (res.json() as { job: { id: string } }).job.id;
  await files.slowStarted;
  for (let i = 0; i < 100; i++) {
    if (((await f.call('GET', `/api/v1/jobs/${id}`, f.as.viewer)).json() as { progress: { bytes: number } }).progress.bytes > 0) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  t.match((await f.call('GET', `/api/v1/jobs/${id}`, f.as.viewer)).json(), { state: 'running', progress: { bytes: 2000, total: null, parts: { kernel: { bytes: 2000, total: KERNEL.length, done: false } } } }, 'total unknown until the initrd\'s size is known');
  const twice = await f.call('POST', '/api/v1/images', f.as.admin, body);
  t.equal(twice.statusCode, 409, 'the name is being added');
  t.equal((await f.call('DELETE', `/api/v1/jobs/${id}`, f.as.operator)).statusCode, 403);
  t.equal((await f.call('DELETE', `/api/v1/jobs/${id}`, f.as.admin)).statusCode, 200);
  t.match(await finished(f, id), { state: 'cancelled', error: { code: 'ASSET_FETCH_FAILED' } });
  t.equal((await f.call('GET', '/api/v1/images/slow', f.as.viewer)).statusCode, 404);
  t.equal((await f.call('GET', '/api/v1/jobs/job_0000000000000000', f.as.viewer)).statusCode, 404);
  t.equal((await f.call('DELETE', '/api/v1/jobs/job_0000000000000000', f.as.admin)).statusCode, 404);
});

t.test('refusals name the field; only http(s) URLs', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, bmc: false });
  const ok = { kernel: { url: 'http://127.0.0.1:9/k' }, initrd: { url: 'http://127.0.0.1:9/i' } };
  const bad: [Record<string, unknown>, string][] = [
    [{ ...ok, name: '-x' }, 'body.name'],
    [{ ...ok }, 'body.name'],
    [{ name: 'x', initrd: ok.initrd }, 'body.kernel'],
    [{ ...ok, name: 'x', kernel: { url: 'file:///etc/shadow' } }, 'body.kernel.url'],
    [{ ...ok, name: 'x', kernel: { url: '/etc/shadow' } }, 'body.kernel.url'],
    [{ ...ok, name: 'x', kernel: { url: 'http://[::1' } }, 'body.kernel.url'],
    [{ ...ok, name: 'x', kernel: { url: 'http://h/k', sha256: 'abc' } }, 'body.kernel.sha256'],
    [{ ...ok, name: 'x', rootfs: { path: '/x' } }, 'body.rootfs'],
    [{ ...ok, name: 'x', cmdline: 'a\nb' }, 'body.cmdline'],
    [{ ...ok, name: 'x', size: 1 }, 'body.size'],
  ];
  for (const [body, field] of bad) {
    const res = await f.call('POST', '/api/v1/images', f.as.admin, body);
    t.equal(res.statusCode, 400, `${field}: ${res.body}`);
    t.equal(res.json().code, 'VALIDATION_FAILED');
    t.ok((res.json().message as string).startsWith(field), `names ${field}: ${res.json().message}`);
  }
  t.same((await f.call('GET', '/api/v1/jobs', f.as.viewer)).json().items, [], 'no job started');
});
