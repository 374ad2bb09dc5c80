// Domain names on the wire (RFC 1035 §3.1, §4.1.4) and in text.
//
// In this codec a name is its presentation form (RFC 1035 §5.1) without the trailing dot: labels joined by
// ".", the root is "". Bytes that would make that ambiguous or unprintable are escaped: "." and "\" inside a
// label as "\." and "\\", bytes outside 0x21-0x7e as "\DDD". So the text of a decoded name holds ASCII only,
// and lower-casing it (String.toLowerCase) folds exactly the ASCII letters, as RFC 4343 §3 wants.
//
// Reading follows compression pointers only backwards, each to an offset below the previous one, so a
// hostile message cannot loop (RFC 9267 §2, §3: "pointer loops", "pointers to the current label"); every
// length is checked against the message before the bytes are read.
import { MetalboxError } from '../../lib/errors.ts';
import { MAX_LABEL_BYTES, MAX_NAME_BYTES, MAX_POINTER_OFFSET } from './constants.ts';

export function decodeError(code: 'DNS_TRUNCATED' | 'DNS_BAD_POINTER' | 'DNS_BAD_LABEL' | 'DNS_NAME_TOO_LONG' | 'DNS_BAD_RDATA' | 'DNS_BAD_OPT' | 'DNS_TRAILING_DATA', message: string, offset: number): MetalboxError {
  return new MetalboxError(code, `${message} (offset ${offset})`, { details: { offset } });
}

/** Whether a byte stands for itself in a name's text (letters, digits, hyphen, underscore, '*' and the rest of printable ASCII but '.' and '\'). */
function plain(c: number): boolean {
  return c > 0x20 && c < 0x7f && c !== 0x2e && c !== 0x5c;
}

/** Where readName assembles a name's text: one string is made per name, not one per label. 255 octets, each at most "\DDD" and a dot. */
const scratch = Buffer.allocUnsafe(MAX_NAME_BYTES * 5);

/** Appends one label's text at `at` of the scratch buffer; returns the new end. */
function appendLabel(buf: Buffer, start: number, end: number, at: number): number {
  for (let i = start; i < end; i++) {
    const c = buf[i]!;
    if (plain(c)) { scratch[at++] = c; continue; }
    scratch[at++] = 0x5c;
    if (c === 0x2e || c === 0x5c) { scratch[at++] = c; continue; }
    scratch[at++] = 0x30 + Math.floor(c / 100);
    scratch[at++] = 0x30 + (Math.floor(c / 10) % 10);
    scratch[at++] = 0x30 + (c % 10);
  }
  return at;
}

function labelText(buf: Buffer, start: number, end: number): string {
  let i = start;
  while (i < end && plain(buf[i]!)) i++;
  if (i === end) return buf.toString('latin1', start, end);
  let out = buf.toString('latin1', start, i);
  for (; i < end; i++) {
    const c = buf[i]!;
    if (plain(c)) out += String.fromCharCode(c);
    else if (c === 0x2e || c === 0x5c) out += `\\${String.fromCharCode(c)}`;
    else out += `\\${String(c).padStart(3, '0')}`;
  }
  return out;
}

/**
 * Reads the name at `offset` of the message `buf`. Returns its text and the offset just past it where it sits
 * (after its first pointer, if it has one). `end` bounds the inline part (an RDATA's end); pointers may reach
 * anywhere before the name's start.
 */
export function readName(buf: Buffer, offset: number, end = buf.length): { name: string; next: number } {
  let pos = offset;
  let next = -1;
  let lowest = offset;
  let wire = 1;
  let out = 0;
  let limit = end;
  for (;;) {
    if (pos >= limit) throw decodeError('DNS_TRUNCATED', 'name runs past the end of the message', pos);
    const len = buf[pos]!;
    if (len === 0) {
      if (next < 0) next = pos + 1;
      return { name: out === 0 ? '' : scratch.toString('latin1', 0, out), next };
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= limit) throw decodeError('DNS_TRUNCATED', 'compression pointer cut short', pos);
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      if (next < 0) next = pos + 2;
      // Strictly below every place this name has been read from: no loop, no pointer to itself or forward.
      if (target >= lowest) throw decodeError('DNS_BAD_POINTER', `compression pointer to ${target} does not point backwards`, pos);
      lowest = target;
      pos = target;
      // What a pointer reaches is earlier message data, not the RDATA: bounded by the message.
      limit = buf.length;
      continue;
    }
    if (kind !== 0) throw decodeError('DNS_BAD_LABEL', `label type 0x${kind.toString(16)} is not defined (RFC 6891 §5)`, pos);
    if (pos + 1 + len > limit) throw decodeError('DNS_TRUNCATED', `label of ${len} octets runs past the end`, pos);
    wire += len + 1;
    if (wire > MAX_NAME_BYTES) throw decodeError('DNS_NAME_TOO_LONG', `name longer than ${MAX_NAME_BYTES} octets`, pos);
    if (out > 0) scratch[out++] = 0x2e;
    out = appendLabel(buf, pos + 1, pos + 1 + len, out);
    pos += 1 + len;
  }
}

