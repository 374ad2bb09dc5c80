// The DHCP service under load, on loopback:
// - a DISCOVER flood: while the work queue's DISCOVERs are full, the sockets drop new DISCOVERs themselves (the native
//   receive path peeks the message type) before any JS object is made for them; REQUESTs keep getting through and
//   answered; shedding stops once the queue drains. The counters prove where each DISCOVER went.
// - the leases decided in one drain slice go to the store as one write: when it fails, no ACK leaves and every
//   decision in it is undone.
//
// On loopback in this process's network namespace: the service on `lo` at a high port, a flood from a child process.
// The policy's boot decision is made slow (a busy wait) so the service stays overloaded, as under a real flood.
import t from 'tap';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildNative } from '../../image/build-binary.ts';
import { parseConfig } from '../../src/config/load.ts';
import { EventLog } from '../../src/core/events.ts';
import { MetalboxError } from '../../src/lib/errors.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { openUdpSocket, type Datagram } from '../../src/lib/udp-socket.ts';
import { decodeDhcp, encodeDhcp, MESSAGE_TYPE } from '../../src/protocols/dhcp/index.ts';
import { DhcpService } from '../../src/services/dhcp/server.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';

buildNative();

const PORT = 20_000 + Math.floor(Math.random() * 20_000);

/** A BOOTREQUEST of `type` from MAC 52:54:00:00:XX:XX (i), relayed by nobody, with ciaddr (replies unicast there). */
function request(type: number, i: number, ciaddr: string): Buffer {
  const chaddr = Buffer.alloc(16);
  chaddr.set([0x52, 0x54, 0x00, (i >> 16) & 255, (i >> 8) & 255, i & 255]);
  return encodeDhcp({
    op: 1, htype: 1, hlen: 6, hops: 0, xid: i, secs: 0, flags: 0, ciaddr, yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr: '0.0.0.0',
    chaddr, sname: '', file: '', options: { messageType: type as 1, other: new Map() },
  });
}

/** Parses Prometheus text: `name{labels}` -> value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^(metalbox_dhcp_\w+(?:\{[^}]*\})?) (\S+)$/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

t.test('a DISCOVER flood is shed in the sockets; REQUESTs are still answered', { timeout: 120_000 }, async (t) => {
  const config = parseConfig(`
interfaces: [lo]
http: { listen: "0.0.0.0:5240" }
dhcp: { port: ${PORT} }
subnets:
  - cidr: 127.0.0.0/8
    dynamicRanges: ["127.10.0.1-127.10.255.254"]
dns: { enabled: false }
ntp: { enabled: false }
`, { source: 'test', defaultStateDir: '/tmp/unused' });
  const store = createMemoryStore();
  const metrics = createMetrics({ processMetrics: false });
  let slow = true;
  const dhcp = new DhcpService({
    config, store, events: new EventLog(store), logger: createLogger('silent'), metrics,
    // Every reply asks the boot decision: 0.3 ms each keeps the service well behind a flood.
    boot: () => {
      const until = performance.now() + (slow ? 0.3 : 0);
      while (performance.now() < until) { /* busy */ }
      return undefined;
    },
    interfaceAddresses: () => ({ lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4' }] }),
    workQueueLimits: { maxUrgent: 8192, maxDiscovers: 64, maxDiscoverAgeMs: 60_000 },
  });
  await dhcp.start();
  t.teardown(() => dhcp.stop());

  // The clients' side: replies go to ciaddr, port PORT + 1.
  const replies: Datagram[] = [];
  const client = openUdpSocket({ port: PORT + 1, address: '0.0.0.0', reuseAddress: false }, (d) => replies.push(d));
  t.teardown(() => client.close());

  // The flood: 20,000 DISCOVERs with a REQUEST (renewing an address of the pool) after every 500, from a child
  // process as fast as it can send.
  const DISCOVERS = 20_000;
  const REQUESTS = 40;
  const packets: string[] = [];
  for (let i = 0; i < DISCOVERS; i++) {
    packets.push(request(MESSAGE_TYPE.DISCOVER, i, '127.0.0.3').toString('hex'));
    if (i % 500 === 0) packets.push(request(MESSAGE_TYPE.REQUEST, 100_000 + i / 500, `127.10.1.${i / 500 + 1}`).toString('hex'));
  }
  const child = spawn(process.execPath, ['-e', `
    const dgram = require('node:dgram');
    const s = dgram.createSocket('udp4');
    const packets = require('node:fs').readFileSync(0, 'utf8').trim().split('\\n').map((h) => Buffer.from(h, 'hex'));
    let i = 0;
    const next = () => {
      // Bursts of 200, yielding between them so libuv's send queue drains.
      for (let n = 0; n < 200 && i < packets.length; n++) s.send(packets[i++], ${PORT}, '127.0.0.1');
      if (i < packets.length) setImmediate(next); else setTimeout(() => s.close(), 200);
    };
    next();
  `], { stdio: ['pipe', 'inherit', 'inherit'] });
  child.stdin.end(packets.join('\n'));
  await new Promise((resolve) => child.on('exit', resolve));

  // Let the service catch up, at full speed now.
  slow = false;
  const read = async (): Promise<Map<string, number>> => samples(await metrics.registry.metrics());
  const deadline = Date.now() + 60_000;
  let m = await read();
  for (;;) {
    const decoded = [...m].filter(([k]) => k.startsWith('metalbox_dhcp_requests_total')).reduce((n, [, v]) => n + v, 0);
    const shed = [...m].filter(([k]) => /dropped_total\{reason="overload-/.test(k)).reduce((n, [, v]) => n + v, 0);
    if (decoded + shed >= (m.get('metalbox_dhcp_datagrams_received_total') ?? 0) && decoded > 0) break;
    if (Date.now() > deadline) break;
    await sleep(100);
    m = await read();
  }
  const v = (k: string): number => m.get(k) ?? 0;
  const received = v('metalbox_dhcp_datagrams_received_total');
  const inSockets = v('metalbox_dhcp_socket_shed_total');
  const overload = v('metalbox_dhcp_dropped_total{reason="overload-discover"}');
  const discoversDecoded = v('metalbox_dhcp_requests_total{type="discover"}');
  const requestsDecoded = v('metalbox_dhcp_requests_total{type="request"}');
  t.comment(`received ${received}, shed in the sockets ${inSockets}, overload-discover ${overload}, DISCOVERs decoded ${discoversDecoded}, REQUESTs decoded ${requestsDecoded}`);

  t.ok(inSockets > 1000, `the sockets dropped DISCOVERs themselves (${inSockets})`);
  t.ok(overload >= inSockets, 'counted as overload-discover too');
  t.equal(v('metalbox_dhcp_dropped_total{reason="overload-request"}'), 0, 'no REQUEST was shed');
  t.equal(received, discoversDecoded + requestsDecoded + overload + v('metalbox_dhcp_dropped_total{reason="overload-stale"}'),
    'every datagram received was handled or shed, and counted once');
  t.ok(discoversDecoded < DISCOVERS - inSockets + 1, 'what the sockets shed never reached the decoder');
  t.ok(requestsDecoded > REQUESTS / 2, `REQUESTs got through the flood (${requestsDecoded} of ${REQUESTS}; the rest the kernel may drop when its queue is full)`);
  t.equal(v('metalbox_dhcp_replies_total{type="ack"}'), requestsDecoded, 'and every one of them was ACKed');

  // The flood is over and the queue drained: the sockets deliver DISCOVERs again.
  const before = replies.length;
  client.send(request(MESSAGE_TYPE.DISCOVER, 999_999, '127.0.0.3'), '127.0.0.1', PORT);
  const until = Date.now() + 10_000;
  while (!replies.slice(before).some((d) => decodeDhcp(d.data).options.messageType === MESSAGE_TYPE.OFFER && decodeDhcp(d.data).xid === 999_999) && Date.now() < until) await sleep(20);
  t.ok(replies.slice(before).some((d) => decodeDhcp(d.data).xid === 999_999), 'a DISCOVER after the flood gets its OFFER');
  t.equal(v('metalbox_dhcp_socket_shed_total'), inSockets);
});

