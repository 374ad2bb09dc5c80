// DNS messages (RFC 1035 §4.1) <-> typed values. Pure: no sockets, no clock.
//
// decodeDns checks every count and length against the message before it reads, throws a MetalboxError with a
// stable DNS_* code and the offset, and takes the OPT pseudo-record (RFC 6891) out of the additional section
// into `edns`. Types it knows (A, AAAA, NS, CNAME, PTR, MX, TXT, SRV, SOA) get typed data; every other type
// keeps its RDATA as bytes and is written back unchanged (RFC 3597).
//
// encodeDns compresses names (RFC 1035 §4.1.4) except where a type forbids it (SRV targets, RFC 2782; types
// this codec does not know, RFC 3597 §4) and, given `maxSize`, truncates as RFC 2181 §9 says: RRsets of the
// answer and authority sections are kept whole or left out with TC set; the additional section is cut
// silently; the OPT record always fits (its room is kept first).
import { HEADER_BYTES, TYPE } from './constants.ts';
import { formatIPv6, parseIPv6 } from './ipv6.ts';
import { decodeError, DnsWriter, readName } from './name.ts';

export interface DnsQuestion {
  name: string;
  type: number;
  class: number;
}

export interface MxData { preference: number; exchange: string }
export interface SrvData { priority: number; weight: number; port: number; target: string }
export interface SoaData { mname: string; rname: string; serial: number; refresh: number; retry: number; expire: number; minimum: number }

/**
 * Record data by type: A and AAAA the address text; NS, CNAME, PTR the name; MX, SRV, SOA their fields;
 * TXT its character-strings; any other type the RDATA bytes.
 */
export type DnsRdata = string | MxData | SrvData | SoaData | Buffer[] | Buffer;

export interface DnsRecord {
  name: string;
  type: number;
  class: number;
  ttl: number;
  data: DnsRdata;
}

export interface EdnsOption { code: number; data: Buffer }

/** The OPT pseudo-record (RFC 6891 §6.1.3). */
export interface Edns {
  /** The requestor's UDP payload size (the OPT CLASS). */
  udpSize: number;
  version: number;
  /** The DO bit (RFC 3225). */
  dnssecOk: boolean;
  /** The other 15 flag bits, kept for a round trip. */
  flags: number;
  options: EdnsOption[];
}

export interface DnsMessage {
  id: number;
  qr: boolean;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  /** The reserved Z bit (must be zero; kept for a round trip). */
  z: boolean;
  ad: boolean;
  cd: boolean;
  /** The whole response code: the header's 4 bits plus, with EDNS, the OPT record's upper 8 (RFC 6891 §6.1.3). */
  rcode: number;
  questions: DnsQuestion[];
  answers: DnsRecord[];
  authorities: DnsRecord[];
  additionals: DnsRecord[];
  edns?: Edns;
}

