// Sending one file over HTTP the way firmware, iPXE, curl and wget expect: Content-Length, a strong ETag,
// If-None-Match -> 304, a single byte Range -> 206 (RFC 9110 §14), HEAD, and a streamed body. The body goes
// by sendfile(2) off the event loop (test/bench/http.ts: 0.14-0.25 CPU s per GiB, nginx 0.11-0.22; our JS
// read loop 0.38-0.57, a piped 1 MiB ReadStream 0.5-1.6, a 64 KiB one 0.9-2.1), so a boot storm leaves the
// event loop to DHCP, TFTP and the API.
import { createReadStream, type ReadStream } from 'node:fs';
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { MetalboxError } from '../../lib/errors.ts';
import { startSendfile } from '../../lib/sendfile.ts';

/** Default read size of a file body; `BootHttpDeps.readChunkBytes` overrides it (the benchmark sweeps it). */
export const DEFAULT_READ_CHUNK = 1024 * 1024;

/**
 * How a body is written (test/bench/http.ts compares them):
 * - sendfile: the first 64 KiB through Node (they carry the headers), the rest by sendfile(2) on the native
 *   addon's thread, page cache to socket with no copy through JavaScript; falls back to pump when the
 *   socket has no descriptor (app.inject) or the addon lacks sendfile.
 * - pump: our read loop, 1 MiB positional reads into two recycled buffers.
 * - stream: fastify pipes an fs.ReadStream (a new buffer per read); the benchmark's baseline.
 */
export const BODY_MODES = ['sendfile', 'pump', 'stream'] as const;
export type BodyMode = (typeof BODY_MODES)[number];
const SENDFILE_FIRST = 64 * 1024;

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

/** What a body is read from: a FileHandle (it has this shape), or a shared reader of the asset store (BlobReader). */
export interface BodyFile {
  readonly fd: number;
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  close(): Promise<void>;
  /** The file's first bytes, when the caller has them in memory (they go with the headers, no read). */
  readonly head?: Buffer;
}

export interface FileToSend {
  fh: BodyFile;
  size: number;
  /** Strong entity tag, quoted. */
  etag: string;
  contentType: string;
  cacheControl: string;
  readChunk: number;
  /** How the body is written (see BODY_MODES); default 'sendfile'. */
  body?: BodyMode;
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
    const stream: ReadStream = createReadStream('', { fd: file.fh.fd, start, end, highWaterMark: file.readChunk, autoClose: false });
    onceOver(reply, (complete) => {
      void file.fh.close().catch(() => undefined);
      done({ status, bytes: complete ? length : Math.min(stream.bytesRead, length), complete });
    });
    return reply.send(stream);
  }
  // sendfile, or our own read loop over recycled buffers (no fresh buffer, page faults or GC per chunk): we
  // write the response ourselves. fastify still runs its onResponse hooks (they listen on the response).
  reply.hijack();
  const res = reply.raw;
  res.writeHead(status, reply.getHeaders() as OutgoingHttpHeaders);
  const progress = { handed: 0 };
  const fd = file.body === 'pump' ? undefined : socketFd(req);
  const writing = (fd === undefined || length <= SENDFILE_FIRST
    ? pump(file.fh, res, start, length, file.readChunk, progress)
    : viaSendfile(file.fh, res, fd, start, length, file.readChunk, progress)
  ).then(
    (whole) => {
      if (whole) res.end();
      else res.destroy();
      return whole;
    },
    (err: unknown) => {
      req.log.warn({ err }, 'reading a boot file failed');
      res.destroy(err as Error);
      return false;
    },
  ).finally(() => void file.fh.close().catch(() => undefined));
  // Reported once the response is over and the writer has stopped (so `handed` is final).
  onceOver(reply, (finished) => void writing.then((whole) => {
    const complete = finished && whole;
    done({ status, bytes: complete ? length : progress.handed, complete });
  }));
  return reply;
}

/** The descriptor of a plain TCP connection (not TLS, not app.inject's fake socket). */
function socketFd(req: FastifyRequest): number | undefined {
  const fd = (req.raw.socket as unknown as { _handle?: { fd?: unknown } } | null)?._handle?.fd;
  return typeof fd === 'number' && fd >= 0 && req.raw.socket.constructor.name === 'Socket' ? fd : undefined;
}

/**
 * The first bytes through Node, so the headers go with them and their write callback tells that everything
 * Node had queued is in the kernel; then sendfile for the rest, cancelled if the response closes first.
 */
async function viaSendfile(fh: BodyFile, res: ServerResponse, fd: number, start: number, length: number, chunk: number, progress: { handed: number }): Promise<boolean> {
  const head = fh.head;
  let first: Buffer;
  if (start === 0 && head !== undefined && head.length >= SENDFILE_FIRST) {
    first = head.subarray(0, SENDFILE_FIRST);
  } else {
    first = Buffer.allocUnsafe(SENDFILE_FIRST);
    const { bytesRead } = await fh.read(first, 0, SENDFILE_FIRST, start);
    if (bytesRead !== SENDFILE_FIRST) throw new Error(`file ended at ${start + bytesRead}, expected ${start + length}`);
  }
  await new Promise<void>((resolve, reject) => res.write(first, (err) => (err ? reject(err) : resolve())));
  progress.handed += SENDFILE_FIRST;
  const rest = { start: start + SENDFILE_FIRST, length: length - SENDFILE_FIRST };
  if (res.destroyed) return false;
  const job = res.socket && res.socket.writableLength === 0 ? startSendfile(fd, fh.fd, rest.start, rest.length) : undefined;
  if (!job) return pump(fh, res, rest.start, rest.length, chunk, progress);
  const cancel = () => job.cancel();
  res.once('close', cancel);
  const result = await job.done;
  res.off('close', cancel);
  progress.handed += result.sent;
  if (result.error === 'ENODATA') throw new Error(`file ended at ${rest.start + result.sent}, expected ${start + length}`);
  // The client went away (EPIPE, ECONNRESET) or the response closed (ECANCELED): Node sees it on its socket.
  return result.error === undefined;
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
 * Stops early, without error, when the response is destroyed (client gone). True when all was handed over.
 */
async function pump(fh: BodyFile, res: ServerResponse, start: number, length: number, chunk: number, progress: { handed: number }): Promise<boolean> {
  const free: Buffer[] = [];
  let owned = 0;
  let wake: (() => void) | undefined;
  const poke = () => { const w = wake; wake = undefined; w?.(); };
  res.once('close', poke);
  let pos = 0;
  try {
    while (pos < length && !res.destroyed) {
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
  return pos >= length && !res.destroyed;
}
