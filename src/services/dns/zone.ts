// The authoritative data metalbox serves: the forward zone (the configured domain) and the reverse zones of the
// subnets, held in memory as RRsets by owner name, from three layers:
//
//   own     each apex's SOA and NS (the server itself, ns.<domain>) and the A records of ns.<domain>
//   manual  records added through the API (src/core/dns-records.ts checks them)
//   auto    A and PTR records made from machines and DHCP leases (auto.ts)
//
// Per name and type the first layer that has an RRset wins (own, then manual, then auto): a record added by
// hand replaces what metalbox made for that name and type. A CNAME added by hand stands alone at its name
// (RFC 1034 §3.6.2), so it hides the automatic records there.
//
// Lookups are plain Map reads by the lower-cased name (RFC 4343: names compare without ASCII case). Names that
// exist only as ancestors of other names (empty non-terminals, RFC 8020) are counted, so that NODATA and
// NXDOMAIN come out right.
//
// The SOA serial grows with every change that is seen: a change marks the zone dirty, and the next read of
// the serial (an SOA in an answer, a transfer) moves it to max(serial + 1, now in seconds).
import { CLASS, TYPE, txtStrings, type DnsRdata, type DnsRecord, type SoaData } from '../../protocols/dns/index.ts';
import type { DnsRecordFields } from '../../core/dns-records.ts';

export interface RRset {
  type: number;
  ttl: number;
  /** Ready to encode: owner lower case (a pointer to the question keeps the client's case). */
  records: DnsRecord[];
}

export type Node = Map<number, RRset>;

type Layer = 'own' | 'manual' | 'auto';

/** A record added through the API, as the store holds it (DnsRecord of src/core/dns-records.ts). */
export type ManualRecord = Omit<DnsRecordFields, 'type'> & { type: string };

export interface ZoneOptions {
  /** The configured domain (the forward zone). */
  forward: string;
  /** in-addr.arpa zones of the subnets. */
  reverse: readonly string[];
  /** TTL of the records metalbox makes, of manual records without one, and the SOA minimum (negative caching). */
  ttl: number;
  now?: () => number;
}

const TYPE_BY_NAME: Record<string, number> = { A: TYPE.A, AAAA: TYPE.AAAA, CNAME: TYPE.CNAME, TXT: TYPE.TXT, SRV: TYPE.SRV, MX: TYPE.MX, NS: TYPE.NS, PTR: TYPE.PTR };

/** The PTR owner of an IPv4 address (RFC 1035 §3.5). */
export function ptrName(ip: string): string {
  return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
}

export class Zone {
  readonly apexes: readonly string[];
  /** The merged view the server answers from. */
  private readonly nodes = new Map<string, Node>();
  private readonly layers: Record<Layer, Map<string, Node>> = { own: new Map(), manual: new Map(), auto: new Map() };
  /** Empty non-terminals: name -> how many names below it exist. */
  private readonly ents = new Map<string, number>();
  /** Names below an apex that own NS records: zone cuts (RFC 1034 §4.2.1). */
  private readonly cuts = new Set<string>();
  private readonly soas = new Map<string, { record: DnsRecord; data: SoaData }>();
  private serialValue: number;
  private dirty = false;
  private readonly now: () => number;
  readonly ttl: number;
  readonly nameserver: string;
  /** Told after each change (the service persists the serial). */
  onChange: (() => void) | undefined;

  constructor(opts: ZoneOptions) {
    this.now = opts.now ?? Date.now;
    this.ttl = opts.ttl;
    const apexes = [opts.forward, ...opts.reverse].map((z) => z.toLowerCase());
    // Longest first: a name under two apexes belongs to the deeper zone.
    this.apexes = [...new Set(apexes)].sort((a, b) => b.length - a.length);
    this.nameserver = `ns.${opts.forward.toLowerCase()}`;
    this.serialValue = Math.floor(this.now() / 1000) >>> 0;
    for (const apex of this.apexes) {
      const data: SoaData = {
        mname: this.nameserver, rname: `hostmaster.${opts.forward.toLowerCase()}`, serial: this.serialValue,
        // RFC 1912 §2.2 ranges; minimum is the negative-caching TTL (RFC 2308 §4).
        refresh: 3600, retry: 600, expire: 1_209_600, minimum: opts.ttl,
      };
      this.put('own', apex, TYPE.SOA, [data], opts.ttl);
      this.soas.set(apex, { record: this.layers.own.get(apex)!.get(TYPE.SOA)!.records[0]!, data });
      this.put('own', apex, TYPE.NS, [this.nameserver], opts.ttl);
    }
    this.dirty = false;
  }

