// NTP packets: RFC 5905 §7.3 (the 48-byte header shared by modes 1-5), extension fields and the legacy MAC
// after it (RFC 5905 §7.5 as updated by RFC 7822), Kiss-o'-Death packets (RFC 5905 §7.4).
// Pure: Buffer <-> NtpPacket. Which packets get an answer, and what time it carries, is the service's business.
//
// Hostile input: every length is checked before it is read; a decode error carries the offset and a stable
// code (NTP_TRUNCATED, NTP_BAD_VERSION, NTP_BAD_MODE, NTP_BAD_EXTENSION). Extension fields and the MAC are
// kept as opaque bytes, so a packet survives a round trip bit for bit.
import { MetalboxError, type ErrorCode } from '../../lib/errors.ts';
import type { NtpTimestamp } from './time.ts';

/** RFC 5905 §7.3 Figure 10. */
export const MODE = { RESERVED: 0, SYMMETRIC_ACTIVE: 1, SYMMETRIC_PASSIVE: 2, CLIENT: 3, SERVER: 4, BROADCAST: 5, CONTROL: 6, PRIVATE: 7 } as const;
/** RFC 5905 §7.3 Figure 9: leap indicator. 3 means the clock is unsynchronised. */
export const LEAP = { NONE: 0, ADD_SECOND: 1, DEL_SECOND: 2, UNSYNCHRONISED: 3 } as const;
/** RFC 5905 §7.3: stratum 16 is "unsynchronised"; 0 means a Kiss-o'-Death packet (or "unspecified"). */
export const STRATUM_KOD = 0;
export const STRATUM_UNSYNCHRONISED = 16;
/** RFC 5905 §7.4 Figure 13: the kiss codes a server sends to a client it will not serve. */
export const KISS = { RATE: 'RATE', DENY: 'DENY', RSTR: 'RSTR' } as const;

/** The fixed header (RFC 5905 §7.3). */
export const HEADER_BYTES = 48;
/** Smallest extension field (RFC 7822 §3): a 4-byte header and 12 bytes of value. */
export const MIN_EXTENSION_BYTES = 16;
/**
 * A legacy MAC is a 4-byte key id and a 16 (MD5, AES-CMAC) or 20 (SHA-1) byte digest (RFC 5905 §7.3,
 * RFC 8573); a key id alone is a crypto-NAK (RFC 5905 §7.3 and RFC 5906 §10). Trailing data of exactly one of
 * these lengths is a MAC, not an extension field (RFC 7822 §7.5).
 */
export const MAC_LENGTHS: readonly number[] = [4, 20, 24];

export interface NtpExtension {
  /** Field type (16 bits). */
  type: number;
  /** The value, padding included: the field's length minus its 4-byte header. */
  value: Buffer;
}

export interface NtpMac {
  keyId: number;
  /** Empty for a crypto-NAK. */
  digest: Buffer;
}

export interface NtpPacket {
  /** Leap indicator, 0-3 (LEAP). */
  leap: number;
  /** Version number, 1-4. */
  version: number;
  /** Association mode, 1-5 (MODE). */
  mode: number;
  /** 0 (KoD / unspecified), 1 (primary), 2-15 (secondary), 16 (unsynchronised); 17-255 reserved. */
  stratum: number;
  /** log2 of the poll interval in seconds (signed 8 bits). */
  poll: number;
  /** log2 of the clock's precision in seconds (signed 8 bits). */
  precision: number;
  /** Root delay, raw NTP short format (16.16 seconds). */
  rootDelay: number;
  /** Root dispersion, raw NTP short format. */
  rootDispersion: number;
  /**
   * Reference id, raw 32 bits: at stratum 0 a kiss code, at stratum 1 a source name ("GPS", "LOCL"), above
   * that the IPv4 address of the server this one syncs to (RFC 5905 §7.3).
   */
  referenceId: number;
  referenceTime: NtpTimestamp;
  originTime: NtpTimestamp;
  receiveTime: NtpTimestamp;
  transmitTime: NtpTimestamp;
  /** RFC 7822 extension fields, in wire order. */
  extensions: NtpExtension[];
  /** The legacy MAC, when present. metalbox holds no keys: it is kept, never checked. */
  mac?: NtpMac;
}

function fail(code: ErrorCode, offset: number, message: string, details: Record<string, unknown> = {}): MetalboxError {
  return new MetalboxError(code, `NTP: ${message} at offset ${offset}`, { details: { offset, ...details } });
}

