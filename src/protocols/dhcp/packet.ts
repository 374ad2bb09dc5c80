// DHCPv4 messages: the RFC 2131 §2 header, the options field with its cookie (§3), option overload into
// `file`/`sname` (RFC 2132 §9.3) and long options split and joined (RFC 3396). Pure: Buffer in, values out.
import { MetalboxError, type ErrorCode } from '../../lib/errors.ts';
import { formatIPv4, parseIPv4 } from '../../lib/ipv4.ts';
import {
  BOOTP_MIN_LENGTH,
  HEADER,
  IP_UDP_HEADERS,
  MAGIC_COOKIE,
  MIN_MAX_MESSAGE_SIZE,
  OPTION,
} from './constants.ts';
import { decodeOptionAt, encodeOptionParts, OptionError } from './options.ts';
import type { DhcpOptions, DhcpPacket } from './types.ts';

const PAD = 0;
const END = 255;
const OPTION_OVERLOAD = OPTION.OVERLOAD;
const OPTION_MESSAGE_TYPE = OPTION.MESSAGE_TYPE;
const OPTION_SERVER_ID = OPTION.SERVER_ID;
// Read once: module constants used on every packet.
const {
  OP: HEADER_OP,
  HTYPE: HEADER_HTYPE,
  HLEN: HEADER_HLEN,
  HOPS: HEADER_HOPS,
  XID: HEADER_XID,
  SECS: HEADER_SECS,
  FLAGS: HEADER_FLAGS,
  CIADDR: HEADER_CIADDR,
  YIADDR: HEADER_YIADDR,
  SIADDR: HEADER_SIADDR,
  GIADDR: HEADER_GIADDR,
  CHADDR: HEADER_CHADDR,
  CHADDR_LEN,
  SNAME: HEADER_SNAME,
  SNAME_LEN,
  FILE: HEADER_FILE,
  FILE_LEN,
  COOKIE: HEADER_COOKIE,
  OPTIONS: HEADER_OPTIONS,
} = HEADER;

/** RFC 2132 §9.3 option 52 values: which header fields carry options. */
const OVERLOAD_FILE = 1;
const OVERLOAD_SNAME = 2;

type Field = 'options' | 'file' | 'sname';

function fail(code: ErrorCode, message: string, offset: number, option?: number): MetalboxError {
  const details: Record<string, unknown> = { offset };
  if (option !== undefined) details.option = option;
  return new MetalboxError(code, `DHCP: ${message} (offset ${offset})`, { details });
}


// Scratch of one decodeDhcp: the option instances found, as parallel arrays (no object, Buffer view or 256-slot array
// per packet). decodeDhcp is never re-entered (nothing it calls calls back), so module state is safe; each call
// resets what the previous one left.
/** Entry index of the first instance of each option code, -1 when not seen. */
const FIRST = new Int32Array(256).fill(-1);
/** Codes set in FIRST by the current decode. */
const SEEN_CODES: number[] = [];
/** Per instance: the wire offsets of its data, the next instance of the same code (-1: none). */
const E_START: number[] = [];
const E_END: number[] = [];
const E_NEXT: number[] = [];
/** Per first instance: the last instance of its code so far (appending stays O(1)). */
const E_LAST: number[] = [];
let entries = 0;
/** Option 52's value, 0 when absent. */
let overloadSeen = 0;

/**
 * Collects the options of one field. Pad is skipped; End stops the field. A field without End is accepted
 * (QUIRK: many clients, and BOOTP relays that trim, leave it out) but an option whose length octet or data
 * would run past the field's end is DHCP_OPTION_OVERRUN.
 */
function gather(buf: Buffer, start: number, end: number, field: Field): void {
  let at = start;
  while (at < end) {
    const optionAt = at;
    const code = buf[at]!;
    if (code === PAD) { at++; continue; }
    if (code === END) return;
    if (at + 1 >= end || at + 2 + buf[at + 1]! > end) {
      throw fail('DHCP_OPTION_OVERRUN', `option ${code} runs past the end of the ${field} field`, optionAt, code);
    }
    const dataStart = at + 2;
    const dataEnd = dataStart + buf[at + 1]!;
    at = dataEnd;
    if (code === OPTION_OVERLOAD) {
      // RFC 2131 §4.1: option 52 appears only in the options field; more than one would be ambiguous.
      if (field !== 'options') throw fail('DHCP_BAD_OVERLOAD', `option 52 inside the ${field} field`, optionAt, code);
      if (overloadSeen !== 0) throw fail('DHCP_BAD_OVERLOAD', 'option 52 appears twice', optionAt, code);
      const len = dataEnd - dataStart;
      const v = len === 1 ? buf[dataStart]! : 0;
      if (v < 1 || v > 3) throw fail('DHCP_BAD_OVERLOAD', `option 52 must be one octet 1..3, got ${len === 1 ? v : `${len} octets`}`, optionAt, code);
      overloadSeen = v;
      continue;
    }
    const e = entries++;
    E_START[e] = dataStart;
    E_END[e] = dataEnd;
    E_NEXT[e] = -1;
    const first = FIRST[code]!;
    if (first < 0) {
      FIRST[code] = e;
      E_LAST[e] = e;
      SEEN_CODES.push(code);
    } else {
      E_NEXT[E_LAST[first]!] = e;
      E_LAST[first] = e;
    }
  }
}

