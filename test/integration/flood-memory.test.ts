// Memory under a flood: each network service of a running `metalbox serve` is flooded for a few seconds from many
// distinct sources (spoofed source addresses over a raw socket for DNS, NTP and TFTP; distinct client hardware
// addresses and client identifiers for DHCP; real addresses on the client's interface for HTTP), with one abusive
// source in the mix. Shown, and printed: the server's resident memory before and after each flood, the rate
// limiters' entries (never above maxClients, here 4,096 for the UDP services and 16 for HTTP, so a few seconds fill
// them), and the drops counted.
//
//   ns srv: p0 10.77.0.1/24   metalbox serve, interfaces [p0]; 10.128.0.0/9 and 10.77.1.0/24 routed back via 10.77.0.50
//   ns cl:  q0 10.77.0.50/24 + 10.77.1.1-250/32: the flooders (test/helpers/flood-peer.py)
import t from 'tap';
import { join } from 'node:path';
import { canBuildLab, sh } from '../helpers/netns.ts';
import { ROOT } from '../helpers/process.ts';
import { runIn, serverLab } from '../helpers/serve-ns.ts';

const PEER = join(ROOT, 'test/helpers/flood-peer.py');
const SECONDS = 4;
const MAX_CLIENTS = 4096;
/**
 * The server runs with V8's old generation capped at this (--max-old-space-size): what a flood leaves behind
 * must be collectable, or the server dies of it. RSS alone proves little: V8 lets garbage pile up while there is
 * room (a TFTP flood leaves up to ~90 MiB of it, gone at the next major GC), and when it collects varies by run.
 */
const HEAP_CAP_MIB = 96;
/** And resident memory grows by less than this over two rounds of all five floods. */
const RSS_GROWTH_BOUND_MIB = 160;

