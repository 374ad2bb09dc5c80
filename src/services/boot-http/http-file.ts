// Sending one file over HTTP the way firmware, iPXE, curl and wget expect: Content-Length, a strong ETag,
// If-None-Match -> 304, a single byte Range -> 206 (RFC 9110 §14), HEAD, and a streamed body read in large
// chunks (test/bench/http.ts: 1 MiB reads move several times the bytes per CPU second of 64 KiB reads).
import { createReadStream, type ReadStream } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { MetalboxError } from '../../lib/errors.ts';

/** Default read size of a file body; `BootHttpDeps.readChunkBytes` overrides it (the benchmark sweeps it). */
export const DEFAULT_READ_CHUNK = 1024 * 1024;

export type ByteRange = { start: number; end: number };

/**
 * RFC 9110 §14.1.2: one `bytes=first-last`, `bytes=first-` or `bytes=-suffix`. `undefined` means "send the
 * whole file": no Range, another unit, several ranges or a malformed one (§14.2 lets a server ignore Range).
 * 'unsatisfiable' (416): the range starts at or past the end, or asks a zero-length suffix.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return undefined;
  const [, first = '', last = ''] = m;
  if (first === '' && last === '') return undefined;
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  if (last !== '' && Number(last) < start) return undefined; // invalid range-spec: ignore the header
  if (start >= size) return 'unsatisfiable';
  return { start, end: last === '' ? size - 1 : Math.min(Number(last), size - 1) };
}

/** If-None-Match (RFC 9110 §13.1.2): `*` or a list of entity tags, compared weakly. */
export function noneMatch(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  const bare = etag.replace(/^W\//, '');
  return header.split(',').some((t) => {
    const tag = t.trim();
    return tag === '*' || tag.replace(/^W\//, '') === bare;
  });
}

export interface FileToSend {
  fh: FileHandle;
  size: number;
  /** Strong entity tag, quoted. */
  etag: string;
  contentType: string;
  cacheControl: string;
  readChunk: number;
  /** How the body is written: our read loop over recycled buffers (default), or a piped ReadStream. */
  body?: 'pump' | 'stream';
}

/** What went out, for the boot timeline: filled in when the response ends or is aborted. */
export interface SendOutcome { status: number; bytes: number; complete: boolean }

/**
 * Answers the request from an open file and takes ownership of the handle (closed when the body ends, the
 * client goes away, or at once when no body is sent). `done` is called once when the response is over.
 */
export function sendFile(req: FastifyRequest, reply: FastifyReply, file: FileToSend, done: (o: SendOutcome) => void): FastifyReply {
  const headers = req.headers;
  reply.header('etag', file.etag).header('accept-ranges', 'bytes').header('cache-control', file.cacheControl);
  const finish = (status: number, bytes: number) => {
    void file.fh.close().catch(() => undefined);
    done({ status, bytes, complete: true });
  };
  if (noneMatch(headers['if-none-match'], file.etag)) {
    finish(304, 0);
    return reply.code(304).send();
  }
  // If-Range (RFC 9110 §13.1.5): the range applies only to the version the client has.
  const ifRange = headers['if-range'];
  const range = ifRange === undefined || ifRange === file.etag ? parseRange(headers.range, file.size) : undefined;
  if (range === 'unsatisfiable') {
    // The error handler answers (and the route's onError hook records the request).
    void file.fh.close().catch(() => undefined);
    reply.header('content-range', `bytes */${file.size}`);
    throw new MetalboxError('BOOT_RANGE_NOT_SATISFIABLE', `range ${headers.range ?? ''} is outside the file (${file.size} bytes)`);
  }
  const start = range?.start ?? 0;
  const end = range?.end ?? file.size - 1;
  const length = end - start + 1;
  const status = range ? 206 : 200;
  reply.code(status).type(file.contentType).header('content-length', String(length));
  if (range) reply.header('content-range', `bytes ${start}-${end}/${file.size}`);
  if (req.method === 'HEAD' || length === 0) {
    finish(status, 0);
    return reply.send();
  }
  if (file.body === 'stream') {
    // fastify pipes a ReadStream: a new buffer per read.
    const stream: ReadStream = createReadStream('', { fd: file.fh, start, end, highWaterMark: file.readChunk });
    onceOver(reply, (complete) => done({ status, bytes: complete ? length : Math.min(stream.bytesRead, length), complete }));
    return reply.send(stream);
  }
  // Our own read loop over recycled buffers: no fresh buffer (page faults, GC) per chunk. fastify still runs
  // its onResponse hooks (they listen on the response, not on send).
  reply.hijack();
  const res = reply.raw;
  res.writeHead(status, reply.getHeaders() as OutgoingHttpHeaders);
  const progress = { handed: 0 };
  onceOver(reply, (complete) => done({ status, bytes: complete ? length : progress.handed, complete }));
  void pump(file.fh, res, start, length, file.readChunk, progress).then(
    () => res.end(),
    (err: unknown) => { req.log.warn({ err }, 'reading a boot file failed'); res.destroy(err as Error); },
  ).finally(() => void file.fh.close().catch(() => undefined));
  return reply;
}

/** Calls `over` once: true when the whole body went to the socket ('finish'), false when it closed first. */
function onceOver(reply: FastifyReply, over: (complete: boolean) => void): void {
  let reported = false;
  const report = (complete: boolean) => {
    if (reported) return;
    reported = true;
    over(complete);
  };
  reply.raw.once('finish', () => report(true));
  reply.raw.once('close', () => report(reply.raw.writableFinished));
}

/** Buffers kept for reuse between transfers, per size; beyond this many bytes they are left to the GC. */
const POOL_BYTES = 32 * 1024 * 1024;
/** Buffers a transfer may have at once: one being read while the other is written (double buffering). */
const IN_FLIGHT = 2;
const pools = new Map<number, Buffer[]>();

function takeBuffer(size: number): Buffer {
  return pools.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size);
}

function giveBuffer(buf: Buffer): void {
  let pool = pools.get(buf.length);
  if (!pool) pools.set(buf.length, (pool = []));
  if ((pool.length + 1) * buf.length <= POOL_BYTES) pool.push(buf);
}

/**
 * Reads [start, start+length) with positional reads into at most IN_FLIGHT buffers and writes them to the
 * response. A buffer is reused only once its write has completed (the socket no longer references it).
 * Stops early, without error, when the response is destroyed (client gone).
 */
async function pump(fh: FileHandle, res: ServerResponse, start: number, length: number, chunk: number, progress: { handed: number }): Promise<void> {
  const free: Buffer[] = [];
  let owned = 0;
  let wake: (() => void) | undefined;
  const poke = () => { const w = wake; wake = undefined; w?.(); };
  res.once('close', poke);
  try {
    for (let pos = 0; pos < length && !res.destroyed;) {
      let buf = free.pop();
      if (!buf && owned < IN_FLIGHT) { buf = takeBuffer(chunk); owned++; }
      if (!buf) {
        await new Promise<void>((resolve) => { wake = resolve; });
        continue;
      }
      const want = Math.min(chunk, length - pos);
      const { bytesRead } = await fh.read(buf, 0, want, start + pos);
      if (bytesRead === 0) throw new Error(`file ended at ${start + pos}, expected ${start + length}`);
      pos += bytesRead;
      progress.handed += bytesRead;
      const b = buf;
      res.write(bytesRead === b.length ? b : b.subarray(0, bytesRead), () => { free.push(b); poke(); });
    }
  } finally {
    res.off('close', poke);
    // Buffers still in a pending write go to the GC; the rest back to the shared pool.
    for (const b of free) giveBuffer(b);
  }
}
