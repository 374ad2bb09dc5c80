// metalbox as an NTP client of the configured upstream servers (RFC 5905 client mode).
//
// - Each upstream is polled every ntp.pollSeconds, four times 2 s apart at start (like iburst) so the first
//   samples come quickly. An unanswered poll or a RATE kiss doubles the interval (up to 16 times); DENY and
//   RSTR kisses stop us using that upstream (it is still polled at the longest interval, in case the
//   operator there changes their mind).
// - Requests carry a random transmit timestamp instead of our clock (no clock disclosure, as chrony does);
//   a reply counts only when its origin echoes it bit for bit, which also defeats off-path spoofing.
// - The reach register (RFC 5905 §9.2) shifts left on each poll and gets bit 0 for a matching reply; an
//   upstream whose last reply said "unsynchronised" loses its samples at once.
// - One UDP socket on an ephemeral port, bound to no device: upstreams live on the site network, not on the
//   provisioning interfaces. Host names are resolved (IPv4) before a poll when the address is not known yet,
//   and again after four unanswered polls.
import { randomFillSync } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { isMetalboxError } from '../../lib/errors.ts';
import type { LimitedLog } from '../../lib/log-limit.ts';
import type { Logger } from '../../lib/logger.ts';
import { openUdpSocket, type Datagram, type UdpSocket } from '../../lib/udp-socket.ts';
import { decodeNtp, encodeNtp, KISS, LEAP, MODE, type NtpTimestamp } from '../../protocols/ntp/index.ts';
import type { WallClock } from './clock.ts';
import { addSample, bestSample, checkReply, type Candidate, type Sample } from './selection.ts';

/** Interval of the start-up polls (seconds) and how many there are. */
export const BURST_INTERVAL_S = 2;
export const BURST_POLLS = 4;
/** The poll interval doubles per failure up to this many times (x16). */
export const MAX_BACKOFF_DOUBLINGS = 4;
/** How long a reply is waited for. */
export const REPLY_TIMEOUT_MS = 2000;
/** Unanswered polls after which a host name is resolved again. */
const RESOLVE_AFTER_FAILURES = 4;

export interface UpstreamPeer {
  /** As configured: "host" or "host:port". */
  readonly name: string;
  readonly host: string;
  readonly port: number;
  /** The IPv4 address polled, once known. */
  address: string | undefined;
  /** RFC 5905 §9.2 reach register, 8 bits. */
  reach: number;
  samples: Sample[];
  /** Consecutive polls without a usable answer (unanswered or RATE): the backoff exponent. */
  failures: number;
  /** Start-up polls still to send at BURST_INTERVAL_S. */
  burstLeft: number;
  /** The last kiss code received, until a good reply. */
  kiss: string | undefined;
  /** Why the last reply (or poll) gave no sample. */
  lastError: string | undefined;
  /** Seconds until the next poll, as last scheduled. */
  intervalSeconds: number;
  /** What the latest valid reply said (stratum, leap), even when it gave no sample. */
  lastStratum: number | undefined;
  pending: { cookie: NtpTimestamp; t1: NtpTimestamp; timer: NodeJS.Timeout } | undefined;
  timer: NodeJS.Timeout | undefined;
  polls: number;
  replies: number;
}

export interface UpstreamDeps {
  servers: readonly string[];
  pollSeconds: number;
  clock: WallClock;
  logger: Logger;
  log: LimitedLog;
  /** Told whenever a peer's samples or reach change (the server recomputes what it serves). */
  onChange: () => void;
  /** Monotonic seconds; default performance.now() / 1000. */
  monotonic?: () => number;
  /** Host name -> IPv4 address; default dns.lookup (family 4). */
  resolve?: (host: string) => Promise<string>;
  /** Start-up poll spacing in seconds (tests shorten it). */
  burstIntervalSeconds?: number;
  replyTimeoutMs?: number;
}

/** "host" or "host:port" -> parts (the config schema checked the shape). */
export function parseUpstream(name: string): { host: string; port: number } {
  const m = /^(.*?)(?::(\d{1,5}))?$/.exec(name)!;
  const port = m[2] === undefined ? 123 : Number(m[2]);
  if (port < 1 || port > 65535) throw new RangeError(`upstream ${name}: port must be 1-65535`);
  return { host: m[1]!, port };
}

