// IPv4 address allocation for one subnet: who holds which address until when, and which address a
// client gets next. Pure: no clock (callers pass `now` in ms), no I/O; the DHCP service persists what
// this decides and only then answers.
//
// Cost stays O(1)-ish as leases grow: free addresses wait in a FIFO queue (released and expired
// addresses go to its tail, so a client coming back soon finds its old address still free), and
// expiries sit in a min-heap that is drained lazily when an address is needed.
import type { Cidr, IPv4Range } from '../lib/ipv4.ts';
import { cidrContains, formatIPv4, parseIPv4 } from '../lib/ipv4.ts';
import type { LeaseRecord } from '../store/types.ts';

export interface PoolConfig {
  /** Subnet id: the CIDR text as configured. */
  id: string;
  cidr: Cidr;
  ranges: readonly IPv4Range[];
  excluded: readonly IPv4Range[];
  /** MAC -> reserved address and host name, at construction; `setReservations` replaces them later. */
  reservations: ReadonlyMap<string, { ip: number; hostname?: string }>;
}

export type PoolReservations = ReadonlyMap<string, { ip: number; hostname?: string }>;

/** Who asks: the client key is the client id (option 61) when sent, else the MAC (RFC 2131 §4.2). */
export interface PoolClient { key: string; mac: string; clientId?: string; hostname?: string }

export type HolderState = LeaseRecord['state'];

export interface Holder {
  ip: number;
  clientKey: string;
  mac: string;
  clientId?: string;
  hostname?: string;
  state: HolderState;
  /** ms since the epoch. */
  expiresAt: number;
}

export interface PoolStats { size: number; bound: number; offered: number; declined: number; free: number; reserved: number }

export class LeasePool {
  private readonly holders = new Map<number, Holder>();
  /** The address a client holds or last held, for giving it back (RFC 2131 §4.3.1). */
  private readonly byClient = new Map<string, number>();
  private readonly reservedIps = new Map<number, string>();
  private readonly freeQueue: number[] = [];
  /** Addresses in freeQueue (no duplicates, so the queue stays bounded by the pool size). */
  private readonly queued = new Set<number>();
  private freeHead = 0;
  private readonly expiries = new MinHeap();
  /** The reservations in force (config.reservations until setReservations replaces them). */
  private reservations: PoolReservations;
  private poolSize = 0;

  constructor(readonly config: PoolConfig) {
    this.reservations = config.reservations;
    for (const [mac, r] of config.reservations) this.reservedIps.set(r.ip, mac);
    for (const r of config.ranges) {
      for (let ip = r.start; ip <= r.end; ip++) {
        if (this.inPool(ip)) { this.freeQueue.push(ip); this.queued.add(ip); this.poolSize++; }
      }
    }
  }

  /** Addresses in the dynamic ranges, less excluded and reserved ones. */
  get size(): number {
    return this.poolSize;
  }

  /**
   * Replaces the reservations while serving (the API adds and removes them). A newly reserved address leaves
   * the free pool at once; a client that holds it keeps it until its lease ends (the reserved MAC gets no
   * offer until then). An address no longer reserved joins the pool. Validity (inside the subnet, one
   * address per MAC, not excluded) is the caller's: the config loader and src/core/reservations.ts check it.
   */
  setReservations(reservations: PoolReservations): void {
    const before = [...this.reservedIps.keys()];
    this.reservations = new Map(reservations);
    this.reservedIps.clear();
    for (const [mac, r] of this.reservations) this.reservedIps.set(r.ip, mac);
    for (const ip of before) if (!this.reservedIps.has(ip)) this.pushFree(ip);
    // Newly reserved addresses may still sit in the free queue: pick() skips them (available() refuses them).
    let size = 0;
    for (const r of this.config.ranges) for (let ip = r.start; ip <= r.end; ip++) if (this.inPool(ip)) size++;
    this.poolSize = size;
  }

  /** Loads leases from the store (at start). Records of other subnets or outside it are ignored. */
  load(records: Iterable<LeaseRecord>): void {
    for (const rec of records) {
      if (rec.subnet !== this.config.id) continue;
      const ip = parseIPv4(rec.ip);
      if (ip === undefined || !cidrContains(this.config.cidr, ip)) continue;
      const clientKey = rec.clientId ? `id:${rec.clientId}` : `mac:${rec.mac}`;
      this.setHolder({ ip, clientKey, mac: rec.mac, clientId: rec.clientId, hostname: rec.hostname, state: rec.state, expiresAt: Date.parse(rec.expiresAt) });
    }
  }

