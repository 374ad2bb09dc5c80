// The DNS service: authoritative for the configured domain and the subnets' reverse zones, and a forwarder for
// everything else, for the machines of the rack only.
//
// - UDP: one socket per provisioning interface on dns.port, bound to the device (a query arriving on any other
//   interface is never seen). Replies leave from the address the query was sent to. Each wakeup's queries come
//   in one batch (recvmmsg) and their answers leave together after it (sendmmsg): per query the kernel cost of
//   two syscalls was most of a cached answer's (test/bench/dns.ts). Without EDNS a reply is at
//   most 512 octets, with EDNS at most min(the client's payload size, 1232); what does not fit is truncated
//   (TC, RFC 2181 §9) and the client asks again over TCP.
// - TCP (RFC 7766): a listener on each IPv4 address of the provisioning interfaces; length-prefixed messages,
//   several per connection, answered as they complete (forwarded ones may overtake); idle connections close
//   after TCP_IDLE_MS; at most MAX_TCP_CONNECTIONS at once, MAX_TCP_PIPELINE queries in flight per connection.
// - Zone transfers (AXFR, and IXFR answered with the whole zone, RFC 1995 §4) over TCP to dns.secondaries only.
// - Response rate limiting (dns.rateLimit, BIND's RRL in spirit, per client address rather than per answer): a
//   token bucket per UDP client address; over it queries are dropped, and every slip-th gets an empty answer with
//   TC set (no larger than the query), so a real client whose address is being spoofed at us retries over TCP,
//   which cannot be spoofed and is not limited by rate, while a reflection attack gets nothing worth having.
//   TCP connections are capped per client address too (dns.maxTcpConnectionsPerClient). Loopback is not limited.
// - Undecodable datagrams are dropped (an answer would let a spoofed flood aim us at a third party), counted by
//   error code in /metrics and logged at warn, rate-limited.
// - Records: machines and leases (auto.ts, kept current by leaseChanged() and the machine registry's change
//   feed), records added through the API (the store's dnsRecords, re-read when they change), and our own SOA/NS.
import { createServer, type Server, type Socket } from 'node:net';
import { Counter, Gauge } from 'prom-client';
import type { Config } from '../../config/schema.ts';
import { watchDnsRecords, zonesOf } from '../../core/dns-records.ts';
import type { MachineChange, MachineRegistry } from '../../core/machines.ts';
import { errnoCode, isMetalboxError, MetalboxError } from '../../lib/errors.ts';
import { cidrContains, formatIPv4, isLoopbackIPv4, parseCidr, parseIPv4, type Cidr } from '../../lib/ipv4.ts';
import { limitedLogger, type LimitedLog } from '../../lib/log-limit.ts';
import { NumberRateLimiter } from '../../lib/rate-limit.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Metrics } from '../../lib/metrics.ts';
import { BATCH, BATCH_WORDS, openUdpBatchSocket, openUdpSocket, type DatagramBatch, type UdpBatchSocket } from '../../lib/udp-socket.ts';
import { CLASSIC_UDP_BYTES, decodeDns, encodeDns, encodeTransfer, isTruncated, RCODE, type DnsMessage, type DnsQuestion } from '../../protocols/dns/index.ts';
import type { LeaseRecord, Store } from '../../store/types.ts';
import type { Service } from '../service.ts';
import { handleQuery, replyTo, SERVER_UDP_PAYLOAD, type Outcome } from './answer.ts';
import { AutoRecords } from './auto.ts';
import { Forwarder, forwardedReply } from './forwarder.ts';
import { Zone, type ManualRecord } from './zone.ts';

export const TCP_IDLE_MS = 10_000;
/** Outcomes whose UDP answers the packet cache keeps: they depend on the zone and the query only. */
const AUTHORITATIVE: ReadonlySet<Outcome> = new Set(['answer', 'nodata', 'nxdomain', 'referral']);
export const MAX_TCP_CONNECTIONS = 256;
const MAX_TCP_PIPELINE = 32;
/** The serial is written to the store at most this often (and at stop), so a restart never serves a lower one. */
const SERIAL_SAVE_MS = 5000;
export const SERIAL_SETTING = 'system.dnsSerial';
const FORWARDER_PORT = 53;
/** Room per datagram in a batched read: a query is far smaller (nothing we answer needs more than a name and an OPT). */
const MAX_QUERY_BYTES = 4096;

