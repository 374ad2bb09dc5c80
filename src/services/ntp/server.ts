// The NTP service: an RFC 5905 server for the machines on the provisioning interfaces, and a client of the
// configured upstreams (upstream.ts) for its own view of time. metalbox never sets the host clock: it serves
// the host clock corrected by the selected upstream's offset, at that upstream's stratum + 1; with no usable
// upstream it says so (leap 3, stratum 16) unless the operator set ntp.localStratum (policy.ts).
//
// - One socket per provisioning interface on ntp.port, bound to the device: requests from anywhere else are
//   never seen. Replies leave from the address the request was sent to.
// - Requests come in batches (recvmmsg) and the replies leave together after each batch (sendmmsg,
//   src/lib/udp-socket.ts). With the host clock, the receive timestamp (T2) is the kernel's arrival time of
//   the datagram (SO_TIMESTAMPNS), not when JS got to it, and the transmit timestamp (T3) is written by the
//   native module right before the sendmmsg; both are CLOCK_REALTIME plus the served offset. With another
//   WallClock (tests) both come from that clock, T2 when the batch is handled and T3 just before it is queued.
// - Per-address token buckets (rate-limit.ts): over the limit a client gets one RATE kiss a second, then
//   nothing. Undecodable datagrams and modes other than 3 get nothing: a reply would let a spoofed flood
//   aim us at a third party (modes 6 and 7, the classic amplifiers, are not even parsed).
import { performance } from 'node:perf_hooks';
import { Counter, Gauge } from 'prom-client';
import type { Config } from '../../config/schema.ts';
import { isMetalboxError } from '../../lib/errors.ts';
import { formatIPv4, parseIPv4 } from '../../lib/ipv4.ts';
import { limitedLogger, type LimitedLog } from '../../lib/log-limit.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Metrics } from '../../lib/metrics.ts';
import { BATCH, BATCH_WORDS, openUdpBatchSocket, SEND_FLAGS, type DatagramBatch, type UdpBatchSocket } from '../../lib/udp-socket.ts';
import { decodeNtp, encodeNtpInto, KISS, MODE, NTP_UNIX_OFFSET, ntpAdd, ntpToUnixMs, ZERO_TIMESTAMP, type NtpPacket, type NtpTimestamp } from '../../protocols/ntp/index.ts';
import type { Service } from '../service.ts';
import { HostClock, type WallClock } from './clock.ts';
import { answer, kiss, replyHeader, servedTime, type ReplyHeader, type ServedTime } from './policy.ts';
import { RateLimiter } from './rate-limit.ts';
import { selectUpstream, rootDistance } from './selection.ts';
import { UpstreamClient } from './upstream.ts';

/** How often the served header is recomputed without news from upstream (its dispersion grows with age). */
const REFRESH_MS = 1000;
/** Largest reply: the 48-byte header (we add no extension fields or MAC). */
const REPLY_BYTES = 48;
/** Room per datagram in a batched read: a header, and extension fields or a MAC we ignore but must not cut. */
const MAX_REQUEST_BYTES = 4096;
const TWO32 = 4_294_967_296;
/** What a queued reply was, to count it once the kernel has taken it. */
const ANSWER = 0;
const KOD = 1;

export interface NtpServiceDeps {
  config: Pick<Config, 'interfaces' | 'ntp'>;
  logger: Logger;
  metrics: Metrics;
  /** The wall clock read for every timestamp; default: the host's (HostClock). */
  clock?: WallClock;
  /** Monotonic seconds; default performance.now() / 1000. */
  monotonic?: () => number;
  /** Upstream host name resolution; default dns.lookup (IPv4). */
  resolve?: (host: string) => Promise<string>;
  /** Start-up poll spacing in seconds (tests). */
  burstIntervalSeconds?: number;
}

/** What GET /api/v1/ntp shows. */
export interface NtpStatus {
  synchronised: boolean;
  source: ServedTime['source'];
  leap: number;
  stratum: number;
  precision: number;
  referenceId: string;
  /** ISO time of the reference timestamp; null when never set. */
  referenceTime: string | null;
  offsetSeconds: number;
  rootDelaySeconds: number;
  rootDispersionSeconds: number;
  upstream: string | null;
  localStratum: number | null;
  upstreams: {
    name: string;
    address: string | null;
    port: number;
    reach: number;
    reachable: boolean;
    selected: boolean;
    stratum: number | null;
    offsetSeconds: number | null;
    delaySeconds: number | null;
    rootDistanceSeconds: number | null;
    sampleAgeSeconds: number | null;
    pollIntervalSeconds: number;
    kiss: string | null;
    lastError: string | null;
    polls: number;
    replies: number;
  }[];
  requests: { answered: number; kissRate: number; rateDropped: number; malformed: number; ignored: number };
  rateLimitedClients: number;
}

