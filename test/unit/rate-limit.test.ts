// The shared per-client token bucket (src/lib/rate-limit.ts): bucket math, the two ways to 'notify' (once per
// interval: NTP's kiss, TFTP's ERROR; every Nth refusal: DNS's slip), Retry-After, eviction (clients not heard from
// for a generation), bounded memory under a million distinct keys, the cost of a check; and NumberRateLimiter (the
// typed-array twin the DHCP and DNS hot paths use) gives the very same verdicts.
import t from 'tap';
import { NumberRateLimiter, RateLimiter } from '../../src/lib/rate-limit.ts';

t.test('bucket math: burst, then perSecond', async (t) => {
  const rl = new RateLimiter<string>({ perSecond: 2, burst: 3, maxClients: 100 });
  t.same(Array.from({ length: 5 }, () => rl.check('a', 0)), ['allow', 'allow', 'allow', 'drop', 'drop'], 'a burst of 3, then nothing (no notify asked for)');
  t.equal(rl.check('b', 0), 'allow', 'another key has its own bucket');
  t.equal(rl.check('a', 0.4), 'drop', '0.8 of a token after 0.4 s at 2/s');
  t.equal(rl.check('a', 0.5), 'allow', 'a whole one at 0.5 s');
  t.equal(rl.check('a', 100), 'allow', 'refilled after a long pause…');
  t.same([rl.check('a', 100), rl.check('a', 100), rl.check('a', 100)], ['allow', 'allow', 'drop'], '…but never above the burst');
  t.equal(rl.check('a', 99), 'drop', 'a clock going backwards refills nothing');
  t.equal(rl.refused, 5, 'refusals counted');
  t.equal(rl.size, 2);
  t.ok(rl.allow('c', 0), 'allow() is check() === allow');
});

t.test('perSecond 0 turns it off and keeps nothing', async (t) => {
  const off = new RateLimiter<number>({ perSecond: 0, burst: 1, maxClients: 16 });
  t.notOk(off.enabled);
  for (let i = 0; i < 1000; i++) t.equal(off.check(i % 3, 0), 'allow');
  t.equal(off.size, 0);
  t.equal(off.retryAfter(1, 0), 0);
  t.throws(() => new RateLimiter({ perSecond: -1, burst: 1, maxClients: 1 }), RangeError);
  t.throws(() => new RateLimiter({ perSecond: 1, burst: 0, maxClients: 1 }), RangeError);
  t.throws(() => new RateLimiter({ perSecond: 1, burst: 1, maxClients: 1 }), RangeError, 'two generations need room for one client each at least');
  t.throws(() => new RateLimiter({ perSecond: 1, burst: 1, maxClients: 1 }, { notifyEvery: -1 }), RangeError);
});

t.test('notify once per interval (a KoD, a TFTP ERROR)', async (t) => {
  const rl = new RateLimiter<string>({ perSecond: 1, burst: 1, maxClients: 16 }, { notifyIntervalS: 1 });
  t.same([rl.check('a', 0), rl.check('a', 0), rl.check('a', 0.5), rl.check('a', 0.9)], ['allow', 'notify', 'drop', 'drop']);
  t.same([rl.check('a', 1.0), rl.check('a', 1.0)], ['allow', 'notify'], 'a second later: a token, then another notify');
});

t.test('notify every Nth refusal (DNS slip)', async (t) => {
  const slip2 = new RateLimiter<number>({ perSecond: 1, burst: 1, maxClients: 16 }, { notifyEvery: 2 });
  slip2.check(1, 0);
  t.same(Array.from({ length: 6 }, () => slip2.check(1, 0)), ['drop', 'notify', 'drop', 'notify', 'drop', 'notify'], 'slip 2: every other refusal');
  const slip1 = new RateLimiter<number>({ perSecond: 1, burst: 1, maxClients: 16 }, { notifyEvery: 1 });
  slip1.check(1, 0);
  t.same(Array.from({ length: 3 }, () => slip1.check(1, 0)), ['notify', 'notify', 'notify'], 'slip 1: every one');
  const slip0 = new RateLimiter<number>({ perSecond: 1, burst: 1, maxClients: 16 }, { notifyEvery: 0 });
  slip0.check(1, 0);
  t.same(Array.from({ length: 3 }, () => slip0.check(1, 0)), ['drop', 'drop', 'drop'], 'slip 0: never');
});

