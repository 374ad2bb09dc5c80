// src/lib/udp-socket.ts batch sockets, the parts DNS and NTP use: replies queued and sent with sendmmsg (after the
// batch callback or on flush()), per-datagram source addresses (IP_PKTINFO), partial failures reported per datagram
// and counted, the NTP transmit timestamp written natively, kernel receive timestamps (SO_TIMESTAMPNS) and the
// per-datagram room of a read (maxDatagram). All on loopback, with real receivers.
import t from 'tap';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildNative } from '../../image/build-binary.ts';
import { BATCH, BATCH_WORDS, openUdpBatchSocket, openUdpSocket, SEND_FLAGS, type DatagramBatch, type Datagram, type UdpBatchSocketOptions } from '../../src/lib/udp-socket.ts';

buildNative();

const LOCALHOST = 0x7f000001;
/** Another loopback address: every 127/8 address is local on Linux, so it is a valid source. */
const LOCALHOST_2 = 0x7f000002;
/** TEST-NET-1 (RFC 5737): never one of ours, so a reply from it is refused (EINVAL or ENETUNREACH). */
const FOREIGN = 0xc0000201;
const RMEM_MAX = Number(fs.readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
const NTP_UNIX_OFFSET = 2_208_988_800;

interface Row { data: Buffer; address: number; port: number; seconds: number; nanoseconds: number }

function batchReceiver(t: { teardown(fn: () => void): void }, options: Partial<UdpBatchSocketOptions> = {}, onRows?: (rows: Row[], socket: ReturnType<typeof openUdpBatchSocket>) => void) {
  const rows: Row[] = [];
  const socket = openUdpBatchSocket({ port: 0, address: '127.0.0.1', receiveBufferSize: RMEM_MAX, ...options }, (b: DatagramBatch) => {
    const batch: Row[] = [];
    for (let i = 0, r = 0; i < b.count; i++, r += BATCH_WORDS) {
      const at = b.meta[r + BATCH.OFFSET]!;
      batch.push({
        data: b.data.subarray(at, at + b.meta[r + BATCH.LENGTH]!), address: b.meta[r + BATCH.ADDRESS]!, port: b.meta[r + BATCH.PORT]!,
        seconds: b.meta[r + BATCH.TIME_SECONDS]!, nanoseconds: b.meta[r + BATCH.TIME_NANOSECONDS]!,
      });
    }
    rows.push(...batch);
    onRows?.(batch, socket);
  });
  t.teardown(() => socket.close());
  return {
    socket,
    rows,
    async until(n: number): Promise<void> {
      const deadline = Date.now() + 5000;
      while (rows.length < n) {
        if (Date.now() > deadline) throw new Error(`expected ${n} datagrams, got ${rows.length}`);
        await sleep(5);
      }
    },
  };
}

/** A plain receiver that keeps every datagram with its source. */
function receiver(t: { teardown(fn: () => void): void }) {
  const got: Datagram[] = [];
  const socket = openUdpSocket({ port: 0, address: '0.0.0.0', receiveBufferSize: RMEM_MAX }, (d) => got.push(d));
  t.teardown(() => socket.close());
  return {
    socket,
    got,
    async until(n: number): Promise<void> {
      const deadline = Date.now() + 5000;
      while (got.length < n) {
        if (Date.now() > deadline) throw new Error(`expected ${n} datagrams, got ${got.length}`);
        await sleep(5);
      }
    },
  };
}

function blockLoop(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Unix ms of the NTP timestamp at `at`. */
function ntpMs(b: Buffer, at: number): number {
  return (b.readUInt32BE(at) - NTP_UNIX_OFFSET) * 1000 + (b.readUInt32BE(at + 4) / 4_294_967_296) * 1000;
}

t.test('queue + flush: 300 datagrams in a few sendmmsg calls reach a real receiver whole and in order', async (t) => {
  const sender = batchReceiver(t);
  const r = receiver(t);
  const payloads = Array.from({ length: 300 }, (_, i) => Buffer.alloc(1 + (i % 97), i & 0xff));
  payloads[7] = Buffer.alloc(0);
  for (const [i, p] of payloads.entries()) t.equal(sender.socket.queue(p, LOCALHOST, r.socket.port), i, 'queue() returns the index in the flush');
  t.equal(sender.socket.queued, 300);
  t.equal(r.got.length, 0, 'nothing leaves before the flush');
  t.equal(sender.socket.flush(), 300, 'the kernel took all');
  t.equal(sender.socket.queued, 0);
  await r.until(300);
  t.same(r.got.map((d) => d.data.toString('hex')), payloads.map((p) => p.toString('hex')), 'every payload whole, in order');
  t.ok(r.got.every((d) => d.address === '127.0.0.1' && d.port === sender.socket.port));
  const stats = sender.socket.stats();
  t.equal(stats.sent, 300);
  t.equal(stats.dropped, 0);
  t.equal(stats.sendErrors, 0);
  t.equal(sender.socket.flush(), 0, 'an empty flush sends nothing');
});

t.test('replies queued in the batch callback leave after it; sources per datagram (IP_PKTINFO)', async (t) => {
  // An echo server: each datagram answered with its payload, alternately from 127.0.0.1 (no control message) and
  // 127.0.0.2 (ipi_spec_dst).
  let calls = 0;
  const echo = batchReceiver(t, { address: '0.0.0.0' }, (rows, socket) => {
    calls++;
    for (const [i, row] of rows.entries()) socket.queue(row.data, row.address, row.port, i % 2 === 0 ? 0 : LOCALHOST_2);
    t.equal(socket.queued, rows.length, 'queued during the callback, not yet sent');
  });
  const client = receiver(t);
  for (let i = 0; i < 40; i++) client.socket.send(Buffer.from(`q${i}`), '127.0.0.1', echo.socket.port);
  blockLoop(50);
  await client.until(40);
  t.ok(calls >= 1);
  t.equal(echo.socket.queued, 0, 'flushed after the callback');
  t.same(client.got.map((d) => d.data.toString()), Array.from({ length: 40 }, (_, i) => `q${i}`), 'in order');
  t.same(client.got.map((d) => d.address), Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? '127.0.0.1' : '127.0.0.2')), 'each from its source');
  t.equal(echo.socket.stats().sent, 40);
});