  /** The zone apex a (lower-case) name is at or under; undefined when it is none of ours. */
  zoneOf(name: string): string | undefined {
    for (const apex of this.apexes) {
      if (name.length === apex.length ? name === apex : name.length > apex.length && name.endsWith(apex) && name.charCodeAt(name.length - apex.length - 1) === 0x2e) return apex;
    }
    return undefined;
  }

  get(name: string): Node | undefined {
    return this.nodes.get(name);
  }

  /** Whether a name exists: it owns records, or names below it do (RFC 8020). */
  exists(name: string): boolean {
    return this.nodes.has(name) || this.ents.has(name);
  }

  get hasCuts(): boolean {
    return this.cuts.size > 0;
  }

  /** The delegation point at or above `name` inside `apex`, if any (RFC 1034 §4.3.2 step 3b). */
  cutOf(name: string, apex: string): string | undefined {
    if (this.cuts.size === 0 || name === apex) return undefined;
    // From just below the apex down to the name itself.
    const labels = name.slice(0, name.length - apex.length - 1).split('.');
    let current = apex;
    for (let i = labels.length - 1; i >= 0; i--) {
      current = `${labels[i]}.${current}`;
      if (this.cuts.has(current)) return current;
    }
    return undefined;
  }

  /** The SOA record of a zone, its serial brought up to date. */
  soa(apex: string): DnsRecord {
    this.serial();
    return this.soas.get(apex)!.record;
  }

  /** The current serial; moves it if anything changed since it was last read. */
  serial(): number {
    if (this.dirty) {
      this.dirty = false;
      const next = Math.max((this.serialValue + 1) >>> 0, Math.floor(this.now() / 1000) >>> 0);
      this.setSerial(next);
    }
    return this.serialValue;
  }

  /** At start: never below a serial served before (the store keeps it across restarts). */
  restoreSerial(saved: number): void {
    if (saved >= this.serialValue) this.setSerial((saved + 1) >>> 0);
  }

  private setSerial(v: number): void {
    this.serialValue = v;
    for (const s of this.soas.values()) s.data.serial = v;
  }

  /** The records of one zone for a transfer: SOA first and last (RFC 5936 §2.2), everything else between. */
  transfer(apex: string): DnsRecord[] {
    const soa = this.soa(apex);
    const out: DnsRecord[] = [soa];
    for (const [name, node] of this.nodes) {
      if (this.zoneOf(name) !== apex) continue;
      for (const set of node.values()) if (set.type !== TYPE.SOA) out.push(...set.records);
    }
    out.push(soa);
    return out;
  }

  /** Number of names and of records served (metrics). */
  size(): { names: number; records: number } {
    let records = 0;
    for (const node of this.nodes.values()) for (const set of node.values()) records += set.records.length;
    return { names: this.nodes.size, records };
  }

  // ------------------------------------------------------------------------------------------------------
  // Changes

  /** The addresses of ns.<domain> (the server's own on the provisioning interfaces). */
  setNameserverAddresses(addresses: readonly string[]): void {
    this.put('own', this.nameserver, TYPE.A, [...addresses].sort(), this.ttl);
  }

  /** An automatic RRset (A or PTR); empty data removes it. */
  setAuto(name: string, type: number, data: readonly DnsRdata[]): void {
    this.put('auto', name, type, data, this.ttl);
  }

