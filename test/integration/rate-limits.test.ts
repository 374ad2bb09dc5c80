// The per-client rate limits of a running `metalbox serve`, with real clients in network namespaces:
// - DNS: a burst from one address gets its bucket's worth of answers, then every other query (slip 2) an empty
//   truncated answer and the rest nothing; dig, over its limit, is told TC and gets its answer over TCP; a client
//   holding dns.maxTcpConnectionsPerClient connections has the next one closed at once.
// - TFTP: tftp-hpa's client gets its burst, then "Error code 0: rate limited".
// - DHCP: DISCOVERs from one client beyond its burst are dropped and counted; as many from as many clients through
//   the same source address are not (the key is the client, not the address: a relay carries a rack).
// - API: curl gets 401 (no credentials) for its burst, then 429 RATE_LIMITED with Retry-After; /boot has its own
//   bucket; /healthz is not limited.
//
//   ns srv: p0 10.77.0.1/24   metalbox serve (src/main.ts), interfaces [p0]
//   ns cl:  q0 10.77.0.50/24  the clients
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { canBuildLab } from '../helpers/netns.ts';
import { ROOT } from '../helpers/process.ts';
import { runIn, serverLab } from '../helpers/serve-ns.ts';

const PEER = join(ROOT, 'test/helpers/flood-peer.py');