interface Listener { ifname: string; socket: UdpBatchSocket }

export class NtpService implements Service {
  readonly name = 'ntp';
  private readonly listeners: Listener[] = [];
  private readonly clock: WallClock;
  private readonly monotonic: () => number;
  private readonly upstream: UpstreamClient;
  private readonly limiter: RateLimiter<number>;
  private readonly log: LimitedLog;
  private readonly m: ReturnType<typeof createNtpMetrics>;
  private served!: ServedTime;
  private header!: ReplyHeader;
  /** The offset of the upstream last followed, served on in holdover. */
  private holdoverOffset = 0;
  private refreshTimer: NodeJS.Timeout | undefined;
  /** One reply buffer: queue() copies it into the socket's send queue. */
  private readonly out = Buffer.alloc(REPLY_BYTES);
  /**
   * The answer to a plain 48-byte mode-3 request, encoded from the served header (refresh()): a request only adds
   * its version, poll and transmit timestamp, and we the receive (and transmit) timestamps.
   */
  private readonly template = Buffer.alloc(REPLY_BYTES);
  /** The host clock: kernel receive timestamps and a natively written transmit timestamp (see the top). */
  private readonly hostClock: boolean;
  /** Kind (ANSWER, KOD) of each reply queued in the current batch, by queue index. */
  private pendingKind = new Uint8Array(1024);
  private batchAnswered = 0;
  private batchKisses = 0;

  private readonly counts = { answered: 0, kissRate: 0, rateDropped: 0, malformed: 0, ignored: 0 };
  private readonly addresses = new Map<string, number>();

  constructor(private readonly deps: NtpServiceDeps) {
    const { ntp } = deps.config;
    this.log = limitedLogger(deps.logger);
    this.monotonic = deps.monotonic ?? (() => performance.now() / 1000);
    this.clock = deps.clock ?? new HostClock((ms) => {
      deps.logger.warn({ stepMs: ms }, 'the host clock was stepped: NTP samples discarded');
      this.upstream.clearSamples();
    });
    this.limiter = new RateLimiter<number>(ntp.rateLimit);
    this.upstream = new UpstreamClient({
      servers: ntp.upstream, pollSeconds: ntp.pollSeconds, clock: this.clock, logger: deps.logger, log: this.log,
      monotonic: this.monotonic, onChange: () => this.refresh(),
      ...(deps.resolve ? { resolve: deps.resolve } : {}),
      ...(deps.burstIntervalSeconds !== undefined ? { burstIntervalSeconds: deps.burstIntervalSeconds } : {}),
    });
    this.m = createNtpMetrics(deps.metrics, this);
    this.hostClock = this.clock instanceof HostClock;
    this.refresh();
  }

