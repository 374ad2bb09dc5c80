// Run metalbox (sources through tsx, or the built binary) as a child process and watch it.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface Running {
  child: ChildProcess;
  /** Everything printed so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>;
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
}

/** `metalbox ARGS` from the TypeScript sources. */
export function runSource(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; uid?: number; gid?: number } = {}): Running {
  return run(process.execPath, ['--import', 'tsx', `${ROOT}src/main.ts`, ...args], opts);
}

export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; uid?: number; gid?: number } = {}): Running {
  const child = spawn(cmd, args, {
    cwd: opts.cwd ?? ROOT,
    env: opts.env ?? { ...process.env, NOTIFY_SOCKET: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.gid } : {}),
  });
  let out = '';
  let err = '';
  const waiters: (() => void)[] = [];
  const poke = () => { for (const w of waiters.splice(0)) w(); };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; poke(); });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; poke(); });
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => { resolve(code ?? signal ?? -1); poke(); }));
  let done = false;
  void exited.then(() => { done = true; });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor(pattern, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${pattern}\nstdout:\n${out}\nstderr:\n${err}`)), timeoutMs);
        const check = () => {
          const m = pattern.exec(out + err);
          if (m) { clearTimeout(timer); resolve(m[0]); return; }
          if (done) { clearTimeout(timer); reject(new Error(`exited before ${pattern}\nstdout:\n${out}\nstderr:\n${err}`)); return; }
          waiters.push(check);
        };
        check();
      });
    },
  };
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export async function getJson(url: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url);
  const text = await res.text();
  let body: unknown = text;
  try { body = JSON.parse(text); } catch { /* plain text (metrics) */ }
  return { status: res.status, body };
}

/**
 * An HTTPS request to metalbox's self-signed endpoint, accepted only when the certificate has the expected
 * SHA-256 fingerprint (the CLI's trust-on-first-use pin). Redirects are not followed.
 */
export async function requestTls(url: string, fingerprint: string, opts: { method?: string; headers?: Record<string, string>; body?: unknown } = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: unknown; fingerprint: string }> {
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: opts.method ?? 'GET',
      rejectUnauthorized: false,
      headers: { ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}), ...opts.headers },
      // Checked on the certificate itself, before anything is sent.
      checkServerIdentity: (_host, cert) => (cert.fingerprint256 === fingerprint ? undefined : new Error(`certificate ${cert.fingerprint256} is not the pinned ${fingerprint}`)),
    }, (res) => {
      let text = '';
      const seen = (res.socket as TLSSocket).getPeerCertificate().fingerprint256;
      res.setEncoding('utf8').on('data', (d: string) => { text += d; }).on('end', () => {
        let body: unknown = text;
        try { body = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, fingerprint: seen });
      });
    });
    req.on('error', reject);
    req.end(opts.body === undefined ? undefined : JSON.stringify(opts.body));
  });
}
