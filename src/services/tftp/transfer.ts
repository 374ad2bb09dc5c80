// One read transfer: the sender side of RFC 1350 with RFC 7440 windows, over the transfer's own socket
// (its TID). The transfer sends a window of blocks, waits for the ACK of the window's last block, and:
//   - an ACK of a later block than before moves the window on (a partial ACK - the client saw a gap -
//     restarts the window right after the block it names, RFC 7440 §4);
//   - a duplicate ACK (of the block already acknowledged) is ignored with windowsize 1: answering it
//     is the Sorcerer's Apprentice bug (RFC 1123 §4.2.3.1). With a window it means the window's first
//     block was lost, and the window is resent once per acknowledged block;
//   - a timeout resends the window from the first unacknowledged block, the timeout doubling each time
//     (capped at 30 s or the client's own timeout), and the transfer is abandoned after tftp.retries of them.
//
// Block numbers: the protocol's 16-bit block number wraps from 65535 to 0 (not to 1): the convention of
// tftp-hpa, atftp, iPXE, EDK2 and U-Boot, and what RFC 7440 assumes. Internally blocks are counted without
// wrapping (block n holds stream bytes [(n-1)*blksize, n*blksize)), and an ACK is mapped to the one
// unwrapped block inside what has been sent, so files of any size work (32 MiB at 512-byte blocks is
// where the wrap first happens).
//
// The file is read in chunks ahead of the window (one chunk of read-ahead, never the whole file), and
// the bytes before the first unacknowledged block are dropped as the window moves.
import { encodeDataHeader, encodeTftp, ERROR_CODE, toNetascii, type TftpPacket } from '../../protocols/tftp/index.ts';
import type { TftpFile } from './sources.ts';

/** Read-ahead chunk: large enough to make disk reads cheap, small enough for thousands of transfers. */
export const CHUNK_BYTES = 64 * 1024;
/** A send the kernel dropped (full send queue) is retried this soon, without counting as a timeout. */
const LOCAL_RETRY_MS = 10;
const MAX_LOCAL_RETRIES = 200;
/** UDP_MAX_SEGMENTS of Linux before 6.x (it is 128 since): segments per UDP_SEGMENT send. */
const MAX_SEGMENTS = 64;
/** The back-off's ceiling unless the client asked for a longer timeout (RFC 2349). */
const MAX_BACKOFF_MS = 30_000;

export interface TransferResult {
  ok: boolean;
  /** Why it failed: 'timeout', 'client-error', 'options-refused', 'read-failed', 'send-failed', 'aborted'. */
  reason?: string;
  /** Payload bytes the client acknowledged. */
  bytes: number;
  blocks: number;
  retransmitted: number;
  /** Windows (or OACKs) resent because no ACK came in time. */
  timeouts: number;
  /** Windows resent because the client acknowledged less than the whole window (a partial or duplicate ACK). */
  partialAcks: number;
  /** The client's ERROR message, when it sent one. */
  clientMessage?: string;
  error?: unknown;
}

export interface TransferParams {
  file: TftpFile;
  netascii: boolean;
  blockSize: number;
  windowSize: number;
  /** First retransmission timeout. */
  timeoutMs: number;
  /** Timeouts in a row before the transfer is abandoned. */
  retries: number;
  /** The OACK to send first (then wait for ACK 0), or undefined to start with DATA 1. */
  oack?: Buffer;
  /** Sends one datagram to the client's TID; false when the kernel dropped it (full send queue). */
  send: (data: Buffer) => boolean;
  /**
   * Sends consecutive datagrams of `segmentSize` bytes packed in `data` in one go (UDP segmentation
   * offload); used for windows of more than one block when given. Throws when the kernel cannot: the
   * transfer then sends one datagram at a time and reports it through onSegmentsFailed.
   */
  sendSegments?: (data: Buffer, segmentSize: number) => boolean;
  onSegmentsFailed?: (err: unknown) => void;
  /** Called once, when the transfer ends either way. */
  onEnd: (result: TransferResult) => void;
  /** Told of DATA payload bytes put on the wire (first sends and resends). */
  onSent?: (bytes: number, retransmitted: number) => void;
}

interface Chunk {
  /** Stream offset of data[0]. */
  start: number;
  data: Buffer;
  /** The whole read buffer behind `data`, when it is ours to reuse once the chunk is acknowledged. */
  backing?: Buffer;
}