  /** Replaces every manual record. */
  setManual(records: readonly ManualRecord[]): void {
    const next = new Map<string, Map<number, { ttl: number; data: DnsRdata[] }>>();
    for (const r of records) {
      const type = TYPE_BY_NAME[r.type];
      const name = r.name.toLowerCase();
      if (type === undefined || this.zoneOf(name) === undefined) continue;
      let node = next.get(name);
      if (!node) next.set(name, (node = new Map()));
      let set = node.get(type);
      if (!set) node.set(type, (set = { ttl: r.ttl ?? this.ttl, data: [] }));
      set.data.push(manualData(type, r));
    }
    const names = new Set([...this.layers.manual.keys(), ...next.keys()]);
    for (const name of names) {
      const old = this.layers.manual.get(name);
      const fresh = next.get(name);
      for (const type of new Set([...(old?.keys() ?? []), ...(fresh?.keys() ?? [])])) {
        const set = fresh?.get(type);
        const before = old?.get(type);
        if (set && before && before.ttl === set.ttl && sameData(before.records.map((r) => r.data), set.data)) continue;
        this.put('manual', name, type, set?.data ?? [], set?.ttl ?? this.ttl);
      }
    }
  }

  private put(layer: Layer, name: string, type: number, data: readonly DnsRdata[], ttl: number): void {
    const map = this.layers[layer];
    let node = map.get(name);
    if (data.length === 0) {
      if (!node?.delete(type)) return;
      if (node.size === 0) map.delete(name);
    } else {
      if (!node) map.set(name, (node = new Map()));
      const old = node.get(type);
      if (old && old.ttl === ttl && sameData(old.records.map((r) => r.data), data)) return;
      node.set(type, { type, ttl, records: data.map((d) => ({ name, type, class: CLASS.IN, ttl, data: d })) });
    }
    this.merge(name);
  }

  /** Recomputes the served node of one name from the layers. */
  private merge(name: string): void {
    const own = this.layers.own.get(name);
    const manual = this.layers.manual.get(name);
    const auto = this.layers.auto.get(name);
    const merged: Node = new Map();
    for (const layer of [auto, manual, own]) if (layer) for (const [t, set] of layer) merged.set(t, set);
    const cname = manual?.get(TYPE.CNAME);
    if (cname && !own) {
      merged.clear();
      merged.set(TYPE.CNAME, cname);
    } else {
      merged.delete(TYPE.CNAME);
    }
    const apex = this.zoneOf(name);
    const had = this.nodes.has(name);
    if (merged.size === 0) {
      if (had) {
        this.nodes.delete(name);
        this.ancestors(name, apex, -1);
      }
    } else {
      this.nodes.set(name, merged);
      if (!had) this.ancestors(name, apex, +1);
    }
    if (apex !== undefined && name !== apex && merged.has(TYPE.NS)) this.cuts.add(name); else this.cuts.delete(name);
    this.dirty = true;
    this.onChange?.();
  }

  private ancestors(name: string, apex: string | undefined, delta: number): void {
    if (apex === undefined) return;
    let n = name;
    for (;;) {
      const dot = n.indexOf('.');
      if (dot < 0) return;
      n = n.slice(dot + 1);
      if (n.length < apex.length) return;
      const c = (this.ents.get(n) ?? 0) + delta;
      if (c <= 0) this.ents.delete(n); else this.ents.set(n, c);
      if (n === apex) return;
    }
  }
}

function manualData(type: number, r: ManualRecord): DnsRdata {
  switch (type) {
    case TYPE.MX: return { preference: r.priority ?? 0, exchange: r.target ?? '' };
    case TYPE.SRV: return { priority: r.priority ?? 0, weight: r.weight ?? 0, port: r.port ?? 0, target: r.target === '.' ? '' : r.target ?? '' };
    case TYPE.TXT: return txtStrings(r.value);
    default: return r.value;
  }
}

function sameData(a: readonly DnsRdata[], b: readonly DnsRdata[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (dataKey(a[i]!) !== dataKey(b[i]!)) return false;
  return true;
}

function dataKey(d: DnsRdata): string {
  if (typeof d === 'string') return d;
  if (Buffer.isBuffer(d)) return d.toString('hex');
  if (Array.isArray(d)) return d.map((b) => b.toString('hex')).join(',');
  return JSON.stringify(d);
}
