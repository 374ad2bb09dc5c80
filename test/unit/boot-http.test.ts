// HTTP boot through buildApp + app.inject (and a real listen where the socket matters): iPXE scripts by
// machine state, per-boot tokens, file serving (Range, HEAD, ETag, 304, 416), traversal, the boot timeline.
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildApp } from '../../src/api/app.ts';
import { EventLog } from '../../src/core/events.ts';
import { pruneBootTokens, requireBootToken, verifyBootToken } from '../../src/core/boot-tokens.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { AssetStore, IpxeBinaries, parseSource } from '../../src/store/assets.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord, MachineRecord, Store } from '../../src/store/types.ts';
import { BODY_MODES, parseRange } from '../../src/services/boot-http/http-file.ts';
import type { BootHttpDeps } from '../../src/services/boot-http/routes.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const MAC = '52:54:00:77:00:10';
const TTL = 2 * 3600 * 1000;

interface Fixture {
  app: Awaited<ReturnType<typeof buildApp>>;
  store: Store;
  assets: AssetStore;
  kernel: Buffer;
  initrd: Buffer;
  kpxe: Buffer;
  logs: string[];
  dir: string;
}

async function fixture(t: Test, over: Partial<BootHttpDeps> = {}, opts: { rootfs?: boolean; image?: boolean } = {}): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-boot-http-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const kernel = randomBytes(1_500_000);
  const initrd = randomBytes(3 * 1024 * 1024 + 123);
  const kpxe = randomBytes(70_000);
  writeFileSync(join(dir, 'vmlinuz'), kernel);
  writeFileSync(join(dir, 'initrd'), initrd);
  writeFileSync(join(dir, 'rootfs'), 'ROOTFS');
  writeFileSync(join(dir, 'secret'), 'TOP-SECRET');
  const ipxeDir = join(dir, 'ipxe');
  mkdirSync(ipxeDir);
  writeFileSync(join(ipxeDir, 'undionly.kpxe'), kpxe);
  const store = createMemoryStore();
  const events = new EventLog(store);
  const assets = new AssetStore(join(dir, 'assets'), store);
  await assets.open();
  if (opts.image !== false) {
    await assets.add({
      name: 'eph-1',
      files: { kernel: parseSource(join(dir, 'vmlinuz')), initrd: parseSource(join(dir, 'initrd')), ...(opts.rootfs ? { rootfs: parseSource(join(dir, 'rootfs')) } : {}) },
      cmdline: 'quiet ip=dhcp',
    }, { maxBytes: 1e9 });
  }
  const logs: string[] = [];
  const logger = createLogger('trace', new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } }));
  const app = await buildApp({
    logger, metrics: createMetrics({ processMetrics: false }), version: 'x', instanceId: () => 'i',
    readiness: () => ({ phase: 'running', services: {} }),
    boot: { store, events, assets, ipxe: new IpxeBinaries(ipxeDir), logger, ephemeralImage: 'eph-1', tokenTtlMs: TTL, eventFlushMs: 0, ...over },
  });
  t.teardown(() => app.close());
  return { app, store, assets, kernel, initrd, kpxe, logs, dir };
}

const machine = (state: string, extra: Partial<MachineRecord> = {}): MachineRecord => ({
  id: 'm-7', hostname: 'node7', macs: [MAC], state, tags: [], createdAt: '', updatedAt: '', ...extra,
});

const tokenOf = (script: string): string => /metalbox\.token=([A-Za-z0-9_-]+)/.exec(script)?.[1] ?? '';

async function events(store: Store): Promise<EventRecord[]> {
  await sleep(20); // asset and error events are written after the response
  const out: EventRecord[] = [];
  for await (const [, e] of store.events.entries()) out.push(e);
  return out;
}