/**
 * The bytes a transfer sends, from a file read in order with one chunk of read-ahead (at most one read in
 * flight). `ensure(start, end)` makes [start, end) available (less at the end of the file) and drops what
 * is before `start`; calls are serialised, since the chunks must be appended in file order. Blocks are
 * copied straight from the chunks into the packet being sent, so chunks are never joined, and in octet
 * mode a chunk's buffer is reused for a later read once its blocks are acknowledged: a transfer of any
 * size allocates a few read buffers, not one per chunk (which kept V8's garbage collector busy).
 */
class BlockStream {
  private chunks: Chunk[] = [];
  /** Stream offset just past the last chunk. */
  private end = 0;
  private fileOffset = 0;
  private sourceDone = false;
  /** The stream has ended at `end`. */
  private eof = false;
  private ahead: Promise<Chunk> | undefined;
  private spare: Buffer[] = [];
  private running = 0;
  private tail: Promise<void> = Promise.resolve();

  constructor(private readonly file: TftpFile, private readonly netascii: boolean) {}

  private async readChunk(): Promise<Chunk> {
    // Octet mode knows the size: read no further than it (no read just to find the end).
    const want = this.netascii ? CHUNK_BYTES : Math.min(CHUNK_BYTES, this.file.size - this.fileOffset);
    if (this.sourceDone || want <= 0) {
      this.sourceDone = true;
      return { start: 0, data: EMPTY };
    }
    // A file in memory hands out views of itself: no buffer. Otherwise one sized to the read: a small file's
    // transfer holds its size, not a whole chunk (1,000 transfers of a 6-byte file held 64 MiB). A read shorter
    // than a chunk is the file's last, so the buffer is never too small later.
    const spare = this.spare.pop();
    const into = this.netascii || this.file.inMemory ? undefined : (spare !== undefined && spare.length >= want ? spare : Buffer.allocUnsafe(want));
    const raw = await this.file.read(this.fileOffset, want, into);
    this.fileOffset += raw.length;
    if (raw.length < want || (!this.netascii && this.fileOffset >= this.file.size)) this.sourceDone = true;
    if (this.netascii) return { start: 0, data: toNetascii(raw) };
    const ours = into !== undefined && raw.buffer === into.buffer && raw.byteOffset === into.byteOffset;
    if (!ours && into !== undefined) this.spare.push(into);
    return { start: 0, data: raw, ...(ours ? { backing: into } : {}) };
  }

  /**
   * When no ensure() is running and [start, end) is already here: drops what is before `start`, keeps the
   * read-ahead going, and returns true (no await needed). Otherwise false: call ensure().
   */
  advance(start: number, end: number): boolean {
    const first = this.chunks[0]?.start ?? this.end;
    if (this.running > 0 || start < first || (this.end < end && !this.eof)) return false;
    this.trim(start);
    this.readAhead(end);
    return true;
  }

  ensure(start: number, end: number): Promise<void> {
    this.running++;
    const run = this.tail.then(() => this.fill(start, end)).finally(() => { this.running--; });
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Drops (and recycles) the chunks that end at or before `start`. */
  private trim(start: number): void {
    while (this.chunks.length > 0 && this.chunks[0]!.start + this.chunks[0]!.data.length <= start) {
      const c = this.chunks.shift()!;
      if (c.backing && this.spare.length < 2) this.spare.push(c.backing);
    }
  }

  private readAhead(end: number): void {
    if (this.eof || this.sourceDone || this.ahead !== undefined || this.end - end >= CHUNK_BYTES) return;
    const p = this.readChunk();
    p.catch(() => undefined); // rethrown to whoever awaits it
    this.ahead = p;
  }

  private async fill(start: number, end: number): Promise<void> {
    this.trim(start);
    while (this.end < end && !this.eof) {
      const next = this.ahead ?? this.readChunk();
      this.ahead = undefined;
      const chunk = await next;
      if (chunk.data.length === 0) {
        this.eof = true;
      } else {
        chunk.start = this.end;
        this.end += chunk.data.length;
        this.chunks.push(chunk);
        if (this.sourceDone && this.ahead === undefined) this.eof = true;
      }
    }
    this.readAhead(end);
  }

  /** Copies stream bytes [start, end) - fewer at the end of the stream - into `target` at `at`; returns the count. */
  copy(target: Buffer, at: number, start: number, end: number): number {
    let copied = 0;
    for (const c of this.chunks) {
      const cEnd = c.start + c.data.length;
      if (cEnd <= start) continue;
      if (c.start >= end) break;
      const from = Math.max(start, c.start);
      const to = Math.min(end, cEnd);
      c.data.copy(target, at + copied, from - c.start, to - c.start);
      copied += to - from;
    }
    return copied;
  }

  /** Drops the buffered data (the transfer is over). */
  release(): void {
    this.chunks = [];
    this.spare = [];
    this.ahead = undefined;
    this.eof = true;
  }
}

const EMPTY = Buffer.alloc(0);

export class Transfer {
  private readonly stream: BlockStream;
  private readonly packet: Buffer;
  private phase: 'oack' | 'data' | 'done' = 'data';
  /** Highest block the client acknowledged (0: none, or the OACK). */
  private acked = 0;
  /** Highest block sent in the current window, and ever. */
  private sentUpTo = 0;
  private maxSent = 0;
  /** The last block (the one shorter than blksize), once known. */
  private lastBlock = Infinity;
  private lastLength = 0;
  private timeouts = 0;
  private localRetries = 0;
  /** The duplicate ACK of `acked` was already answered with a resend. */
  private dupAnswered = false;
  private timer: NodeJS.Timeout | undefined;
  private timerMs = 0;
  /** Bumped on every window send, so a window whose read finished late does not go out after a newer one. */
  private generation = 0;
  private retransmitted = 0;
  /** The window's packets laid end to end for sendSegments, and how many blocks fit (undefined: one send per datagram). */
  private batch: Buffer | undefined;
  private batchBlocks = 1;
  private totalTimeouts = 0;
  private partialAcks = 0;

