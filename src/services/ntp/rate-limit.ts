// Per-address token buckets (any key: the NTP service uses addresses as numbers) with bounded memory: who may be answered, who gets a Kiss-o'-Death RATE, who
// is dropped. Pure (the caller passes the time).
//
// Each address holds `burst` tokens, refilled at `perSecond`; a request takes one. Without a token the client
// gets a RATE kiss (RFC 5905 §7.4) at most once per KOD_INTERVAL_S, and nothing else: a KoD is no larger than
// the request, so spoofed floods cannot use us as an amplifier, and the drop keeps our CPU for the others.
//
// Memory: at most `maxClients` addresses. When the table is full, addresses whose bucket has refilled (they
// carry no state worth keeping) are forgotten; when none has, the oldest eighth goes, so a flood of spoofed
// sources costs O(1) per packet amortised and never grows the table.

/** At most one RATE kiss per address per this many seconds. */
export const KOD_INTERVAL_S = 1;

export type RateVerdict = 'answer' | 'kod' | 'drop';

interface Bucket {
  tokens: number;
  /** Seconds (caller's clock) when `tokens` was last brought up to date. */
  at: number;
  /** When the last kiss went out; -Infinity for never. */
  kissAt: number;
}

export interface RateLimitOptions {
  /** Tokens per second; 0 turns limiting off. */
  perSecond: number;
  burst: number;
  maxClients: number;
}

export class RateLimiter<K = string> {
  private readonly buckets = new Map<K, Bucket>();
  /** Addresses forgotten to stay under maxClients (a gauge of pressure). */
  evicted = 0;

  constructor(private readonly o: RateLimitOptions) {
    if (!(o.perSecond >= 0) || !(o.burst >= 1) || !(o.maxClients >= 1)) throw new RangeError('RateLimiter: perSecond >= 0, burst >= 1, maxClients >= 1');
  }

  get size(): number {
    return this.buckets.size;
  }

  /** One request from `address` at `now` (seconds, any monotonic origin). */
  take(address: K, now: number): RateVerdict {
    const { perSecond, burst } = this.o;
    if (perSecond === 0) return 'answer';
    let b = this.buckets.get(address);
    if (b === undefined) {
      if (this.buckets.size >= this.o.maxClients) this.makeRoom(now);
      b = { tokens: burst, at: now, kissAt: -Infinity };
      this.buckets.set(address, b);
    } else if (now > b.at) {
      b.tokens = Math.min(burst, b.tokens + (now - b.at) * perSecond);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 'answer';
    }
    if (now - b.kissAt >= KOD_INTERVAL_S) {
      b.kissAt = now;
      return 'kod';
    }
    return 'drop';
  }

  private makeRoom(now: number): void {
    const { perSecond, burst } = this.o;
    const before = this.buckets.size;
    for (const [address, b] of this.buckets) {
      if (b.tokens + (now - b.at) * perSecond >= burst && now - b.kissAt >= KOD_INTERVAL_S) this.buckets.delete(address);
    }
    // Free an eighth at least, so the next sweep is maxClients/8 insertions away (O(1) amortised): if too
    // few were idle, forget the oldest (Map order is insertion order).
    const target = this.o.maxClients - Math.max(1, Math.floor(this.o.maxClients / 8));
    for (const address of this.buckets.keys()) {
      if (this.buckets.size <= target) break;
      this.buckets.delete(address);
    }
    this.evicted += before - this.buckets.size;
  }
}