t.test('unknown machine: enlist script with the ephemeral image, our URL, a token; UEFI initrd= quirk', async (t) => {
  const f = await fixture(t);
  const res = await f.app.inject({ url: '/boot/52-54-00-77-00-10.ipxe', headers: { host: '10.77.0.1:5240' } });
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /^text\/plain/);
  t.equal(res.headers['cache-control'], 'no-store');
  const s = res.body;
  t.match(s, /^#!ipxe\n/);
  const token = tokenOf(s);
  t.match(token, /^[A-Za-z0-9_-]{43}$/);
  const kernelLine = s.split('\n').find((l) => l.startsWith('kernel '));
  t.equal(kernelLine,
    `kernel http://10.77.0.1:5240/boot/assets/eph-1/kernel initrd=initrd metalbox.url=http://10.77.0.1:5240 metalbox.token=${token} `
    + `metalbox.mac=${MAC} metalbox.mode=enlist metalbox.image=eph-1 console=tty0 console=ttyS0,115200n8 quiet ip=dhcp || goto failed`);
  t.match(s, /\ninitrd http:\/\/10\.77\.0\.1:5240\/boot\/assets\/eph-1\/initrd \|\| goto failed\nboot \|\| goto failed\n/);
  t.match(s, /:failed\n.*\nsleep 10\nreboot\n/);
});

t.test('tokens: stored hashed, durable before the answer, verifiable, expire, pruned, never logged', async (t) => {
  const f = await fixture(t);
  const t0 = Date.now();
  const s = (await f.app.inject('/boot/ipxe?mac=52:54:00:77:00:10')).body;
  const token = tokenOf(s);
  const rec = await verifyBootToken(f.store, token);
  t.ok(rec, 'the token verifies as soon as the script is out');
  t.match(rec, { kind: 'boot', mac: MAC, purpose: 'enlist', hash: sha(Buffer.from(token)) });
  t.ok(Math.abs(Date.parse(rec!.expiresAt) - (t0 + TTL)) < 5000, 'expires after the configured TTL');
  for await (const [key, value] of f.store.tokens.entries()) {
    t.notMatch(key + JSON.stringify(value), token, 'only the hash is stored');
  }
  t.equal(await verifyBootToken(f.store, token, Date.now() + TTL + 1000), undefined, 'expired');
  await t.rejects(requireBootToken(f.store, token, Date.now() + TTL + 1000), { code: 'BOOT_TOKEN_INVALID' });
  t.equal(await verifyBootToken(f.store, 'x'.repeat(43)), undefined, 'unknown');
  t.equal(await verifyBootToken(f.store, `${token}x`), undefined, 'malformed');
  t.equal(await verifyBootToken(f.store, undefined), undefined);
  t.match(await requireBootToken(f.store, token), { mac: MAC });
  // A second boot gets another token; both are valid until they expire.
  const token2 = tokenOf((await f.app.inject('/boot/52-54-00-77-00-10.ipxe')).body);
  t.not(token2, token);
  t.equal(await pruneBootTokens(f.store), 0);
  t.equal(await pruneBootTokens(f.store, Date.now() + TTL + 1000), 2);
  t.equal(await f.store.tokens.count(), 0);
  t.notMatch(f.logs.join(''), token, 'the token is in no log line');
  t.notMatch(f.logs.join(''), token2);
});

