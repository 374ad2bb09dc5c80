// Builds dist/metalbox: one executable that runs where neither Node nor node_modules exist.
//
//   node --import tsx image/build-binary.ts [--entry src/main.ts] [--out dist/metalbox] [--minify] [--no-strip] [--no-code-cache]
//
// It is a Node single-executable application (SEA): esbuild bundles src/main.ts into one CommonJS file,
// `node --experimental-sea-config` turns that and the assets into a blob, and postject injects the blob
// into a copy of this very node binary. The blob is tied to the Node version that made it, which is why
// both come from process.execPath. Native addons ride along as SEA assets and are loaded by
// src/lib/addon.ts; later assets (console files, iPXE scripts) are added in `collectAssets`.
//
// Offline by construction: nothing here downloads (node-gyp gets a --nodedir with the local headers).
// Intermediate files go to dist/.build/; the result is renamed into place, so dist/metalbox is never half-written.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { build, type Plugin } from 'esbuild';
import { addonAssetKey, devAddonPath, type AddonName } from '../src/lib/addon.ts';
import { ensureConsole } from './build-console.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BUILD_DIR = path.join(ROOT, 'dist', '.build');
const NATIVE_DIR = path.join(ROOT, 'src', 'native');
/** The fuse postject flips so that node looks for the injected blob (Node's SEA documentation). */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const require = createRequire(import.meta.url);

export interface BuildOptions {
  entry?: string;
  out?: string;
  minify?: boolean;
  strip?: boolean;
  codeCache?: boolean;
  log?: (line: string) => void;
}

export interface BuildResult {
  out: string;
  bytes: { node: number; stripped: number | undefined; bundle: number; blob: number; binary: number };
  ms: number;
}

/** Builds the single binary; see the header comment. */
export async function buildBinary(options: BuildOptions = {}): Promise<BuildResult> {
  const started = performance.now();
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  const entry = path.resolve(ROOT, options.entry ?? 'src/main.ts');
  const out = path.resolve(ROOT, options.out ?? 'dist/metalbox');
  fs.mkdirSync(BUILD_DIR, { recursive: true });

  buildNative(log);

  const bundle = path.join(BUILD_DIR, 'metalbox.cjs');
  await bundleMain(entry, bundle, options.minify ?? false);
  log(`bundle   ${rel(bundle)} ${mb(size(bundle))}`);

  const assets = collectAssets(await ensureConsole(log));
  const blob = path.join(BUILD_DIR, 'metalbox.blob');
  const seaConfig = path.join(BUILD_DIR, 'sea-config.json');
  fs.writeFileSync(seaConfig, `${JSON.stringify({
    // Relative to BUILD_DIR (the cwd below): the name is what stack traces from the binary show, and an
    // absolute one would carry this checkout's path into the binary.
    main: path.basename(bundle),
    output: path.basename(blob),
    disableExperimentalSEAWarning: true,
    // V8 code cache for the bundle, made now: start-up skips compiling it (measured: `serve` to the first
    // /healthz ~30-50 ms sooner). The price: the cache bytes differ from build to build, so only
    // --no-code-cache gives a byte-identical binary (the bundle itself always is).
    useCodeCache: options.codeCache ?? true,
    assets,
  }, null, 2)}\n`);
  run(process.execPath, ['--experimental-sea-config', seaConfig], { cwd: BUILD_DIR, quiet: true });
  log(`blob     ${rel(blob)} ${mb(size(blob))} (assets: ${Object.keys(assets).join(', ')})`);

  // Work on a copy next to the output and rename it into place at the end.
  const tmp = path.join(BUILD_DIR, 'metalbox.tmp');
  fs.rmSync(tmp, { force: true });
  fs.copyFileSync(process.execPath, tmp);
  fs.chmodSync(tmp, 0o755);
  const nodeBytes = size(tmp);
  let strippedBytes: number | undefined;
  // Node's own binary carries symbols and debug info we never use at run time. Strip before postject:
  // stripping afterwards could drop or move the injected section.
  if ((options.strip ?? true) && hasCommand('strip')) {
    run('strip', ['--strip-all', tmp]);
    strippedBytes = size(tmp);
  }
  const postject = path.join(path.dirname(require.resolve('postject/package.json')), 'dist', 'cli.js');
  // Quiet: LIEF warns "Can't find string offset for section name '.note.100'" for each of node's notes; harmless.
  run(process.execPath, [postject, tmp, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], { quiet: true });
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.renameSync(tmp, out);

  const result: BuildResult = {
    out,
    bytes: { node: nodeBytes, stripped: strippedBytes, bundle: size(bundle), blob: size(blob), binary: size(out) },
    ms: Math.round(performance.now() - started),
  };
  const stripNote = strippedBytes !== undefined ? `, stripped ${mb(strippedBytes)}` : options.strip === false ? ' (not stripped: --no-strip)' : ' (not stripped: no strip command)';
  log(`node     ${mb(nodeBytes)}${stripNote}`);
  log(`binary   ${rel(out)} ${mb(result.bytes.binary)} (${result.bytes.binary} bytes) in ${(result.ms / 1000).toFixed(1)} s`);
  return result;
}

