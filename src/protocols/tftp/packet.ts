// TFTP packets: RFC 1350 (RRQ, WRQ, DATA, ACK, ERROR) and RFC 2347 (options on requests, OACK).
// Pure: Buffer <-> TftpPacket. What the options mean (RFC 2348 blksize, RFC 2349 timeout/tsize,
// RFC 7440 windowsize) and which are granted is the service's business; the codec only keeps them, in
// wire order and with the case the peer used, so unknown options survive a round trip.
import { ByteReader, ByteWriter } from '../../lib/bytes.ts';
import { MetalboxError, type ErrorCode } from '../../lib/errors.ts';

/** RFC 1350 §5, RFC 2347 (OACK). */
export const OPCODE = { RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 } as const;
export type OpName = keyof typeof OPCODE;
const OP_NAMES: Record<number, OpName> = { 1: 'RRQ', 2: 'WRQ', 3: 'DATA', 4: 'ACK', 5: 'ERROR', 6: 'OACK' };

/** RFC 1350 appendix "Error Codes", plus 8 from RFC 2347. */
export const ERROR_CODE = {
  NOT_DEFINED: 0,
  FILE_NOT_FOUND: 1,
  ACCESS_VIOLATION: 2,
  DISK_FULL: 3,
  ILLEGAL_OPERATION: 4,
  UNKNOWN_TID: 5,
  FILE_EXISTS: 6,
  NO_SUCH_USER: 7,
  OPTION_REFUSED: 8,
} as const;

/** RFC 2348: the largest block a DATA packet may carry (65535 - 20 IP - 8 UDP - 4 TFTP - 39, as the RFC puts it). */
export const MAX_BLOCK_SIZE = 65464;
/** RFC 1350: the block size without a blksize option. */
export const DEFAULT_BLOCK_SIZE = 512;

export interface TftpOption {
  /** As sent (RFC 2347 names are case-insensitive: compare with `optionValue`). */
  name: string;
  value: string;
}

export interface TftpRequest {
  op: 'RRQ' | 'WRQ';
  /** Latin-1, one character per byte, exactly as on the wire (no path checks here: that is policy). */
  filename: string;
  /** As sent; RFC 1350 modes are "netascii", "octet" and "mail", in any case. */
  mode: string;
  options: TftpOption[];
}
export interface TftpData { op: 'DATA'; block: number; data: Buffer }
export interface TftpAck { op: 'ACK'; block: number }
export interface TftpError { op: 'ERROR'; code: number; message: string }
export interface TftpOack { op: 'OACK'; options: TftpOption[] }
export type TftpPacket = TftpRequest | TftpData | TftpAck | TftpError | TftpOack;

function fail(code: ErrorCode, offset: number, message: string, details: Record<string, unknown> = {}): MetalboxError {
  return new MetalboxError(code, `TFTP: ${message} at offset ${offset}`, { details: { offset, ...details } });
}

/** A NUL-terminated latin1 string; `field` names it in the error. */
function cstring(r: ByteReader, field: string): string {
  const start = r.offset;
  const nul = r.buf.indexOf(0, start);
  if (nul < 0 || nul >= r.end) throw fail('TFTP_TRUNCATED', start, `${field} has no NUL terminator`, { field });
  const s = r.latin1(nul - start);
  r.skip(1);
  return s;
}

/** RFC 2347 option pairs up to the end of the packet. */
function options(r: ByteReader, allowPadding: boolean): TftpOption[] {
  const out: TftpOption[] = [];
  const seen = new Set<string>();
  while (!r.atEnd()) {
    // QUIRK(clients): some small clients (firmware-style request builders) end the option list with an
    // extra NUL. Only NULs may follow, and only after a request's options; anything else is an option.
    if (allowPadding && r.buf.subarray(r.offset, r.end).every((b) => b === 0)) {
      r.skip(r.remaining);
      break;
    }
    const at = r.offset;
    const name = cstring(r, 'option name');
    if (name === '') throw fail('TFTP_BAD_OPTION', at, 'empty option name');
    if (r.atEnd()) throw fail('TFTP_BAD_OPTION', r.offset, `option "${name}" has no value`, { option: name });
    const value = cstring(r, `value of option "${name}"`);
    const key = name.toLowerCase();
    if (seen.has(key)) throw fail('TFTP_BAD_OPTION', at, `option "${name}" appears twice`, { option: name });
    seen.add(key);
    out.push({ name, value });
  }
  return out;
}

/**
 * Decodes one TFTP datagram. Throws MetalboxError TFTP_TRUNCATED, TFTP_BAD_OPCODE, TFTP_BAD_REQUEST,
 * TFTP_BAD_OPTION or TFTP_OVERSIZE with `details.offset` (where on the wire the problem is).
 * DATA's payload is a view into `buf`, not a copy.
 */
