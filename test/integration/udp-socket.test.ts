// Device-bound UDP sockets (src/lib/udp-socket.ts, src/native/metalbox.c) against real peers in network
// namespaces. The sockets live in a node child inside the server namespace (test/helpers/udp-socket-child.ts);
// the peers are python3 processes in a second namespace (test/helpers/udp-peer.py).
//
//   ns srv                                     ns peer
//   br0 10.91.1.1/24  (bridge; port s0)  <->   a0    10.91.1.2/24
//   s1  10.91.2.1/24                     <->   b0    10.91.2.2/24
//   s1.10 10.91.3.1/24 (VLAN 10 on s1)   <->   b0.10 10.91.3.2/24
//   m1  192.0.2.1/24  (management: no socket) <-> m0 192.0.2.2/24
//
// Sockets on 0.0.0.0:67 bound to br0, s1 and s1.10 must each hear only their own device's broadcasts,
// and nothing from the management network.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildNative } from '../../image/build-binary.ts';
import { canBuildLab, Lab, sh } from '../helpers/netns.ts';
import { ROOT } from '../helpers/process.ts';

type Event = Record<string, unknown> & { event?: string; id?: number; ok?: boolean };

/** A child process that prints one JSON object per line. */
class JsonLines {
  readonly events: Event[] = [];
  private stderr = '';
  private waiters: (() => void)[] = [];
  private exited = false;

