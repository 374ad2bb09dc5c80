// The web console (src/console): index.html, one script and one stylesheet, built by image/build-console.ts.
//
// Where the files come from: inside the single binary, its SEA assets (`console/manifest.json` and
// `console/<file>`, embedded by image/build-binary.ts); run from source, dist/console, built on demand when
// missing or older than src/console (esbuild, a devDependency; never imported by the binary's bundle).
//
// What is served, over GET and HEAD only, and nothing else:
//   /console-assets/<file>  a hashed file of the manifest: Cache-Control immutable, a year
//   /  and the console's own page paths (/machines, /machines/<id>, /network, ...): index.html, no-cache
// with a Content-Security-Policy that allows no inline script or style and nothing from another origin.
// Any other path keeps its JSON 404 (an /api typo must not answer with a page).
//
// Why a hook and not routes: the console must load before anyone has logged in, and every registered route
// is closed unless it is in src/api/auth.ts PUBLIC_ROUTES (whose test pins the public set). The console
// answers requests no route matched (fastify's 404 path, which the auth hook leaves alone), so the route table,
// the auth matrix and the OpenAPI document are unchanged, and the files are the same for everyone (no
// secret, no user data: all data comes from the authenticated API).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isSingleBinary, seaAsset } from '../../lib/addon.ts';

export const CONSOLE_ASSET_PREFIX = '/console-assets/';
/** The console's client-side pages: each answers with index.html (the script routes by location.pathname). */
export const CONSOLE_PAGES = ['login', 'dashboard', 'machines', 'network', 'dns', 'images', 'bmcs', 'users', 'settings'] as const;

export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

export interface ConsoleFile { body: Buffer; type: string; immutable: boolean; etag: string }
export interface ConsoleAssets { files: ReadonlyMap<string, ConsoleFile> }
/** Gives the current asset set (may build it first). Called per console request; cache inside. */
export type ConsoleSource = () => Promise<ConsoleAssets | undefined>;

interface ManifestEntry { path: string; type: string; sha256: string; immutable: boolean }

function assetsFrom(manifestText: string, read: (file: string) => Buffer | undefined): ConsoleAssets {
  const manifest = JSON.parse(manifestText) as { files: ManifestEntry[] };
  const files = new Map<string, ConsoleFile>();
  for (const e of manifest.files) {
    const body = read(e.path);
    if (!body) throw new Error(`console asset ${e.path} is missing`);
    const sha256 = createHash('sha256').update(body).digest('hex');
    if (sha256 !== e.sha256) throw new Error(`console asset ${e.path} does not match its manifest`);
    files.set(e.path, { body, type: e.type, immutable: e.immutable, etag: `"${sha256.slice(0, 32)}"` });
  }
  return { files };
}

/** The console embedded in the single binary; undefined when this binary was built without one. */
export function embeddedConsole(): ConsoleSource {
  let cached: ConsoleAssets | undefined;
  return async () => {
    if (cached) return cached;
    const manifest = seaAsset('console/manifest.json');
    if (!manifest) return undefined;
    cached = assetsFrom(manifest.toString('utf8'), (f) => seaAsset(`console/${f}`));
    return cached;
  };
}

/**
 * dist/console of a source checkout, (re)built when missing or older than src/console. The builder is loaded
 * by a computed specifier, so the binary's bundle never contains it (or esbuild).
 */
export function sourceConsole(dir: string, builderModule: string): ConsoleSource {
  let cached: { assets: ConsoleAssets; checkedAt: number } | undefined;
  let pending: Promise<ConsoleAssets> | undefined;
  const load = async (): Promise<ConsoleAssets> => {
    const builder = await import(builderModule) as { ensureConsole(): Promise<string> };
    await builder.ensureConsole();
    return assetsFrom(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'), (f) => fs.readFileSync(path.join(dir, f)));
  };
  return async () => {
    // Staleness is looked at most once a second (a stat of each source file), so an edit shows on reload.
    if (cached && Date.now() - cached.checkedAt < 1000) return cached.assets;
    pending ??= load().finally(() => { pending = undefined; });
    cached = { assets: await pending, checkedAt: Date.now() };
    return cached.assets;
  };
}

/** Inside the binary: the embedded files; from source: dist/console, built on demand. */
export function defaultConsoleSource(): ConsoleSource {
  if (isSingleBinary()) return embeddedConsole();
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  return sourceConsole(path.join(root, 'dist', 'console'), new URL('../../../image/build-console.ts', import.meta.url).href);
}

/** The asset-set file a request path names: a hashed asset, index.html for a console page, else undefined. */
export function consoleFileFor(urlPath: string): { file: string; page: boolean } | undefined {
  if (urlPath.startsWith(CONSOLE_ASSET_PREFIX)) {
    const name = urlPath.slice(CONSOLE_ASSET_PREFIX.length);
    return /^[A-Za-z0-9_-]+\.(js|css|svg)$/.test(name) ? { file: name, page: false } : undefined;
  }
  if (urlPath === '/' || urlPath === '/index.html') return { file: 'index.html', page: true };
  const m = /^\/([a-z]+)(?:\/([A-Za-z0-9:._-]{1,64}))?\/?$/.exec(urlPath);
  if (!m || !(CONSOLE_PAGES as readonly string[]).includes(m[1]!)) return undefined;
  if (m[2] !== undefined && m[1] !== 'machines') return undefined;
  return { file: 'index.html', page: true };
}

/** Registers the console on the root instance (call it before any other onRequest hook needs to see it). */
export function registerConsole(app: FastifyInstance, source: ConsoleSource): void {
  // Callback style: a request a route matched (every boot and API call) costs one check and no promise.
  app.addHook('onRequest', (req: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => {
    if (!req.is404 || (req.method !== 'GET' && req.method !== 'HEAD')) return done();
    const want = consoleFileFor(req.url.split('?', 1)[0]!);
    if (!want) return done();
    // Answered (or not) by serveConsoleFile; done() only when the request goes on to the 404 handler.
    serveConsoleFile(req, reply, source, want).then((answered) => { if (!answered) done(); }, (err: unknown) => done(err as Error));
  });
}

/** Answers a console file; false when there is none to answer with (the request goes on, to a 404). */
async function serveConsoleFile(req: FastifyRequest, reply: FastifyReply, source: ConsoleSource, want: { file: string; page: boolean }): Promise<boolean> {
  let assets: ConsoleAssets | undefined;
  try {
    assets = await source();
  } catch (err) {
    req.log.error({ err }, 'the console could not be loaded');
    return false;
  }
  const f = assets?.files.get(want.file);
  // A page only ever answers with index.html; an asset only with a hashed file of the set.
  if (!f || f.immutable === want.page) return false;
  void reply.header('etag', f.etag)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('cache-control', f.immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
  if (want.page) void reply.header('content-security-policy', CONSOLE_CSP).header('x-frame-options', 'DENY');
  if (req.headers['if-none-match'] === f.etag) {
    void reply.code(304).send();
    return true;
  }
  void reply.code(200).type(f.type).header('content-length', String(f.body.length));
  void reply.send(req.method === 'HEAD' ? undefined : f.body);
  return true;
}
