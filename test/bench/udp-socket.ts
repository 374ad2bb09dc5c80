// How many datagrams per second one receiving socket handles: metalbox's native socket
// (src/lib/udp-socket.ts) against node:dgram, back to back in one run, on loopback, with the same JS work
// per datagram (count it, add up its length). Not a timed test.
//
//   node --import tsx test/bench/udp-socket.ts [--rounds R] [--size BYTES] [--flood N]
//
// Two measurements:
//   drain  the event loop is kept busy while a burst is sent into the receiver's queue (SO_RCVBUF set to
//          net.core.rmem_max, sized so nothing is dropped); then the time from yielding to the last
//          datagram handled. Pure receive cost: no sender competes for the CPU, nothing is dropped.
//   flood  a separate process sends N datagrams as fast as it can (what the integration test does);
//          datagrams handled per second while it lasted, and what the kernel dropped meanwhile
//          (/proc/net/udp, for both). On a 2-core machine the sender and the receiver share the CPUs
//          with everything else, so these figures move a lot from run to run.
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openUdpSocket, type UdpSocket } from '../../src/lib/udp-socket.ts';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    size: { type: 'string', default: '64' },
    flood: { type: 'string', default: '300000' },
    send: { type: 'string' },
  },
});
const rounds = Number(values.rounds);
const size = Number(values.size);
const floodCount = Number(values.flood);
if (!Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(size) || size < 0 || size > 1400 || !Number.isInteger(floodCount) || floodCount < 0) {
  throw new TypeError('usage: udp-socket.ts [--rounds R] [--size BYTES (0-1400)] [--flood N (0: skip)]');
}
const rmemMax = Number(fs.readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));

interface Receiver {
  name: string;
  port: number;
  /** Resolves from the receive callback once `target` datagrams have been handled: no polling. */
  until(target: number): Promise<void>;
  received(): number;
  bytes(): number;
  lastAt(): number;
  close(): void;
}

/** Counting shared by both receivers: the same JS work per datagram. */
function counter(): { onData(length: number): void; until(target: number): Promise<void>; received(): number; bytes(): number; lastAt(): number } {
  let n = 0;
  let bytes = 0;
  let last = 0;
  let waiting: { target: number; resolve: () => void } | undefined;
  return {
    onData(length) {
      n++;
      bytes += length;
      last = performance.now();
      if (waiting !== undefined && n >= waiting.target) {
        waiting.resolve();
        waiting = undefined;
      }
    },
    until: (target) => (n >= target ? Promise.resolve() : new Promise((resolve) => { waiting = { target, resolve }; })),
    received: () => n,
    bytes: () => bytes,
    lastAt: () => last,
  };
}

function metalbox(): Receiver {
  const c = counter();
  const s = openUdpSocket({ port: 0, address: '127.0.0.1', receiveBufferSize: rmemMax }, (d) => c.onData(d.data.length));
  return { name: 'metalbox udp-socket', port: s.port, ...c, close: () => s.close() };
}

async function nodeDgram(): Promise<Receiver> {
  const c = counter();
  const s = dgram.createSocket({ type: 'udp4', recvBufferSize: rmemMax });
  s.on('message', (data) => c.onData(data.length));
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  return { name: 'node:dgram', port: s.address().port, ...c, close: () => s.close() };
}

/** The kernel's drop counter for the UDP socket bound to 127.0.0.1:port (last column of /proc/net/udp). */
function kernelDrops(port: number): number {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const line = fs.readFileSync('/proc/net/udp', 'utf8').split('\n').find((l) => l.trim().split(/\s+/)[1] === local);
  return line === undefined ? NaN : Number(line.trim().split(/\s+/).at(-1));
}

