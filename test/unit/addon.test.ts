// The part of the embedded-addon loader that runs the same in and out of the binary: the private
// runtime directory and the write-once-by-hash file. (Loading from the SEA itself is covered by
// test/integration/binary.test.ts.)
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildNative } from '../../image/build-binary.ts';
import { addonRuntimeDir, ensurePrivateDir, loadAddon, seaAsset, writeAddonOnce } from '../../src/lib/addon.ts';

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mbx-addon-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('runtime dir: METALBOX_RUNTIME_DIR, then XDG_RUNTIME_DIR/metalbox, then tmpdir/metalbox-<uid>', async (t) => {
  t.equal(addonRuntimeDir({ METALBOX_RUNTIME_DIR: '/run/mbx', XDG_RUNTIME_DIR: '/run/user/0' }), '/run/mbx');
  t.equal(addonRuntimeDir({ XDG_RUNTIME_DIR: '/run/user/1000' }), '/run/user/1000/metalbox');
  t.equal(addonRuntimeDir({}), path.join(os.tmpdir(), `metalbox-${process.getuid?.()}`));
});

t.test('the directory is created 0700; unsafe ones are refused', async (t) => {
  const base = tmp(t);
  const dir = path.join(base, 'a', 'rt');
  ensurePrivateDir(dir);
  t.equal(fs.statSync(dir).mode & 0o777, 0o700);
  ensurePrivateDir(dir);

  fs.chmodSync(dir, 0o777);
  t.throws(() => ensurePrivateDir(dir), { code: 'ADDON_LOAD_FAILED', message: /world-writable/ });
  fs.chmodSync(dir, 0o770);
  t.throws(() => ensurePrivateDir(dir), { code: 'ADDON_LOAD_FAILED' }, 'group-writable');
  fs.chmodSync(dir, 0o755);
  ensurePrivateDir(dir);

  const link = path.join(base, 'link');
  fs.symlinkSync(dir, link);
  t.throws(() => ensurePrivateDir(link), { code: 'ADDON_LOAD_FAILED', message: /not a directory/ });
  const file = path.join(base, 'file');
  fs.writeFileSync(file, '');
  t.throws(() => ensurePrivateDir(file), { code: 'ADDON_LOAD_FAILED' });

  // Ownership: only checkable when we can hand a directory to someone else.
  if (process.getuid?.() === 0) {
    const foreign = path.join(base, 'foreign');
    fs.mkdirSync(foreign, { mode: 0o700 });
    fs.chownSync(foreign, 65534, 65534);
    t.throws(() => ensurePrivateDir(foreign), { code: 'ADDON_LOAD_FAILED', message: /owned by uid 65534/ });
  }
});

t.test('written once under a hash name, reused while it matches, replaced when it does not', async (t) => {
  const dir = path.join(tmp(t), 'rt');
  const bytes = Buffer.from('pretend this is an ELF shared object');
  const file = writeAddonOnce(dir, 'demo', bytes);
  t.match(path.basename(file), /^demo-[0-9a-f]{16}\.node$/);
  t.equal(fs.statSync(file).mode & 0o777, 0o600);
  t.same(fs.readFileSync(file), bytes);

  const before = fs.statSync(file);
  t.equal(writeAddonOnce(dir, 'demo', bytes), file);
  t.equal(fs.statSync(file).ino, before.ino, 'the matching file is reused, not rewritten');

  fs.writeFileSync(file, 'torn');
  t.equal(writeAddonOnce(dir, 'demo', bytes), file);
  t.same(fs.readFileSync(file), bytes, 'a mismatching file is replaced');

  const other = writeAddonOnce(dir, 'demo', Buffer.from('version 2'));
  t.not(other, file, 'other content gets another name');
  t.same(fs.readdirSync(dir).sort(), [path.basename(file), path.basename(other)].sort(), 'no temporary files left');
});

t.test('outside the binary: dev builds load, assets are absent', async (t) => {
  buildNative();
  const native = loadAddon('metalbox_native') as { sdNotify: unknown };
  t.type(native.sdNotify, 'function');
  t.equal(loadAddon('metalbox_native'), native, 'cached');
  t.type((loadAddon('classic_level') as Record<string, unknown>).db_init, 'function');
  t.equal(seaAsset('addons/classic_level.node'), undefined);
});