/** Where a UDP answer goes: the client, and the source address when it is not the interface's own (0: the kernel picks). */
interface UdpPeer { socket: UdpBatchSocket; address: number; port: number; source: number }

export interface InterfaceAddress { address: string; netmask: string; family: string }

export interface DnsServiceDeps {
  config: Pick<Config, 'domain' | 'subnets' | 'interfaces' | 'dns'>;
  store: Store;
  logger: Logger;
  metrics: Metrics;
  /** Host names by MAC and their changes (the machine registry); without it, leases name themselves. */
  machines?: Pick<MachineRegistry, 'byMac' | 'subscribe'>;
  /** IPv4 addresses by interface name (os.networkInterfaces() in production). */
  interfaceAddresses: () => Record<string, InterfaceAddress[] | undefined>;
  /** Port the forwarders listen on (53; tests run their upstream elsewhere). */
  forwarderPort?: number;
  /** UDP answers kept ready by query (see PacketCache); 0 turns the cache off. Default 50,000. */
  packetCacheEntries?: number;
  now?: () => number;
}

interface TcpConn { socket: Socket; buf: Buffer; inflight: number; paused: boolean }

interface CachedPacket { wire: Buffer; counter: { inc(): void }; truncated: boolean }

/**
 * Authoritative UDP answers, encoded, by the query that asked them: the query's octets after its ID (flags,
 * counts, question and OPT record, so the case of the name, RD, and the EDNS payload size that decided the
 * truncation are all part of the key) and whether the client may recurse (the RA flag). A hit answers with the
 * cached octets and the query's ID: no decoding, no lookup, no encoding. Any change of the zone empties it,
 * so an answer is never older than the data (the SOA serial moves only on a miss after a change). Forwarded
 * answers are not kept here (their TTLs age: forwarder.ts has their cache), nor are queries with EDNS options
 * (client cookies would make every key new).
 */
class PacketCache {
  private readonly maps = [new Map<string, CachedPacket>(), new Map<string, CachedPacket>()];
  private size = 0;

  constructor(readonly limit: number) {}

  get(key: string, recursion: boolean): CachedPacket | undefined {
    return this.maps[recursion ? 1 : 0]!.get(key);
  }

  set(key: string, recursion: boolean, entry: CachedPacket): void {
    if (this.size >= this.limit) this.clear();
    this.maps[recursion ? 1 : 0]!.set(key, entry);
    this.size++;
  }

  clear(): void {
    if (this.size === 0) return;
    this.maps[0]!.clear();
    this.maps[1]!.clear();
    this.size = 0;
  }
}

export class DnsService implements Service {
  readonly name = 'dns';
  private zone!: Zone;
  private auto: AutoRecords | undefined;
  private changedDuringLoad: Set<string> | undefined;
  private forwarder: Forwarder | undefined;
  private readonly udp: { ifname: string; socket: UdpBatchSocket }[] = [];
  private readonly tcp: Server[] = [];
  private readonly conns = new Set<TcpConn>();
  private readonly unsubscribe: (() => void)[] = [];
  private timers: NodeJS.Timeout[] = [];
  private readonly log: LimitedLog;
  private readonly now: () => number;
  private readonly m: ReturnType<typeof createDnsMetrics>;
  private subnets: Cidr[] = [];
  /** 255.255.255.255 and the subnets' broadcast addresses. */
  private broadcasts = new Set<number>([0xffffffff]);
  private secondaries: Cidr[] = [];
  private readonly recursionCache = new Map<string, boolean>();
  private lastClient = '';
  private lastRecursion = false;
  private lastUdpClient = -1;
  private lastUdpRecursion = false;
  /** The last destination address that was neither a broadcast nor a multicast one. */
  private lastUnicast = -1;
  /** Clients of the answers queued in the current batch, by queue index (for the log of a failed send). */
  private readonly pendingTo: number[] = [];

  private savedSerial = -1;
  private manualReload: Promise<void> | undefined;
  private manualAgain = false;
  private running = false;
  private readonly packets: PacketCache;
  /** dns.rateLimit by UDP client address (a number): 'notify' is a slip (every slip-th refusal). */
  private readonly limiter: NumberRateLimiter;
  /** Open TCP connections by client address (at most MAX_TCP_CONNECTIONS entries: one per connection at worst). */
  private readonly tcpPerClient = new Map<string, number>();