t.test('known machines: the plan follows the state; identity by MAC, UUID or BOOTIF', async (t) => {
  const f = await fixture(t);
  const uuid = '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f';
  await f.store.machines.put('m-7', machine('Deployed', { uuid }));
  const deployed = (await f.app.inject('/boot/52-54-00-77-00-10.ipxe')).body;
  t.equal(deployed, '#!ipxe\necho metalbox: machine m-7 is Deployed: local-disk\niseq ${platform} efi && exit ||\nsanboot --no-describe --drive 0x80 || exit\n',
    'the local disk: sanboot drive 0x80 under BIOS, exit to the boot manager under UEFI');
  t.equal(await f.store.tokens.count(), 0, 'no token for a local-disk boot');
  await f.store.machines.put('m-7', machine('Deploying', { uuid, deployment: { image: 'x', writtenAt: new Date().toISOString() } }));
  t.match((await f.app.inject('/boot/52-54-00-77-00-10.ipxe')).body, /image is written: booting it from local disk\n.*sanboot/s, 'an image written: its disk');

  await f.store.machines.put('m-7', machine('Commissioning', { uuid }));
  const byUuid = (await f.app.inject(`/boot/ipxe?uuid=${uuid.toUpperCase()}`)).body;
  t.match(byUuid, /metalbox\.mode=commission/);
  t.match(byUuid, `metalbox.mac=${MAC}`, 'the machine\'s MAC when asked by UUID');
  t.match(byUuid, `metalbox.uuid=${uuid}`);
  t.match(await verifyBootToken(f.store, tokenOf(byUuid)), { machineId: 'm-7', purpose: 'commission', uuid });

  await f.store.machines.put('m-7', machine('Rescue'));
  t.match((await f.app.inject('/boot/ipxe?bootif=01-52-54-00-77-00-10')).body, /metalbox\.mode=rescue/);
  await f.store.machines.put('m-7', machine('Deploying'));
  t.match((await f.app.inject('/boot/ipxe?mac=52-54-00-77-00-10&bootif=01-52-54-00-77-00-10')).body, /metalbox\.mode=deploy/);
  await f.store.machines.put('m-7', machine('Releasing'));
  t.match((await f.app.inject('/boot/ipxe?mac=52:54:00:77:00:10')).body, /metalbox\.mode=release/);
  for (const state of ['some-future-state', 'deploying']) {
    await f.store.machines.put('m-7', machine(state));
    t.match((await f.app.inject('/boot/ipxe?mac=52:54:00:77:00:10')).body, /no network boot/, state);
  }

  // An unknown UUID alone still enlists (no MAC known: none on the command line).
  const unknown = (await f.app.inject('/boot/ipxe?uuid=00000000-0000-0000-0000-000000000001')).body;
  t.match(unknown, /metalbox\.mode=enlist/);
  t.notMatch(unknown, /metalbox\.mac=/);
});

t.test('no identity: a chain script that lets iPXE fill in its MAC and UUID; or the lease of the client', async (t) => {
  const f = await fixture(t);
  const res = await f.app.inject({ url: '/boot/ipxe', headers: { host: '10.0.0.1:80' } });
  t.equal(res.body, '#!ipxe\nchain http://10.0.0.1:80/boot/ipxe?mac=${mac:hexhyp}&uuid=${uuid}\n');
  await f.store.leases.put('10.77.0.50', { ip: '10.77.0.50', mac: '52:54:00:aa:bb:cc', subnet: '10.77.0.0/24', expiresAt: new Date(Date.now() + 3600e3).toISOString(), state: 'bound' });
  const byLease = await f.app.inject({ url: '/boot/ipxe', remoteAddress: '10.77.0.50' });
  t.match(byLease.body, /metalbox\.mac=52:54:00:aa:bb:cc/);
  t.equal(await f.app.inject('/boot/ipxe?uuid=').then((r) => r.body), res.body.replace('10.0.0.1:80', 'localhost:80'), 'an empty ${uuid} is no UUID');
});

t.test('malformed identities: 400 with the error body, recorded on the timeline', async (t) => {
  const f = await fixture(t);
  for (const url of ['/boot/ipxe?mac=zz', '/boot/ipxe?uuid=nope', '/boot/ipxe?bootif=01-zz', '/boot/zz-zz.ipxe', '/boot/ipxe?mac=52:54:00:77:00:10&bootif=01-52-54-00-77-00-11']) {
    const res = await f.app.inject(url);
    t.equal(res.statusCode, 400, url);
    t.match(res.json(), { statusCode: 400, code: 'BOOT_REQUEST_INVALID', error: 'Bad Request', message: String }, url);
  }
  const long = await f.app.inject(`/boot/ipxe?mac=${'a'.repeat(100)}`);
  t.equal(long.json().code, 'VALIDATION_FAILED');
  const ev = await events(f.store);
  t.equal(ev.filter((e) => e.data?.status === 400).length, 6);
});

