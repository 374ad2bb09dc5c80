// The DHCP service: one device-bound socket per provisioning interface (so we know where a broadcast
// came in, and never answer on any other network), the RFC 2131 §4.1 reply-destination rules, and the
// durability rule: a lease change is on disk before the reply that announces it leaves.
import type { Config, SubnetConfig } from '../../config/schema.ts';
import { LeasePool } from '../../core/lease-pool.ts';
import { errnoCode, isMetalboxError, type MetalboxError } from '../../lib/errors.ts';
import { cidrContains, formatIPv4, parseCidr, parseIPv4, parseRange, type Cidr } from '../../lib/ipv4.ts';
import { limitedLogger, type LimitedLog } from '../../lib/log-limit.ts';
import { NumberRateLimiter } from '../../lib/rate-limit.ts';
import type { Logger } from '../../lib/logger.ts';
import { formatMac, parseMac } from '../../lib/mac.ts';
import type { Metrics } from '../../lib/metrics.ts';
import { arpAdd, BATCH, BATCH_WORDS, openUdpBatchSocket, type DatagramBatch, type UdpBatchSocket } from '../../lib/udp-socket.ts';
import { decodeDhcp, encodeDhcp, hwAddress, MESSAGE_TYPE, type DhcpPacket } from '../../protocols/dhcp/index.ts';
import type { EventLog } from '../../core/events.ts';
import type { LeaseRecord, Store, WriteOp } from '../../store/types.ts';
import type { Reservation } from '../../core/reservations.ts';
import type { Service } from '../service.ts';
import type { BootDecider } from './boot.ts';
import { dhcpClientKey } from './rate-limit.ts';
import { DEFAULT_LIMITS, isUrgent, WorkQueue, type ShedReason, type WorkQueueLimits } from './work-queue.ts';
import { handleDhcp, handleProxy, type Decision, type LeaseChange, type PolicyContext, type SubnetRuntime } from './policy.ts';
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
const BROADCAST = 0xffffffff;
/** A client over its rate limit is logged at most once per this many seconds (and the log limiter caps all of them). */
const RATE_LOG_INTERVAL_S = 10;

/** A datagram waiting in the work queue: a view of its batch's Buffer, addresses as numbers (host order). */
interface Queued { listener: Listener; data: Buffer; address: number; port: number; localAddress: number }

/** A decision whose lease records must be on disk before its reply (if any) leaves. */
interface PendingWrite { persist: NonNullable<Extract<Decision, { kind: 'persist' }>['persist']>; reply: DhcpPacket | undefined; req: DhcpPacket; mac: string; q: Queued }

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
  /** The work queue's bounds (tests; default DEFAULT_LIMITS). */
  workQueueLimits?: WorkQueueLimits;
}

interface Listener {
  ifname: string;
  socket: UdpBatchSocket;
  pxePort: boolean;
  /** The socket's stats().filtered as last counted into the metrics. */
  filtered: number;
  closed: boolean;
}