  constructor(private readonly deps: DnsServiceDeps) {
    this.log = limitedLogger(deps.logger);
    this.now = deps.now ?? Date.now;
    const rl = deps.config.dns.rateLimit;
    this.limiter = new NumberRateLimiter(rl, { notifyEvery: rl.slip });
    this.m = createDnsMetrics(deps.metrics, () => this.zone, () => this.forwarder, () => this.conns.size, () => this.limiter.size);
    this.packets = new PacketCache(deps.packetCacheEntries ?? 50_000);
  }

  /** UDP client addresses the rate limiter tracks now (tests, metrics): never above dns.rateLimit.maxClients. */
  get rateLimitedClients(): number {
    return this.limiter.size;
  }

  async start(): Promise<void> {
    const { config } = this.deps;
    const zones = zonesOf(config.domain, config.subnets);
    this.zone = new Zone({ forward: zones.forward, reverse: zones.reverse, ttl: config.dns.ttl, now: this.now });
    this.zone.onChange = () => this.packets.clear();
    this.subnets = config.subnets.map((s) => parseCidr(s.cidr)).filter((c): c is Cidr => c !== undefined);
    this.secondaries = config.dns.secondaries.map(hostCidr);
    for (const c of this.subnets) this.broadcasts.add(c.broadcast);
    const saved = await this.deps.store.settings.get(SERIAL_SETTING);
    if (typeof saved === 'number' && Number.isInteger(saved) && saved >= 0 && saved <= 0xffffffff) this.zone.restoreSerial(saved);

    const addrs = this.deps.interfaceAddresses();
    const own = new Map<string, string[]>();
    for (const ifname of config.interfaces) own.set(ifname, (addrs[ifname] ?? []).filter((a) => a.family === 'IPv4').map((a) => a.address));
    this.zone.setNameserverAddresses([...new Set([...own.values()].flat().filter((a) => !a.startsWith('127.')))]);

    const auto = this.auto = new AutoRecords(this.zone, zones.forward, (mac) => this.deps.machines?.byMac(mac)?.hostname, this.now);
    // A lease the DHCP server changes while the store is read is newer than what the read finds.
    this.changedDuringLoad = new Set();
    const stored: LeaseRecord[] = [];
    for await (const [, lease] of this.deps.store.leases.entries()) stored.push(lease);
    for (const lease of stored) if (!this.changedDuringLoad.has(lease.ip)) auto.lease(lease);
    this.changedDuringLoad = undefined;
    await this.reloadManual();
    if (this.deps.machines) this.unsubscribe.push(this.deps.machines.subscribe((c) => this.machineChanged(c)));
    this.unsubscribe.push(watchDnsRecords(this.deps.store, () => { void this.reloadManual(); }));

    try {
      for (const ifname of config.interfaces) {
        // No SO_REUSEADDR: another DNS server on this host (0.0.0.0:53) must make us fail at start.
        const socket = openUdpBatchSocket({
          port: config.dns.port, device: ifname, reuseAddress: false, receiveBufferSize: 4 * 1024 * 1024, readBatch: 256, maxDatagram: MAX_QUERY_BYTES,
          onSendFailure: (index, code) => this.sendFailed(ifname, index, code),
        }, (b) => this.onBatch(socket, b));
        this.udp.push({ ifname, socket });
        const v4 = own.get(ifname) ?? [];
        if (v4.length === 0) this.deps.logger.warn({ ifname }, 'no IPv4 address on this interface: DNS over TCP is not offered on it');
        for (const address of v4) this.tcp.push(await this.listenTcp(address, config.dns.port));
      }
      if (config.dns.forwarders.length > 0) {
        this.forwarder = new Forwarder({
          servers: config.dns.forwarders.map((address) => ({ address, port: this.deps.forwarderPort ?? FORWARDER_PORT })),
          open: (onMessage) => {
            const s = openUdpSocket({ port: 0, reuseAddress: false }, (d) => onMessage(d.data, d.address, d.port));
            return { send: (data, address, port) => s.send(data, address, port), close: () => s.close() };
          },
          now: this.now,
        });
        this.forwarder.open();
      }
    } catch (err) {
      await this.stop();
      throw isMetalboxError(err) ? err : new MetalboxError('SERVICE_START_FAILED', `dns: ${(err as Error).message}`, { cause: err });
    }
    this.running = true;
    const expiry = setInterval(() => { if (auto.expire() > 0) this.m.expired.inc(); }, 1000);
    const save = setInterval(() => { void this.saveSerial(); }, SERIAL_SAVE_MS);
    expiry.unref();
    save.unref();
    this.timers.push(expiry, save);
    const size = this.zone.size();
    this.deps.logger.info({ interfaces: config.interfaces, port: config.dns.port, zones: this.zone.apexes, names: size.names, records: size.records, forwarders: config.dns.forwarders, secondaries: config.dns.secondaries }, 'dns listening');
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const t of this.timers.splice(0)) clearInterval(t);
    for (const u of this.unsubscribe.splice(0)) u();
    for (const l of this.udp.splice(0)) l.socket.close();
    for (const c of this.conns) c.socket.destroy();
    this.conns.clear();
    await Promise.all(this.tcp.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.forwarder?.close();
    this.forwarder = undefined;
    if (this.zone) await this.saveSerial();
  }