  constructor(readonly child: ChildProcess, readonly label: string) {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        this.events.push(JSON.parse(line) as Event);
      } catch {
        this.stderr += `(stdout) ${line}\n`;
      }
      this.poke();
    });
    child.stderr!.setEncoding('utf8').on('data', (c: string) => { this.stderr += c; });
    child.on('exit', () => { this.exited = true; this.poke(); });
  }

  private poke(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** The first event from `from` on that matches. */
  waitFor(match: (e: Event) => boolean, what: string, timeoutMs = 10_000, from = 0): Promise<Event> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.label}: timed out waiting for ${what}\nevents: ${JSON.stringify(this.events.slice(-20))}\nstderr: ${this.stderr}`)), timeoutMs);
      const check = (): void => {
        const found = this.events.slice(from).find(match);
        if (found !== undefined) { clearTimeout(timer); resolve(found); return; }
        if (this.exited) { clearTimeout(timer); reject(new Error(`${this.label} exited before ${what}\nstderr: ${this.stderr}`)); return; }
        this.waiters.push(check);
      };
      check();
    });
  }

  datagrams(from = 0): Event[] {
    return this.events.slice(from).filter((e) => e.event === 'datagram' || e.event === 'frame');
  }
}

/** The node child that owns the sockets. */
class SocketChild extends JsonLines {
  private nextId = 1;

  async call(op: string, args: Record<string, unknown> = {}): Promise<Event> {
    const id = this.nextId++;
    this.child.stdin!.write(`${JSON.stringify({ id, op, ...args })}\n`);
    return this.waitFor((e) => e.id === id, `reply to ${op}`, 60_000);
  }

  /** Like call, but a failed command fails the test with the child's error. */
  async ok(op: string, args: Record<string, unknown> = {}): Promise<Event> {
    const r = await this.call(op, args);
    if (r.ok !== true) throw new Error(`${op} ${JSON.stringify(args)} failed: ${JSON.stringify(r.error)}`);
    return r;
  }
}

const PEER = path.join(ROOT, 'test', 'helpers', 'udp-peer.py');
const CHILD = path.join(ROOT, 'test', 'helpers', 'udp-socket-child.ts');
// Generous: CI machines are shared. The mechanism itself (64 datagrams per wakeup) is pinned exactly by
// test/unit/udp-socket.test.ts; a socket that read until EAGAIN would stall the timer for the whole flood.
const MAX_EVENT_LOOP_GAP_MS = 500;

const lab = canBuildLab();
const python = sh('python3', ['--version'], { allowFail: true }) !== '';
if (!lab.ok || !python) {
  const why = !lab.ok ? lab.why : 'python3 (the peer) is not installed';
  // CI runs as root with python3 installed (.ci/run): there a skip would hide a failure.
  if (process.env.CI) t.fail(`cannot run: ${why}`);
  else t.plan(0, `device-bound UDP sockets in network namespaces: ${why}`);
} else {
  buildNative();
  const L = new Lab('mbu');
  t.teardown(() => L.destroy());
  process.once('exit', () => L.destroy());

  const srv = L.ns('srv');
  const peer = L.ns('peer');
  const ipn = (ns: string, ...args: string[]): string => sh('ip', ['-n', ns, ...args]);
  // The bridge as LAB.md builds it: no STP, no forwarding delay.
  ipn(srv, 'link', 'add', 'br0', 'type', 'bridge');
  ipn(srv, 'link', 'set', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
  ipn(srv, 'addr', 'add', '10.91.1.1/24', 'dev', 'br0');
  ipn(srv, 'link', 'set', 'br0', 'up');
  L.link({ ns: srv, ifname: 's0' }, { ns: peer, ifname: 'a0', cidr: '10.91.1.2/24' });
  ipn(srv, 'link', 'set', 's0', 'master', 'br0');
  L.link({ ns: srv, ifname: 's1', cidr: '10.91.2.1/24' }, { ns: peer, ifname: 'b0', cidr: '10.91.2.2/24' });
  // 802.1Q needs the kernel's 8021q support (CONFIG_VLAN_8021Q). The VM kernels of our build and CI
  // machines lack it, so there the VLAN case cannot run and is skipped with that reason; the same
  // isolation is proven above between the bridge and the veth, which are netdevs like a VLAN.
  let noVlan: string | false = false;
  try {
    L.vlan(srv, 's1', 10, '10.91.3.1/24');
    L.vlan(peer, 'b0', 10, '10.91.3.2/24');
  } catch (err) {
    if (!/Unknown device type/.test((err as Error).message)) throw err;
    noVlan = 'this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q): the VLAN sub-interface cases cannot run here';
  }
  L.link({ ns: srv, ifname: 'm1', cidr: '192.0.2.1/24' }, { ns: peer, ifname: 'm0', cidr: '192.0.2.2/24' });

  const macOf = (ns: string, ifname: string): string => (JSON.parse(ipn(ns, '-j', 'link', 'show', ifname)) as { address: string }[])[0]!.address;
  const peerSend = (dev: string, dest: string, port: number, srcPort: number, ...messages: string[]): void => {
    L.exec(peer, 'python3', [PEER, 'send', dev, dest, String(port), String(srcPort), ...messages]);
  };
  const peerProcess = (...args: string[]): JsonLines => new JsonLines(L.spawn(peer, 'python3', [PEER, ...args]), `peer ${args.join(' ')}`);

  const child = new SocketChild(spawn('ip', ['netns', 'exec', srv, process.execPath, '--expose-gc', '--import', 'tsx', CHILD], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] }), 'socket child');
  t.teardown(() => { child.child.kill('SIGKILL'); });

  const ifindex: Record<string, number> = {};
  const listeners: Record<string, JsonLines> = {};

  t.before(async () => {
    await child.waitFor((e) => e.event === 'ready', 'the socket child to start', 30_000);
    for (const dev of ['br0', 's1', 'm1', 'lo', ...(noVlan ? [] : ['s1.10'])]) ifindex[dev] = (await child.ok('ifindex', { ifname: dev })).ifindex as number;
    // DHCP-style listeners on the peer side, one per device, on the client port.
    for (const dev of ['a0', 'b0', 'm0', ...(noVlan ? [] : ['b0.10'])]) {
      listeners[dev] = peerProcess('listen', dev, '68');
      await listeners[dev].waitFor((e) => e.event === 'ready', `listener on ${dev}`);
    }
    for (const [name, device] of [['br0', 'br0'], ['s1', 's1'], ...(noVlan ? [] : [['v10', 's1.10']])] as const) {
      await child.ok('open', { name, options: { port: 67, device, broadcast: true } });
    }
    // The bridge needs a moment before its port forwards: probe until a unicast gets through.
    for (let i = 0; ; i++) {
      const mark = child.events.length;
      peerSend('a0', '10.91.1.1', 67, 0, 'probe');
      const got = await child.waitFor((e) => e.event === 'datagram' && e.data === 'probe', 'a probe through the bridge', 500, mark).catch(() => undefined);
      if (got !== undefined) break;
      if (i > 40) throw new Error('the bridge never forwarded');
    }
    await sleep(100);
  });

  t.test('(a)(b) each device-bound socket on 0.0.0.0:67 hears only its device, with ifindex and addresses', async (t) => {
    const mark = child.events.length;
    peerSend('a0', '255.255.255.255', 67, 68, 'bc-a0');
    peerSend('b0', '255.255.255.255', 67, 68, 'bc-b0');
    peerSend('m0', '255.255.255.255', 67, 68, 'bc-m0');
    peerSend('a0', '10.91.1.1', 67, 68, 'uc-a0');
    peerSend('a0', '10.91.1.255', 67, 68, 'dbc-a0');
    peerSend('b0', '10.91.2.1', 67, 68, 'uc-b0');
    if (!noVlan) {
      peerSend('b0.10', '255.255.255.255', 67, 68, 'bc-b10');
      peerSend('b0.10', '10.91.3.1', 67, 68, 'uc-b10');
    }
    const expected = [
      { socket: 'br0', data: 'bc-a0', ifindex: ifindex.br0, localAddress: '255.255.255.255', interfaceAddress: '10.91.1.1', address: '10.91.1.2' },
      { socket: 's1', data: 'bc-b0', ifindex: ifindex.s1, localAddress: '255.255.255.255', interfaceAddress: '10.91.2.1', address: '10.91.2.2' },
      { socket: 'br0', data: 'uc-a0', ifindex: ifindex.br0, localAddress: '10.91.1.1', interfaceAddress: '10.91.1.1', address: '10.91.1.2' },
      { socket: 'br0', data: 'dbc-a0', ifindex: ifindex.br0, localAddress: '10.91.1.255', interfaceAddress: '10.91.1.1', address: '10.91.1.2' },
      { socket: 's1', data: 'uc-b0', ifindex: ifindex.s1, localAddress: '10.91.2.1', interfaceAddress: '10.91.2.1', address: '10.91.2.2' },
      ...(noVlan ? [] : [
        { socket: 'v10', data: 'bc-b10', ifindex: ifindex['s1.10'], localAddress: '255.255.255.255', interfaceAddress: '10.91.3.1', address: '10.91.3.2' },
        { socket: 'v10', data: 'uc-b10', ifindex: ifindex['s1.10'], localAddress: '10.91.3.1', interfaceAddress: '10.91.3.1', address: '10.91.3.2' },
      ]),
    ];
    for (const want of expected) {
      const got = await child.waitFor((e) => e.event === 'datagram' && e.data === want.data, want.data, 5000, mark);
      t.match(got, { ...want, port: 68 }, `${want.data} reached ${want.socket} with the right interface and addresses`);
    }
    // Anything else would have arrived by now (every path is a veth in this same machine).
    await sleep(300);
    const all = child.datagrams(mark).map((e) => `${e.socket as string}:${e.data as string}`).sort();
    t.same(all, expected.map((e) => `${e.socket}:${e.data}`).sort(), 'no socket heard another device, none heard the management network, no duplicates');
    t.not(ifindex.br0, ifindex.s1);
  });

  t.test('(a) a VLAN sub-interface is a device of its own: its socket and its parent\'s never mix', { skip: noVlan }, async (t) => {
    // The traffic itself was checked above (bc-b10/uc-b10 only on v10, bc-b0/uc-b0 only on s1).
    t.not(ifindex.s1, ifindex['s1.10']);
    t.ok(ifindex['s1.10']! > 0);
  });

  t.test('(c) a broadcast sent with via.ifindex leaves on that interface only', async (t) => {
    const any = await child.ok('open', { name: 'any', options: { port: 0, broadcast: true } });
    t.ok((any.port as number) > 0, `a socket bound to no device (0.0.0.0:${any.port as number})`);
    const marks = Object.fromEntries(Object.entries(listeners).map(([dev, l]) => [dev, l.events.length]));
    t.equal((await child.ok('send', { name: 'any', data: 'reply-br0', address: '255.255.255.255', port: 68, via: { ifindex: ifindex.br0 } })).sent, true);
    if (!noVlan) t.equal((await child.ok('send', { name: 'any', data: 'reply-v10', address: '255.255.255.255', port: 68, via: { ifindex: ifindex['s1.10'] } })).sent, true);
    // A device-bound socket needs no `via`: its broadcasts leave through its device.
    t.equal((await child.ok('send', { name: 's1', data: 'reply-s1', address: '255.255.255.255', port: 68 })).sent, true);
    // The source address can be chosen too (a DNS/NTP reply must come from the address it was asked on).
    t.equal((await child.ok('send', { name: 'any', data: 'from-s1', address: '10.91.2.2', port: 68, via: { ifindex: ifindex.s1, sourceAddress: '10.91.2.1' } })).sent, true);

    t.match(await listeners.a0!.waitFor((e) => e.data === 'reply-br0', 'reply-br0 on a0', 5000, marks.a0), { address: '10.91.1.1', port: any.port });
    t.match(await listeners.b0!.waitFor((e) => e.data === 'reply-s1', 'reply-s1 on b0', 5000, marks.b0), { address: '10.91.2.1', port: 67 });
    t.match(await listeners.b0!.waitFor((e) => e.data === 'from-s1', 'from-s1 on b0', 5000, marks.b0), { address: '10.91.2.1', port: any.port });
    if (!noVlan) t.match(await listeners['b0.10']!.waitFor((e) => e.data === 'reply-v10', 'reply-v10 on b0.10', 5000, marks['b0.10']), { address: '10.91.3.1', port: any.port });
    await sleep(300);
    t.same(listeners.a0!.datagrams(marks.a0).map((e) => e.data), ['reply-br0'], 'a0 saw only the reply sent via br0');
    t.same(listeners.b0!.datagrams(marks.b0).map((e) => e.data).sort(), ['from-s1', 'reply-s1'], 'b0 saw only what was sent via s1 (not the VLAN\'s broadcast)');
    if (!noVlan) t.same(listeners['b0.10']!.datagrams(marks['b0.10']).map((e) => e.data), ['reply-v10'], 'b0.10 saw only what was sent via s1.10');
    t.same(listeners.m0!.datagrams(marks.m0), [], 'nothing reached the management network');

    const refused = await child.call('send', { name: 'any', data: 'x', address: '10.91.1.2', port: 68, via: { sourceAddress: '198.51.100.7' } });
    // ip_route_output: ENETUNREACH on current kernels, EINVAL on some older ones.
    t.match(refused, { ok: false, error: { code: 'SOCKET_SEND_FAILED', causeCode: /^(ENETUNREACH|EINVAL)$/ } }, 'a source address that is not ours is refused');
    await child.ok('open', { name: 'nobroadcast', options: { port: 0 } });
    const eacces = await child.call('send', { name: 'nobroadcast', data: 'x', address: '255.255.255.255', port: 68, via: { ifindex: ifindex.br0 } });
    t.match(eacces, { ok: false, error: { code: 'SOCKET_SEND_FAILED', causeCode: 'EACCES', message: /255\.255\.255\.255:68.*EACCES/ } }, 'broadcast without broadcast:true is EACCES');
    await child.ok('close', { name: 'nobroadcast' });
  });

  t.test('(d) port 0 binds an interface address and reports the port', async (t) => {
    const r = await child.ok('open', { name: 'tftp', options: { address: '10.91.1.1', port: 0 } });
    const port = r.port as number;
    t.ok(port >= 1024 && port <= 65535, `ephemeral port ${port}`);
    t.match(L.exec(srv, 'ss', ['-Hunl', `sport = :${port}`], { allowFail: true }), new RegExp(`10\\.91\\.1\\.1:${port}`), 'ss lists the socket on 10.91.1.1');
    const mark = child.events.length;
    peerSend('a0', '10.91.1.1', port, 0, 'to-tftp');
    t.match(await child.waitFor((e) => e.event === 'datagram' && e.data === 'to-tftp', 'to-tftp', 5000, mark), { socket: 'tftp', localAddress: '10.91.1.1', ifindex: ifindex.br0, address: '10.91.1.2' });
    await child.ok('close', { name: 'tftp' });

    const notLocal = await child.call('open', { name: 'nl', options: { address: '10.91.1.99', port: 0 } });
    t.match(notLocal, { ok: false, error: { code: 'SOCKET_OPEN_FAILED', causeCode: 'EADDRNOTAVAIL', message: /10\.91\.1\.99:0.*EADDRNOTAVAIL/ } });
    const freebind = await child.ok('open', { name: 'fb', options: { address: '10.91.1.99', port: 0, freebind: true } });
    t.ok((freebind.port as number) > 0, 'freebind binds an address not (yet) configured');
    await child.ok('close', { name: 'fb' });
  });

  t.test('(e) ENODEV and EADDRINUSE are SOCKET_OPEN_FAILED with a clear message', async (t) => {
    t.match(await child.call('open', { name: 'x', options: { port: 67, device: 'nosuch0' } }), {
      ok: false,
      error: { name: 'MetalboxError', code: 'SOCKET_OPEN_FAILED', causeCode: 'ENODEV', message: 'cannot open UDP socket 0.0.0.0:67 on nosuch0: ENODEV (no such network interface)' },
    });
    t.match(await child.call('open', { name: 'x', options: { port: 67, device: 'averyverylongname0' } }), { ok: false, error: { code: 'SOCKET_OPEN_FAILED', causeCode: 'ENODEV' } }, 'a name longer than IFNAMSIZ is ENODEV, not a bind to a truncated name');

    // Another program holds the port without SO_REUSEADDR (node:dgram's default).
    const held = await child.ok('dgram', { port: 4011 });
    t.equal(held.port, 4011);
    t.match(await child.call('open', { name: 'x', options: { port: 4011, device: 'br0' } }), {
      ok: false,
      error: { code: 'SOCKET_OPEN_FAILED', causeCode: 'EADDRINUSE', message: /0\.0\.0\.0:4011 on br0: EADDRINUSE \(the port is already in use/ },
    });
    // reuseAddress: false fails fast even against our own device socket on 67 ...
    t.match(await child.call('open', { name: 'x', options: { port: 67, device: 'br0', reuseAddress: false } }), { ok: false, error: { code: 'SOCKET_OPEN_FAILED', causeCode: 'EADDRINUSE' } });
    // ... while the default (SO_REUSEADDR, as the issue asks) lets a second socket share it.
    await child.ok('open', { name: 'dup', options: { port: 67, device: 'br0' } });
    await child.ok('close', { name: 'dup' });
    // Device-bound sockets on different devices never conflict, with or without reuse.
    await child.ok('open', { name: 'm1', options: { port: 67, device: 'm1', reuseAddress: false } });
    await child.ok('close', { name: 'm1' });
  });

  t.test('(h) arpAdd puts a neighbour entry that a unicast reply then uses', async (t) => {
    const mac = macOf(peer, 'a0');
    await child.ok('arp', { ifname: 'br0', ip: '10.91.1.50', mac });
    t.match(ipn(srv, 'neigh', 'show', '10.91.1.50', 'dev', 'br0'), new RegExp(`^10\\.91\\.1\\.50 lladdr ${mac}`), 'ip neigh shows it');
    // RFC 2131 §4.1: the OFFER goes to yiaddr at chaddr although the client does not have the address yet.
    const sniffer = peerProcess('sniff', 'a0', '68');
    await sniffer.waitFor((e) => e.event === 'ready', 'sniffer');
    await child.ok('send', { name: 'any', data: 'offer', address: '10.91.1.50', port: 68 });
    t.match(await sniffer.waitFor((e) => e.event === 'frame' && e.data === 'offer', 'the unicast offer on a0'), { dst: '10.91.1.50', dstMac: mac, src: '10.91.1.1' });
    sniffer.child.kill();
    t.match(await child.call('arp', { ifname: 'nosuch0', ip: '10.91.1.51', mac }), { ok: false, error: { code: 'SOCKET_SEND_FAILED', causeCode: 'ENODEV', message: /10\.91\.1\.51 .* on nosuch0: ENODEV/ } });
    t.match(await child.call('arp', { ifname: 'br0', ip: '10.91.1.51', mac: 'not-a-mac' }), { ok: false, error: { name: 'TypeError' } });
  });

  t.test('(f) a flood of 100k datagrams neither crashes nor blocks the event loop', async (t) => {
    const COUNT = 100_000;
    await child.ok('open', { name: 'flood', options: { port: 7000, device: 's1' }, print: false });
    const dropsOf = (ns: string, dev: string): { rx: number; tx: number } => {
      const s = (JSON.parse(ipn(ns, '-s', '-j', 'link', 'show', dev)) as { stats64: { rx: { dropped: number }; tx: { dropped: number } } }[])[0]!.stats64;
      return { rx: s.rx.dropped, tx: s.tx.dropped };
    };
    const vethBefore = dropsOf(peer, 'b0');
    const s1Before = dropsOf(srv, 's1');
    await child.ok('loop');
    const flooder = peerProcess('flood', '10.91.2.1', '7000', String(COUNT), '32');
    const done = await flooder.waitFor((e) => e.event === 'flooded', 'the flood', 60_000);
    // Let the socket drain, until its counters stop moving.
    let stats = (await child.ok('stats', { name: 'flood' })).stats as Record<string, number>;
    for (;;) {
      await sleep(200);
      const next = (await child.ok('stats', { name: 'flood' })).stats as Record<string, number>;
      if (next.received === stats.received && next.kernelDropped === stats.kernelDropped) break;
      stats = next;
    }
    const loop = await child.ok('loop');
    const vethDrops = dropsOf(peer, 'b0').tx - vethBefore.tx + dropsOf(srv, 's1').rx - s1Before.rx;
    const received = stats.received!;
    const kernelDropped = stats.kernelDropped!;
    t.comment(`flood: ${done.sent as number} sent in ${(done.seconds as number).toFixed(2)} s (${Math.round((done.sent as number) / (done.seconds as number))}/s); received ${received}, kernelDropped ${kernelDropped}, dropped on the veth ${vethDrops}; event loop: ${loop.ticks as number} ticks of a 5 ms timer, longest gap ${(loop.maxGapMs as number).toFixed(1)} ms`);
    t.equal(done.sent, COUNT, 'the peer sent them all');
    t.ok(received > 0, 'datagrams were received');
    t.equal(stats.truncated, 0);
    t.equal(stats.receiveErrors, 0);
    t.ok(received + kernelDropped <= COUNT, 'no datagram counted twice');
    // Every datagram is accounted for: delivered, dropped by the socket's full queue, or dropped by the veth.
    t.equal(received + kernelDropped + vethDrops, COUNT, 'received + kernelDropped + veth drops = sent');
    t.ok((loop.ticks as number) > 0, 'the timer kept firing');
    t.ok((loop.maxGapMs as number) < MAX_EVENT_LOOP_GAP_MS, `longest timer gap ${(loop.maxGapMs as number).toFixed(1)} ms < ${MAX_EVENT_LOOP_GAP_MS} ms`);
    // The child still answers, and the socket still works.
    const mark = child.events.length;
    await child.ok('close', { name: 'flood' });
    await child.ok('open', { name: 'after', options: { port: 7000, device: 's1' } });
    peerSend('b0', '10.91.2.1', 7000, 0, 'after-flood');
    await child.waitFor((e) => e.data === 'after-flood', 'a datagram after the flood', 5000, mark);
    await child.ok('close', { name: 'after' });
  });

  t.test('(f) a full send queue is a drop send() reports, not a wait', async (t) => {
    // A token bucket of 8 kbit/s with room for 10 MB holds every packet in the qdisc, and each one holds
    // its share of the socket's send buffer (SO_SNDBUF) until it leaves: the buffer fills within a few
    // hundred datagrams, and a blocking socket would now wait for minutes.
    ipn(srv, 'link', 'set', 'm1', 'txqueuelen', '100000');
    sh('tc', ['-n', srv, 'qdisc', 'add', 'dev', 'm1', 'root', 'tbf', 'rate', '8kbit', 'burst', '1600', 'limit', '10000000']);
    t.teardown(() => { sh('tc', ['-n', srv, 'qdisc', 'del', 'dev', 'm1', 'root'], { allowFail: true }); });
    await child.ok('open', { name: 'slow', options: { port: 0, device: 'm1' } });
    const started = Date.now();
    const r = await child.ok('blast', { name: 'slow', count: 5000, size: 1000, address: '192.0.2.2', port: 9 });
    const ms = Date.now() - started;
    t.ok((r.taken as number) > 0, `the kernel took ${r.taken as number}`);
    t.ok((r.refused as number) > 0, `and refused ${r.refused as number} (EAGAIN) once the send buffer was full`);
    t.ok(ms < 5000, `without waiting (${ms} ms for 5000 sends)`);
    t.match((await child.ok('stats', { name: 'slow' })).stats, { sent: r.taken, dropped: r.refused });
    await child.ok('close', { name: 'slow' });
  });

  t.test('(g) close twice, send after close, GC after close, and no leaks', async (t) => {
    const base = await child.ok('count');
    await child.ok('open', { name: 'g', options: { port: 0 } });
    await child.ok('close', { name: 'g' });
    await child.ok('close', { name: 'g' });
    t.match(await child.call('send', { name: 'g', data: 'x', address: '10.91.1.2', port: 68 }), { ok: false, error: { code: 'SOCKET_SEND_FAILED', message: /closed/ } }, 'send after close');
    t.match(await child.ok('stats', { name: 'g' }), { stats: { received: 0, sent: 0 } }, 'stats after close');
    await child.ok('forget', { name: 'g' });
    await child.ok('gc');
    const collected = await child.ok('count');
    t.same([collected.allocated, collected.fds], [base.allocated, base.fds], 'the closed socket was collected and freed');

    await child.ok('churn', { count: 2000 });
    await child.ok('gc');
    const after = await child.ok('count');
    t.equal(after.allocated, base.allocated, '2000 sockets opened, closed (half of them twice) and collected: none left allocated');
    t.equal(after.fds, base.fds, 'no file descriptor leaked');

    // An open socket nobody references is not collected: it keeps receiving until closed (like node:dgram).
    const orphan = await child.ok('open', { name: 'orphan', options: { port: 0, address: '10.91.1.1' } });
    await child.ok('forget', { name: 'orphan' });
    await child.ok('gc');
    const mark = child.events.length;
    peerSend('a0', '10.91.1.1', orphan.port as number, 0, 'to-orphan');
    await child.waitFor((e) => e.socket === 'orphan' && e.data === 'to-orphan', 'the unreferenced open socket still receives', 5000, mark);
    t.equal((await child.ok('count')).allocated, (base.allocated as number) + 1, 'and is still allocated');
  });

  t.test('the child exits cleanly', async (t) => {
    // The orphan from (g) would keep the child alive: `exit` ends it with process.exit.
    await child.ok('exit');
    const code = await new Promise<number | null>((resolve) => {
      if (child.child.exitCode !== null) resolve(child.child.exitCode);
      else child.child.once('exit', (c) => resolve(c));
    });
    t.equal(code, 0);
  });
}
