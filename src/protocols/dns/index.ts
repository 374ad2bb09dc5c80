// The DNS codec (RFC 1035, 2181, 3596, 2782, 6891, 3597): pure, Buffer <-> typed values.
export * from './constants.ts';
export { decodeDns, encodeDns, encodeTransfer, isTruncated, txtStrings } from './message.ts';
export type { DnsMessage, DnsQuestion, DnsRecord, DnsRdata, Edns, EdnsOption, MxData, SoaData, SrvData } from './message.ts';
export { readName, nameLabels, DnsWriter } from './name.ts';
export { formatIPv6, parseIPv6 } from './ipv6.ts';
export { formatDns, formatRecord, formatRdata } from './format.ts';
