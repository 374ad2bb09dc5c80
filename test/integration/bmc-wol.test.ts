// Wake-on-LAN (src/bmc/wol.ts) through `metalbox bmc`, as an operator runs it, inside network namespaces:
// the magic packet must leave by the provisioning interface only, as a limited broadcast, with exactly the
// 102 bytes a NIC looks for. The far end is test/helpers/udp-peer.py: an AF_PACKET sniffer on each link (it
// sees the frame whatever its destination) and an ordinary UDP socket on port 9.
//
//   ns srv (metalbox)                        ns peer
//   prov0 10.93.1.1/24 (provisioning)  <->   p0 10.93.1.2/24
//   mgmt0 10.93.2.1/24 (default route) <->   m0 10.93.2.2/24
import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildNative } from '../../image/build-binary.ts';
import { canBuildLab, Lab, sh } from '../helpers/netns.ts';
import { ROOT, run, type Running } from '../helpers/process.ts';

const PEER = join(ROOT, 'test', 'helpers', 'udp-peer.py');
const MAC = '52:54:00:12:34:56';

interface Frame { event: string; dstMac?: string; src?: string; dst?: string; sport?: number; data?: string; address?: string; port?: number }

/** A udp-peer.py process: its JSON lines, in order. */
class Peer {
  readonly lines: Frame[] = [];
  private waiters: (() => void)[] = [];
  constructor(readonly child: ChildProcess) {
    readline.createInterface({ input: child.stdout! }).on('line', (l) => {
      try { this.lines.push(JSON.parse(l) as Frame); } catch { /* not ours */ }
      for (const w of this.waiters.splice(0)) w();
    });
  }
  async waitFor(pred: (f: Frame[]) => boolean, what: string, ms = 10_000): Promise<void> {
    const end = Date.now() + ms;
    while (!pred(this.lines)) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(this.lines)}`);
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 100); });
    }
  }
  frames(): Frame[] { return this.lines.filter((l) => l.event === 'frame' || l.event === 'datagram'); }
}

function expectedPacket(mac: string): Buffer {
  const b = Buffer.from(mac.replace(/:/g, ''), 'hex');
  return Buffer.concat([Buffer.alloc(6, 0xff), ...Array.from({ length: 16 }, () => b)]);
}

const lab = canBuildLab();
const python = sh('python3', ['--version'], { allowFail: true }) !== '';
if (!lab.ok || !python) {
  t.fail(`cannot run: ${!lab.ok ? lab.why : 'python3 (the peer) is not installed'}`);
} else {
  buildNative();
  t.test('magic packets leave by the provisioning interface, as 102 exact bytes', { timeout: 120_000 }, async (t) => {
    const L = new Lab('mbw');
    const dir = mkdtempSync(join(tmpdir(), 'mbx-wol-'));
    t.teardown(() => { L.destroy(); rmSync(dir, { recursive: true, force: true }); });
    process.once('exit', () => L.destroy());
    const srv = L.ns('srv');
    const peer = L.ns('peer');
    L.link({ ns: srv, ifname: 'prov0', cidr: '10.93.1.1/24' }, { ns: peer, ifname: 'p0', cidr: '10.93.1.2/24' });
    L.link({ ns: srv, ifname: 'mgmt0', cidr: '10.93.2.1/24' }, { ns: peer, ifname: 'm0', cidr: '10.93.2.2/24' });
    // Without IP_PKTINFO a broadcast would follow this route: out of the management interface.
    L.exec(srv, 'ip', ['route', 'add', 'default', 'via', '10.93.2.2']);

    const sniffProv = new Peer(L.spawn(peer, 'python3', [PEER, 'sniff', 'p0', '9']));
    const sniffMgmt = new Peer(L.spawn(peer, 'python3', [PEER, 'sniff', 'm0', '9']));
    const listener = new Peer(L.spawn(peer, 'python3', [PEER, 'listen', 'p0', '9']));
    const sniff7 = new Peer(L.spawn(peer, 'python3', [PEER, 'sniff', 'p0', '7']));
    for (const p of [sniffProv, sniffMgmt, listener, sniff7]) await p.waitFor((l) => l.some((x) => x.event === 'ready'), 'peer ready');

    // The provisioning interface comes from `interfaces` (HTTP must then listen on a reachable address).
    const config = join(dir, 'metalbox.yaml');
    writeFileSync(config, `stateDir: ${join(dir, 'state')}\ninterfaces: [prov0]\nhttp: { listen: "10.93.1.1:15240" }\nbmc: { pollSeconds: 0 }\n`);
    const cli = async (args: string[]): Promise<Running & { code: number | string }> => {
      const r = run('ip', ['netns', 'exec', srv, process.execPath, '--import', 'tsx', join(ROOT, 'src/main.ts'), ...args, '--config', config]);
      return Object.assign(r, { code: await r.exited });
    };

    const add = await cli(['bmc', 'add', '--driver', 'wol', '--address', MAC.toUpperCase(), '--machine', 'node1']);
    t.equal(add.code, 0, add.stderr());
    t.match(add.stdout(), `BMC node1 added (wol mac ${MAC}, machine node1)`);
    const on = await cli(['bmc', 'power', 'node1', 'on']);
    t.equal(on.code, 0, on.stderr());
    t.match(on.stdout(), /BMC node1: power on: done: power on done \(was unknown/);

    await sniffProv.waitFor((l) => l.filter((x) => x.event === 'frame').length >= 3, 'three copies on the provisioning link');
    const want = expectedPacket(MAC);
    t.equal(want.length, 102);
    for (const f of sniffProv.frames()) {
      t.equal(f.dstMac, 'ff:ff:ff:ff:ff:ff', 'an Ethernet broadcast');
      t.equal(f.dst, '255.255.255.255', 'a limited broadcast');
      t.equal(f.src, '10.93.1.1', 'from the provisioning interface address');
      t.same(Buffer.from(f.data ?? '', 'latin1'), want, 'exactly the magic packet');
    }
    await listener.waitFor((l) => l.some((x) => x.event === 'datagram'), 'a UDP socket on port 9 to get it');
    t.same(Buffer.from(listener.frames()[0]!.data ?? '', 'latin1'), want);

    // Only actions Wake-on-LAN can do; status is unknown.
    const off = await cli(['bmc', 'power', 'node1', 'off']);
    t.equal(off.code, 1);
    t.match(off.stderr(), 'metalbox: BMC_UNSUPPORTED: Wake-on-LAN cannot power off: it can only power a machine on');
    const status = await cli(['bmc', 'power', 'node1', 'status']);
    t.equal(status.stdout(), 'unknown\n');

    // A BMC's own interface and port, through a running metalbox (its control socket).
    const edit = await cli(['bmc', 'edit', 'node1', '--interface', 'prov0', '--port', '7']);
    t.equal(edit.code, 0, edit.stderr());
    const serve = run('ip', ['netns', 'exec', srv, process.execPath, '--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', config, '--log-level', 'debug']);
    t.teardown(() => { serve.child.kill('SIGKILL'); });
    await serve.waitFor(/metalbox ready/, 60_000);
    const onServed = await cli(['bmc', 'power', 'node1', 'on']);
    t.equal(onServed.code, 0, onServed.stderr());
    await sniff7.waitFor((l) => l.filter((x) => x.event === 'frame').length >= 3, 'three copies to port 7');
    for (const f of sniff7.frames()) t.same(Buffer.from(f.data ?? '', 'latin1'), want);
    t.match(serve.stdout(), /"svc":"bmc".*"bmc":"node1".*power on/, 'the server did it and logged it');
    serve.child.kill('SIGTERM');
    t.equal(await serve.exited, 0);

    await sleep(300); // anything late would have arrived by now
    t.equal(sniffMgmt.frames().length, 0, 'nothing left by the management interface');
    t.equal(sniffProv.frames().length, 3, 'the second round went to port 7 only');
  });
}

