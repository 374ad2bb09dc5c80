// The NTP clock math and policy, pure: on-wire offset and delay (RFC 5905 §8), reply checks, the clock
// filter, selection, what is served (upstream + 1, local stratum, unsynchronised), replies and kisses, and the
// per-address rate limiter with bounded memory.
import t from 'tap';
import { decodeNtp, encodeNtp, KISS, LEAP, MODE, ntpAdd, ntpDiff, ntpFromUnix, refIdFromText, secondsToShort, shortToSeconds, type NtpPacket, type NtpTimestamp } from '../../src/protocols/ntp/index.ts';
import { answer, kiss, LOCAL_REFID, replyHeader, servedTime } from '../../src/services/ntp/policy.ts';
import { KOD_INTERVAL_S, RateLimiter } from '../../src/services/ntp/rate-limit.ts';
import { addSample, bestSample, checkReply, FILTER_STAGES, MAXDIST, onWire, PHI, rootDistance, selectUpstream, type Sample } from '../../src/services/ntp/selection.ts';
import { measurePrecision, HostClock } from '../../src/services/ntp/clock.ts';
import { parseUpstream } from '../../src/services/ntp/upstream.ts';

const T0 = ntpFromUnix(1_800_000_000, 0);
const at = (s: number): NtpTimestamp => ntpAdd(T0, s);

function reply(over: Partial<NtpPacket> = {}): NtpPacket {
  return {
    leap: LEAP.NONE, version: 4, mode: MODE.SERVER, stratum: 2, poll: 6, precision: -20,
    rootDelay: secondsToShort(0.01), rootDispersion: secondsToShort(0.02), referenceId: 0xc0000201,
    referenceTime: at(-10), originTime: { seconds: 1, fraction: 2 }, receiveTime: at(0.5), transmitTime: at(0.5005), extensions: [], ...over,
  };
}

function sample(over: Partial<Sample> = {}): Sample {
  return { offset: 0, delay: 0.01, dispersion: 1e-5, at: 100, hostTime: T0, leap: 0, stratum: 2, rootDelay: 0.01, rootDispersion: 0.01, referenceId: 1, precision: -20, ...over };
}

t.test('on-wire offset and delay (RFC 5905 §8)', async (t) => {
  // The server is 0.5 s ahead; 40 ms out, 60 ms back, 1 ms in the server.
  const r = onWire({ t1: at(0), t2: at(0.54), t3: at(0.541), t4: at(0.101) });
  t.ok(Math.abs(r.offset - 0.49) < 1e-9, `offset ${r.offset}: asymmetric paths err by half the difference (10 ms)`);
  t.ok(Math.abs(r.delay - 0.1) < 1e-9, `delay ${r.delay}: the server's millisecond taken out`);
  const sym = onWire({ t1: at(0), t2: at(-2.95), t3: at(-2.949), t4: at(0.101) });
  t.ok(Math.abs(sym.offset + 3) < 1e-9, 'a server 3 s behind');
  // Across the 2036 wrap: T1 before, the rest after.
  const wrap = { seconds: 0xffffffff, fraction: 0x80000000 };
  const w = onWire({ t1: wrap, t2: ntpAdd(wrap, 1.25), t3: ntpAdd(wrap, 1.26), t4: ntpAdd(wrap, 0.02) });
  t.ok(Math.abs(w.offset - 1.245) < 1e-9 && Math.abs(w.delay - 0.01) < 1e-9, 'right across the wrap');
});

