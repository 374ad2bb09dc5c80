// Forwarding names outside our zones to the configured upstream resolvers, with a cache that keeps answers
// no longer than their TTLs allow (RFC 1035 §7.3, RFC 2308 §5 for negative answers).
//
// - One upstream query per question at a time: clients asking the same thing meanwhile share its answer.
// - Upstream queries carry a random ID and leave from a random one of a few sockets on random ports; an
//   answer counts only from a server we asked, with that ID and the same question (RFC 5452 §9.1).
// - The first server is asked, then every ATTEMPT_MS the next one (round robin, so a single server gets a
//   retransmission); SERVFAIL, REFUSED, NOTIMP or FORMERR from one moves on to the next at once. After
//   `timeoutMs` in all the answer is "none", which the service sends as SERVFAIL: bounded, never hanging.
// - An answer with TC set is asked again over TCP from the same server, within what is left of the time.
import { connect } from 'node:net';
import { randomInt } from 'node:crypto';
import { decodeDns, encodeDns, RCODE, TYPE, type DnsMessage, type DnsQuestion, type DnsRecord, type SoaData } from '../../protocols/dns/index.ts';

export interface Upstream { address: string; port: number }

/** A UDP socket of the forwarder's (src/lib/udp-socket.ts in production). */
export interface ForwardSocket {
  send(data: Buffer, address: string, port: number): boolean;
  close(): void;
}

export interface ForwarderOptions {
  servers: readonly Upstream[];
  /** Opens one socket on a random port; `onMessage` gets what arrives on it. */
  open: (onMessage: (data: Buffer, address: string, port: number) => void) => ForwardSocket;
  sockets?: number;
  timeoutMs?: number;
  attemptMs?: number;
  cacheEntries?: number;
  now?: () => number;
}

export interface CachedAnswer {
  message: DnsMessage;
  storedAt: number;
  expiresAt: number;
}

export interface ForwarderStats { upstreamQueries: number; answered: number; timeouts: number; tcpRetries: number; cacheHits: number; badAnswers: number }

interface Pending {
  id: number;
  key: string;
  question: DnsQuestion;
  wire: Buffer;
  asked: Set<string>;
  attempt: number;
  deadline: number;
  timer: NodeJS.Timeout | undefined;
  done: (answer: CachedAnswer | undefined) => void;
  settled: boolean;
}

/** Longest a forwarded answer is kept, whatever its TTL says (one day, as BIND's max-cache-ttl is a week). */
const MAX_CACHE_TTL = 86_400;
/** Longest a negative answer is kept (RFC 2308 §5: 1-3 hours is reasonable). */
const MAX_NEGATIVE_TTL = 3600;

export function cacheKey(q: DnsQuestion): string {
  return `${q.name.toLowerCase()}|${q.type}|${q.class}`;
}

