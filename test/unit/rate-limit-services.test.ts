// The services' rate limits, in process: the DHCP client key read from a datagram's octets (client identifier,
// else chaddr, never the source address) and what it and the check cost per datagram; the API's 429
// RATE_LIMITED with Retry-After, its separate /boot limit, and what is never limited (loopback, /healthz,
// /metrics, the console). DNS (dig: slips and TCP fallback), TFTP (tftp-hpa) and DHCP over real sockets are in
// test/integration/rate-limits.test.ts; memory under a flood in test/integration/flood-memory.test.ts.
import t from 'tap';
import { buildApp, type AppDeps } from '../../src/api/app.ts';
import { defaultHttpRateLimits } from '../../src/api/rate-limit.ts';
import { defaultConfig } from '../../src/config/load.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { NumberRateLimiter } from '../../src/lib/rate-limit.ts';
import { encodeDhcp, type DhcpPacket } from '../../src/protocols/dhcp/index.ts';
import { dhcpClientKey } from '../../src/services/dhcp/rate-limit.ts';

function discover(mac: number[], clientId?: Buffer, giaddr = '0.0.0.0'): Buffer {
  const chaddr = Buffer.alloc(16);
  chaddr.set(mac);
  const other = new Map<number, Buffer>();
  if (clientId) other.set(61, clientId);
  // What a PXE ROM sends: vendor class, arch, UUID, parameter list beside the type.
  other.set(60, Buffer.from('PXEClient:Arch:00000:UNDI:002001'));
  other.set(93, Buffer.from([0, 0]));
  other.set(97, Buffer.alloc(17, 1));
  other.set(55, Buffer.from([1, 3, 6, 12, 15, 28, 42, 43, 60, 66, 67, 128, 129]));
  const p: DhcpPacket = {
    op: 1, htype: 1, hlen: 6, hops: giaddr === '0.0.0.0' ? 0 : 1, xid: 7, secs: 0, flags: 0, ciaddr: '0.0.0.0', yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr,
    chaddr, sname: '', file: '', options: { messageType: 1, other },
  } as DhcpPacket;
  return encodeDhcp(p);
}

t.test('DHCP: keyed by the client identifier, else the MAC; never the source address', async (t) => {
  const mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
  const plain = discover(mac);
  t.equal(dhcpClientKey(plain, 0, plain.length), 0x525400123456, 'no option 61: the MAC itself is the key');
  const relayed = discover(mac, undefined, '10.1.2.3');
  t.equal(dhcpClientKey(relayed, 0, relayed.length), 0x525400123456, 'relayed: the same client, the same key (giaddr plays no part)');
  const id = Buffer.from([1, ...mac]);
  const withId = discover(mac, id);
  const k = dhcpClientKey(withId, 0, withId.length);
  t.ok(k >= 2 ** 48 && k < 2 ** 53 && Number.isSafeInteger(k), 'option 61: a hash above every MAC key');
  t.equal(dhcpClientKey(discover([0x52, 0x54, 0, 0, 0, 9], id), 0, withId.length), k, 'the same client id from another chaddr: the same client');
  t.not(dhcpClientKey(discover(mac, Buffer.from([1, 0x52, 0x54, 0, 0x12, 0x34, 0x57])), 0, withId.length), k, 'another client id: another client');
  // At an offset inside a batch buffer, as the socket hands datagrams over.
  const batch = Buffer.concat([Buffer.alloc(100, 0xff), withId]);
  t.equal(dhcpClientKey(batch, 100, withId.length), k, 'read in place from a batch');
  t.equal(dhcpClientKey(Buffer.alloc(30), 0, 30), -1, 'too short to be DHCP: no key (the decoder drops it)');
  // A long chaddr (hlen 16) with no option 61 hashes too; a truncated option 61 falls back to the chaddr.
  const long = Buffer.from(plain);
  long[2] = 16;
  t.ok(dhcpClientKey(long, 0, long.length) >= 2 ** 48, 'hlen 16: hashed');
  const cut = Buffer.from(withId.subarray(0, 243));
  cut[240] = 61; cut[241] = 200; cut[242] = 1;
  t.equal(dhcpClientKey(cut, 0, cut.length), 0x525400123456, 'option 61 running past the end: the MAC');
});

