// Native addons and other embedded files, found the same way in development and inside the single binary.
//
// Outside the binary an addon is loaded from where the build left it. Inside it (node:sea isSea()), the
// binary's `require` reaches builtins only and dlopen needs a real file, so the `.node` bytes travel as an
// SEA asset: we hash them, write them once into a private runtime directory under a name that contains
// the hash, and process.dlopen that file. Later starts reuse the file when its content still matches.
//
// The runtime directory comes from the environment, not from config: classic-level loads its addon while
// the bundle is being evaluated, before main has read any config. Order: $METALBOX_RUNTIME_DIR,
// $XDG_RUNTIME_DIR/metalbox, <tmpdir>/metalbox-<uid>. It must not live on a noexec mount (dlopen maps it
// executable).
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import sea from 'node:sea';
import { fileURLToPath } from 'node:url';
import { errnoCode, MetalboxError } from './errors.ts';

/** Every native addon the project loads. image/build-binary.ts embeds each one as `addonAssetKey(name)`. */
export const ADDON_NAMES = ['metalbox_native', 'classic_level'] as const;
export type AddonName = (typeof ADDON_NAMES)[number];

/** Where a dev-time load finds each addon. Only used outside the single binary. */
const DEV_LOADERS: Record<AddonName, (req: NodeJS.Require) => unknown> = {
  // Our own module, built by `npm run build:native` (node-gyp's default output directory).
  metalbox_native: (req) => req(devAddonPath('metalbox_native')),
  // classic-level finds its prebuilt addon itself; ask its finder the same way its binding.js does.
  classic_level: (req) => {
    const nodeGypBuild = req('node-gyp-build') as (dir: string) => unknown;
    return nodeGypBuild(path.dirname(req.resolve('classic-level/package.json')));
  },
};

/** The SEA asset key under which the binary carries an addon. */
export function addonAssetKey(name: AddonName): string {
  return `addons/${name}.node`;
}

/** Path of our own addon's development build (also what the binary build embeds). */
export function devAddonPath(name: 'metalbox_native'): string {
  return fileURLToPath(new URL(`../native/build/Release/${name}.node`, import.meta.url));
}

/** True inside the single binary (dist/metalbox). */
export function isSingleBinary(): boolean {
  return sea.isSea();
}

const loaded = new Map<AddonName, unknown>();

/**
 * The exports of a native addon (cached: each is loaded once per process). Throws MetalboxError
 * ADDON_LOAD_FAILED when it cannot be found, written or loaded. The caller narrows the type.
 */
export function loadAddon(name: AddonName): unknown {
  if (loaded.has(name)) return loaded.get(name);
  const exports = sea.isSea() ? loadEmbedded(name) : loadDev(name);
  loaded.set(name, exports);
  return exports;
}

/**
 * A file embedded in the binary (console files, iPXE scripts, ...), as a copy the caller may modify.
 * `undefined` outside the binary, or when the binary does not carry it: callers then read the source tree.
 */
export function seaAsset(key: string): Buffer | undefined {
  if (!sea.isSea()) return undefined;
  try {
    return Buffer.from(sea.getAsset(key));
  } catch (err) {
    if (errnoCode(err) === 'ERR_SINGLE_EXECUTABLE_APPLICATION_ASSET_NOT_FOUND') return undefined;
    throw err;
  }
}

/** The private directory embedded addons are written to (see the header comment for the order). */
export function addonRuntimeDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.METALBOX_RUNTIME_DIR) return path.resolve(env.METALBOX_RUNTIME_DIR);
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'metalbox');
  return path.join(os.tmpdir(), `metalbox-${currentUid()}`);
}

/**
 * Makes sure `dir` exists and only we can write into it: created 0700; an existing one must be a real
 * directory (not a symlink), owned by us, and not group/world-writable, else another user could swap
 * the library we are about to dlopen. Throws ADDON_LOAD_FAILED.
 */
