// The asset store: add from a file and from a URL (served on 127.0.0.1), sha256/size recorded, durable
// across a reopen, removal keeps shared blobs, and every way a download can go wrong leaves nothing behind.
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { existsSync, fstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AssetStore, IpxeBinaries, parseSource, redactUrl, type AssetProgress } from '../../src/store/assets.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import { openLevelStore } from '../../src/store/level-store.ts';
import { isMetalboxError } from '../../src/lib/errors.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const MAX = 64 * 1024 * 1024;

function workdir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-assets-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function files(dir: string): { kernel: Buffer; initrd: Buffer; rootfs: Buffer; k: string; i: string; r: string } {
  const kernel = randomBytes(300_000);
  const initrd = randomBytes(2_500_000);
  const rootfs = randomBytes(1_000);
  writeFileSync(join(dir, 'vmlinuz'), kernel);
  writeFileSync(join(dir, 'initrd.img'), initrd);
  writeFileSync(join(dir, 'root.squashfs'), rootfs);
  return { kernel, initrd, rootfs, k: join(dir, 'vmlinuz'), i: join(dir, 'initrd.img'), r: join(dir, 'root.squashfs') };
}

async function expectCode(t: Test, p: Promise<unknown>, code: string): Promise<void> {
  try {
    await p;
    t.fail(`expected ${code}`);
  } catch (err) {
    t.ok(isMetalboxError(err), `a MetalboxError: ${String(err)}`);
    t.equal((err as { code: string }).code, code, (err as Error).message);
  }
}

/** A loopback HTTP server whose behaviour a test sets per path. */
async function httpServer(t: Test, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const a = server.address();
  return `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
}

t.test('parseSource: paths, URLs, #sha256 suffix, unsupported schemes', async (t) => {
  t.same(parseSource('vmlinuz', '/srv'), { kind: 'file', path: '/srv/vmlinuz' });
  t.same(parseSource('/a/b'), { kind: 'file', path: '/a/b' });
  t.same(parseSource('http://mirror/x/linux'), { kind: 'url', url: 'http://mirror/x/linux' });
  const sum = 'AB'.repeat(32);
  t.same(parseSource(`https://m/x#sha256=${sum}`), { kind: 'url', url: 'https://m/x', sha256: sum.toLowerCase() });
  t.throws(() => parseSource('ftp://m/x'), { code: 'IMAGE_INVALID' });
  t.throws(() => parseSource('file:///etc/passwd'), { code: 'IMAGE_INVALID' });
  t.equal(redactUrl('https://user:secret@m.example/x/y?sig=abc#frag'), 'https://m.example/x/y');
});

t.test('add from local files: sha256 and size recorded, blobs in place, listed, durable across a reopen', async (t) => {
  const dir = workdir(t);
  const f = files(dir);
  const stateDir = join(dir, 'state');
  let store = await openLevelStore(stateDir);
  let assets = new AssetStore(join(dir, 'assets'), store);
  await assets.open();
  const progress: AssetProgress[] = [];
  const image = await assets.add(
    { name: 'debian-12', files: { kernel: parseSource(f.k), initrd: parseSource(f.i), rootfs: parseSource(f.r) }, cmdline: ' quiet ' },
    { maxBytes: MAX, onProgress: (p) => progress.push(p) },
  );
  t.same(image.files.kernel, { sha256: sha(f.kernel), size: f.kernel.length, source: f.k });
  t.same(image.files.initrd, { sha256: sha(f.initrd), size: f.initrd.length, source: f.i });
  t.equal(image.files.rootfs?.sha256, sha(f.rootfs));
  t.equal(image.cmdline, 'quiet');
  t.equal(image.size, f.kernel.length + f.initrd.length + f.rootfs.length);
  t.same(readFileSync(assets.blobPath(sha(f.initrd))), f.initrd);
  t.same(readdirSync(join(dir, 'assets', 'tmp')), [], 'no temporary file left');
  const done = progress.filter((p) => p.done);
  t.same(done.map((p) => [p.role, p.bytes, p.total]), [['kernel', f.kernel.length, f.kernel.length], ['initrd', f.initrd.length, f.initrd.length], ['rootfs', 1000, 1000]]);

  await store.close();
  store = await openLevelStore(stateDir);
  t.teardown(() => store.close());
  assets = new AssetStore(join(dir, 'assets'), store);
  t.same(await assets.open(), { removedBlobs: 0 });
  t.same(await assets.get('debian-12'), image, 'the record survives a reopen');
  t.same((await assets.list()).map((i) => i.name), ['debian-12']);
  const fh = await assets.openBlob(image.files.kernel);
  t.same(await fh.readFile(), f.kernel);
  await fh.close();
});