  holder(ip: number): Holder | undefined {
    return this.holders.get(ip);
  }

  /** The address reserved for this MAC, if any. */
  reservation(mac: string): { ip: number; hostname?: string } | undefined {
    return this.reservations.get(mac);
  }

  /** The address `client` currently holds (offered or bound, unexpired), if any. */
  current(client: PoolClient, now: number): Holder | undefined {
    const ip = this.byClient.get(client.key);
    if (ip === undefined) return undefined;
    const h = this.holders.get(ip);
    return h && h.clientKey === client.key && live(h, now) ? h : undefined;
  }

  /**
   * Whether `client` may have `ip` now: inside the subnet; its reservation if it has one (and nobody
   * else's reservation); otherwise in a dynamic range, not excluded, and free or already its own.
   */
  available(ip: number, client: PoolClient, now: number): boolean {
    if (!cidrContains(this.config.cidr, ip)) return false;
    const reserved = this.reservations.get(client.mac);
    if (reserved) return reserved.ip === ip && this.heldByOtherOrQuarantined(ip, client, now) === false;
    if (this.reservedIps.has(ip) || !this.inPool(ip)) return false;
    return this.heldByOtherOrQuarantined(ip, client, now) === false;
  }

  /**
   * The address to offer `client` (DISCOVER): its reservation, else the address it holds or last held,
   * else the one it asks for (option 50) if available, else the next free one. `undefined`: pool full.
   */
  pick(client: PoolClient, requested: number | undefined, now: number): number | undefined {
    const reserved = this.reservations.get(client.mac);
    if (reserved) return this.available(reserved.ip, client, now) ? reserved.ip : undefined;
    const last = this.byClient.get(client.key);
    if (last !== undefined && this.available(last, client, now)) return last;
    if (requested !== undefined && this.available(requested, client, now)) return requested;
    this.reclaim(now);
    while (this.freeHead < this.freeQueue.length) {
      const ip = this.freeQueue[this.freeHead++]!;
      this.queued.delete(ip);
      if (this.freeHead > 4096 && this.freeHead * 2 > this.freeQueue.length) this.compact();
      if (this.available(ip, client, now)) return ip;
      // Not free any more (taken by a REQUEST for it, or re-bound): it re-enters the queue when freed.
    }
    return undefined;
  }

  /** Holds `ip` for `client` until `until` (an OFFER). Nothing to persist: offers are not promises. */
  offer(ip: number, client: PoolClient, until: number): void {
    this.setHolder({ ip, clientKey: client.key, mac: client.mac, clientId: client.clientId, hostname: client.hostname, state: 'offered', expiresAt: until });
  }

  /**
   * Binds `ip` to `client` until `until` (an ACK). Returns the lease records to persist before the ACK
   * leaves (the new one, and the client's previous address in this subnet, now released) and `undo`,
   * which restores the pool if persisting fails.
   */
  bind(ip: number, client: PoolClient, until: number, now: number): { records: LeaseRecord[]; undo: () => void } {
    const before = this.capture(ip, this.byClient.get(client.key));
    const records: LeaseRecord[] = [];
    const previous = this.current(client, now);
    if (previous && previous.ip !== ip) {
      records.push(this.record(this.setHolder({ ...previous, state: 'released', expiresAt: now })));
      this.pushFree(previous.ip);
    }
    const hostname = client.hostname ?? this.reservations.get(client.mac)?.hostname;
    records.push(this.record(this.setHolder({ ip, clientKey: client.key, mac: client.mac, clientId: client.clientId, hostname, state: 'bound', expiresAt: until })));
    return { records, undo: () => this.restore(before) };
  }

  /** A RELEASE: the address goes back to the pool (the client keeps its claim to get it back first). */
  release(ip: number, client: PoolClient, now: number): { records: LeaseRecord[]; undo: () => void } | undefined {
    const h = this.holders.get(ip);
    if (!h || h.clientKey !== client.key || h.state !== 'bound') return undefined;
    const before = this.capture(ip, undefined);
    const rec = this.record(this.setHolder({ ...h, state: 'released', expiresAt: now }));
    this.pushFree(ip);
    return { records: [rec], undo: () => this.restore(before) };
  }

