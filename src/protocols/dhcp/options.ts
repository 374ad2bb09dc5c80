// Typed values of the options metalbox uses (RFC 2132 unless noted), decoded from and encoded to the
// option data after RFC 3396 concatenation. Splitting, overload and the option framing live in packet.ts.
import { formatIPv4, parseIPv4 } from '../../lib/ipv4.ts';
import { ByteReader, ByteWriter } from '../../lib/bytes.ts';
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
  const f = DECODERS[code];
  if (f !== undefined) f(o, data);
  else o.other.set(code, Buffer.from(data));
}

// ---- encoding ----


function bad(field: string, why: string): TypeError {
  return new TypeError(`DHCP option ${field}: ${why}`);
}

function writeIp(w: ByteWriter, field: string, text: string): void {
  const n = parseIPv4(text);
  if (n === undefined) throw bad(field, `${JSON.stringify(text)} is not an IPv4 address`);
  w.u32(n);
}

function writeIpList(w: ByteWriter, field: string, list: readonly string[]): void {
  if (!Array.isArray(list) || list.length === 0) throw bad(field, 'empty list (omit the field instead)');
  for (const a of list) writeIp(w, field, a);
}

function writeUint(w: ByteWriter, field: string, v: number, bytes: 1 | 2 | 4): void {
  if (!Number.isInteger(v) || v < 0 || v >= 2 ** (bytes * 8)) throw bad(field, `${v} does not fit ${bytes * 8} bits`);
  if (bytes === 1) w.u8(v);
  else if (bytes === 2) w.u16(v);
  else w.u32(v);
}

function writeLatin1(w: ByteWriter, field: string, s: string): void {
  if (typeof s !== 'string' || /[^\x00-\xff]/.test(s)) throw bad(field, `${JSON.stringify(s)} is not latin1 text`);
  w.latin1(s);
}

function writeBuffer(w: ByteWriter, field: string, b: Buffer): void {
  if (!Buffer.isBuffer(b)) throw bad(field, 'not a Buffer');
  w.bytes(b);
}

function writeOctets(w: ByteWriter, field: string, list: readonly number[]): void {
  for (const v of list) writeUint(w, field, v, 1);
}

