// What a machine's operator-given fields may hold, checked the same way whoever writes them (API, CLI,
// enlistment), and the names metalbox makes up. Pure.
import { randomBytes } from 'node:crypto';
import { MetalboxError } from '../lib/errors.ts';
import { parseMac } from '../lib/mac.ts';

/** RFC 1123 §2.1 host name label (RFC 952 as relaxed there): letters, digits, hyphens; no hyphen at either end; 1-63 octets. Lower case here. */
export const HOSTNAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
const HOSTNAME = new RegExp(HOSTNAME_PATTERN);
/** The same in any case, as given (stored lower case). */
export const HOSTNAME_INPUT_PATTERN = '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$';
export const TAG_PATTERN = '^[a-z0-9_-]{1,64}$';
const TAG = new RegExp(TAG_PATTERN);
export const MAX_TAGS = 32;
/** RFC 4122 §3 text form; SMBIOS system UUIDs are given in it. */
export const UUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
const UUID = new RegExp(UUID_PATTERN);
/** Machine ids: 8 characters of Crockford's base32 alphabet in lower case (no i, l, o, u: nothing to misread). */
export const ID_ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
export const ID_PATTERN = '^[0-9a-hjkmnp-tv-z]{8}$';

const invalid = (field: string, message: string) => new MetalboxError('MACHINE_INVALID', `${field}: ${message}`, { details: { field } });

/** A host name as stored: lower case (host names are case-insensitive, RFC 4343), or MACHINE_INVALID. */
export function checkHostname(value: unknown, field = 'hostname'): string {
  if (typeof value !== 'string') throw invalid(field, 'must be a string');
  const h = value.toLowerCase();
  if (!HOSTNAME.test(h)) throw invalid(field, 'must be an RFC 1123 label: 1-63 letters, digits or hyphens, not starting or ending with a hyphen');
  return h;
}

/** Tags as stored: each [a-z0-9_-]{1,64}, duplicates dropped, order kept, at most MAX_TAGS. */
export function checkTags(value: unknown, field = 'tags'): string[] {
  if (!Array.isArray(value)) throw invalid(field, 'must be an array of strings');
  const out: string[] = [];
  for (const [i, tag] of value.entries()) {
    if (typeof tag !== 'string' || !TAG.test(tag)) throw invalid(`${field}[${i}]`, 'a tag is 1-64 characters of a-z, 0-9, _ and -');
    if (!out.includes(tag)) out.push(tag);
  }
  if (out.length > MAX_TAGS) throw invalid(field, `at most ${MAX_TAGS} tags`);
  return out;
}

/** A MAC in canonical form (aa:bb:cc:dd:ee:ff), or MACHINE_INVALID. */
export function checkMac(value: unknown, field = 'mac'): string {
  const mac = typeof value === 'string' ? parseMac(value) : undefined;
  if (mac === undefined) throw invalid(field, 'must be a MAC address (aa:bb:cc:dd:ee:ff)');
  // IEEE 802 §8.2: the I/G bit set means a group address, which no NIC boots from.
  if (parseInt(mac.slice(0, 2), 16) & 1) throw invalid(field, 'is a multicast/broadcast address, not a NIC');
  return mac;
}

export function checkUuid(value: unknown, field = 'uuid'): string {
  if (typeof value !== 'string' || !UUID.test(value)) throw invalid(field, 'must be a UUID (8-4-4-4-12 hex digits)');
  return value.toLowerCase();
}

export function newMachineId(random: (n: number) => Buffer = randomBytes): string {
  let id = '';
  for (const b of random(8)) id += ID_ALPHABET[b & 31];
  return id;
}

/**
 * Host names metalbox gives a machine nobody named, in order of preference (the first one free is taken):
 * from its first MAC `node-<last 3 octets>` (`52:54:00:77:00:10` -> `node-770010`), then the whole MAC
 * `node-525400770010`, then that with `-2`, `-3`, ...; a machine without a MAC (created for its BMC) is
 * `node-<id>`. The same MAC always asks for the same name, so a machine deleted and enlisted again gets its
 * name back.
 */
export function* hostnameCandidates(mac: string | undefined, id: string): Generator<string> {
  if (mac === undefined) {
    yield `node-${id}`;
    for (let n = 2; ; n++) yield `node-${id}-${n}`;
  }
  const hex = mac.replace(/:/g, '');
  yield `node-${hex.slice(6)}`;
  yield `node-${hex}`;
  for (let n = 2; ; n++) yield `node-${hex}-${n}`;
}
