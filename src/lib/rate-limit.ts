// Per-client token buckets with bounded memory, shared by every service that answers strangers (NTP, DHCP,
// TFTP, DNS, the API). Pure: the caller passes the time (seconds, any monotonic origin), so tests need no
// clock and no timers exist per client.
//
// Each client (any key: an address as a number or text, a DHCP client id) holds `burst` tokens, refilled at
// `perSecond`; a request takes one. Without a token the request is over the limit: `check` says 'drop', or
// 'notify' when the caller should send the client a small "slow down" instead (NTP's RATE kiss, DNS's
// truncated slip, a TFTP ERROR) — at most once per `notifyIntervalS` per client, or every `notifyEvery`th
// refusal (BIND's RRL "slip"), whichever the limiter was made with.
//
// Memory: at most `maxClients` clients, in two generations of maxClients/2 each. A new client goes into the
// current one; a client found in the previous one moves up to the current one; when the current one is full,
// the previous one (every client not heard from for a whole generation: the idle ones, the oldest first) is
// forgotten at once, and the current one becomes the previous. So a check is O(1) — two Map lookups at worst,
// no sweep, no timer — a flood of spoofed sources never grows the table, and a client heard from within the last
// generation (an abuser over its limit included) keeps its bucket. Forgetting a client only ever gives it a full
// bucket again, the most that a spoofed-source flood large enough to push a real abuser out can win for it.

export type RateVerdict = 'allow' | 'drop' | 'notify';

export interface RateLimitOptions {
  /** Tokens per second; 0 turns limiting off (every check allows, nothing is kept). */
  perSecond: number;
  /** Tokens a new (or long idle) client starts with: requests it may make at once. */
  burst: number;
  /** Clients tracked at once. */
  maxClients: number;
}

export interface NotifyOptions {
  /** At most one 'notify' per client per this many seconds (NTP's KoD); 0 or absent: none by time. */
  notifyIntervalS?: number;
  /** Every this many refusals of a client, one is 'notify' (DNS RRL slip; 1: all, 0: none). */
  notifyEvery?: number;
}

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date (caller's clock, seconds). */
  at: number;
  /** When the last 'notify' went out; -Infinity for never. */
  notifiedAt: number;
  /** Refusals so far (for notifyEvery). */
  refused: number;
}

/** The settings and counters both limiters share, checked once here. */
abstract class LimiterBase {
  protected readonly generation: number;
  protected readonly perSecond: number;
  protected readonly burst: number;
  protected readonly notifyIntervalS: number;
  protected readonly notifyEvery: number;
  /** Clients forgotten to stay under maxClients (a gauge of pressure). */
  evicted = 0;
  /** Checks refused ('drop' or 'notify') since the limiter was made. */
  refused = 0;

  constructor(name: string, o: RateLimitOptions, n: NotifyOptions) {
    if (!(o.perSecond >= 0) || !(o.burst >= 1) || !(o.maxClients >= 2)) throw new RangeError(`${name}: perSecond >= 0, burst >= 1, maxClients >= 2`);
    this.perSecond = o.perSecond;
    this.burst = o.burst;
    this.generation = Math.floor(o.maxClients / 2);
    this.notifyIntervalS = n.notifyIntervalS ?? 0;
    this.notifyEvery = n.notifyEvery ?? 0;
    if (!(this.notifyIntervalS >= 0) || !(this.notifyEvery >= 0)) throw new RangeError(`${name}: notifyIntervalS >= 0, notifyEvery >= 0`);
  }

  /** Limiting is on (perSecond > 0). */
  get enabled(): boolean {
    return this.perSecond > 0;
  }

  /** One request against bucket `b` at `now`: refills it, takes a token or refuses; `b` is updated in place. */
  protected spend(b: Bucket, now: number): RateVerdict {
    if (now > b.at) {
      const tokens = b.tokens + (now - b.at) * this.perSecond;
      b.tokens = tokens < this.burst ? tokens : this.burst;
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 'allow';
    }
    this.refused++;
    b.refused++;
    if (this.notifyIntervalS > 0 && now - b.notifiedAt >= this.notifyIntervalS) {
      b.notifiedAt = now;
      return 'notify';
    }
    if (this.notifyEvery > 0 && b.refused % this.notifyEvery === 0) return 'notify';
    return 'drop';
  }

