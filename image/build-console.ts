// Builds the web console into dist/console/: the files the metalbox binary embeds (image/build-binary.ts
// collectAssets) and that src/api/routes/console.ts serves when metalbox runs from source.
//
//   node --import tsx image/build-console.ts [--out dist/console] [--no-minify]
//
// esbuild bundles src/console/main.tsx (Preact, JSX) and the CSS it imports into one script and one
// stylesheet whose names carry a content hash (served with a year-long cache), and index.html, which names
// them (served with no-cache). manifest.json lists every file with its type and sha256: it is the asset set,
// and nothing outside it is ever served. Offline: esbuild is local and the console loads nothing from
// elsewhere (no CDN, no web fonts).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CONSOLE_SRC = path.join(ROOT, 'src', 'console');
export const CONSOLE_OUT = path.join(ROOT, 'dist', 'console');
/** Hashed files live under this URL path; index.html and the SPA's own paths are outside it. */
export const ASSET_PREFIX = '/console-assets/';

export interface ConsoleManifestEntry { path: string; type: string; sha256: string; bytes: number; immutable: boolean }
export interface ConsoleManifest { builtAt: string; files: ConsoleManifestEntry[] }

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.json': 'application/json; charset=utf-8',
};

/** The newest modification time under src/console (and of this script): what the output must be newer than. */
export function newestSource(): number {
  let newest = fs.statSync(fileURLToPath(import.meta.url)).mtimeMs;
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else newest = Math.max(newest, fs.statSync(p).mtimeMs);
    }
  };
  walk(CONSOLE_SRC);
  return newest;
}

/** True when `out` holds a build at least as new as every source file. */
export function consoleUpToDate(out = CONSOLE_OUT): boolean {
  const manifest = fs.statSync(path.join(out, 'manifest.json'), { throwIfNoEntry: false });
  return manifest !== undefined && manifest.mtimeMs >= newestSource();
}

/**
 * Builds the console into `out` (replaced whole: built beside it, then renamed into place, so a reader never
 * sees half a build). Returns the manifest.
 */
export async function buildConsole(options: { out?: string; minify?: boolean; log?: (line: string) => void } = {}): Promise<ConsoleManifest> {
  const out = path.resolve(options.out ?? CONSOLE_OUT);
  const log = options.log ?? (() => {});
  const started = performance.now();
  const tmp = `${out}.tmp-${process.pid}-${Date.now()}`;
  fs.mkdirSync(tmp, { recursive: true });
  try {
    const result = await build({
      entryPoints: [path.join(CONSOLE_SRC, 'main.tsx')],
      outdir: tmp,
      absWorkingDir: ROOT,
      bundle: true,
      format: 'esm',
      platform: 'browser',
      // Chromium and Firefox of the last few years; nothing older reaches an appliance's console.
      target: ['chrome100', 'firefox100', 'safari15'],
      jsx: 'automatic',
      jsxImportSource: 'preact',
      minify: options.minify ?? true,
      sourcemap: false,
      entryNames: '[name]-[hash]',
      assetNames: '[name]-[hash]',
      legalComments: 'none',
      metafile: true,
      logLevel: 'silent',
      define: { 'process.env.NODE_ENV': '"production"' },
    });
    if (result.errors.length > 0) throw new Error(result.errors.map((e) => e.text).join('; '));
    const built = fs.readdirSync(tmp);
    const script = built.find((f) => f.endsWith('.js'));
    const style = built.find((f) => f.endsWith('.css'));
    if (!script || !style) throw new Error(`console build made ${built.join(', ')}: expected one .js and one .css`);
    const template = fs.readFileSync(path.join(CONSOLE_SRC, 'index.html'), 'utf8');
    // The CSP forbids inline scripts and styles: index.html only names the two files.
    const html = template
      .replace('<!--STYLE-->', `<link rel="stylesheet" href="${ASSET_PREFIX}${style}">`)
      .replace('<!--SCRIPT-->', `<script type="module" src="${ASSET_PREFIX}${script}"></script>`);
    if (html.includes('<!--')) throw new Error('src/console/index.html: a placeholder was left unreplaced');
    fs.writeFileSync(path.join(tmp, 'index.html'), html);
    const files: ConsoleManifestEntry[] = [];
    for (const f of fs.readdirSync(tmp).sort()) {
      const body = fs.readFileSync(path.join(tmp, f));
      const type = TYPES[path.extname(f)];
      if (!type) throw new Error(`console build made ${f}, of a type the console route does not serve`);
      files.push({ path: f, type, sha256: createHash('sha256').update(body).digest('hex'), bytes: body.length, immutable: f !== 'index.html' });
    }
    const manifest: ConsoleManifest = { builtAt: new Date().toISOString(), files };
    fs.writeFileSync(path.join(tmp, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    // Parallel builds (tap runs test files at once) may race here: the last rename wins, each build is whole.
    fs.rmSync(out, { recursive: true, force: true });
    try {
      fs.renameSync(tmp, out);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    }
    log(`console  ${path.relative(ROOT, out)}: ${files.map((f) => `${f.path} ${(f.bytes / 1024).toFixed(1)} KiB`).join(', ')} in ${Math.round(performance.now() - started)} ms`);
    return manifest;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Builds unless dist/console is newer than every source; returns the output directory. */
export async function ensureConsole(log?: (line: string) => void): Promise<string> {
  if (!consoleUpToDate()) await buildConsole(log ? { log } : {});
  return CONSOLE_OUT;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const { values } = parseArgs({ options: { out: { type: 'string' }, 'no-minify': { type: 'boolean', default: false } } });
  buildConsole({ ...(values.out ? { out: values.out } : {}), minify: !values['no-minify'], log: (l) => process.stdout.write(`${l}\n`) }).catch((err: unknown) => {
    process.stderr.write(`build-console: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
