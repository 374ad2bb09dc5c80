// Byte readers and writers for the protocol codecs (DHCP now; TFTP, DNS, NTP, IPMI later).
// The reader checks every length before it reads, so a codec built on it cannot read past the data it was
// given; what a failed check throws is the caller's choice, so each codec turns it into its own error code.

/**
 * Builds the error a failed bounds check throws. `offset` is where the read started (absolute, in the
 * reader's buffer), `need` how many bytes it wanted, `available` how many were left before the end.
 */
export type ReadFailure = (offset: number, need: number, available: number) => Error;

/** What a reader throws when no `ReadFailure` was given: a RangeError that carries the offset. */
export class ByteRangeError extends RangeError {
  readonly offset: number;
  readonly need: number;
  readonly available: number;

  constructor(offset: number, need: number, available: number) {
    super(`read of ${need} byte(s) at offset ${offset} runs past the end (${available} left)`);
    this.name = 'ByteRangeError';
    this.offset = offset;
    this.need = need;
    this.available = available;
  }
}

const defaultFailure: ReadFailure = (offset, need, available) => new ByteRangeError(offset, need, available);

/**
 * Reads big-endian integers and byte runs from `buf[start, end)`, tracking the offset. Offsets are
 * absolute positions in `buf`, so errors point at the byte on the wire. `bytes()` returns views, not copies.
 */
export class ByteReader {
  readonly buf: Buffer;
  readonly start: number;
  readonly end: number;
  private pos: number;
  private readonly fail: ReadFailure;

  constructor(buf: Buffer, options?: { start?: number; end?: number; fail?: ReadFailure }) {
    const start = options?.start ?? 0;
    const end = options?.end ?? buf.length;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || start > end || end > buf.length) {
      throw new TypeError(`ByteReader: bad range [${start}, ${end}) for a buffer of ${buf.length} bytes`);
    }
    this.buf = buf;
    this.start = start;
    this.end = end;
    this.pos = start;
    this.fail = options?.fail ?? defaultFailure;
  }

  /** Absolute position of the next byte to read. */
  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  atEnd(): boolean {
    return this.pos >= this.end;
  }

  /** Throws the reader's failure unless at least `n` bytes remain. */
  ensure(n: number): void {
    if (n > this.end - this.pos) throw this.fail(this.pos, n, this.end - this.pos);
  }

  u8(): number {
    this.ensure(1);
    return this.buf[this.pos++]!;
  }

  /** The next byte without consuming it. */
  peekU8(): number {
    this.ensure(1);
    return this.buf[this.pos]!;
  }

  u16(): number {
    this.ensure(2);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    this.ensure(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** A view (no copy) of the next `n` bytes. */
  bytes(n: number): Buffer {
    this.ensure(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** A copy of the next `n` bytes, for values that outlive the packet buffer. */
  copy(n: number): Buffer {
    return Buffer.from(this.bytes(n));
  }

  /** The next `n` bytes as latin1 text (one character per byte, lossless). */
  latin1(n: number): string {
    this.ensure(n);
    const v = this.buf.toString('latin1', this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  skip(n: number): void {
    this.ensure(n);
    this.pos += n;
  }

  /** Moves to an absolute offset inside [start, end]. */
  seek(offset: number): void {
    if (offset < this.start || offset > this.end) throw this.fail(offset, 0, this.end - offset);
    this.pos = offset;
  }

  /** A reader over the next `n` bytes (sharing the buffer and the failure), consuming them from this one. */
  sub(n: number, fail?: ReadFailure): ByteReader {
    this.ensure(n);
    const r = new ByteReader(this.buf, { start: this.pos, end: this.pos + n, fail: fail ?? this.fail });
    this.pos += n;
    return r;
  }
}

/**
 * Writes big-endian integers and bytes into a buffer that grows by doubling. Values out of range are caller
 * bugs (TypeError), never silently truncated.
 */
export class ByteWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(initialCapacity = 256) {
    // Unzeroed (and pooled when small): only bytes below `pos` are ever exposed, and each was written.
    this.buf = Buffer.allocUnsafe(Math.max(16, initialCapacity));
  }

  get length(): number {
    return this.pos;
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new TypeError(`ByteWriter.u8: ${v} is not an octet`);
    this.reserve(1);
    this.buf[this.pos++] = v;
    return this;
  }

  u16(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new TypeError(`ByteWriter.u16: ${v} is out of range`);
    this.reserve(2);
    this.buf.writeUInt16BE(v, this.pos);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new TypeError(`ByteWriter.u32: ${v} is out of range`);
    this.reserve(4);
    this.buf.writeUInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.reserve(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** Latin1 text, one byte per character; a character above U+00FF is a caller bug. */
  latin1(s: string): this {
    if (/[^\x00-\xff]/.test(s)) throw new TypeError(`ByteWriter.latin1: ${JSON.stringify(s)} has characters above U+00FF`);
    this.reserve(s.length);
    this.buf.write(s, this.pos, s.length, 'latin1');
    this.pos += s.length;
    return this;
  }

  zeros(n: number): this {
    this.reserve(n);
    this.buf.fill(0, this.pos, this.pos + n);
    this.pos += n;
    return this;
  }

  /** Overwrites one byte already written (a length patched in after its value). */
  setU8(at: number, v: number): this {
    if (at < 0 || at >= this.pos) throw new TypeError(`ByteWriter.setU8: offset ${at} not written yet`);
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new TypeError(`ByteWriter.setU8: ${v} is not an octet`);
    this.buf[at] = v;
    return this;
  }

  /** The bytes written so far, as a view of the internal buffer: stop writing once you take it. */
  toBuffer(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}