t.test('checkReply: only a matching, synchronised, sane reply gives a sample', async (t) => {
  const cookie = { seconds: 1, fraction: 2 };
  const ok = checkReply(reply(), cookie, at(0), at(0.02), -20, 100);
  t.ok(ok.ok, 'a good reply');
  if (ok.ok) {
    t.ok(Math.abs(ok.sample.offset - 0.49025) < 1e-6, `offset ${ok.sample.offset}`);
    t.ok(Math.abs(ok.sample.delay - 0.0195) < 1e-6, `delay ${ok.sample.delay}`);
    t.ok(Math.abs(ok.sample.rootDelay - 0.01) < 1e-4 && Math.abs(ok.sample.rootDispersion - 0.02) < 1e-4);
    t.ok(ok.sample.dispersion > 2 * 2 ** -20 && ok.sample.dispersion < 1e-5, 'ε = precisions + PHI x round trip');
    t.same(ok.sample.hostTime, at(0.02), 'host time is T4');
  }
  const reasons: [string, NtpPacket, NtpTimestamp, string][] = [
    ['origin not our cookie', reply({ originTime: { seconds: 1, fraction: 3 } }), cookie, 'bogus-origin'],
    ['mode 5', reply({ mode: MODE.BROADCAST }), cookie, 'not-server'],
    ['leap 3', reply({ leap: LEAP.UNSYNCHRONISED }), cookie, 'unsynchronised'],
    ['stratum 16', reply({ stratum: 16 }), cookie, 'bad-stratum'],
    ['zero transmit', reply({ transmitTime: { seconds: 0, fraction: 0 } }), cookie, 'zero-timestamp'],
    ['reference after transmit', reply({ referenceTime: at(5) }), cookie, 'future-reference'],
    ['negative delay', reply({ receiveTime: at(0.5), transmitTime: at(0.6) }), cookie, 'bad-delay'],
    ['root distance beyond MAXDISP', reply({ rootDispersion: secondsToShort(17) }), cookie, 'bad-distance'],
  ];
  for (const [name, r, c, reason] of reasons) {
    const v = checkReply(r, c, at(0), at(0.02), -20, 100);
    t.same(v, { ok: false, reason }, name);
  }
  t.same(checkReply(reply({ stratum: 0, referenceId: refIdFromText('RATE'), leap: 3 }), cookie, at(0), at(0.02), -20, 100), { ok: false, kiss: 'RATE' }, 'a RATE kiss');
  t.same(checkReply(reply({ stratum: 0, referenceId: 0, leap: 3 }), cookie, at(0), at(0.02), -20, 100), { ok: false, kiss: '????' }, 'stratum 0 without a code (chrony unsynchronised)');
  t.same(checkReply(reply({ stratum: 0, referenceId: refIdFromText('DENY'), originTime: { seconds: 9, fraction: 9 } }), cookie, at(0), at(0.02), -20, 100), { ok: false, reason: 'bogus-origin' }, 'a kiss that does not echo our cookie is ignored (spoofed)');
});

t.test('clock filter: lowest delay, age charged at PHI, eight stages', async (t) => {
  let samples: Sample[] = [];
  for (let i = 0; i < 12; i++) samples = addSample(samples, sample({ at: i, delay: 0.01 + (i % 3) * 0.001, offset: i }));
  t.equal(samples.length, FILTER_STAGES, 'only the last eight are kept');
  t.equal(samples[0]!.offset, 4, 'oldest dropped first');
  const best = bestSample(samples, 12);
  t.equal(best?.delay, 0.01, 'lowest delay');
  t.equal(best?.offset, 9, 'of the lowest, the newest');
  // An old sample with a slightly lower delay loses to a fresh one once its age costs more than the difference.
  const old = sample({ at: 0, delay: 0.0100, offset: 1 });
  const fresh = sample({ at: 1000, delay: 0.0102, offset: 2 });
  t.equal(bestSample([old, fresh], 1000)?.offset, 2, `1000 s of age (${PHI * 1000} s) outweighs 0.2 ms of delay`);
  t.equal(bestSample([old, fresh], 1)?.offset, 1, 'when both are fresh, lower delay wins');
  t.equal(bestSample([], 0), undefined);
});

t.test('selection: reachable, usable, lowest root distance', async (t) => {
  const near = sample({ delay: 0.001, rootDelay: 0.002, rootDispersion: 0.001, stratum: 3 });
  const far = sample({ delay: 0.05, rootDelay: 0.05, rootDispersion: 0.01, stratum: 1 });
  t.equal(selectUpstream([{ id: 'far', reach: 255, sample: far }, { id: 'near', reach: 255, sample: near }], 100)?.id, 'near');
  t.equal(selectUpstream([{ id: 'far', reach: 255, sample: far }, { id: 'near', reach: 0, sample: near }], 100)?.id, 'far', 'unreachable skipped');
  t.equal(selectUpstream([{ id: 'x', reach: 1, sample: sample({ stratum: 16 }) }], 100), undefined, 'stratum 16 never');
  t.equal(selectUpstream([{ id: 'x', reach: 1, sample: sample({ rootDispersion: MAXDIST }) }], 100), undefined, 'beyond MAXDIST never');
  t.equal(selectUpstream([{ id: 'x', reach: 1, sample: undefined }], 100), undefined, 'no sample, no selection');
  const old = sample({ at: 0, rootDispersion: 0.5 });
  t.ok(rootDistance(old, 1e5) > rootDistance(old, 0) + 1.49, 'dispersion grows at PHI');
  t.equal(selectUpstream([{ id: 'x', reach: 1, sample: old }], 1e5), undefined, 'a sample that aged past MAXDIST is no longer selected');
});