t.test('a failed lease write sends no ACK and undoes every decision written with it', { timeout: 60_000 }, async (t) => {
  const config = parseConfig(`
interfaces: [lo]
http: { listen: "0.0.0.0:5240" }
dhcp: { port: ${PORT + 2} }
subnets:
  - cidr: 127.0.0.0/8
    dynamicRanges: ["127.10.0.1-127.10.255.254"]
dns: { enabled: false }
ntp: { enabled: false }
`, { source: 'test', defaultStateDir: '/tmp/unused' });
  const memory = createMemoryStore();
  let failing = true;
  let writes = 0;
  const store = {
    ...memory,
    write: (ops: Parameters<typeof memory.write>[0]) => {
      writes++;
      return failing ? Promise.reject(new MetalboxError('STORE_WRITE_FAILED', 'disk full (test)')) : memory.write(ops);
    },
  };
  const metrics = createMetrics({ processMetrics: false });
  const dhcp = new DhcpService({
    config, store, events: new EventLog(store), logger: createLogger('silent'), metrics, boot: () => undefined,
    interfaceAddresses: () => ({ lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4' }] }),
  });
  await dhcp.start();
  t.teardown(() => dhcp.stop());
  const replies: Datagram[] = [];
  const client = openUdpSocket({ port: PORT + 3, address: '0.0.0.0', reuseAddress: false }, (d) => replies.push(d));
  t.teardown(() => client.close());

  // Ten REQUESTs (renewing addresses of the pool) in one burst: one drain slice, one write for all of them.
  const N = 10;
  for (let i = 0; i < N; i++) client.send(request(MESSAGE_TYPE.REQUEST, 200_000 + i, `127.10.2.${i + 1}`), '127.0.0.1', PORT + 2);
  const v = async (k: string): Promise<number> => samples(await metrics.registry.metrics()).get(k) ?? 0;
  const deadline = Date.now() + 10_000;
  while (await v('metalbox_dhcp_dropped_total{reason="persist-failed"}') < N && Date.now() < deadline) await sleep(20);
  t.equal(await v('metalbox_dhcp_dropped_total{reason="persist-failed"}'), N, 'each lease of the failed write counted');
  t.ok(writes < N, `written together (${writes} write(s) for ${N} leases)`);
  await sleep(100);
  t.equal(replies.length, 0, 'no ACK left for a lease that is not on disk');
  const pool = dhcp.pools().get('127.0.0.0/8')!;
  t.same([...pool.entries()], [], 'every decision undone: nothing held');

  // The store works again: the same clients get their ACKs.
  failing = false;
  for (let i = 0; i < N; i++) client.send(request(MESSAGE_TYPE.REQUEST, 200_000 + i, `127.10.2.${i + 1}`), '127.0.0.1', PORT + 2);
  const until = Date.now() + 10_000;
  while (replies.length < N && Date.now() < until) await sleep(20);
  t.same(replies.map((d) => decodeDhcp(d.data).options.messageType), Array(N).fill(MESSAGE_TYPE.ACK));
  t.equal((await memory.leases.get('127.10.2.1'))?.state, 'bound', 'and their leases are on disk');
});