t.test('names, duplicates and definitions are checked before anything is fetched', async (t) => {
  const dir = workdir(t);
  const f = files(dir);
  const assets = new AssetStore(join(dir, 'assets'), createMemoryStore());
  await assets.open();
  const def = { kernel: parseSource(f.k), initrd: parseSource(f.i) };
  for (const name of ['', 'Debian', '../x', 'a/b', '-x', 'x'.repeat(64), 'a b']) {
    await expectCode(t, assets.add({ name, files: def }, { maxBytes: MAX }), 'IMAGE_INVALID');
  }
  await expectCode(t, assets.add({ name: 'x', files: { kernel: def.kernel } }, { maxBytes: MAX }), 'IMAGE_INVALID');
  await expectCode(t, assets.add({ name: 'x', files: def, cmdline: 'a\nb' }, { maxBytes: MAX }), 'IMAGE_INVALID');
  await assets.add({ name: 'x', files: def }, { maxBytes: MAX });
  await expectCode(t, assets.add({ name: 'x', files: def }, { maxBytes: MAX }), 'IMAGE_EXISTS');
  await expectCode(t, assets.add({ name: 'y', files: { ...def, initrd: parseSource(join(dir, 'missing')) } }, { maxBytes: MAX }), 'ASSET_SOURCE_UNREADABLE');
  await expectCode(t, assets.add({ name: 'y', files: { ...def, initrd: parseSource(dir) } }, { maxBytes: MAX }), 'ASSET_SOURCE_UNREADABLE');
  await expectCode(t, assets.add({ name: 'y', files: def }, { maxBytes: 1000 }), 'ASSET_TOO_LARGE');
  await expectCode(t, assets.add({ name: 'y', files: { ...def, kernel: parseSource(`${f.k}#sha256=${'0'.repeat(64)}`) } }, { maxBytes: MAX }), 'ASSET_CHECKSUM_MISMATCH');
  const ok = await assets.add({ name: 'z', files: { ...def, kernel: parseSource(`${f.k}#sha256=${sha(f.kernel)}`) } }, { maxBytes: MAX });
  t.equal(ok.files.kernel.sha256, sha(f.kernel), 'a matching checksum is accepted');
  t.same(readdirSync(join(dir, 'assets', 'tmp')), [], 'failed adds leave no temporary file');
  t.same((await assets.list()).map((i) => i.name), ['x', 'z']);
});

t.test('remove deletes the record, then only the blobs no other image holds', async (t) => {
  const dir = workdir(t);
  const f = files(dir);
  const other = randomBytes(5000);
  writeFileSync(join(dir, 'other'), other);
  const assets = new AssetStore(join(dir, 'assets'), createMemoryStore());
  await assets.open();
  await assets.add({ name: 'a', files: { kernel: parseSource(f.k), initrd: parseSource(f.i) } }, { maxBytes: MAX });
  await assets.add({ name: 'b', files: { kernel: parseSource(f.k), initrd: parseSource(join(dir, 'other')) } }, { maxBytes: MAX });
  const blobs = () => readdirSync(assets.blobsDir).sort();
  t.same(blobs(), [sha(f.kernel), sha(f.initrd), sha(other)].sort(), 'the shared kernel is stored once');
  const removed = await assets.remove('a');
  t.equal(removed?.removedBlobs, 1);
  t.same(blobs(), [sha(f.kernel), sha(other)].sort(), 'the kernel b still uses stays');
  t.equal(await assets.get('a'), undefined);
  t.equal(await assets.remove('a'), undefined, 'removing a missing image is undefined, not an error');
  await assets.remove('b');
  t.same(blobs(), []);
});

t.test('open() removes blobs no record references (a crash between the rename and the record)', async (t) => {
  const dir = workdir(t);
  const store = createMemoryStore();
  const assets = new AssetStore(join(dir, 'assets'), store);
  await assets.open();
  writeFileSync(join(assets.blobsDir, 'a'.repeat(64)), 'orphan');
  writeFileSync(join(dir, 'assets', 'tmp', 'kernel-123'), 'partial');
  const again = new AssetStore(join(dir, 'assets'), store);
  t.same(await again.open(), { removedBlobs: 1 });
  t.same(readdirSync(again.blobsDir), []);
  t.same(readdirSync(join(dir, 'assets', 'tmp')), []);
});

