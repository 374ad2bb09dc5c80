// HTTP(S) requests from inside a network namespace (the test process stays in the root namespace): one node
// child per request, under `ip netns exec`. TLS certificates are not checked: the peer is a metalbox with its
// self-signed certificate on the namespace's loopback, started by the same test.
import { execFile } from 'node:child_process';

export interface NsResponse {
  status: number;
  headers: Record<string, string>;
  setCookie: string[];
  body: string;
  json<T = unknown>(): T;
}

const SCRIPT = `
const r = JSON.parse(process.env.MBX_NS_REQUEST);
const res = await fetch(r.url, { method: r.method, headers: r.headers, body: r.body, signal: AbortSignal.timeout(r.timeoutMs) });
const body = await res.text();
process.stdout.write(JSON.stringify({ status: res.status, headers: Object.fromEntries(res.headers), setCookie: res.headers.getSetCookie(), body }));
`;

export function nsFetch(ns: string, url: string, init: { method?: string; headers?: Record<string, string>; body?: unknown; timeoutMs?: number } = {}): Promise<NsResponse> {
  const request = {
    url,
    method: init.method ?? 'GET',
    headers: { ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}), ...init.headers },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
    timeoutMs: init.timeoutMs ?? 60_000,
  };
  return new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', SCRIPT], {
      env: { ...process.env, MBX_NS_REQUEST: JSON.stringify(request), NODE_TLS_REJECT_UNAUTHORIZED: '0', NODE_NO_WARNINGS: '1' },
      timeout: request.timeoutMs + 10_000, maxBuffer: 16 << 20,
    }, (err, stdout, stderr) => {
      if (err) { reject(new Error(`${request.method} ${url} in ${ns}: ${stderr || err.message}`)); return; }
      const r = JSON.parse(stdout) as Omit<NsResponse, 'json'>;
      resolve({ ...r, json: <T>() => JSON.parse(r.body) as T });
    });
  });
}