function timestampAt(buf: Buffer, offset: number): NtpTimestamp {
  return { seconds: buf.readUInt32BE(offset), fraction: buf.readUInt32BE(offset + 4) };
}

/**
 * Decodes an NTP packet of modes 1-5. Throws MetalboxError NTP_TRUNCATED (shorter than the header),
 * NTP_BAD_VERSION (version 0 or above 4), NTP_BAD_MODE (0 is reserved; 6 and 7, control and private, have
 * other layouts and are never answered) or NTP_BAD_EXTENSION (what follows the header is neither extension
 * fields nor a MAC), each with `details.offset`.
 */
export function decodeNtp(buf: Buffer): NtpPacket {
  if (buf.length < HEADER_BYTES) throw fail('NTP_TRUNCATED', buf.length, `packet of ${buf.length} bytes is shorter than the ${HEADER_BYTES}-byte header`, { length: buf.length });
  const b0 = buf[0]!;
  const version = (b0 >> 3) & 7;
  const mode = b0 & 7;
  if (version < 1 || version > 4) throw fail('NTP_BAD_VERSION', 0, `version ${version} is not 1-4`, { version });
  if (mode === MODE.RESERVED || mode === MODE.CONTROL || mode === MODE.PRIVATE) throw fail('NTP_BAD_MODE', 0, `mode ${mode} is not an RFC 5905 time packet`, { mode });

  const extensions: NtpExtension[] = [];
  let mac: NtpMac | undefined;
  let at = HEADER_BYTES;
  // RFC 7822 §7.5: walk the fields; what is left once it has one of the MAC's lengths is the MAC.
  while (at < buf.length) {
    const left = buf.length - at;
    if (MAC_LENGTHS.includes(left)) {
      mac = { keyId: buf.readUInt32BE(at), digest: buf.subarray(at + 4) };
      break;
    }
    if (left < MIN_EXTENSION_BYTES) throw fail('NTP_BAD_EXTENSION', at, `${left} trailing bytes are neither an extension field nor a MAC`, { length: left });
    const type = buf.readUInt16BE(at);
    const length = buf.readUInt16BE(at + 2);
    // RFC 7822 §3: the length counts the header, is a multiple of 4 and at least 16.
    if (length < MIN_EXTENSION_BYTES || length % 4 !== 0) throw fail('NTP_BAD_EXTENSION', at, `extension field length ${length} is not a multiple of 4 of at least ${MIN_EXTENSION_BYTES}`, { type, length });
    if (length > left) throw fail('NTP_BAD_EXTENSION', at, `extension field of ${length} bytes runs past the end (${left} left)`, { type, length });
    extensions.push({ type, value: buf.subarray(at + 4, at + length) });
    at += length;
  }

  const packet: NtpPacket = {
    leap: b0 >> 6,
    version,
    mode,
    stratum: buf[1]!,
    poll: buf.readInt8(2),
    precision: buf.readInt8(3),
    rootDelay: buf.readUInt32BE(4),
    rootDispersion: buf.readUInt32BE(8),
    referenceId: buf.readUInt32BE(12),
    referenceTime: timestampAt(buf, 16),
    originTime: timestampAt(buf, 24),
    receiveTime: timestampAt(buf, 32),
    transmitTime: timestampAt(buf, 40),
    extensions,
  };
  if (mac) packet.mac = mac;
  return packet;
}

