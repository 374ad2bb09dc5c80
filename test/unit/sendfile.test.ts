// The native sendfile (src/native/sendfile.c through src/lib/sendfile.ts) on real loopback sockets: exact
// bytes for a range, many at once, a reader that goes away, cancel, a file shorter than asked, bad arguments.
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { createServer, connect, type Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSendfile } from '../../src/lib/sendfile.ts';
import { loadAddon } from '../../src/lib/addon.ts';

const fdOf = (s: Socket): number => (s as unknown as { _handle: { fd: number } })._handle.fd;

/** A connected pair: `server` is the accepted side (we send on it), `client` reads. */
async function pair(t: Test): Promise<{ server: Socket; client: Socket }> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const accepted = new Promise<Socket>((r) => srv.once('connection', r));
  const addr = srv.address();
  const client = connect(typeof addr === 'object' && addr ? addr.port : 0, '127.0.0.1');
  const server = await accepted;
  t.teardown(() => { client.destroy(); server.destroy(); srv.close(); });
  return { server, client };
}

function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

async function file(t: Test, content: Buffer) {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-sendfile-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'f'), content);
  const fh = await open(join(dir, 'f'), 'r');
  t.teardown(() => fh.close());
  return fh;
}

t.test('the addon has sendfile', async (t) => {
  const m = loadAddon('metalbox_native') as Record<string, unknown>;
  t.type(m.sendfileStart, 'function');
  t.type(m.sendfileCancel, 'function');
});

t.test('sends exactly the range asked, then the socket is ours again', async (t) => {
  const content = randomBytes(20 * 1024 * 1024 + 3);
  const fh = await file(t, content);
  const { server, client } = await pair(t);
  const received = readAll(client);
  const job = startSendfile(fdOf(server), fh.fd, 1000, content.length - 2000)!;
  t.ok(job, 'available');
  t.same(await job.done, { sent: content.length - 2000 });
  server.end(Buffer.from('tail')); // Node writes after it: order kept
  const got = await received;
  t.equal(got.length, content.length - 2000 + 4);
  t.ok(got.subarray(0, -4).equals(content.subarray(1000, content.length - 1000)), 'same bytes');
  t.equal(got.subarray(-4).toString(), 'tail');
});

t.test('many transfers at once share the thread', async (t) => {
  const content = randomBytes(4 * 1024 * 1024);
  const fh = await file(t, content);
  const runs = await Promise.all(Array.from({ length: 12 }, async () => {
    const { server, client } = await pair(t);
    const received = readAll(client);
    const r = await startSendfile(fdOf(server), fh.fd, 0, content.length)!.done;
    server.end();
    return { r, ok: (await received).equals(content) };
  }));
  for (const { r, ok } of runs) {
    t.same(r, { sent: content.length });
    t.ok(ok);
  }
});

t.test('a reader that goes away ends the job with EPIPE or ECONNRESET, not a hang', async (t) => {
  const fh = await file(t, randomBytes(1024));
  const { server, client } = await pair(t);
  server.on('error', () => undefined);
  client.pause(); // never reads: the socket buffers fill and sendfile waits for EPOLLOUT
  const job = startSendfile(fdOf(server), fh.fd, 0, 1024)!;
  t.same(await job.done, { sent: 1024 });
  // Then a transfer far larger than the socket buffers: a sparse 1 GiB file.
  const dir = mkdtempSync(join(tmpdir(), 'mbx-sendfile-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sparse = await open(join(dir, 'sparse'), 'w+');
  t.teardown(() => sparse.close());
  await sparse.truncate(1024 ** 3);
  const long = startSendfile(fdOf(server), sparse.fd, 0, 1024 ** 3)!;
  setTimeout(() => client.destroy(), 200);
  const r = await long.done;
  t.match(r.error, /^(EPIPE|ECONNRESET)$/);
  t.ok(r.sent > 0 && r.sent < 1024 ** 3, `${r.sent} bytes before the reader left`);
});

t.test('cancel ends a waiting job with ECANCELED; cancelling a finished job is harmless', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-sendfile-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sparse = await open(join(dir, 'sparse'), 'w+');
  t.teardown(() => sparse.close());
  await sparse.truncate(1024 ** 3);
  const { server, client } = await pair(t);
  client.pause();
  const job = startSendfile(fdOf(server), sparse.fd, 0, 1024 ** 3)!;
  setTimeout(() => job.cancel(), 100);
  const r = await job.done;
  t.equal(r.error, 'ECANCELED');
  job.cancel();
  // The socket still works for Node: the dup was closed, not the connection.
  client.resume();
  server.write('after');
  await new Promise((r) => setTimeout(r, 50));
  t.pass('no crash');
});

t.test('a file shorter than asked: ENODATA with what was sent', async (t) => {
  const fh = await file(t, randomBytes(5000));
  const { server, client } = await pair(t);
  const received = readAll(client);
  const r = await startSendfile(fdOf(server), fh.fd, 0, 10_000)!.done;
  t.same(r, { sent: 5000, error: 'ENODATA' });
  server.end();
  t.equal((await received).length, 5000);
});

t.test('bad arguments are TypeErrors; bad descriptors an errno error', async (t) => {
  const m = loadAddon('metalbox_native') as { sendfileStart: (...a: unknown[]) => number };
  t.throws(() => m.sendfileStart(-1, 0, 0, 1, () => undefined), TypeError);
  t.throws(() => m.sendfileStart(1, 0, 0.5, 1, () => undefined), TypeError);
  t.throws(() => m.sendfileStart(1, 0, 0, 1, 'nope'), TypeError);
  t.throws(() => m.sendfileStart(1, 0, 0), TypeError);
  try {
    m.sendfileStart(987_654, 0, 0, 1, () => undefined);
    t.fail('accepted a closed descriptor');
  } catch (err) {
    t.match(err, { syscall: 'dup', errno: 9 });
  }
});