t.test('what is served: upstream + 1, the local stratum, or unsynchronised', async (t) => {
  const s = sample({ stratum: 3, offset: 0.25, delay: 0.004, rootDelay: 0.01, rootDispersion: 0.02, at: 100, leap: LEAP.ADD_SECOND });
  const up = servedTime({ selected: { id: 'a', sample: s, address: 0xc0000201, sampleHostTime: T0 }, holdoverOffset: 0, precision: -20, now: 110, hostNow: at(10) });
  t.equal(up.source, 'upstream');
  t.equal(up.stratum, 4, 'stratum upstream + 1');
  t.equal(up.leap, LEAP.ADD_SECOND, 'a pending leap second is passed on');
  t.equal(up.referenceId, 0xc0000201, 'reference id is the upstream address');
  t.ok(Math.abs(up.rootDelay - 0.014) < 1e-12, 'root delay = its root delay + our delay to it');
  t.ok(up.rootDispersion > 0.02 + 1e-5 + PHI * 10 - 1e-9, 'root dispersion accumulates and grows with age');
  t.equal(up.offset, 0.25);
  t.ok(Math.abs(ntpDiff(up.referenceTime, T0) - 0.25) < 1e-9, 'reference time is when the sample was taken, in served time');
  t.equal(servedTime({ selected: { id: 'a', sample: { ...s, stratum: 15 }, address: 1, sampleHostTime: T0 }, holdoverOffset: 0, precision: -20, now: 110, hostNow: at(10) }).source, 'none', 'an upstream at 15 would make us 16: unsynchronised');

  const local = servedTime({ localStratum: 7, holdoverOffset: 0.25, precision: -20, now: 0, hostNow: at(10) });
  t.same([local.source, local.stratum, local.leap, local.referenceId, local.offset], ['local', 7, 0, LOCAL_REFID, 0.25], 'local stratum: 127.127.1.1, holdover offset kept');
  t.equal(servedTime({ localStratum: 1, holdoverOffset: 0, precision: -20, now: 0, hostNow: at(10) }).referenceId, refIdFromText('LOCL'), 'at stratum 1 the reference id is LOCL');

  const none = servedTime({ holdoverOffset: 0, precision: -20, now: 0, hostNow: at(10) });
  t.same([none.source, none.leap, none.stratum], ['none', LEAP.UNSYNCHRONISED, 16], 'never lies: leap 3, stratum 16');
  t.equal(none.rootDispersion, 16, 'with the largest dispersion');
});

t.test('answer and kiss', async (t) => {
  const request = decodeNtp(Buffer.from('e30006e8000000000000000000000000000000000000000000000000000000000000000000000000eeae66d3d48b1000', 'hex'));
  const h = replyHeader(servedTime({ localStratum: 5, holdoverOffset: 0, precision: -22, now: 0, hostNow: at(0) }));
  const r = answer(request, h, at(1))!;
  t.equal(r.mode, MODE.SERVER);
  t.equal(r.version, 4, 'the request\'s version');
  t.equal(r.poll, request.poll, 'the request\'s poll');
  t.same(r.originTime, request.transmitTime, 'origin = the request\'s transmit, bit for bit');
  t.same(r.receiveTime, at(1));
  t.equal(r.stratum, 5);
  t.equal(r.precision, -22);
  const v3 = answer({ ...request, version: 3 }, h, at(1))!;
  t.equal(v3.version, 3, 'an NTPv3 client gets an NTPv3 reply');
  for (const mode of [MODE.SYMMETRIC_ACTIVE, MODE.SYMMETRIC_PASSIVE, MODE.SERVER, MODE.BROADCAST]) t.equal(answer({ ...request, mode }, h, at(1)), undefined, `mode ${mode} gets nothing`);
  const k = kiss(request, KISS.RATE);
  t.same([k.stratum, k.leap, k.mode], [0, 3, MODE.SERVER], 'RFC 5905 §7.4 kiss');
  t.equal(encodeNtp(k).subarray(12, 16).toString('latin1'), 'RATE');
  t.same(k.originTime, request.transmitTime, 'the client can match it');
  t.same([k.receiveTime, k.transmitTime], [{ seconds: 0, fraction: 0 }, { seconds: 0, fraction: 0 }], 'and it carries no time');
  t.equal(shortToSeconds(h.rootDispersion) > 0, true);
});

