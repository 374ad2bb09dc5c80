// DNS records that people add by hand (the API), in the store's `dnsRecords` collection. The DNS server
// (src/services/dns) serves them beside the names it makes from machines and leases; it reads this collection
// again whenever a write here tells it to (watchDnsRecords) and may rely on what is checked here:
//
// - names are absolute, lower case, without the trailing dot, at or under the configured domain (the forward
//   zone) or under the reverse zone (in-addr.arpa) of a configured subnet;
// - A, AAAA, MX and SRV live in the forward zone; CNAME, NS and TXT in either;
// - a CNAME is alone at its name (RFC 1034 §3.6.2, RFC 2181 §10.1), never at a zone apex (RFC 1912 §2.4);
// - NS delegates a name below an apex: the apex's own NS records are the DNS server's;
// - an RRset (same name and type) holds no duplicates and has one TTL (RFC 2181 §5, §5.2): a record added
//   without a TTL takes its RRset's, one with another TTL is refused, and changing a record's TTL changes
//   the whole RRset's in the same write;
// - `value` is the presentation form of the data (RFC 1035 §5.1): an address, a name, the text, or
//   "priority name" (MX) / "priority weight port name" (SRV), whose parts are also in their own fields.
//
// Writes run one at a time (read, check, write the record and its event in one batch).
import { isIP } from 'node:net';
import { randomBytes } from 'node:crypto';
import { MetalboxError } from '../lib/errors.ts';
import { parseCidr, parseIPv4, formatIPv4 } from '../lib/ipv4.ts';
import type { Store } from '../store/types.ts';
import type { EventLog, NewEvent } from './events.ts';
import type { AuditInput } from './users.ts';

export const DNS_TYPES = ['A', 'AAAA', 'CNAME', 'TXT', 'SRV', 'MX', 'NS'] as const;
export type DnsType = (typeof DNS_TYPES)[number];
/** RFC 2181 §8: a TTL is 0 to 2^31 - 1 seconds. */
export const MAX_TTL = 2_147_483_647;
/** TXT data, in UTF-8 bytes; the server splits it into character-strings of 255 (RFC 1035 §3.3.14). */
export const MAX_TXT_BYTES = 4000;
export const DNS_RECORD_ID_PATTERN = '^[0-9a-f]{16}$';
export const DEFAULT_LIMIT = 100;
export const MAX_LIMIT = 1000;

const FORWARD_ONLY: readonly DnsType[] = ['A', 'AAAA', 'MX', 'SRV'];
/** A label of an owner name: letters, digits, hyphen, and underscore (service labels: _sip._tcp, _acme-challenge). */
const OWNER_LABEL = /^(?:[a-z0-9_]|[a-z0-9_][a-z0-9_-]{0,61}[a-z0-9_])$/;
/** A host name label (RFC 1123 §2.1): the targets of MX, NS and SRV name hosts (RFC 2181 §10.3). */
const HOST_LABEL = /^(?:[a-z0-9]|[a-z0-9][a-z0-9-]{0,61}[a-z0-9])$/;

/** A record's data, as checked and normalized. */
export interface DnsRecordFields {
  name: string;
  type: DnsType;
  value: string;
  ttl?: number;
  /** MX preference, SRV priority. */
  priority?: number;
  weight?: number;
  port?: number;
  /** MX exchange, SRV target. */
  target?: string;
}

/** As stored (the `dnsRecords` collection). */
export interface DnsRecord extends DnsRecordFields {
  id: string;
  createdAt: string;
  updatedAt: string;
  [extra: string]: unknown;
}

/** What a caller gives: `value` for A, AAAA, CNAME, NS, TXT; priority/target (MX) and priority/weight/port/target (SRV). */
export interface DnsRecordInput {
  name?: string;
  type?: string;
  value?: string;
  ttl?: number | null;
  priority?: number;
  weight?: number;
  port?: number;
  target?: string;
}

export interface DnsActor { actor: string; audit?: (input: AuditInput) => NewEvent }

export interface DnsZones {
  /** The configured domain: the forward zone. */
  forward: string;
  /** in-addr.arpa zones of the configured subnets (whole octets: a /20 gives its /16's zone). */
  reverse: string[];
}