/** A name's labels as bytes, from its text (escapes resolved). A malformed name is a caller bug: TypeError. */
export function nameLabels(name: string): Buffer[] {
  if (name === '' || name === '.') return [];
  const text = name.endsWith('.') && !name.endsWith('\\.') ? name.slice(0, -1) : name;
  const labels: Buffer[] = [];
  let cur: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 0x2e) { labels.push(Buffer.from(cur)); cur = []; continue; }
    if (ch === 0x5c) {
      const d = /^\d{3}/.exec(text.slice(i + 1, i + 4));
      if (d) {
        const v = Number(d[0]);
        if (v > 255) throw new TypeError(`name ${JSON.stringify(name)}: \\${d[0]} is not an octet`);
        cur.push(v);
        i += 3;
      } else {
        if (i + 1 >= text.length) throw new TypeError(`name ${JSON.stringify(name)} ends with a lone backslash`);
        cur.push(text.charCodeAt(++i));
      }
      continue;
    }
    if (ch > 0xff) throw new TypeError(`name ${JSON.stringify(name)} has characters above U+00FF`);
    cur.push(ch);
  }
  labels.push(Buffer.from(cur));
  let wire = 1;
  for (const l of labels) {
    if (l.length === 0 || l.length > MAX_LABEL_BYTES) throw new TypeError(`name ${JSON.stringify(name)}: labels are 1-${MAX_LABEL_BYTES} octets`);
    wire += l.length + 1;
  }
  if (wire > MAX_NAME_BYTES) throw new TypeError(`name ${JSON.stringify(name)} is longer than ${MAX_NAME_BYTES} octets`);
  return labels;
}

/**
 * Writes messages: big-endian integers, names with compression, and a rollback to a mark (truncation drops
 * whole RRsets, RFC 2181 §9). Offsets of name suffixes are remembered case-insensitively (RFC 1035 §4.1.4
 * lets a pointer stand for any earlier occurrence; servers compare names without case, so a pointer to the
 * question keeps the case the client sent, RFC 4343 §4.1).
 */
export class DnsWriter {
  buf: Buffer;
  pos = 0;
  private readonly names = new Map<string, number>();

  constructor(capacity = 512) {
    this.buf = Buffer.allocUnsafe(capacity);
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): void {
    this.reserve(1);
    this.buf[this.pos++] = v & 0xff;
  }

  u16(v: number): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new TypeError(`DNS: ${v} is not a 16-bit value`);
    this.reserve(2);
    this.buf.writeUInt16BE(v, this.pos);
    this.pos += 2;
  }

  u32(v: number): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new TypeError(`DNS: ${v} is not a 32-bit value`);
    this.reserve(4);
    this.buf.writeUInt32BE(v, this.pos);
    this.pos += 4;
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  setU16(at: number, v: number): void {
    this.buf.writeUInt16BE(v, at);
  }

  /** Forgets everything written from `mark` on (and the name offsets it recorded). */
  rollback(mark: number): void {
    if (mark >= this.pos) return;
    this.pos = mark;
    for (const [k, off] of this.names) if (off >= mark) this.names.delete(k);
  }

  private remember(key: string): void {
    if (this.pos <= MAX_POINTER_OFFSET && !this.names.has(key)) this.names.set(key, this.pos);
  }

  /** A name; `compress: false` for RDATA that must not be compressed (RFC 2782 SRV, RFC 3597 unknown types). */
  name(name: string, compress = true): void {
    if (name === '' || name === '.') { this.u8(0); return; }
    if (name.includes('\\')) { this.escapedName(name, compress); return; }
    const text = name.endsWith('.') ? name.slice(0, -1) : name;
    const lower = text.toLowerCase();
    if (text.length > MAX_NAME_BYTES - 2) throw new TypeError(`DNS: name ${JSON.stringify(name)} is longer than ${MAX_NAME_BYTES} octets`);
    let start = 0;
    for (;;) {
      const key = start === 0 ? lower : lower.slice(start);
      if (compress) {
        const at = this.names.get(key);
        if (at !== undefined) { this.u16(0xc000 | at); return; }
      }
      this.remember(key);
      const dot = text.indexOf('.', start);
      const end = dot < 0 ? text.length : dot;
      const len = end - start;
      if (len === 0 || len > MAX_LABEL_BYTES) throw new TypeError(`DNS: name ${JSON.stringify(name)}: labels are 1-${MAX_LABEL_BYTES} octets`);
      this.reserve(len + 1);
      const b = this.buf;
      let p = this.pos;
      b[p++] = len;
      // Labels are short: a loop beats a call into Buffer.write.
      for (let i = start; i < end; i++) {
        const c = text.charCodeAt(i);
        if (c > 0xff) throw new TypeError(`DNS: name ${JSON.stringify(name)} has characters above U+00FF`);
        b[p++] = c;
      }
      this.pos = p;
      if (dot < 0) { this.u8(0); return; }
      start = dot + 1;
    }
  }

  private escapedName(name: string, compress: boolean): void {
    const labels = nameLabels(name);
    const keys = labels.map((l) => labelText(l, 0, l.length).toLowerCase());
    for (let i = 0; i < labels.length; i++) {
      const key = keys.slice(i).join('.');
      if (compress) {
        const at = this.names.get(key);
        if (at !== undefined) { this.u16(0xc000 | at); return; }
      }
      this.remember(key);
      this.u8(labels[i]!.length);
      this.bytes(labels[i]!);
    }
    this.u8(0);
  }

  toBuffer(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}