/** Maps an offset inside an option's concatenated data (first instance `e`) back to the wire. */
function wireOffset(e: number, at: number): number {
  let rest = at;
  for (let i = e; ; i = E_NEXT[i]!) {
    const len = E_END[i]! - E_START[i]!;
    if (rest < len || E_NEXT[i] === -1) return E_START[i]! + rest;
    rest -= len;
  }
}

function cString(buf: Buffer, start: number, len: number): string {
  if (buf[start] === 0) return '';
  let end = start;
  while (end < start + len && buf[end] !== 0) end++;
  return buf.toString('latin1', start, end);
}

/** Dotted quad of a header address; 0.0.0.0 and the last one seen (a relay's giaddr) without formatting. */
let lastIp = -1;
let lastIpText = '';
function ipText(n: number): string {
  if (n === 0) return '0.0.0.0';
  if (n !== lastIp) {
    lastIp = n;
    lastIpText = formatIPv4(n);
  }
  return lastIpText;
}

/**
 * The message type (option 53) of a DHCP request, read without decoding the message: for a server that must
 * choose what to handle first under load. `undefined` when there is no cookie, the options field has no
 * well-formed option 53 before its end (an option 53 moved to file/sname by overload is not looked for), or
 * the message is malformed; the full decode says why. Never reads past the buffer.
 */
export function peekMessageType(buf: Buffer): number | undefined {
  if (buf.length < HEADER_OPTIONS || buf.readUInt32BE(HEADER_COOKIE) !== MAGIC_COOKIE) return undefined;
  let at = HEADER_OPTIONS;
  while (at < buf.length) {
    const code = buf[at]!;
    if (code === 0) { at++; continue; }
    if (code === 255 || at + 1 >= buf.length) return undefined;
    const len = buf[at + 1]!;
    if (code === 53) return len === 1 && at + 2 < buf.length ? buf[at + 2] : undefined;
    at += 2 + len;
  }
  return undefined;
}

/**
 * Decodes a DHCPv4 message (a UDP payload). Throws MetalboxError with a DHCP_* code and `details.offset`
 * (and `details.option` for option errors) on anything malformed; never reads a byte before checking it exists.
 */