export class UpstreamClient {
  readonly peers: UpstreamPeer[];
  private socket: UdpSocket | undefined;
  private readonly monotonic: () => number;
  private readonly resolve: (host: string) => Promise<string>;
  private stopped = true;
  /** Replies that did not decode or matched no poll. */
  stray = 0;

  constructor(private readonly deps: UpstreamDeps) {
    this.monotonic = deps.monotonic ?? (() => performance.now() / 1000);
    this.resolve = deps.resolve ?? (async (host) => (await lookup(host, { family: 4 })).address);
    this.peers = deps.servers.map((name) => {
      const { host, port } = parseUpstream(name);
      return {
        name, host, port, address: isIP(host) === 4 ? host : undefined, reach: 0, samples: [], failures: 0, burstLeft: BURST_POLLS,
        kiss: undefined, lastError: undefined, intervalSeconds: deps.burstIntervalSeconds ?? BURST_INTERVAL_S, lastStratum: undefined,
        pending: undefined, timer: undefined, polls: 0, replies: 0,
      };
    });
  }

  /** Opens the socket (fails fast) and sends the first polls. */
  start(): void {
    if (this.peers.length === 0) return;
    // No SO_REUSEADDR with port 0: two such sockets may get the same port (src/lib/udp-socket.ts).
    this.socket = openUdpSocket({ port: 0, reuseAddress: false }, (d) => this.onReply(d));
    this.stopped = false;
    for (const p of this.peers) void this.poll(p);
  }

  stop(): void {
    this.stopped = true;
    for (const p of this.peers) {
      clearTimeout(p.timer);
      if (p.pending) clearTimeout(p.pending.timer);
      p.timer = undefined;
      p.pending = undefined;
    }
    this.socket?.close();
    this.socket = undefined;
  }

  /** What selection needs: each peer's reach and best sample now. */
  candidates(): Candidate[] {
    const now = this.monotonic();
    return this.peers.map((p) => ({ id: p.name, reach: p.reach, sample: bestSample(p.samples, now) }));
  }

  /** Forgets every sample: our clock was stepped, so every offset measured against it is wrong now. */
  clearSamples(): void {
    for (const p of this.peers) p.samples = [];
    this.deps.onChange();
  }

  peer(name: string): UpstreamPeer | undefined {
    return this.peers.find((p) => p.name === name);
  }

  private schedule(p: UpstreamPeer): void {
    if (this.stopped) return;
    let seconds: number;
    if (p.burstLeft > 0) {
      seconds = this.deps.burstIntervalSeconds ?? BURST_INTERVAL_S;
    } else if (p.kiss === KISS.DENY || p.kiss === KISS.RSTR) {
      seconds = this.deps.pollSeconds * 2 ** MAX_BACKOFF_DOUBLINGS;
    } else {
      seconds = this.deps.pollSeconds * 2 ** Math.min(p.failures, MAX_BACKOFF_DOUBLINGS);
    }
    p.intervalSeconds = seconds;
    clearTimeout(p.timer);
    p.timer = setTimeout(() => void this.poll(p), seconds * 1000);
    p.timer.unref();
  }