  /** A lease change the DHCP server made durable (DhcpServiceDeps.onLeaseChange): the records follow at once. */
  leaseChanged(change: { record: LeaseRecord }): void {
    // Before start() nothing is served yet; start() reads every lease from the store itself.
    if (this.auto === undefined) return;
    this.changedDuringLoad?.add(change.record.ip);
    this.auto.lease(change.record);
  }

  /** The zone being served (tests, status). */
  get zoneData(): Zone {
    return this.zone;
  }

  private machineChanged(c: MachineChange): void {
    const before = 'before' in c ? c.before : undefined;
    if (c.kind === 'state' || (c.kind === 'updated' && before && before.hostname === c.machine.hostname && before.macs.join() === c.machine.macs.join())) return;
    this.auto?.macsChanged(new Set([...(before?.macs ?? []), ...c.machine.macs]));
  }

  /** Re-reads the manual records; calls that arrive meanwhile make one more read after it. */
  private reloadManual(): Promise<void> {
    if (this.manualReload) { this.manualAgain = true; return this.manualReload; }
    this.manualReload = (async () => {
      do {
        this.manualAgain = false;
        const all: ManualRecord[] = [];
        try {
          for await (const [, r] of this.deps.store.dnsRecords.entries()) all.push(r as ManualRecord);
        } catch (err) {
          this.deps.logger.error({ err }, 'dns: could not read the DNS records from the store');
          return;
        }
        this.zone.setManual(all);
      } while (this.manualAgain);
    })().finally(() => { this.manualReload = undefined; });
    return this.manualReload;
  }

  private async saveSerial(): Promise<void> {
    const serial = this.zone.serial();
    if (serial === this.savedSerial) return;
    try {
      await this.deps.store.settings.put(SERIAL_SETTING, serial);
      this.savedSerial = serial;
    } catch (err) {
      this.log('warn', 'serial-save', { code: isMetalboxError(err) ? err.code : errnoCode(err) }, 'dns: could not save the SOA serial');
    }
  }

  /** Clients inside our subnets (or on this host) may use the forwarders; nobody else (no open resolver). */
  private mayRecurse(address: string): boolean {
    // A client usually sends many queries in a row: comparing with the last one is cheaper than hashing.
    if (address === this.lastClient) return this.lastRecursion;
    let ok = this.recursionCache.get(address);
    if (ok === undefined) {
      const ip = parseIPv4(address.startsWith('::ffff:') ? address.slice(7) : address);
      ok = ip !== undefined && (isLoopbackIPv4(ip) || this.subnets.some((c) => cidrContains(c, ip)));
      if (this.recursionCache.size >= 10_000) this.recursionCache.clear();
      this.recursionCache.set(address, ok);
    }
    this.lastClient = address;
    this.lastRecursion = ok;
    return ok;
  }

  /** mayRecurse for a UDP client's address as a number (host order). */
  private mayRecurseUdp(ip: number): boolean {
    if (ip === this.lastUdpClient) return this.lastUdpRecursion;
    const ok = isLoopbackIPv4(ip) || this.subnets.some((c) => cidrContains(c, ip));
    this.lastUdpClient = ip;
    this.lastUdpRecursion = ok;
    return ok;
  }

  private mayTransfer(address: string): boolean {
    const ip = parseIPv4(address.startsWith('::ffff:') ? address.slice(7) : address);
    return ip !== undefined && this.secondaries.some((c) => cidrContains(c, ip));
  }

  private decode(data: Buffer, from: string, transport: 'udp' | 'tcp'): DnsMessage | undefined {
    try {
      return decodeDns(data);
    } catch (err) {
      const code = isMetalboxError(err) ? err.code : 'DNS_TRUNCATED';
      this.m.malformed.labels(code).inc();
      this.log('warn', `malformed:${transport}`, { from, transport, code, offset: (err as MetalboxError).details?.offset, bytes: data.length }, 'malformed DNS message dropped');
      return undefined;
    }
  }