export function decodeDhcp(buf: Buffer): DhcpPacket {
  if (buf.length < HEADER_OPTIONS) {
    throw fail('DHCP_TRUNCATED', `${buf.length} octets, shorter than the ${HEADER_OPTIONS}-octet header and cookie`, buf.length);
  }
  // The whole header and the cookie are there (checked above): fixed offsets from here.
  const op = buf[HEADER_OP]!;
  if (op !== 1 && op !== 2) throw fail('DHCP_BAD_HEADER', `op ${op} is neither BOOTREQUEST nor BOOTREPLY`, HEADER_OP);
  const htype = buf[HEADER_HTYPE]!;
  const hlen = buf[HEADER_HLEN]!;
  if (hlen > CHADDR_LEN) throw fail('DHCP_BAD_HEADER', `hlen ${hlen} is longer than chaddr`, HEADER_HLEN);
  const hops = buf[HEADER_HOPS]!;
  const xid = buf.readUInt32BE(HEADER_XID);
  const secs = buf.readUInt16BE(HEADER_SECS);
  const flags = buf.readUInt16BE(HEADER_FLAGS);
  const ciaddr = ipText(buf.readUInt32BE(HEADER_CIADDR));
  const yiaddr = ipText(buf.readUInt32BE(HEADER_YIADDR));
  const siaddr = ipText(buf.readUInt32BE(HEADER_SIADDR));
  const giaddr = ipText(buf.readUInt32BE(HEADER_GIADDR));
  const chaddr = Buffer.allocUnsafe(CHADDR_LEN);
  buf.copy(chaddr, 0, HEADER_CHADDR, HEADER_CHADDR + CHADDR_LEN);
  // RFC 2131 §3: the options field starts with the cookie; a plain BOOTP message (RFC 951) has none.
  if (buf.readUInt32BE(HEADER_COOKIE) !== MAGIC_COOKIE) throw fail('DHCP_BAD_COOKIE', 'no magic cookie 99.130.83.99', HEADER_COOKIE);

  // RFC 3396: the aggregate option buffer is the options field, then file, then sname.
  for (const code of SEEN_CODES) FIRST[code] = -1;
  SEEN_CODES.length = 0;
  entries = 0;
  overloadSeen = 0;
  gather(buf, HEADER_OPTIONS, buf.length, 'options');
  const overload = overloadSeen;
  if (overload & OVERLOAD_FILE) gather(buf, HEADER_FILE, HEADER_FILE + FILE_LEN, 'file');
  if (overload & OVERLOAD_SNAME) gather(buf, HEADER_SNAME, HEADER_SNAME + SNAME_LEN, 'sname');

  const options: DhcpOptions = { other: new Map() };
  // First appearance order: SEEN_CODES lists codes as their first instance was found.
  const codes = SEEN_CODES.length;
  for (let k = 0; k < codes; k++) {
    const code = SEEN_CODES[k]!;
    const e = FIRST[code]!;
    try {
      if (E_NEXT[e] === -1) {
        decodeOptionAt(options, code, buf, E_START[e]!, E_END[e]!);
      } else {
        const parts: Buffer[] = [];
        for (let i = e; i !== -1; i = E_NEXT[i]!) parts.push(buf.subarray(E_START[i]!, E_END[i]!));
        const data = Buffer.concat(parts);
        decodeOptionAt(options, code, data, 0, data.length);
      }
    } catch (err) {
      if (!(err instanceof OptionError)) throw err;
      const offset = err.at === undefined ? E_START[e]! - 2 : wireOffset(e, err.at);
      throw fail('DHCP_BAD_OPTION', `option ${code}: ${err.message}`, offset, code);
    }
  }

  return {
    op,
    htype,
    hlen,
    hops,
    xid,
    secs,
    flags,
    ciaddr,
    yiaddr,
    siaddr,
    giaddr,
    chaddr,
    sname: overload & OVERLOAD_SNAME ? '' : cString(buf, HEADER_SNAME, SNAME_LEN),
    file: overload & OVERLOAD_FILE ? '' : cString(buf, HEADER_FILE, FILE_LEN),
    options,
  };
}

// ---- encoding ----

export interface EncodeOptions {
  /**
   * The largest message the receiver accepts, as an IP datagram size like option 57 (RFC 2132 §9.10: the
   * IP and UDP headers count), so the UDP payload is at most maxSize - 28. Default and floor 576 (RFC 2131 §2:
   * every client takes that; option 57 values below it are not legal and are raised to it).
   */
  maxSize?: number;
}

function checkInt(field: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new TypeError(`DHCP header ${field}: ${v} is not 0..${max}`);
}

function writeIp(out: Buffer, at: number, field: string, text: string): void {
  const n = text === '0.0.0.0' ? 0 : parseIPv4(text);
  if (n === undefined) throw new TypeError(`DHCP header ${field}: ${JSON.stringify(text)} is not an IPv4 address`);
  out.writeUInt32BE(n, at);
}

function writeText(out: Buffer, at: number, len: number, field: string, text: string): void {
  if (typeof text !== 'string' || (text !== '' && /[^\x00-\xff]/.test(text))) throw new TypeError(`DHCP header ${field}: not latin1 text`);
  // A string filling the whole field has no NUL; the decoder stops at the field end.
  if (text.length > len) throw new TypeError(`DHCP header ${field}: ${text.length} octets do not fit ${len}`);
  out.write(text, at, text.length, 'latin1');
}

/** Writes one option instance (code, length, data[start, end)) at `at`; returns the next position. */
function putInstance(out: Buffer, at: number, code: number, data: Buffer, start: number, end: number): number {
  out[at] = code;
  out[at + 1] = end - start;
  let p = at + 2;
  // Most values are a few octets: a loop beats Buffer#copy's call overhead there.
  if (end - start <= 32) for (let k = start; k < end; k++) out[p++] = data[k]!;
  else p += data.copy(out, p, start, end);
  return p;
}

/**
 * Encodes a message. Options go out 53, 54, then ascending, 82 last; values over 255 octets are split into
 * several instances (RFC 3396). When they do not fit `maxSize`, they overflow into `file`, then `sname`
 * (option 52), if those are empty; if they still do not fit, or a value cannot be encoded, that is a caller
 * bug (TypeError).
 */
