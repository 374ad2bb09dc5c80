// A small stand-in for the appliance's side of the agent API (.notes/agent-contract.md), on loopback: the four
// /boot/agent/v1 routes with per-boot bearer tokens, and image files with Range support. It records every
// request, and can misbehave on demand (5xx answers, a connection cut in the middle of an image).

import { createReadStream, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  path: string;
  authorization: string | undefined;
  range: string | undefined;
  body: unknown;
}

export interface FakeAppliance {
  url: string;
  token: string;
  /** What GET /boot/agent/v1/task answers. */
  task: unknown;
  requests: RecordedRequest[];
  inventories: unknown[];
  progress: { phase: string; done?: number; total?: number; message?: string }[];
  done: { mode: string; ok: boolean; error?: { code: string; message: string } }[];
  /** Files served at /images/NAME. */
  images: Map<string, string>;
  /** Answer the next N agent API requests with 503. */
  fail503: number;
  /** Cut the connection of the next image GET (not a Range request) after this many body bytes. */
  cutImageAfter: number | undefined;
  /** Refuse Range requests (answer 200 with the whole file). */
  noRanges: boolean;
  close(): Promise<void>;
}

export async function startFakeAppliance(opts: { token?: string } = {}): Promise<FakeAppliance> {
  const token = opts.token ?? 'tok-3f9a8c1d5e7b2a64';
  const state: Omit<FakeAppliance, 'url' | 'close'> = {
    token, task: { mode: 'none' }, requests: [], inventories: [], progress: [], done: [], images: new Map(),
    fail503: 0, cutImageAfter: undefined, noRanges: false,
  };
  const server = createServer((req, res) => {
    void handle(state, req, res).catch((err: unknown) => {
      if (!res.headersSent) json(res, 500, { statusCode: 500, code: 'INTERNAL', message: String(err) });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const fake = state as FakeAppliance;
  fake.url = `http://127.0.0.1:${port}`;
  fake.close = () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); });
  return fake;
}

async function handle(s: Omit<FakeAppliance, 'url' | 'close'>, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  let body: unknown;
  try {
    body = text === '' ? undefined : JSON.parse(text);
  } catch {
    body = text;
  }
  s.requests.push({ method: req.method ?? '', path, authorization: req.headers.authorization, range: req.headers.range, body });

  if (path.startsWith('/images/') && req.method === 'GET') {
    const file = s.images.get(path.slice('/images/'.length));
    if (file === undefined) { json(res, 404, { statusCode: 404, code: 'NOT_FOUND', message: 'no such image' }); return; }
    serveFile(s, file, req, res);
    return;
  }
  if (!path.startsWith('/boot/agent/v1/')) { json(res, 404, { statusCode: 404, code: 'NOT_FOUND', message: 'no such route' }); return; }
  if (req.headers.authorization !== `Bearer ${s.token}`) {
    json(res, 401, { statusCode: 401, code: 'BOOT_TOKEN_INVALID', error: 'Unauthorized', message: 'per-boot token unknown or expired' });
    return;
  }
  if (s.fail503 > 0) { s.fail503--; json(res, 503, { statusCode: 503, code: 'STORE_CLOSED', message: 'try later' }); return; }
  const route = `${req.method} ${path.slice('/boot/agent/v1'.length)}`;
  switch (route) {
    case 'GET /task': json(res, 200, s.task); return;
    case 'POST /inventory': s.inventories.push(body); json(res, 200, { machineId: 'm-42', hostname: 'brisk-otter', mode: 'commission' }); return;
    case 'POST /progress': s.progress.push(body as FakeAppliance['progress'][number]); res.writeHead(204).end(); return;
    case 'POST /done': s.done.push(body as FakeAppliance['done'][number]); res.writeHead(204).end(); return;
    default: json(res, 404, { statusCode: 404, code: 'NOT_FOUND', message: `no route ${route}` });
  }
}

function serveFile(s: Omit<FakeAppliance, 'url' | 'close'>, file: string, req: IncomingMessage, res: ServerResponse): void {
  const size = statSync(file).size;
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (m && !s.noRanges) {
    const start = Number(m[1]);
    res.writeHead(206, { 'content-length': size - start, 'content-range': `bytes ${start}-${size - 1}/${size}`, 'accept-ranges': 'bytes' });
    createReadStream(file, { start }).pipe(res);
    return;
  }
  res.writeHead(200, { 'content-length': size, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' });
  const cut = s.cutImageAfter;
  if (cut === undefined) { createReadStream(file).pipe(res); return; }
  s.cutImageAfter = undefined;
  const stream = createReadStream(file, { end: cut - 1 });
  stream.pipe(res, { end: false });
  stream.on('end', () => res.socket?.destroy());
}

function json(res: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}