  private async poll(p: UpstreamPeer): Promise<void> {
    if (this.stopped || !this.socket) return;
    if (p.burstLeft > 0) p.burstLeft--;
    // The previous poll was never answered: it counts as a failure (its timeout has done that already).
    p.reach = (p.reach << 1) & 0xff;
    p.polls++;
    if (p.address === undefined || (isIP(p.host) !== 4 && p.failures > 0 && p.failures % RESOLVE_AFTER_FAILURES === 0)) {
      try {
        p.address = await this.resolve(p.host);
      } catch (err) {
        p.lastError = `cannot resolve ${p.host}: ${(err as Error).message}`;
        this.deps.log('warn', `resolve:${p.name}`, { upstream: p.name, err: { message: (err as Error).message } }, 'ntp upstream name not resolved');
      }
      if (this.stopped || !this.socket) return;
    }
    if (p.address === undefined) {
      this.failed(p);
      return;
    }
    // RFC 5905 §7.3 client request: version 4, mode 3; our poll exponent; every other field zero except the
    // transmit timestamp, here a random cookie the reply must echo.
    const random = randomFillSync(Buffer.alloc(8));
    const cookie = { seconds: random.readUInt32BE(0), fraction: random.readUInt32BE(4) };
    const request = encodeNtp({
      leap: LEAP.NONE, version: 4, mode: MODE.CLIENT, stratum: 0, poll: Math.round(Math.log2(this.deps.pollSeconds)), precision: this.deps.clock.precision,
      rootDelay: 0, rootDispersion: 0, referenceId: 0,
      referenceTime: { seconds: 0, fraction: 0 }, originTime: { seconds: 0, fraction: 0 }, receiveTime: { seconds: 0, fraction: 0 }, transmitTime: cookie,
      extensions: [],
    });
    if (p.pending) clearTimeout(p.pending.timer);
    const timer = setTimeout(() => {
      if (p.pending?.timer !== timer) return;
      p.pending = undefined;
      p.lastError = 'no reply';
      this.failed(p);
    }, this.deps.replyTimeoutMs ?? REPLY_TIMEOUT_MS);
    timer.unref();
    const t1 = this.deps.clock.now();
    p.pending = { cookie, t1, timer };
    try {
      this.socket.send(request, p.address, p.port);
    } catch (err) {
      // No route, and the like: the timeout counts it as unanswered.
      p.lastError = isMetalboxError(err) ? err.message : String(err);
      this.deps.log('warn', `send:${p.name}`, { upstream: p.name, to: `${p.address}:${p.port}`, err: { message: (err as Error).message } }, 'ntp request to upstream not sent');
    }
  }

  private failed(p: UpstreamPeer): void {
    p.failures++;
    this.deps.onChange();
    this.schedule(p);
  }

  private onReply(d: Datagram): void {
    const t4 = this.deps.clock.now();
    const p = this.peers.find((x) => x.pending !== undefined && x.address === d.address && x.port === d.port);
    if (!p?.pending) {
      this.stray++;
      return;
    }
    let reply;
    try {
      reply = decodeNtp(d.data);
    } catch {
      this.stray++;
      return;
    }
    const pending = p.pending;
    const verdict = checkReply(reply, pending.cookie, pending.t1, t4, this.deps.clock.precision, this.monotonic());
    // A reply whose origin does not match is not an answer to this poll (a duplicate, or forged): wait on.
    if (!verdict.ok && 'reason' in verdict && (verdict.reason === 'bogus-origin' || verdict.reason === 'not-server')) {
      this.stray++;
      return;
    }
    clearTimeout(pending.timer);
    p.pending = undefined;
    p.replies++;
    if (verdict.ok) {
      p.reach |= 1;
      p.samples = addSample(p.samples, verdict.sample);
      p.failures = 0;
      p.kiss = undefined;
      p.lastError = undefined;
      p.lastStratum = verdict.sample.stratum;
      this.deps.logger.debug({ upstream: p.name, offset: verdict.sample.offset, delay: verdict.sample.delay, stratum: verdict.sample.stratum }, 'ntp upstream sample');
    } else if ('kiss' in verdict) {
      p.kiss = verdict.kiss;
      p.lastError = `kiss-o'-death ${verdict.kiss}`;
      if (verdict.kiss === KISS.RATE) p.failures++;
      if (verdict.kiss === KISS.DENY || verdict.kiss === KISS.RSTR) p.samples = [];
      this.deps.log('warn', `kiss:${p.name}`, { upstream: p.name, kiss: verdict.kiss }, 'ntp upstream sent a kiss-o\'-death');
    } else {
      // It answered (reachable) but gave no usable time: an unsynchronised upstream must not keep being
      // followed on the strength of its older samples.
      p.reach |= 1;
      p.lastError = verdict.reason;
      p.lastStratum = reply.stratum;
      if (verdict.reason === 'unsynchronised' || verdict.reason === 'bad-stratum') p.samples = [];
      this.deps.log('info', `reject:${p.name}:${verdict.reason}`, { upstream: p.name, reason: verdict.reason, stratum: reply.stratum, leap: reply.leap }, 'ntp upstream reply not used');
    }
    this.deps.onChange();
    this.schedule(p);
  }
}