export function encodeDhcp(p: DhcpPacket, opts?: EncodeOptions): Buffer {
  if (p.op !== 1 && p.op !== 2) throw new TypeError(`DHCP header op: ${String(p.op)} is not 1 or 2`);
  checkInt('htype', p.htype, 0xff);
  checkInt('hlen', p.hlen, CHADDR_LEN);
  checkInt('hops', p.hops, 0xff);
  checkInt('xid', p.xid, 0xffffffff);
  checkInt('secs', p.secs, 0xffff);
  checkInt('flags', p.flags, 0xffff);
  if (!Buffer.isBuffer(p.chaddr) || p.chaddr.length > CHADDR_LEN) throw new TypeError('DHCP header chaddr: not a Buffer of at most 16 octets');
  const maxSize = opts?.maxSize ?? MIN_MAX_MESSAGE_SIZE;
  if (!Number.isInteger(maxSize) || maxSize < 0) throw new TypeError(`encodeDhcp: maxSize ${maxSize} is not an integer`);
  const payloadMax = Math.max(maxSize, MIN_MAX_MESSAGE_SIZE) - IP_UDP_HEADERS;

  // Instances: option k's value split into pieces of at most 255 octets (RFC 3396), as flat arrays (module scratch,
  // reused: encodeDhcp is never re-entered).
  const { codes, srcs, bounds, scratch } = encodeOptionParts(p.options);
  const instCode = INST_CODE;
  const instSrc = INST_SRC;
  const instStart = INST_START;
  const instEnd = INST_END;
  let n = 0;
  let total = 0;
  for (let k = 0; k < codes.length; k++) {
    const end = bounds[2 * k + 1]!;
    const src = srcs[k] ?? scratch;
    let at = bounds[2 * k]!;
    do {
      const stop = Math.min(end, at + 255);
      instCode[n] = codes[k]!;
      instSrc[n] = src;
      instStart[n] = at;
      instEnd[n] = stop;
      n++;
      total += 2 + stop - at;
      at = stop;
    } while (at < end);
  }

  // Which field each instance goes to: 0 options, 1 file, 2 sname.
  const fieldOf = n <= INST_FIELD.length ? INST_FIELD.fill(0, 0, n) : new Uint8Array(n);
  // Room for options in the options field, leaving one octet for End.
  const room = payloadMax - HEADER_OPTIONS - 1;
  let overload = 0;
  let optionsLength = total + 1;
  if (total > room) {
    const fileFree = p.file === '';
    const snameFree = p.sname === '';
    if (!fileFree && !snameFree) throw new TypeError(`encodeDhcp: ${total} octets of options do not fit ${room} and file and sname are in use`);
    // First fit, options field first with 3 octets kept for option 52 itself; each code's instances stay in
    // options -> file -> sname order so that the receiver joins them as they were split (RFC 3396).
    const rooms = [room - 3, fileFree ? FILE_LEN - 1 : -1, snameFree ? SNAME_LEN - 1 : -1];
    const lastField = new Uint8Array(256);
    optionsLength = 3 + 1;
    for (let i = 0; i < n; i++) {
      const need = 2 + instEnd[i]! - instStart[i]!;
      let f = lastField[instCode[i]!]!;
      while (f < 3 && rooms[f]! < need) f++;
      if (f === 3) throw new TypeError(`encodeDhcp: options do not fit ${payloadMax} octets even with file/sname overload`);
      rooms[f]! -= need;
      fieldOf[i] = f;
      lastField[instCode[i]!] = f;
      if (f === 0) optionsLength += need;
      else overload |= f === 1 ? OVERLOAD_FILE : OVERLOAD_SNAME;
    }
  }

  // QUIRK(firmware): a BOOTP message is 300 octets (RFC 951: the 64-octet vend field), and some PXE ROMs and
  // BOOTP relays drop shorter replies; pad with zeros up to it, as ISC dhcpd does (BOOTP_MIN_LEN).
  // Unzeroed and pooled (a reply is under Node's pool limit): a slice of a shared slab rather than a buffer of its
  // own for the GC to sweep. Every octet is written below: the header, zeros up to the options, the options, End,
  // then zeros to the end.
  const size = Math.max(HEADER_OPTIONS + optionsLength, BOOTP_MIN_LENGTH);
  const out = Buffer.allocUnsafe(size);
  out.fill(0, 0, HEADER_OPTIONS);
  out[HEADER_OP] = p.op;
  out[HEADER_HTYPE] = p.htype;
  out[HEADER_HLEN] = p.hlen;
  out[HEADER_HOPS] = p.hops;
  out.writeUInt32BE(p.xid, HEADER_XID);
  out.writeUInt16BE(p.secs, HEADER_SECS);
  out.writeUInt16BE(p.flags, HEADER_FLAGS);
  writeIp(out, HEADER_CIADDR, 'ciaddr', p.ciaddr);
  writeIp(out, HEADER_YIADDR, 'yiaddr', p.yiaddr);
  writeIp(out, HEADER_SIADDR, 'siaddr', p.siaddr);
  writeIp(out, HEADER_GIADDR, 'giaddr', p.giaddr);
  p.chaddr.copy(out, HEADER_CHADDR);
  if (!(overload & OVERLOAD_SNAME)) writeText(out, HEADER_SNAME, SNAME_LEN, 'sname', p.sname);
  if (!(overload & OVERLOAD_FILE)) writeText(out, HEADER_FILE, FILE_LEN, 'file', p.file);
  out.writeUInt32BE(MAGIC_COOKIE, HEADER_COOKIE);

  // Write positions per field; fields that carry no options keep their text.
  const pos: number[] = [HEADER_OPTIONS, HEADER_FILE, HEADER_SNAME];
  let i = 0;
  if (overload) {
    // 53 and 54 keep their places at the front; 52 follows them.
    while (i < n && i < 2 && (instCode[i] === OPTION_MESSAGE_TYPE || instCode[i] === OPTION_SERVER_ID)) {
      pos[0] = putInstance(out, pos[0]!, instCode[i]!, instSrc[i]!, instStart[i]!, instEnd[i]!);
      i++;
    }
    out[pos[0]!] = OPTION_OVERLOAD;
    out[pos[0]! + 1] = 1;
    out[pos[0]! + 2] = overload;
    pos[0]! += 3;
  }
  for (; i < n; i++) {
    const f = fieldOf[i]!;
    pos[f] = putInstance(out, pos[f]!, instCode[i]!, instSrc[i]!, instStart[i]!, instEnd[i]!);
  }
  out[pos[0]!] = END;
  out.fill(0, pos[0]! + 1);
  if (overload & OVERLOAD_FILE) out[pos[1]!] = END;
  if (overload & OVERLOAD_SNAME) out[pos[2]!] = END;
  // Drop the references to the caller's option values until the next call.
  instSrc.fill(EMPTY, 0, n);
  return out;
}

