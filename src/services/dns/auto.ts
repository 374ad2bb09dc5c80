// The A and PTR records metalbox makes from DHCP leases and machines.
//
// A bound, unexpired lease names its address by the host name of the machine that owns the lease's MAC (the
// machine registry), else by the host name the client sent (DHCP option 12, checked by the DHCP policy).
// At one name, machines win: a machine's name gets, for each of its NICs (MACs), the address of that NIC's lease
// written last (a NIC holds two leases when two DHCP clients with different client identifiers ran on it: the
// ephemeral environment's and the installed system's, and the older one is not released); a name only clients
// claimed goes to the lease written last (the latest expiry), so a stale client cannot keep a name another took.
// PTR records follow the A records: an address gets a PTR when it is in its name's A set and inside one of
// the reverse zones.
//
// Every change is incremental (one lease, one machine): a DHCP storm costs a few Map operations per lease.
import type { Zone } from './zone.ts';
import { ptrName } from './zone.ts';
import { TYPE } from '../../protocols/dns/index.ts';

export interface LeaseInput {
  ip: string;
  mac: string;
  hostname?: string;
  state: string;
  /** ISO time. */
  expiresAt: string;
}

interface Lease { ip: string; mac: string; hostname?: string; expiresAt: number }

interface Claim { machine: boolean; expiresAt: number; mac: string }

export class AutoRecords {
  private readonly leases = new Map<string, Lease>();
  private readonly byMac = new Map<string, Set<string>>();
  /** name -> ip -> claim. */
  private readonly claims = new Map<string, Map<string, Claim>>();
  /** ip -> the name it claims. */
  private readonly nameOf = new Map<string, string>();
  private nextExpiry = Infinity;

  constructor(
    private readonly zone: Zone,
    private readonly domain: string,
    /** The host name of the machine that has this MAC, if any. */
    private readonly machineName: (mac: string) => string | undefined,
    private readonly now: () => number = Date.now,
  ) {}

  get count(): number {
    return this.leases.size;
  }

  /** A lease as written by the DHCP server (bound, released, declined, offered). */
  lease(l: LeaseInput): void {
    const expiresAt = Date.parse(l.expiresAt);
    const live = l.state === 'bound' && Number.isFinite(expiresAt) && expiresAt > this.now();
    const old = this.leases.get(l.ip);
    if (!live) {
      if (old) this.drop(old);
      return;
    }
    if (old && old.mac !== l.mac) this.drop(old);
    const lease: Lease = { ip: l.ip, mac: l.mac, expiresAt, ...(l.hostname ? { hostname: l.hostname.toLowerCase() } : {}) };
    this.leases.set(l.ip, lease);
    let ips = this.byMac.get(l.mac);
    if (!ips) this.byMac.set(l.mac, (ips = new Set()));
    ips.add(l.ip);
    if (expiresAt < this.nextExpiry) this.nextExpiry = expiresAt;
    this.reclaim(l.ip);
  }

  /** A machine's host name or MACs changed (or it came or went): its leases are named again. */
  macsChanged(macs: Iterable<string>): void {
    for (const mac of macs) for (const ip of this.byMac.get(mac) ?? []) this.reclaim(ip);
  }

  /** Drops leases past their end; returns how many. Cheap when none is due. */
  expire(): number {
    const now = this.now();
    if (now < this.nextExpiry) return 0;
    let n = 0;
    let next = Infinity;
    for (const l of [...this.leases.values()]) {
      if (l.expiresAt <= now) { this.drop(l); n++; } else if (l.expiresAt < next) next = l.expiresAt;
    }
    this.nextExpiry = next;
    return n;
  }

  private drop(l: Lease): void {
    this.leases.delete(l.ip);
    const ips = this.byMac.get(l.mac);
    ips?.delete(l.ip);
    if (ips?.size === 0) this.byMac.delete(l.mac);
    this.reclaim(l.ip);
  }

  /** Works out which name an address claims now, and refreshes the names and addresses that touches. */
  private reclaim(ip: string): void {
    const lease = this.leases.get(ip);
    const before = this.nameOf.get(ip);
    const machine = lease ? this.machineName(lease.mac) : undefined;
    const host = machine ?? lease?.hostname;
    const after = host ? `${host}.${this.domain}` : undefined;
    if (before !== undefined && before !== after) {
      const c = this.claims.get(before);
      c?.delete(ip);
      if (c?.size === 0) this.claims.delete(before);
      this.nameOf.delete(ip);
    }
    if (after !== undefined && lease) {
      let c = this.claims.get(after);
      if (!c) this.claims.set(after, (c = new Map()));
      c.set(ip, { machine: machine !== undefined, expiresAt: lease.expiresAt, mac: lease.mac });
      this.nameOf.set(ip, after);
    }
    const touched = new Set<string>([ip]);
    for (const name of new Set([before, after])) {
      if (name === undefined) continue;
      this.refreshName(name);
      for (const other of this.claims.get(name)?.keys() ?? []) touched.add(other);
    }
    for (const a of touched) this.refreshPtr(a);
  }

  /** The addresses a name's A RRset holds. */
  private effective(name: string): string[] {
    const c = this.claims.get(name);
    if (!c || c.size === 0) return [];
    const latestPerMac = new Map<string, [string, Claim]>();
    for (const e of c) {
      if (!e[1].machine) continue;
      const held = latestPerMac.get(e[1].mac);
      if (!held || e[1].expiresAt > held[1].expiresAt) latestPerMac.set(e[1].mac, e);
    }
    if (latestPerMac.size > 0) return [...latestPerMac.values()].map(([ip]) => ip).sort(compareIPv4);
    let best: [string, Claim] | undefined;
    for (const e of c) if (!best || e[1].expiresAt > best[1].expiresAt) best = e;
    return [best![0]];
  }

  private refreshName(name: string): void {
    this.zone.setAuto(name, TYPE.A, this.effective(name));
  }

  private refreshPtr(ip: string): void {
    const ptr = ptrName(ip);
    if (this.zone.zoneOf(ptr) === undefined) return;
    const name = this.nameOf.get(ip);
    this.zone.setAuto(ptr, TYPE.PTR, name !== undefined && this.effective(name).includes(ip) ? [name] : []);
  }
}

function compareIPv4(a: string, b: string): number {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < 4; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return 0;
}