  /** Seconds until a bucket holding `tokens` as of `at` has a whole token (0: it has one now). */
  protected wait(tokens: number, at: number, now: number): number {
    if (this.perSecond === 0) return 0;
    const t = Math.min(this.burst, tokens + Math.max(0, now - at) * this.perSecond);
    return t >= 1 ? 0 : (1 - t) / this.perSecond;
  }
}

export class RateLimiter<K = string> extends LimiterBase {
  private current = new Map<K, Bucket>();
  private previous = new Map<K, Bucket>();

  constructor(o: RateLimitOptions, n: NotifyOptions = {}) {
    super('RateLimiter', o, n);
  }

  /** Clients tracked now (never above maxClients). */
  get size(): number {
    return this.current.size + this.previous.size;
  }

  /** One request from `key` at `now` (seconds). Two Map lookups at worst; no allocation but a new client's bucket. */
  check(key: K, now: number): RateVerdict {
    if (this.perSecond === 0) return 'allow';
    let b = this.current.get(key);
    if (b === undefined) {
      b = this.previous.get(key);
      if (b === undefined) b = { tokens: this.burst, at: now, notifiedAt: -Infinity, refused: 0 };
      else this.previous.delete(key);
      if (this.current.size >= this.generation) this.rotate();
      this.current.set(key, b);
    }
    return this.spend(b, now);
  }

  /** `check` as a yes/no. */
  allow(key: K, now: number): boolean {
    return this.check(key, now) === 'allow';
  }

  /** Seconds until `key` has a token again (0: it has one now); for Retry-After. */
  retryAfter(key: K, now: number): number {
    const b = this.current.get(key) ?? this.previous.get(key);
    return b === undefined ? 0 : this.wait(b.tokens, b.at, now);
  }

  /** Forgets every client (tests; a config change). */
  clear(): void {
    this.current = new Map();
    this.previous = new Map();
  }

  /** The current generation is full: the previous one is forgotten whole (a new Map, no per-entry delete). */
  private rotate(): void {
    this.evicted += this.previous.size;
    this.previous = this.current;
    this.current = new Map();
  }
}

/** One generation of NumberRateLimiter: open addressing (linear probing), each slot STRIDE numbers in one array. */
interface Table {
  /** Per slot: key + 1 (0: empty, -1: moved up), tokens, at, notifiedAt, refused. */
  slots: Float64Array;
  /** Slots taken. */
  count: number;
  /** Of those, clients that have since moved up to the newer generation (their slot here is stale). */
  moved: number;
}

const STRIDE = 5;
const TOKENS = 1;
const AT = 2;
const NOTIFIED_AT = 3;
const REFUSED = 4;

/**
 * RateLimiter's buckets and generations for integer keys in [0, 2^53 - 1) (IPv4 addresses, DHCP client keys), in a
 * typed array instead of a Map of objects: a new client costs no allocation and no garbage, its slot is one cache
 * line, and a forgotten generation is one fill(0). A flood of new keys (every spoofed DISCOVER has a new chaddr) is
 * exactly what a Map of 32k objects is slow at (test/unit/rate-limit.test.ts measures both). Same verdicts, same
 * bounds; the arrays (40 octets x 2 x the next power of two of maxClients/2, per generation: 2.6 MiB each for
 * 65,536 clients) are made at the first check, so a limiter turned off costs nothing.
 */
export class NumberRateLimiter extends LimiterBase {
  private current: Table | undefined;
  private previous: Table | undefined;
  private readonly mask: number;
  /** One bucket reused by every check: the slot's numbers go through it (no allocation per check). */
  private readonly scratch: Bucket = { tokens: 0, at: 0, notifiedAt: -Infinity, refused: 0 };
  /** The slot offset slotOf found or made. */
  private at = 0;

  constructor(o: RateLimitOptions, n: NotifyOptions = {}) {
    super('NumberRateLimiter', o, n);
    // Load factor at most 1/2: probes stay short.
    let capacity = 2;
    while (capacity < 2 * this.generation) capacity *= 2;
    this.mask = capacity - 1;
  }

  get size(): number {
    const c = this.current;
    const p = this.previous;
    return (c ? c.count : 0) + (p ? p.count - p.moved : 0);
  }