  async start(): Promise<void> {
    const { config } = this.deps;
    try {
      this.upstream.start();
      for (const ifname of config.interfaces) {
        // No SO_REUSEADDR: another NTP server on this host (chronyd, ntpd on 0.0.0.0:123) must fail our start.
        const listener: Listener = {
          ifname,
          socket: openUdpBatchSocket({
            port: config.ntp.port, device: ifname, reuseAddress: false, receiveBufferSize: 4 * 1024 * 1024, readBatch: 256, maxDatagram: MAX_REQUEST_BYTES,
            timestamps: this.hostClock, onSendFailure: (index, code) => this.sendFailed(ifname, index, code),
          }, (b) => this.onBatch(listener, b)),
        };
        listener.socket.setNtpOffset(this.served.offset);
        this.listeners.push(listener);
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
    if (this.clock instanceof HostClock) this.clock.watch();
    this.refreshTimer = setInterval(() => this.refresh(), REFRESH_MS);
    this.refreshTimer.unref();
    this.deps.logger.info({ interfaces: config.interfaces, port: config.ntp.port, upstream: config.ntp.upstream, localStratum: config.ntp.localStratum, precision: this.clock.precision }, 'ntp listening');
  }

  async stop(): Promise<void> {
    clearInterval(this.refreshTimer);
    this.refreshTimer = undefined;
    if (this.clock instanceof HostClock) this.clock.unwatch();
    this.upstream.stop();
    for (const l of this.listeners.splice(0)) l.socket.close();
  }

  /** What is served now (tests). */
  get current(): Readonly<ServedTime> {
    return this.served;
  }

  /** Recomputes what every reply says: after each upstream event and once a second. */
  refresh(): void {
    const now = this.monotonic();
    const sel = selectUpstream(this.upstream.candidates(), now);
    const peer = sel ? this.upstream.peer(sel.id) : undefined;
    const address = peer?.address === undefined ? undefined : this.addressNumber(peer.address);
    const served = servedTime({
      ...(sel && address !== undefined ? { selected: { id: sel.id, sample: sel.sample, address, sampleHostTime: sel.sample.hostTime } } : {}),
      ...(this.deps.config.ntp.localStratum !== undefined ? { localStratum: this.deps.config.ntp.localStratum } : {}),
      holdoverOffset: this.holdoverOffset,
      precision: this.clock.precision,
      now,
      hostNow: this.clock.now(),
    });
    if (served.source === 'upstream') this.holdoverOffset = served.offset;
    if (this.served && served.source !== this.served.source) {
      this.deps.logger.info({ source: served.source, stratum: served.stratum, upstream: served.upstream, offset: served.offset }, served.source === 'none' ? 'ntp unsynchronised: answering leap 3, stratum 16' : 'ntp time source changed');
    }
    this.served = served;
    this.header = replyHeader(served);
    // The fixed part of every answer: answer() with a version-4 client's zero poll and timestamps, patched per request.
    encodeNtpInto(answer({ leap: 0, version: 4, mode: MODE.CLIENT, stratum: 0, poll: 0, precision: 0, rootDelay: 0, rootDispersion: 0, referenceId: 0, referenceTime: ZERO_TIMESTAMP, originTime: ZERO_TIMESTAMP, receiveTime: ZERO_TIMESTAMP, transmitTime: ZERO_TIMESTAMP, extensions: [] }, this.header, ZERO_TIMESTAMP)!, this.template);
    for (const l of this.listeners) l.socket.setNtpOffset(served.offset);
  }

  status(): NtpStatus {
    const now = this.monotonic();
    const s = this.served;
    const candidates = this.upstream.candidates();
    return {
      synchronised: s.source !== 'none',
      source: s.source,
      leap: s.leap,
      stratum: s.stratum,
      precision: s.precision,
      referenceId: formatRefId(s),
      referenceTime: s.referenceTime.seconds === 0 && s.referenceTime.fraction === 0 ? null : new Date(Math.floor(ntpToUnixMs(s.referenceTime))).toISOString(),
      offsetSeconds: s.offset,
      rootDelaySeconds: s.rootDelay,
      rootDispersionSeconds: s.rootDispersion,
      upstream: s.upstream ?? null,
      localStratum: this.deps.config.ntp.localStratum ?? null,
      upstreams: this.upstream.peers.map((p, i) => {
        const best = candidates[i]?.sample;
        return {
          name: p.name,
          address: p.address ?? null,
          port: p.port,
          reach: p.reach,
          reachable: p.reach !== 0,
          selected: s.upstream === p.name,
          stratum: best?.stratum ?? p.lastStratum ?? null,
          offsetSeconds: best?.offset ?? null,
          delaySeconds: best?.delay ?? null,
          rootDistanceSeconds: best ? rootDistance(best, now) : null,
          sampleAgeSeconds: best ? Math.max(0, now - best.at) : null,
          pollIntervalSeconds: p.intervalSeconds,
          kiss: p.kiss ?? null,
          lastError: p.lastError ?? null,
          polls: p.polls,
          replies: p.replies,
        };
      }),
      requests: { ...this.counts },
      rateLimitedClients: this.limiter.size,
    };
  }

  /** One wakeup's requests: each answered into the socket's send queue, which leaves in one sendmmsg after them. */
  private onBatch(listener: Listener, b: DatagramBatch): void {
    const { data, meta, count } = b;
    // Without kernel timestamps (another WallClock), T2 is read once for the batch: as early as we can.
    const batchReceive = this.hostClock ? undefined : this.clock.now();
    for (let i = 0, r = 0; i < count; i++, r += BATCH_WORDS) {
      const at = meta[r + BATCH.OFFSET]!;
      let receive = batchReceive;
      if (receive === undefined) {
        const ns = meta[r + BATCH.TIME_NANOSECONDS]!;
        const unix = meta[r + BATCH.TIME_SECONDS]!;
        // RFC 5905 §8: T2, when the kernel took the datagram in (0, 0: no timestamp came, read the clock).
        receive = unix === 0 && ns === 0 ? this.clock.now() : { seconds: (unix + NTP_UNIX_OFFSET) % TWO32, fraction: Math.floor(ns * 4.294967296) };
      }
      this.onRequest(listener, data, at, at + meta[r + BATCH.LENGTH]!, meta[r + BATCH.ADDRESS]!, meta[r + BATCH.PORT]!, meta[r + BATCH.INTERFACE_ADDRESS]!, receive);
    }
    if (listener.socket.queued > 0) this.flush(listener);
  }

  private onRequest(listener: Listener, data: Buffer, start: number, end: number, address: number, port: number, interfaceAddress: number, receive: NtpTimestamp): void {
    const length = end - start;
    const b0 = data[start]!;
    const version = (b0 >> 3) & 7;
    // The common request, a bare 48-byte client packet (decodeNtp would accept it as it is): answered from the template.
    const plain = length === REPLY_BYTES && (b0 & 7) === MODE.CLIENT && version >= 1 && version <= 4;
    let req: NtpPacket | undefined;
    if (!plain) {
      try {
        req = decodeNtp(data.subarray(start, end));
      } catch (err) {
        this.counts.malformed++;
        this.m.requests.malformed.inc();
        this.log('warn', `malformed:${listener.ifname}`, { ifname: listener.ifname, from: `${formatIPv4(address)}:${port}`, code: isMetalboxError(err) ? err.code : undefined, offset: (err as { details?: { offset?: number } }).details?.offset, bytes: length }, 'malformed NTP packet dropped');
        return;
      }
      if (req.mode !== MODE.CLIENT) {
        this.counts.ignored++;
        this.m.requests.ignored.inc();
        this.deps.logger.debug({ ifname: listener.ifname, from: `${formatIPv4(address)}:${port}`, mode: req.mode }, 'ntp packet that is not a client request ignored');
        return;
      }
    }
    const verdict = this.limiter.take(address, this.monotonic());
    const out = this.out;
    if (verdict === 'answer') {
      const t2 = this.served.offset === 0 ? receive : ntpAdd(receive, this.served.offset);
      if (plain) {
        // answer(): the served header, the request's version and poll, origin = its transmit timestamp bit for bit.
        this.template.copy(out);
        out[0] = (this.header.leap << 6) | (version << 3) | MODE.SERVER;
        out[2] = data[start + 2]!;
        data.copy(out, 24, start + 40, start + 48);
      } else {
        encodeNtpInto(answer(req!, this.header, t2)!, out);
      }
      out.writeUInt32BE(t2.seconds, 32);
      out.writeUInt32BE(t2.fraction, 36);
      let flags = 0;
      if (this.hostClock) {
        flags = SEND_FLAGS.NTP_TRANSMIT;
      } else {
        // T3, as late as we can: straight into the encoded reply.
        const t3 = this.served.offset === 0 ? this.clock.now() : ntpAdd(this.clock.now(), this.served.offset);
        out.writeUInt32BE(t3.seconds, 40);
        out.writeUInt32BE(t3.fraction, 44);
      }
      this.pendingKind[this.queue(listener, interfaceAddress, address, port, flags)] = ANSWER;
      this.batchAnswered++;
    } else if (verdict === 'kod') {
      encodeNtpInto(kiss(req ?? decodeNtp(data.subarray(start, end)), KISS.RATE), out);
      this.pendingKind[this.queue(listener, interfaceAddress, address, port, 0)] = KOD;
      this.batchKisses++;
    } else {
      this.counts.rateDropped++;
      this.m.requests.rateDropped.inc();
    }
  }

  /** Queues this.out (a 48-byte reply: we send no extension fields) from the address the request came to. */
  private queue(listener: Listener, source: number, address: number, port: number, flags: number): number {
    const index = listener.socket.queue(this.out, address, port, source, 0, flags);
    if (index >= this.pendingKind.length) {
      const grown = new Uint8Array(this.pendingKind.length * 2);
      grown.set(this.pendingKind);
      this.pendingKind = grown;
    }
    return index;
  }

  /** A queued reply the kernel did not take: not counted as answered (a full queue is counted, not logged). */
  private sendFailed(ifname: string, index: number, code: string): void {
    if (this.pendingKind[index] === KOD) this.batchKisses--;
    else this.batchAnswered--;
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'ENOBUFS') {
      this.m.sendDropped.inc();
      return;
    }
    this.log('warn', `send:${ifname}`, { ifname, code: 'SOCKET_SEND_FAILED', errno: code }, 'ntp reply not sent');
  }

  /** Sends the batch's replies and counts those the kernel took. */
  private flush(listener: Listener): void {
    try {
      listener.socket.flush();
    } catch (err) {
      // Closed meanwhile: nothing was sent.
      this.batchAnswered = 0;
      this.batchKisses = 0;
      this.log('warn', `send:${listener.ifname}`, { ifname: listener.ifname, code: isMetalboxError(err) ? err.code : undefined }, 'ntp reply not sent');
    }
    if (this.batchAnswered > 0) {
      this.counts.answered += this.batchAnswered;
      this.m.requests.answered.inc(this.batchAnswered);
    }
    if (this.batchKisses > 0) {
      this.counts.kissRate += this.batchKisses;
      this.m.requests.kissRate.inc(this.batchKisses);
    }
    this.batchAnswered = 0;
    this.batchKisses = 0;
  }

  private addressNumber(address: string): number | undefined {
    let n = this.addresses.get(address);
    if (n === undefined) {
      n = parseIPv4(address);
      if (n === undefined) return undefined;
      if (this.addresses.size > 64) this.addresses.clear();
      this.addresses.set(address, n);
    }
    return n;
  }
}

function formatRefId(s: ServedTime): string {
  const r = s.referenceId;
  if (s.source === 'upstream' || (s.source === 'local' && s.stratum > 1)) return `${r >>> 24}.${(r >>> 16) & 0xff}.${(r >>> 8) & 0xff}.${r & 0xff}`;
  if (r === 0) return '';
  return String.fromCharCode(r >>> 24, (r >>> 16) & 0xff, (r >>> 8) & 0xff, r & 0xff).replace(/\0+$/, '');
}

function createNtpMetrics(metrics: Metrics, svc: NtpService) {
  const registers = [metrics.registry];
  const requests = new Counter({ name: 'metalbox_ntp_requests_total', help: 'NTP datagrams received on the server port, by what became of them', labelNames: ['result'], registers });
  const status = () => svc.status();
  const upstreamGauge = (name: string, help: string, pick: (u: NtpStatus['upstreams'][number]) => number | null) => new Gauge({
    name, help, labelNames: ['upstream'], registers,
    collect() {
      this.reset();
      for (const u of status().upstreams) {
        const v = pick(u);
        if (v !== null) this.set({ upstream: u.name }, v);
      }
    },
  });
  return {
    requests: {
      answered: requests.labels('answered'),
      kissRate: requests.labels('kiss-rate'),
      rateDropped: requests.labels('rate-dropped'),
      malformed: requests.labels('malformed'),
      ignored: requests.labels('not-a-request'),
    },
    sendDropped: new Counter({ name: 'metalbox_ntp_replies_dropped_total', help: 'NTP replies the kernel would not take (full send queue)', registers }),
    synchronised: new Gauge({ name: 'metalbox_ntp_synchronised', help: '1 when NTP serves a time it can vouch for (an upstream, or ntp.localStratum), 0 when it answers unsynchronised', registers, collect() { this.set(status().synchronised ? 1 : 0); } }),
    stratum: new Gauge({ name: 'metalbox_ntp_stratum', help: 'Stratum NTP replies carry (16: unsynchronised)', registers, collect() { this.set(status().stratum); } }),
    offset: new Gauge({ name: 'metalbox_ntp_offset_seconds', help: 'Correction applied to the host clock in served time: the selected upstream\'s offset', registers, collect() { this.set(status().offsetSeconds); } }),
    rootDispersion: new Gauge({ name: 'metalbox_ntp_root_dispersion_seconds', help: 'Root dispersion NTP replies carry', registers, collect() { this.set(status().rootDispersionSeconds); } }),
    clients: new Gauge({ name: 'metalbox_ntp_rate_limited_clients', help: 'Client addresses the NTP rate limiter tracks', registers, collect() { this.set(status().rateLimitedClients); } }),
    upstreamOffset: upstreamGauge('metalbox_ntp_upstream_offset_seconds', 'Offset of an upstream\'s clock from the host clock (best sample)', (u) => u.offsetSeconds),
    upstreamDelay: upstreamGauge('metalbox_ntp_upstream_delay_seconds', 'Round-trip delay to an upstream (best sample)', (u) => u.delaySeconds),
    upstreamStratum: upstreamGauge('metalbox_ntp_upstream_stratum', 'Stratum an upstream last reported', (u) => u.stratum),
    upstreamReach: upstreamGauge('metalbox_ntp_upstream_reach', 'Reach register of an upstream (8 bits, RFC 5905 §9.2; 0: unreachable)', (u) => u.reach),
    upstreamSelected: upstreamGauge('metalbox_ntp_upstream_selected', '1 for the upstream NTP follows', (u) => (u.selected ? 1 : 0)),
  };
}
