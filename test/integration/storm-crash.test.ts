// kill -9 of metalbox in the middle of a boot storm, twice, each time restarted on the same state dir: the
// machines (test/helpers/storm-client.ts: DHCP as PXE, TFTP, DHCP as iPXE, HTTP script, kernel and initrd,
// enlistment) retry as firmware and the agent do, and every one of them enlists in the end. Afterwards, from
// the store: no address was given to two machines, every lease a machine saw ACKed before a kill is still
// bound to it, and every enlistment answered 2xx before a kill is still its machine.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, canBuildLab } from '../helpers/netns.ts';
import { ROOT, runSource } from '../helpers/process.ts';
import { stormLines, type StormEvent, type SummaryEvent } from '../helpers/storm-client.ts';
import { openLevelStore } from '../../src/store/level-store.ts';

const MACHINES = 120;
/** Kill when this many machines have enlisted (of MACHINES): the rest are in every phase of their boot. */
const KILL_AT = [15, 70];
/** Machines power on over this long, so that the first kill also finds some in DHCP and some not started yet. */
const SPREAD_MS = 3000;
const SERVER_IP = '10.89.0.1';

const lab = canBuildLab();
if (!lab.ok) {
  t.fail(`cannot build the lab: ${lab.why}`);
} else {
  t.test('a boot storm survives kill -9 of metalbox: every machine enlists, nothing acknowledged is lost', { timeout: 240_000 }, async (t) => {
    const started = performance.now();
    const L = new Lab('mbsc');
    const dir = mkdtempSync(join(tmpdir(), 'mbx-storm-crash-'));
    t.teardown(() => { L.destroy(); rmSync(dir, { recursive: true, force: true }); });
    const srv = L.ns('srv');
    const cl = L.ns('cl');
    L.link({ ns: srv, ifname: 'p0', cidr: `${SERVER_IP}/16` }, { ns: cl, ifname: 'q0', cidr: '10.89.255.254/16' });
    // A limited broadcast (255.255.255.255) needs a route out of the client namespace.
    L.exec(cl, 'ip', ['route', 'add', 'default', 'dev', 'q0']);

    // Small boot files (1 MiB kernel, 2 MiB initrd of random bytes): the storm is about the kill, not throughput.
    const kernel = join(dir, 'kernel');
    const initrd = join(dir, 'initrd');
    writeFileSync(kernel, randomBytes(1024 * 1024));
    writeFileSync(initrd, randomBytes(2 * 1024 * 1024));
    const stateDir = join(dir, 'state');
    const config = join(dir, 'metalbox.yaml');
    writeFileSync(config, `
stateDir: ${stateDir}
http: { listen: "0.0.0.0:5240" }
https: { listen: "127.0.0.1:0" }
interfaces: [p0]
logLevel: warn
subnets:
  - cidr: 10.89.0.0/16
    dynamicRanges: ["10.89.1.0-10.89.3.255"]
boot: { ephemeralImage: storm }
dns: { enabled: false }
ntp: { enabled: false }
`);
    const env = { ...process.env, NOTIFY_SOCKET: '', METALBOX_RUNTIME_DIR: join(dir, 'run') };
    const add = runSource(['images', 'add', 'storm', '--kernel', kernel, '--initrd', initrd, '--config', config], { env });
    t.equal(await add.exited, 0, `image registered ${add.stderr()}`);

    const serve = () => {
      const child = L.spawn(srv, process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', config], env);
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
      child.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
      return { child, output: () => out };
    };
    let mbx = serve();
    const outputs: (() => string)[] = [mbx.output];
    // The storm starts once metalbox serves DHCP, TFTP and HTTP (at log level warn it says nothing when ready).
    const listening = () => L.exec(srv, 'ss', ['-Hlnptu'], { allowFail: true });
    let ready = false;
    for (let i = 0; i < 600 && !ready && mbx.child.exitCode === null; i++) {
      const s = listening();
      ready = [/:67\s/, /:69\s/, /:5240\s/].every((re) => re.test(s));
      if (!ready) await new Promise((r) => setTimeout(r, 100));
    }
    t.ok(ready, `metalbox serves DHCP, TFTP and HTTP ${ready ? '' : mbx.output()}`);

    // Firmware-like retries, shortened (DHCP 1, 2, 4, 8 s; a failed boot reboots after 1 s) so the test stays short;
    // power-on spread over SPREAD_MS.
    const storm = L.spawn(cl, process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/storm-client.ts'), '--machines', String(MACHINES),
      '--interface', 'q0', '--dhcp-retry', 'fast', '--reboot-delay-ms', '1000', '--deadline-s', '150', '--spread-ms', String(SPREAD_MS)]);
    /** Every address each MAC was ACKed, in order, as the machines saw it. */
    const acked = new Map<string, string[]>();
    /** Which MAC each address was ACKed to. */
    const owner = new Map<string, string>();
    const conflicts: string[] = [];
    const enlisted = new Map<string, string>();
    let summary: SummaryEvent | undefined;
    const errors: string[] = [];
    storm.stdout!.setEncoding('utf8').on('data', stormLines((e: StormEvent) => {
      if (e.ev === 'lease') {
        const seen = owner.get(e.ip);
        if (seen !== undefined && seen !== e.mac) conflicts.push(`${e.ip} ACKed to ${seen} and ${e.mac}`);
        owner.set(e.ip, e.mac);
        acked.set(e.mac, [...(acked.get(e.mac) ?? []), e.ip]);
      } else if (e.ev === 'enlisted') {
        const before = enlisted.get(e.mac);
        if (before !== undefined && before !== e.machineId) conflicts.push(`${e.mac} enlisted as ${before} and as ${e.machineId}`);
        enlisted.set(e.mac, e.machineId);
      } else if (e.ev === 'summary') {
        summary = e;
      } else if (e.ev === 'error') {
        errors.push(`${e.phase} ${e.mac}: ${e.message}`);
      }
    }));
    let stormErr = '';
    storm.stderr!.setEncoding('utf8').on('data', (d: string) => { stormErr += d; });
    const finished = new Promise<void>((resolve) => storm.on('exit', () => resolve()));

    /** What the machines had been told before each kill: leases (last address per MAC) and enlistments. */
    const snapshots: { leases: Map<string, string>; enlisted: Map<string, string> }[] = [];
    for (const at of KILL_AT) {
      for (let i = 0; i < 6000 && enlisted.size < at && summary === undefined; i++) await new Promise((r) => setTimeout(r, 20));
      t.ok(enlisted.size >= at && enlisted.size < MACHINES, `${enlisted.size} of ${MACHINES} machines enlisted, ${acked.size} with leases, before kill -9`);
      if (at === KILL_AT[0]) t.ok(acked.size < MACHINES, 'the first kill comes while machines are still in their first DHCP');
      snapshots.push({
        leases: new Map([...acked].map(([mac, ips]) => [mac, ips[ips.length - 1]!])),
        enlisted: new Map(enlisted),
      });
      mbx.child.kill('SIGKILL');
      await new Promise((r) => mbx.child.once('exit', r));
      mbx = serve();
      outputs.push(mbx.output);
    }
    await finished;
    t.ok(summary, `the storm client finished${stormErr ? `: ${stormErr.slice(0, 2000)}` : ''}`);
    t.equal(summary?.done, MACHINES, `every machine enlisted in the end (failed: ${summary?.failed.join(', ')}; first errors: ${errors.slice(0, 5).join('; ')})`);
    t.equal(enlisted.size, MACHINES, 'every machine was answered 2xx for its enlistment');
    t.same(conflicts, [], 'no address ACKed to two machines, no machine enlisted as two');
    t.comment(`machines saw ${errors.length} failed attempts over the kills (first: ${errors.slice(0, 3).join('; ')})`);

    const exited = new Promise((r) => mbx.child.once('exit', r));
    mbx.child.kill('SIGTERM');
    await exited;
    for (const out of outputs) t.notMatch(out(), /"level":"(error|fatal)"/, 'no error logged by any of the three processes');

    const store = await openLevelStore(stateDir);
    t.teardown(() => store.close());
    // Leases: one bound address per MAC, each the one its machine was last ACKed, and every ACK before a kill kept.
    const boundOf = new Map<string, string>();
    for await (const [ip, rec] of store.leases.entries()) {
      if (rec.state !== 'bound') continue;
      const other = boundOf.get(rec.mac);
      if (other !== undefined) t.fail(`${rec.mac} holds two addresses in the store: ${other} and ${ip}`);
      boundOf.set(rec.mac, ip);
    }
    let wrong = 0;
    for (const [mac, ips] of acked) {
      if (boundOf.get(mac) !== ips[ips.length - 1]) { wrong++; t.fail(`${mac} was last ACKed ${ips[ips.length - 1]}, the store binds it ${boundOf.get(mac)}`); }
      if (new Set(ips).size !== 1) { wrong++; t.fail(`${mac} was ACKed several addresses: ${ips.join(', ')} (a lease was lost)`); }
    }
    t.equal(wrong, 0, `each of the ${acked.size} machines kept one address, the one it was ACKed`);
    for (const [k, snap] of snapshots.entries()) {
      let lost = 0;
      for (const [mac, ip] of snap.leases) {
        const rec = await store.leases.get(ip);
        if (!rec || rec.mac !== mac || rec.state !== 'bound') { lost++; t.fail(`ACKed ${ip} to ${mac} before kill ${k + 1}; the store has ${JSON.stringify(rec)}`); }
      }
      t.equal(lost, 0, `all ${snap.leases.size} leases ACKed before kill ${k + 1} are in the store`);
      let gone = 0;
      for (const [mac, id] of snap.enlisted) {
        const m = await store.machines.get(id);
        if (!m || !m.macs.includes(mac)) { gone++; t.fail(`machine ${id} (${mac}) enlisted before kill ${k + 1}; the store has ${JSON.stringify(m)}`); }
      }
      t.equal(gone, 0, `all ${snap.enlisted.size} machines enlisted before kill ${k + 1} are in the store`);
    }
    // Machines: exactly one per MAC, the one its enlistment named.
    let machines = 0;
    for await (const [id, m] of store.machines.entries()) {
      machines++;
      for (const mac of m.macs) if (enlisted.get(mac) !== id) t.fail(`machine ${id} has ${mac}, which enlisted as ${enlisted.get(mac)}`);
    }
    t.equal(machines, MACHINES, 'one machine per booted MAC, no duplicates');
    t.comment(`wall time ${((performance.now() - started) / 1000).toFixed(1)} s`);
  });
}