t.test('DHCP: key + check cost well under a microsecond per datagram; a relay storm is not throttled', async (t) => {
  const cfg = defaultConfig('/tmp/unused').dhcp.rateLimit;
  t.same(cfg, { perSecond: 4, burst: 16, maxClients: 65_536 }, 'the defaults');
  const rl = new NumberRateLimiter(cfg);
  // 500 machines through one relay, each a PXE DORA then iPXE's DORA, plus a retransmission each: 5 messages.
  const packets = Array.from({ length: 500 }, (_, i) => discover([0x52, 0x54, 0, 0, i >> 8, i & 255], undefined, '10.1.2.3'));
  let refused = 0;
  for (let round = 0; round < 5; round++) for (const p of packets) if (rl.check(dhcpClientKey(p, 0, p.length), round * 0.01) !== 'allow') refused++;
  t.equal(refused, 0, 'a 500-machine storm through one relay: nothing refused');
  // One client in a loop is stopped after its burst.
  let allowed = 0;
  for (let i = 0; i < 100; i++) if (rl.check(dhcpClientKey(packets[0]!, 0, packets[0]!.length), 1) === 'allow') allowed++;
  t.ok(allowed <= 16, `one client flooding: ${allowed} of 100 allowed`);

  // The per-datagram cost, new clients (the worst case: a spoofed-chaddr flood) and known ones.
  const many = Array.from({ length: 4096 }, (_, i) => discover([0x52, 0x55, 0, i >> 16, (i >> 8) & 255, i & 255], i % 2 ? Buffer.from([1, 0x52, 0x55, 0, 0, i >> 8, i & 255]) : undefined));
  const fresh = new NumberRateLimiter(cfg);
  const per = (n: number, keyBase: number): number => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const p = many[i & 4095]!;
      fresh.check(dhcpClientKey(p, 0, p.length) + keyBase * (i >> 12), i * 1e-6);
    }
    return ((performance.now() - t0) * 1e6) / n;
  };
  per(100_000, 0); // warm-up
  const known = per(1_000_000, 0);
  const newKeys = per(1_000_000, 1);
  t.comment(`dhcpClientKey + check: ${known.toFixed(0)} ns per datagram (known clients), ${newKeys.toFixed(0)} ns (a new client each)`);
  t.ok(known < 1000, `known clients: ${known.toFixed(0)} ns < 1 µs (~250 ns measured on an idle core; the bound allows a loaded machine)`);
  t.ok(newKeys < 2000, `new clients: ${newKeys.toFixed(0)} ns < 2 µs`);
  t.ok(fresh.size <= cfg.maxClients);
});

function appDeps(over: Partial<AppDeps> = {}): AppDeps {
  return {
    logger: createLogger('silent'),
    metrics: createMetrics({ processMetrics: false }),
    version: '1',
    instanceId: () => 'x',
    readiness: () => ({ phase: 'running', services: {} }),
    console: false,
    ...over,
  };
}

t.test('API: 429 RATE_LIMITED with Retry-After per client address; /boot has its own limit', async (t) => {
  t.same(defaultHttpRateLimits(), { rateLimit: { perSecond: 50, burst: 200, maxClients: 10_000 }, bootRateLimit: { perSecond: 100, burst: 400, maxClients: 65_536 } }, 'the schema\'s defaults');
  const metrics = createMetrics({ processMetrics: false });
  const app = await buildApp(appDeps({ metrics, rateLimits: { rateLimit: { perSecond: 1, burst: 3, maxClients: 16 }, bootRateLimit: { perSecond: 1, burst: 5, maxClients: 16 } } }));
  t.teardown(() => app.close());
  const get = (url: string, remoteAddress = '10.0.0.5') => app.inject({ method: 'GET', url, remoteAddress });

  const api = [];
  for (let i = 0; i < 5; i++) api.push(await get('/api/v1/nothing'));
  t.same(api.map((r) => r.statusCode), [404, 404, 404, 429, 429], 'a burst of 3, then 429 (before routing: a 404 costs a token too)');
  const limited = api[3]!;
  t.same(limited.json(), { statusCode: 429, code: 'RATE_LIMITED', error: 'Too Many Requests', message: 'too many requests from this address; try again in 1 s' });
  t.equal(limited.headers['retry-after'], '1', 'Retry-After: seconds until a token');
  t.equal((await get('/api/v1/nothing', '10.0.0.6')).statusCode, 404, 'another address has its own bucket');
  t.equal((await get('/api/v1/nothing', '127.0.0.1')).statusCode, 404, 'loopback is not limited…');
  for (let i = 0; i < 10; i++) await get('/api/v1/nothing', '127.0.0.1');
  t.equal((await get('/api/v1/nothing', '::1')).statusCode, 404, '…however much it asks');

  const boot = [];
  for (let i = 0; i < 6; i++) boot.push((await get('/boot/nothing')).statusCode);
  t.same(boot, [404, 404, 404, 404, 404, 429], '/boot: its own bucket (burst 5), untouched by the API one');
  for (const url of ['/healthz', '/readyz', '/metrics', '/console/app.js', '/']) {
    const codes = new Set<number>();
    for (let i = 0; i < 10; i++) codes.add((await get(url)).statusCode);
    t.notOk(codes.has(429), `${url} is never limited`);
  }
  const text = await metrics.registry.metrics();
  t.match(text, /metalbox_http_rate_limited_total\{scope="api"\} 2\b/, 'refusals counted by scope');
  t.match(text, /metalbox_http_rate_limited_total\{scope="boot"\} 1\b/);
  t.match(text, /metalbox_http_rate_limited_clients\{scope="api"\} 2\b/, 'clients tracked (the two non-loopback addresses)');
});

t.test('API: limits off (perSecond 0), and the config as main passes it', async (t) => {
  const off = await buildApp(appDeps({ rateLimits: { rateLimit: { perSecond: 0, burst: 1, maxClients: 16 }, bootRateLimit: { perSecond: 0, burst: 1, maxClients: 16 } } }));
  t.teardown(() => off.close());
  const codes = new Set<number>();
  for (let i = 0; i < 50; i++) codes.add((await off.inject({ method: 'GET', url: '/api/v1/nothing', remoteAddress: '10.0.0.5' })).statusCode);
  t.same([...codes], [404], 'perSecond 0: never 429');
});