t.test('a blob missing or cut short is ASSET_MISSING, never served short', async (t) => {
  const dir = workdir(t);
  const f = files(dir);
  const assets = new AssetStore(join(dir, 'assets'), createMemoryStore());
  await assets.open();
  const image = await assets.add({ name: 'a', files: { kernel: parseSource(f.k), initrd: parseSource(f.i) } }, { maxBytes: MAX });
  writeFileSync(assets.blobPath(image.files.kernel.sha256), 'short');
  await expectCode(t, assets.openBlob(image.files.kernel), 'ASSET_MISSING');
  rmSync(assets.blobPath(image.files.initrd.sha256));
  await expectCode(t, assets.openBlob(image.files.initrd), 'ASSET_MISSING');
});

t.test('records are read once and kept; an add or remove replaces what was kept', async (t) => {
  const dir = workdir(t);
  const f = files(dir);
  const store = createMemoryStore();
  let reads = 0;
  const get = store.images.get.bind(store.images);
  store.images.get = async (key: string) => { reads++; return get(key); };
  const assets = new AssetStore(join(dir, 'assets'), store);
  await assets.open();
  t.equal(await assets.get('a'), undefined);
  t.equal(await assets.get('a'), undefined, 'an absent image is remembered as absent...');
  const before = reads;
  const added = await assets.add({ name: 'a', files: { kernel: parseSource(f.k), initrd: parseSource(f.i) } }, { maxBytes: MAX });
  t.same(await assets.get('a'), added, '...until it is added');
  reads = 0;
  for (let i = 0; i < 5; i++) await assets.get('a');
  t.equal(reads, 0, 'then served from memory');
  t.ok(before <= 1, `the first lookups read the store once (${before})`);
  const kept = (await assets.get('a'))!;
  t.ok(Object.isFrozen(kept) && Object.isFrozen(kept.files.kernel), 'the shared record is frozen');
  // A get racing an add must not keep what it read before the add committed.
  const racing = assets.get('b');
  const b = await assets.add({ name: 'b', files: { kernel: parseSource(f.k), initrd: parseSource(f.k) } }, { maxBytes: MAX });
  await racing;
  t.same(await assets.get('b'), b, 'a lookup that raced the add does not hide it');
  // A get that begins while an add runs (inside its serialized section) and ends after the add has ended is not kept.
  let open!: () => void;
  const gate = new Promise<void>((resolve) => { open = resolve; });
  let cReads = 0;
  let duringC: Promise<unknown> | undefined;
  store.images.get = async (key: string) => {
    const n = key === 'c' ? ++cReads : 0;
    // Read 1: the add's check before it fetches; read 2: its check inside the serialized section, where this lookup
    // begins; read 3: this lookup's own, held until the add has ended.
    if (n === 2) duringC = assets.get('c');
    const v = await get(key);
    if (n === 3) await gate;
    return v;
  };
  const c = await assets.add({ name: 'c', files: { kernel: parseSource(f.k), initrd: parseSource(f.i) } }, { maxBytes: MAX });
  open();
  t.equal(cReads, 3, 'the lookup began inside the add');
  t.equal(await duringC, undefined, 'it read the store before the add committed');
  t.same(await assets.get('c'), c, 'and what it read was not kept');
  await assets.remove('a');
  t.equal(await assets.get('a'), undefined, 'and a removed image is gone at once');
});

t.test('readBlob: one shared descriptor per blob with its head in memory; a removed blob stays readable until its readers close', async (t) => {
  const dir = workdir(t);
  const f = files(dir);
  const assets = new AssetStore(join(dir, 'assets'), createMemoryStore());
  await assets.open();
  const image = await assets.add({ name: 'a', files: { kernel: parseSource(f.k), initrd: parseSource(f.i) } }, { maxBytes: MAX });
  const [r1, r2] = await Promise.all([assets.readBlob(image.files.initrd), assets.readBlob(image.files.initrd)]);
  t.equal(r1.fd, r2.fd, 'concurrent readers share one descriptor');
  t.equal(r1.size, f.initrd.length);
  t.same(r1.head, f.initrd.subarray(0, 64 * 1024), 'the first 64 KiB are in memory');
  const buf = Buffer.alloc(1000);
  await r1.read(buf, 0, 1000, 2_000_000);
  t.same(buf, f.initrd.subarray(2_000_000, 2_001_000), 'positional reads');
  const k = await assets.readBlob(image.files.kernel);
  t.not(k.fd, r1.fd, 'another blob, another descriptor');
  await k.close();
  const fdOpen = (fd: number) => { try { fstatSync(fd); return true; } catch { return false; } };
  t.ok(fdOpen(k.fd), 'an idle blob stays open for the next download');
  await assets.remove('a');
  await new Promise((r) => setImmediate(r));
  t.notOk(existsSync(assets.blobPath(image.files.initrd.sha256)), 'the blob file is deleted');
  t.notOk(fdOpen(k.fd), 'the idle removed blob is closed');
  await r1.read(buf, 0, 1000, 0);
  t.same(buf, f.initrd.subarray(0, 1000), 'a reader that was sending still reads the removed blob');
  await r1.close();
  await r1.close();
  t.ok(fdOpen(r2.fd), 'open while one reader remains (a second close of the same reader counts once)');
  await r2.close();
  t.notOk(fdOpen(r2.fd), 'closed with the last reader');
  await expectCode(t, assets.readBlob(image.files.initrd), 'ASSET_MISSING');
});