  /** A DECLINE: someone else uses `ip`; keep it out of the pool until `until` (RFC 2131 §4.3.3). */
  decline(ip: number, client: PoolClient, until: number): { records: LeaseRecord[]; undo: () => void } | undefined {
    if (!cidrContains(this.config.cidr, ip)) return undefined;
    const h = this.holders.get(ip);
    if (h && h.clientKey !== client.key && live(h, until - 1)) return undefined;
    const before = this.capture(ip, this.byClient.get(client.key));
    const rec = this.record(this.setHolder({ ip, clientKey: `declined:${client.key}`, mac: client.mac, state: 'declined', expiresAt: until }));
    if (this.byClient.get(client.key) === ip) this.byClient.delete(client.key);
    return { records: [rec], undo: () => this.restore(before) };
  }

  /** Forgets an offer that was not taken up (another server chosen). */
  dropOffer(ip: number, client: PoolClient): void {
    const h = this.holders.get(ip);
    if (h && h.clientKey === client.key && h.state === 'offered') {
      this.holders.delete(ip);
      this.pushFree(ip);
    }
  }

  stats(now: number): PoolStats {
    let bound = 0, offered = 0, declined = 0, inRanges = 0;
    for (const h of this.holders.values()) {
      if (!live(h, now)) continue;
      if (h.state === 'bound') bound++;
      else if (h.state === 'offered') offered++;
      else if (h.state === 'declined') declined++;
      if (this.inPool(h.ip)) inRanges++;
    }
    return { size: this.size, bound, offered, declined, free: this.size - inRanges, reserved: this.reservedIps.size };
  }

  /** Every held address (for the API and tests). */
  *entries(): IterableIterator<Holder> {
    yield* this.holders.values();
  }

  /** Lease record of a holder, as stored. */
  record(h: Holder): LeaseRecord {
    const rec: LeaseRecord = { ip: formatIPv4(h.ip), mac: h.mac, subnet: this.config.id, expiresAt: isoTime(h.expiresAt), state: h.state };
    if (h.hostname !== undefined) rec.hostname = h.hostname;
    if (h.clientId !== undefined) rec.clientId = h.clientId;
    return rec;
  }

  private inPool(ip: number): boolean {
    if (ip === this.config.cidr.network || ip === this.config.cidr.broadcast) return this.config.cidr.prefix >= 31;
    if (this.reservedIps.has(ip)) return false;
    for (const e of this.config.excluded) if (ip >= e.start && ip <= e.end) return false;
    for (const r of this.config.ranges) if (ip >= r.start && ip <= r.end) return true;
    return false;
  }

  private heldByOtherOrQuarantined(ip: number, client: PoolClient, now: number): boolean {
    const h = this.holders.get(ip);
    if (!h || !live(h, now)) return false;
    return h.state === 'declined' || h.clientKey !== client.key;
  }

  private setHolder(h: Holder): Holder {
    const old = this.holders.get(h.ip);
    if (old && old.clientKey !== h.clientKey && this.byClient.get(old.clientKey) === h.ip) this.byClient.delete(old.clientKey);
    this.holders.set(h.ip, h);
    // An offer does not take the client's pointer from its bound lease elsewhere: the REQUEST that takes the
    // offer must find that lease (bind releases it), else the client would hold two bound addresses (a moved
    // reservation, a client that asked for another address). The pointer moves at bind.
    const pointed = this.byClient.get(h.clientKey);
    const keep = h.state === 'offered' && pointed !== undefined && pointed !== h.ip && this.holders.get(pointed)?.clientKey === h.clientKey && this.holders.get(pointed)?.state === 'bound';
    if (h.state !== 'declined' && !keep) this.byClient.set(h.clientKey, h.ip);
    if (h.state !== 'released') this.expiries.push(h.expiresAt, h.ip);
    return h;
  }