export function ensurePrivateDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new MetalboxError('ADDON_LOAD_FAILED', `cannot create the addon runtime directory ${dir}: ${errnoCode(err) ?? String(err)}`, { cause: err, details: { dir } });
  }
  const st = fs.lstatSync(dir);
  const uid = currentUid();
  let problem: string | undefined;
  if (!st.isDirectory()) problem = 'is not a directory (symlinks are refused)';
  else if (st.uid !== uid) problem = `is owned by uid ${st.uid}, not by us (uid ${uid})`;
  else if ((st.mode & 0o022) !== 0) problem = `is group- or world-writable (mode ${(st.mode & 0o777).toString(8)})`;
  if (problem !== undefined) {
    throw new MetalboxError('ADDON_LOAD_FAILED', `refusing the addon runtime directory ${dir}: it ${problem}; set METALBOX_RUNTIME_DIR to a private directory`, { details: { dir } });
  }
}

/**
 * Writes `bytes` as `<dir>/<name>-<sha256 prefix>.node` unless a file with exactly that content is already
 * there, and returns its path. A file whose content does not match (torn write after a crash, tampering)
 * is replaced through a temporary file and rename, so a concurrent start never dlopens half a file.
 */
export function writeAddonOnce(dir: string, name: string, bytes: Uint8Array): string {
  ensurePrivateDir(dir);
  const hash = sha256(bytes);
  const file = path.join(dir, `${name}-${hash.slice(0, 16)}.node`);
  try {
    const st = fs.lstatSync(file);
    if (st.isFile() && sha256(fs.readFileSync(file)) === hash) return file;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') {
      throw new MetalboxError('ADDON_LOAD_FAILED', `cannot read ${file}: ${errnoCode(err) ?? String(err)}`, { cause: err, details: { file } });
    }
  }
  const tmp = path.join(dir, `.${name}-${hash.slice(0, 16)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    // No fsync: the directory is scratch space, and a torn file fails the hash check on the next start.
    fs.writeFileSync(tmp, bytes, { mode: 0o600, flag: 'wx' });
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw new MetalboxError('ADDON_LOAD_FAILED', `cannot write ${file}: ${errnoCode(err) ?? String(err)}`, { cause: err, details: { file } });
  }
  return file;
}

function loadEmbedded(name: AddonName): unknown {
  const key = addonAssetKey(name);
  let bytes: Uint8Array;
  try {
    // getRawAsset: no copy of the ~0.5 MB; we only read it (writing to it would fault).
    const raw = sea.getRawAsset(key);
    bytes = typeof raw === 'string' ? Buffer.from(raw) : new Uint8Array(raw);
  } catch (err) {
    throw new MetalboxError('ADDON_LOAD_FAILED', `this binary does not carry ${key}`, { cause: err, details: { addon: name } });
  }
  const file = writeAddonOnce(addonRuntimeDir(), name, bytes);
  const module = { exports: {} as unknown };
  try {
    process.dlopen(module, file, os.constants.dlopen.RTLD_NOW);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new MetalboxError('ADDON_LOAD_FAILED', `cannot load the ${name} addon: ${reason} (a noexec mount? set METALBOX_RUNTIME_DIR)`, { cause: err, details: { addon: name, file } });
  }
  return module.exports;
}

function loadDev(name: AddonName): unknown {
  try {
    return DEV_LOADERS[name](createRequire(import.meta.url));
  } catch (err) {
    const hint = name === 'metalbox_native' ? ' (run `npm run build:native`)' : '';
    const reason = err instanceof Error ? err.message : String(err);
    throw new MetalboxError('ADDON_LOAD_FAILED', `cannot load the ${name} addon${hint}: ${reason}`, { cause: err, details: { addon: name } });
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function currentUid(): number {
  // Always defined on Linux, the only platform metalbox runs on.
  return process.getuid?.() ?? -1;
}