  constructor(private readonly p: TransferParams) {
    this.stream = new BlockStream(p.file, p.netascii);
    this.packet = Buffer.allocUnsafe(4 + p.blockSize);
    if (p.sendSegments && p.windowSize > 1) {
      // udp(7): at most 64 segments, and one IPv4 datagram's worth of bytes (65507) per send.
      this.batchBlocks = Math.min(p.windowSize, MAX_SEGMENTS, Math.floor(65507 / (4 + p.blockSize)));
      if (this.batchBlocks > 1) this.batch = Buffer.allocUnsafe(this.batchBlocks * (4 + p.blockSize));
    }
  }

  start(): void {
    if (this.p.oack) {
      this.phase = 'oack';
      this.sendOack();
      // Read the first window while the client answers the OACK.
      void this.stream.ensure(0, this.p.windowSize * this.p.blockSize).catch(() => undefined);
    } else {
      void this.sendWindow(1);
    }
  }

  /** A packet from the client's TID. */
  onPacket(pkt: TftpPacket): void {
    if (this.phase === 'done') return;
    this.heard = true;
    if (pkt.op === 'ERROR') {
      // RFC 2347: error 8 answers an OACK whose options the client will not take.
      const reason = pkt.code === ERROR_CODE.OPTION_REFUSED ? 'options-refused' : 'client-error';
      this.end({ ok: false, reason, clientMessage: pkt.message });
      return;
    }
    if (pkt.op !== 'ACK') return; // RFC 1350 leaves a stray packet type to us: ignore it, the timer recovers
    if (this.phase === 'oack') {
      if (pkt.block !== 0) return;
      this.phase = 'data';
      this.timeouts = 0;
      void this.sendWindow(1);
      return;
    }
    // The one unwrapped block number in [acked, sentUpTo] that wraps to pkt.block.
    const a = this.acked + ((pkt.block - (this.acked & 0xffff)) & 0xffff);
    if (a > this.sentUpTo) return; // not something we sent (an old ACK from before a wrap)
    if (a === this.lastBlock) {
      this.acked = a;
      this.end({ ok: true });
      return;
    }
    if (a > this.acked) {
      if (a < this.sentUpTo) this.partialAcks++;
      this.acked = a;
      this.timeouts = 0;
      this.dupAnswered = false;
      void this.sendWindow(a + 1);
    } else if (this.p.windowSize > 1 && !this.dupAnswered) {
      this.dupAnswered = true;
      this.partialAcks++;
      void this.sendWindow(a + 1);
    }
  }

  /** Ends the transfer from outside (service stopping, a newer request from the same client port). */
  abort(reason: string, message?: string): void {
    if (this.phase === 'done') return;
    if (message !== undefined) this.p.send(encodeTftp({ op: 'ERROR', code: ERROR_CODE.NOT_DEFINED, message }));
    this.end({ ok: false, reason });
  }

  get done(): boolean {
    return this.phase === 'done';
  }

  /** The client has answered at least once (so a new request from its port is a new transfer, not a repeat). */
  heard = false;

  private sendOack(): void {
    if (this.timer !== undefined) { this.retransmitted++; this.p.onSent?.(0, 1); }
    this.p.send(this.p.oack!);
    this.arm(this.backoffMs());
  }