function writeUserClass(w: ByteWriter, items: readonly string[], o: DhcpOptions): void {
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

function writeSubOption(w: ByteWriter, code: number, value: Buffer): void {
  writeUint(w, 'relayAgent', code, 1);
  if (!Buffer.isBuffer(value) || value.length > 255) throw bad('relayAgent', `sub-option ${code} is not a Buffer of at most 255 octets`);
  w.u8(value.length).bytes(value);
}

function writeRelayAgent(w: ByteWriter, info: RelayAgentInfo): void {
  if (info.circuitId !== undefined) writeSubOption(w, RELAY_AGENT_SUBOPTION.CIRCUIT_ID, info.circuitId);
  if (info.remoteId !== undefined) writeSubOption(w, RELAY_AGENT_SUBOPTION.REMOTE_ID, info.remoteId);
  for (const [code, value] of info.other) writeSubOption(w, code, value);
}

function writeRoutes(w: ByteWriter, routes: readonly ClasslessRoute[]): void {
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

type Writer<V> = (w: ByteWriter, value: V, o: DhcpOptions) => void;

interface Field {
  code: number;
  key: keyof DhcpOptions;
  write: Writer<never>;
}

function field<K extends keyof DhcpOptions>(code: number, key: K, write: Writer<NonNullable<DhcpOptions[K]>>): Field {
  return { code, key, write: write as Writer<never> };
}

/** Typed fields ascending by code, except 53 and 54 (written first) and 82 (written last). */
const FIELDS: readonly Field[] = [
  field(OPTION.SUBNET_MASK, 'subnetMask', (w, v) => writeIp(w, 'subnetMask', v)),
  field(OPTION.ROUTER, 'routers', (w, v) => writeIpList(w, 'routers', v)),
  field(OPTION.DNS_SERVERS, 'dnsServers', (w, v) => writeIpList(w, 'dnsServers', v)),
  field(OPTION.HOSTNAME, 'hostname', (w, v) => writeLatin1(w, 'hostname', v)),
  field(OPTION.DOMAIN_NAME, 'domainName', (w, v) => writeLatin1(w, 'domainName', v)),
  field(OPTION.INTERFACE_MTU, 'mtu', (w, v) => writeUint(w, 'mtu', v, 2)),
  field(OPTION.BROADCAST, 'broadcastAddress', (w, v) => writeIp(w, 'broadcastAddress', v)),
  field(OPTION.NTP_SERVERS, 'ntpServers', (w, v) => writeIpList(w, 'ntpServers', v)),
  field(OPTION.VENDOR_SPECIFIC, 'vendorSpecific', (w, v) => writeBuffer(w, 'vendorSpecific', v)),
  field(OPTION.REQUESTED_IP, 'requestedIp', (w, v) => writeIp(w, 'requestedIp', v)),
  field(OPTION.LEASE_TIME, 'leaseTime', (w, v) => writeUint(w, 'leaseTime', v, 4)),
  field(OPTION.PARAMETER_LIST, 'parameterList', (w, v) => writeOctets(w, 'parameterList', v)),
  field(OPTION.MAX_MESSAGE_SIZE, 'maxMessageSize', (w, v) => writeUint(w, 'maxMessageSize', v, 2)),
  field(OPTION.RENEWAL_TIME, 'renewalTime', (w, v) => writeUint(w, 'renewalTime', v, 4)),
  field(OPTION.REBINDING_TIME, 'rebindingTime', (w, v) => writeUint(w, 'rebindingTime', v, 4)),
  field(OPTION.VENDOR_CLASS, 'vendorClass', (w, v) => writeLatin1(w, 'vendorClass', v)),
  field(OPTION.CLIENT_ID, 'clientId', (w, v) => writeBuffer(w, 'clientId', v)),
  field(OPTION.TFTP_SERVER, 'tftpServer', (w, v) => writeLatin1(w, 'tftpServer', v)),
  field(OPTION.BOOTFILE, 'bootfile', (w, v) => writeLatin1(w, 'bootfile', v)),
  field(OPTION.USER_CLASS, 'userClass', writeUserClass),
  field(OPTION.CLIENT_ARCH, 'clientArch', (w, v) => {
    if (!Array.isArray(v) || v.length === 0) throw bad('clientArch', 'empty list (omit the field instead)');
    for (const a of v) writeUint(w, 'clientArch', a, 2);
  }),
  field(OPTION.CLIENT_NDI, 'clientNdi', (w, v) => writeOctets(w, 'clientNdi', [v.type, v.major, v.minor])),
  field(OPTION.CLIENT_UUID, 'clientUuid', (w, v) => {
    writeUint(w, 'clientUuid', v.type, 1);
    writeBuffer(w, 'clientUuid', v.id);
  }),
  field(OPTION.DOMAIN_SEARCH, 'domainSearch', (w, v) => w.bytes(encodeNameList(v))),
  field(OPTION.CLASSLESS_ROUTES, 'classlessRoutes', (w, v) => writeRoutes(w, v)),
  field(OPTION.IPXE_ENCAP, 'ipxe', (w, v) => writeBuffer(w, 'ipxe', v)),
];

/**
 * Option values written back to back into `data`: option i is `codes[i]` with the octets
 * `data[bounds[2i], bounds[2i+1])`, in wire order.
 */
export interface EncodedOptions {
  data: Buffer;
  codes: number[];
  bounds: number[];
}

/**
 * The options to send, in wire order: 53 first, then 54, then the rest ascending by code, 82 last (RFC 3046
 * §2.1: the relay agent option is the last one before End). Throws TypeError on values that would not
 * decode back to themselves (caller bugs).
 */
export function encodeOptionValues(o: DhcpOptions): EncodedOptions {
  const w = new ByteWriter(512);
  const codes: number[] = [];
  const bounds: number[] = [];
  const other = o.other;
  if (!(other instanceof Map)) throw bad('other', 'not a Map');

  if (other.size > 0) {
    if (o.messageType !== undefined && other.has(OPTION.MESSAGE_TYPE)) throw bad('other', `code ${OPTION.MESSAGE_TYPE} is also set as a typed field`);
    if (o.serverId !== undefined && other.has(OPTION.SERVER_ID)) throw bad('other', `code ${OPTION.SERVER_ID} is also set as a typed field`);
    if (o.relayAgent !== undefined && other.has(OPTION.RELAY_AGENT)) throw bad('other', `code ${OPTION.RELAY_AGENT} is also set as a typed field`);
  }

  // 53, then 54: typed, or raw from `other`.
  let start = w.length;
  if (o.messageType !== undefined) {
    if (!Number.isInteger(o.messageType) || o.messageType < 1 || o.messageType > MAX_MESSAGE_TYPE) throw bad('messageType', `${o.messageType} is not 1..8`);
    w.u8(o.messageType);
    codes.push(OPTION.MESSAGE_TYPE);
    bounds.push(start, w.length);
  } else if (other.has(OPTION.MESSAGE_TYPE)) {
    writeBuffer(w, 'other', other.get(OPTION.MESSAGE_TYPE)!);
    codes.push(OPTION.MESSAGE_TYPE);
    bounds.push(start, w.length);
  }
  start = w.length;
  if (o.serverId !== undefined) {
    writeIp(w, 'serverId', o.serverId);
    codes.push(OPTION.SERVER_ID);
    bounds.push(start, w.length);
  } else if (other.has(OPTION.SERVER_ID)) {
    writeBuffer(w, 'other', other.get(OPTION.SERVER_ID)!);
    codes.push(OPTION.SERVER_ID);
    bounds.push(start, w.length);
  }

  // Raw options other than 53, 54 and 82, ascending, merged with the typed fields.
  let raws: number[] = [];
  if (other.size > 0) {
    for (const code of other.keys()) {
      if (!Number.isInteger(code) || code < 1 || code > 254 || code === OPTION.OVERLOAD) throw bad('other', `code ${code} cannot be sent as a raw option`);
      if (code !== OPTION.MESSAGE_TYPE && code !== OPTION.SERVER_ID && code !== OPTION.RELAY_AGENT) raws.push(code);
    }
    raws = raws.sort((a, b) => a - b);
  }
  let r = 0;
  for (let i = 0; i <= FIELDS.length; i++) {
    const f = FIELDS[i];
    const below = f === undefined ? 256 : f.code;
    while (r < raws.length && raws[r]! < below) {
      const code = raws[r++]!;
      start = w.length;
      writeBuffer(w, 'other', other.get(code)!);
      codes.push(code);
      bounds.push(start, w.length);
    }
    if (f === undefined) break;
    const v = o[f.key];
    if (v === undefined) continue;
    if (r < raws.length && raws[r] === f.code) throw bad('other', `code ${f.code} is also set as a typed field`);
    start = w.length;
    f.write(w, v as never, o);
    codes.push(f.code);
    bounds.push(start, w.length);
  }

  // 82 last (RFC 3046 §2.1).
  start = w.length;
  if (o.relayAgent !== undefined) {
    writeRelayAgent(w, o.relayAgent);
    codes.push(OPTION.RELAY_AGENT);
    bounds.push(start, w.length);
  } else if (other.has(OPTION.RELAY_AGENT)) {
    writeBuffer(w, 'other', other.get(OPTION.RELAY_AGENT)!);
    codes.push(OPTION.RELAY_AGENT);
    bounds.push(start, w.length);
  }
  return { data: w.toBuffer(), codes, bounds };
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