  // ------------------------------------------------------------------------------------------------------
  // UDP

  /** One wakeup's datagrams: each answered into the socket's send queue, which leaves in one sendmmsg after them. */
  private onBatch(socket: UdpBatchSocket, b: DatagramBatch): void {
    const { data, meta, count } = b;
    for (let i = 0, r = 0; i < count; i++, r += BATCH_WORDS) {
      const at = meta[r + BATCH.OFFSET]!;
      this.onDatagram(socket, data, at, at + meta[r + BATCH.LENGTH]!, meta[r + BATCH.ADDRESS]!, meta[r + BATCH.PORT]!, meta[r + BATCH.LOCAL_ADDRESS]!, meta[r + BATCH.INTERFACE_ADDRESS]!);
    }
    this.flushUdp(socket);
  }

  /** One query, data[start, end), from address:port to localAddress (numbers in host order, as the batch has them). */
  private onDatagram(socket: UdpBatchSocket, data: Buffer, start: number, end: number, address: number, port: number, localAddress: number, interfaceAddress: number): void {
    this.m.received.inc();
    // A DNS query is never broadcast; answering one would answer a whole segment's spoofed sender.
    if (localAddress !== this.lastUnicast) {
      if (this.broadcasts.has(localAddress) || (localAddress >>> 28) === 14) {
        this.m.drop('broadcast');
        return;
      }
      this.lastUnicast = localAddress;
    }
    // From the address the client asked; the kernel picks the interface's own address by itself.
    const source = localAddress === interfaceAddress ? 0 : localAddress;
    // First, so a flood costs nothing more. Loopback (this host's own resolver stub, monitoring, benchmarks) is not
    // limited: it cannot come from the network.
    if (this.limiter.enabled && !isLoopbackIPv4(address)) {
      const verdict = this.limiter.check(address, this.now() / 1000);
      if (verdict !== 'allow') {
        this.overLimit(socket, data, start, end, address, port, source, verdict === 'notify');
        return;
      }
    }
    const recursion = this.mayRecurseUdp(address);
    const cacheable = this.packets.limit > 0 && end - start > 12;
    const key = cacheable ? data.toString('latin1', start + 2, end) : '';
    if (cacheable) {
      const hit = this.packets.get(key, recursion);
      if (hit !== undefined) {
        // The cached answer with this query's ID; queue() copies it before anything else runs.
        hit.wire[0] = data[start]!;
        hit.wire[1] = data[start + 1]!;
        hit.counter.inc();
        if (hit.truncated) this.m.truncated.inc();
        this.pendingTo[socket.queue(hit.wire, address, port, source)] = address;
        return;
      }
    }
    const query = data.subarray(start, end);
    const q = this.decode(query, `${formatIPv4(address)}:${port}`, 'udp');
    if (!q) return;
    const decision = handleQuery(q, { zone: this.zone, transport: 'udp', recursion, transferAllowed: false });
    const limit = q.edns ? Math.max(CLASSIC_UDP_BYTES, Math.min(q.edns.udpSize, SERVER_UDP_PAYLOAD)) : CLASSIC_UDP_BYTES;
    const peer: UdpPeer = { socket, address, port, source };
    const send = (reply: DnsMessage): Buffer => {
      const wire = encodeDns(reply, { maxSize: limit });
      if (isTruncated(wire)) this.m.truncated.inc();
      this.sendUdp(peer, wire);
      return wire;
    };
    switch (decision.kind) {
      case 'drop': this.m.drop(decision.reason); return;
      case 'reply': {
        const counter = this.m.counter(decision.outcome, 'udp');
        counter.inc();
        const wire = send(decision.reply);
        if (cacheable && AUTHORITATIVE.has(decision.outcome) && (q.edns === undefined || q.edns.options.length === 0)) this.packets.set(key, recursion, { wire: Buffer.from(wire), counter, truncated: isTruncated(wire) }); // exact size: the encoder's buffer has room to spare
        return;
      }
      case 'transfer': this.m.outcome('refused', 'udp'); send(replyTo(q, RCODE.REFUSED, { recursion })); return;
      // Answered later, alone: its own flush.
      case 'forward': void this.forward(q, decision.question, 'udp', limit).then((reply) => { send(reply); this.flushUdp(socket); }); return;
    }
  }

