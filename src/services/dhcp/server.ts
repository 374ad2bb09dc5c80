// The DHCP service: one device-bound socket per provisioning interface (so we know where a broadcast
// came in, and never answer on any other network), the RFC 2131 §4.1 reply-destination rules, and the
// durability rule: a lease change is on disk before the reply that announces it leaves.
import type { Config, SubnetConfig } from '../../config/schema.ts';
import { LeasePool } from '../../core/lease-pool.ts';
import { errnoCode, isMetalboxError, type MetalboxError } from '../../lib/errors.ts';
import { cidrContains, parseCidr, parseIPv4, parseRange, type Cidr } from '../../lib/ipv4.ts';
import { limitedLogger, type LimitedLog } from '../../lib/log-limit.ts';
import type { Logger } from '../../lib/logger.ts';
import { parseMac } from '../../lib/mac.ts';
import type { Metrics } from '../../lib/metrics.ts';
import { arpAdd, openUdpSocket, type Datagram, type UdpSocket } from '../../lib/udp-socket.ts';
import { decodeDhcp, encodeDhcp, hwAddress, MESSAGE_TYPE, peekMessageType, type DhcpPacket } from '../../protocols/dhcp/index.ts';
import type { EventLog } from '../../core/events.ts';
import type { LeaseRecord, Store, WriteOp } from '../../store/types.ts';
import type { Reservation } from '../../core/reservations.ts';
import type { Service } from '../service.ts';
import type { BootDecider } from './boot.ts';
import { isUrgent, WorkQueue } from './work-queue.ts';
import { handleDhcp, handleProxy, type Decision, type LeaseChange, type SubnetRuntime } from './policy.ts';
import { Counter, Gauge, Histogram } from 'prom-client';

/** PXE boot server port (PXE spec 2.1 §2.2.6): the proxyDHCP REQUEST/ACK exchange. */
export const PXE_PORT = 4011;
const BROADCAST_FLAG = 0x8000;
/**
 * Queued datagrams are handled for at most this long per turn of the event loop, which then reads the
 * sockets again (into the work queue, see work-queue.ts): reading is cheap, handling is not.
 */
const DRAIN_SLICE_MS = 2;
/** Datagrams read per wakeup: the work queue, not the kernel's receive queue, decides what to drop. */
const READ_BATCH = 1024;

interface Queued { ifname: string; pxePort: boolean; d: Datagram }

/** An interface's IPv4 addresses, as text and parsed (same order). */
type Addresses = string[] & { numbers: number[] };
const NO_ADDRESSES: Addresses = Object.assign([], { numbers: [] });

const MESSAGE_NAMES: Record<number, string> = { 1: 'discover', 2: 'offer', 3: 'request', 4: 'decline', 5: 'ack', 6: 'nak', 7: 'release', 8: 'inform' };

export interface InterfaceAddress { address: string; netmask: string; family: string }

export interface DhcpServiceDeps {
  config: Config;
  store: Store;
  /** The process's one event log (lease changes are events). */
  events: EventLog;
  logger: Logger;
  metrics: Metrics;
  boot: BootDecider;
  /** IPv4 addresses by interface name (os.networkInterfaces() in production). */
  interfaceAddresses: () => Record<string, InterfaceAddress[] | undefined>;
  /**
   * Reservations kept in the store (src/core/reservations.ts ReservationBook; the API adds them), by subnet
   * CIDR as configured: applied beside the config's at start; later changes arrive through setReservations.
   */
  reservations?: { all(): Promise<ReadonlyMap<string, readonly Reservation[]>> };
  /** Told of every persisted lease change (DNS records, boot timeline). */
  onLeaseChange?: (change: LeaseChange) => void;
  now?: () => number;
}

interface Listener { ifname: string; socket: UdpSocket; pxePort: boolean }

interface SubnetEntry extends SubnetRuntime { proxy: boolean }