t.test('rate limiter: burst, refill, one kiss a second, bounded memory', async (t) => {
  const rl = new RateLimiter({ perSecond: 2, burst: 3, maxClients: 100 });
  const got = Array.from({ length: 6 }, () => rl.take('10.0.0.1', 0));
  t.same(got, ['answer', 'answer', 'answer', 'kod', 'drop', 'drop'], 'burst of 3, then one RATE kiss, then drops');
  t.equal(rl.take('10.0.0.2', 0), 'answer', 'another address has its own bucket');
  t.equal(rl.take('10.0.0.1', 0.4), 'drop', '0.8 tokens refilled: not yet');
  t.equal(rl.take('10.0.0.1', 0.5), 'answer', 'one token after 0.5 s at 2/s');
  t.equal(rl.take('10.0.0.1', 0.5), 'drop', 'and again empty (a kiss went out less than a second ago)');
  t.equal(rl.take('10.0.0.1', 0.5 + KOD_INTERVAL_S), 'answer', 'refilled');
  t.same(Array.from({ length: 3 }, () => rl.take('10.0.0.1', 1.5)), ['answer', 'kod', 'drop'], 'over again a second after the last kiss: another kiss');
  t.equal(rl.take('10.0.0.1', 2.0), 'answer', 'a token refilled in 0.5 s');
  t.equal(rl.take('10.0.0.1', 2.0), 'drop', 'no kiss within a second of the last');

  const off = new RateLimiter({ perSecond: 0, burst: 1, maxClients: 16 });
  t.ok(Array.from({ length: 1000 }, () => off.take('x', 0)).every((v) => v === 'answer'), 'perSecond 0: no limit');
  t.equal(off.size, 0, 'and no memory');

  const small = new RateLimiter({ perSecond: 1, burst: 2, maxClients: 64 });
  for (let i = 0; i < 10_000; i++) small.take(`10.1.${i >> 8}.${i & 255}`, i * 1e-4);
  t.ok(small.size <= 64, `a spoofed-source flood never grows the table past maxClients (${small.size})`);
  t.ok(small.evicted >= 10_000 - 64, 'the rest were forgotten');
  // An address that keeps going over its limit while idle ones come and go keeps its (empty) bucket.
  const keep = new RateLimiter({ perSecond: 1, burst: 1, maxClients: 16 });
  keep.take('abuser', 0);
  keep.take('abuser', 0);
  for (let i = 0; i < 15; i++) keep.take(`idle${i}`, 0);
  keep.take('new', 10); // full: the idle ones have refilled by t=10 and go first
  t.equal(keep.take('abuser', 10), 'answer', 'the abuser refilled too by then (nothing to keep)');
  t.throws(() => new RateLimiter({ perSecond: -1, burst: 1, maxClients: 1 }), RangeError);
});

t.test('the host clock: sub-microsecond reads that track Date.now()', async (t) => {
  const c = new HostClock();
  const a = c.now();
  const b = c.now();
  t.ok(ntpDiff(b, a) >= 0 && ntpDiff(b, a) < 0.001, 'monotonic between reads');
  const ahead = c.check();
  t.ok(ahead > -0.5 && ahead < 1.5, `within Date.now()'s millisecond (${ahead} ms ahead)`);
  t.equal(c.steps, 0, 'no step seen');
  t.ok(c.precision <= -10 && c.precision >= -32, `precision ${c.precision}`);
  t.equal(measurePrecision(() => ({ seconds: 0, fraction: 0 })), -20, 'a clock that never moves gets a default');
  let tick = 0;
  t.equal(measurePrecision(() => ({ seconds: 0, fraction: (tick += 4096) })), -20, 'ticks of 2^12 fraction units: 2^-20 s');
});

t.test('upstream names', async (t) => {
  t.same(parseUpstream('192.0.2.1'), { host: '192.0.2.1', port: 123 });
  t.same(parseUpstream('ntp.example.org:10123'), { host: 'ntp.example.org', port: 10123 });
  t.throws(() => parseUpstream('x:0'), RangeError);
});