const lab = canBuildLab();
if (!lab.ok) {
  t.fail(`cannot build the lab: ${lab.why}`);
} else {
  t.test('memory stays bounded under a flood from many sources', { timeout: 300_000 }, async (t) => {
    const { L, srv, cl, tftpRoot, config, serve } = serverLab(t, 'mbfm');
    L.exec(srv, 'ip', ['route', 'add', '10.128.0.0/9', 'via', '10.77.0.50']);
    L.exec(srv, 'ip', ['route', 'add', '10.77.1.0/24', 'via', '10.77.0.50']);
    sh('ip', ['-n', cl, '-batch', '-'], { input: Array.from({ length: 250 }, (_, i) => `addr add 10.77.1.${i + 1}/32 dev q0`).join('\n') + '\n' });

    const limit = `maxClients: ${MAX_CLIENTS}`;
    const served = await serve(config('10.77.0.100-10.77.0.109', `
dhcp: { rateLimit: { ${limit} } }
tftp: { root: ${tftpRoot}, rateLimit: { ${limit} } }
dns: { rateLimit: { ${limit} } }
ntp: { localStratum: 5, rateLimit: { ${limit} } }
api: { rateLimit: { perSecond: 1, burst: 2, maxClients: 16 }, bootRateLimit: { perSecond: 1, burst: 2, maxClients: 16 } }
`), [`--max-old-space-size=${HEAP_CAP_MIB}`]);
    await new Promise((r) => setTimeout(r, 2000)); // settle after start (JIT, first GCs)
    const start = served.memory();
    const heap = async () => ((await served.metrics()).get('metalbox_nodejs_heap_size_used_bytes') ?? NaN) / 1048576;
    const startHeap = await heap();
    t.comment(`server at rest: rss ${start.rssMiB.toFixed(1)} MiB, heap used ${startHeap.toFixed(1)} MiB`);
    const rows: string[] = [];

    const flood = async (name: string, args: string[], gauge: string, dropped: string[], max: number) => {
      const before = served.memory();
      const out = JSON.parse(await runIn(cl, 'python3', [PEER, ...args], 120_000)) as Record<string, unknown>;
      await new Promise((r) => setTimeout(r, 1500)); // let the server drain what the kernel queued
      const m = await served.metrics();
      const after = served.memory();
      const tracked = m.get(gauge) ?? NaN;
      const drops = dropped.map((d) => m.get(d) ?? 0).reduce((a, b) => a + b, 0);
      const row = `${name}: sent ${JSON.stringify(out)}; rss ${before.rssMiB.toFixed(1)} -> ${after.rssMiB.toFixed(1)} MiB (peak ${after.peakMiB.toFixed(1)}); limiter entries ${tracked} (max ${max}); rate-limited drops ${drops}; heap used ${((m.get('metalbox_nodejs_heap_size_used_bytes') ?? NaN) / 1048576).toFixed(1)} MiB`;
      rows.push(row);
      t.comment(row);
      t.ok(tracked <= max, `${name}: the limiter tracks ${tracked} <= maxClients ${max}`);
      // Two generations of max/2: once the first is full the limiter never holds fewer than about max/2.
      t.ok(tracked >= max / 2 - 16, `${name}: and the flood did fill it (${tracked} >= ~${max / 2}): the bound was tested`);
      t.ok(drops > 0, `${name}: the abusive source was limited (${drops} drops counted)`);
      return out;
    };

    const spoof = (kind: string) => ['spoof', kind, '10.77.0.1', String(SECONDS), '10.128.0.1', '50000', '10.200.0.1'];
    const round = async () => {
      await flood('dns', spoof('dns'), 'metalbox_dns_rate_limited_clients', ['metalbox_dns_dropped_total{reason="rate-limited"}'], MAX_CLIENTS);
      await flood('ntp', spoof('ntp'), 'metalbox_ntp_rate_limited_clients', ['metalbox_ntp_requests_total{result="rate-dropped"}', 'metalbox_ntp_requests_total{result="kiss-rate"}'], MAX_CLIENTS);
      await flood('tftp', spoof('tftp'), 'metalbox_tftp_rate_limited_clients', ['metalbox_tftp_refused_total{reason="rate-limited"}'], MAX_CLIENTS);
      await flood('dhcp', ['dhcp-flood', '10.77.0.1', String(SECONDS), '50000'], 'metalbox_dhcp_rate_limited_clients', ['metalbox_dhcp_dropped_total{reason="rate-limited"}'], MAX_CLIENTS);
      // A fresh set of addresses per round would exceed the 250 on q0; the same ones again still exercise the limiter.
      return flood('http', ['http', '10.77.0.1', '5443', '/api/v1/version', '10.77.1.1', '250', '3'], 'metalbox_http_rate_limited_clients{scope="api"}', ['metalbox_http_rate_limited_total{scope="api"}'], 16);
    };
    // Round one fills what is meant to fill (the limiters' tables, V8's heap spaces, socket buffers); round two sends
    // the same floods again: twice the traffic under the same heap cap, so anything kept per packet or per source
    // would outgrow it. Both rounds' RSS are printed.
    const http = await round();
    t.match(http, { statuses: { 401: 500, 429: 250 } }, 'http: each address got its burst (2), then 429');
    const mid = served.memory();
    rows.push(`after round one: rss ${mid.rssMiB.toFixed(1)} MiB; round two follows`);
    await round();

    const end = served.memory();
    const endHeap = await heap();
    const grew = end.rssMiB - start.rssMiB;
    const grew2 = end.rssMiB - mid.rssMiB;
    const summary = `all floods, two rounds: rss ${start.rssMiB.toFixed(1)} -> ${mid.rssMiB.toFixed(1)} -> ${end.rssMiB.toFixed(1)} MiB (round one +${(mid.rssMiB - start.rssMiB).toFixed(1)}, round two +${grew2.toFixed(1)}, peak ${end.peakMiB.toFixed(1)}), heap used ${startHeap.toFixed(1)} -> ${endHeap.toFixed(1)} MiB`;
    t.comment(summary);
    process.stdout.write(`# flood-memory figures:\n${[...rows, summary].map((r) => `#   ${r}`).join('\n')}\n`);
    t.ok(grew < RSS_GROWTH_BOUND_MIB, `resident memory grew ${grew.toFixed(1)} MiB < ${RSS_GROWTH_BOUND_MIB} MiB over both rounds`);
    t.equal(served.child.exitCode, null, `the server is still running, its heap capped at ${HEAP_CAP_MIB} MiB: nothing the floods left is held`);
    t.equal((await runIn(cl, 'dig', ['@10.77.0.1', 'rack.internal', 'SOA', '+short', '+tries=2', '+timeout=2'])).trim() !== '', true, 'and still answers a real client');
  });
}