t.test('readBlob: past 32 open blobs the least recently used stop being shared; none closes under a reader', async (t) => {
  const dir = workdir(t);
  const assets = new AssetStore(join(dir, 'assets'), createMemoryStore());
  await assets.open();
  const contents: Buffer[] = [];
  const images = [];
  for (let i = 0; i < 20; i++) {
    const k = randomBytes(100 + i);
    const r = randomBytes(200 + i);
    writeFileSync(join(dir, `k${i}`), k);
    writeFileSync(join(dir, `r${i}`), r);
    contents.push(k, r);
    images.push(await assets.add({ name: `img${i}`, files: { kernel: parseSource(join(dir, `k${i}`)), initrd: parseSource(join(dir, `r${i}`)) } }, { maxBytes: MAX }));
  }
  const files = images.flatMap((im) => [im.files.kernel, im.files.initrd]);
  // 40 blobs at once, every reader held: the first 8 are retired while their readers still read them.
  const readers = await Promise.all(files.map((f) => assets.readBlob(f)));
  const fdOpen = (fd: number) => { try { fstatSync(fd); return true; } catch { return false; } };
  for (let i = 0; i < readers.length; i++) {
    const buf = Buffer.alloc(contents[i]!.length);
    await readers[i]!.read(buf, 0, buf.length, 0);
    if (!buf.equals(contents[i]!)) t.fail(`blob ${i} read wrong`);
  }
  t.ok(readers.every((r) => fdOpen(r.fd)), 'every reader still has its descriptor');
  const first = readers[0]!;
  const again = await assets.readBlob(files[0]!);
  t.not(again.fd, first.fd, 'a retired blob asked for again gets a descriptor of its own');
  await first.close();
  t.notOk(fdOpen(first.fd), 'a retired blob closes with its last reader');
  const last = readers[39]!;
  await last.close();
  t.ok(fdOpen(last.fd), 'a shared one stays open for the next download');
  for (const r of [...readers, again]) await r.close();
});