function formatIPv4(b: Buffer, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

/** Decodes a whole message; the bytes after the last record the counts announce are an error (DNS_TRAILING_DATA). */
export function decodeDns(buf: Buffer): DnsMessage {
  if (buf.length < HEADER_BYTES) throw decodeError('DNS_TRUNCATED', `message of ${buf.length} octets is shorter than the header`, 0);
  const flags = buf.readUInt16BE(2);
  const msg: DnsMessage = {
    id: buf.readUInt16BE(0),
    qr: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0xf,
    aa: (flags & 0x0400) !== 0,
    tc: (flags & 0x0200) !== 0,
    rd: (flags & 0x0100) !== 0,
    ra: (flags & 0x0080) !== 0,
    z: (flags & 0x0040) !== 0,
    ad: (flags & 0x0020) !== 0,
    cd: (flags & 0x0010) !== 0,
    rcode: flags & 0xf,
    questions: [],
    answers: [],
    authorities: [],
    additionals: [],
  };
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  const ns = buf.readUInt16BE(8);
  const ar = buf.readUInt16BE(10);
  let pos = HEADER_BYTES;
  for (let i = 0; i < qd; i++) {
    const { name, next } = readName(buf, pos);
    if (next + 4 > buf.length) throw decodeError('DNS_TRUNCATED', 'question runs past the end', next);
    msg.questions.push({ name, type: buf.readUInt16BE(next), class: buf.readUInt16BE(next + 2) });
    pos = next + 4;
  }
  const section = (count: number, into: DnsRecord[], additional: boolean) => {
    for (let i = 0; i < count; i++) {
      const start = pos;
      const { name, next } = readName(buf, pos);
      if (next + 10 > buf.length) throw decodeError('DNS_TRUNCATED', 'record header runs past the end', next);
      const type = buf.readUInt16BE(next);
      const cls = buf.readUInt16BE(next + 2);
      const ttl = buf.readUInt32BE(next + 4);
      const rdlength = buf.readUInt16BE(next + 8);
      const rdStart = next + 10;
      const rdEnd = rdStart + rdlength;
      if (rdEnd > buf.length) throw decodeError('DNS_TRUNCATED', `RDATA of ${rdlength} octets runs past the end`, next + 8);
      pos = rdEnd;
      if (type === TYPE.OPT) {
        if (!additional) throw decodeError('DNS_BAD_OPT', 'OPT record outside the additional section', start);
        if (msg.edns) throw decodeError('DNS_BAD_OPT', 'more than one OPT record (RFC 6891 §6.1.1)', start);
        if (name !== '') throw decodeError('DNS_BAD_OPT', 'OPT record not owned by the root', start);
        const options: EdnsOption[] = [];
        for (let p = rdStart; p < rdEnd;) {
          if (p + 4 > rdEnd) throw decodeError('DNS_BAD_OPT', 'EDNS option header runs past the RDATA', p);
          const len = buf.readUInt16BE(p + 2);
          if (p + 4 + len > rdEnd) throw decodeError('DNS_BAD_OPT', 'EDNS option runs past the RDATA', p);
          options.push({ code: buf.readUInt16BE(p), data: Buffer.from(buf.subarray(p + 4, p + 4 + len)) });
          p += 4 + len;
        }
        msg.edns = { udpSize: cls, version: (ttl >>> 16) & 0xff, dnssecOk: (ttl & 0x8000) !== 0, flags: ttl & 0x7fff, options };
        msg.rcode |= ((ttl >>> 24) & 0xff) << 4;
        continue;
      }
      into.push({ name, type, class: cls, ttl, data: readRdata(buf, type, rdStart, rdEnd) });
    }
  };
  section(an, msg.answers, false);
  section(ns, msg.authorities, false);
  section(ar, msg.additionals, true);
  if (pos !== buf.length) throw decodeError('DNS_TRAILING_DATA', `${buf.length - pos} octets after the last record`, pos);
  return msg;
}

function readRdata(buf: Buffer, type: number, start: number, end: number): DnsRdata {
  const len = end - start;
  const name = (at: number): { name: string; next: number } => readName(buf, at, end);
  const done = (at: number) => { if (at !== end) throw decodeError('DNS_BAD_RDATA', `${end - at} octets left in the RDATA of a type ${type} record`, at); };
  const fixed = (at: number, n: number) => { if (at + n > end) throw decodeError('DNS_BAD_RDATA', `type ${type} RDATA is too short`, at); };
  switch (type) {
    case TYPE.A:
      if (len !== 4) throw decodeError('DNS_BAD_RDATA', `A RDATA is ${len} octets, not 4`, start);
      return formatIPv4(buf, start);
    case TYPE.AAAA:
      if (len !== 16) throw decodeError('DNS_BAD_RDATA', `AAAA RDATA is ${len} octets, not 16`, start);
      return formatIPv6(buf.subarray(start, end));
    case TYPE.NS: case TYPE.CNAME: case TYPE.PTR: {
      const r = name(start);
      done(r.next);
      return r.name;
    }
    case TYPE.MX: {
      fixed(start, 2);
      const r = name(start + 2);
      done(r.next);
      return { preference: buf.readUInt16BE(start), exchange: r.name };
    }
    case TYPE.SRV: {
      fixed(start, 6);
      const r = name(start + 6);
      done(r.next);
      return { priority: buf.readUInt16BE(start), weight: buf.readUInt16BE(start + 2), port: buf.readUInt16BE(start + 4), target: r.name };
    }
    case TYPE.SOA: {
      const m = name(start);
      const r = name(m.next);
      fixed(r.next, 20);
      done(r.next + 20);
      const at = r.next;
      return { mname: m.name, rname: r.name, serial: buf.readUInt32BE(at), refresh: buf.readUInt32BE(at + 4), retry: buf.readUInt32BE(at + 8), expire: buf.readUInt32BE(at + 12), minimum: buf.readUInt32BE(at + 16) };
    }
    case TYPE.TXT: {
      const strings: Buffer[] = [];
      for (let p = start; p < end;) {
        const n = buf[p]!;
        if (p + 1 + n > end) throw decodeError('DNS_BAD_RDATA', `TXT character-string of ${n} octets runs past the RDATA`, p);
        strings.push(Buffer.from(buf.subarray(p + 1, p + 1 + n)));
        p += 1 + n;
      }
      return strings;
    }
    default:
      return Buffer.from(buf.subarray(start, end));
  }
}

/** TXT data from text: UTF-8, split into character-strings of at most 255 octets (RFC 1035 §3.3.14). */
export function txtStrings(text: string): Buffer[] {
  const all = Buffer.from(text, 'utf8');
  if (all.length === 0) return [Buffer.alloc(0)];
  const out: Buffer[] = [];
  for (let i = 0; i < all.length; i += 255) out.push(all.subarray(i, Math.min(all.length, i + 255)));
  return out;
}

function writeRdata(w: DnsWriter, r: DnsRecord): void {
  const d = r.data;
  const bad = () => new TypeError(`DNS: ${r.name} type ${r.type}: data ${JSON.stringify(d)} does not fit the type`);
  switch (r.type) {
    case TYPE.A: {
      if (typeof d !== 'string' || !writeIPv4(w, d)) throw bad();
      return;
    }
    case TYPE.AAAA: {
      const b = typeof d === 'string' ? parseIPv6(d) : undefined;
      if (!b) throw bad();
      w.bytes(b);
      return;
    }
    case TYPE.NS: case TYPE.CNAME: case TYPE.PTR:
      if (typeof d !== 'string') throw bad();
      w.name(d);
      return;
    case TYPE.MX: {
      const mx = d as MxData;
      if (typeof mx !== 'object' || typeof mx.exchange !== 'string') throw bad();
      w.u16(mx.preference);
      w.name(mx.exchange);
      return;
    }
    case TYPE.SRV: {
      const s = d as SrvData;
      if (typeof s !== 'object' || typeof s.target !== 'string') throw bad();
      w.u16(s.priority); w.u16(s.weight); w.u16(s.port);
      w.name(s.target, false);
      return;
    }
    case TYPE.SOA: {
      const s = d as SoaData;
      if (typeof s !== 'object' || typeof s.mname !== 'string') throw bad();
      w.name(s.mname); w.name(s.rname);
      w.u32(s.serial); w.u32(s.refresh); w.u32(s.retry); w.u32(s.expire); w.u32(s.minimum);
      return;
    }
    case TYPE.TXT: {
      if (!Array.isArray(d)) throw bad();
      for (const s of d) {
        if (!Buffer.isBuffer(s) || s.length > 255) throw bad();
        w.u8(s.length);
        w.bytes(s);
      }
      return;
    }
    default:
      if (!Buffer.isBuffer(d)) throw bad();
      w.bytes(d);
  }
}

/** Dotted-quad text as 4 octets, without a regular expression (this runs for every A record answered). */
function writeIPv4(w: DnsWriter, text: string): boolean {
  let octet = 0;
  let digits = 0;
  let parts = 0;
  const at = w.pos;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (digits === 0 || octet > 255 || parts === 4) { w.rollback(at); return false; }
      w.u8(octet);
      parts++;
      octet = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39 && digits < 3) {
      octet = octet * 10 + (c - 0x30);
      digits++;
    } else {
      w.rollback(at);
      return false;
    }
  }
  if (parts !== 4) { w.rollback(at); return false; }
  return true;
}