t.test('no usable ephemeral image: the script says why on the console; the setting overrides the config', async (t) => {
  const none = await fixture(t, { ephemeralImage: undefined });
  const s1 = (await none.app.inject('/boot/52-54-00-77-00-10.ipxe')).body;
  t.match(s1, /^#!ipxe\necho metalbox: cannot enlist this machine: no ephemeral image is configured .*\nsleep 30\nexit 1\n$/);
  t.equal(await none.store.tokens.count(), 0);

  const missing = await fixture(t, { ephemeralImage: 'debian-13' });
  t.match((await missing.app.inject('/boot/52-54-00-77-00-10.ipxe')).body, /the ephemeral image "debian-13" is not registered/);
  await missing.store.settings.put('boot.ephemeralImage', 'eph-1');
  t.match((await missing.app.inject('/boot/52-54-00-77-00-10.ipxe')).body, /metalbox\.image=eph-1/, 'the setting wins, no restart');
  t.match(missing.logs.join(''), /debian-13/, 'the operator sees it in the log too');
});

t.test('an image with a root filesystem: its URL on the command line, served like the others', async (t) => {
  const f = await fixture(t, {}, { rootfs: true });
  const s = (await f.app.inject({ url: '/boot/ipxe?mac=52:54:00:77:00:10', headers: { host: 'mbx:5240' } })).body;
  t.match(s, / metalbox\.rootfs=http:\/\/mbx:5240\/boot\/assets\/eph-1\/rootfs console=tty0/);
  const r = await f.app.inject('/boot/assets/eph-1/rootfs');
  t.equal(r.body, 'ROOTFS');
});

t.test('assets: GET, HEAD, ETag, If-None-Match 304, Range 206, 416, If-Range', async (t) => {
  const f = await fixture(t);
  const url = '/boot/assets/eph-1/initrd';
  const etag = `"${sha(f.initrd)}"`;
  const full = await f.app.inject(url);
  t.equal(full.statusCode, 200);
  t.ok(full.rawPayload.equals(f.initrd), 'whole body');
  t.match(full.headers, { 'content-length': String(f.initrd.length), etag, 'accept-ranges': 'bytes', 'cache-control': 'no-cache', 'content-type': 'application/octet-stream' });

  const head = await f.app.inject({ method: 'HEAD', url });
  t.equal(head.statusCode, 200);
  t.equal(head.headers['content-length'], String(f.initrd.length));
  t.equal(head.headers.etag, etag);
  t.equal(head.rawPayload.length, 0);

  for (const inm of [etag, `W/${etag}`, `"x", ${etag}`, '*']) {
    const r = await f.app.inject({ url, headers: { 'if-none-match': inm } });
    t.equal(r.statusCode, 304, inm);
    t.equal(r.rawPayload.length, 0);
    t.equal(r.headers.etag, etag);
  }
  t.equal((await f.app.inject({ url, headers: { 'if-none-match': '"other"' } })).statusCode, 200);

  const size = f.initrd.length;
  const ranges: [string, number, number][] = [
    ['bytes=0-9', 0, 9], ['bytes=1000-', 1000, size - 1], ['bytes=-500', size - 500, size - 1],
    [`bytes=${size - 1}-${size + 1000}`, size - 1, size - 1], ['bytes=-99999999999', 0, size - 1],
  ];
  for (const [range, start, end] of ranges) {
    const r = await f.app.inject({ url, headers: { range } });
    t.equal(r.statusCode, 206, range);
    t.equal(r.headers['content-range'], `bytes ${start}-${end}/${size}`, range);
    t.equal(r.headers['content-length'], String(end - start + 1), range);
    t.ok(r.rawPayload.equals(f.initrd.subarray(start, end + 1)), `${range} body`);
  }
  for (const range of [`bytes=${size}-`, 'bytes=-0', `bytes=${size + 5}-${size + 9}`]) {
    const r = await f.app.inject({ url, headers: { range } });
    t.equal(r.statusCode, 416, range);
    t.equal(r.headers['content-range'], `bytes */${size}`);
    t.match(r.json(), { statusCode: 416, code: 'BOOT_RANGE_NOT_SATISFIABLE' });
  }
  for (const range of ['bytes=0-1,5-6', 'items=0-5', 'bytes=9-3', 'bytes=']) {
    const r = await f.app.inject({ url, headers: { range } });
    t.equal(r.statusCode, 200, `${range}: ignored, whole file`);
    t.equal(r.rawPayload.length, size);
  }
  const stale = await f.app.inject({ url, headers: { range: 'bytes=0-9', 'if-range': '"old"' } });
  t.equal(stale.statusCode, 200, 'If-Range for another version: the whole file');
  const fresh = await f.app.inject({ url, headers: { range: 'bytes=0-9', 'if-range': etag } });
  t.equal(fresh.statusCode, 206);
  const rangedHead = await f.app.inject({ method: 'HEAD', url, headers: { range: 'bytes=0-9' } });
  t.equal(rangedHead.statusCode, 206);
  t.equal(rangedHead.headers['content-length'], '10');
});

t.test('parseRange edge cases', async (t) => {
  t.equal(parseRange(undefined, 10), undefined);
  t.same(parseRange('bytes=0-0', 10), { start: 0, end: 0 });
  t.same(parseRange(' Bytes = 2 - 4 ', 10), { start: 2, end: 4 });
  t.equal(parseRange('bytes=0-', 0), 'unsatisfiable');
  t.equal(parseRange('bytes=-1', 0), 'unsatisfiable');
  t.equal(parseRange('bytes=-', 10), undefined);
});

t.test('iPXE binaries: the three names from boot.ipxeDir, nothing else', async (t) => {
  const f = await fixture(t);
  const r = await f.app.inject('/boot/undionly.kpxe');
  t.equal(r.statusCode, 200);
  t.ok(r.rawPayload.equals(f.kpxe));
  t.equal(r.headers.etag, `"${sha(f.kpxe)}"`);
  t.equal((await f.app.inject({ method: 'HEAD', url: '/boot/undionly.kpxe' })).headers['content-length'], String(f.kpxe.length));
  const missing = await f.app.inject('/boot/ipxe.efi');
  t.equal(missing.statusCode, 404);
  t.match(missing.json(), { code: 'NOT_FOUND', message: /not installed/ });
  t.equal((await f.app.inject('/boot/undionly.kkpxe')).statusCode, 404);
});

/** One raw request line over a real socket: no client-side normalization of `..` or `%2e`. */
function rawGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1', () => sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`));
    let text = '';
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => { text += d; });
    sock.on('error', reject);
    sock.on('end', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) }));
  });
}