/** VALIDATION_FAILED naming the field (the API prefixes the request part: body.value). */
function invalid(field: string, message: string): MetalboxError {
  return new MetalboxError('VALIDATION_FAILED', `${field}: ${message}`, { details: { field } });
}

function conflict(field: string, message: string): MetalboxError {
  return new MetalboxError('STORE_CONFLICT', message, { details: { field } });
}

/** The reverse zone of an IPv4 subnet, on octet boundaries (RFC 1035 §3.5); undefined under /8. */
export function reverseZone(cidrText: string): string | undefined {
  const c = parseCidr(cidrText);
  if (!c || c.prefix < 8) return undefined;
  const octets = formatIPv4(c.network).split('.').slice(0, Math.floor(c.prefix / 8));
  return `${octets.reverse().join('.')}.in-addr.arpa`;
}

export function zonesOf(domain: string, subnets: readonly { cidr: string }[]): DnsZones {
  const reverse = [...new Set(subnets.map((s) => reverseZone(s.cidr)).filter((z): z is string => z !== undefined))];
  return { forward: domain.toLowerCase().replace(/\.$/, ''), reverse };
}

/** Lower case, no trailing dot, every label valid, 253 characters at most (RFC 1035 §2.3.4 less the root). */
function domainName(text: unknown, field: string, label: RegExp, what: string, wildcard = false): string {
  if (typeof text !== 'string' || text === '') throw invalid(field, `must be a ${what}`);
  const name = text.toLowerCase().replace(/\.$/, '');
  if (name.length === 0 || name.length > 253) throw invalid(field, `must be a ${what} of 1-253 characters`);
  const labels = name.split('.');
  labels.forEach((l, i) => {
    if (wildcard && i === 0 && l === '*') return; // RFC 4592 §2.1.1: the wildcard is the whole leftmost label
    if (!label.test(l)) throw invalid(field, `"${l}" is not a valid label of a ${what} (1-63 of a-z, 0-9, -${label === OWNER_LABEL ? ', _' : ''}; no hyphen at either end)`);
  });
  return name;
}

function under(name: string, zone: string): boolean {
  return name === zone || name.endsWith(`.${zone}`);
}

function u16(value: unknown, field: string): number {
  if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > 65535) throw invalid(field, 'must be an integer 0-65535');
  return value as number;
}