function writeRecord(w: DnsWriter, r: DnsRecord): void {
  w.name(r.name);
  w.u16(r.type);
  w.u16(r.class);
  w.u32(r.ttl);
  const lenAt = w.pos;
  w.u16(0);
  writeRdata(w, r);
  const rdlength = w.pos - lenAt - 2;
  if (rdlength > 0xffff) throw new TypeError(`DNS: RDATA of ${r.name} is over 65535 octets`);
  w.setU16(lenAt, rdlength);
}

function headerFlags(m: DnsMessage, tc: boolean): number {
  return (m.qr ? 0x8000 : 0) | ((m.opcode & 0xf) << 11) | (m.aa ? 0x0400 : 0) | (tc ? 0x0200 : 0) | (m.rd ? 0x0100 : 0)
    | (m.ra ? 0x0080 : 0) | (m.z ? 0x0040 : 0) | (m.ad ? 0x0020 : 0) | (m.cd ? 0x0010 : 0) | (m.rcode & 0xf);
}

function optBytes(e: Edns): number {
  return 11 + e.options.reduce((n, o) => n + 4 + o.data.length, 0);
}

function writeOpt(w: DnsWriter, m: DnsMessage, e: Edns): void {
  w.u8(0);
  w.u16(TYPE.OPT);
  w.u16(e.udpSize);
  w.u32((((m.rcode >> 4) & 0xff) << 24 | (e.version & 0xff) << 16 | (e.dnssecOk ? 0x8000 : 0) | (e.flags & 0x7fff)) >>> 0);
  w.u16(optBytes(e) - 11);
  for (const o of e.options) {
    w.u16(o.code);
    w.u16(o.data.length);
    w.bytes(o.data);
  }
}

