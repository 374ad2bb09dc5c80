// IPv4 addresses as unsigned 32-bit numbers: cheap to compare, count and store in indexes.
// Parsers return `undefined` on bad input (callers decide whether that is an error).

/**
 * Dotted quad -> unsigned 32-bit number; `undefined` unless exactly four decimal octets 0-255 without
 * leading zeros. A hand-written scan, no regex: it runs for every address of every DHCP reply encoded.
 */
export function parseIPv4(text: string): number | undefined {
  if (typeof text !== 'string' || text.length < 7 || text.length > 15) return undefined;
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  let leadingZero = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e) {
      if (digits === 0 || ++dots > 3) return undefined;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
      continue;
    }
    if (c < 0x30 || c > 0x39) return undefined;
    if (digits === 0) leadingZero = c === 0x30;
    else if (leadingZero) return undefined;
    octet = octet * 10 + (c - 0x30);
    if (++digits > 3 || octet > 255) return undefined;
  }
  if (dots !== 3 || digits === 0) return undefined;
  return (value * 256 + octet) >>> 0;
}

/** 127.0.0.0/8, as a number: this host, which no packet from the network can claim. */
export function isLoopbackIPv4(n: number): boolean {
  return n >>> 24 === 127;
}

/** A peer's address as text (IPv4, IPv6 or IPv4-mapped IPv6) names this host. */
export function isLoopbackAddress(text: string): boolean {
  return text.startsWith('127.') || text === '::1' || text.startsWith('::ffff:127.');
}

export function formatIPv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export interface Cidr {
  /** Network address (host bits zero). */
  network: number;
  prefix: number;
  /** Netmask as a number. */
  mask: number;
  /** Broadcast address. */
  broadcast: number;
}

/** Parses `a.b.c.d/len`; host bits must be zero (a typo in a subnet is better caught than masked). */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const addr = parseIPv4(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (addr === undefined || !/^\d{1,2}$/.test(lenText)) return undefined;
  const prefix = Number(lenText);
  if (prefix > 32) return undefined;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  if ((addr & mask) >>> 0 !== addr) return undefined;
  return { network: addr, prefix, mask, broadcast: (addr | ~mask) >>> 0 };
}

export function cidrContains(cidr: Cidr, ip: number): boolean {
  return ((ip & cidr.mask) >>> 0) === cidr.network;
}

export interface IPv4Range { start: number; end: number }

/** Parses `a.b.c.d-e.f.g.h` (inclusive); start must not be after end. */
export function parseRange(text: string): IPv4Range | undefined {
  const dash = text.indexOf('-');
  if (dash < 0) return undefined;
  const start = parseIPv4(text.slice(0, dash).trim());
  const end = parseIPv4(text.slice(dash + 1).trim());
  if (start === undefined || end === undefined || start > end) return undefined;
  return { start, end };
}

/** `host:port` for IPv4 or a name, `[v6]:port` for IPv6. */
export function parseListen(text: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  const host = m[1] ?? m[2] ?? '';
  if (m[2] !== undefined && parseIPv4(host) === undefined && !/^[a-zA-Z0-9.-]+$/.test(host)) return undefined;
  return { host, port };
}