const EMPTY = Buffer.alloc(0);

// encodeDhcp's per-instance scratch (grown as needed; never shrunk: bounded by the largest message encoded).
const INST_CODE: number[] = [];
const INST_SRC: Buffer[] = [];
const INST_START: number[] = [];
const INST_END: number[] = [];
const INST_FIELD = new Uint8Array(256);

// ---- client identity ----

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Character codes of the two lower-case hex digits of each octet. */
const HEX_HI = Array.from({ length: 256 }, (_, i) => HEX[i]!.charCodeAt(0));
const HEX_LO = Array.from({ length: 256 }, (_, i) => HEX[i]!.charCodeAt(1));
const COLON = 58;

/** The hardware address, `hlen` octets of chaddr as lower-case colon hex ("52:54:00:12:34:56" for Ethernet). */
export function hwAddress(p: Pick<DhcpPacket, 'chaddr' | 'hlen'>): string {
  const n = Math.min(p.hlen, p.chaddr.length, CHADDR_LEN);
  if (n === 6) {
    // Ethernet, every request: one flat string (the loop below builds a rope that the lease pool's map lookups
    // then have to flatten).
    const c = p.chaddr;
    return String.fromCharCode(HEX_HI[c[0]!]!, HEX_LO[c[0]!]!, COLON, HEX_HI[c[1]!]!, HEX_LO[c[1]!]!, COLON, HEX_HI[c[2]!]!, HEX_LO[c[2]!]!, COLON,
      HEX_HI[c[3]!]!, HEX_LO[c[3]!]!, COLON, HEX_HI[c[4]!]!, HEX_LO[c[4]!]!, COLON, HEX_HI[c[5]!]!, HEX_LO[c[5]!]!);
  }
  let s = '';
  for (let i = 0; i < n; i++) s += i === 0 ? HEX[p.chaddr[i]!]! : `:${HEX[p.chaddr[i]!]!}`;
  return s;
}

/**
 * The key metalbox files a client under: the MAC for Ethernet (htype 1, hlen 6), exactly as `hwAddress`;
 * for any other hardware type `"<htype>/<hwAddress>"`, so it can never collide with a MAC.
 */
export function clientKey(p: Pick<DhcpPacket, 'chaddr' | 'hlen' | 'htype'>): string {
  const hw = hwAddress(p);
  return p.htype === 1 && p.hlen === 6 ? hw : `${p.htype}/${hw}`;
}