  /**
   * A query over its client's rate limit: dropped, or (a slip) answered with the question only, TC set, no OPT:
   * never larger than the query, and a real client retries over TCP (RFC 2181 §9). Logged per client at most
   * once per slip and by the log limiter overall.
   */
  private overLimit(socket: UdpBatchSocket, data: Buffer, start: number, end: number, address: number, port: number, source: number, slip: boolean): void {
    this.m.rateLimited.inc();
    if (!slip) return;
    let q: DnsMessage;
    try {
      q = decodeDns(data.subarray(start, end));
    } catch {
      return; // junk gets no slip (and is counted as rate-limited only: decoding it is what the limit saves)
    }
    if (q.qr) return;
    const reply = replyTo(q, RCODE.NOERROR, { recursion: this.mayRecurseUdp(address) });
    reply.tc = true;
    delete reply.edns;
    this.m.slipped.inc();
    this.m.truncated.inc();
    this.log('info', 'rate-limited', { client: formatIPv4(address), clients: this.limiter.size }, 'DNS client over its rate limit: queries dropped, some answered truncated');
    this.sendUdp({ socket, address, port, source }, encodeDns(reply, { maxSize: CLASSIC_UDP_BYTES }));
  }

  private sendUdp(peer: UdpPeer, wire: Buffer): void {
    try {
      this.pendingTo[peer.socket.queue(wire, peer.address, peer.port, peer.source)] = peer.address;
    } catch (err) {
      // The socket closed while a forwarded answer was on its way.
      this.m.drop('send-failed');
      this.log('warn', 'send', { to: formatIPv4(peer.address), code: isMetalboxError(err) ? err.code : errnoCode(err) }, 'DNS reply not sent');
    }
  }

  /** Sends the queued answers (one sendmmsg per 64); each one the kernel refused goes to sendFailed. */
  private flushUdp(socket: UdpBatchSocket): void {
    if (socket.queued === 0) return;
    try {
      socket.flush();
    } catch (err) {
      this.m.drop('send-failed');
      this.log('warn', 'send', { code: isMetalboxError(err) ? err.code : errnoCode(err) }, 'DNS reply not sent');
    }
    this.pendingTo.length = 0;
  }

