// Typed values of the options metalbox uses (RFC 2132 unless noted), decoded from and encoded to the
// option data after RFC 3396 concatenation. Splitting, overload and the option framing live in packet.ts.
import { formatIPv4, parseIPv4 } from '../../lib/ipv4.ts';
import { ByteReader } from '../../lib/bytes.ts';
import { MetalboxError } from '../../lib/errors.ts';
import { MESSAGE_TYPE, OPTION, RELAY_AGENT_SUBOPTION, type MessageType } from './constants.ts';
import { decodeNameList, encodeNameList } from './domain-names.ts';
import type { ClasslessRoute, DhcpOptions, RelayAgentInfo } from './types.ts';

/**
 * Thrown by the option decoders for data their type does not allow; decodeDhcp turns it into DHCP_BAD_OPTION
 * with the wire offset (`at` is an offset inside the option's concatenated data).
 */
export class OptionError extends Error {
  readonly at: number | undefined;

  constructor(reason: string, at?: number) {
    super(reason);
    this.name = 'OptionError';
    this.at = at;
  }
}

const MAX_MESSAGE_TYPE = MESSAGE_TYPE.INFORM;

function ip(data: Buffer, at: number): string {
  return formatIPv4(data.readUInt32BE(at));
}

function exactly(data: Buffer, n: number): void {
  if (data.length !== n) throw new OptionError(`length ${data.length}, expected ${n}`);
}

function ip4(data: Buffer): string {
  exactly(data, 4);
  return ip(data, 0);
}

function u16(data: Buffer): number {
  exactly(data, 2);
  return data.readUInt16BE(0);
}

function u32(data: Buffer): number {
  exactly(data, 4);
  return data.readUInt32BE(0);
}

