// What every IPMI decoder shares: one error shape (MetalboxError BMC_PROTOCOL with the offset on the wire)
// and a ByteReader that throws it. IPMI LAN fields are little-endian (§13.6: "multi-byte fields ... are
// transmitted least significant byte first"), RMCP and ASF ones big-endian; the reader is big-endian, so
// the little-endian reads live here.
import { ByteReader } from '../../lib/bytes.ts';
import { MetalboxError } from '../../lib/errors.ts';

/** A decode failure: BMC_PROTOCOL, the offset in the message and why. */
export function ipmiDecodeError(offset: number, message: string, details: Record<string, unknown> = {}): MetalboxError {
  return new MetalboxError('BMC_PROTOCOL', `IPMI: ${message} at offset ${offset}`, { details: { offset, ...details } });
}

/** A reader over buf[start, end) whose failed bounds checks are BMC_PROTOCOL errors naming `what`. */
export function ipmiReader(buf: Buffer, what: string, start = 0, end = buf.length): ByteReader {
  return new ByteReader(buf, {
    start,
    end,
    fail: (offset, need, available) => ipmiDecodeError(offset, `${what} truncated: need ${need} byte(s), ${available} left`, { need, available }),
  });
}

export function u16le(r: ByteReader): number {
  return r.bytes(2).readUInt16LE(0);
}

export function u32le(r: ByteReader): number {
  return r.bytes(4).readUInt32LE(0);
}

export function u24le(r: ByteReader): number {
  const b = r.bytes(3);
  return b[0]! | (b[1]! << 8) | (b[2]! << 16);
}

/** Throws BMC_PROTOCOL if bytes remain after a fixed-size body (we would be misreading it). */
export function expectEnd(r: ByteReader, what: string): void {
  if (!r.atEnd()) throw ipmiDecodeError(r.offset, `${r.remaining} unexpected byte(s) after ${what}`, { extra: r.remaining });
}

export function writeU16le(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new TypeError(`IPMI: ${n} is not a 16-bit value`);
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n, 0);
  return b;
}

export function writeU32le(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new TypeError(`IPMI: ${n} is not a 32-bit value`);
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n, 0);
  return b;
}

export function hex32(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

/**
 * Runs a decoder over a payload that starts `base` bytes into the packet, moving the offset of any
 * BMC_PROTOCOL error it throws from payload-relative to packet-relative.
 */
export function withBase<T>(base: number, decode: () => T): T {
  if (base === 0) return decode();
  try {
    return decode();
  } catch (err) {
    if (err instanceof MetalboxError && typeof err.details?.offset === 'number') {
      const offset = err.details.offset + base;
      throw new MetalboxError(err.code, err.message.replace(/at offset \d+$/, `at offset ${offset}`), { details: { ...err.details, offset } });
    }
    throw err;
  }
}