t.test('retryAfter: seconds until a token', async (t) => {
  const rl = new RateLimiter<string>({ perSecond: 4, burst: 2, maxClients: 16 });
  t.equal(rl.retryAfter('new', 0), 0, 'an unknown client may go now');
  rl.check('a', 0);
  t.equal(rl.retryAfter('a', 0), 0, 'one token left');
  rl.check('a', 0);
  t.equal(rl.retryAfter('a', 0), 0.25, 'empty: 1/perSecond');
  t.equal(rl.retryAfter('a', 0.125), 0.125, 'half refilled');
  t.equal(rl.retryAfter('a', 1), 0);
});

t.test('eviction: clients not heard from for a generation go first; an abuser keeps its empty bucket', async (t) => {
  const rl = new RateLimiter<string>({ perSecond: 1, burst: 2, maxClients: 16 }); // two generations of 8
  for (let i = 0; i < 5; i++) rl.check('abuser', 0);
  for (let i = 0; i < 30; i++) {
    rl.check(`spoofed${i}`, 0);
    t.equal(rl.check('abuser', 0), 'drop', 'the abuser keeps sending, and stays over its limit');
    t.ok(rl.size <= 16, 'never above maxClients');
  }
  t.ok(rl.evicted >= 30 - 16, `the spoofed sources went (${rl.evicted} forgotten)`);
  t.equal(rl.check('spoofed0', 0), 'allow', 'an early spoofed source was forgotten: a full bucket again');

  // Nobody returns: whole generations go at once; a key seen in the previous generation moves up and stays.
  const busy = new RateLimiter<number>({ perSecond: 1, burst: 1, maxClients: 64 });
  for (let i = 0; i < 64; i++) busy.check(i, 0);
  t.equal(busy.size, 64);
  busy.check(40, 0); // in the previous generation (32..63): moves up
  busy.check(1000, 0); // the current generation is full: 0..31 are forgotten
  t.ok(busy.size <= 64);
  t.equal(busy.check(0, 0), 'allow', 'key 0 (oldest, idle) was forgotten: it starts again with a full bucket');
  t.equal(busy.check(40, 0), 'drop', 'key 40 was heard from: still empty');
  t.equal(busy.retryAfter(40, 0), 1, 'and knows when it may go again');
  busy.clear();
  t.equal(busy.size, 0, 'clear() forgets everyone');
});

t.test('NumberRateLimiter: the same verdicts, sizes and evictions as RateLimiter', async (t) => {
  for (const notify of [{}, { notifyEvery: 2 }, { notifyIntervalS: 1 }]) {
    const a = new RateLimiter<number>({ perSecond: 3, burst: 5, maxClients: 64 }, notify);
    const b = new NumberRateLimiter({ perSecond: 3, burst: 5, maxClients: 64 }, notify);
    let x = 1;
    let diff = 0;
    for (let i = 0; i < 100_000; i++) {
      x = (x * 1103515245 + 12345) % 2147483648;
      // 90 keys over a table of 64: generations turn over; some keys near 2^53 (DHCP client-id hashes), some 0.
      const k = x % 90 === 0 ? 0 : x % 90 < 10 ? 2 ** 52 + (x % 90) : x % 90;
      const now = i * 0.001;
      if (a.check(k, now) !== b.check(k, now) || a.size !== b.size || a.retryAfter(k, now) !== b.retryAfter(k, now)) diff++;
    }
    t.equal(diff, 0, `no difference over 100,000 checks (${JSON.stringify(notify)})`);
    t.equal(b.evicted, a.evicted, `evictions agree (${b.evicted})`);
    t.equal(b.refused, a.refused);
  }
  const off = new NumberRateLimiter({ perSecond: 0, burst: 1, maxClients: 16 });
  t.equal(off.check(1, 0), 'allow');
  t.equal(off.size, 0);
  t.throws(() => new NumberRateLimiter({ perSecond: 1, burst: 1, maxClients: 1 }), RangeError);
});