export class Forwarder {
  private readonly sockets: ForwardSocket[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly inflight = new Map<string, Promise<CachedAnswer | undefined>>();
  private readonly cache = new Map<string, CachedAnswer>();
  private readonly now: () => number;
  private readonly timeoutMs: number;
  private readonly attemptMs: number;
  private readonly cacheEntries: number;
  private closed = false;
  readonly stats: ForwarderStats = { upstreamQueries: 0, answered: 0, timeouts: 0, tcpRetries: 0, cacheHits: 0, badAnswers: 0 };

  constructor(private readonly opts: ForwarderOptions) {
    if (opts.servers.length === 0) throw new TypeError('Forwarder: no upstream servers');
    this.now = opts.now ?? Date.now;
    this.timeoutMs = opts.timeoutMs ?? 2000;
    this.attemptMs = opts.attemptMs ?? 700;
    this.cacheEntries = opts.cacheEntries ?? 10_000;
  }

  open(): void {
    for (let i = 0; i < (this.opts.sockets ?? 4); i++) this.sockets.push(this.opts.open((d, a, p) => this.onAnswer(d, a, p)));
  }

  close(): void {
    this.closed = true;
    for (const s of this.sockets.splice(0)) s.close();
    for (const p of [...this.pending.values()]) this.settle(p, undefined);
  }

  get cacheSize(): number {
    return this.cache.size;
  }

  /** A cached answer still alive, if any. */
  cached(q: DnsQuestion): CachedAnswer | undefined {
    const key = cacheKey(q);
    const hit = this.cache.get(key);
    if (hit === undefined) return undefined;
    if (hit.expiresAt <= this.now()) { this.cache.delete(key); return undefined; }
    this.stats.cacheHits++;
    return hit;
  }

  /** The upstream answer to a question (from the cache when it is fresh); undefined when no server answered in time. */
  resolve(q: DnsQuestion): Promise<CachedAnswer | undefined> {
    const hit = this.cached(q);
    if (hit) return Promise.resolve(hit);
    const key = cacheKey(q);
    let p = this.inflight.get(key);
    if (!p) {
      p = this.ask(q, key).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  private ask(q: DnsQuestion, key: string): Promise<CachedAnswer | undefined> {
    if (this.closed || this.sockets.length === 0) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      let id = randomInt(0x10000);
      for (let i = 0; this.pending.has(id) && i < 100; i++) id = randomInt(0x10000);
      if (this.pending.has(id)) { resolve(undefined); return; }
      const wire = encodeDns({
        id, qr: false, opcode: 0, aa: false, tc: false, rd: true, ra: false, z: false, ad: false, cd: false, rcode: 0,
        questions: [q], answers: [], authorities: [], additionals: [],
        edns: { udpSize: 1232, version: 0, dnssecOk: false, flags: 0, options: [] },
      });
      const p: Pending = { id, key, question: q, wire, asked: new Set(), attempt: 0, deadline: this.now() + this.timeoutMs, timer: undefined, done: resolve, settled: false };
      this.pending.set(id, p);
      this.send(p);
    });
  }

  /** Sends the next attempt and schedules the one after (or the end). */
  private send(p: Pending): void {
    if (p.settled) return;
    clearTimeout(p.timer);
    const left = p.deadline - this.now();
    if (left <= 0) { this.stats.timeouts++; this.settle(p, undefined); return; }
    const server = this.opts.servers[p.attempt % this.opts.servers.length]!;
    p.attempt++;
    p.asked.add(`${server.address}:${server.port}`);
    const socket = this.sockets[randomInt(this.sockets.length)]!;
    this.stats.upstreamQueries++;
    try { socket.send(p.wire, server.address, server.port); } catch { /* unreachable now: the next attempt or the deadline decides */ }
    p.timer = setTimeout(() => this.send(p), Math.min(this.attemptMs, left));
  }

  private settle(p: Pending, answer: CachedAnswer | undefined): void {
    if (p.settled) return;
    p.settled = true;
    clearTimeout(p.timer);
    this.pending.delete(p.id);
    p.done(answer);
  }

  private onAnswer(data: Buffer, address: string, port: number): void {
    if (data.length < 12) return;
    const p = this.pending.get(data.readUInt16BE(0));
    if (!p || !p.asked.has(`${address}:${port}`)) { this.stats.badAnswers++; return; }
    let m: DnsMessage;
    try { m = decodeDns(data); } catch { this.stats.badAnswers++; return; }
    const q = m.questions[0];
    if (!m.qr || m.questions.length !== 1 || q!.type !== p.question.type || q!.class !== p.question.class || q!.name.toLowerCase() !== p.question.name.toLowerCase()) {
      this.stats.badAnswers++;
      return;
    }
    if (m.tc) {
      // RFC 7766 §5: the answer did not fit in UDP: the same server over TCP, within the time left.
      this.stats.tcpRetries++;
      clearTimeout(p.timer);
      const left = p.deadline - this.now();
      void tcpExchange({ address, port }, p.wire, p.id, left).then((full) => {
        if (full && !p.settled) this.accept(p, full);
        else if (!p.settled) this.send(p);
      });
      return;
    }
    const unhelpful = m.rcode === RCODE.SERVFAIL || m.rcode === RCODE.REFUSED || m.rcode === RCODE.NOTIMP || m.rcode === RCODE.FORMERR;
    if (unhelpful && p.asked.size < this.opts.servers.length) { this.send(p); return; }
    this.accept(p, m);
  }

  private accept(p: Pending, m: DnsMessage): void {
    this.stats.answered++;
    const now = this.now();
    const ttl = cacheTtl(m);
    const entry: CachedAnswer = { message: m, storedAt: now, expiresAt: now + ttl * 1000 };
    if (ttl > 0) {
      if (this.cache.size >= this.cacheEntries) {
        // Oldest first (insertion order); expired entries go on the way.
        for (const [k, v] of this.cache) {
          this.cache.delete(k);
          if (v.expiresAt > now && this.cache.size < this.cacheEntries) break;
        }
      }
      this.cache.delete(p.key);
      this.cache.set(p.key, entry);
    }
    this.settle(p, entry);
  }
}

/** How long an upstream answer may be cached, in seconds: its smallest TTL; negative answers by their SOA (RFC 2308 §5). */
export function cacheTtl(m: DnsMessage): number {
  if (m.rcode !== RCODE.NOERROR && m.rcode !== RCODE.NXDOMAIN) return 0;
  const soa = m.authorities.find((r) => r.type === TYPE.SOA);
  if (m.rcode === RCODE.NXDOMAIN || m.answers.length === 0) {
    if (!soa) return 0;
    return Math.min(soa.ttl, (soa.data as SoaData).minimum, MAX_NEGATIVE_TTL);
  }
  let ttl = MAX_CACHE_TTL;
  for (const r of m.answers) ttl = Math.min(ttl, r.ttl);
  return ttl;
}

/** A forwarded answer for the client: their ID and question, TTLs less the time the answer spent in the cache. */
export function forwardedReply(q: DnsMessage, cached: CachedAnswer, now: number, udpPayload: number): DnsMessage {
  const age = Math.max(0, Math.floor((now - cached.storedAt) / 1000));
  const age1 = (list: DnsRecord[]) => (age === 0 ? list : list.map((r) => ({ ...r, ttl: Math.max(0, r.ttl - age) })));
  const m = cached.message;
  const r: DnsMessage = {
    id: q.id, qr: true, opcode: q.opcode, aa: false, tc: false, rd: q.rd, ra: true, z: false, ad: false, cd: q.cd,
    rcode: m.rcode, questions: q.questions, answers: age1(m.answers), authorities: age1(m.authorities), additionals: age1(m.additionals),
  };
  if (q.edns) r.edns = { udpSize: udpPayload, version: 0, dnssecOk: q.edns.dnssecOk, flags: 0, options: [] };
  else if (r.rcode > 0xf) r.rcode = RCODE.SERVFAIL;
  return r;
}

/** One query over TCP (RFC 1035 §4.2.2: two-octet length prefix); undefined on any failure or after `timeoutMs`. */
export function tcpExchange(server: Upstream, wire: Buffer, id: number, timeoutMs: number): Promise<DnsMessage | undefined> {
  return new Promise((resolve) => {
    if (timeoutMs <= 0) { resolve(undefined); return; }
    const sock = connect({ host: server.address, port: server.port });
    let buf = Buffer.alloc(0);
    const finish = (m: DnsMessage | undefined) => { clearTimeout(timer); sock.destroy(); resolve(m); };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    sock.on('error', () => finish(undefined));
    sock.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(wire.length);
      sock.write(Buffer.concat([len, wire]));
    });
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2) return;
      const n = buf.readUInt16BE(0);
      if (buf.length < 2 + n) return;
      try {
        const m = decodeDns(buf.subarray(2, 2 + n));
        finish(m.id === id && m.qr ? m : undefined);
      } catch {
        finish(undefined);
      }
    });
    sock.on('end', () => finish(undefined));
  });
}