t.test('a partial failure: the refused datagram is reported and counted, the rest of the batch still leaves', async (t) => {
  const sender = batchReceiver(t);
  const r = receiver(t);
  const payloads = ['a', 'b', 'c', 'd', 'e'].map((x) => Buffer.from(x));
  for (const [i, p] of payloads.entries()) sender.socket.queue(p, LOCALHOST, r.socket.port, i === 1 || i === 3 ? FOREIGN : 0);
  const failures: [number, string][] = [];
  t.equal(sender.socket.flush((i, code) => failures.push([i, code])), 3, 'three taken');
  // The kernel refuses a source that is not ours with EINVAL or ENETUNREACH, depending on the route lookup.
  t.same(failures.map(([i]) => i), [1, 3], 'the two from a foreign source, by index');
  t.ok(failures.every(([, code]) => code === 'EINVAL' || code === 'ENETUNREACH'), `with the errno name: ${failures.map(([, c]) => c).join()}`);
  await r.until(3);
  await sleep(50);
  t.same(r.got.map((d) => d.data.toString()), ['a', 'c', 'e'], 'the others, in order');
  const stats = sender.socket.stats();
  t.equal(stats.sent, 3);
  t.equal(stats.sendErrors, 2);
  t.equal(stats.dropped, 0);
});

t.test('NTP_TRANSMIT: the transmit timestamp is written at the send, only into flagged datagrams', async (t) => {
  const sender = batchReceiver(t);
  const r = receiver(t);
  const packet = Buffer.alloc(60, 0xee);
  sender.socket.queue(packet, LOCALHOST, r.socket.port, 0, 0, SEND_FLAGS.NTP_TRANSMIT);
  sender.socket.queue(packet, LOCALHOST, r.socket.port, 0, 0, SEND_FLAGS.NTP_TRANSMIT);
  sender.socket.queue(packet, LOCALHOST, r.socket.port);
  // Stamped at the flush, not at the queue: 20 ms later.
  blockLoop(20);
  const before = Date.now();
  t.equal(sender.socket.flush(), 3);
  const after = Date.now();
  await r.until(3);
  const [a, b, c] = r.got.map((d) => d.data);
  t.ok(a!.subarray(0, 40).equals(packet.subarray(0, 40)) && a!.subarray(48).equals(packet.subarray(48)), 'only octets 40-47 written');
  const ta = ntpMs(a!, 40);
  t.ok(ta >= before - 1 && ta <= after + 1, `transmit time ${ta} within the flush [${before}, ${after}]`);
  t.ok(Math.abs(ntpMs(b!, 40) - ta) < 1, 'one clock read per chunk');
  t.ok(c!.equals(packet), 'without the flag the datagram goes as it is');

  sender.socket.queue(Buffer.alloc(47), LOCALHOST, r.socket.port, 0, 0, SEND_FLAGS.NTP_TRANSMIT);
  t.throws(() => sender.socket.flush(), RangeError, 'a stamp needs 48 octets');
  t.throws(() => sender.socket.setNtpOffset(Number.NaN), TypeError);
});

