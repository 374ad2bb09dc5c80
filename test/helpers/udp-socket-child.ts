// A child process that drives src/lib/udp-socket.ts for tests that run it inside a network namespace:
//
//   ip netns exec NS node --expose-gc --import tsx test/helpers/udp-socket-child.ts
//
// Commands arrive as JSON lines on stdin, each with an `id`; every command gets one reply line
// {"id":..,"ok":true,...} or {"id":..,"ok":false,"error":{name,code,message,causeCode}}. Received datagrams
// are printed as {"event":"datagram","socket":NAME,"data":TEXT,...} unless the socket was opened with
// print:false (floods), which only counts them.
//
// Commands: open {name, options, print?}, send {name, data, address, port, via?}, close {name},
// forget {name} (drop our reference, leave it open), stats {name}, ifindex {ifname}, arp {ifname, ip, mac},
// blast {name, count, size, address, port} (send count datagrams at once: how many the kernel took),
// dgram {port} (bind a node:dgram socket without SO_REUSEADDR), gc, loop (event-loop timer gaps since the
// last `loop`), churn {count} (open+close sockets), count (native sockets allocated, open fds), exit.
import dgram from 'node:dgram';
import fs from 'node:fs';
import readline from 'node:readline';
import { setImmediate as immediate } from 'node:timers/promises';
import { arpAdd, ifIndex, openUdpSocket, udpSocketsAllocated, type UdpSocket, type UdpSocketOptions } from '../../src/lib/udp-socket.ts';

interface Command {
  id: number;
  op: string;
  name?: string;
  options?: UdpSocketOptions;
  print?: boolean;
  data?: string;
  address?: string;
  port?: number;
  via?: { ifindex?: number; sourceAddress?: string };
  ifname?: string;
  ip?: string;
  mac?: string;
  count?: number;
  size?: number;
}

const sockets = new Map<string, UdpSocket>();
const dgrams: dgram.Socket[] = [];
const out = (o: unknown): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };

// The event loop must keep turning during a flood: a 5 ms timer records the longest gap between ticks.
let lastTick = performance.now();
let maxGapMs = 0;
let ticks = 0;
const timer = setInterval(() => {
  const now = performance.now();
  maxGapMs = Math.max(maxGapMs, now - lastTick);
  lastTick = now;
  ticks++;
}, 5);

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g === undefined) throw new Error('run node with --expose-gc');
  g();
}

async function handle(c: Command): Promise<Record<string, unknown>> {
  switch (c.op) {
    case 'open': {
      const name = c.name!;
      const print = c.print ?? true;
      const socket = openUdpSocket(c.options!, (d) => {
        if (print) out({ event: 'datagram', socket: name, data: d.data.toString('latin1'), address: d.address, port: d.port, ifindex: d.ifindex, localAddress: d.localAddress, interfaceAddress: d.interfaceAddress });
      });
      sockets.set(name, socket);
      return { port: socket.port };
    }
    case 'send':
      return { sent: sockets.get(c.name!)!.send(Buffer.from(c.data ?? '', 'latin1'), c.address!, c.port!, c.via) };
    case 'blast': {
      const socket = sockets.get(c.name!)!;
      const payload = Buffer.alloc(c.size ?? 1000, 0x61);
      let taken = 0;
      let refused = 0;
      for (let i = 0; i < (c.count ?? 1); i++) {
        if (socket.send(payload, c.address!, c.port!)) taken++;
        else refused++;
      }
      return { taken, refused };
    }
    case 'close':
      sockets.get(c.name!)!.close();
      return {};
    case 'forget':
      sockets.delete(c.name!);
      return {};
    case 'stats':
      return { stats: sockets.get(c.name!)!.stats() };
    case 'ifindex':
      return { ifindex: ifIndex(c.ifname!) ?? null };
    case 'arp':
      arpAdd(c.ifname!, c.ip!, c.mac!);
      return {};
    case 'dgram': {
      const s = dgram.createSocket({ type: 'udp4', reuseAddr: false });
      await new Promise<void>((resolve, reject) => { s.once('error', reject); s.bind(c.port!, '0.0.0.0', () => resolve()); });
      dgrams.push(s);
      return { port: s.address().port };
    }
    case 'gc':
      // Finalizers of Node-API objects run on a later turn after the collection: collect, let them run, twice.
      for (let i = 0; i < 3; i++) { gc(); await immediate(); }
      return {};
    case 'loop': {
      const r = { maxGapMs, ticks };
      maxGapMs = 0;
      ticks = 0;
      return r;
    }
    case 'churn': {
      for (let i = 0; i < (c.count ?? 1); i++) {
        const s = openUdpSocket({ port: 0, address: '127.0.0.1' }, () => {});
        s.close();
        if (i % 2 === 0) s.close();
      }
      return {};
    }
    case 'count':
      return { allocated: udpSocketsAllocated(), fds: fs.readdirSync('/proc/self/fd').length };
    case 'exit':
      for (const s of sockets.values()) s.close();
      for (const s of dgrams) s.close();
      clearInterval(timer);
      process.stdin.destroy();
      // A socket opened and then forgotten (never closed) keeps the loop alive, like an open dgram socket.
      setImmediate(() => process.exit(0));
      return {};
    default:
      throw new Error(`unknown op ${c.op}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const c = JSON.parse(line) as Command;
  handle(c).then(
    (r) => out({ id: c.id, ok: true, ...r }),
    (err: unknown) => {
      const e = err as { name?: string; code?: string; message?: string; cause?: { code?: string } };
      out({ id: c.id, ok: false, error: { name: e.name, code: e.code, message: e.message, causeCode: e.cause?.code } });
    },
  );
});
out({ event: 'ready', pid: process.pid });