/** The record's normalized fields from its input; every problem names its field. */
export function normalizeRecord(input: DnsRecordInput, zones: DnsZones): DnsRecordFields {
  const type = input.type;
  if (typeof type !== 'string' || !(DNS_TYPES as readonly string[]).includes(type.toUpperCase())) throw invalid('type', `must be one of ${DNS_TYPES.join(', ')}`);
  const t = type.toUpperCase() as DnsType;
  const name = domainName(input.name, 'name', OWNER_LABEL, 'domain name', true);
  const zone = under(name, zones.forward) ? zones.forward : zones.reverse.find((z) => under(name, z));
  if (zone === undefined) {
    throw invalid('name', `${name} is outside the zones metalbox serves: ${[zones.forward, ...zones.reverse].join(', ')}`);
  }
  const reverse = zone !== zones.forward;
  if (reverse && FORWARD_ONLY.includes(t)) throw invalid('type', `${t} records belong in the forward zone ${zones.forward}, not in ${zone}`);
  if (name === zone && (t === 'CNAME' || t === 'NS')) throw invalid('name', `${name} is a zone apex: ${t === 'CNAME' ? 'a CNAME cannot sit beside its SOA and NS records (RFC 1912 §2.4)' : 'its NS records are the DNS server\'s own'}`);
  if (name.startsWith('*.') && (t === 'NS' || t === 'SRV')) throw invalid('name', `a wildcard name cannot own ${t} records (RFC 4592 §4)`);

  const structured = t === 'MX' || t === 'SRV';
  for (const f of ['priority', 'weight', 'port', 'target'] as const) {
    if (input[f] === undefined) continue;
    if (!structured || (t === 'MX' && (f === 'weight' || f === 'port'))) throw invalid(f, `does not apply to ${t} records`);
  }
  if (structured && input.value !== undefined) throw invalid('value', `${t} records take ${t === 'MX' ? 'priority and target' : 'priority, weight, port and target'}, not value`);
  if (input.ttl !== undefined && input.ttl !== null && (!Number.isInteger(input.ttl) || input.ttl < 0 || input.ttl > MAX_TTL)) throw invalid('ttl', `must be an integer 0-${MAX_TTL} (RFC 2181 §8)`);
  const ttl = input.ttl === null ? undefined : input.ttl;
  const base = { name, type: t, ...(ttl !== undefined ? { ttl } : {}) };

  switch (t) {
    case 'A': {
      const ip = typeof input.value === 'string' ? parseIPv4(input.value) : undefined;
      if (ip === undefined) throw invalid('value', 'an A record holds an IPv4 address like 10.0.0.5');
      return { ...base, value: formatIPv4(ip) };
    }
    case 'AAAA': {
      const v = input.value;
      // isIP accepts a zone index (fe80::1%eth0), which has no place in DNS data (RFC 4007 §11.7).
      if (typeof v !== 'string' || isIP(v) !== 6 || v.includes('%')) throw invalid('value', 'an AAAA record holds an IPv6 address like 2001:db8::5');
      // The WHATWG URL parser writes IPv6 in its RFC 5952 canonical form.
      let canonical: string;
      try {
        canonical = new URL(`http://[${v}]/`).hostname.slice(1, -1);
      } catch {
        throw invalid('value', 'an AAAA record holds an IPv6 address like 2001:db8::5');
      }
      return { ...base, value: canonical };
    }
    case 'CNAME':
      return { ...base, value: domainName(input.value, 'value', OWNER_LABEL, 'domain name (the canonical name)') };
    case 'NS':
      return { ...base, value: domainName(input.value, 'value', HOST_LABEL, 'host name (the name server)') };
    case 'TXT': {
      const v = input.value;
      if (typeof v !== 'string' || v.length === 0) throw invalid('value', 'a TXT record holds text');
      if (/[\x00-\x08\x0a-\x1f\x7f]/.test(v)) throw invalid('value', 'TXT text may not hold control characters (tab is fine)');
      if (Buffer.byteLength(v) > MAX_TXT_BYTES) throw invalid('value', `TXT text is at most ${MAX_TXT_BYTES} bytes`);
      return { ...base, value: v };
    }
    case 'MX': {
      if (input.priority === undefined) throw invalid('priority', 'an MX record needs its preference (RFC 1035 §3.3.9), 0-65535, lower first');
      const priority = u16(input.priority, 'priority');
      const target = domainName(input.target, 'target', HOST_LABEL, 'host name (the mail exchange)');
      return { ...base, priority, target, value: `${priority} ${target}` };
    }
    case 'SRV': {
      // RFC 2782: _Service._Proto.Name
      const labels = name.split('.');
      if (labels.length < 3 || !labels[0]!.startsWith('_') || !labels[1]!.startsWith('_')) throw invalid('name', 'an SRV name is _service._proto.name (RFC 2782), e.g. _ldap._tcp.rack.internal');
      for (const f of ['priority', 'weight', 'port'] as const) if (input[f] === undefined) throw invalid(f, 'an SRV record needs priority, weight and port (RFC 2782), each 0-65535');
      const priority = u16(input.priority, 'priority');
      const weight = u16(input.weight, 'weight');
      const port = u16(input.port, 'port');
      // RFC 2782: a target of "." means the service is decidedly not available here.
      const target = input.target === '.' ? '.' : domainName(input.target, 'target', HOST_LABEL, 'host name (the target) or "."');
      return { ...base, priority, weight, port, target, value: `${priority} ${weight} ${port} ${target}` };
    }
  }
}

/**
 * Who is told when the records of a store change: the DNS server (src/services/dns) serves them within a
 * moment of an API write. Keyed by the store, so every DnsRecords over it (the API builds its own) reaches the
 * same listeners, and nothing leaks between stores (tests).
 */
const watchers = new WeakMap<Store, Set<() => void>>();

/** Calls `listener` after every durable change of the store's DNS records; returns the unsubscribe function. */
export function watchDnsRecords(store: Store, listener: () => void): () => void {
  let set = watchers.get(store);
  if (!set) watchers.set(store, (set = new Set()));
  set.add(listener);
  return () => { set.delete(listener); };
}