  /** A queued answer the kernel did not take (a full send queue is no news worth a log line: the client retries). */
  private sendFailed(ifname: string, index: number, code: string): void {
    this.m.drop('send-failed');
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'ENOBUFS') return;
    this.log('warn', 'send', { ifname, to: formatIPv4(this.pendingTo[index] ?? 0), code: 'SOCKET_SEND_FAILED', errno: code }, 'DNS reply not sent');
  }

  /** The forwarded answer, or SERVFAIL when no upstream answered in time (forwarder.ts bounds it). */
  private async forward(q: DnsMessage, question: DnsQuestion, transport: 'udp' | 'tcp', limit: number): Promise<DnsMessage> {
    if (!this.forwarder) {
      this.m.outcome('refused', transport);
      return replyTo(q, RCODE.REFUSED, { recursion: false });
    }
    const hit = this.forwarder.cached(question);
    const answer = hit ?? await this.forwarder.resolve(question);
    if (!answer) {
      this.m.outcome('servfail', transport);
      return replyTo(q, RCODE.SERVFAIL, { recursion: true });
    }
    this.m.outcome(hit ? 'cached' : 'forwarded', transport);
    return forwardedReply(q, answer, this.now(), Math.min(limit, SERVER_UDP_PAYLOAD));
  }

  // ------------------------------------------------------------------------------------------------------
  // TCP

  private listenTcp(address: string, port: number): Promise<Server> {
    return new Promise((resolve, reject) => {
      const server = createServer((socket) => this.onConnection(socket));
      server.once('error', (err) => reject(new MetalboxError('SERVICE_START_FAILED', `dns: cannot listen on TCP ${address}:${port}: ${errnoCode(err) ?? err.message}`, { cause: err, details: { address, port } })));
      server.listen({ host: address, port, exclusive: true }, () => {
        server.removeAllListeners('error');
        server.on('error', (err) => this.deps.logger.error({ err, address }, 'dns: TCP listener error'));
        resolve(server);
      });
    });
  }

  private onConnection(socket: Socket): void {
    if (!this.running || this.conns.size >= MAX_TCP_CONNECTIONS) {
      this.m.drop('tcp-limit');
      socket.destroy();
      return;
    }
    const client = socket.remoteAddress ?? '';
    const open = this.tcpPerClient.get(client) ?? 0;
    if (open >= this.deps.config.dns.maxTcpConnectionsPerClient) {
      this.m.drop('tcp-client-limit');
      this.log('info', 'tcp-client-limit', { client, open }, 'DNS TCP connection refused: this client holds too many');
      socket.destroy();
      return;
    }
    this.tcpPerClient.set(client, open + 1);
    const conn: TcpConn = { socket, buf: Buffer.alloc(0), inflight: 0, paused: false };
    this.conns.add(conn);
    socket.once('close', () => {
      const left = (this.tcpPerClient.get(client) ?? 1) - 1;
      if (left > 0) this.tcpPerClient.set(client, left);
      else this.tcpPerClient.delete(client);
    });
    socket.setNoDelay(true);
    // RFC 7766 §6.2.3: idle connections are closed by the server, after a few seconds.
    socket.setTimeout(TCP_IDLE_MS, () => socket.destroy());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.conns.delete(conn));
    socket.on('data', (chunk: Buffer) => {
      conn.buf = conn.buf.length === 0 ? chunk : Buffer.concat([conn.buf, chunk]);
      while (conn.buf.length >= 2) {
        const len = conn.buf.readUInt16BE(0);
        if (conn.buf.length < 2 + len) break;
        const msg = conn.buf.subarray(2, 2 + len);
        conn.buf = conn.buf.subarray(2 + len);
        this.onTcpMessage(conn, msg);
      }
    });
  }

  private onTcpMessage(conn: TcpConn, data: Buffer): void {
    this.m.received.inc();
    const from = `${conn.socket.remoteAddress}:${conn.socket.remotePort}`;
    const q = this.decode(data, from, 'tcp');
    if (!q) return;
    const client = conn.socket.remoteAddress ?? '';
    const recursion = this.mayRecurse(client);
    const decision = handleQuery(q, { zone: this.zone, transport: 'tcp', recursion, transferAllowed: this.mayTransfer(client) });
    switch (decision.kind) {
      case 'drop': this.m.drop(decision.reason); return;
      case 'reply': this.m.outcome(decision.outcome, 'tcp'); this.write(conn, [encodeDns(decision.reply)]); return;
      case 'transfer': {
        const records = this.zone.transfer(decision.apex);
        this.m.outcome('transfer', 'tcp');
        this.deps.logger.info({ client, zone: decision.apex, records: records.length, serial: this.zone.serial() }, 'dns: zone transfer');
        this.write(conn, encodeTransfer(decision.reply, records));
        return;
      }
      case 'forward': {
        conn.inflight++;
        if (conn.inflight >= MAX_TCP_PIPELINE && !conn.paused) { conn.paused = true; conn.socket.pause(); }
        void this.forward(q, decision.question, 'tcp', 0xffff).then((reply) => {
          conn.inflight--;
          if (conn.paused && conn.inflight < MAX_TCP_PIPELINE / 2) { conn.paused = false; conn.socket.resume(); }
          this.write(conn, [encodeDns(reply)]);
        });
      }
    }
  }

  private write(conn: TcpConn, messages: Buffer[]): void {
    if (conn.socket.destroyed) return;
    const parts: Buffer[] = [];
    for (const m of messages) {
      const len = Buffer.allocUnsafe(2);
      len.writeUInt16BE(m.length);
      parts.push(len, m);
    }
    conn.socket.write(Buffer.concat(parts));
  }
}

/** a.b.c.d or a.b.c.d/len as a network (host bits dropped). */
function hostCidr(text: string): Cidr {
  const [addr, len] = text.split('/');
  const ip = parseIPv4(addr!)!;
  const prefix = len === undefined ? 32 : Number(len);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const network = (ip & mask) >>> 0;
  return { network, prefix, mask, broadcast: (network | ~mask) >>> 0 };
}