  private async sendWindow(first: number): Promise<void> {
    const gen = ++this.generation;
    const bs = this.p.blockSize;
    const start = (first - 1) * bs;
    const end = (first - 1 + this.p.windowSize) * bs;
    if (!this.stream.advance(start, end)) {
      // Keep the retransmission timer running while the disk works; a read slower than it costs a resend.
      try {
        await this.stream.ensure(start, end);
      } catch (err) {
        if (this.phase !== 'done') {
          this.p.send(encodeTftp({ op: 'ERROR', code: ERROR_CODE.NOT_DEFINED, message: 'read error' }));
          this.end({ ok: false, reason: 'read-failed', error: err });
        }
        return;
      }
      if (gen !== this.generation || this.phase !== 'data') return;
    }
    let bytes = 0;
    let resent = 0;
    let dropped = false;
    const stop = first + this.p.windowSize;
    let n = first;
    // With segmentation offload, whole runs of the window leave in one syscall (see `batchBlocks`).
    while (this.batch !== undefined && n < stop && !dropped && n <= this.lastBlock) {
      let off = 0;
      const from = n;
      let batchBytes = 0;
      for (; n < stop && n - from < this.batchBlocks; n++) {
        encodeDataHeader(this.batch, off, n & 0xffff);
        const length = this.stream.copy(this.batch, off + 4, (n - 1) * bs, n * bs);
        off += 4 + length;
        batchBytes += length;
        if (length < bs) {
          this.lastBlock = n;
          this.lastLength = length;
          n++;
          break;
        }
      }
      let took: boolean;
      try {
        took = this.p.sendSegments!(this.batch.subarray(0, off), 4 + bs);
      } catch (err) {
        // The kernel or the device cannot segment: one datagram per send from here on.
        this.batch = undefined;
        this.p.onSegmentsFailed?.(err);
        n = from;
        break;
      }
      if (!took) { dropped = true; n = from; break; }
      this.sentUpTo = n - 1;
      bytes += batchBytes;
      resent += Math.max(0, Math.min(n - 1, this.maxSent) - from + 1);
    }
    for (; n < stop && !dropped && n <= this.lastBlock; n++) {
      encodeDataHeader(this.packet, 0, n & 0xffff);
      const length = this.stream.copy(this.packet, 4, (n - 1) * bs, n * bs);
      if (!this.p.send(this.packet.subarray(0, 4 + length))) {
        dropped = true;
        break;
      }
      this.sentUpTo = n;
      bytes += length;
      if (n <= this.maxSent) resent++;
      if (length < bs) {
        this.lastBlock = n;
        this.lastLength = length;
        break;
      }
    }
    if (this.sentUpTo > this.maxSent) this.maxSent = this.sentUpTo;
    this.retransmitted += resent;
    if (bytes > 0 || resent > 0) this.p.onSent?.(bytes, resent);
    if (dropped && this.localRetries < MAX_LOCAL_RETRIES) {
      this.localRetries++;
      this.arm(LOCAL_RETRY_MS);
    } else {
      if (!dropped) this.localRetries = 0;
      this.arm(this.backoffMs());
    }
  }

  private backoffMs(): number {
    const base = this.p.timeoutMs;
    return Math.min(base * 2 ** this.timeouts, Math.max(base, MAX_BACKOFF_MS));
  }

  private arm(ms: number): void {
    if (this.timer && this.timerMs === ms) {
      this.timer.refresh();
      return;
    }
    clearTimeout(this.timer);
    this.timerMs = ms;
    this.timer = setTimeout(() => this.onTimer(), ms);
  }

  private onTimer(): void {
    if (this.phase === 'done') return;
    if (this.timerMs !== LOCAL_RETRY_MS) {
      this.timeouts++;
      this.totalTimeouts++;
      if (this.timeouts > this.p.retries) {
        this.p.send(encodeTftp({ op: 'ERROR', code: ERROR_CODE.NOT_DEFINED, message: 'timeout' }));
        this.end({ ok: false, reason: 'timeout' });
        return;
      }
    }
    if (this.phase === 'oack') {
      this.sendOack();
    } else {
      this.dupAnswered = false;
      void this.sendWindow(this.acked + 1);
    }
  }

  private end(r: Omit<TransferResult, 'bytes' | 'blocks' | 'retransmitted' | 'timeouts' | 'partialAcks'>): void {
    if (this.phase === 'done') return;
    this.phase = 'done';
    clearTimeout(this.timer);
    this.timer = undefined;
    this.generation++;
    this.stream.release();
    // Acknowledged payload: every acknowledged block is full but the last one.
    const bytes = r.ok ? (this.acked - 1) * this.p.blockSize + this.lastLength : this.acked * this.p.blockSize;
    this.p.onEnd({ ...r, bytes, blocks: this.acked, retransmitted: this.retransmitted, timeouts: this.totalTimeouts, partialAcks: this.partialAcks });
  }
}
