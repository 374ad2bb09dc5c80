// The NTP service on loopback with a scripted upstream (a UDP socket of this test): unsynchronised until the
// upstream gives a sample (a reply with a forged origin does not count), then stratum upstream + 1 with the
// upstream's offset applied to the time served; unsynchronised again when the upstream says so; a DENY kiss;
// malformed and non-client packets dropped and counted; the local stratum; RATE kisses; /metrics; the API route.
import t, { type Test } from 'tap';
import dgram from 'node:dgram';
import Fastify from 'fastify';
import { authPlugin } from '../../src/api/auth.ts';
import { registerErrorHandling } from '../../src/api/errors.ts';
import { ntpRoutes } from '../../src/api/routes/ntp.ts';
import { createAuthCore } from '../../src/core/auth.ts';
import { EventLog } from '../../src/core/events.ts';
import { auditAs } from '../../src/core/users.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { decodeNtp, encodeNtp, KISS, LEAP, MODE, ntpAdd, refIdFromText, secondsToShort, type NtpPacket, type NtpTimestamp } from '../../src/protocols/ntp/index.ts';
import { HostClock } from '../../src/services/ntp/clock.ts';
import { NtpService } from '../../src/services/ntp/server.ts';
import { onWire } from '../../src/services/ntp/selection.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import { TEST_SCRYPT } from '../helpers/auth-fixture.ts';