export class DhcpService implements Service {
  readonly name = 'dhcp';
  private readonly listeners: Listener[] = [];
  private subnets: SubnetEntry[] = [];
  private readonly log: LimitedLog;
  private readonly now: () => number;
  private readonly m: ReturnType<typeof createDhcpMetrics>;
  private readonly clientPort: number;
  private inflight = 0;
  private addrCache: { at: number; byIf: Map<string, Addresses> } = { at: -Infinity, byIf: new Map() };
  private readonly queue: WorkQueue<Queued>;
  private drainScheduled = false;
  private readonly drainBound = (): void => this.drain();

  constructor(private readonly deps: DhcpServiceDeps) {
    this.log = limitedLogger(deps.logger);
    this.now = deps.now ?? Date.now;
    this.m = createDhcpMetrics(deps.metrics, () => this.subnets);
    this.clientPort = deps.config.dhcp.port === 67 ? 68 : deps.config.dhcp.port + 1;
    this.queue = new WorkQueue((reason) => this.m.dropped.inc({ reason }));
  }

  async start(): Promise<void> {
    const { config } = this.deps;
    this.subnets = config.subnets.map((s) => subnetEntry(s));
    const stored = await this.deps.reservations?.all();
    for (const s of this.subnets) {
      const extra = stored?.get(s.config.cidr);
      if (extra && extra.length > 0) s.pool.setReservations(reservationMap(s.config, extra));
    }
    await this.loadLeases();
    const addrs = this.deps.interfaceAddresses();
    const needPxePort = this.subnets.some((s) => s.proxy);
    try {
      for (const ifname of config.interfaces) {
        const v4 = (addrs[ifname] ?? []).filter((a) => a.family === 'IPv4');
        if (!this.subnets.some((s) => v4.some((a) => cidrContains(s.cidr, parseIPv4(a.address)!)))) {
          this.deps.logger.warn({ ifname, addresses: v4.map((a) => a.address) }, 'no configured subnet contains an address of this interface: only relayed requests will be served on it');
        }
        this.listen(ifname, config.dhcp.port, false);
        if (needPxePort) this.listen(ifname, PXE_PORT, true);
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.deps.logger.info({ interfaces: config.interfaces, subnets: this.subnets.map((s) => s.config.cidr), port: config.dhcp.port }, 'dhcp listening');
  }

  async stop(): Promise<void> {
    for (const l of this.listeners.splice(0)) l.socket.close();
    this.queue.clear();
    // Let replies whose leases are being written finish, so nothing acknowledged is half done.
    for (let i = 0; i < 100 && this.inflight > 0; i++) await new Promise((r) => setTimeout(r, 20));
  }

  /**
   * The store's reservations of one subnet changed (the API): they apply beside the config's from the next
   * packet on. Before start() there is no pool to change; start() reads them itself.
   */
  setReservations(cidr: string, list: readonly Reservation[]): void {
    const s = this.subnets.find((e) => e.config.cidr === cidr);
    if (s && !s.proxy) s.pool.setReservations(reservationMap(s.config, list));
  }

  /** Current holders of every subnet (tests, API). */
  pools(): ReadonlyMap<string, LeasePool> {
    return new Map(this.subnets.map((s) => [s.config.cidr, s.pool]));
  }

  private listen(ifname: string, port: number, pxePort: boolean): void {
    // No SO_REUSEADDR: sockets bound to different devices share the port anyway, and another DHCP server
    // on this host (dnsmasq on 0.0.0.0:67) must make us fail at start, not split the traffic silently.
    const socket = openUdpSocket({ port, device: ifname, broadcast: true, reuseAddress: false, receiveBufferSize: 4 * 1024 * 1024, readBatch: READ_BATCH }, (d) => this.enqueue(ifname, pxePort, d));
    this.listeners.push({ ifname, socket, pxePort });
  }

  private async loadLeases(): Promise<void> {
    const records: LeaseRecord[] = [];
    for await (const [, rec] of this.deps.store.leases.entries()) records.push(rec);
    for (const s of this.subnets) s.pool.load(records);
  }

  private enqueue(ifname: string, pxePort: boolean, d: Datagram): void {
    this.m.received.inc();
    // The PXE port (4011) carries the second half of an exchange, like a REQUEST.
    this.queue.push({ ifname, pxePort, d }, pxePort || isUrgent(peekMessageType(d.data)), this.now());
    if (!this.drainScheduled) {
      this.drainScheduled = true;
      setImmediate(this.drainBound);
    }
  }

  /** Handles queued datagrams, REQUESTs first, for at most DRAIN_SLICE_MS; reschedules itself if any are left. */
  private drain(): void {
    this.drainScheduled = false;
    const until = performance.now() + DRAIN_SLICE_MS;
    do {
      const next = this.queue.next(this.now());
      if (next === undefined) return;
      this.handle(next.ifname, next.pxePort, next.d);
    } while (performance.now() < until);
    if (this.queue.length > 0) {
      this.drainScheduled = true;
      setImmediate(this.drainBound);
    }
  }

  private handle(ifname: string, pxePort: boolean, d: Datagram): void {
    let req: DhcpPacket;
    try {
      req = decodeDhcp(d.data);
    } catch (err) {
      const code = isMetalboxError(err) ? err.code : 'DHCP_DECODE';
      this.m.dropped.inc({ reason: 'malformed' });
      this.log('warn', `malformed:${ifname}`, { ifname, from: `${d.address}:${d.port}`, code, offset: (err as MetalboxError).details?.offset, bytes: d.data.length }, 'malformed DHCP packet dropped');
      return;
    }
    const type = req.options.messageType;
    this.m.requestsByType(type).inc();
    if (req.op !== 1) return this.drop('not-a-request', ifname, req);
    // hwAddress gives the canonical MAC text (lower-case, colons) for Ethernet, as parseMac would.
    const mac = req.htype === 1 && req.hlen === 6 && req.chaddr.length >= 6 ? hwAddress(req) : undefined;
    if (mac === undefined) return this.drop('unsupported-hardware', ifname, req);

    const where = this.locate(ifname, req, d);
    if (!where) return this.drop('no-subnet', ifname, req);
    if (pxePort && !where.subnet.proxy) return this.drop('pxe-port-without-proxy', ifname, req);

    const ctx = {
      now: this.now(),
      subnet: where.subnet,
      serverIp: where.serverIp,
      domain: this.deps.config.domain,
      offerSeconds: this.deps.config.dhcp.offerSeconds,
      declineSeconds: this.deps.config.dhcp.declineSeconds,
      defaultDns: this.deps.config.dns.enabled ? [where.serverIp] : [],
      defaultNtp: this.deps.config.ntp.enabled ? [where.serverIp] : [],
      boot: this.deps.boot,
    };
    const decision = where.subnet.proxy ? handleProxy(req, mac, ctx, pxePort) : handleDhcp(req, mac, ctx);
    void this.carryOut(decision, req, mac, ifname, pxePort, d, where.subnet);
  }

  /** Which subnet serves this request, and our address for it (option 54, next-server). */
  private locate(ifname: string, req: DhcpPacket, d: Datagram): { subnet: SubnetEntry; serverIp: string } | undefined {
    const ours = this.addressesOf(ifname);
    if (req.giaddr !== '0.0.0.0') {
      // Relayed (§4.3.1): the subnet that contains the relay's address; the relay sent to one of ours.
      const giaddr = parseIPv4(req.giaddr)!;
      const subnet = this.subnets.find((s) => cidrContains(s.cidr, giaddr));
      if (!subnet) return undefined;
      const serverIp = ours.includes(d.localAddress) ? d.localAddress : ours[0];
      return serverIp ? { subnet, serverIp } : undefined;
    }
    for (const s of this.subnets) {
      const i = ours.numbers.findIndex((a) => cidrContains(s.cidr, a));
      if (i >= 0) return { subnet: s, serverIp: ours[i]! };
    }
    return undefined;
  }

  /**
   * Our IPv4 addresses on an interface. Reading them costs syscalls, so they are cached and re-read at
   * most every few seconds (an address added after start is picked up without a restart).
   */
  private addressesOf(ifname: string): Addresses {
    const now = this.now();
    if (now - this.addrCache.at > 5000) {
      const all = this.deps.interfaceAddresses();
      const byIf = new Map<string, Addresses>();
      for (const [name, list] of Object.entries(all)) {
        const v4 = (list ?? []).filter((a) => a.family === 'IPv4' && parseIPv4(a.address) !== undefined).map((a) => a.address);
        byIf.set(name, Object.assign(v4, { numbers: v4.map((a) => parseIPv4(a)!) }));
      }
      this.addrCache = { at: now, byIf };
    }
    return this.addrCache.byIf.get(ifname) ?? NO_ADDRESSES;
  }

  private async carryOut(decision: Decision, req: DhcpPacket, mac: string, ifname: string, pxePort: boolean, d: Datagram, subnet: SubnetEntry): Promise<void> {
    if (decision.kind === 'drop') {
      if (decision.reason === 'pool-exhausted') {
        this.m.exhausted.inc({ subnet: subnet.config.cidr });
        this.log('warn', `exhausted:${subnet.config.cidr}`, { subnet: subnet.config.cidr, mac }, 'address pool exhausted: no address for a new client');
      }
      return this.drop(decision.reason, ifname, req);
    }
    const persist = decision.persist;
    if (persist) {
      this.inflight++;
      const t0 = process.hrtime.bigint();
      try {
        await this.deps.store.write(this.writeOps(persist.records, persist.changes));
      } catch (err) {
        persist.undo();
        this.m.dropped.inc({ reason: 'persist-failed' });
        this.log('error', 'persist-failed', { err: { code: isMetalboxError(err) ? err.code : errnoCode(err), message: (err as Error).message }, mac }, 'lease not written: no reply sent');
        return;
      } finally {
        this.inflight--;
        this.m.persistSeconds.observe(Number(process.hrtime.bigint() - t0) / 1e9);
      }
      for (const c of persist.changes) {
        this.deps.logger.info({ mac: c.record.mac, ip: c.record.ip, subnet: c.record.subnet, ...(c.record.hostname ? { hostname: c.record.hostname } : {}) }, `lease ${c.kind}`);
        this.deps.onLeaseChange?.(c);
      }
    }
    if (decision.kind === 'reply') this.send(decision.reply, req, mac, ifname, pxePort, d);
  }

  private writeOps(records: LeaseRecord[], changes: LeaseChange[]): WriteOp[] {
    const ops: WriteOp[] = records.map((r) => ({ type: 'put', collection: 'leases', key: r.ip, value: r }));
    for (const c of changes) {
      const { ip, subnet, expiresAt, hostname } = c.record;
      ops.push(this.deps.events.op({ type: `lease.${c.kind}`, actor: 'dhcp', subject: c.record.mac, data: { ip, subnet, expiresAt, ...(hostname ? { hostname } : {}) } }));
    }
    return ops;
  }

  /** RFC 2131 §4.1: where a reply goes. */
  private send(reply: DhcpPacket, req: DhcpPacket, mac: string, ifname: string, pxePort: boolean, d: Datagram): void {
    const listener = this.listeners.find((l) => l.ifname === ifname && l.pxePort === pxePort) ?? this.listeners.find((l) => l.ifname === ifname);
    if (!listener) return;
    // The client's option 57 says how much it takes; never below the RFC minimum, never over an MTU.
    const maxSize = Math.min(1500, Math.max(576, req.options.maxMessageSize ?? 576));
    const data = encodeDhcp(reply, { maxSize });
    const type = reply.options.messageType!;
    let to: string;
    let port = this.clientPort;
    if (pxePort) { to = d.address; port = d.port; }
    else if (req.giaddr !== '0.0.0.0') { to = req.giaddr; port = this.deps.config.dhcp.port; }
    else if (req.ciaddr !== '0.0.0.0' && type !== MESSAGE_TYPE.NAK) to = req.ciaddr;
    else if (type === MESSAGE_TYPE.NAK || (req.flags & BROADCAST_FLAG) !== 0 || reply.yiaddr === '0.0.0.0') to = '255.255.255.255';
    else {
      // The client has no address yet and did not ask for a broadcast: unicast to yiaddr at chaddr,
      // which needs an ARP entry the kernel cannot learn (the client cannot answer ARP yet).
      to = reply.yiaddr;
      try { arpAdd(ifname, reply.yiaddr, mac); } catch { to = '255.255.255.255'; }
    }
    let sent = false;
    try {
      sent = listener.socket.send(data, to, port);
    } catch (err) {
      this.log('warn', `send:${ifname}`, { ifname, to, code: isMetalboxError(err) ? err.code : errnoCode(err) }, 'DHCP reply not sent');
    }
    if (sent) this.m.repliesByType(type).inc();
    else this.m.dropped.inc({ reason: 'send-failed' });
  }

  private drop(reason: string, ifname: string, req: DhcpPacket): void {
    this.m.dropped.inc({ reason });
    this.deps.logger.debug({ ifname, reason, xid: req.xid, type: req.options.messageType }, 'dhcp request not answered');
  }
}

/**
 * The config's reservations of a subnet, then the store's. ReservationBook refuses clashes and leaves out what a
 * later config contradicts; a clash that still gets here loses to what came first (one MAC, one address).
 */
function reservationMap(s: SubnetConfig, stored: readonly Reservation[] = []): Map<string, { ip: number; hostname?: string }> {
  const reservations = new Map<string, { ip: number; hostname?: string }>();
  const taken = new Set<number>();
  for (const r of [...s.reservations, ...stored]) {
    const mac = parseMac(r.mac);
    const ip = parseIPv4(r.ip);
    if (mac === undefined || ip === undefined || reservations.has(mac) || taken.has(ip)) continue;
    reservations.set(mac, { ip, ...(r.hostname ? { hostname: r.hostname } : {}) });
    taken.add(ip);
  }
  return reservations;
}

function subnetEntry(s: SubnetConfig): SubnetEntry {
  const cidr: Cidr = parseCidr(s.cidr)!;
  const pool = new LeasePool({
    id: s.cidr,
    cidr,
    ranges: s.dynamicRanges.map((r) => parseRange(r)!),
    excluded: s.excludedRanges.map((r) => parseRange(r)!),
    reservations: reservationMap(s),
  });
  return { config: s, cidr, pool, proxy: s.proxyDhcp };
}

function createDhcpMetrics(metrics: Metrics, subnets: () => SubnetEntry[]) {
  const registers = [metrics.registry];
  const requests = new Counter({ name: 'metalbox_dhcp_requests_total', help: 'Decoded DHCP requests by message type', labelNames: ['type'], registers });
  const replies = new Counter({ name: 'metalbox_dhcp_replies_total', help: 'DHCP replies sent by message type', labelNames: ['type'], registers });
  // Label children bound once per message type: a label lookup per packet showed in profiles.
  const byType = (counter: Counter, other: string) => {
    const children = new Map<number, { inc(): void }>();
    return (type: number | undefined) => {
      let child = children.get(type ?? 0);
      if (!child) children.set(type ?? 0, (child = counter.labels(MESSAGE_NAMES[type ?? 0] ?? other)));
      return child;
    };
  };
  return {
    requestsByType: byType(requests, 'none'),
    repliesByType: byType(replies, 'other'),
    received: new Counter({ name: 'metalbox_dhcp_datagrams_received_total', help: 'UDP datagrams received by the DHCP service', registers }),
    dropped: new Counter({ name: 'metalbox_dhcp_dropped_total', help: 'DHCP packets not answered, by reason', labelNames: ['reason'], registers }),
    exhausted: new Counter({ name: 'metalbox_dhcp_pool_exhausted_total', help: 'DISCOVERs that found no free address', labelNames: ['subnet'], registers }),
    persistSeconds: new Histogram({ name: 'metalbox_dhcp_lease_write_seconds', help: 'Time to make a lease change durable', buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5], registers }),
    pool: new Gauge({
      name: 'metalbox_dhcp_pool_addresses', help: 'Dynamic-range addresses by subnet and state', labelNames: ['subnet', 'state'], registers,
      collect() {
        const now = Date.now();
        for (const s of subnets()) {
          const st = s.pool.stats(now);
          for (const state of ['size', 'bound', 'offered', 'declined', 'free'] as const) this.set({ subnet: s.config.cidr, state }, st[state]);
        }
      },
    }),
  };
}