const idle = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Until `target` datagrams were handled; a burst the queue did not hold fails the run (see `burst`). */
async function waitFor(r: Receiver, target: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${r.name}: ${r.received()} of ${target} received, ${kernelDrops(r.port)} dropped by the kernel: lower the burst`)), 10_000);
  });
  try {
    await Promise.race([r.until(target), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

interface Drain { name: string; received: number; dropped: number; perSecond: number; cpuUsPerDatagram: number }

/** `cycles` bursts of `burst` datagrams, each queued while the loop is blocked, then drained. */
async function drain(open: () => Receiver | Promise<Receiver>, sender: UdpSocket, burst: number, cycles: number): Promise<Drain> {
  const r = await open();
  const payload = Buffer.alloc(size, 0x61);
  let busyMs = 0;
  let cpuUs = 0;
  for (let c = 0; c < cycles; c++) {
    const target = r.received() + burst;
    for (let i = 0; i < burst; i++) sender.send(payload, '127.0.0.1', r.port);
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    await waitFor(r, target);
    const cpu = process.cpuUsage(cpu0);
    busyMs += r.lastAt() - t0;
    cpuUs += cpu.user + cpu.system;
  }
  const received = r.received();
  const dropped = kernelDrops(r.port);
  if (r.bytes() !== received * size) throw new Error(`${r.name}: ${r.bytes()} bytes in ${received} datagrams of ${size}`);
  r.close();
  return { name: r.name, received, dropped, perSecond: received / (busyMs / 1000), cpuUsPerDatagram: cpuUs / received };
}

interface Flood { name: string; received: number; dropped: number; perSecond: number; senderPerSecond: number }

async function flood(open: () => Receiver | Promise<Receiver>): Promise<Flood> {
  const r = await open();
  let first = 0;
  const started = setInterval(() => { if (first === 0 && r.received() > 0) first = performance.now(); }, 1);
  const sender = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--send', String(r.port), '--flood', String(floodCount), '--size', String(size)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  sender.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
  await new Promise((resolve) => sender.on('close', resolve));
  for (let seen = -1; seen !== r.received();) {
    seen = r.received();
    await idle(200);
  }
  clearInterval(started);
  const dropped = kernelDrops(r.port);
  r.close();
  const { sent, seconds } = JSON.parse(out) as { sent: number; seconds: number };
  return { name: r.name, received: r.received(), dropped, perSecond: r.received() / ((r.lastAt() - first) / 1000), senderPerSecond: sent / seconds };
}

const num = (x: number): string => Math.round(x).toLocaleString('en-US');
const pad = (s: string, n: number): string => s.padEnd(n);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  // A burst the queue surely holds: a small datagram costs about 1 KiB of SO_RCVBUF accounting on
  // loopback, and the kernel doubles the buffer we ask for.
  const burst = Math.max(100, Math.min(5000, Math.floor((2 * rmemMax) / 1536)));
  const cycles = Math.max(1, Math.ceil(100_000 / burst));
  const sender = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  const drains: Drain[] = [];
  for (let i = 0; i < rounds; i++) {
    drains.push(await drain(metalbox, sender, burst, cycles));
    drains.push(await drain(nodeDgram, sender, burst, cycles));
  }
  sender.close();
  process.stdout.write(`drain: ${rounds} round(s) of ${cycles} bursts x ${burst} datagrams of ${size} bytes, loopback, SO_RCVBUF ${rmemMax}\n`);
  process.stdout.write(`${pad('receiver', 22)}${pad('received', 11)}${pad('dropped', 9)}${pad('handled/s', 12)}CPU µs/datagram\n`);
  for (const d of drains) process.stdout.write(`${pad(d.name, 22)}${pad(num(d.received), 11)}${pad(num(d.dropped), 9)}${pad(num(d.perSecond), 12)}${d.cpuUsPerDatagram.toFixed(2)}\n`);
  for (const name of ['metalbox udp-socket', 'node:dgram']) {
    const mine = drains.filter((d) => d.name === name);
    process.stdout.write(`median ${pad(name, 21)}${num(median(mine.map((d) => d.perSecond)))} handled/s, ${median(mine.map((d) => d.cpuUsPerDatagram)).toFixed(2)} µs CPU per datagram\n`);
  }

  if (floodCount === 0) return;
  const floods: Flood[] = [];
  for (let i = 0; i < rounds; i++) {
    floods.push(await flood(metalbox));
    floods.push(await flood(nodeDgram));
  }
  process.stdout.write(`\nflood: ${rounds} round(s) of ${num(floodCount)} datagrams of ${size} bytes from another process, loopback\n`);
  process.stdout.write(`${pad('receiver', 22)}${pad('sender/s', 11)}${pad('received', 11)}${pad('dropped', 10)}handled/s\n`);
  for (const f of floods) process.stdout.write(`${pad(f.name, 22)}${pad(num(f.senderPerSecond), 11)}${pad(num(f.received), 11)}${pad(num(f.dropped), 10)}${num(f.perSecond)}\n`);
  for (const name of ['metalbox udp-socket', 'node:dgram']) {
    const mine = floods.filter((f) => f.name === name);
    process.stdout.write(`median ${pad(name, 21)}${num(median(mine.map((f) => f.perSecond)))} handled/s, ${num(median(mine.map((f) => f.received)))} of ${num(floodCount)} received\n`);
  }
}

if (values.send !== undefined) {
  // Sender mode: --flood datagrams to 127.0.0.1:<send> as fast as sendmsg goes; a full send queue is retried.
  const port = Number(values.send);
  const socket = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  const payload = Buffer.alloc(size, 0x61);
  const t0 = performance.now();
  let sent = 0;
  while (sent < floodCount) if (socket.send(payload, '127.0.0.1', port)) sent++;
  const seconds = (performance.now() - t0) / 1000;
  socket.close();
  process.stdout.write(`${JSON.stringify({ sent, seconds })}\n`);
} else {
  await main();
}
