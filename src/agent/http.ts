// HTTP for the agent: node:http/https directly (no fetch), so the image stream is plain Node streams with
// back-pressure, and every request has an idle timeout.

import http from 'node:http';
import https from 'node:https';
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';

export interface HttpResponse {
  status: number;
  headers: IncomingMessage['headers'];
  body: IncomingMessage;
}

export interface RequestOptions {
  method?: string;
  headers?: OutgoingHttpHeaders;
  body?: Buffer;
  /** No bytes for this long (connecting, waiting for headers, or between body chunks) aborts the request. */
  idleMs: number;
  /** Redirects followed for GET (301, 302, 303, 307, 308); Authorization is dropped when the origin changes. */
  maxRedirects?: number;
}

/** One request; resolves once the headers are in. The caller reads (or `resume()`s) the body. */
export async function request(url: string, opts: RequestOptions): Promise<HttpResponse> {
  let current = new URL(url);
  let headers = { ...opts.headers };
  for (let hop = 0; ; hop++) {
    const res = await once(current, { ...opts, headers });
    const location = res.headers.location;
    if ((opts.method ?? 'GET') === 'GET' && [301, 302, 303, 307, 308].includes(res.status) && location !== undefined && hop < (opts.maxRedirects ?? 5)) {
      res.body.resume();
      const next = new URL(location, current);
      if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new Error(`redirect to ${next.protocol} refused`);
      // The bearer token belongs to the appliance: never hand it to another origin.
      if (next.origin !== current.origin) {
        headers = Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== 'authorization'));
      }
      current = next;
      continue;
    }
    return res;
  }
}

function once(url: URL, opts: RequestOptions): Promise<HttpResponse> {
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(url, {
      method: opts.method ?? 'GET',
      headers: { ...opts.headers, ...(opts.body !== undefined ? { 'content-length': opts.body.length } : {}) },
      timeout: opts.idleMs,
    }, (res) => {
      // The socket's idle timeout keeps guarding the body: a stalled stream errors out instead of hanging.
      res.on('error', () => undefined);
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer from ${url.host} for ${Math.round(opts.idleMs / 1000)} s`), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Reads a whole (small) body, at most `limit` bytes. */
export async function readBody(res: IncomingMessage, limit = 1 << 20): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) { res.destroy(); throw new Error(`answer larger than ${limit} bytes`); }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
