// The CLI's HTTPS client for metalbox's API: where to connect, with which token, and which certificate to
// trust. metalbox's certificate is normally self-signed, so the CLI pins its SHA-256 fingerprint (trust on
// first use at `metalbox login`, like ssh's known_hosts): a connection whose certificate has another
// fingerprint is refused before the token is sent.
//
// Where the target comes from, first match wins:
//   1. flags --url, --token, --fingerprint
//   2. environment METALBOX_URL, METALBOX_TOKEN, METALBOX_FINGERPRINT
//   3. the file `metalbox login` writes: $METALBOX_CLI_FILE, else $XDG_CONFIG_HOME/metalbox/cli.json, else
//      ~/.config/metalbox/cli.json (mode 0600: it holds a token)
//   4. on the appliance itself (root): https.listen of the config and the certificate in <stateDir>/tls
import { readFileSync } from 'node:fs';
import { mkdir, open, rename } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { connect as tlsConnect, type PeerCertificate } from 'node:tls';
import type { Config } from '../config/schema.ts';
import { errnoCode, MetalboxError } from '../lib/errors.ts';
import { parseListen } from '../lib/ipv4.ts';
import { fingerprintOf } from '../lib/x509.ts';

export interface Target {
  /** https://host:port (no path). */
  url: string;
  token?: string;
  /** Pinned SHA-256 fingerprint "AB:CD:..."; absent: the system CAs must accept the certificate. */
  fingerprint?: string;
  /** Where it came from, for messages. */
  source: string;
}

export interface SavedLogin { url: string; token: string; tokenId?: string; fingerprint?: string; user?: string }

const FINGERPRINT = /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/;

export function normalizeFingerprint(text: string): string {
  const hex = text.replace(/^sha256[:=]/i, '').replace(/[^0-9a-fA-F]/g, '').toUpperCase();
  const fp = hex.match(/../g)?.join(':') ?? '';
  if (!FINGERPRINT.test(fp)) throw new MetalboxError('CLI_USAGE', `"${text}" is not a SHA-256 fingerprint (64 hex digits, colons optional)`);
  return fp;
}

export function loginFile(env: NodeJS.ProcessEnv): string {
  if (env.METALBOX_CLI_FILE) return env.METALBOX_CLI_FILE;
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(base, 'metalbox', 'cli.json');
}

export function readLogin(env: NodeJS.ProcessEnv): SavedLogin | undefined {
  let text: string;
  try {
    text = readFileSync(loginFile(env), 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw new MetalboxError('CLI_USAGE', `cannot read ${loginFile(env)}: ${errnoCode(err) ?? (err as Error).message}`);
  }
  try {
    const saved = JSON.parse(text) as SavedLogin;
    if (typeof saved.url !== 'string' || typeof saved.token !== 'string') throw new Error('url and token are required');
    return saved;
  } catch (err) {
    throw new MetalboxError('CLI_USAGE', `${loginFile(env)} is not a metalbox login file (${(err as Error).message}); run metalbox login again`);
  }
}

export async function writeLogin(env: NodeJS.ProcessEnv, saved: SavedLogin): Promise<string> {
  const file = loginFile(env);
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(saved, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  return file;
}

/** Where the CLI talks to, and how (see the top of this file). */
export function resolveTarget(flags: { url?: string; token?: string; fingerprint?: string }, env: NodeJS.ProcessEnv, local?: Config): Target {
  const saved = readLogin(env);
  // An empty variable counts as unset (`METALBOX_URL= metalbox ...`).
  const envUrl = env.METALBOX_URL || undefined;
  const envToken = env.METALBOX_TOKEN || undefined;
  const url = flags.url ?? envUrl ?? saved?.url;
  const fp = flags.fingerprint ?? (env.METALBOX_FINGERPRINT || undefined);
  if (url !== undefined) {
    const target: Target = { url: checkUrl(url), source: flags.url ? '--url' : envUrl ? 'METALBOX_URL' : loginFile(env) };
    const token = flags.token ?? envToken ?? (saved && sameOrigin(saved.url, url) ? saved.token : undefined);
    if (token !== undefined) target.token = token;
    const fingerprint = fp ?? (saved && sameOrigin(saved.url, url) ? saved.fingerprint : undefined);
    if (fingerprint !== undefined) target.fingerprint = normalizeFingerprint(fingerprint);
    return target;
  }
  if (local) {
    // On the appliance: its own HTTPS port and certificate (readable by root only when self-signed in the state dir).
    const listen = parseListen(local.https.listen);
    if (listen) {
      const host = listen.host === '0.0.0.0' || listen.host === '::' ? '127.0.0.1' : listen.host;
      const target: Target = { url: `https://${host.includes(':') ? `[${host}]` : host}:${listen.port}`, source: 'the local config' };
      const token = flags.token ?? envToken;
      if (token !== undefined) target.token = token;
      try {
        target.fingerprint = fp !== undefined ? normalizeFingerprint(fp) : fingerprintOf(readFileSync(local.https.certFile ?? join(local.stateDir, 'tls', 'cert.pem'), 'utf8'));
      } catch (err) {
        if (err instanceof MetalboxError) throw err;
      }
      return target;
    }
  }
  throw new MetalboxError('CLI_USAGE', 'no metalbox to talk to: give --url (or METALBOX_URL), or run metalbox login');
}

function checkUrl(text: string): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new MetalboxError('CLI_USAGE', `--url "${text}" is not a URL (https://HOST:PORT)`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new MetalboxError('CLI_USAGE', `--url "${text}" must be https://HOST:PORT`);
  return `${u.protocol}//${u.host}`;
}

function sameOrigin(a: string, b: string): boolean {
  try { return new URL(a).origin === new URL(b).origin; } catch { return false; }
}

/** The certificate a server presents, without sending anything (for trust on first use). */
export function fetchCertificate(url: string, timeoutMs = 10_000): Promise<{ fingerprint: string; subject: string; validTo: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 443), rejectUnauthorized: false, servername: /^[\d.]+$|:/.test(u.hostname) ? undefined : u.hostname });
    const timer = setTimeout(() => { socket.destroy(); reject(new MetalboxError('CONTROL_UNAVAILABLE', `${url} did not complete a TLS handshake within ${timeoutMs} ms`)); }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const cert: PeerCertificate = socket.getPeerCertificate();
      socket.end();
      resolve({ fingerprint: cert.fingerprint256, subject: Object.entries(cert.subject ?? {}).map(([k, v]) => `${k}=${String(v)}`).join(', '), validTo: cert.valid_to });
    });
    socket.once('error', (err) => { clearTimeout(timer); reject(new MetalboxError('CONTROL_UNAVAILABLE', `cannot reach ${url}: ${errnoCode(err) ?? err.message}`, { cause: err })); });
  });
}

