// kill -9 in the middle of a stream of DORA exchanges, twice, then let the clients finish: no address was
// ACKed to two machines, and every ACKed lease is in the store with its machine.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, canBuildLab } from '../helpers/netns.ts';
import { ROOT } from '../helpers/process.ts';
import { openLevelStore } from '../../src/store/level-store.ts';

const CLIENTS = 300;

const lab = canBuildLab();
if (!lab.ok) {
  t.fail(`cannot build the lab: ${lab.why}`);
} else {
  t.test('dhcp survives kill -9 without losing or duplicating a lease', { timeout: 240_000 }, async (t) => {
    const L = new Lab('mbk');
    const dir = mkdtempSync(join(tmpdir(), 'mbx-dhcp-crash-'));
    t.teardown(() => { L.destroy(); rmSync(dir, { recursive: true, force: true }); });
    const srv = L.ns('srv');
    const cl = L.ns('cl');
    // The load client needs an address to send broadcasts from; it is outside the dynamic range.
    L.link({ ns: srv, ifname: 'p0', cidr: '10.77.0.1/22' }, { ns: cl, ifname: 'q0', cidr: '10.77.3.254/22' });
    // A limited broadcast (255.255.255.255) needs a route out of the client namespace.
    L.exec(cl, 'ip', ['route', 'add', 'default', 'dev', 'q0']);
    const config = join(dir, 'metalbox.yaml');
    writeFileSync(config, `
stateDir: ${join(dir, 'state')}
http: { listen: "0.0.0.0:5240" }
interfaces: [p0]
logLevel: warn
subnets:
  - cidr: 10.77.0.0/22
    dynamicRanges: ["10.77.0.10-10.77.2.250"]
dns: { enabled: false }
ntp: { enabled: false }
`);
    const serve = () => {
      const child = L.spawn(srv, process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', config], { ...process.env, NOTIFY_SOCKET: '' });
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
      child.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
      return { child, output: () => out };
    };

    let mbx = serve();
    const load = L.spawn(cl, process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/dhcp-load.ts'), '--clients', String(CLIENTS), '--seconds', '150', '--concurrency', '40']);
    let acks = 0;
    let buf = '';
    const acked = new Map<string, string>(); // mac -> ip, as the clients saw their ACKs
    const conflicts: string[] = [];
    let summary: { done: number; total: number } | undefined;
    const finished = new Promise<void>((resolve) => load.on('exit', () => resolve()));
    load.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = JSON.parse(buf.slice(0, nl)) as { mac?: string; ip?: string; summary?: boolean; done: number; total: number };
        buf = buf.slice(nl + 1);
        if (line.summary) { summary = line; continue; }
        acks++;
        for (const [mac, ip] of acked) if (ip === line.ip && mac !== line.mac) conflicts.push(`${line.ip} ACKed to ${mac} and ${line.mac}`);
        acked.set(line.mac!, line.ip!);
      }
    });
    let loadErr = '';
    load.stderr!.setEncoding('utf8').on('data', (d: string) => { loadErr += d; });

    const waitAcks = async (n: number) => {
      for (let i = 0; i < 600 && acks < n; i++) await new Promise((r) => setTimeout(r, 100));
    };
    for (const at of [60, 160]) {
      await waitAcks(at);
      t.ok(acks >= at, `${acks} ACKs before kill -9`);
      mbx.child.kill('SIGKILL');
      await new Promise((r) => mbx.child.once('exit', r));
      mbx = serve();
    }
    await finished;
    t.ok(summary, `load client finished: ${loadErr}`);
    t.equal(summary?.done, CLIENTS, 'every client got a lease in the end');
    t.same(conflicts, [], 'no address ACKed to two machines');
    const exited = new Promise((r) => mbx.child.once('exit', r));
    mbx.child.kill('SIGTERM');
    await exited;
    t.notMatch(mbx.output(), /"level":"(error|fatal)"/);

    const store = await openLevelStore(join(dir, 'state'));
    t.teardown(() => store.close());
    let missing = 0;
    for (const [mac, ip] of acked) {
      const rec = await store.leases.get(ip);
      if (!rec || rec.mac !== mac || rec.state !== 'bound') { missing++; t.fail(`ACKed ${ip} to ${mac}, store has ${JSON.stringify(rec)}`); }
    }
    t.equal(missing, 0, `all ${acked.size} ACKed leases are in the store`);
    const owners = new Map<string, string>();
    for await (const [ip, rec] of store.leases.entries()) {
      if (rec.state !== 'bound') continue;
      const other = owners.get(rec.mac);
      t.notOk(other, `${rec.mac} holds one address (${ip}${other ? ` and ${other}` : ''})`);
      owners.set(rec.mac, ip);
    }
  });
}