/**
 * Builds src/native when its output is missing or older than a source. Offline: node-gyp would download
 * Node's headers unless told where the installed ones are; npm passes npm_config_nodedir, and otherwise
 * the prefix of this node is used when it has include/node/node_api.h.
 * Test files call this too and tap runs them in parallel: a lock file keeps two node-gyp runs out of the
 * same build directory, and the staleness check is repeated once the lock is ours.
 */
export function buildNative(log: (line: string) => void = () => {}): string {
  const addon = devAddonPath('metalbox_native');
  const upToDate = (): boolean => {
    const sources = fs.readdirSync(NATIVE_DIR).filter((f) => /\.(c|h|gyp)$/.test(f)).map((f) => path.join(NATIVE_DIR, f));
    const newest = Math.max(...sources.map((f) => fs.statSync(f).mtimeMs));
    return fs.existsSync(addon) && fs.statSync(addon).mtimeMs >= newest;
  };
  if (upToDate()) return addon;
  const release = lock(path.join(BUILD_DIR, 'native.lock'));
  try {
    if (upToDate()) return addon;
    const args = [path.join(path.dirname(require.resolve('node-gyp/package.json')), 'bin', 'node-gyp.js'), 'rebuild', '--directory', NATIVE_DIR];
    const prefix = path.dirname(path.dirname(process.execPath));
    const nodedir = process.env.npm_config_nodedir ?? (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined);
    if (nodedir !== undefined) args.push(`--nodedir=${nodedir}`);
    log(`native   node-gyp rebuild ${rel(NATIVE_DIR)}${nodedir === undefined ? '' : ` (headers from ${nodedir})`}`);
    run(process.execPath, args, { quiet: true });
    return addon;
  } finally {
    release();
  }
}

/** A crude exclusive lock (O_EXCL file); one left by a crashed build is taken over after 5 minutes. */
function lock(file: string): () => void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      return () => fs.rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = Date.now() - (fs.statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > 5 * 60_000) fs.rmSync(file, { force: true });
      if (Date.now() > deadline) throw new Error(`${rel(file)} is held by another build`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
  }
}

/** Bundles `entry` into one CommonJS file a SEA can run (its `require` only reaches builtins). */
async function bundleMain(entry: string, outfile: string, minify: boolean): Promise<void> {
  const result = await build({
    entryPoints: [entry],
    outfile,
    // Paths in the bundle's comments are relative to this, so the output does not depend on the cwd.
    absWorkingDir: ROOT,
    bundle: true,
    platform: 'node',
    // Node 20's SEA runs one CommonJS script: no ESM, hence no top-level await anywhere in src/.
    format: 'cjs',
    target: 'node20',
    minify,
    // Class and function names survive, so stack traces and error names stay readable.
    keepNames: true,
    legalComments: 'eof',
    logLevel: 'silent',
    metafile: false,
    // import.meta does not exist in CommonJS: give ESM code a file URL for the bundle (inside the SEA,
    // __filename is the executable's own path).
    define: {
      'import.meta.url': '__metalbox_import_meta_url',
      'import.meta.filename': '__filename',
      'import.meta.dirname': '__dirname',
    },
    banner: { js: 'var __metalbox_import_meta_url = require("node:url").pathToFileURL(__filename).href;' },
    plugins: [nodeGypBuildShim()],
  });
  for (const warning of result.warnings) {
    process.stderr.write(`esbuild warning: ${warning.text}${warning.location ? ` (${warning.location.file}:${warning.location.line})` : ''}\n`);
  }
  // A leftover import.meta would be `{}` at run time: paths built from it would point nowhere. (A
  // `require(variable)` is only printed: inside the binary it reaches builtins only, which matters only
  // if that code path runs.)
  const broken = result.warnings.filter((w) => w.id === 'empty-import-meta');
  if (result.errors.length > 0 || broken.length > 0) throw new Error(`bundling ${rel(entry)} failed: ${broken.map((w) => w.text).join('; ')}`);
}