function ipList(data: Buffer): string[] {
  if (data.length === 0 || data.length % 4 !== 0) throw new OptionError(`length ${data.length} is not a positive multiple of 4`);
  const out = new Array<string>(data.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = ip(data, i * 4);
  return out;
}

/** RFC 2132 §2: NVT ASCII options "SHOULD NOT include a trailing NULL", and the receiver MUST delete them. */
function nvt(data: Buffer): string {
  let end = data.length;
  while (end > 0 && data[end - 1] === 0) end--;
  return data.toString('latin1', 0, end);
}

const subOptionOverrun = (offset: number): OptionError => new OptionError('sub-option runs past the end', offset);
const routeOverrun = (offset: number): OptionError => new OptionError('route runs past the end', offset);

/**
 * RFC 3004 §2: a list of (length, class) items, each length at least 1. QUIRK(ipxe): iPXE (and some firmware)
 * sends the bare string "iPXE"; data that does not parse exactly as a list is taken as one such raw item.
 */
function userClass(o: DhcpOptions, data: Buffer): void {
  const items: string[] = [];
  let i = 0;
  while (i < data.length) {
    const len = data[i]!;
    if (len === 0 || i + 1 + len > data.length) {
      o.userClass = [data.toString('latin1')];
      o.userClassRaw = true;
      return;
    }
    items.push(data.toString('latin1', i + 1, i + 1 + len));
    i += 1 + len;
  }
  o.userClass = items;
}

/** RFC 3046 §2.0: sub-options are (code, length, value) with no pad or end; they must fill the option exactly. */
function relayAgent(data: Buffer): RelayAgentInfo {
  const info: RelayAgentInfo = { other: [] };
  const r = new ByteReader(data, { fail: subOptionOverrun });
  while (!r.atEnd()) {
    const code = r.u8();
    const value = r.copy(r.u8());
    if (code === RELAY_AGENT_SUBOPTION.CIRCUIT_ID && info.circuitId === undefined) info.circuitId = value;
    else if (code === RELAY_AGENT_SUBOPTION.REMOTE_ID && info.remoteId === undefined) info.remoteId = value;
    else info.other.push([code, value]);
  }
  return info;
}

/** RFC 3442 §3: (width, significant destination octets, router) per route. */
function classlessRoutes(data: Buffer): ClasslessRoute[] {
  const routes: ClasslessRoute[] = [];
  const r = new ByteReader(data, { fail: routeOverrun });
  while (!r.atEnd()) {
    const at = r.offset;
    const prefix = r.u8();
    if (prefix > 32) throw new OptionError(`route prefix /${prefix} is longer than 32`, at);
    const significant = (prefix + 7) >> 3;
    const dest = Buffer.alloc(4);
    r.bytes(significant).copy(dest);
    routes.push({ destination: ip(dest, 0), prefix, router: formatIPv4(r.u32()) });
  }
  return routes;
}

type Decoder = (o: DhcpOptions, data: Buffer) => void;

/** Decoders by option code, built once: dispatch is one array load per option. */
const DECODERS: (Decoder | undefined)[] = new Array<Decoder | undefined>(256).fill(undefined);
const def = (code: number, f: Decoder): void => {
  DECODERS[code] = f;
};
def(OPTION.SUBNET_MASK, (o, d) => { o.subnetMask = ip4(d); });
def(OPTION.ROUTER, (o, d) => { o.routers = ipList(d); });
def(OPTION.DNS_SERVERS, (o, d) => { o.dnsServers = ipList(d); });
def(OPTION.HOSTNAME, (o, d) => { o.hostname = nvt(d); });
def(OPTION.DOMAIN_NAME, (o, d) => { o.domainName = nvt(d); });
def(OPTION.INTERFACE_MTU, (o, d) => { o.mtu = u16(d); });
def(OPTION.BROADCAST, (o, d) => { o.broadcastAddress = ip4(d); });
def(OPTION.NTP_SERVERS, (o, d) => { o.ntpServers = ipList(d); });
def(OPTION.VENDOR_SPECIFIC, (o, d) => { o.vendorSpecific = Buffer.from(d); });
def(OPTION.REQUESTED_IP, (o, d) => { o.requestedIp = ip4(d); });
def(OPTION.LEASE_TIME, (o, d) => { o.leaseTime = u32(d); });
def(OPTION.MESSAGE_TYPE, (o, d) => {
  exactly(d, 1);
  const t = d[0]!;
  if (t < 1 || t > MAX_MESSAGE_TYPE) throw new OptionError(`unknown message type ${t}`);
  o.messageType = t as MessageType;
});
def(OPTION.SERVER_ID, (o, d) => { o.serverId = ip4(d); });
def(OPTION.PARAMETER_LIST, (o, d) => { o.parameterList = Array.from(d); });
def(OPTION.MAX_MESSAGE_SIZE, (o, d) => { o.maxMessageSize = u16(d); });
def(OPTION.RENEWAL_TIME, (o, d) => { o.renewalTime = u32(d); });
def(OPTION.REBINDING_TIME, (o, d) => { o.rebindingTime = u32(d); });
def(OPTION.VENDOR_CLASS, (o, d) => { o.vendorClass = d.toString('latin1'); });
def(OPTION.CLIENT_ID, (o, d) => { o.clientId = Buffer.from(d); });
def(OPTION.TFTP_SERVER, (o, d) => { o.tftpServer = nvt(d); });
def(OPTION.BOOTFILE, (o, d) => { o.bootfile = nvt(d); });
def(OPTION.USER_CLASS, userClass);
def(OPTION.RELAY_AGENT, (o, d) => { o.relayAgent = relayAgent(d); });
def(OPTION.CLIENT_ARCH, (o, d) => {
  // RFC 4578 §2.1: "an even number greater than zero".
  if (d.length === 0 || d.length % 2 !== 0) throw new OptionError(`length ${d.length} is not a positive even number`);
  const archs = new Array<number>(d.length / 2);
  for (let i = 0; i < archs.length; i++) archs[i] = d.readUInt16BE(i * 2);
  o.clientArch = archs;
});
def(OPTION.CLIENT_NDI, (o, d) => {
  exactly(d, 3); // RFC 4578 §2.2
  o.clientNdi = { type: d[0]!, major: d[1]!, minor: d[2]! };
});
def(OPTION.CLIENT_UUID, (o, d) => {
  // RFC 4578 §2.3 says type 0 and 16 octets; any id length is kept so odd firmware still round-trips.
  if (d.length === 0) throw new OptionError('length 0, expected a type octet and an id');
  o.clientUuid = { type: d[0]!, id: Buffer.from(d.subarray(1)) };
});
def(OPTION.DOMAIN_SEARCH, (o, d) => { o.domainSearch = decodeNameList(d, (at, reason) => new OptionError(reason, at)); });
def(OPTION.CLASSLESS_ROUTES, (o, d) => { o.classlessRoutes = classlessRoutes(d); });
def(OPTION.IPXE_ENCAP, (o, d) => { o.ipxe = Buffer.from(d); });

/**
 * Decodes one option's (concatenated) data into its typed field, or into `other`. Throws OptionError when the
 * length or content is not allowed for the type.
 */
export function decodeOptionInto(o: DhcpOptions, code: number, data: Buffer): void {
  decodeOptionAt(o, code, data, 0, data.length);
}

/** A copy of buf[start, end) that owns its bytes (pooled when small, like Buffer.from). */
function copyOf(buf: Buffer, start: number, end: number): Buffer {
  const out = Buffer.allocUnsafe(end - start);
  buf.copy(out, 0, start, end);
  return out;
}

/**
 * decodeOptionInto for the data buf[start, end), without a Buffer view for the options every request carries
 * (message type, requested address, server id, parameter list, ...): each is read in place, with the same checks
 * and errors as its DECODERS entry. The rest go to DECODERS.
 */
export function decodeOptionAt(o: DhcpOptions, code: number, buf: Buffer, start: number, end: number): void {
  const len = end - start;
  switch (code) {
    case OPTION.MESSAGE_TYPE: {
      if (len !== 1) throw new OptionError(`length ${len}, expected 1`);
      const t = buf[start]!;
      if (t < 1 || t > MAX_MESSAGE_TYPE) throw new OptionError(`unknown message type ${t}`);
      o.messageType = t as MessageType;
      return;
    }
    case OPTION.REQUESTED_IP:
      if (len !== 4) throw new OptionError(`length ${len}, expected 4`);
      o.requestedIp = formatIPv4(buf.readUInt32BE(start));
      return;
    case OPTION.SERVER_ID:
      if (len !== 4) throw new OptionError(`length ${len}, expected 4`);
      o.serverId = formatIPv4(buf.readUInt32BE(start));
      return;
    case OPTION.PARAMETER_LIST: {
      const list = new Array<number>(len);
      for (let i = 0; i < len; i++) list[i] = buf[start + i]!;
      o.parameterList = list;
      return;
    }
    case OPTION.MAX_MESSAGE_SIZE:
      if (len !== 2) throw new OptionError(`length ${len}, expected 2`);
      o.maxMessageSize = buf.readUInt16BE(start);
      return;
    case OPTION.LEASE_TIME:
      if (len !== 4) throw new OptionError(`length ${len}, expected 4`);
      o.leaseTime = buf.readUInt32BE(start);
      return;
    case OPTION.CLIENT_ID:
      o.clientId = copyOf(buf, start, end);
      return;
  }
  const f = DECODERS[code];
  if (f !== undefined) f(o, start === 0 && end === buf.length ? buf : buf.subarray(start, end));
  else o.other.set(code, copyOf(buf, start, end));
}

// ---- encoding ----


/**
 * Where the typed option values are written: like lib/bytes ByteWriter (same checks), but reset and reused for every
 * message (encodeOptionParts), so encoding a reply allocates no writer and no buffer for its options.
 */
class OptionWriter {
  buf = Buffer.allocUnsafeSlow(2048);
  private pos = 0;

  get length(): number {
    return this.pos;
  }

  reset(): void {
    this.pos = 0;
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafeSlow(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new TypeError(`OptionWriter.u8: ${v} is not an octet`);
    this.reserve(1);
    this.buf[this.pos++] = v;
    return this;
  }

  u16(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new TypeError(`OptionWriter.u16: ${v} is out of range`);
    this.reserve(2);
    this.buf.writeUInt16BE(v, this.pos);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new TypeError(`OptionWriter.u32: ${v} is out of range`);
    this.reserve(4);
    this.buf.writeUInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.reserve(b.length);
    // Most values are a few octets: a loop beats TypedArray#set's call overhead there.
    if (b.length <= 32) for (let i = 0; i < b.length; i++) this.buf[this.pos + i] = b[i]!;
    else this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** Latin1 text, one byte per character; a character above U+00FF is a caller bug. */
  latin1(s: string): this {
    if (/[^\x00-\xff]/.test(s)) throw new TypeError(`OptionWriter.latin1: ${JSON.stringify(s)} has characters above U+00FF`);
    this.reserve(s.length);
    this.buf.write(s, this.pos, s.length, 'latin1');
    this.pos += s.length;
    return this;
  }
}

function bad(field: string, why: string): TypeError {
  return new TypeError(`DHCP option ${field}: ${why}`);
}

function writeIp(w: OptionWriter, field: string, text: string): void {
  const n = parseIPv4(text);
  if (n === undefined) throw bad(field, `${JSON.stringify(text)} is not an IPv4 address`);
  w.u32(n);
}

function writeIpList(w: OptionWriter, field: string, list: readonly string[]): void {
  if (!Array.isArray(list) || list.length === 0) throw bad(field, 'empty list (omit the field instead)');
  for (const a of list) writeIp(w, field, a);
}

function writeUint(w: OptionWriter, field: string, v: number, bytes: 1 | 2 | 4): void {
  if (!Number.isInteger(v) || v < 0 || v >= 2 ** (bytes * 8)) throw bad(field, `${v} does not fit ${bytes * 8} bits`);
  if (bytes === 1) w.u8(v);
  else if (bytes === 2) w.u16(v);
  else w.u32(v);
}

function writeLatin1(w: OptionWriter, field: string, s: string): void {
  if (typeof s !== 'string' || /[^\x00-\xff]/.test(s)) throw bad(field, `${JSON.stringify(s)} is not latin1 text`);
  w.latin1(s);
}

function writeBuffer(w: OptionWriter, field: string, b: Buffer): void {
  if (!Buffer.isBuffer(b)) throw bad(field, 'not a Buffer');
  w.bytes(b);
}

function writeOctets(w: OptionWriter, field: string, list: readonly number[]): void {
  for (const v of list) writeUint(w, field, v, 1);
}

function writeUserClass(w: OptionWriter, items: readonly string[], o: DhcpOptions): void {
  if (o.userClassRaw) {
    if (items.length !== 1) throw bad('userClass', 'userClassRaw needs exactly one item');
    writeLatin1(w, 'userClass', items[0]!);
    return;
  }
  for (const item of items) {
    if (typeof item !== 'string' || item.length < 1 || item.length > 255) throw bad('userClass', `item ${JSON.stringify(item)} is not 1..255 octets (RFC 3004)`);
    w.u8(item.length);
    writeLatin1(w, 'userClass', item);
  }
}

function writeSubOption(w: OptionWriter, code: number, value: Buffer): void {
  writeUint(w, 'relayAgent', code, 1);
  if (!Buffer.isBuffer(value) || value.length > 255) throw bad('relayAgent', `sub-option ${code} is not a Buffer of at most 255 octets`);
  w.u8(value.length).bytes(value);
}

function writeRelayAgent(w: OptionWriter, info: RelayAgentInfo): void {
  if (info.circuitId !== undefined) writeSubOption(w, RELAY_AGENT_SUBOPTION.CIRCUIT_ID, info.circuitId);
  if (info.remoteId !== undefined) writeSubOption(w, RELAY_AGENT_SUBOPTION.REMOTE_ID, info.remoteId);
  for (const [code, value] of info.other) writeSubOption(w, code, value);
}

function writeRoutes(w: OptionWriter, routes: readonly ClasslessRoute[]): void {
  for (const r of routes) {
    if (!Number.isInteger(r.prefix) || r.prefix < 0 || r.prefix > 32) throw bad('classlessRoutes', `prefix ${r.prefix} is not 0..32`);
    const dest = parseIPv4(r.destination);
    if (dest === undefined) throw bad('classlessRoutes', `${JSON.stringify(r.destination)} is not an IPv4 address`);
    const significant = (r.prefix + 7) >> 3;
    // RFC 3442 §3 sends only the significant octets; anything set beyond them would be lost.
    if (significant < 4 && dest % 2 ** (8 * (4 - significant)) !== 0) throw bad('classlessRoutes', `${r.destination}/${r.prefix} has bits set past the prefix octets`);
    w.u8(r.prefix);
    for (let i = 0; i < significant; i++) w.u8((dest >>> (24 - 8 * i)) & 0xff);
    writeIp(w, 'classlessRoutes', r.router);
  }
}

function writeClientArch(w: OptionWriter, v: readonly number[]): void {
  if (!Array.isArray(v) || v.length === 0) throw bad('clientArch', 'empty list (omit the field instead)');
  for (const a of v) writeUint(w, 'clientArch', a, 2);
}

/**
 * Option values written back to back into `data`: option i is `codes[i]` with the octets
 * `data[bounds[2i], bounds[2i+1])`, in wire order.
 */
export interface EncodedOptions {
  data: Buffer;
  codes: number[];
  bounds: number[];
}

/** Raw codes of an `other` map, validated and sorted, and which of 53/54/82 it holds (see rawCodes). */
interface RawOrder { codes: number[]; size: number; special: number }
const RAW_ORDER = new WeakMap<Map<number, Buffer>, RawOrder>();

/** Which of 53, 54, 82 a map holds, as bits. */
function specialBits(other: Map<number, Buffer>): number {
  return (other.has(OPTION.MESSAGE_TYPE) ? 1 : 0) | (other.has(OPTION.SERVER_ID) ? 2 : 0) | (other.has(OPTION.RELAY_AGENT) ? 4 : 0);
}

/**
 * The raw option codes to send from `other`, ascending, without 53, 54 and 82 (written in their own places). A map
 * sent again (the subnet's pre-encoded options go into every reply) reuses its last answer when its keys are
 * provably the same: same size, same 53/54/82, and every code of the last answer still there.
 */
function rawCodes(other: Map<number, Buffer>): number[] {
  const cached = RAW_ORDER.get(other);
  if (cached !== undefined && cached.size === other.size && cached.special === specialBits(other)) {
    let same = true;
    for (const code of cached.codes) if (!other.has(code)) { same = false; break; }
    if (same) return cached.codes;
  }
  const raws: number[] = [];
  for (const code of other.keys()) {
    if (!Number.isInteger(code) || code < 1 || code > 254 || code === OPTION.OVERLOAD) throw bad('other', `code ${code} cannot be sent as a raw option`);
    if (code !== OPTION.MESSAGE_TYPE && code !== OPTION.SERVER_ID && code !== OPTION.RELAY_AGENT) raws.push(code);
  }
  raws.sort((a, b) => a - b);
  RAW_ORDER.set(other, { codes: raws, size: other.size, special: specialBits(other) });
  return raws;
}

/**
 * The options of one message, in wire order (see encodeOptionParts): option i is `codes[i]`, its value the octets
 * `srcs[i][bounds[2i], bounds[2i+1])`, where a null src means `scratch` (typed values are written there; raw values
 * from `other` are not copied, just referenced). Valid until the next encodeOptionParts call.
 */
export interface OptionParts {
  codes: number[];
  srcs: (Buffer | null)[];
  bounds: number[];
  scratch: Buffer;
}

// The encoder's state (never re-entered: nothing it calls calls back). The arrays are reused: encodeOptionParts'
// result lives until its next call.
const WRITER = new OptionWriter();
const PARTS: OptionParts = { codes: [], srcs: [], bounds: [], scratch: WRITER.buf };
let RAWS: readonly number[] = [];
let R = 0;
let OTHER: Map<number, Buffer> | undefined;

/** Adds a raw value (not copied). */
function rawPart(code: number, value: Buffer): void {
  if (!Buffer.isBuffer(value)) throw bad('other', 'not a Buffer');
  PARTS.codes.push(code);
  PARTS.srcs.push(value);
  PARTS.bounds.push(0, value.length);
}

/** Adds the raw options below `code` (they go before it), then fails if `code` is also raw. */
function rawsBefore(code: number): void {
  while (R < RAWS.length && RAWS[R]! < code) {
    const c = RAWS[R++]!;
    rawPart(c, OTHER!.get(c)!);
  }
  if (R < RAWS.length && RAWS[R] === code) throw bad('other', `code ${code} is also set as a typed field`);
}

/** Starts typed option `code`: raw ones below it first; returns where its value starts in the writer. */
function open(code: number): number {
  rawsBefore(code);
  PARTS.codes.push(code);
  PARTS.srcs.push(null);
  return WRITER.length;
}

function close(start: number): void {
  PARTS.bounds.push(start, WRITER.length);
}

/**
 * The options to send, in wire order: 53 first, then 54, then the rest ascending by code, 82 last (RFC 3046
 * §2.1: the relay agent option is the last one before End). Throws TypeError on values that would not
 * decode back to themselves (caller bugs). Each typed field is read by name, in code order (a loop over the
 * field names was a megamorphic keyed load per field per packet). The result is reused by the next call.
 */
export function encodeOptionParts(o: DhcpOptions): OptionParts {
  const w = WRITER;
  w.reset();
  PARTS.codes.length = 0;
  PARTS.srcs.length = 0;
  PARTS.bounds.length = 0;
  RAWS = [];
  R = 0;
  OTHER = undefined;
  const other = o.other;
  if (!(other instanceof Map)) throw bad('other', 'not a Map');

  if (other.size > 0) {
    if (o.messageType !== undefined && other.has(OPTION.MESSAGE_TYPE)) throw bad('other', `code ${OPTION.MESSAGE_TYPE} is also set as a typed field`);
    if (o.serverId !== undefined && other.has(OPTION.SERVER_ID)) throw bad('other', `code ${OPTION.SERVER_ID} is also set as a typed field`);
    if (o.relayAgent !== undefined && other.has(OPTION.RELAY_AGENT)) throw bad('other', `code ${OPTION.RELAY_AGENT} is also set as a typed field`);
  }

  // 53, then 54: typed, or raw from `other`.
  let at: number;
  if (o.messageType !== undefined) {
    if (!Number.isInteger(o.messageType) || o.messageType < 1 || o.messageType > MAX_MESSAGE_TYPE) throw bad('messageType', `${o.messageType} is not 1..8`);
    at = open(OPTION.MESSAGE_TYPE);
    w.u8(o.messageType);
    close(at);
  } else if (other.has(OPTION.MESSAGE_TYPE)) {
    rawPart(OPTION.MESSAGE_TYPE, other.get(OPTION.MESSAGE_TYPE)!);
  }
  if (o.serverId !== undefined) {
    at = open(OPTION.SERVER_ID);
    writeIp(w, 'serverId', o.serverId);
    close(at);
  } else if (other.has(OPTION.SERVER_ID)) {
    rawPart(OPTION.SERVER_ID, other.get(OPTION.SERVER_ID)!);
  }

  // Raw options other than 53, 54 and 82, ascending, merged with the typed fields.
  if (other.size > 0) {
    RAWS = rawCodes(other);
    OTHER = other;
  }
  if (o.subnetMask !== undefined) { at = open(OPTION.SUBNET_MASK); writeIp(w, 'subnetMask', o.subnetMask); close(at); }
  if (o.routers !== undefined) { at = open(OPTION.ROUTER); writeIpList(w, 'routers', o.routers); close(at); }
  if (o.dnsServers !== undefined) { at = open(OPTION.DNS_SERVERS); writeIpList(w, 'dnsServers', o.dnsServers); close(at); }
  if (o.hostname !== undefined) { at = open(OPTION.HOSTNAME); writeLatin1(w, 'hostname', o.hostname); close(at); }
  if (o.domainName !== undefined) { at = open(OPTION.DOMAIN_NAME); writeLatin1(w, 'domainName', o.domainName); close(at); }
  if (o.mtu !== undefined) { at = open(OPTION.INTERFACE_MTU); writeUint(w, 'mtu', o.mtu, 2); close(at); }
  if (o.broadcastAddress !== undefined) { at = open(OPTION.BROADCAST); writeIp(w, 'broadcastAddress', o.broadcastAddress); close(at); }
  if (o.ntpServers !== undefined) { at = open(OPTION.NTP_SERVERS); writeIpList(w, 'ntpServers', o.ntpServers); close(at); }
  if (o.vendorSpecific !== undefined) { at = open(OPTION.VENDOR_SPECIFIC); writeBuffer(w, 'vendorSpecific', o.vendorSpecific); close(at); }
  if (o.requestedIp !== undefined) { at = open(OPTION.REQUESTED_IP); writeIp(w, 'requestedIp', o.requestedIp); close(at); }
  if (o.leaseTime !== undefined) { at = open(OPTION.LEASE_TIME); writeUint(w, 'leaseTime', o.leaseTime, 4); close(at); }
  if (o.parameterList !== undefined) { at = open(OPTION.PARAMETER_LIST); writeOctets(w, 'parameterList', o.parameterList); close(at); }
  if (o.maxMessageSize !== undefined) { at = open(OPTION.MAX_MESSAGE_SIZE); writeUint(w, 'maxMessageSize', o.maxMessageSize, 2); close(at); }
  if (o.renewalTime !== undefined) { at = open(OPTION.RENEWAL_TIME); writeUint(w, 'renewalTime', o.renewalTime, 4); close(at); }
  if (o.rebindingTime !== undefined) { at = open(OPTION.REBINDING_TIME); writeUint(w, 'rebindingTime', o.rebindingTime, 4); close(at); }
  if (o.vendorClass !== undefined) { at = open(OPTION.VENDOR_CLASS); writeLatin1(w, 'vendorClass', o.vendorClass); close(at); }
  if (o.clientId !== undefined) { at = open(OPTION.CLIENT_ID); writeBuffer(w, 'clientId', o.clientId); close(at); }
  if (o.tftpServer !== undefined) { at = open(OPTION.TFTP_SERVER); writeLatin1(w, 'tftpServer', o.tftpServer); close(at); }
  if (o.bootfile !== undefined) { at = open(OPTION.BOOTFILE); writeLatin1(w, 'bootfile', o.bootfile); close(at); }
  if (o.userClass !== undefined) { at = open(OPTION.USER_CLASS); writeUserClass(w, o.userClass, o); close(at); }
  if (o.clientArch !== undefined) { at = open(OPTION.CLIENT_ARCH); writeClientArch(w, o.clientArch); close(at); }
  if (o.clientNdi !== undefined) { const v = o.clientNdi; at = open(OPTION.CLIENT_NDI); writeOctets(w, 'clientNdi', [v.type, v.major, v.minor]); close(at); }
  if (o.clientUuid !== undefined) {
    const v = o.clientUuid;
    at = open(OPTION.CLIENT_UUID);
    writeUint(w, 'clientUuid', v.type, 1);
    writeBuffer(w, 'clientUuid', v.id);
    close(at);
  }
  if (o.domainSearch !== undefined) { at = open(OPTION.DOMAIN_SEARCH); w.bytes(encodeNameList(o.domainSearch)); close(at); }
  if (o.classlessRoutes !== undefined) { at = open(OPTION.CLASSLESS_ROUTES); writeRoutes(w, o.classlessRoutes); close(at); }
  if (o.ipxe !== undefined) { at = open(OPTION.IPXE_ENCAP); writeBuffer(w, 'ipxe', o.ipxe); close(at); }
  rawsBefore(256);
  RAWS = [];
  OTHER = undefined;

  // 82 last (RFC 3046 §2.1).
  if (o.relayAgent !== undefined) {
    at = open(OPTION.RELAY_AGENT);
    writeRelayAgent(w, o.relayAgent);
    close(at);
  } else if (other.has(OPTION.RELAY_AGENT)) {
    rawPart(OPTION.RELAY_AGENT, other.get(OPTION.RELAY_AGENT)!);
  }
  PARTS.scratch = w.buf;
  return PARTS;
}

/** encodeOptionParts' result copied into one Buffer of its own: option i is `data[bounds[2i], bounds[2i+1])`. */
export function encodeOptionValues(o: DhcpOptions): EncodedOptions {
  const { codes, srcs, bounds, scratch } = encodeOptionParts(o);
  let total = 0;
  for (let k = 0; k < codes.length; k++) total += bounds[2 * k + 1]! - bounds[2 * k]!;
  const data = Buffer.alloc(total);
  const out: number[] = [];
  let at = 0;
  for (let k = 0; k < codes.length; k++) {
    const start = at;
    at += (srcs[k] ?? scratch).copy(data, at, bounds[2 * k], bounds[2 * k + 1]);
    out.push(start, at);
  }
  return { data, codes: [...codes], bounds: out };
}

/**
 * Typed option values encoded once, as raw values by code: for `DhcpOptions.other` of replies that repeat
 * them (a subnet's router, DNS, NTP, domain and search list go into every reply on it). Encoding them for each
 * packet was a tenth of a DHCP server's time under load. Same validation as encodeDhcp (TypeError).
 */
export function encodeOptionMap(o: Omit<DhcpOptions, 'other'>): Map<number, Buffer> {
  const { data, codes, bounds } = encodeOptionValues({ ...o, other: new Map() });
  const out = new Map<number, Buffer>();
  // Copied out: each value is a Buffer of its own, not a view that keeps the others alive.
  codes.forEach((code, k) => out.set(code, Buffer.from(data.subarray(bounds[2 * k], bounds[2 * k + 1]))));
  return out;
}

// ---- encapsulated options (43 for PXE, 175 for iPXE) ----

/**
 * Decodes encapsulated sub-options (RFC 2132 §8.4 format: code, length, value; 0 is pad, 255 ends).
 * Repeated codes are concatenated in order (RFC 3396 applied one level down). A sub-option running past the
 * end is DHCP_BAD_OPTION with the offset inside `buf` and the enclosing option code in `details.option`.
 */
export function decodeEncapsulated(buf: Buffer, option: number = OPTION.VENDOR_SPECIFIC): Map<number, Buffer> {
  const parts = new Map<number, Buffer[]>();
  const r = new ByteReader(buf, {
    fail: (offset) => new MetalboxError('DHCP_BAD_OPTION', `DHCP option ${option}: sub-option at offset ${offset} runs past the end`, { details: { offset, option } }),
  });
  while (!r.atEnd()) {
    const code = r.u8();
    if (code === 0) continue;
    if (code === 255) break;
    const value = r.bytes(r.u8());
    const list = parts.get(code);
    if (list === undefined) parts.set(code, [value]);
    else list.push(value);
  }
  const out = new Map<number, Buffer>();
  for (const [code, list] of parts) out.set(code, list.length === 1 ? Buffer.from(list[0]!) : Buffer.concat(list));
  return out;
}

/** iPXE's option 175: its encapsulated settings (feature flags such as 175.19 HTTP, 175.16 PXE extensions; 175.235 version). */
export function decodeIpxeEncap(buf: Buffer): Map<number, Buffer> {
  return decodeEncapsulated(buf, OPTION.IPXE_ENCAP);
}

/** Encodes sub-options in ascending code order (values over 255 octets split), then End (255), as PXE clients expect in 43. */
export function encodeEncapsulated(sub: ReadonlyMap<number, Buffer>): Buffer {
  const parts: Buffer[] = [];
  for (const code of [...sub.keys()].sort((a, b) => a - b)) {
    if (!Number.isInteger(code) || code < 1 || code > 254) throw new TypeError(`sub-option code ${code} is not 1..254`);
    const value = sub.get(code)!;
    for (let i = 0; i === 0 || i < value.length; i += 255) {
      const chunk = value.subarray(i, i + 255);
      parts.push(Buffer.from([code, chunk.length]), chunk);
    }
  }
  parts.push(Buffer.from([255]));
  return Buffer.concat(parts);
}
