// What a TFTP name can reach: checkTftpPath's table, then the root source against a real directory with
// symlinks pointing out (file and directory) and in, a FIFO, a directory, and the iPXE and generated sources.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMetalboxError } from '../../src/lib/errors.ts';
import { autoexecIpxe, checkTftpPath, createIpxeSource, createRootSource, GeneratedFiles, type TftpFile, type TftpSource } from '../../src/services/tftp/sources.ts';

const dir = mkdtempSync(join(tmpdir(), 'mbx-tftp-paths-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const root = join(dir, 'root');
const outside = join(dir, 'outside');
mkdirSync(join(root, 'pxelinux.cfg'), { recursive: true });
mkdirSync(outside);
writeFileSync(join(root, 'undionly.kpxe'), 'root copy');
writeFileSync(join(root, 'pxelinux.cfg', 'default'), 'DEFAULT menu');
writeFileSync(join(root, 'caf\u00e9.txt'), 'utf-8 name');
writeFileSync(join(outside, 'secret'), 'do not serve');
symlinkSync(join(outside, 'secret'), join(root, 'link-out'));
symlinkSync('../outside', join(root, 'dir-out'));
symlinkSync('pxelinux.cfg/default', join(root, 'link-in'));
symlinkSync(join(root, 'pxelinux.cfg'), join(root, 'dir-in'));
symlinkSync('loop-b', join(root, 'loop-a'));
symlinkSync('loop-a', join(root, 'loop-b'));
execFileSync('mkfifo', [join(root, 'fifo')]);

async function read(f: TftpFile): Promise<string> {
  const data = await f.read(0, f.size + 10);
  await f.close();
  return data.toString('utf8');
}

t.test('checkTftpPath', async (t) => {
  const table: [string, string | { refused: string }][] = [
    ['undionly.kpxe', 'undionly.kpxe'],
    ['pxelinux.cfg/01-52-54-00-aa-bb-cc', 'pxelinux.cfg/01-52-54-00-aa-bb-cc'],
    ['./a//b/./c', 'a/b/c'],
    ['dir/', 'dir'],
    ['a..b', 'a..b'],
    ['...', '...'],
    ['x'.repeat(255), 'x'.repeat(255)],
    ['', { refused: 'empty' }],
    ['./', { refused: 'empty' }],
    ['x'.repeat(256), { refused: 'too-long' }],
    ['a\0b', { refused: 'nul' }],
    ['..\\windows\\win.ini', { refused: 'backslash' }],
    ['a\\b', { refused: 'backslash' }],
    ['a\nb', { refused: 'control' }],
    ['a\x7fb', { refused: 'control' }],
    ['/etc/passwd', { refused: 'absolute' }],
    ['//etc/passwd', { refused: 'absolute' }],
    ['..', { refused: 'dot-dot' }],
    ['../etc/passwd', { refused: 'dot-dot' }],
    ['a/../../etc/passwd', { refused: 'dot-dot' }],
    ['a/..', { refused: 'dot-dot' }],
    ['pxelinux.cfg/../undionly.kpxe', { refused: 'dot-dot' }],
  ];
  for (const [name, want] of table) {
    const got = checkTftpPath(name);
    t.same(got, typeof want === 'string' ? { path: want } : want, JSON.stringify(name.length > 40 ? `${name.slice(0, 20)}...(${name.length})` : name));
  }
});

t.test('root source: inside is served, outside is refused', async (t) => {
  const src = await createRootSource(root);
  const client = { address: '10.0.0.5' };
  t.equal(await read((await src.open('undionly.kpxe', client))!), 'root copy');
  t.equal(await read((await src.open('pxelinux.cfg/default', client))!), 'DEFAULT menu');
  t.equal(await read((await src.open('link-in', client))!), 'DEFAULT menu', 'a symlink pointing inside is followed');
  t.equal(await read((await src.open('dir-in/default', client))!), 'DEFAULT menu', 'a directory symlink pointing inside is followed');
  t.equal(await read((await src.open('caf\u00e9.txt', client))!), 'utf-8 name');
  t.equal(await src.open('missing', client), undefined, 'missing: undefined');
  t.equal(await src.open('pxelinux.cfg', client), undefined, 'a directory: undefined');
  t.equal(await src.open('undionly.kpxe/x', client), undefined, 'below a file: undefined');
  t.equal(await src.open('loop-a', client), undefined, 'a symlink loop: undefined');
  const t0 = Date.now();
  t.equal(await src.open('fifo', client), undefined, 'a FIFO: undefined');
  t.ok(Date.now() - t0 < 2000, 'and opening it did not block');

  const refusals: [string, string][] = [
    ['link-out', 'outside-root'],
    ['dir-out/secret', 'outside-root'],
    ['../outside/secret', 'dot-dot'],
    ['/etc/passwd', 'absolute'],
    [`${outside}/secret`, 'absolute'],
    ['..\\outside\\secret', 'backslash'],
    ['secret\0.txt', 'nul'],
    ['a/'.repeat(128), 'too-long'],
  ];
  for (const [name, reason] of refusals) {
    let caught: unknown;
    try {
      await src.open(name, client);
    } catch (err) {
      caught = err;
    }
    t.ok(isMetalboxError(caught, 'TFTP_PATH_REFUSED'), `${JSON.stringify(name.slice(0, 40))}: TFTP_PATH_REFUSED`);
    if (isMetalboxError(caught)) t.equal(caught.details?.reason, reason, `reason ${reason}`);
  }
});

t.test('root source: reads stream by offset', async (t) => {
  const big = Buffer.alloc(200_000);
  for (let i = 0; i < big.length; i++) big[i] = i % 251;
  writeFileSync(join(root, 'big.bin'), big);
  const f = (await (await createRootSource(root)).open('big.bin', { address: '10.0.0.5' }))!;
  t.equal(f.size, big.length);
  t.ok((await f.read(0, 1000)).equals(big.subarray(0, 1000)));
  t.ok((await f.read(150_000, 65_536)).equals(big.subarray(150_000)), 'a read past the end is short');
  t.equal((await f.read(big.length, 10)).length, 0, 'at the end: empty');
  await f.close();
});

t.test('root source: small files are read once and served from memory until they change', async (t) => {
  const src = await createRootSource(root);
  const file = join(root, 'menu.ipxe');
  writeFileSync(file, 'version one\n');
  const when = new Date('2026-01-02T03:04:05Z'); // whole seconds: utimes can set it back exactly
  utimesSync(file, when, when);
  const open = async () => read((await src.open('menu.ipxe', { address: '10.0.0.5' }))!);
  t.equal(await open(), 'version one\n');
  // Rewritten in place with the same size and the old mtime: still the copy in memory (the key is dev, inode,
  // size and mtime), which proves it is not read again.
  writeFileSync(file, 'version two\n');
  utimesSync(file, when, when);
  t.equal(await open(), 'version one\n', 'served from memory');
  writeFileSync(file, 'version three, longer\n');
  t.equal(await open(), 'version three, longer\n', 'a changed size (and mtime) reads it again');
  rmSync(file);
  writeFileSync(file, 'version four\n');
  t.equal(await open(), 'version four\n', 'a replaced file (new inode) too');
  const big = Buffer.alloc(1024 * 1024 + 1, 7);
  writeFileSync(join(root, 'large.bin'), big);
  const f = (await src.open('large.bin', { address: '10.0.0.5' }))!;
  t.equal(f.size, big.length, 'past 1 MiB a file is read from disk by offset, as before');
  t.ok((await f.read(1024 * 1024, 10)).equals(big.subarray(1024 * 1024)));
  await f.close();
});

t.test('iPXE source: exactly three names', async (t) => {
  const ipxeDir = join(dir, 'ipxe');
  mkdirSync(ipxeDir);
  for (const n of ['undionly.kpxe', 'ipxe.efi', 'snponly.efi', 'ipxe.lkrn']) writeFileSync(join(ipxeDir, n), n);
  const src: TftpSource = createIpxeSource(ipxeDir);
  const client = { address: '10.0.0.5' };
  for (const n of ['undionly.kpxe', 'ipxe.efi', 'snponly.efi']) t.equal(await read((await src.open(n, client))!), n, n);
  t.equal(await src.open('ipxe.lkrn', client), undefined, 'other files in the directory are not served');
  t.equal(await src.open('UNDIONLY.KPXE', client), undefined, 'names are exact');
  t.equal(await createIpxeSource(join(dir, 'no-such-dir')).open('ipxe.efi', client), undefined, 'no ipxe package: undefined');
});

t.test('generated files: registry and autoexec.ipxe', async (t) => {
  const g = new GeneratedFiles();
  g.register('autoexec', autoexecIpxe(5240));
  const unregister = g.register('per-mac', (path, client) => (path === `ipxe/${client.mac}.ipxe` ? Buffer.from(`#!ipxe\necho ${client.address}\n`) : undefined));
  const script = await read((await g.open('autoexec.ipxe', { address: '10.0.0.5' }))!);
  t.equal(script, '#!ipxe\n# metalbox: hand the boot over to HTTP\nchain http://${next-server}:5240/boot/ipxe?mac=${net0/mac}\n');
  t.equal(await read((await g.open('ipxe/52:54:00:00:00:01.ipxe', { address: '10.0.0.5', mac: '52:54:00:00:00:01' }))!), '#!ipxe\necho 10.0.0.5\n');
  t.equal(await g.open('ipxe/52:54:00:00:00:01.ipxe', { address: '10.0.0.5' }), undefined, 'not this machine');
  const f = (await g.open('autoexec.ipxe', { address: '10.0.0.5' }))!;
  t.equal((await f.read(10, 5)).toString(), script.slice(10, 15), 'reads by offset');
  t.equal((await f.read(10_000, 5)).length, 0);
  unregister();
  t.equal(await g.open('ipxe/52:54:00:00:00:01.ipxe', { address: '10.0.0.5', mac: '52:54:00:00:00:01' }), undefined, 'unregistered');
});