t.test('add from URLs on 127.0.0.1: redirects followed, progress, checksums; bad downloads rejected', async (t) => {
  const dir = workdir(t);
  const kernel = randomBytes(3 * 1024 * 1024 + 17);
  const initrd = randomBytes(100_000);
  const base = await httpServer(t, (req, res) => {
    const path = req.url ?? '';
    if (path === '/k') { res.writeHead(200, { 'content-length': kernel.length }); res.end(kernel); return; }
    if (path === '/i') { res.writeHead(200, { 'content-length': initrd.length }); res.end(initrd); return; }
    if (path === '/moved') { res.writeHead(302, { location: '/k' }); res.end(); return; }
    if (path === '/chunked') { res.writeHead(200); res.write(initrd.subarray(0, 50_000)); res.end(initrd.subarray(50_000)); return; }
    if (path === '/short') {
      // Announces more than it sends, then closes: a download cut off.
      res.writeHead(200, { 'content-length': initrd.length });
      res.write(initrd.subarray(0, 40_000), () => res.destroy());
      return;
    }
    if (path === '/huge') { res.writeHead(200, { 'content-length': 10 * MAX }); res.end(); return; }
    if (path === '/loop') { res.writeHead(302, { location: '/loop' }); res.end(); return; }
    res.writeHead(404);
    res.end('nope');
  });
  const assets = new AssetStore(join(dir, 'assets'), createMemoryStore());
  await assets.open();
  const progress: AssetProgress[] = [];
  const image = await assets.add(
    { name: 'net', files: { kernel: parseSource(`${base}/moved#sha256=${sha(kernel)}`), initrd: parseSource(`${base}/chunked`) } },
    { maxBytes: MAX, onProgress: (p) => progress.push(p) },
  );
  t.same(image.files.kernel, { sha256: sha(kernel), size: kernel.length, source: `${base}/moved` });
  t.same(image.files.initrd, { sha256: sha(initrd), size: initrd.length, source: `${base}/chunked` });
  const last = progress.filter((p) => p.role === 'initrd').at(-1);
  t.same([last?.done, last?.total, last?.bytes], [true, undefined, initrd.length], 'a chunked download has no total');
  t.ok(progress.some((p) => p.role === 'kernel' && p.done && p.total === kernel.length));

  const good = parseSource(`${base}/k`);
  const cases: [string, string][] = [
    ['/short', 'ASSET_INCOMPLETE'],
    ['/missing', 'ASSET_FETCH_FAILED'],
    ['/loop', 'ASSET_FETCH_FAILED'],
    ['/huge', 'ASSET_TOO_LARGE'],
  ];
  for (const [path, code] of cases) {
    await expectCode(t, assets.add({ name: 'bad', files: { kernel: good, initrd: parseSource(`${base}${path}`) } }, { maxBytes: MAX }), code);
  }
  await expectCode(t, assets.add({ name: 'bad', files: { kernel: parseSource(`${base}/i#sha256=${sha(kernel)}`), initrd: good } }, { maxBytes: MAX }), 'ASSET_CHECKSUM_MISMATCH');
  await expectCode(t, assets.add({ name: 'bad', files: { kernel: good, initrd: parseSource('http://127.0.0.1:1/x') } }, { maxBytes: MAX }), 'ASSET_FETCH_FAILED');
  t.equal(await assets.get('bad'), undefined, 'nothing registered');
  t.same(readdirSync(join(dir, 'assets', 'tmp')), [], 'no temporary file left');
  t.same(readdirSync(assets.blobsDir).sort(), [sha(kernel), sha(initrd)].sort(), 'no stray blob');
});

t.test('a download that stalls fails, a cancelled one stops; neither leaves anything', async (t) => {
  const dir = workdir(t);
  const base = await httpServer(t, (_req, res) => {
    res.writeHead(200, { 'content-length': 100 * 1024 * 1024 });
    res.write(randomBytes(64 * 1024)); // then nothing more
  });
  const assets = new AssetStore(join(dir, 'assets'), createMemoryStore());
  await assets.open();
  const files = { kernel: parseSource(`${base}/k`), initrd: parseSource(`${base}/i`) };
  const t0 = Date.now();
  await expectCode(t, assets.add({ name: 'x', files }, { maxBytes: MAX * 4, stallMs: 300 }), 'ASSET_FETCH_FAILED');
  t.ok(Date.now() - t0 < 5000, 'the stall is noticed');
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 200);
  try {
    await assets.add({ name: 'x', files }, { maxBytes: MAX * 4, signal: ac.signal });
    t.fail('cancel ignored');
  } catch (err) {
    t.equal((err as { code: string }).code, 'ASSET_FETCH_FAILED');
    t.match((err as Error).message, /cancelled/);
  }
  t.same(readdirSync(join(dir, 'assets', 'tmp')), []);
  t.equal(await assets.get('x'), undefined);
});

t.test('iPXE binaries: only the three names, size and sha256 of the file, missing ones skipped', async (t) => {
  const dir = workdir(t);
  const kpxe = randomBytes(70_000);
  writeFileSync(join(dir, 'undionly.kpxe'), kpxe);
  writeFileSync(join(dir, 'passwd'), 'root:x:0:0');
  const ipxe = new IpxeBinaries(dir);
  const found = await ipxe.describe();
  t.same(found, [{ name: 'undionly.kpxe', path: join(dir, 'undionly.kpxe'), size: kpxe.length, sha256: sha(kpxe) }]);
  t.equal(await ipxe.open('ipxe.efi'), undefined);
  t.ok(IpxeBinaries.isName('snponly.efi'));
  t.notOk(IpxeBinaries.isName('passwd'));
  await t.rejects(ipxe.open('passwd' as 'ipxe.efi'), TypeError);
  // A new version of the file (the package upgraded) gets a new hash.
  const v2 = randomBytes(1000);
  writeFileSync(join(dir, 'undionly.kpxe'), v2);
  const opened = await ipxe.open('undionly.kpxe');
  t.equal(opened?.info.sha256, sha(v2));
  await opened?.fh.close();
  t.notOk(existsSync(join(dir, 'blobs')));
});
