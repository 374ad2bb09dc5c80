// NTP's view of the shared per-client token bucket (src/lib/rate-limit.ts): who may be answered, who gets a
// Kiss-o'-Death RATE, who is dropped. Without a token a client gets a RATE kiss (RFC 5905 §7.4) at most once
// per KOD_INTERVAL_S, and nothing else: a KoD is no larger than the request, so spoofed floods cannot use us
// as an amplifier, and the drop keeps our CPU for the others.
import { RateLimiter as Buckets, type RateLimitOptions } from '../../lib/rate-limit.ts';

export type { RateLimitOptions } from '../../lib/rate-limit.ts';

/** At most one RATE kiss per address per this many seconds. */
export const KOD_INTERVAL_S = 1;

export type RateVerdict = 'answer' | 'kod' | 'drop';

const VERDICT = { allow: 'answer', notify: 'kod', drop: 'drop' } as const;

export class RateLimiter<K = string> {
  private readonly buckets: Buckets<K>;

  constructor(o: RateLimitOptions) {
    this.buckets = new Buckets<K>(o, { notifyIntervalS: KOD_INTERVAL_S });
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Addresses forgotten to stay under maxClients (a gauge of pressure). */
  get evicted(): number {
    return this.buckets.evicted;
  }

  /** One request from `address` at `now` (seconds, any monotonic origin). */
  take(address: K, now: number): RateVerdict {
    return VERDICT[this.buckets.check(address, now)];
  }
}
