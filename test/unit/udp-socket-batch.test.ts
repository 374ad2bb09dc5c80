// src/lib/udp-socket.ts batch mode (openUdpBatchSocket) on loopback: one call per wakeup with the datagrams back to
// back and their fields as numbers, the DHCP message type peeked natively, and the DHCP drop filter that sheds
// load before any JS object is made (proved by the counters).
import t from 'tap';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { buildNative } from '../../image/build-binary.ts';
import { BATCH, BATCH_WORDS, ifIndex, openUdpBatchSocket, openUdpSocket, udpSocketsAllocated, type DatagramBatch, type UdpBatchSocketOptions } from '../../src/lib/udp-socket.ts';

buildNative();

setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as () => void;
async function gc(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    collect();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const LOCALHOST = 0x7f000001;
const RMEM_MAX = Number(fs.readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));

interface Row { data: Buffer; address: number; port: number; ifindex: number; localAddress: number; interfaceAddress: number; dhcpType: number }

/** A batch socket on 127.0.0.1 that keeps every batch (copied out of the reused meta array) and its rows. */
function batchReceiver(t: { teardown(fn: () => void): void }, options: Partial<UdpBatchSocketOptions> = {}) {
  const batches: { count: number; filtered: number; rows: Row[] }[] = [];
  const socket = openUdpBatchSocket({ port: 0, address: '127.0.0.1', receiveBufferSize: RMEM_MAX, ...options }, (b: DatagramBatch) => {
    const rows: Row[] = [];
    for (let i = 0; i < b.count; i++) {
      const m = b.meta.subarray(i * BATCH_WORDS, (i + 1) * BATCH_WORDS);
      rows.push({
        data: b.data.subarray(m[BATCH.OFFSET]!, m[BATCH.OFFSET]! + m[BATCH.LENGTH]!),
        address: m[BATCH.ADDRESS]!, port: m[BATCH.PORT]!, ifindex: m[BATCH.IFINDEX]!,
        localAddress: m[BATCH.LOCAL_ADDRESS]!, interfaceAddress: m[BATCH.INTERFACE_ADDRESS]!, dhcpType: m[BATCH.DHCP_TYPE]!,
      });
    }
    batches.push({ count: b.count, filtered: b.filtered, rows });
  });
  t.teardown(() => socket.close());
  const rows = (): Row[] => batches.flatMap((b) => b.rows);
  return {
    socket,
    batches,
    rows,
    async until(n: number): Promise<void> {
      const deadline = Date.now() + 5000;
      while (rows().length + socket.stats().filtered < n) {
        if (Date.now() > deadline) throw new Error(`expected ${n} datagrams, got ${rows().length} (+${socket.stats().filtered} filtered)`);
        await sleep(5);
      }
    },
  };
}

