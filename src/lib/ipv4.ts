// IPv4 addresses as unsigned 32-bit numbers: cheap to compare, count and store in indexes.
// Parsers return `undefined` on bad input (callers decide whether that is an error).

const OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

export function parseIPv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!OCTET.test(p)) return undefined;
    n = n * 256 + Number(p);
  }
  return n >>> 0;
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
