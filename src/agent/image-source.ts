// The image as a stream of its registered (compressed) bytes, hashed as they arrive. A connection lost midway
// is picked up where it broke with a Range request (RFC 9110 §14.2), as long as the server answers 206 from
// exactly that byte; the hash runs over the stream as a whole, so a resumed download verifies like any other.

import { createHash, type Hash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { AgentError, describe } from './errors.ts';
import { request } from './http.ts';

export interface ImageSourceOptions {
  url: string;
  headers?: Record<string, string>;
  /** The registered size, when known: a longer stream is an error, a shorter one is resumed. */
  expectedSize?: number;
  /** No bytes for this long fails the try (default 60 s). */
  idleMs?: number;
  /** Resumptions after a lost connection (default 5). */
  maxResumes?: number;
  resumeDelayMs?: number;
  log?: (line: string) => void;
}

export class ImageSource extends Readable {
  /** Bytes received so far (of the compressed stream). */
  received = 0;
  /** Total bytes as announced by the server or the task, once known. */
  total: number | undefined;
  resumes = 0;
  private readonly hash: Hash = createHash('sha256');
  private res: IncomingMessage | undefined;
  private starting = false;
  private finished = false;
  private readonly opts: Required<Omit<ImageSourceOptions, 'expectedSize'>> & { expectedSize: number | undefined };

  constructor(opts: ImageSourceOptions) {
    super({ highWaterMark: 1 << 20 });
    this.opts = { headers: {}, idleMs: 60_000, maxResumes: 5, resumeDelayMs: 1000, log: () => undefined, ...opts, expectedSize: opts.expectedSize };
    this.total = opts.expectedSize;
  }

  /** sha256 of everything received, hex; only once the stream has ended. */
  digest(): string {
    if (!this.finished) throw new Error('ImageSource.digest() before the end of the stream');
    return this.hash.digest('hex');
  }

  override _read(): void {
    if (this.res !== undefined) this.res.resume();
    else if (!this.starting) void this.start();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.res?.destroy();
    cb(err);
  }

  private async start(): Promise<void> {
    this.starting = true;
    try {
      const resuming = this.received > 0;
      const res = await request(this.opts.url, {
        idleMs: this.opts.idleMs,
        headers: {
          ...this.opts.headers,
          // The bytes as registered: a transparent Content-Encoding would change what the sha256 is of.
          'accept-encoding': 'identity',
          ...(resuming ? { range: `bytes=${this.received}-` } : {}),
        },
      });
      if (this.destroyed) { res.body.destroy(); return; }
      if (resuming) {
        const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(String(res.headers['content-range'] ?? ''));
        if (res.status !== 206 || m === null || Number(m[1]) !== this.received) {
          res.body.resume();
          throw new AgentError('AGENT_IMAGE_FETCH_FAILED', `GET ${this.label()}: the server cannot resume at byte ${this.received} (answered ${res.status})`);
        }
      } else {
        if (res.status !== 200) {
          res.body.resume();
          throw new AgentError('AGENT_IMAGE_FETCH_FAILED', `GET ${this.label()}: HTTP ${res.status}`);
        }
        const length = Number(res.headers['content-length']);
        if (Number.isSafeInteger(length) && length >= 0) {
          if (this.opts.expectedSize !== undefined && length !== this.opts.expectedSize) {
            res.body.resume();
            throw new AgentError('AGENT_IMAGE_CHECKSUM_MISMATCH', `GET ${this.label()}: the server sends ${length} bytes; the image was registered with ${this.opts.expectedSize}`);
          }
          this.total = length;
        }
      }
      this.attach(res.body);
    } catch (err) {
      // An HTTP answer that says no is final; a connection that failed is tried again.
      if (err instanceof AgentError) this.fail(err);
      else this.retry(describe(err));
    } finally {
      this.starting = false;
    }
  }

  private attach(res: IncomingMessage): void {
    this.res = res;
    res.on('data', (chunk: Buffer) => {
      this.received += chunk.length;
      if (this.total !== undefined && this.received > this.total) {
        this.fail(new AgentError('AGENT_IMAGE_CHECKSUM_MISMATCH', `GET ${this.label()}: more than the ${this.total} bytes announced`));
        return;
      }
      this.hash.update(chunk);
      if (!this.push(chunk)) res.pause();
    });
    let done = false;
    const lost = (why: string) => {
      if (done) return;
      done = true;
      this.res = undefined;
      res.destroy();
      this.retry(why);
    };
    res.once('end', () => {
      // With a known length, a short body is a lost connection (http closes the stream "cleanly" on some resets).
      if (this.total !== undefined && this.received < this.total) { lost('connection closed early'); return; }
      if (res.complete === false) { lost('connection closed early'); return; }
      done = true;
      this.res = undefined;
      this.finished = true;
      this.push(null);
    });
    res.once('aborted', () => lost('connection aborted'));
    res.once('error', (err) => lost(describe(err)));
    res.once('close', () => { if (!res.complete) lost('connection closed'); });
  }

  /** Starts again from the next byte after a lost or failed connection, within the resumption budget. */
  private retry(why: string): void {
    if (this.destroyed) return;
    if (this.resumes >= this.opts.maxResumes) {
      this.fail(new AgentError('AGENT_IMAGE_FETCH_FAILED', `GET ${this.label()}: ${why} at byte ${this.received}, after ${this.resumes} retries`));
      return;
    }
    this.resumes++;
    this.opts.log(`image download: ${why} at byte ${this.received}; trying again (${this.resumes}/${this.opts.maxResumes})`);
    setTimeout(() => { if (!this.destroyed) void this.start(); }, this.opts.resumeDelayMs);
  }

  private fail(err: unknown): void {
    if (this.destroyed) return;
    this.destroy(err instanceof AgentError ? err : new AgentError('AGENT_IMAGE_FETCH_FAILED', `GET ${this.label()}: ${describe(err)}`, { cause: err }));
  }

  /** The URL without its query (which may carry a credential). */
  private label(): string {
    const u = new URL(this.opts.url);
    return `${u.origin}${u.pathname}`;
  }
}