/** Blocks this thread (and so its event loop) for `ms`: datagrams sent meanwhile wait in the kernel's queue. */
function blockLoop(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** A DHCP request of message type `type` (RFC 2131 header, the magic cookie, option 53 first). */
function dhcp(type: number, options: { op?: number; cookie?: boolean; optionLength?: number } = {}): Buffer {
  const b = Buffer.alloc(300);
  b[0] = options.op ?? 1;
  b[1] = 1;
  b[2] = 6;
  if (options.cookie ?? true) b.writeUInt32BE(0x63825363, 236);
  // Pad and another option before 53, as some clients send them.
  b[240] = 0;
  b.set([12, 3, 0x61, 0x62, 0x63], 241);
  const len = options.optionLength ?? 1;
  b[246] = 53;
  b[247] = len;
  b.fill(type, 248, 248 + len);
  b[248 + len] = 255;
  return b;
}

t.test('one call per wakeup: payloads back to back, fields as numbers', async (t) => {
  const r = batchReceiver(t);
  const sender = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  t.teardown(() => sender.close());
  const payloads = [Buffer.from('first'), Buffer.alloc(0), Buffer.alloc(1500, 7), Buffer.from('last')];
  for (const p of payloads) t.equal(sender.send(p, '127.0.0.1', r.socket.port), true);
  blockLoop(50); // all four wait in the queue: one wakeup reads them
  await r.until(payloads.length);
  t.equal(r.batches.length, 1, 'one call for the four');
  t.equal(r.batches[0]!.count, 4);
  t.same(r.rows().map((x) => x.data.toString('hex')), payloads.map((p) => p.toString('hex')), 'each payload whole, an empty one included');
  t.same(r.rows()[0], { data: Buffer.from('first'), address: LOCALHOST, port: sender.port, ifindex: ifIndex('lo'), localAddress: LOCALHOST, interfaceAddress: LOCALHOST, dhcpType: 0 },
    'address, port, interface and addresses as numbers; no DHCP type without dhcp: true');
  t.same(r.socket.stats(), { received: 4, truncated: 0, sent: 0, dropped: 0, kernelDropped: 0, receiveErrors: 0, filtered: 0, sendErrors: 0 });

  // The largest datagram still arrives whole (each read gets a whole 64 KiB of room).
  const big = Buffer.alloc(65507, 9);
  t.equal(sender.send(big, '127.0.0.1', r.socket.port), true);
  await r.until(5);
  t.ok(r.rows()[4]!.data.equals(big));
});

t.test('a wakeup reads at most readBatch datagrams, in calls of at most 320 KiB', async (t) => {
  const small = batchReceiver(t, { readBatch: 64 });
  const sender = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  t.teardown(() => sender.close());
  for (let i = 0; i < 200; i++) sender.send(Buffer.alloc(16, i), '127.0.0.1', small.socket.port);
  blockLoop(50);
  await small.until(200);
  t.same(small.batches.map((b) => b.count), [64, 64, 64, 8], 'batches of readBatch');
  t.same(small.rows().map((x) => x.data[0]), Array.from({ length: 200 }, (_, i) => i), 'in arrival order');

  // 100 datagrams of 8 KiB in one wakeup do not fit one call's 320 KiB: the wakeup delivers them in several calls.
  const large = batchReceiver(t, { readBatch: 1024 });
  for (let i = 0; i < 100; i++) sender.send(Buffer.alloc(8192, i), '127.0.0.1', large.socket.port);
  blockLoop(50);
  await large.until(100);
  t.ok(large.batches.length >= 3, `${large.batches.length} calls`);
  t.ok(large.batches.every((b) => b.rows.reduce((n, x) => n + x.data.length, 0) <= 320 * 1024), 'each call holds at most 320 KiB');
  t.same(large.rows().map((x) => x.data[8191]), Array.from({ length: 100 }, (_, i) => i), 'nothing lost or reordered across calls');
});

t.test('dhcp: the message type is peeked; malformed requests say 0 and go to JS', async (t) => {
  const r = batchReceiver(t, { dhcp: true });
  const sender = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  t.teardown(() => sender.close());
  const cases: [Buffer, number, string][] = [
    [dhcp(1), 1, 'DISCOVER'],
    [dhcp(3), 3, 'REQUEST'],
    [dhcp(8), 8, 'INFORM'],
    [dhcp(1, { op: 2 }), 0, 'a BOOTREPLY'],
    [dhcp(1, { cookie: false }), 0, 'no cookie (BOOTP)'],
    [dhcp(1, { optionLength: 2 }), 0, 'option 53 of two octets'],
    [dhcp(1).subarray(0, 239), 0, 'shorter than header and cookie'],
    [dhcp(1).subarray(0, 248), 0, 'option 53 cut off'],
    [Buffer.from('not dhcp at all'), 0, 'not DHCP'],
  ];
  for (const [b] of cases) sender.send(b, '127.0.0.1', r.socket.port);
  await r.until(cases.length);
  t.same(r.rows().map((x) => x.dhcpType), cases.map(([, type]) => type), cases.map(([, , name]) => name).join(', '));
});

t.test('setDhcpDrop: chosen types are dropped before JS, counted in stats().filtered and in each batch', async (t) => {
  const r = batchReceiver(t, { dhcp: true });
  const sender = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  t.teardown(() => sender.close());
  r.socket.setDhcpDrop([1]);
  for (let i = 0; i < 50; i++) {
    sender.send(dhcp(1), '127.0.0.1', r.socket.port);
    if (i % 10 === 0) sender.send(dhcp(3), '127.0.0.1', r.socket.port);
  }
  sender.send(dhcp(1, { optionLength: 2 }), '127.0.0.1', r.socket.port);
  await r.until(56);
  t.same(r.rows().map((x) => x.dhcpType), [3, 3, 3, 3, 3, 0], 'REQUESTs and the malformed DISCOVER reach JS; DISCOVERs do not');
  const stats = r.socket.stats();
  t.equal(stats.filtered, 50, 'every DISCOVER counted as filtered');
  t.equal(stats.received, 6, 'and not as received');
  t.equal(r.batches.at(-1)!.filtered, 50, 'each batch carries the running total');

  r.socket.setDhcpDrop([]);
  sender.send(dhcp(1), '127.0.0.1', r.socket.port);
  await r.until(57);
  t.equal(r.rows().at(-1)!.dhcpType, 1, 'an empty list turns the filter off');
  t.equal(r.socket.stats().filtered, 50);

  t.throws(() => r.socket.setDhcpDrop([0]), RangeError);
  t.throws(() => r.socket.setDhcpDrop([32]), RangeError);
  const plain = batchReceiver(t);
  t.throws(() => plain.socket.setDhcpDrop([1]), TypeError, 'only with dhcp: true');
  plain.socket.close();
  r.socket.close();
  t.doesNotThrow(() => r.socket.setDhcpDrop([1]), 'a closed socket ignores it');
});

t.test('sendTo: numeric destinations; errors as send()', async (t) => {
  const a = batchReceiver(t);
  const b = batchReceiver(t);
  t.equal(a.socket.sendTo(Buffer.from('to b'), LOCALHOST, b.socket.port), true);
  await b.until(1);
  t.match(b.rows()[0], { address: LOCALHOST, port: a.socket.port });
  t.equal(b.rows()[0]!.data.toString(), 'to b');
  t.equal(a.socket.stats().sent, 1);
  t.throws(() => a.socket.sendTo(Buffer.alloc(65508), LOCALHOST, b.socket.port), { code: 'SOCKET_SEND_FAILED', message: /127\.0\.0\.1:\d+ .*EMSGSIZE/, cause: { code: 'EMSGSIZE' } });
  t.throws(() => a.socket.sendTo(Buffer.from('x'), 2 ** 32, b.socket.port), RangeError, 'an address that is no IPv4 address is a caller bug');
  a.socket.close();
  t.throws(() => a.socket.sendTo(Buffer.from('x'), LOCALHOST, b.socket.port), { code: 'SOCKET_SEND_FAILED', message: /the socket is closed/ });
});

t.test('an exception in onBatch is an uncaught exception; the socket keeps working', async (t) => {
  let calls = 0;
  const socket = openUdpBatchSocket({ port: 0, address: '127.0.0.1' }, (b) => {
    calls++;
    if (b.data.toString().startsWith('throw')) throw new Error('thrown by onBatch');
  });
  t.teardown(() => socket.close());
  const uncaught = new Promise<Error>((resolve) => {
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.once('uncaughtException', (err) => {
      for (const l of listeners) process.on('uncaughtException', l);
      resolve(err);
    });
  });
  const sender = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  t.teardown(() => sender.close());
  sender.send(Buffer.from('throw'), '127.0.0.1', socket.port);
  t.match(await uncaught, { message: 'thrown by onBatch' });
  sender.send(Buffer.from('after'), '127.0.0.1', socket.port);
  const deadline = Date.now() + 5000;
  while (socket.stats().received < 2 && Date.now() < deadline) await sleep(5);
  t.equal(socket.stats().received, 2);
  t.equal(calls, 2);
});

t.test('closed batch sockets are collected and freed; no fd leaks', async (t) => {
  await gc();
  const baseline = udpSocketsAllocated();
  const fds = fs.readdirSync('/proc/self/fd').length;
  for (let i = 0; i < 200; i++) openUdpBatchSocket({ port: 0, address: '127.0.0.1', dhcp: true }, () => {}).close();
  t.equal(fs.readdirSync('/proc/self/fd').length, fds, 'every fd closed at close()');
  await gc();
  t.equal(udpSocketsAllocated(), baseline, 'collected after close: all freed (arena included)');
});
