// src/lib/udp-socket.ts on loopback, in this process: everything that needs neither root nor a second
// interface. Device binding, broadcasts, ARP and floods are in test/integration/udp-socket.test.ts.
import t from 'tap';
import { AsyncLocalStorage } from 'node:async_hooks';
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import { buildNative } from '../../image/build-binary.ts';
import { devAddonPath, loadAddon } from '../../src/lib/addon.ts';
import { arpAdd, ifIndex, ifName, openUdpSocket, udpSocketsAllocated, type Datagram, type UdpSocket } from '../../src/lib/udp-socket.ts';
import { ROOT } from '../helpers/process.ts';

buildNative();

// Collections on demand, without --expose-gc on tap's command line.
setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as () => void;
async function gc(): Promise<void> {
  // Node-API finalizers run on a later turn than the collection that found the object.
  for (let i = 0; i < 3; i++) {
    collect();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** A socket on 127.0.0.1 that collects what it receives. */
function receiver(t: { teardown(fn: () => void): void }): { socket: UdpSocket; got: Datagram[]; next(n?: number): Promise<Datagram[]> } {
  const got: Datagram[] = [];
  const socket = openUdpSocket({ port: 0, address: '127.0.0.1' }, (d) => got.push(d));
  t.teardown(() => socket.close());
  return {
    socket,
    got,
    async next(n = 1) {
      const deadline = Date.now() + 5000;
      while (got.length < n) {
        if (Date.now() > deadline) throw new Error(`expected ${n} datagrams, got ${got.length}`);
        await sleep(5);
      }
      return got.splice(0, n);
    },
  };
}

t.test('a datagram round trip on loopback, with its interface and addresses', async (t) => {
  const a = receiver(t);
  const b = receiver(t);
  t.ok(a.socket.port > 0 && a.socket.port !== b.socket.port, 'port 0 gives each socket its own port');
  t.equal(a.socket.address, '127.0.0.1');
  t.equal(a.socket.device, undefined);
  t.equal(a.socket.send(Buffer.from('ping'), '127.0.0.1', b.socket.port), true);
  const [d] = await b.next();
  t.same({ ...d, data: d!.data.toString() }, { data: 'ping', address: '127.0.0.1', port: a.socket.port, ifindex: ifIndex('lo'), localAddress: '127.0.0.1', interfaceAddress: '127.0.0.1' });
  t.ok(Buffer.isBuffer(d!.data));

  // The largest IPv4 UDP payload goes through whole; one byte more is EMSGSIZE.
  const big = Buffer.alloc(65507, 7);
  t.equal(b.socket.send(big, '127.0.0.1', a.socket.port), true);
  const [large] = await a.next();
  t.equal(large!.data.length, 65507);
  t.ok(large!.data.equals(big));
  t.throws(() => b.socket.send(Buffer.alloc(65508), '127.0.0.1', a.socket.port), { code: 'SOCKET_SEND_FAILED', cause: { code: 'EMSGSIZE', syscall: 'sendmsg' } });
  t.equal(b.socket.send(Buffer.alloc(0), '127.0.0.1', a.socket.port), true, 'an empty datagram is a datagram');
  t.equal((await a.next())[0]!.data.length, 0);

  t.same(a.socket.stats(), { received: 2, truncated: 0, sent: 1, dropped: 0, kernelDropped: 0, receiveErrors: 0 });
  t.same(b.socket.stats(), { received: 1, truncated: 0, sent: 2, dropped: 0, kernelDropped: 0, receiveErrors: 0 }, 'a send that throws is not counted as sent');
});

t.test('addresses are formatted right for every octet width', async (t) => {
  // All of 127/8 is local: bind senders and address receivers across it.
  const got: Datagram[] = [];
  const receiver = openUdpSocket({ port: 0 }, (d) => got.push(d));
  t.teardown(() => receiver.close());
  const pairs = [['127.0.0.1', '127.0.0.2'], ['127.9.10.99', '127.100.200.254'], ['127.255.255.254', '127.0.100.0'], ['127.1.20.100', '127.205.5.50']] as const;
  for (const [from, to] of pairs) {
    const sender = openUdpSocket({ port: 0, address: from }, () => {});
    sender.send(Buffer.from(from), to, receiver.port);
    sender.close();
  }
  const deadline = Date.now() + 5000;
  while (got.length < pairs.length && Date.now() < deadline) await sleep(5);
  t.same(got.map((d) => [d.address, d.localAddress, d.interfaceAddress]), pairs.map(([from, to]) => [from, to, to]));
});

t.test('sendmsg with IP_PKTINFO: ifindex and source address', async (t) => {
  const a = receiver(t);
  const b = receiver(t);
  t.equal(a.socket.send(Buffer.from('via lo'), '127.0.0.1', b.socket.port, { ifindex: ifIndex('lo')!, sourceAddress: '127.0.0.1' }), true);
  t.match((await b.next())[0], { address: '127.0.0.1', ifindex: ifIndex('lo') });
  // The socket is bound to 127.0.0.1 and 127.0.0.1 is ours, but 192.0.2.1 (TEST-NET-1) is not.
  t.throws(() => a.socket.send(Buffer.from('x'), '127.0.0.1', b.socket.port, { sourceAddress: '192.0.2.1' }), { code: 'SOCKET_SEND_FAILED' });
});

t.test('caller bugs are TypeError/RangeError, not SOCKET_* errors', async (t) => {
  const noop = (): void => {};
  t.throws(() => openUdpSocket({ port: -1 }, noop), RangeError);
  t.throws(() => openUdpSocket({ port: 65536 }, noop), RangeError);
  t.throws(() => openUdpSocket({ port: 1.5 }, noop), RangeError);
  t.throws(() => openUdpSocket({ port: 0, address: '10.0.0' }, noop), TypeError);
  t.throws(() => openUdpSocket({ port: 0, address: '::1' }, noop), TypeError);
  t.throws(() => openUdpSocket({ port: 0, device: '' }, noop), TypeError);
  t.throws(() => openUdpSocket({ port: 0 }, undefined as unknown as () => void), TypeError);
  const r = receiver(t);
  t.throws(() => r.socket.send(Buffer.from('x'), 'example.com', 1), TypeError);
  t.throws(() => r.socket.send(Buffer.from('x'), '127.0.0.1', 70000), { code: 'ERR_OUT_OF_RANGE' });
  t.throws(() => r.socket.send('x' as unknown as Buffer, '127.0.0.1', 1), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  t.throws(() => r.socket.send(Buffer.from('x'), '127.0.0.1', 1, { sourceAddress: 'me' }), TypeError);
  // The native functions check their arguments themselves too.
  const native = loadAddon('metalbox_native') as Record<string, (...args: unknown[]) => unknown>;
  t.throws(() => native.udpClose!({}), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }, 'an object that is not a socket handle');
  t.throws(() => native.udpOpen!({ address: '127.0.0.1', port: 0 }), { code: 'ERR_MISSING_ARGS' });
  t.throws(() => native.udpOpen!('127.0.0.1', noop), { code: 'ERR_INVALID_ARG_TYPE' });
  t.throws(() => native.udpOpen!({ address: '127.0.0.1\u0000x', port: 0 }, noop), { code: 'ERR_INVALID_ARG_VALUE' });
  t.throws(() => native.udpOpen!({ address: '127.0.0.1', port: 0, device: 'lo\u0000x' }, noop), { code: 'ERR_INVALID_ARG_VALUE' }, 'a device name with a NUL would bind another device');
  t.throws(() => native.udpOpen!({ address: '127.0.0.1', port: 0, broadcast: 'yes' }, noop), { code: 'ERR_INVALID_ARG_TYPE' });
  t.throws(() => native.udpOpen!({ address: '127.0.0.1' }, noop), { code: 'ERR_OUT_OF_RANGE' }, 'port is required');
  t.throws(() => openUdpSocket({ port: 0, receiveBufferSize: -1 }, noop), RangeError);
  t.throws(() => arpAdd('lo', '10.0.0.1', 'zz:00:00:00:00:00'), TypeError);
  t.throws(() => arpAdd('lo', '10.0.0.1', Buffer.alloc(5)), TypeError);
  t.throws(() => arpAdd('lo', 'ten', '02:00:00:00:00:01'), TypeError);
});

t.test('opening errors are SOCKET_OPEN_FAILED naming what failed', async (t) => {
  const err = t.throws(() => openUdpSocket({ port: 0, device: 'mbx-nosuch0' }, () => {})) as Error & { code: string; cause: { code: string } };
  t.equal(err.code, 'SOCKET_OPEN_FAILED');
  // Unprivileged processes on kernels before 5.7 may not bind to any device (EPERM).
  t.match(err.cause.code, process.getuid?.() === 0 ? 'ENODEV' : /^(ENODEV|EPERM)$/);
  if (err.cause.code === 'ENODEV') t.equal(err.message, 'cannot open UDP socket 0.0.0.0:0 on mbx-nosuch0: ENODEV (no such network interface)');
  t.match(err.cause, { syscall: 'setsockopt(SO_BINDTODEVICE)', path: 'mbx-nosuch0' });
  t.match(() => openUdpSocket({ port: 0, device: 'x'.repeat(16) }, () => {}), Function);
  t.throws(() => openUdpSocket({ port: 0, device: 'x'.repeat(16) }, () => {}), { code: 'SOCKET_OPEN_FAILED', cause: { code: 'ENODEV' } }, 'too long for IFNAMSIZ: refused, never truncated');

  // A node:dgram socket without reuseAddr holds the port.
  const holder = dgram.createSocket({ type: 'udp4' });
  await new Promise<void>((resolve) => holder.bind(0, '127.0.0.1', resolve));
  t.teardown(() => holder.close());
  const port = holder.address().port;
  t.throws(() => openUdpSocket({ port, address: '127.0.0.1' }, () => {}), {
    code: 'SOCKET_OPEN_FAILED',
    message: `cannot open UDP socket 127.0.0.1:${port}: EADDRINUSE (the port is already in use by another socket)`,
    details: { address: '127.0.0.1', port, errno: 'EADDRINUSE' },
    cause: { code: 'EADDRINUSE', syscall: 'bind' },
  });
  t.throws(() => openUdpSocket({ port: 0, address: '192.0.2.1' }, () => {}), { code: 'SOCKET_OPEN_FAILED', cause: { code: 'EADDRNOTAVAIL' } }, 'an address that is not ours');
  const free = openUdpSocket({ port: 0, address: '192.0.2.1', freebind: true }, () => {});
  t.ok(free.port > 0, 'unless freebind');
  free.close();

  // Two sockets with SO_REUSEADDR (the default) share a port; reuseAddress: false refuses to.
  const first = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  t.teardown(() => first.close());
  const second = openUdpSocket({ port: first.port, address: '127.0.0.1' }, () => {});
  second.close();
  t.throws(() => openUdpSocket({ port: first.port, address: '127.0.0.1', reuseAddress: false }, () => {}), { cause: { code: 'EADDRINUSE' } });
});

t.test('a port below 1024 without CAP_NET_BIND_SERVICE is EACCES', async (t) => {
  const root = process.getuid?.() === 0;
  if (!root) {
    t.throws(() => openUdpSocket({ port: 67, address: '127.0.0.1' }, () => {}), { code: 'SOCKET_OPEN_FAILED', cause: { code: 'EACCES' }, message: /127\.0\.0\.1:67: EACCES \(not permitted/ });
    return;
  }
  if (spawnSync('setpriv', ['--version']).status !== 0) {
    t.fail('root, and no setpriv (util-linux) to drop CAP_NET_BIND_SERVICE');
    return;
  }
  // As root: the socket child without that capability.
  const child = spawn('setpriv', ['--bounding-set', '-net_bind_service', process.execPath, '--import', 'tsx', 'test/helpers/udp-socket-child.ts'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  child.stdin.end(`${JSON.stringify({ id: 1, op: 'open', name: 'a', options: { port: 67, address: '127.0.0.1' } })}\n${JSON.stringify({ id: 2, op: 'exit' })}\n`);
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
  await new Promise((resolve) => child.on('close', resolve));
  const reply = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { id?: number }).find((e) => e.id === 1);
  t.match(reply, { ok: false, error: { code: 'SOCKET_OPEN_FAILED', causeCode: 'EACCES', message: /127\.0\.0\.1:67: EACCES \(not permitted/ } });
});

t.test('receiveBufferSize sets SO_RCVBUF: a burst queues instead of being dropped', async (t) => {
  const COUNT = 200;
  const burst = async (receiveBufferSize: number): Promise<{ received: number; kernelDropped: number }> => {
    let received = 0;
    const r = openUdpSocket({ port: 0, address: '127.0.0.1', receiveBufferSize }, () => { received++; });
    const s = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
    // Sent while this (single) event loop is busy sending: everything queues until we yield.
    for (let i = 0; i < COUNT; i++) s.send(Buffer.alloc(64), '127.0.0.1', r.port);
    const deadline = Date.now() + 5000;
    while (received + r.stats().kernelDropped < COUNT && Date.now() < deadline) await sleep(5);
    const { kernelDropped } = r.stats();
    r.close();
    s.close();
    return { received, kernelDropped };
  };
  const small = await burst(2048);
  // Stock kernels cap SO_RCVBUF at net.core.rmem_max (212992 on Debian), doubled: room for several
  // hundred small datagrams on loopback.
  const large = await burst(Number(fs.readFileSync('/proc/sys/net/core/rmem_max', 'utf8')));
  t.ok(small.kernelDropped > COUNT / 2, `a 2 KiB buffer drops most of a ${COUNT}-datagram burst (${small.kernelDropped} dropped)`);
  t.equal(small.received + small.kernelDropped, COUNT, 'and kernelDropped counts every one');
  t.same(large, { received: COUNT, kernelDropped: 0 }, 'a buffer of rmem_max holds it all');
});

t.test('one wakeup handles at most 64 datagrams, then the event loop moves on', async (t) => {
  let received = 0;
  const r = openUdpSocket({ port: 0, address: '127.0.0.1', receiveBufferSize: Number(fs.readFileSync('/proc/sys/net/core/rmem_max', 'utf8')) }, () => { received++; });
  const s = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  t.teardown(() => { r.close(); s.close(); });
  // 200 datagrams wait in the queue (the loop is busy here); setImmediate callbacks run in the phase
  // right after the one that polls sockets, so each sees how many one wakeup delivered.
  for (let i = 0; i < 200; i++) s.send(Buffer.alloc(16), '127.0.0.1', r.port);
  // Loopback delivery can be deferred to ksoftirqd on a busy machine: give it time, still blocking the loop.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  const seen: number[] = [];
  await new Promise<void>((resolve) => {
    const check = (): void => {
      seen.push(received);
      if (received >= 200) resolve();
      else setImmediate(check);
    };
    setImmediate(check);
  });
  // (Whether the first check comes before or after the first poll depends on the phase we start from.)
  const batches = seen.map((n, i) => n - (seen[i - 1] ?? 0)).filter((n) => n > 0);
  t.same(batches, [64, 64, 64, 8], `batches of 64 (received after each wakeup: ${seen.join(', ')})`);
});

t.test('close is idempotent; send after close fails; stats survive close', async (t) => {
  const r = receiver(t);
  const port = r.socket.port;
  r.socket.close();
  r.socket.close();
  t.throws(() => r.socket.send(Buffer.from('x'), '127.0.0.1', 9), { code: 'SOCKET_SEND_FAILED', message: `cannot send to 127.0.0.1:9 from 127.0.0.1:${port}: the socket is closed` });
  t.same(r.socket.stats(), { received: 0, truncated: 0, sent: 0, dropped: 0, kernelDropped: 0, receiveErrors: 0 });
  // The port is free again.
  const again = openUdpSocket({ port, address: '127.0.0.1', reuseAddress: false }, () => {});
  t.equal(again.port, port);
  again.close();
});

t.test('closed sockets are collected and freed; no fd leaks', async (t) => {
  await gc();
  const baseline = udpSocketsAllocated();
  const fds = fs.readdirSync('/proc/self/fd').length;
  for (let i = 0; i < 1000; i++) openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {}).close();
  t.equal(fs.readdirSync('/proc/self/fd').length, fds, 'every fd closed at close()');
  t.ok(udpSocketsAllocated() > baseline, 'handles not yet collected still hold their (small) struct');
  await gc();
  t.equal(udpSocketsAllocated(), baseline, 'collected after close: all freed');
});

t.test('callbacks: exceptions are uncaught exceptions, ticks run after, async context is the opener\'s', async (t) => {
  const als = new AsyncLocalStorage<string>();
  const seen: string[] = [];
  const socket = als.run('opened-here', () => openUdpSocket({ port: 0, address: '127.0.0.1' }, (d) => {
    const text = d.data.toString();
    seen.push(`${text}@${als.getStore() ?? 'none'}`);
    process.nextTick(() => seen.push(`tick:${text}`));
    if (text === 'throw') throw new Error('thrown by onDatagram');
  }));
  t.teardown(() => socket.close());
  const uncaught = new Promise<Error>((resolve) => {
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.once('uncaughtException', (err) => {
      for (const l of listeners) process.on('uncaughtException', l);
      resolve(err);
    });
  });
  const sender = receiver(t);
  sender.socket.send(Buffer.from('one'), '127.0.0.1', socket.port);
  sender.socket.send(Buffer.from('throw'), '127.0.0.1', socket.port);
  t.match(await uncaught, { message: 'thrown by onDatagram' });
  sender.socket.send(Buffer.from('after'), '127.0.0.1', socket.port);
  const deadline = Date.now() + 5000;
  while (!seen.includes('tick:after') && Date.now() < deadline) await sleep(5);
  t.same(seen.filter((s) => !s.startsWith('tick:')), ['one@opened-here', 'throw@opened-here', 'after@opened-here'], 'each datagram runs in the async context the socket was opened in');
  t.ok(seen.includes('tick:one') && seen.includes('tick:after'), 'process.nextTick callbacks run');
  t.equal(socket.stats().received, 3, 'the socket kept working after the exception');
});

t.test('a worker that ends with sockets open neither crashes nor leaks', async (t) => {
  await gc();
  const before = udpSocketsAllocated();
  const addon = devAddonPath('metalbox_native');
  const code = `
    const n = require(${JSON.stringify(addon)});
    const { parentPort } = require('node:worker_threads');
    const options = { address: '127.0.0.1', port: 0 };
    const a = n.udpOpen(options, () => {});
    const b = n.udpOpen(options, (d) => parentPort.postMessage(String(d)));
    n.udpSend(a, Buffer.from('hello from a worker'), '127.0.0.1', n.udpStats(b).port, 0, null);
    n.udpClose(n.udpOpen(options, () => {}));
  `;
  for (let i = 0; i < 3; i++) {
    const worker = new Worker(code, { eval: true });
    const message = await new Promise((resolve, reject) => { worker.once('message', resolve); worker.once('error', reject); });
    t.equal(message, 'hello from a worker');
    await worker.terminate();
  }
  await gc();
  t.equal(udpSocketsAllocated(), before, 'the sockets of terminated workers were closed and freed');
});

t.test('interface names and indexes', async (t) => {
  const lo = ifIndex('lo');
  t.ok(lo !== undefined && lo > 0);
  t.equal(ifName(lo!), 'lo');
  t.equal(ifIndex('mbx-nosuch0'), undefined);
  t.equal(ifIndex('x'.repeat(40)), undefined);
  t.equal(ifIndex(''), undefined);
  t.equal(ifName(0), undefined);
  t.equal(ifName(-1), undefined);
  t.equal(ifName(2 ** 31 - 1), undefined);
});

t.test('arpAdd failures are SOCKET_SEND_FAILED with the errno', async (t) => {
  // Loopback is not Ethernet: the kernel refuses (EINVAL); without CAP_NET_ADMIN, EPERM first.
  t.throws(() => arpAdd('lo', '127.0.0.2', '02:00:00:00:00:01'), { code: 'SOCKET_SEND_FAILED', cause: { code: /^(EINVAL|EPERM)$/, syscall: 'ioctl(SIOCSARP)' }, message: /cannot add ARP entry 127\.0\.0\.2 -> 02:00:00:00:00:01 on lo/ });
  t.throws(() => arpAdd('mbx-nosuch0', '10.0.0.1', '02:00:00:00:00:01'), { code: 'SOCKET_SEND_FAILED', cause: { code: /^(ENODEV|EPERM)$/ } });
});