for (const [name, make] of [
  ['RateLimiter', (o: { perSecond: number; burst: number; maxClients: number }) => new RateLimiter<number>(o)],
  ['NumberRateLimiter', (o: { perSecond: number; burst: number; maxClients: number }) => new NumberRateLimiter(o)],
] as const) {
  t.test(`${name}: a million distinct keys: the table stays at maxClients, memory bounded, O(1) per check`, async (t) => {
    const maxClients = 65_536;
    const rl = make({ perSecond: 8, burst: 16, maxClients });
    for (let i = 0; i < maxClients; i++) rl.check(i, 0); // warm: full table
    globalThis.gc?.();
    const heapBefore = process.memoryUsage().heapUsed;
    const rssBefore = process.memoryUsage().rss;
    const t0 = performance.now();
    const N = 1_000_000;
    let biggest = 0;
    for (let i = 0; i < N; i++) {
      rl.check(0x0a000000 + i, i * 1e-6); // a million spoofed sources in one second
      if ((i & 1023) === 0 && rl.size > biggest) biggest = rl.size;
    }
    const ms = performance.now() - t0;
    const heapAfter = process.memoryUsage().heapUsed;
    const rssAfter = process.memoryUsage().rss;
    t.ok(rl.size <= maxClients && biggest <= maxClients, `size ${rl.size}, largest seen ${biggest} <= ${maxClients}`);
    t.ok(rl.evicted >= N - maxClients, `forgotten: ${rl.evicted}`);
    const grewMiB = (heapAfter - heapBefore) / 1048576;
    t.comment(`${name}, 1,000,000 new keys: ${(ms * 1e6 / N).toFixed(0)} ns per check (evictions included); heap ${(heapBefore / 1048576).toFixed(1)} -> ${(heapAfter / 1048576).toFixed(1)} MiB, rss ${(rssBefore / 1048576).toFixed(1)} -> ${(rssAfter / 1048576).toFixed(1)} MiB`);
    // A full table of 65,536 buckets is ~5-8 MiB; the generations forgotten are garbage until the next collection.
    t.ok(grewMiB < 64, `heap growth ${grewMiB.toFixed(1)} MiB < 64 MiB (garbage included)`);
    t.ok(ms / N < 2e-3, `${(ms * 1e6 / N).toFixed(0)} ns per new key (< 2 µs even on a loaded machine)`);
  });
}

t.test('a known client costs well under a microsecond', async (t) => {
  for (const rl of [new RateLimiter<number>({ perSecond: 4, burst: 16, maxClients: 65_536 }), new NumberRateLimiter({ perSecond: 4, burst: 16, maxClients: 65_536 })]) {
    const keys = Array.from({ length: 1000 }, (_, i) => 0x525400000000 + i);
    let allowed = 0;
    const run = (n: number) => {
      for (let i = 0; i < n; i++) if (rl.check(keys[i % 1000]!, i * 1e-4) === 'allow') allowed++;
    };
    run(200_000); // JIT warm-up
    const N = 2_000_000;
    const t0 = performance.now();
    run(N);
    const ns = ((performance.now() - t0) * 1e6) / N;
    t.comment(`${rl.constructor.name}, known key: ${ns.toFixed(0)} ns per check`);
    t.ok(ns < 500, `${ns.toFixed(0)} ns per check < 500 ns`);
    t.ok(allowed > 0);
  }
});
