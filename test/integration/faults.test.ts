// Faults of the state store seen from the outside, with real clients in network namespaces:
// - the state disk fills up while metalbox serves: it keeps answering what needs no write (DNS, leases already
//   held), refuses new leases with a clear log line and metric, and hands them out again once there is room,
//   with no restart;
// - a damaged LevelDB: metalbox refuses to start with a clear message, and `metalbox restore` of the last backup
//   brings it back with its leases.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, canBuildLab } from '../helpers/netns.ts';
import { ROOT } from '../helpers/process.ts';
import { openLevelStore } from '../../src/store/level-store.ts';

const lab = canBuildLab();

interface Served { ready: Promise<void>; exited: Promise<number | null>; stop(): Promise<void>; output(): string }

/** One namespace pair: metalbox on p0 (10.77.0.1/24) in `srv`, clients on q0 in `cl`. */
function rack(tag: string, dir: string, stateDir: string, extra = '') {
  const L = new Lab(tag);
  const srv = L.ns('srv');
  const cl = L.ns('cl');
  // The client side has an address outside the range, for dig; udhcpc's script configures nothing.
  L.link({ ns: srv, ifname: 'p0', cidr: '10.77.0.1/24' }, { ns: cl, ifname: 'q0', cidr: '10.77.0.250/24' });
  const config = join(dir, 'metalbox.yaml');
  writeFileSync(config, `
stateDir: ${stateDir}
http: { listen: "0.0.0.0:5240" }
https: { listen: "127.0.0.1:5443" }
interfaces: [p0]
logLevel: info
domain: rack.test
subnets:
  - cidr: 10.77.0.0/24
    dynamicRanges: ["10.77.0.10-10.77.0.99"]
dns: { enabled: true }
ntp: { enabled: false }
${extra}`);
  const script = join(dir, 'udhcpc.sh');
  writeFileSync(script, '#!/bin/sh\n[ "$1" = bound ] && echo "LEASE ip=$ip"\nexit 0\n');
  chmodSync(script, 0o755);
  /** udhcpc with `mac` on q0: the address it was ACKed, or undefined when it got none (4 tries, 1 s apart). */
  const udhcpc = (mac: string): string | undefined => {
    L.exec(cl, 'ip', ['link', 'set', 'q0', 'address', mac]);
    const out = L.exec(cl, 'busybox', ['udhcpc', '-i', 'q0', '-n', '-q', '-f', '-t', '4', '-T', '1', '-A', '1', '-s', script], { allowFail: true });
    return /LEASE ip=(\S+)/.exec(out)?.[1];
  };
  const serve = (): Served => {
    const child = L.spawn(srv, process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', config], { ...process.env, NOTIFY_SOCKET: '' });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`metalbox did not start:\n${out}`)), 60_000);
      child.stdout!.on('data', () => { if (out.includes('"msg":"metalbox ready"')) { clearTimeout(timer); resolve(); } });
      void exited.then(() => { clearTimeout(timer); reject(new Error(`metalbox exited:\n${out}`)); });
    });
    ready.catch(() => undefined);
    return {
      ready, exited, output: () => out,
      async stop() { child.kill('SIGTERM'); await exited; },
    };
  };
  /** GET http://127.0.0.1:5240/metrics from inside the server's namespace: value of one sample. */
  const metric = (name: string): number | undefined => {
    const text = L.exec(srv, process.execPath, ['-e', "fetch('http://127.0.0.1:5240/metrics').then(r => r.text()).then(t => process.stdout.write(t))"]);
    const m = new RegExp(`^${name.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  };
  const cli = (args: string[]) => execFileSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), ...args, '--config', config], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return { L, srv, cl, config, udhcpc, serve, metric, cli };
}

async function until(what: string, check: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

if (!lab.ok) {
  t.fail(`cannot build the lab: ${lab.why}`);
} else {
  t.test('the state disk fills up while serving: no new lease, DNS still answers; room again: leases again, no restart', { timeout: 240_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mbx-faults-full-'));
    const disk = join(dir, 'disk');
    execFileSync('mkdir', ['-p', disk]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m,mode=0700', 'tmpfs', disk]);
    const R = rack('mbf', dir, join(disk, 'state'), 'store: { reserveMiB: 8 }\n');
    t.teardown(() => {
      R.L.destroy();
      execFileSync('umount', ['-l', disk]);
      rmSync(dir, { recursive: true, force: true });
    });
    const mbx = R.serve();
    t.teardown(() => mbx.stop());
    await mbx.ready;

    const a = R.udhcpc('52:54:00:fa:00:01');
    t.match(a, /^10\.77\.0\.\d+$/, `a lease before the disk fills: ${a}`);
    t.equal(R.metric('metalbox_store_writable'), 1);

    // Fill the disk to 4 MiB free, under the 8 MiB reserve.
    const free = Number(execFileSync('stat', ['-f', '-c', '%a %S', disk], { encoding: 'utf8' }).trim().split(' ').map(Number).reduce((x, y) => x * y));
    execFileSync('fallocate', ['-l', String(free - (4 << 20)), join(disk, 'filler')]);
    await until('metalbox_store_writable is 0', () => R.metric('metalbox_store_writable') === 0);
    // Log lines may reach the pipe a moment after the metric changes: wait for them.
    const logged = (text: string) => until(`"${text}" is logged`, () => mbx.output().includes(text), 10_000).then(() => true, () => false);
    t.ok(await logged('state disk full: writes refused'), 'a clear log line');
    const free1 = R.metric('metalbox_store_free_bytes')!;
    t.ok(free1 > 0 && free1 < 8 << 20, `free bytes in /metrics under the reserve (${free1})`);

    t.equal(R.udhcpc('52:54:00:fa:00:02'), undefined, 'a new client gets no lease while writes are refused');
    await logged('lease not written: no reply sent');
    const refusal = mbx.output().split('\n').find((l) => l.includes('lease not written: no reply sent')) ?? '';
    t.match(refusal, /"code":"STORE_DISK_FULL"/, `each refusal is logged with its code: ${refusal.slice(0, 300)}`);
    t.ok((R.metric('metalbox_dhcp_dropped_total{reason="persist-failed"}') ?? 0) >= 1, 'and counted');
    t.ok((R.metric('metalbox_store_refused_writes_total') ?? 0) >= 1, 'the store counts what it refused');
    const soa = R.L.exec(R.cl, 'dig', ['+short', '+time=2', '+tries=2', '@10.77.0.1', 'rack.test', 'SOA']);
    t.match(soa, /rack\.test\./, `DNS still answers: ${soa.trim()}`);

    rmSync(join(disk, 'filler'));
    await until('metalbox_store_writable is 1 again', () => R.metric('metalbox_store_writable') === 1);
    t.ok(await logged('state disk has room again: writes accepted'), 'the recovery is logged');
    const b = R.udhcpc('52:54:00:fa:00:02');
    t.match(b, /^10\.77\.0\.\d+$/, `the same client gets a lease once there is room, without a restart: ${b}`);
    t.not(b, a, 'not the address of the other client');
    t.equal(R.udhcpc('52:54:00:fa:00:01'), a, 'the first client keeps its address');

    await mbx.stop();
    const store = await openLevelStore(join(disk, 'state'));
    t.teardown(() => store.close());
    t.equal((await store.leases.get(a!))?.mac, '52:54:00:fa:00:01', 'the first lease is on disk');
    t.equal((await store.leases.get(b!))?.mac, '52:54:00:fa:00:02', 'the lease taken after the recovery is on disk');
  });

  t.test('a damaged LevelDB: metalbox refuses to start and says why; restore of the last backup brings it back', { timeout: 240_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mbx-faults-corrupt-'));
    const stateDir = join(dir, 'state');
    const R = rack('mbc', dir, stateDir);
    t.teardown(() => { R.L.destroy(); rmSync(dir, { recursive: true, force: true }); });
    let mbx = R.serve();
    await mbx.ready;
    const a = R.udhcpc('52:54:00:fc:00:01');
    t.match(a, /^10\.77\.0\.\d+$/, `a lease: ${a}`);
    const backup = join(dir, 'last.mbxbackup');
    R.cli(['backup', backup]); // while serving, through the control socket
    await mbx.stop();

    // Damage the middle of LevelDB's newest log: the records already acknowledged (not a torn tail).
    const db = join(stateDir, 'db');
    const log = readdirSync(db).filter((f) => f.endsWith('.log')).sort().at(-1)!;
    const size = statSync(join(db, log)).size;
    t.ok(size > 200, `the log holds the records (${size} bytes)`);
    const fd = openSync(join(db, log), 'r+');
    writeSync(fd, Buffer.alloc(16, 0xa5), 0, 16, 64);
    closeSync(fd);

    mbx = R.serve();
    const code = await mbx.exited;
    t.not(code, 0, 'metalbox exits');
    t.match(mbx.output(), /STORE_CORRUPT/, 'with the error code');
    t.match(mbx.output(), new RegExp(`${db.replace(/[/.]/g, (c) => `\\${c}`)}`), 'naming the damaged store');
    await mbx.ready.then(() => t.fail('it must not start'), () => t.pass('it never became ready'));

    // The operator keeps the damaged files aside and restores the last backup into the emptied state dir.
    renameSync(stateDir, join(dir, 'state.damaged'));
    const restored = R.cli(['restore', backup]);
    t.match(restored, /restore/i, restored.trim());
    mbx = R.serve();
    await mbx.ready;
    t.teardown(() => mbx.stop());
    t.equal(R.udhcpc('52:54:00:fc:00:01'), a, 'the client gets its address back from the restored lease');
    t.equal(R.udhcpc('52:54:00:fc:00:02') === a, false, 'and nobody else gets it');
  });
}