export function decodeTftp(buf: Buffer): TftpPacket {
  const r = new ByteReader(buf, { fail: (offset, need, available) => fail('TFTP_TRUNCATED', offset, `need ${need} byte(s), ${available} left`) });
  const opcode = r.u16();
  const op = OP_NAMES[opcode];
  switch (op) {
    case 'RRQ':
    case 'WRQ': {
      const at = r.offset;
      const filename = cstring(r, 'filename');
      if (filename === '') throw fail('TFTP_BAD_REQUEST', at, 'empty file name');
      const modeAt = r.offset;
      const mode = cstring(r, 'mode');
      if (mode === '') throw fail('TFTP_BAD_REQUEST', modeAt, 'empty mode');
      return { op, filename, mode, options: options(r, true) };
    }
    case 'DATA': {
      const block = r.u16();
      if (r.remaining > MAX_BLOCK_SIZE) throw fail('TFTP_OVERSIZE', r.offset, `DATA carries ${r.remaining} bytes, more than ${MAX_BLOCK_SIZE}`, { length: r.remaining });
      return { op, block, data: r.bytes(r.remaining) };
    }
    case 'ACK': {
      const block = r.u16();
      // An ACK is exactly 4 bytes (RFC 1350 §5); extra bytes mean we misread the packet.
      if (!r.atEnd()) throw fail('TFTP_OVERSIZE', r.offset, `${r.remaining} byte(s) after an ACK`, { length: r.remaining });
      return { op, block };
    }
    case 'ERROR': {
      const code = r.u16();
      const message = cstring(r, 'error message');
      if (!r.atEnd()) throw fail('TFTP_OVERSIZE', r.offset, `${r.remaining} byte(s) after an ERROR message`, { length: r.remaining });
      return { op, code, message };
    }
    case 'OACK':
      return { op, options: options(r, false) };
    default:
      throw fail('TFTP_BAD_OPCODE', 0, `unknown opcode ${opcode}`, { opcode });
  }
}

function checkString(s: string, field: string, allowEmpty = false): void {
  if (typeof s !== 'string') throw new TypeError(`encodeTftp: ${field} must be a string`);
  if (!allowEmpty && s === '') throw new TypeError(`encodeTftp: ${field} must not be empty`);
  if (s.includes('\0')) throw new TypeError(`encodeTftp: ${field} must not contain NUL`);
}

function checkU16(v: number, field: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new TypeError(`encodeTftp: ${field} must be an integer from 0 to 65535, got ${v}`);
}

function writeOptions(w: ByteWriter, opts: readonly TftpOption[]): void {
  const seen = new Set<string>();
  for (const o of opts) {
    checkString(o.name, 'option name');
    checkString(o.value, `value of option "${o.name}"`, true);
    if (seen.has(o.name.toLowerCase())) throw new TypeError(`encodeTftp: option "${o.name}" appears twice`);
    seen.add(o.name.toLowerCase());
    w.latin1(o.name).u8(0).latin1(o.value).u8(0);
  }
}

/** Encodes a packet. Values decodeTftp would refuse (empty names, NULs, a block over 65535) are caller bugs: TypeError. */
export function encodeTftp(p: TftpPacket): Buffer {
  switch (p.op) {
    case 'RRQ':
    case 'WRQ': {
      checkString(p.filename, 'filename');
      checkString(p.mode, 'mode');
      const w = new ByteWriter(p.filename.length + p.mode.length + 64).u16(OPCODE[p.op]).latin1(p.filename).u8(0).latin1(p.mode).u8(0);
      writeOptions(w, p.options);
      return Buffer.from(w.toBuffer());
    }
    case 'DATA': {
      if (p.data.length > MAX_BLOCK_SIZE) throw new TypeError(`encodeTftp: DATA carries at most ${MAX_BLOCK_SIZE} bytes, got ${p.data.length}`);
      return encodeDataInto(Buffer.allocUnsafe(4 + p.data.length), p.block, p.data);
    }
    case 'ACK': {
      checkU16(p.block, 'block');
      const b = Buffer.allocUnsafe(4);
      b.writeUInt16BE(OPCODE.ACK, 0);
      b.writeUInt16BE(p.block, 2);
      return b;
    }
    case 'ERROR': {
      checkU16(p.code, 'error code');
      checkString(p.message, 'error message', true);
      return Buffer.from(new ByteWriter(p.message.length + 5).u16(OPCODE.ERROR).u16(p.code).latin1(p.message).u8(0).toBuffer());
    }
    case 'OACK': {
      const w = new ByteWriter(64).u16(OPCODE.OACK);
      writeOptions(w, p.options);
      return Buffer.from(w.toBuffer());
    }
    default:
      throw new TypeError(`encodeTftp: unknown op ${JSON.stringify((p as { op: unknown }).op)}`);
  }
}

/**
 * Writes a DATA packet (block, payload) into `target` and returns the view of it that is the packet.
 * For the send path: a transfer reuses one buffer for every block, since a send copies the datagram
 * into the kernel before it returns. `target` must hold 4 + payload.length bytes.
 */
export function encodeDataInto(target: Buffer, block: number, payload: Uint8Array): Buffer {
  checkU16(block, 'block');
  if (target.length < 4 + payload.length) throw new TypeError(`encodeDataInto: target holds ${target.length} bytes, need ${4 + payload.length}`);
  target.writeUInt16BE(OPCODE.DATA, 0);
  target.writeUInt16BE(block, 2);
  target.set(payload, 4);
  return target.subarray(0, 4 + payload.length);
}

/** Writes the 4-byte DATA header (opcode 3, block) at `offset` of `target`; the payload goes right after it. */
export function encodeDataHeader(target: Buffer, offset: number, block: number): void {
  checkU16(block, 'block');
  if (offset < 0 || offset + 4 > target.length) throw new TypeError(`encodeDataHeader: no room for 4 bytes at offset ${offset} of ${target.length}`);
  target.writeUInt16BE(OPCODE.DATA, offset);
  target.writeUInt16BE(block, offset + 2);
}

/** The value of an option by name, compared case-insensitively (RFC 2347); undefined when absent. */
export function optionValue(opts: readonly TftpOption[], name: string): string | undefined {
  const key = name.toLowerCase();
  return opts.find((o) => o.name.toLowerCase() === key)?.value;
}