t.test('traversal and garbage: 400 or 404 with the error body, never a file outside the stores', async (t) => {
  const f = await fixture(t);
  await f.app.listen({ host: '127.0.0.1', port: 0 });
  const addr = f.app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  // Status as sent raw over a socket. (app.inject resolves dot segments first, so some become 404 there.)
  const cases: [string, number][] = [
    ['/boot/..%2f..%2fsecret', 400],
    ['/boot/%2e%2e%2fsecret', 400],
    ['/boot/%2e%2e', 400],
    ['/boot/..', 400],
    ['/boot/.ipxe', 400],
    ['/boot/undionly.kpxe%00', 400],
    ['/boot/undionly.kpxe%00.png', 400],
    ['/boot/..%5c..%5csecret', 400],
    ['/boot/..\\..\\secret', 400],
    ['/boot/%2fetc%2fpasswd', 400],
    ['/boot/assets/..%2f..%2f/kernel', 400],
    ['/boot/assets/eph-1/..%2f..%2fsecret', 400],
    ['/boot/assets/%2e%2e/kernel', 400],
    ['/boot/assets/../kernel', 400],
    ['/boot/assets/eph-1/%2e%2e', 400],
    ['/boot/assets/eph-1/..', 400],
    ['/boot/assets/eph-1/kernel%00', 400],
    ['/boot/assets/eph-1%5c..%5c..%5csecret/kernel', 400],
    ['/boot/assets/C:%5csecret/kernel', 400],
    ['/boot/assets/%2fetc/kernel', 400],
    ['/boot/assets/eph-1/secret', 404],
    ['/boot/assets/eph-1/blobs', 404],
    ['/boot/assets/blobs/kernel', 404],
    [`/boot/assets/eph-1/${sha(f.kernel)}`, 404],
    [`/boot/${sha(f.kernel)}`, 404],
    ['/boot/secret', 404],
    ['/boot/assets/eph-1/kernel/../../../secret', 404],
    ['/boot/../secret', 404],
    ['/boot//etc/passwd', 404],
    ['/boot/assets//etc/passwd', 404],
    ['/boot/assets/eph-1/../../../../etc/passwd', 404],
    ['/boot/assets/nope/kernel', 404],
    ['/boot/%252e%252e', 400],
    ['/boot/assets/eph-1/%ZZ', 400],
  ];
  for (const [url, status] of cases) {
    const raw = await rawGet(port, url);
    t.equal(raw.status, status, `raw ${url}`);
    t.match(JSON.parse(raw.body), { statusCode: raw.status, code: String, error: String, message: String }, `raw ${url}`);
    t.notMatch(raw.body, /TOP-SECRET|root:/, url);
    const r = await f.app.inject(url);
    // inject() resolves dot segments itself, as a browser does: `/boot/..` and `/boot/%2e%2e` reach the app as `/`,
    // which is the console's page. The raw requests above prove what the server does with them.
    const becameRoot = new URL(url, 'http://x').pathname === '/';
    const consolePage = r.statusCode === 200 && /^text\/html/.test(String(r.headers['content-type'])) && /<!doctype html>/i.test(r.body);
    t.ok(r.statusCode === 400 || r.statusCode === 404 || (becameRoot && consolePage), `inject ${url}: ${r.statusCode}`);
    t.notMatch(r.body, /TOP-SECRET|root:/, url);
  }
});