/**
 * classic-level's binding.js is `require('node-gyp-build')(__dirname)`, which searches the file system for
 * the addon. In the binary there is no such file system, so that module becomes a loader for the embedded
 * addon.
 */
function nodeGypBuildShim(): Plugin {
  return {
    name: 'metalbox-node-gyp-build-shim',
    setup(b) {
      b.onResolve({ filter: /^node-gyp-build$/ }, () => ({ path: 'node-gyp-build', namespace: 'metalbox-shim' }));
      b.onLoad({ filter: /.*/, namespace: 'metalbox-shim' }, () => ({
        contents: `const { loadAddon } = require(${JSON.stringify(path.join(ROOT, 'src', 'lib', 'addon.ts'))});\n`
          + `module.exports = function nodeGypBuild() { return loadAddon('classic_level'); };\n`,
        loader: 'js',
        resolveDir: ROOT,
      }));
    },
  };
}

/** SEA assets: key -> absolute file: the native addons, and the web console (`console/<file>`, read by src/api/routes/console.ts). */
function collectAssets(consoleDir: string): Record<string, string> {
  const addons: Record<AddonName, string> = {
    metalbox_native: devAddonPath('metalbox_native'),
    classic_level: classicLevelPrebuild(),
  };
  const assets: Record<string, string> = {};
  for (const [name, file] of Object.entries(addons) as [AddonName, string][]) assets[addonAssetKey(name)] = file;
  // manifest.json lists the set (and each file's sha256): the binary serves exactly these files.
  for (const file of fs.readdirSync(consoleDir)) assets[`console/${file}`] = path.join(consoleDir, file);
  return assets;
}

/**
 * classic-level ships prebuilt addons per platform (prebuilds/linux-x64/classic-level.node for glibc,
 * classic-level.musl.node for musl). The binary is this glibc node, so take the glibc one.
 */
function classicLevelPrebuild(): string {
  const dir = path.join(path.dirname(require.resolve('classic-level/package.json')), 'prebuilds', `${process.platform}-${process.arch}`);
  const candidates = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.node') && !f.split('.').includes('musl')) : [];
  if (candidates.length !== 1) throw new Error(`expected one glibc classic-level prebuild in ${dir}, found: ${candidates.join(', ') || 'none'}`);
  return path.join(dir, candidates[0] as string);
}

function run(command: string, args: string[], options: { cwd?: string; quiet?: boolean } = {}): void {
  const result = spawnSync(command, args, { cwd: options.cwd ?? ROOT, stdio: options.quiet ? ['ignore', 'pipe', 'pipe'] : ['ignore', 'inherit', 'inherit'], encoding: 'utf8' });
  if (result.error !== undefined || result.status !== 0) {
    if (options.quiet) process.stderr.write(`${result.stdout ?? ''}${result.stderr ?? ''}`);
    throw new Error(`${path.basename(command)} ${args.map((a) => path.basename(a)).join(' ')} failed: ${result.error?.message ?? `exit ${result.status ?? result.signal}`}`);
  }
}

function hasCommand(name: string): boolean {
  return spawnSync(name, ['--version'], { stdio: 'ignore' }).status === 0;
}

function size(file: string): number {
  return fs.statSync(file).size;
}

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function rel(file: string): string {
  return path.relative(ROOT, file) || '.';
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const { values } = parseArgs({
    options: {
      entry: { type: 'string' },
      out: { type: 'string' },
      minify: { type: 'boolean', default: false },
      'no-strip': { type: 'boolean', default: false },
      'no-code-cache': { type: 'boolean', default: false },
      // Only (re)build src/native when stale: what `npm test` and `npm start` need from a fresh clone.
      'native-only': { type: 'boolean', default: false },
    },
  });
  if (values['native-only']) {
    try {
      buildNative((line) => process.stdout.write(`${line}\n`));
    } catch (err) {
      process.stderr.write(`build-native: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    }
  } else buildBinary({ entry: values.entry, out: values.out, minify: values.minify, strip: !values['no-strip'], codeCache: !values['no-code-cache'] }).catch((err: unknown) => {
    process.stderr.write(`build-binary: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
