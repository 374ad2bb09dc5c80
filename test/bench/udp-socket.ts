// Datagrams per second one receiving socket handles: metalbox's native socket (src/lib/udp-socket.ts)
// against node:dgram, back to back in one run, same sender, same loopback, same JS work per datagram
// (count it, read its length). Not a timed test.
//
//   node --import tsx test/bench/udp-socket.ts [--count N] [--size BYTES] [--rounds R]
//
// The sender is a separate process sending as fast as it can (synchronous sendmsg through our socket), so
// it usually outruns either receiver: what a receiver does not read in time the kernel drops (its
// receive queue is full), read from /proc/net/udp for both. Figures per receiver: datagrams handled per
// second while the flood lasted, the share it got, and its CPU time per datagram (process.cpuUsage).
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openUdpSocket } from '../../src/lib/udp-socket.ts';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '300000' },
    size: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '3' },
    send: { type: 'string' },
  },
});
const count = Number(values.count);
const size = Number(values.size);
const rounds = Number(values.rounds);
if (!Number.isInteger(count) || count < 1 || !Number.isInteger(size) || size < 0 || size > 65507 || !Number.isInteger(rounds) || rounds < 1) {
  throw new TypeError('usage: udp-socket.ts [--count N] [--size BYTES] [--rounds R]');
}

if (values.send !== undefined) {
  // Sender mode: `count` datagrams to 127.0.0.1:<send>, as fast as sendmsg goes; a full send queue is retried.
  const port = Number(values.send);
  const socket = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
  const payload = Buffer.alloc(size, 0x61);
  const started = performance.now();
  let sent = 0;
  while (sent < count) if (socket.send(payload, '127.0.0.1', port)) sent++;
  const seconds = (performance.now() - started) / 1000;
  socket.close();
  process.stdout.write(`${JSON.stringify({ sent, seconds })}\n`);
} else {
  await main();
}

interface Receiver { port: number; received(): number; bytes(): number; firstAt(): number; lastAt(): number; close(): void }

function metalbox(): Receiver {
  let n = 0;
  let bytes = 0;
  let first = 0;
  let last = 0;
  const s = openUdpSocket({ port: 0, address: '127.0.0.1' }, (d) => {
    if (n === 0) first = performance.now();
    n++;
    bytes += d.data.length;
    last = performance.now();
  });
  return { port: s.port, received: () => n, bytes: () => bytes, firstAt: () => first, lastAt: () => last, close: () => s.close() };
}

async function nodeDgram(): Promise<Receiver> {
  let n = 0;
  let bytes = 0;
  let first = 0;
  let last = 0;
  const s = dgram.createSocket('udp4');
  s.on('message', (data) => {
    if (n === 0) first = performance.now();
    n++;
    bytes += data.length;
    last = performance.now();
  });
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  return { port: s.address().port, received: () => n, bytes: () => bytes, firstAt: () => first, lastAt: () => last, close: () => s.close() };
}

/** The kernel's drop counter for the UDP socket bound to 127.0.0.1:port (last column of /proc/net/udp). */
function kernelDrops(port: number): number {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const line = fs.readFileSync('/proc/net/udp', 'utf8').split('\n').find((l) => l.trim().split(/\s+/)[1] === local);
  return line === undefined ? NaN : Number(line.trim().split(/\s+/).at(-1));
}

interface Result { name: string; received: number; drops: number; perSecond: number; cpuUsPerDatagram: number; senderPerSecond: number }

async function measure(name: string, open: () => Receiver | Promise<Receiver>): Promise<Result> {
  const r = await open();
  const cpu = process.cpuUsage();
  const sender = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--send', String(r.port), '--count', String(count), '--size', String(size)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  sender.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
  await new Promise((resolve) => sender.on('close', resolve));
  // Drain: until nothing has arrived for 200 ms.
  for (let seen = -1; seen !== r.received();) {
    seen = r.received();
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const used = process.cpuUsage(cpu);
  const drops = kernelDrops(r.port);
  r.close();
  const { sent, seconds } = JSON.parse(out) as { sent: number; seconds: number };
  const received = r.received();
  if (r.bytes() !== received * size) throw new Error(`${name}: ${r.bytes()} bytes in ${received} datagrams of ${size}`);
  const window = (r.lastAt() - r.firstAt()) / 1000;
  return { name, received, drops, perSecond: received / window, cpuUsPerDatagram: (used.user + used.system) / received, senderPerSecond: sent / seconds };
}

async function main(): Promise<void> {
  const results: Result[] = [];
  for (let i = 0; i < rounds; i++) {
    results.push(await measure('metalbox udp-socket', metalbox));
    results.push(await measure('node:dgram', nodeDgram));
  }
  const pad = (s: string, n: number): string => s.padEnd(n);
  const num = (x: number): string => Math.round(x).toLocaleString('en-US');
  process.stdout.write(`${count.toLocaleString('en-US')} datagrams of ${size} bytes per run, loopback, ${rounds} round(s)\n`);
  process.stdout.write(`${pad('receiver', 22)}${pad('sender/s', 12)}${pad('received', 11)}${pad('dropped', 10)}${pad('handled/s', 12)}CPU µs/datagram\n`);
  for (const r of results) {
    process.stdout.write(`${pad(r.name, 22)}${pad(num(r.senderPerSecond), 12)}${pad(num(r.received), 11)}${pad(num(r.drops), 10)}${pad(num(r.perSecond), 12)}${r.cpuUsPerDatagram.toFixed(2)}\n`);
  }
  for (const name of ['metalbox udp-socket', 'node:dgram']) {
    const mine = results.filter((r) => r.name === name);
    const median = (xs: number[]): number => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    process.stdout.write(`median ${pad(name, 22)} ${num(median(mine.map((r) => r.perSecond)))} handled/s, ${median(mine.map((r) => r.cpuUsPerDatagram)).toFixed(2)} µs CPU per datagram\n`);
  }
}