function createDnsMetrics(metrics: Metrics, zone: () => Zone | undefined, forwarder: () => Forwarder | undefined, tcpConnections: () => number, rateLimitedClients: () => number) {
  const registers = [metrics.registry];
  // The per-query counters are plain numbers read at scrape time: prom-client hashes the label set on every
  // inc(), which cost more than the rest of a cached answer.
  const tallies = new Map<string, { n: number; inc(): void }>();
  const tally = (transport: string, outcome: string) => {
    const key = `${transport}|${outcome}`;
    let c = tallies.get(key);
    if (!c) tallies.set(key, (c = { n: 0, inc() { this.n++; } }));
    return c;
  };
  const plain = { received: 0, truncated: 0, rateLimited: 0, slipped: 0 };
  new Counter({
    name: 'metalbox_dns_answers_total', help: 'DNS answers by transport and outcome (answer, nodata, nxdomain, referral, refused, formerr, notimp, badvers, forwarded, cached, servfail, transfer)', labelNames: ['transport', 'outcome'], registers,
    collect() {
      this.reset();
      for (const [key, c] of tallies) {
        const [transport, outcome] = key.split('|');
        if (c.n > 0) this.inc({ transport, outcome }, c.n);
      }
    },
  });
  new Counter({ name: 'metalbox_dns_messages_received_total', help: 'DNS messages received (UDP datagrams and TCP messages)', registers, collect() { this.reset(); if (plain.received > 0) this.inc(plain.received); } });
  new Counter({ name: 'metalbox_dns_truncated_total', help: 'UDP answers sent truncated (TC set): the client retries over TCP', registers, collect() { this.reset(); if (plain.truncated > 0) this.inc(plain.truncated); } });
  // Rate-limited drops are counted as a plain number (one per flood packet) and added at scrape time.
  const dropped = new Counter({ name: 'metalbox_dns_dropped_total', help: 'DNS messages not answered, by reason (malformed ones also in metalbox_dns_malformed_total; rate-limited ones include the slips)', labelNames: ['reason'], registers,
    collect() { if (plain.rateLimited > 0) this.inc({ reason: 'rate-limited' }, plain.rateLimited); plain.rateLimited = 0; } });
  new Counter({ name: 'metalbox_dns_rate_limit_slips_total', help: 'Rate-limited UDP queries answered empty with TC set (the slip), so a real client retries over TCP', registers,
    collect() { this.reset(); if (plain.slipped > 0) this.inc(plain.slipped); } });
  new Gauge({ name: 'metalbox_dns_rate_limited_clients', help: 'UDP client addresses the DNS rate limiter tracks (at most dns.rateLimit.maxClients)', registers, collect() { this.set(rateLimitedClients()); } });
  return {
    rateLimited: { inc: () => { plain.rateLimited++; } },
    slipped: { inc: () => { plain.slipped++; } },
    received: { inc: () => { plain.received++; } },
    truncated: { inc: () => { plain.truncated++; } },
    malformed: new Counter({ name: 'metalbox_dns_malformed_total', help: 'Undecodable DNS messages dropped, by error code', labelNames: ['code'], registers }),
    expired: new Counter({ name: 'metalbox_dns_lease_expiry_sweeps_total', help: 'Sweeps that removed the records of expired leases', registers }),
    outcome: (outcome: Outcome | 'forwarded' | 'cached' | 'servfail' | 'transfer', transport: 'udp' | 'tcp') => tally(transport, outcome).inc(),
    counter: (outcome: Outcome, transport: 'udp' | 'tcp') => tally(transport, outcome),
    drop: (reason: string) => dropped.inc({ reason }),
    records: new Gauge({
      name: 'metalbox_dns_records', help: 'Records served from our zones (SOA and NS included)', registers,
      collect() { const z = zone(); this.set(z ? z.size().records : 0); },
    }),
    serial: new Gauge({
      name: 'metalbox_dns_soa_serial', help: 'The SOA serial of our zones', registers,
      collect() { const z = zone(); this.set(z ? z.serial() : 0); },
    }),
    cache: new Gauge({
      name: 'metalbox_dns_cache_entries', help: 'Forwarded answers in the cache', registers,
      collect() { this.set(forwarder()?.cacheSize ?? 0); },
    }),
    upstream: new Counter({
      name: 'metalbox_dns_upstream_total', help: 'Forwarder events: queries sent upstream, answers, timeouts, TCP retries, rejected answers', labelNames: ['event'], registers,
      collect() {
        const f = forwarder();
        this.reset();
        if (!f) return;
        this.inc({ event: 'query' }, f.stats.upstreamQueries);
        this.inc({ event: 'answer' }, f.stats.answered);
        this.inc({ event: 'timeout' }, f.stats.timeouts);
        this.inc({ event: 'tcp-retry' }, f.stats.tcpRetries);
        this.inc({ event: 'rejected' }, f.stats.badAnswers);
      },
    }),
    tcp: new Gauge({
      name: 'metalbox_dns_tcp_connections', help: 'Open DNS TCP connections', registers,
      collect() { this.set(tcpConnections()); },
    }),
  };
}