const lab = canBuildLab();
if (!lab.ok) {
  t.fail(`cannot build the lab: ${lab.why}`);
} else {
  t.test('rate limits with real clients', { timeout: 240_000 }, async (t) => {
    const { dir, cl, tftpRoot, config, serve } = serverLab(t, 'mbrl');

    // Slow refill (one token every 5 s at most) so what the test sees does not depend on how fast it runs.
    const served = await serve(config('10.77.0.100-10.77.0.199', `
dhcp: { rateLimit: { perSecond: 0.2, burst: 4 } }
tftp: { root: ${tftpRoot}, rateLimit: { perSecond: 0.2, burst: 3 } }
dns: { rateLimit: { perSecond: 0.2, burst: 10, slip: 2 }, maxTcpConnectionsPerClient: 2 }
ntp: { enabled: false }
api: { rateLimit: { perSecond: 0.2, burst: 5 }, bootRateLimit: { perSecond: 0.2, burst: 3 } }
`));
    const metric = async (name: string) => (await served.metrics()).get(name) ?? 0;

    // DNS: 40 at once from one address.
    const burst = JSON.parse(await runIn(cl, 'python3', [PEER, 'dns-burst', '10.77.0.1', '40', 'rack.internal'])) as { answered: number; slipped: number; none: number };
    t.comment(`dns burst of 40: ${JSON.stringify(burst)}`);
    t.ok(burst.answered >= 10 && burst.answered <= 11, `its burst (10) answered: ${burst.answered}`);
    t.ok(Math.abs(burst.slipped - (40 - burst.answered) / 2) <= 1, `every other refused query slipped (TC, empty): ${burst.slipped}`);
    t.ok(burst.none >= 14, `the rest dropped: ${burst.none}`);
    // dig over its limit: a slip (TC) makes it retry over TCP, which is not rate limited; a drop makes it retry UDP.
    const dig = await runIn(cl, 'dig', ['@10.77.0.1', 'rack.internal', 'SOA', '+tries=4', '+timeout=1']);
    t.match(dig, /Truncated, retrying in TCP mode/, 'dig saw TC and fell back to TCP');
    t.match(dig, /status: NOERROR/, 'and got its answer');
    t.match(dig, /rack\.internal\.\s+\d+\s+IN\s+SOA/, 'the SOA record');
    t.match(dig, /\(TCP\)/, 'over TCP');
    const conns = JSON.parse(await runIn(cl, 'python3', [PEER, 'tcp-conns', '10.77.0.1', '53', '3'])) as { closed: boolean[] };
    t.same(conns.closed, [false, false, true], 'TCP: two connections held, the third closed at once');
    t.ok(await metric('metalbox_dns_dropped_total{reason="rate-limited"}') >= burst.none + burst.slipped, 'rate-limited queries counted');
    t.ok(await metric('metalbox_dns_rate_limit_slips_total') >= burst.slipped, 'slips counted');
    t.equal(await metric('metalbox_dns_dropped_total{reason="tcp-client-limit"}'), 1, 'the refused connection counted');
    t.equal(await metric('metalbox_dns_rate_limited_clients'), 1, 'one client tracked');

    // TFTP: tftp-hpa, four gets in a row.
    const gets: string[] = [];
    for (let i = 0; i < 4; i++) gets.push(await runIn(cl, 'tftp', ['-m', 'binary', '10.77.0.1', '-c', 'get', 'hello.txt', join(dir, `got${i}`)]));
    t.same(gets.slice(0, 3), ['', '', ''], 'its burst (3) fetched');
    t.match(gets[3], /Error code 0: rate limited/, 'then tftp-hpa reports the ERROR');
    t.equal(await metric('metalbox_tftp_refused_total{reason="rate-limited"}'), 1, 'counted');
    t.match(served.log(), /"msg":"tftp client over its rate limit: requests refused"/, 'logged');

    // DHCP: 20 DISCOVERs from one client, then 20 from 20 clients, all from the one source address.
    await runIn(cl, 'python3', [PEER, 'dhcp-burst', '10.77.0.1', '20', 'same']);
    await new Promise((r) => setTimeout(r, 500));
    const sameDropped = await metric('metalbox_dhcp_dropped_total{reason="rate-limited"}');
    t.ok(sameDropped >= 15 && sameDropped <= 16, `one client: its burst (4) through, ${sameDropped} of 20 dropped`);
    await runIn(cl, 'python3', [PEER, 'dhcp-burst', '10.77.0.1', '20', 'distinct']);
    await new Promise((r) => setTimeout(r, 500));
    t.equal(await metric('metalbox_dhcp_dropped_total{reason="rate-limited"}'), sameDropped, '20 clients behind one address: none dropped');
    t.equal(await metric('metalbox_dhcp_rate_limited_clients'), 21, '21 clients tracked');
    t.match(served.log(), /"mac":"52:54:00:99:00:01".*"msg":"DHCP client over its rate limit: its messages are dropped"/, 'the client logged by MAC');
    // A real client under the same tight limit: busybox udhcpc's DISCOVER and REQUEST fit its burst, and it is leased.
    const udhcpc = await runIn(cl, 'busybox', ['udhcpc', '-i', 'q0', '-n', '-q', '-f', '-t', '3', '-T', '1', '-s', '/bin/true']);
    t.match(udhcpc, /lease of 10\.77\.0\.1\d\d obtained/, `udhcpc leased under the limit: ${udhcpc.trim().split('\n').pop()}`);

    // API: curl (the API over HTTPS; plain HTTP serves /boot, /healthz, /metrics and redirects the rest unlimited).
    const curl = async (path: string) => {
      const url = path.startsWith('/api/') ? `https://10.77.0.1:5443${path}` : `http://10.77.0.1:5240${path}`;
      const out = await runIn(cl, 'curl', ['-s', '-k', '-D', '-', '-o', join(dir, 'body'), url]);
      return { status: Number(/^HTTP\/[\d.]+ (\d+)/.exec(out)?.[1]), retryAfter: /^retry-after: (\d+)/im.exec(out)?.[1] };
    };
    const api = [];
    for (let i = 0; i < 7; i++) api.push(await curl('/api/v1/version'));
    t.same(api.map((r) => r.status), [401, 401, 401, 401, 401, 429, 429], 'API: its burst (5) reaches authentication, then 429');
    t.ok(Number(api[5]!.retryAfter) >= 1, `Retry-After: ${api[5]!.retryAfter}`);
    t.match(JSON.parse(readFileSync(join(dir, 'body'), 'utf8')), { statusCode: 429, code: 'RATE_LIMITED' }, 'the error body');
    t.equal((await curl('/boot/ipxe')).status, 200, '/boot has its own bucket');
    for (let i = 0; i < 5; i++) t.equal((await curl('/healthz')).status, 200, '/healthz is never limited');
    t.equal(await metric('metalbox_http_rate_limited_total{scope="api"}'), 2, 'counted');
    t.notMatch(served.log(), /"level":(50|60)|"level":"(error|fatal)"/, 'no errors logged');
  });
}