/** Whether an encoded message has its TC bit set. */
export function isTruncated(wire: Buffer): boolean {
  return wire.length >= 4 && (wire[2]! & 0x02) !== 0;
}

/**
 * Encodes a message. With `maxSize`, what does not fit is left out (see the file comment) and TC is set when an
 * answer or authority RRset was. `m.tc` is written as given otherwise. The RCODE's upper bits need `m.edns`.
 */
export function encodeDns(m: DnsMessage, options: { maxSize?: number } = {}): Buffer {
  if (m.rcode > 0xf && !m.edns) throw new TypeError(`DNS: rcode ${m.rcode} needs an OPT record`);
  const max = options.maxSize ?? 0xffff;
  const w = new DnsWriter(Math.min(max, 512));
  w.u16(m.id);
  w.u16(0); // flags, below
  w.u16(m.questions.length);
  w.u16(0); w.u16(0); w.u16(0);
  for (const q of m.questions) {
    w.name(q.name);
    w.u16(q.type);
    w.u16(q.class);
  }
  const room = max - (m.edns ? optBytes(m.edns) : 0);
  let tc = m.tc;
  const counts = [0, 0, 0];
  let stopped = false;
  const sections = [m.answers, m.authorities, m.additionals];
  for (let s = 0; s < 3 && !stopped; s++) {
    const list = sections[s]!;
    let setStart = w.pos;
    let setCount = counts[s]!;
    for (let i = 0; i < list.length; i++) {
      const r = list[i]!;
      const prev = list[i - 1];
      if (!prev || prev.type !== r.type || prev.class !== r.class || prev.name.toLowerCase() !== r.name.toLowerCase()) {
        setStart = w.pos;
        setCount = counts[s]!;
      }
      writeRecord(w, r);
      counts[s]!++;
      if (w.pos > room) {
        // RFC 2181 §9: a partial RRset is never sent; what the additional section cannot hold goes without TC.
        w.rollback(setStart);
        counts[s] = setCount;
        if (s < 2) tc = true;
        stopped = true;
        break;
      }
    }
  }
  if (m.edns) {
    writeOpt(w, m, m.edns);
    counts[2]!++;
  }
  w.setU16(2, headerFlags(m, tc));
  w.setU16(6, counts[0]!);
  w.setU16(8, counts[1]!);
  w.setU16(10, counts[2]!);
  return w.toBuffer();
}

/**
 * The messages of a zone transfer over TCP (RFC 5936 §2.2): `head`'s header and question in the first, then as
 * many of `records` per message as fit in `maxSize` (65535 at most, the TCP length prefix).
 */
export function encodeTransfer(head: DnsMessage, records: readonly DnsRecord[], maxSize = 0xffff): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  let first = true;
  while (i < records.length || first) {
    const m: DnsMessage = { ...head, questions: first ? head.questions : [], answers: [], authorities: [], additionals: [] };
    const w = new DnsWriter(4096);
    w.u16(m.id);
    w.u16(headerFlags(m, false));
    w.u16(m.questions.length);
    w.u16(0); w.u16(0); w.u16(0);
    for (const q of m.questions) { w.name(q.name); w.u16(q.type); w.u16(q.class); }
    const room = maxSize - (m.edns ? optBytes(m.edns) : 0);
    let n = 0;
    while (i < records.length) {
      const mark = w.pos;
      writeRecord(w, records[i]!);
      if (w.pos > room) {
        w.rollback(mark);
        if (n === 0) throw new TypeError(`DNS: record ${records[i]!.name} alone exceeds ${maxSize} octets`);
        break;
      }
      n++;
      i++;
    }
    let ar = 0;
    if (m.edns) { writeOpt(w, m, m.edns); ar = 1; }
    w.setU16(6, n);
    w.setU16(10, ar);
    out.push(Buffer.from(w.toBuffer()));
    first = false;
  }
  return out;
}