function notifyWatchers(store: Store): void {
  for (const l of watchers.get(store) ?? []) {
    // A listener's failure is its own: the write it reports is already durable.
    try { l(); } catch { /* the DNS service logs its own errors */ }
  }
}

export interface DnsListQuery { name?: string; type?: DnsType; zone?: string; limit?: number; cursor?: string }

function sortKey(r: DnsRecord): string {
  return `${r.name}\u0000${r.type}\u0000${r.value}\u0000${r.id}`;
}

export class DnsRecords {
  private tail: Promise<unknown> = Promise.resolve();
  private readonly now: () => number;
  readonly zones: DnsZones;

  constructor(private readonly deps: { store: Store; events: EventLog; domain: string; subnets: readonly { cidr: string }[]; now?: () => number }) {
    this.now = deps.now ?? Date.now;
    this.zones = zonesOf(deps.domain, deps.subnets);
  }

  async get(id: string): Promise<DnsRecord | undefined> {
    if (!new RegExp(DNS_RECORD_ID_PATTERN).test(id)) return undefined;
    return (await this.deps.store.dnsRecords.get(id)) as DnsRecord | undefined;
  }

  /** Sorted by name, type, value; `cursor` is the previous page's `next`. */
  async list(q: DnsListQuery = {}): Promise<{ items: DnsRecord[]; total: number; next: string | null }> {
    const name = q.name?.toLowerCase().replace(/\.$/, '');
    const zone = q.zone?.toLowerCase().replace(/\.$/, '');
    const all = (await this.all()).filter((r) => (name === undefined || r.name === name) && (q.type === undefined || r.type === q.type) && (zone === undefined || under(r.name, zone)));
    all.sort((a, b) => (sortKey(a) < sortKey(b) ? -1 : sortKey(a) > sortKey(b) ? 1 : 0));
    let from = 0;
    if (q.cursor !== undefined) {
      const after = Buffer.from(q.cursor, 'base64url').toString();
      from = all.findIndex((r) => sortKey(r) > after);
      if (from < 0) from = all.length;
    }
    const limit = q.limit ?? DEFAULT_LIMIT;
    const items = all.slice(from, from + limit);
    const more = from + limit < all.length;
    return { items, total: all.length, next: more ? Buffer.from(sortKey(items[items.length - 1]!)).toString('base64url') : null };
  }

  async create(input: DnsRecordInput, by: DnsActor): Promise<DnsRecord> {
    const fields = normalizeRecord(input, this.zones);
    return this.serialized(async () => {
      const all = await this.all();
      const ttl = this.checkSet(fields, all, undefined, input.ttl !== undefined && input.ttl !== null);
      const at = new Date(this.now()).toISOString();
      const record: DnsRecord = { id: randomBytes(8).toString('hex'), ...fields, ...(ttl !== undefined ? { ttl } : {}), createdAt: at, updatedAt: at };
      await this.deps.store.write([
        { type: 'put', collection: 'dnsRecords', key: record.id, value: record },
        this.deps.events.op(eventOf(by, { type: 'dns.record.created', subject: record.name, data: { id: record.id, name: record.name, type: record.type, value: record.value } })),
      ]);
      notifyWatchers(this.deps.store);
      return record;
    });
  }