t.test('timeline: each script and file fetch is an event on the machine, by MAC or by the lease of its address', async (t) => {
  const f = await fixture(t);
  await f.store.leases.put('10.77.0.50', { ip: '10.77.0.50', mac: MAC, subnet: '10.77.0.0/24', expiresAt: new Date(Date.now() + 3600e3).toISOString(), state: 'bound' });
  const script = await f.app.inject({ url: '/boot/52-54-00-77-00-10.ipxe', remoteAddress: '10.77.0.50' });
  await f.app.inject({ url: '/boot/assets/eph-1/kernel', remoteAddress: '10.77.0.50' });
  await f.app.inject({ url: '/boot/assets/eph-1/initrd', remoteAddress: '10.77.0.50', headers: { range: 'bytes=0-99' } });
  await f.app.inject({ url: '/boot/undionly.kpxe', remoteAddress: '10.77.0.99' });
  await f.app.inject({ url: '/boot/assets/eph-1/nope', remoteAddress: '10.77.0.50' });
  const ev = await events(f.store);
  t.same(ev.map((e) => [e.type, e.actor, e.subject, e.data?.path, e.data?.status, e.data?.bytes]), [
    ['boot.http', 'http', MAC, '/boot/52-54-00-77-00-10.ipxe', 200, Buffer.byteLength(script.body)],
    ['boot.http', 'http', MAC, '/boot/assets/eph-1/kernel', 200, f.kernel.length],
    ['boot.http', 'http', MAC, '/boot/assets/eph-1/initrd', 206, 100],
    ['boot.http', 'http', '10.77.0.99', '/boot/undionly.kpxe', 200, f.kpxe.length],
    ['boot.http', 'http', MAC, '/boot/assets/eph-1/nope', 404, 0],
  ]);
  t.match(ev[0]!.data, { client: '10.77.0.50', plan: 'enlist', image: 'eph-1' });
  t.match(ev[1]!.data, { client: '10.77.0.50', image: 'eph-1' });
  t.notMatch(JSON.stringify(ev), tokenOf(script.body), 'no token in events');
});