const clock = new HostClock();
const logger = createLogger('silent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const basePort = 20_000 + (process.pid % 20_000);

function request(transmit: NtpTimestamp, over: Partial<NtpPacket> = {}): Buffer {
  const z = { seconds: 0, fraction: 0 };
  return encodeNtp({ leap: 3, version: 4, mode: MODE.CLIENT, stratum: 0, poll: 6, precision: -20, rootDelay: 0, rootDispersion: 0, referenceId: 0, referenceTime: z, originTime: z, receiveTime: z, transmitTime: transmit, extensions: [], ...over });
}

/** A client socket: sends, and collects what comes back. */
async function client(t: Test) {
  const sock = dgram.createSocket('udp4');
  const got: Buffer[] = [];
  sock.on('message', (m) => got.push(m));
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  t.teardown(() => sock.close());
  return {
    got,
    send: (port: number, b: Buffer) => sock.send(b, port, '127.0.0.1'),
    async ask(port: number, b: Buffer, waitMs = 1000): Promise<Buffer | undefined> {
      const before = got.length;
      sock.send(b, port, '127.0.0.1');
      for (let waited = 0; waited < waitMs && got.length === before; waited += 5) await sleep(5);
      return got[before];
    },
  };
}

async function until(what: string, fn: () => boolean, ms = 5000): Promise<void> {
  for (let waited = 0; waited < ms; waited += 20) {
    if (fn()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for: ${what}`);
}

t.test('synchronisation to an upstream, and losing it', async (t) => {
  // The scripted upstream: 0.25 s ahead of us, stratum 2, root delay 10 ms, root dispersion 20 ms.
  let behaviour: 'bogus' | 'good' | 'unsync' | 'deny' = 'bogus';
  const upstream = dgram.createSocket('udp4');
  let asked = 0;
  upstream.on('message', (m, rinfo) => {
    asked++;
    const req = decodeNtp(m);
    const now = ntpAdd(clock.now(), 0.25);
    const base: NtpPacket = {
      leap: LEAP.NONE, version: 4, mode: MODE.SERVER, stratum: 2, poll: req.poll, precision: -20,
      rootDelay: secondsToShort(0.01), rootDispersion: secondsToShort(0.02), referenceId: refIdFromText('GPS'),
      referenceTime: ntpAdd(now, -1), originTime: req.transmitTime, receiveTime: now, transmitTime: now, extensions: [],
    };
    if (behaviour === 'bogus') base.originTime = { seconds: (req.transmitTime.seconds ^ 1) >>> 0, fraction: req.transmitTime.fraction };
    if (behaviour === 'unsync') Object.assign(base, { leap: LEAP.UNSYNCHRONISED, stratum: 16 });
    if (behaviour === 'deny') Object.assign(base, { leap: LEAP.UNSYNCHRONISED, stratum: 0, referenceId: refIdFromText(KISS.DENY) });
    upstream.send(encodeNtp(base), rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => upstream.bind(0, '127.0.0.1', r));
  t.teardown(() => upstream.close());
  const upName = `127.0.0.1:${upstream.address().port}`;

  const port = basePort;
  const metrics = createMetrics({ processMetrics: false });
  const svc = new NtpService({
    config: { interfaces: ['lo'], ntp: { enabled: true, port, upstream: [upName], pollSeconds: 0.3, rateLimit: { perSecond: 0, burst: 1, maxClients: 1000 } } },
    logger, metrics, burstIntervalSeconds: 0.05,
  });
  await svc.start();
  t.teardown(() => svc.stop());
  const c = await client(t);

  // 1. Before any usable sample: replies say so.
  await until('the upstream was asked', () => asked >= 2);
  t.equal(svc.status().upstreams[0]!.replies, 0, 'replies that do not echo our cookie are not answers');
  const tx = { seconds: 0x12345678, fraction: 0x9abcdef1 };
  let r = decodeNtp((await c.ask(port, request(tx)))!);
  t.same([r.leap, r.stratum, r.mode], [LEAP.UNSYNCHRONISED, 16, MODE.SERVER], 'unsynchronised: leap 3, stratum 16');
  t.same(r.originTime, tx, 'origin is our transmit timestamp bit for bit');
  t.equal(svc.status().synchronised, false);

  // 2. A good upstream: stratum 3, its address as reference id, its offset applied.
  behaviour = 'good';
  await until('synchronised', () => svc.status().synchronised);
  const st = svc.status();
  t.equal(st.source, 'upstream');
  t.equal(st.stratum, 3, 'upstream stratum 2 + 1');
  t.equal(st.referenceId, '127.0.0.1');
  t.equal(st.upstream, upName);
  // Both clocks are this host's: the true offset is exactly 0.25 s, and an on-wire measurement errs by at most
  // half its round trip (RFC 5905 §8), whatever the load on this machine makes that round trip.
  const upDelay = st.upstreams[0]!.delaySeconds!;
  t.ok(Math.abs(st.offsetSeconds - 0.25) <= upDelay / 2 + 1e-4, `offset ${st.offsetSeconds} (delay ${upDelay})`);
  t.ok(st.rootDelaySeconds >= 0.01 && st.rootDelaySeconds < 0.05, `root delay ${st.rootDelaySeconds} includes the upstream's`);
  t.ok(st.rootDispersionSeconds >= 0.02, `root dispersion ${st.rootDispersionSeconds} includes the upstream's`);
  t.ok(st.upstreams[0]!.reach > 0 && st.upstreams[0]!.reachable && st.upstreams[0]!.selected);
  t.ok(upDelay > 0 && upDelay < 1, `upstream delay ${upDelay}`);

  const t1 = clock.now();
  const raw = (await c.ask(port, request(t1)))!;
  const t4 = clock.now();
  r = decodeNtp(raw);
  t.same([r.leap, r.stratum, r.version, r.mode, r.poll], [LEAP.NONE, 3, 4, MODE.SERVER, 6], 'leap 0, stratum 3, version and poll of the request');
  t.equal(r.referenceId, 0x7f000001, 'reference id = the upstream address');
  t.same(r.originTime, t1, 'origin bit for bit');
  const w = onWire({ t1, t2: r.receiveTime, t3: r.transmitTime, t4 });
  t.ok(Math.abs(w.offset - 0.25) <= w.delay / 2 + upDelay / 2 + 1e-4, `a client sees the upstream's time: offset ${w.offset} (delay ${w.delay})`);
  t.ok(w.delay >= 0, `delay ${w.delay}`);
  t.ok(r.transmitTime.seconds > r.receiveTime.seconds || (r.transmitTime.seconds === r.receiveTime.seconds && r.transmitTime.fraction >= r.receiveTime.fraction), 'transmit is not before receive');
  t.ok(r.rootDispersion > 0 && r.rootDelay > 0);

  const text = await metrics.registry.metrics();
  t.match(text, new RegExp(`metalbox_ntp_upstream_reach\\{upstream="${upName}"\\} [1-9]`), 'reach in /metrics');
  t.match(text, /metalbox_ntp_synchronised 1/);
  t.match(text, /metalbox_ntp_stratum 3/);
  t.match(text, new RegExp(`metalbox_ntp_upstream_offset_seconds\\{upstream="${upName}"\\} 0\\.2[45]`));
  t.match(text, new RegExp(`metalbox_ntp_upstream_delay_seconds\\{upstream="${upName}"\\} `));
  t.match(text, new RegExp(`metalbox_ntp_upstream_stratum\\{upstream="${upName}"\\} 2`));
  t.match(text, /metalbox_ntp_requests_total\{result="answered"\} 2/);

  // 3. Malformed and non-client packets: no answer, counted.
  const before = c.got.length;
  c.send(port, Buffer.alloc(10));
  c.send(port, request(t1, { mode: MODE.PRIVATE }));
  c.send(port, request(t1, { version: 5 }));
  c.send(port, request(t1, { mode: MODE.SERVER }));
  c.send(port, Buffer.concat([request(t1), Buffer.alloc(7)]));
  await sleep(300);
  t.equal(c.got.length, before, 'none of them answered');
  t.same(svc.status().requests, { answered: 2, kissRate: 0, rateDropped: 0, malformed: 4, ignored: 1 }, 'counted');
  t.match(await metrics.registry.metrics(), /metalbox_ntp_requests_total\{result="malformed"\} 4/);
  const withMac = await c.ask(port, Buffer.concat([request(t1), Buffer.alloc(20, 1)]));
  t.equal(decodeNtp(withMac!).mac, undefined, 'a request with a MAC is answered, unauthenticated');

  // 4. The upstream loses its own sync: so do we, at its next poll.
  behaviour = 'unsync';
  await until('unsynchronised again', () => !svc.status().synchronised);
  r = decodeNtp((await c.ask(port, request(t1)))!);
  t.same([r.leap, r.stratum], [LEAP.UNSYNCHRONISED, 16], 'never serves an unsynchronised upstream\'s time as good');
  t.equal(svc.status().upstreams[0]!.lastError, 'unsynchronised');
  const held = svc.status().offsetSeconds;
  t.ok(held > 0.15 && held < 0.35, `the last offset is kept (holdover: ${held}), not dropped to 0`);

  // 5. A DENY kiss: that upstream is dropped.
  behaviour = 'deny';
  await until('the kiss seen', () => svc.status().upstreams[0]!.kiss === 'DENY');
  t.equal(svc.status().upstreams[0]!.pollIntervalSeconds, 0.3 * 16, 'polled only at the longest interval');
});

t.test('local stratum, RATE kisses, the API route', async (t) => {
  const port = basePort + 1;
  const svc = new NtpService({
    config: { interfaces: ['lo'], ntp: { enabled: true, port, upstream: [], localStratum: 5, pollSeconds: 64, rateLimit: { perSecond: 1, burst: 4, maxClients: 100 } } },
    logger, metrics: createMetrics({ processMetrics: false }),
  });
  await svc.start();
  t.teardown(() => svc.stop());
  const c = await client(t);
  const t1 = clock.now();
  const r = decodeNtp((await c.ask(port, request(t1)))!);
  t.same([r.leap, r.stratum, r.referenceId], [LEAP.NONE, 5, 0x7f7f0101], 'the operator\'s local stratum, reference 127.127.1.1');
  const w = onWire({ t1, t2: r.receiveTime, t3: r.transmitTime, t4: clock.now() });
  t.ok(Math.abs(w.offset) <= w.delay / 2 + 1e-4, `the local clock, uncorrected (offset ${w.offset}, delay ${w.delay})`);

  // A flood from one address: the burst is answered, then one RATE kiss, then nothing.
  const before = c.got.length;
  for (let i = 0; i < 40; i++) c.send(port, request({ seconds: 1, fraction: i }));
  await sleep(400);
  const replies = c.got.slice(before).map((b) => decodeNtp(b));
  const kisses = replies.filter((p) => p.stratum === 0);
  t.equal(replies.length - kisses.length, 3, 'what was left of the burst of 4 answered');
  t.equal(kisses.length, 1, 'one RATE kiss');
  t.equal(Buffer.from(encodeNtp(kisses[0]!).subarray(12, 16)).toString('latin1'), 'RATE');
  t.equal(kisses[0]!.leap, LEAP.UNSYNCHRONISED);
  const st = svc.status();
  t.same([st.requests.kissRate, st.requests.rateDropped], [1, 36], 'the rest dropped and counted');
  t.equal(st.source, 'local');

  // GET /api/v1/ntp: viewers and up; never without credentials.
  const store = createMemoryStore();
  const events = new EventLog(store);
  const core = createAuthCore({ store, events }, { hasher: { params: TEST_SCRYPT } });
  const app = Fastify();
  registerErrorHandling(app);
  await app.register(authPlugin(core));
  await app.register(ntpRoutes(svc));
  await app.ready();
  t.teardown(() => app.close());
  await core.users.create({ username: 'watcher', role: 'viewer', password: 'watcher-Pa55word-long-enough' }, auditAs('test'));
  const owner = (await core.users.find('watcher'))!;
  const { token } = await core.tokens.create(owner, { name: 'ntp' }, auditAs('test'));
  const anon = await app.inject({ method: 'GET', url: '/api/v1/ntp' });
  t.equal(anon.statusCode, 401, 'no credentials: 401');
  const res = await app.inject({ method: 'GET', url: '/api/v1/ntp', headers: { authorization: `Bearer ${token}` } });
  t.equal(res.statusCode, 200, 'a viewer may read it');
  const body = res.json() as Record<string, unknown>;
  t.match(body, { synchronised: true, source: 'local', stratum: 5, leap: 0, referenceId: '127.127.1.1', localStratum: 5, upstreams: [], requests: { kissRate: 1, rateDropped: 36 } });
});

t.test('a port already taken fails the start', async (t) => {
  const port = basePort + 2;
  const first = new NtpService({ config: { interfaces: ['lo'], ntp: { enabled: true, port, upstream: [], pollSeconds: 64, rateLimit: { perSecond: 8, burst: 16, maxClients: 100 } } }, logger, metrics: createMetrics({ processMetrics: false }) });
  await first.start();
  t.teardown(() => first.stop());
  const second = new NtpService({ config: { interfaces: ['lo'], ntp: { enabled: true, port, upstream: [], pollSeconds: 64, rateLimit: { perSecond: 8, burst: 16, maxClients: 100 } } }, logger, metrics: createMetrics({ processMetrics: false }) });
  await t.rejects(second.start(), { code: 'SOCKET_OPEN_FAILED' });
});