  /** RateLimiter.check for a key in [0, 2^53 - 1). */
  check(key: number, now: number): RateVerdict {
    if (this.perSecond === 0) return 'allow';
    const s = this.slotOf(key, now);
    const i = this.at;
    // The slot's numbers through one reused bucket: the verdict is the base's, as for RateLimiter.
    const b = this.scratch;
    b.tokens = s[i + TOKENS]!;
    b.at = s[i + AT]!;
    b.notifiedAt = s[i + NOTIFIED_AT]!;
    b.refused = s[i + REFUSED]!;
    const verdict = this.spend(b, now);
    s[i + TOKENS] = b.tokens;
    s[i + AT] = b.at;
    s[i + NOTIFIED_AT] = b.notifiedAt;
    s[i + REFUSED] = b.refused;
    return verdict;
  }

  /**
   * The current generation's slots with `key`'s slot at offset `this.at`: found there, moved up from the previous
   * generation, or made with a full bucket (rotating first when the current generation is full).
   */
  private slotOf(key: number, now: number): Float64Array {
    const stored = key + 1;
    const h = hash(key) & this.mask;
    let cur = this.current;
    if (cur === undefined) cur = this.current = newTable(this.mask + 1);
    const i = find(cur.slots, stored, h, this.mask);
    if (i >= 0) {
      this.at = i;
      return cur.slots;
    }
    const fresh = this.scratch;
    fresh.tokens = this.burst;
    fresh.at = now;
    fresh.notifiedAt = -Infinity;
    fresh.refused = 0;
    const prev = this.previous;
    const j = prev === undefined ? -1 : find(prev.slots, stored, h, this.mask);
    if (j >= 0) {
      const ps = prev!.slots;
      fresh.tokens = ps[j + TOKENS]!;
      fresh.at = ps[j + AT]!;
      fresh.notifiedAt = ps[j + NOTIFIED_AT]!;
      fresh.refused = ps[j + REFUSED]!;
      ps[j] = -1; // stale: never matches a key (keys are >= 1), never empty (probing goes on past it)
      prev!.moved++;
    }
    // Rotating empties the previous generation: what moved up was read out of it above.
    if (cur.count >= this.generation) cur = this.rotate();
    const at = ~find(cur.slots, stored, h, this.mask);
    const cs = cur.slots;
    cs[at] = stored;
    cs[at + TOKENS] = fresh.tokens;
    cs[at + AT] = fresh.at;
    cs[at + NOTIFIED_AT] = fresh.notifiedAt;
    cs[at + REFUSED] = fresh.refused;
    cur.count++;
    this.at = at;
    return cs;
  }

  allow(key: number, now: number): boolean {
    return this.check(key, now) === 'allow';
  }

  retryAfter(key: number, now: number): number {
    const h = hash(key) & this.mask;
    for (const table of [this.current, this.previous]) {
      if (table === undefined) continue;
      const i = find(table.slots, key + 1, h, this.mask);
      if (i >= 0) return this.wait(table.slots[i + TOKENS]!, table.slots[i + AT]!, now);
    }
    return 0;
  }

  clear(): void {
    this.current = undefined;
    this.previous = undefined;
  }

  /** The previous generation is forgotten; its array, emptied, becomes the current one. */
  private rotate(): Table {
    const old = this.previous;
    this.previous = this.current;
    if (old !== undefined) {
      this.evicted += old.count - old.moved;
      old.slots.fill(0);
      old.count = 0;
      old.moved = 0;
    }
    this.current = old ?? newTable(this.mask + 1);
    return this.current;
  }
}

/** The offset of the slot holding `stored`, or ~(the offset of the empty slot where it would go). */
function find(slots: Float64Array, stored: number, h: number, mask: number): number {
  for (let i = h; ; i = (i + 1) & mask) {
    const at = i * STRIDE;
    const k = slots[at]!;
    if (k === stored) return at;
    if (k === 0) return ~at;
  }
}

function newTable(capacity: number): Table {
  return { slots: new Float64Array(capacity * STRIDE), count: 0, moved: 0 };
}

/** A 32-bit mix of an integer below 2^53 (both halves). */
function hash(key: number): number {
  const lo = key >>> 0;
  const hi = (key / 4294967296) >>> 0;
  let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}