  /**
   * Changes a record: fields left out keep their value (`ttl: null` clears it). The result is checked as a
   * whole, like a new record. A new TTL applies to the whole RRset (RFC 2181 §5.2), in the same write.
   */
  async update(id: string, patch: DnsRecordInput, by: DnsActor): Promise<DnsRecord> {
    return this.serialized(async () => {
      const old = await this.get(id);
      if (!old) throw new MetalboxError('NOT_FOUND', `no DNS record ${id}`);
      const typeChanged = patch.type !== undefined && patch.type.toUpperCase() !== old.type;
      // Fields of the old type that the new one does not take are dropped, not carried over into a refusal.
      const carry: DnsRecordInput = typeChanged ? {} : old.type === 'MX' || old.type === 'SRV'
        ? { priority: old.priority, ...(old.type === 'SRV' ? { weight: old.weight, port: old.port } : {}), target: old.target }
        : { value: old.value };
      const merged: DnsRecordInput = { name: old.name, type: old.type, ...(old.ttl !== undefined ? { ttl: old.ttl } : {}), ...carry, ...patch };
      const fields = normalizeRecord(merged, this.zones);
      const all = (await this.all()).filter((r) => r.id !== id);
      const ttlChanged = patch.ttl !== undefined && (patch.ttl ?? undefined) !== old.ttl;
      const ttl = this.checkSet(fields, all, old, ttlChanged);
      const record: DnsRecord = { id, ...fields, createdAt: old.createdAt, updatedAt: new Date(this.now()).toISOString() };
      if (ttl === undefined) delete record.ttl; else record.ttl = ttl;
      const siblings = ttlChanged ? all.filter((r) => r.name === record.name && r.type === record.type && r.ttl !== ttl) : [];
      await this.deps.store.write([
        { type: 'put', collection: 'dnsRecords', key: id, value: record },
        ...siblings.map((r) => {
          const next: DnsRecord = { ...r, updatedAt: record.updatedAt };
          if (ttl === undefined) delete next.ttl; else next.ttl = ttl;
          return { type: 'put' as const, collection: 'dnsRecords' as const, key: r.id, value: next };
        }),
        this.deps.events.op(eventOf(by, {
          type: 'dns.record.updated', subject: record.name,
          data: { id, name: record.name, type: record.type, value: record.value, ...(siblings.length > 0 ? { rrsetTtl: ttl ?? null, alsoUpdated: siblings.map((r) => r.id) } : {}) },
        })),
      ]);
      notifyWatchers(this.deps.store);
      return record;
    });
  }

  async remove(id: string, by: DnsActor): Promise<DnsRecord | undefined> {
    return this.serialized(async () => {
      const old = await this.get(id);
      if (!old) return undefined;
      await this.deps.store.write([
        { type: 'del', collection: 'dnsRecords', key: id },
        this.deps.events.op(eventOf(by, { type: 'dns.record.deleted', subject: old.name, data: { id, name: old.name, type: old.type, value: old.value } })),
      ]);
      notifyWatchers(this.deps.store);
      return old;
    });
  }

  /**
   * The RRset rules against the other records (`all` without the one being changed). Returns the TTL the
   * record gets: its own, else its RRset's.
   */
  private checkSet(fields: DnsRecordFields, all: readonly DnsRecord[], old: DnsRecord | undefined, ttlGiven: boolean): number | undefined {
    const atName = all.filter((r) => r.name === fields.name);
    if (fields.type === 'CNAME' && atName.length > 0) {
      const other = atName[0]!;
      throw conflict('name', `${fields.name} already has ${other.type === 'CNAME' ? 'a CNAME' : `${other.type} data`}; a CNAME is alone at its name (RFC 1034 §3.6.2, RFC 2181 §10.1)`);
    }
    const cname = atName.find((r) => r.type === 'CNAME');
    if (cname) throw conflict('name', `${fields.name} is an alias (CNAME ${cname.value}); it cannot have ${fields.type} data too (RFC 1034 §3.6.2)`);
    const rrset = atName.filter((r) => r.type === fields.type);
    if (rrset.some((r) => r.value === fields.value)) throw conflict('value', `${fields.name} ${fields.type} ${fields.value} exists already (RFC 2181 §5: no duplicates in an RRset)`);
    const setTtl = rrset[0]?.ttl;
    if (rrset.length === 0) return fields.ttl;
    // A changed TTL (update) is applied to the whole RRset by the caller.
    if (old && ttlGiven) return fields.ttl;
    if (ttlGiven && fields.ttl !== setTtl) {
      throw invalid('ttl', `must be ${setTtl ?? 'unset (the server default)'}, the TTL of the other ${fields.type} records of ${fields.name}: an RRset has one TTL (RFC 2181 §5.2); change theirs by updating one with the new ttl`);
    }
    return setTtl;
  }

  private async all(): Promise<DnsRecord[]> {
    const out: DnsRecord[] = [];
    for await (const [, r] of this.deps.store.dnsRecords.entries()) out.push(r as DnsRecord);
    return out;
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}

function eventOf(by: DnsActor, input: AuditInput): NewEvent {
  return by.audit ? by.audit(input) : { ...input, actor: by.actor };
}