t.test('NTP offset and stamp values: the offset shifts the stamp by exactly that', async (t) => {
  const sender = batchReceiver(t);
  const r = receiver(t);
  const packet = Buffer.alloc(48);
  for (const offset of [0, 100.5, -3600]) {
    sender.socket.setNtpOffset(offset);
    const before = Date.now();
    sender.socket.queue(packet, LOCALHOST, r.socket.port, 0, 0, SEND_FLAGS.NTP_TRANSMIT);
    sender.socket.flush();
    const after = Date.now();
    await r.until(r.got.length + 1);
    const stamped = ntpMs(r.got.at(-1)!.data, 40) - offset * 1000;
    t.ok(stamped >= before - 1 && stamped <= after + 1, `offset ${offset}: ${stamped} within [${before}, ${after}]`);
  }
});

t.test('kernel receive timestamps: close to the clock, in arrival order, 0 without the option', async (t) => {
  const timed = batchReceiver(t, { timestamps: true });
  const plain = batchReceiver(t);
  const sender = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  t.teardown(() => sender.close());
  // The first socket that asks for timestamps turns the kernel's stamping on through deferred work
  // (net_enable_timestamp); until then a datagram is stamped when it is read. Let it happen.
  await sleep(50);
  const before = Date.now();
  for (let i = 0; i < 50; i++) {
    sender.send(Buffer.from([i]), '127.0.0.1', timed.socket.port);
    sender.send(Buffer.from([i]), '127.0.0.1', plain.socket.port);
  }
  const sent = Date.now();
  // Handled 100 ms later: the timestamps must say when the datagrams arrived, not when JS read them.
  blockLoop(100);
  await timed.until(50);
  await plain.until(50);
  const ms = timed.rows.map((x) => x.seconds * 1000 + x.nanoseconds / 1e6);
  t.ok(timed.rows.every((x) => x.nanoseconds < 1e9), 'nanoseconds below a second');
  t.ok(ms.every((m) => m >= before - 1 && m <= sent + 1), `every timestamp within the sending [${before}, ${sent}]: ${ms[0]}..${ms.at(-1)}`);
  t.ok(ms.every((m, i) => i === 0 || m >= ms[i - 1]!), 'non-decreasing in arrival order');
  t.same(timed.rows.map((x) => x.data[0]), Array.from({ length: 50 }, (_, i) => i));
  t.ok(plain.rows.every((x) => x.seconds === 0 && x.nanoseconds === 0), 'no timestamps without the option');
});

t.test('maxDatagram: a datagram longer than the room is counted as truncated and dropped; the others arrive', async (t) => {
  const r = batchReceiver(t, { maxDatagram: 512 });
  const sender = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  t.teardown(() => sender.close());
  const sizes = [10, 512, 513, 2000, 20];
  for (const [i, n] of sizes.entries()) sender.send(Buffer.alloc(n, i), '127.0.0.1', r.socket.port);
  blockLoop(50);
  await r.until(3);
  await sleep(20);
  t.same(r.rows.map((x) => x.data.length), [10, 512, 20], 'the fitting ones, whole');
  t.same(r.rows.map((x) => x.data[0]), [0, 1, 4]);
  t.equal(r.socket.stats().truncated, 2);
  t.equal(r.socket.stats().received, 3);
  t.throws(() => openUdpBatchSocket({ port: 0, address: '127.0.0.1', maxDatagram: 100 }, () => {}), RangeError);
});

t.test('many small datagrams per wakeup with small slots: recvmmsg chunks, nothing lost or reordered', async (t) => {
  const r = batchReceiver(t, { maxDatagram: 4096, readBatch: 1000 });
  const sender = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  t.teardown(() => sender.close());
  for (let i = 0; i < 1000; i++) sender.send(Buffer.from(String(i)), '127.0.0.1', r.socket.port);
  blockLoop(50);
  await r.until(1000);
  t.same(r.rows.map((x) => Number(x.data.toString())), Array.from({ length: 1000 }, (_, i) => i));
  t.equal(r.socket.stats().kernelDropped, 0);
});

t.test('flush on a closed socket throws SOCKET_SEND_FAILED and forgets the queue', async (t) => {
  const socket = openUdpBatchSocket({ port: 0, address: '127.0.0.1' }, () => {});
  socket.queue(Buffer.from('x'), LOCALHOST, 9);
  socket.close();
  t.throws(() => socket.flush(), { code: 'SOCKET_SEND_FAILED' });
  t.equal(socket.queued, 0);
  t.throws(() => socket.queue(Buffer.alloc(65508), LOCALHOST, 9), RangeError);
});