interface SubnetEntry extends SubnetRuntime {
  proxy: boolean;
  /** Policy contexts by our address (contextFor). */
  contexts: Map<string, PolicyContext>;
}

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
  /** DISCOVERs are being dropped by the sockets themselves (setDhcpDrop), see updateShedding. */
  private shedding = false;
  /** Lease writes decided since the last flushWrites: they go to the store as one write. */
  private pendingWrites: PendingWrite[] = [];
  /** dhcp.rateLimit, keyed by dhcpClientKey (the client, not the source address: see rate-limit.ts). */
  private readonly limiter: NumberRateLimiter;
  private readonly rateDropped: { inc(n?: number): void };

  constructor(private readonly deps: DhcpServiceDeps) {
    this.log = limitedLogger(deps.logger);
    this.now = deps.now ?? Date.now;
    this.m = createDhcpMetrics(deps.metrics, () => this.subnets, () => this.syncFiltered(), () => this.limiter.size);
    this.clientPort = deps.config.dhcp.port === 67 ? 68 : deps.config.dhcp.port + 1;
    this.queue = new WorkQueue((reason: ShedReason) => this.m.droppedBy(reason).inc(), deps.workQueueLimits ?? DEFAULT_LIMITS);
    this.limiter = new NumberRateLimiter(deps.config.dhcp.rateLimit, { notifyIntervalS: RATE_LOG_INTERVAL_S });
    this.rateDropped = this.m.droppedBy('rate-limited');
  }

  /** Clients the rate limiter tracks now (tests, metrics): never above dhcp.rateLimit.maxClients. */
  get rateLimitedClients(): number {
    return this.limiter.size;
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
    this.syncFiltered();
    for (const l of this.listeners.splice(0)) {
      l.closed = true;
      l.socket.close();
    }
    this.queue.clear();
    this.shedding = false;
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
    // Batch mode: one JS call per wakeup, addresses as numbers; `dhcp` lets the socket drop DISCOVERs itself while
    // we shed them (updateShedding).
    const listener: Listener = { ifname, socket: undefined as unknown as UdpBatchSocket, pxePort, filtered: 0, closed: false };
    listener.socket = openUdpBatchSocket({ port, device: ifname, broadcast: true, reuseAddress: false, receiveBufferSize: 4 * 1024 * 1024, readBatch: READ_BATCH, dhcp: !pxePort },
      (batch) => this.enqueue(listener, batch));
    this.listeners.push(listener);
  }

  private async loadLeases(): Promise<void> {
    const records: LeaseRecord[] = [];
    for await (const [, rec] of this.deps.store.leases.entries()) records.push(rec);
    for (const s of this.subnets) s.pool.load(records);
  }

  /** A socket's datagrams of one wakeup: into the work queue by message type (the socket peeked it). */
  private enqueue(listener: Listener, batch: DatagramBatch): void {
    const { data, meta, count } = batch;
    this.m.received.inc(count);
    if (batch.filtered !== listener.filtered) this.countFiltered(listener, batch.filtered);
    const now = this.now();
    const seconds = now / 1000;
    const limited = this.limiter.enabled;
    const pxePort = listener.pxePort;
    for (let i = 0, r = 0; i < count; i++, r += BATCH_WORDS) {
      const at = meta[r + BATCH.OFFSET]!;
      const length = meta[r + BATCH.LENGTH]!;
      // Per-client rate limit, before the datagram takes a place in the queue: a number read from the octets and a
      // typed-array lookup, ~0.1-0.3 µs (test/unit/rate-limit-services.test.ts times it) against ~70 µs of server CPU
      // per DORA under a flood. Too short to key: the decoder drops it.
      if (limited) {
        const key = dhcpClientKey(data, at, length);
        if (key >= 0) {
          const verdict = this.limiter.check(key, seconds);
          if (verdict !== 'allow') {
            this.rateDropped.inc();
            if (verdict === 'notify') this.log('warn', 'rate-limited', { ifname: listener.ifname, mac: formatMac(data.subarray(at + 28, at + 34)), from: formatIPv4(meta[r + BATCH.ADDRESS]!), clients: this.limiter.size }, 'DHCP client over its rate limit: its messages are dropped');
            continue;
          }
        }
      }
      const q: Queued = { listener, data: data.subarray(at, at + length), address: meta[r + BATCH.ADDRESS]!, port: meta[r + BATCH.PORT]!, localAddress: meta[r + BATCH.LOCAL_ADDRESS]! };
      // The PXE port (4011) carries the second half of an exchange, like a REQUEST.
      this.queue.push(q, pxePort || isUrgent(meta[r + BATCH.DHCP_TYPE]), now);
    }
    this.updateShedding();
    if (!this.drainScheduled) {
      this.drainScheduled = true;
      setImmediate(this.drainBound);
    }
  }

  /**
   * While the DISCOVER queue is full, the sockets drop new DISCOVERs themselves (before any JS object is made for
   * them: the native receive path peeks the message type), until the queue is down to half. Shedding them in JS
   * cost a call, a Buffer and a queue entry each; a flood brings several DISCOVERs per exchange that completes.
   * They count as overload-discover, like those the queue sheds.
   */
  private updateShedding(): void {
    const waiting = this.queue.discoverCount;
    const full = this.queue.limits.maxDiscovers;
    if (this.shedding ? waiting > full / 2 : waiting < full) return;
    this.shedding = !this.shedding;
    for (const l of this.listeners) {
      if (l.pxePort || l.closed) continue;
      l.socket.setDhcpDrop(this.shedding ? [MESSAGE_TYPE.DISCOVER] : []);
      if (!this.shedding) this.countFiltered(l, l.socket.stats().filtered);
    }
  }

  /** Counts what the sockets dropped themselves (received, and shed as overload-discover). */
  private countFiltered(listener: Listener, total: number): void {
    const n = total - listener.filtered;
    listener.filtered = total;
    if (n <= 0) return;
    this.m.received.inc(n);
    this.m.droppedBy('overload-discover').inc(n);
    this.m.shedBySockets.inc(n);
  }

  /** Brings the counters up to date with the sockets (a scrape, stop()). */
  private syncFiltered(): void {
    for (const l of this.listeners) if (!l.pxePort && !l.closed) this.countFiltered(l, l.socket.stats().filtered);
  }

  /** Handles queued datagrams, REQUESTs first, for at most DRAIN_SLICE_MS; reschedules itself if any are left. */
  private drain(): void {
    this.drainScheduled = false;
    const until = performance.now() + DRAIN_SLICE_MS;
    for (;;) {
      const next = this.queue.next(this.now());
      if (next === undefined) break;
      this.handle(next);
      if (performance.now() >= until) break;
    }
    this.flushWrites();
    this.updateShedding();
    if (this.queue.length > 0) {
      this.drainScheduled = true;
      setImmediate(this.drainBound);
    }
  }

  private handle(q: Queued): void {
    const ifname = q.listener.ifname;
    const pxePort = q.listener.pxePort;
    let req: DhcpPacket;
    try {
      req = decodeDhcp(q.data);
    } catch (err) {
      const code = isMetalboxError(err) ? err.code : 'DHCP_DECODE';
      this.m.droppedBy('malformed').inc();
      this.log('warn', `malformed:${ifname}`, { ifname, from: `${formatIPv4(q.address)}:${q.port}`, code, offset: (err as MetalboxError).details?.offset, bytes: q.data.length }, 'malformed DHCP packet dropped');
      return;
    }
    const type = req.options.messageType;
    this.m.requestsByType(type).inc();
    if (req.op !== 1) return this.drop('not-a-request', ifname, req);
    // hwAddress gives the canonical MAC text (lower-case, colons) for Ethernet, as parseMac would.
    const mac = req.htype === 1 && req.hlen === 6 && req.chaddr.length >= 6 ? hwAddress(req) : undefined;
    if (mac === undefined) return this.drop('unsupported-hardware', ifname, req);

    const where = this.locate(ifname, req, q.localAddress);
    if (!where) return this.drop('no-subnet', ifname, req);
    if (pxePort && !where.subnet.proxy) return this.drop('pxe-port-without-proxy', ifname, req);

    const ctx = this.contextFor(where.subnet, where.serverIp);
    ctx.now = this.now();
    const decision = where.subnet.proxy ? handleProxy(req, mac, ctx, pxePort) : handleDhcp(req, mac, ctx);
    this.carryOut(decision, req, mac, q, where.subnet);
  }

  /**
   * The policy's context for requests served from `subnet` as `serverIp`: the same object every time (only `now`
   * changes), rather than an object and two arrays per packet.
   */
  private contextFor(subnet: SubnetEntry, serverIp: string): PolicyContext {
    let ctx = subnet.contexts.get(serverIp);
    if (ctx === undefined) {
      const { config, boot } = this.deps;
      ctx = {
        now: 0,
        subnet,
        serverIp,
        domain: config.domain,
        offerSeconds: config.dhcp.offerSeconds,
        declineSeconds: config.dhcp.declineSeconds,
        defaultDns: config.dns.enabled ? [serverIp] : [],
        defaultNtp: config.ntp.enabled ? [serverIp] : [],
        boot,
      };
      // Bounded: one per address of ours on the subnet's interfaces (a re-addressed interface starts a new one).
      if (subnet.contexts.size >= 64) subnet.contexts.clear();
      subnet.contexts.set(serverIp, ctx);
    }
    return ctx;
  }

  /** Which subnet serves this request, and our address for it (option 54, next-server). */
  private locate(ifname: string, req: DhcpPacket, localAddress: number): { subnet: SubnetEntry; serverIp: string } | undefined {
    const ours = this.addressesOf(ifname);
    if (req.giaddr !== '0.0.0.0') {
      // Relayed (§4.3.1): the subnet that contains the relay's address; the relay sent to one of ours.
      const giaddr = parseIPv4(req.giaddr)!;
      const subnet = this.subnets.find((s) => cidrContains(s.cidr, giaddr));
      if (!subnet) return undefined;
      const i = ours.numbers.indexOf(localAddress);
      const serverIp = i >= 0 ? ours[i] : ours[0];
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

  private carryOut(decision: Decision, req: DhcpPacket, mac: string, q: Queued, subnet: SubnetEntry): void {
    if (decision.kind === 'drop') {
      if (decision.reason === 'pool-exhausted') {
        this.m.exhausted.inc({ subnet: subnet.config.cidr });
        this.log('warn', `exhausted:${subnet.config.cidr}`, { subnet: subnet.config.cidr, mac }, 'address pool exhausted: no address for a new client');
      }
      return this.drop(decision.reason, q.listener.ifname, req);
    }
    const persist = decision.persist;
    const reply = decision.kind === 'reply' ? decision.reply : undefined;
    // Durability: the reply waits for its lease records (flushWrites, at the end of this drain slice).
    if (persist) this.pendingWrites.push({ persist, reply, req, mac, q });
    else if (reply) this.send(reply, req, mac, q);
  }

  /**
   * Writes the lease changes decided since the last call as one store write, then sends their replies. One write
   * per drain slice instead of one per lease: the store's per-write work (planning, a promise, a queue entry) was a
   * large share of a DORA's CPU under load. The store still groups these writes into its fsyncs (group commit), and
   * nothing is sent before its write is durable. A failed write undoes every decision in it (newest first) and
   * sends nothing.
   */
  private flushWrites(): void {
    const batch = this.pendingWrites;
    if (batch.length === 0) return;
    this.pendingWrites = [];
    const ops: WriteOp[] = [];
    for (const w of batch) this.writeOps(w.persist.records, w.persist.changes, ops);
    this.inflight += batch.length;
    const t0 = performance.now();
    this.deps.store.write(ops).then(() => {
      this.inflight -= batch.length;
      const seconds = (performance.now() - t0) / 1000;
      for (const w of batch) {
        this.m.persistSeconds.observe(seconds);
        for (const c of w.persist.changes) {
          this.deps.logger.info({ mac: c.record.mac, ip: c.record.ip, subnet: c.record.subnet, ...(c.record.hostname ? { hostname: c.record.hostname } : {}) }, `lease ${c.kind}`);
          this.deps.onLeaseChange?.(c);
        }
        if (w.reply) this.send(w.reply, w.req, w.mac, w.q);
      }
    }, (err: unknown) => {
      this.inflight -= batch.length;
      const seconds = (performance.now() - t0) / 1000;
      for (let i = batch.length - 1; i >= 0; i--) {
        batch[i]!.persist.undo();
        this.m.persistSeconds.observe(seconds);
        this.m.droppedBy('persist-failed').inc();
      }
      this.log('error', 'persist-failed', { err: { code: isMetalboxError(err) ? err.code : errnoCode(err), message: (err as Error).message }, leases: batch.length, mac: batch[0]!.mac }, 'lease not written: no reply sent');
    });
  }

  private writeOps(records: LeaseRecord[], changes: LeaseChange[], ops: WriteOp[]): void {
    for (const r of records) ops.push({ type: 'put', collection: 'leases', key: r.ip, value: r });
    for (const c of changes) {
      const { ip, subnet, expiresAt, hostname } = c.record;
      ops.push(this.deps.events.op({ type: `lease.${c.kind}`, actor: 'dhcp', subject: c.record.mac, data: { ip, subnet, expiresAt, ...(hostname ? { hostname } : {}) } }));
    }
  }

  /** RFC 2131 §4.1: where a reply goes. Out of the socket the request came in on. */
  private send(reply: DhcpPacket, req: DhcpPacket, mac: string, q: Queued): void {
    const { listener } = q;
    if (listener.closed) return;
    const ifname = listener.ifname;
    // The client's option 57 says how much it takes; never below the RFC minimum, never over an MTU.
    const maxSize = Math.min(1500, Math.max(576, req.options.maxMessageSize ?? 576));
    const data = encodeDhcp(reply, { maxSize });
    const type = reply.options.messageType!;
    let to: number;
    let port = this.clientPort;
    if (listener.pxePort) { to = q.address; port = q.port; }
    else if (req.giaddr !== '0.0.0.0') { to = parseIPv4(req.giaddr)!; port = this.deps.config.dhcp.port; }
    else if (req.ciaddr !== '0.0.0.0' && type !== MESSAGE_TYPE.NAK) to = parseIPv4(req.ciaddr)!;
    else if (type === MESSAGE_TYPE.NAK || (req.flags & BROADCAST_FLAG) !== 0 || reply.yiaddr === '0.0.0.0') to = BROADCAST;
    else {
      // The client has no address yet and did not ask for a broadcast: unicast to yiaddr at chaddr,
      // which needs an ARP entry the kernel cannot learn (the client cannot answer ARP yet).
      to = parseIPv4(reply.yiaddr)!;
      try { arpAdd(ifname, reply.yiaddr, mac); } catch { to = BROADCAST; }
    }
    let sent = false;
    try {
      sent = listener.socket.sendTo(data, to, port);
    } catch (err) {
      this.log('warn', `send:${ifname}`, { ifname, to: formatIPv4(to), code: isMetalboxError(err) ? err.code : errnoCode(err) }, 'DHCP reply not sent');
    }
    if (sent) this.m.repliesByType(type).inc();
    else this.m.droppedBy('send-failed').inc();
  }

  private drop(reason: string, ifname: string, req: DhcpPacket): void {
    this.m.droppedBy(reason).inc();
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
  return { config: s, cidr, pool, proxy: s.proxyDhcp, contexts: new Map() };
}

/**
 * A labelled counter's per-packet increments as plain numbers, handed to prom-client when it is scraped (its
 * collect hook): prom-client's labelled inc hashes the label set into a string on every call, which showed in
 * flood profiles at several calls per exchange. `by(label)` returns the same small object every time.
 */
class Tally {
  private readonly counts = new Map<string, { n: number; inc(k?: number): void }>();

  by(label: string): { inc(k?: number): void } {
    let c = this.counts.get(label);
    if (c === undefined) {
      const entry = { n: 0, inc(k = 1): void { entry.n += k; } };
      this.counts.set(label, (c = entry));
    }
    return c;
  }

  /** Adds what was counted since the last call to `counter` (label name `labelName`). */
  flush(counter: Counter, labelName: string): void {
    for (const [label, c] of this.counts) {
      if (c.n === 0) continue;
      counter.inc({ [labelName]: label }, c.n);
      c.n = 0;
    }
  }
}

function createDhcpMetrics(metrics: Metrics, subnets: () => SubnetEntry[], syncSockets: () => void, rateLimitedClients: () => number) {
  const registers = [metrics.registry];
  const requestTally = new Tally();
  const replyTally = new Tally();
  const droppedTally = new Tally();
  let receivedCount = 0;
  new Counter({ name: 'metalbox_dhcp_requests_total', help: 'Decoded DHCP requests by message type', labelNames: ['type'], registers,
    collect() { requestTally.flush(this, 'type'); } });
  new Counter({ name: 'metalbox_dhcp_replies_total', help: 'DHCP replies sent by message type', labelNames: ['type'], registers,
    collect() { replyTally.flush(this, 'type'); } });
  // What the sockets dropped themselves is counted when JS next hears from them, and before every scrape.
  new Counter({ name: 'metalbox_dhcp_dropped_total', help: 'DHCP packets not answered, by reason', labelNames: ['reason'], registers,
    collect() { syncSockets(); droppedTally.flush(this, 'reason'); } });
  new Counter({ name: 'metalbox_dhcp_datagrams_received_total', help: 'UDP datagrams received by the DHCP service', registers,
    collect() {
      syncSockets();
      if (receivedCount > 0) this.inc(receivedCount);
      receivedCount = 0;
    } });
  // One tally entry per message type, by number: no name lookup per packet.
  const byType = (tally: Tally, other: string) => {
    const children: { inc(k?: number): void }[] = [];
    return (type: number | undefined) => {
      const t = type ?? 0;
      return children[t] ??= tally.by(MESSAGE_NAMES[t] ?? other);
    };
  };
  let shedCount = 0;
  new Counter({ name: 'metalbox_dhcp_socket_shed_total', help: 'DISCOVERs the sockets dropped themselves while shedding load, before any JS saw them (also in dropped_total{reason="overload-discover"})', registers,
    collect() {
      syncSockets();
      if (shedCount > 0) this.inc(shedCount);
      shedCount = 0;
    } });
  return {
    shedBySockets: { inc(n: number): void { shedCount += n; } },
    requestsByType: byType(requestTally, 'none'),
    repliesByType: byType(replyTally, 'other'),
    received: { inc(n = 1): void { receivedCount += n; } },
    droppedBy: (reason: string): { inc(n?: number): void } => droppedTally.by(reason),
    limiterClients: new Gauge({ name: 'metalbox_dhcp_rate_limited_clients', help: 'Clients the DHCP rate limiter tracks (at most dhcp.rateLimit.maxClients)', registers, collect() { this.set(rateLimitedClients()); } }),
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

