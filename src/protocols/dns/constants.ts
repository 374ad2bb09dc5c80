// DNS numbers (RFC 1035 §3.2.2-3.2.5, §4.1.1; RFC 3596 AAAA; RFC 2782 SRV; RFC 6891 OPT; RFC 5936 AXFR;
// RFC 1995 IXFR). Only what metalbox reads or writes by name; every other type survives a round trip as raw
// RDATA (RFC 3597).

export const TYPE = {
  A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, SRV: 33, OPT: 41, DS: 43,
  IXFR: 251, AXFR: 252, ANY: 255,
} as const;

export const CLASS = { IN: 1, CH: 3, NONE: 254, ANY: 255 } as const;

export const OPCODE = { QUERY: 0, IQUERY: 1, STATUS: 2, NOTIFY: 4, UPDATE: 5 } as const;

/** Response codes; BADVERS (RFC 6891 §9) needs EDNS: its upper 8 bits travel in the OPT record. */
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, BADVERS: 16 } as const;

export const TYPE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(TYPE).map(([k, v]) => [v, k]));
export const RCODE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(RCODE).map(([k, v]) => [v, k]));
export const OPCODE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(OPCODE).map(([k, v]) => [v, k]));
export const CLASS_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(CLASS).map(([k, v]) => [v, k]));

/** RFC 3597 §5: TYPEnnn for types without a mnemonic. */
export function typeName(type: number): string {
  return TYPE_NAMES[type] ?? `TYPE${type}`;
}

export function className(cls: number): string {
  return CLASS_NAMES[cls] ?? `CLASS${cls}`;
}

export function rcodeName(rcode: number): string {
  return RCODE_NAMES[rcode] ?? `RCODE${rcode}`;
}

/** The header is 12 octets (RFC 1035 §4.1.1). */
export const HEADER_BYTES = 12;
/** RFC 1035 §2.3.4: a name is at most 255 octets on the wire, a label at most 63. */
export const MAX_NAME_BYTES = 255;
export const MAX_LABEL_BYTES = 63;
/** RFC 1035 §4.2.1: a UDP message without EDNS carries at most 512 octets. */
export const CLASSIC_UDP_BYTES = 512;
/** Compression pointers hold a 14-bit offset (RFC 1035 §4.1.4). */
export const MAX_POINTER_OFFSET = 0x3fff;