const u32 = (v: number, field: string): number => {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${field} must be an unsigned 32-bit integer, got ${v}`);
  return v;
};
const intIn = (v: number, lo: number, hi: number, field: string): number => {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new RangeError(`${field} must be an integer from ${lo} to ${hi}, got ${v}`);
  return v;
};

function writeTimestamp(buf: Buffer, offset: number, t: NtpTimestamp, field: string): void {
  buf.writeUInt32BE(u32(t.seconds, `${field}.seconds`), offset);
  buf.writeUInt32BE(u32(t.fraction, `${field}.fraction`), offset + 4);
}

/** The encoded size of a packet. */
export function ntpLength(p: NtpPacket): number {
  let n = HEADER_BYTES;
  for (const e of p.extensions) n += 4 + e.value.length;
  if (p.mac) n += 4 + p.mac.digest.length;
  return n;
}

/**
 * Writes `p` into `buf` at `offset` (room for ntpLength(p) bytes) and returns the bytes written. The server's
 * reply path writes into one reused buffer. Malformed values are caller bugs: RangeError.
 */
export function encodeNtpInto(p: NtpPacket, buf: Buffer, offset = 0): number {
  const n = ntpLength(p);
  if (offset < 0 || offset + n > buf.length) throw new RangeError(`encodeNtpInto: ${n} bytes do not fit at offset ${offset} of ${buf.length}`);
  buf[offset] = (intIn(p.leap, 0, 3, 'leap') << 6) | (intIn(p.version, 0, 7, 'version') << 3) | intIn(p.mode, 0, 7, 'mode');
  buf[offset + 1] = intIn(p.stratum, 0, 255, 'stratum');
  buf.writeInt8(intIn(p.poll, -128, 127, 'poll'), offset + 2);
  buf.writeInt8(intIn(p.precision, -128, 127, 'precision'), offset + 3);
  buf.writeUInt32BE(u32(p.rootDelay, 'rootDelay'), offset + 4);
  buf.writeUInt32BE(u32(p.rootDispersion, 'rootDispersion'), offset + 8);
  buf.writeUInt32BE(u32(p.referenceId, 'referenceId'), offset + 12);
  writeTimestamp(buf, offset + 16, p.referenceTime, 'referenceTime');
  writeTimestamp(buf, offset + 24, p.originTime, 'originTime');
  writeTimestamp(buf, offset + 32, p.receiveTime, 'receiveTime');
  writeTimestamp(buf, offset + 40, p.transmitTime, 'transmitTime');
  let at = offset + HEADER_BYTES;
  for (const e of p.extensions) {
    const length = 4 + e.value.length;
    if (length < MIN_EXTENSION_BYTES || length % 4 !== 0 || length > 0xffff) throw new RangeError(`extension field of ${length} bytes: must be a multiple of 4 from ${MIN_EXTENSION_BYTES} to 65532`);
    buf.writeUInt16BE(intIn(e.type, 0, 0xffff, 'extension type'), at);
    buf.writeUInt16BE(length, at + 2);
    e.value.copy(buf, at + 4);
    at += length;
  }
  if (p.mac) {
    if (!MAC_LENGTHS.includes(4 + p.mac.digest.length)) throw new RangeError(`MAC digest of ${p.mac.digest.length} bytes: must be 0, 16 or 20`);
    buf.writeUInt32BE(u32(p.mac.keyId, 'mac.keyId'), at);
    p.mac.digest.copy(buf, at + 4);
  }
  return n;
}

export function encodeNtp(p: NtpPacket): Buffer {
  const buf = Buffer.alloc(ntpLength(p));
  encodeNtpInto(p, buf);
  return buf;
}

/** A reference id made of up to four ASCII characters (kiss codes, stratum-1 source names), NUL-padded. */
export function refIdFromText(text: string): number {
  if (!/^[\x20-\x7e]{1,4}$/.test(text)) throw new RangeError(`reference id text must be 1-4 printable ASCII characters, got ${JSON.stringify(text)}`);
  let v = 0;
  for (let i = 0; i < 4; i++) v = v * 256 + (i < text.length ? text.charCodeAt(i) : 0);
  return v;
}

/** The ASCII text of a reference id (trailing NULs dropped); undefined when it is not printable ASCII. */
export function refIdText(refId: number): string | undefined {
  let s = '';
  for (let shift = 24; shift >= 0; shift -= 8) {
    const c = (refId >>> shift) & 0xff;
    if (c === 0) {
      // Only padding may follow a NUL.
      if (shift > 0 && (refId & ((1 << shift) - 1)) !== 0) return undefined;
      break;
    }
    if (c < 0x20 || c > 0x7e) return undefined;
    s += String.fromCharCode(c);
  }
  return s === '' ? undefined : s;
}

/** A reference id as the dotted IPv4 address it holds above stratum 1. */
export function refIdAddress(refId: number): string {
  return `${refId >>> 24}.${(refId >>> 16) & 0xff}.${(refId >>> 8) & 0xff}.${refId & 0xff}`;
}

/** The kiss code of a Kiss-o'-Death packet (stratum 0, RFC 5905 §7.4), else undefined. */
export function kissCode(p: Pick<NtpPacket, 'stratum' | 'referenceId'>): string | undefined {
  return p.stratum === STRATUM_KOD ? refIdText(p.referenceId) : undefined;
}