export interface ApiAnswer { status: number; headers: IncomingMessage['headers']; body: unknown }

export interface RequestOptions {
  body?: unknown;
  headers?: Record<string, string>;
  /** Use this token instead of the target's (login uses a cookie instead). */
  noToken?: boolean;
  timeoutMs?: number;
}

/** One API request. Answers with any HTTP status; throws only when there is no answer (CONTROL_UNAVAILABLE) or the certificate is not the pinned one. */
export function apiRequest(target: Target, method: string, path: string, opts: RequestOptions = {}): Promise<ApiAnswer> {
  const u = new URL(path, target.url);
  const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
  if (target.token && !opts.noToken) headers.authorization = `Bearer ${target.token}`;
  const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
  if (payload) { headers['content-type'] = 'application/json'; headers['content-length'] = String(payload.length); }
  const secure = u.protocol === 'https:';
  return new Promise((resolve, reject) => {
    const options = {
      method,
      headers,
      // A connection per request: Node 20's global agent keeps connections alive, and reusing one the server is
      // closing as idle (across a proxy or relay the close arrives late) fails the request with ECONNRESET.
      agent: false,
      timeout: opts.timeoutMs ?? 30_000,
      ...(secure && target.fingerprint ? {
        rejectUnauthorized: false,
        // Runs on the presented certificate before the request (and its token) is written.
        checkServerIdentity: (_host: string, cert: PeerCertificate) => (cert.fingerprint256 === target.fingerprint ? undefined
          : new MetalboxError('TLS_UNUSABLE', `the server's certificate ${cert.fingerprint256} is not the pinned ${target.fingerprint}; if it changed on purpose, run metalbox login again`)),
      } : {}),
    };
    const req = (secure ? httpsRequest : httpRequest)(u, options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d)).on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        if ((res.headers['content-type'] ?? '').includes('json')) { try { body = JSON.parse(text); } catch { /* keep text */ } }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err) => {
      if (err instanceof MetalboxError) return reject(err);
      reject(new MetalboxError('CONTROL_UNAVAILABLE', `cannot reach metalbox at ${target.url} (${target.source}): ${errnoCode(err) ?? err.message}`, { cause: err }));
    });
    req.end(payload);
  });
}

/** Documented exit codes of the API commands (README "Command line"). */
export const EXIT = { ok: 0, failure: 1, usage: 2, auth: 3, notFound: 4, conflict: 5, refused: 6 } as const;

export function exitCodeOf(status: number): number {
  if (status < 400) return EXIT.ok;
  if (status === 401 || status === 403) return EXIT.auth;
  if (status === 404) return EXIT.notFound;
  if (status === 409) return EXIT.conflict;
  if (status < 500) return EXIT.refused;
  return EXIT.failure;
}
