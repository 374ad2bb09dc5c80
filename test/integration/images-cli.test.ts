// `metalbox images add|list|remove` as an operator runs it: straight on the store when no metalbox runs, and
// through the control socket of a running `metalbox serve` (which then reads the files or downloads the URLs
// itself and streams progress back), with HTTP boot serving what was added. Network only on 127.0.0.1.
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT, run, runSource, freePort, type Running } from '../helpers/process.ts';

/** The CLI from the sources, run from another directory (relative paths are resolved against it). */
const TSX = pathToFileURL(join(ROOT, 'node_modules/tsx/dist/loader.mjs')).href;
const env = (): NodeJS.ProcessEnv => ({ ...process.env, NOTIFY_SOCKET: '' });
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function setup(t: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-images-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const kernel = randomBytes(2 * 1024 * 1024 + 5);
  const initrd = randomBytes(700_000);
  writeFileSync(join(dir, 'vmlinuz'), kernel);
  writeFileSync(join(dir, 'initrd.img'), initrd);
  const port = await freePort();
  const config = join(dir, 'metalbox.yaml');
  writeFileSync(config, `stateDir: ${join(dir, 'state')}\nhttp: { listen: "127.0.0.1:${port}" }\nhttps: { listen: "127.0.0.1:0" }\nlogLevel: info\n`);
  // A mirror on loopback for the URL case.
  const mirror = createServer((req, res) => {
    if (req.url === '/linux') { res.writeHead(200, { 'content-length': kernel.length }); res.end(kernel); return; }
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((r) => mirror.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { mirror.closeAllConnections(); mirror.close(() => r()); }));
  const a = mirror.address();
  const mirrorUrl = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
  const cli = async (args: string[]): Promise<Running & { code: number | string }> => {
    const r = run(process.execPath, ['--import', TSX, join(ROOT, 'src/main.ts'), ...args, '--config', config], { env: env(), cwd: dir });
    const code = await r.exited;
    return Object.assign(r, { code });
  };
  return { dir, kernel, initrd, port, config, mirrorUrl, cli };
}

t.test('without a running metalbox: add from a file and a URL, list, remove, errors', async (t) => {
  const s = await setup(t);
  const add = await s.cli(['images', 'add', 'deb-12', '--kernel', 'vmlinuz', '--initrd', 'initrd.img', '--cmdline', 'quiet']);
  t.equal(add.code, 0, add.stderr());
  t.match(add.stdout(), /^image deb-12 added \(2\.7 MiB\)\n/);
  t.match(add.stdout(), `kernel  ${sha(s.kernel)}`);
  t.match(add.stderr(), /initrd: 683\.6 KiB \/ 683\.6 KiB {2}100% {2}[\d.]+ MiB\/s {2}done/, 'progress on stderr');

  const net = await s.cli(['images', 'add', 'net', '--kernel', `${s.mirrorUrl}/linux#sha256=${sha(s.kernel)}`, '--initrd', join(s.dir, 'initrd.img')]);
  t.equal(net.code, 0, net.stderr());
  t.match(net.stderr(), /kernel: 2\.0 MiB \/ 2\.0 MiB {2}100%/);

  const list = await s.cli(['images', 'list']);
  t.equal(list.code, 0, list.stderr());
  t.match(list.stdout(), /^deb-12 {2}2\.7 MiB {2}added \S+\n {2}cmdline quiet\n {2}kernel {2}[0-9a-f]{64} +2\.0 MiB {2}\S+vmlinuz\n/);
  t.match(list.stdout(), `net  2.7 MiB`);
  t.match(list.stdout(), `${s.mirrorUrl}/linux`);
  t.match(list.stdout(), /iPXE binaries in \/usr\/lib\/ipxe:/);
  t.equal(readdirSync(join(s.dir, 'state', 'assets', 'blobs')).length, 2, 'the shared kernel and initrd are stored once');

  const dup = await s.cli(['images', 'add', 'net', '--kernel', 'vmlinuz', '--initrd', 'initrd.img']);
  t.equal(dup.code, 1);
  t.match(dup.stderr(), /metalbox: IMAGE_EXISTS: /);
  const missing = await s.cli(['images', 'add', 'x', '--kernel', 'nope', '--initrd', 'initrd.img']);
  t.equal(missing.code, 1);
  t.match(missing.stderr(), /ASSET_SOURCE_UNREADABLE: cannot read \S+nope: ENOENT/);
  const notFound = await s.cli(['images', 'add', 'x', '--kernel', `${s.mirrorUrl}/gone`, '--initrd', 'initrd.img']);
  t.equal(notFound.code, 1);
  t.match(notFound.stderr(), /ASSET_FETCH_FAILED: .*answered 404/);
  const corrupt = await s.cli(['images', 'add', 'x', '--kernel', `${s.mirrorUrl}/linux#sha256=${'0'.repeat(64)}`, '--initrd', 'initrd.img']);
  t.equal(corrupt.code, 1);
  t.match(corrupt.stderr(), /ASSET_CHECKSUM_MISMATCH/);
  for (const args of [['images', 'add', 'x', '--kernel', 'vmlinuz'], ['images', 'frob'], ['images', 'list', '--kernel', 'k'], ['settings', 'list', '--initrd', 'i']]) {
    const r = await s.cli(args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr(), /CLI_USAGE/);
  }

  const rm = await s.cli(['images', 'remove', 'deb-12']);
  t.equal(rm.code, 0, rm.stderr());
  t.match(rm.stdout(), /image deb-12 removed \(0 file\(s\)/, 'both files are still used by "net"');
  const rm2 = await s.cli(['images', 'remove', 'deb-12']);
  t.equal(rm2.code, 1);
  t.match(rm2.stderr(), /NOT_FOUND: no image "deb-12"/);
  t.equal((await s.cli(['images', 'remove', 'net'])).code, 0);
  t.same(readdirSync(join(s.dir, 'state', 'assets', 'blobs')), []);
});

t.test('with metalbox serve running: through the control socket, served by HTTP boot at once', async (t) => {
  const s = await setup(t);
  const serve = runSource(['serve', '--config', s.config], { env: env() });
  t.teardown(() => { serve.child.kill('SIGKILL'); });
  await serve.waitFor(/"msg":"metalbox ready"/);
  const base = `http://127.0.0.1:${s.port}`;

  const add = await s.cli(['images', 'add', 'eph', '--kernel', `${s.mirrorUrl}/linux`, '--initrd', 'initrd.img', '--cmdline', 'ip=dhcp']);
  t.equal(add.code, 0, add.stderr());
  t.match(add.stderr(), /kernel: 2\.0 MiB \/ 2\.0 MiB {2}100%.*done/, 'progress relayed from the server');
  t.match(add.stdout(), `initrd  ${sha(s.initrd)}`);

  const list = await s.cli(['images', 'list']);
  t.equal(list.code, 0, list.stderr());
  t.match(list.stdout(), /^eph {2}2\.7 MiB/);
  t.match(list.stdout(), /warning|eph/);

  const kernel = await fetch(`${base}/boot/assets/eph/kernel`);
  t.equal(kernel.status, 200);
  t.equal(kernel.headers.get('etag'), `"${sha(s.kernel)}"`);
  t.ok(Buffer.from(await kernel.arrayBuffer()).equals(s.kernel), 'served as added');

  const none = await (await fetch(`${base}/boot/52-54-00-77-00-10.ipxe`)).text();
  t.match(none, /no ephemeral image is configured/);
  t.equal((await s.cli(['settings', 'set', 'boot.ephemeralImage', 'eph'])).code, 0);
  const script = await (await fetch(`${base}/boot/52-54-00-77-00-10.ipxe`)).text();
  t.match(script, `kernel ${base}/boot/assets/eph/kernel initrd=initrd metalbox.url=${base} metalbox.token=`);
  t.match(script, /metalbox\.mode=enlist metalbox\.image=eph console=tty0 console=ttyS0,115200n8 ip=dhcp/);
  const listed = await s.cli(['images', 'list']);
  t.match(listed.stdout(), /^eph .*\[ephemeral image\]/);

  const bad = await s.cli(['images', 'add', 'x', '--kernel', 'missing-file', '--initrd', 'initrd.img']);
  t.equal(bad.code, 1);
  t.match(bad.stderr(), /ASSET_SOURCE_UNREADABLE/);

  const rm = await s.cli(['images', 'remove', 'eph']);
  t.equal(rm.code, 0, rm.stderr());
  t.equal((await fetch(`${base}/boot/assets/eph/kernel`)).status, 404);
  t.match(await (await fetch(`${base}/boot/52-54-00-77-00-10.ipxe`)).text(), /"eph" is not registered/);

  t.notMatch(serve.stdout(), /metalbox\.token=/, 'no token in the log');
  serve.child.kill('SIGTERM');
  t.equal(await serve.exited, 0);
  const after = await s.cli(['images', 'list']);
  t.equal(after.code, 0);
  t.match(after.stdout(), /^no boot images/);
});