for (const body of BODY_MODES) t.test(`over a real socket (${body}): our own address in the script (not 0.0.0.0), many downloads at once, an abort is recorded`, async (t) => {
  const f = await fixture(t, { body });
  await f.app.listen({ host: '0.0.0.0', port: 0 });
  const addr = f.app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const base = `http://127.0.0.1:${port}`;
  const s = await (await fetch(`${base}/boot/52-54-00-77-00-10.ipxe`)).text();
  t.match(s, `metalbox.url=http://127.0.0.1:${port} `);
  t.match(s, `kernel http://127.0.0.1:${port}/boot/assets/eph-1/kernel `);

  const fetches = Array.from({ length: 16 }, async (_, i) => {
    const headers: Record<string, string> = i % 4 === 3 ? { range: `bytes=${i * 1000}-` } : {};
    const r = await fetch(`${base}/boot/assets/eph-1/initrd`, { headers });
    const body = Buffer.from(await r.arrayBuffer());
    return { i, status: r.status, ok: body.equals(i % 4 === 3 ? f.initrd.subarray(i * 1000) : f.initrd) };
  });
  for (const r of await Promise.all(fetches)) {
    t.equal(r.status, r.i % 4 === 3 ? 206 : 200);
    t.ok(r.ok, `download ${r.i} intact`);
  }

  // A client that never reads and then goes away: the event says so, with what reached the socket. (The
  // file must be larger than the socket buffers: Linux may give a loopback receiver up to tcp_rmem's 32 MiB
  // at once, from what it learnt of earlier connections. A sparse file costs nothing.)
  const big = { length: 96 * 1024 * 1024 };
  writeFileSync(join(f.dir, 'big'), '');
  truncateSync(join(f.dir, 'big'), big.length);
  await f.assets.add({ name: 'big', files: { kernel: parseSource(join(f.dir, 'big')), initrd: parseSource(join(f.dir, 'initrd')) } }, { maxBytes: 1e9 });
  await new Promise<void>((resolve) => {
    const sock = connect(port, '127.0.0.1', () => {
      sock.pause();
      sock.write('GET /boot/assets/big/kernel HTTP/1.1\r\nHost: x\r\n\r\n');
      setTimeout(() => { sock.destroy(); resolve(); }, 300);
    });
    sock.on('error', () => undefined);
  });
  let ev: EventRecord[] = [];
  for (let i = 0; i < 100 && !ev.some((e) => e.data?.path === '/boot/assets/big/kernel'); i++) ev = await events(f.store);
  const aborted = ev.filter((e) => e.data?.complete === false);
  t.equal(aborted.length, 1);
  t.ok((aborted[0]!.data!.bytes as number) > 0 && (aborted[0]!.data!.bytes as number) < big.length, `${String(aborted[0]?.data?.bytes)} bytes`);
  t.equal(aborted[0]!.data!.path, '/boot/assets/big/kernel');
  t.equal(ev.filter((e) => e.data?.path === '/boot/assets/eph-1/initrd' && e.data?.complete === undefined).length, 16);
});