  /** Returns addresses whose hold has ended to the free queue. */
  private reclaim(now: number): void {
    while (this.expiries.size > 0 && this.expiries.peekKey()! <= now) {
      const [at, ip] = this.expiries.pop()!;
      const h = this.holders.get(ip);
      if (h && h.expiresAt === at && h.state !== 'released') {
        // Keep the holder (as released) so the same client gets the address back first.
        if (h.state === 'declined') this.holders.delete(ip);
        else this.holders.set(ip, { ...h, state: 'released' });
        this.pushFree(ip);
      }
    }
  }

  private pushFree(ip: number): void {
    if (this.queued.has(ip) || !this.inPool(ip)) return;
    this.queued.add(ip);
    this.freeQueue.push(ip);
  }

  private compact(): void {
    this.freeQueue.splice(0, this.freeHead);
    this.freeHead = 0;
  }

  /**
   * What `restore` needs to undo a change to `ip` and `other` (when given): their holders, and where the
   * clients of those holders pointed. Fields rather than collections: a bind captures on every ACK.
   */
  private capture(ip: number, other: number | undefined): Captured {
    const h1 = this.holders.get(ip);
    const has2 = other !== undefined && other !== ip;
    const h2 = has2 ? this.holders.get(other) : undefined;
    const k1 = h1?.clientKey;
    const k2 = h2 !== undefined && h2.clientKey !== k1 ? h2.clientKey : undefined;
    return {
      ip1: ip, h1, ip2: has2 ? other : undefined, h2,
      k1, p1: k1 === undefined ? undefined : this.byClient.get(k1),
      k2, p2: k2 === undefined ? undefined : this.byClient.get(k2),
    };
  }

  private restore(c: Captured): void {
    this.restoreHolder(c.ip1, c.h1);
    if (c.ip2 !== undefined) this.restoreHolder(c.ip2, c.h2);
    if (c.k1 !== undefined && c.p1 !== undefined) this.byClient.set(c.k1, c.p1);
    if (c.k2 !== undefined && c.p2 !== undefined) this.byClient.set(c.k2, c.p2);
  }

  private restoreHolder(ip: number, h: Holder | undefined): void {
    const now = this.holders.get(ip);
    if (now && this.byClient.get(now.clientKey) === ip) this.byClient.delete(now.clientKey);
    if (h) this.holders.set(ip, h); else this.holders.delete(ip);
  }
}

/** See LeasePool.capture. */
interface Captured {
  ip1: number;
  h1: Holder | undefined;
  ip2: number | undefined;
  h2: Holder | undefined;
  /** Client keys of h1 and h2 (k2 only when it differs), and where byClient pointed them. */
  k1: string | undefined;
  p1: number | undefined;
  k2: string | undefined;
  p2: number | undefined;
}

// ISO text of the last expiry formatted: the leases of one burst share their `now`, hence their expiry.
let lastIsoMs = Number.NaN;
let lastIso = '';
function isoTime(ms: number): string {
  if (ms !== lastIsoMs) {
    lastIso = new Date(ms).toISOString();
    lastIsoMs = ms;
  }
  return lastIso;
}

function live(h: Holder, now: number): boolean {
  return h.state !== 'released' && h.expiresAt > now;
}


/** Binary min-heap of (key, value) pairs. */
class MinHeap {
  private readonly keys: number[] = [];
  private readonly values: number[] = [];
  get size(): number { return this.keys.length; }
  peekKey(): number | undefined { return this.keys[0]; }
  push(key: number, value: number): void {
    let i = this.keys.length;
    this.keys.push(key); this.values.push(value);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.keys[p]! <= key) break;
      this.keys[i] = this.keys[p]!; this.values[i] = this.values[p]!;
      i = p;
    }
    this.keys[i] = key; this.values[i] = value;
  }
  pop(): [number, number] | undefined {
    if (this.keys.length === 0) return undefined;
    const top: [number, number] = [this.keys[0]!, this.values[0]!];
    const k = this.keys.pop()!, v = this.values.pop()!;
    const n = this.keys.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i, mk = k;
        if (l < n && this.keys[l]! < mk) { m = l; mk = this.keys[l]!; }
        if (r < n && this.keys[r]! < mk) { m = r; }
        if (m === i) break;
        this.keys[i] = this.keys[m]!; this.values[i] = this.values[m]!;
        i = m;
      }
      this.keys[i] = k; this.values[i] = v;
    }
    return top;
  }
}
