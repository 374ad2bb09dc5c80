// TFTP throughput and server CPU per MiB: metalbox, tftpd-hpa and atftpd side by side in one run, driven by
// the same atftp clients (PEERS.md). Not a timed test; run it by hand, as root:
//
//   node --import tsx test/bench/tftp.ts [--clients 50] [--rounds 2] [--repeat 20] [--big-mib 30]
//                                        [--servers metalbox,tftpd-hpa,atftpd] [--modes blksize,window8] [--workloads small,big]
//
// Peers (Debian packages): atftp (the client), atftpd, and tftpd-hpa, which conflicts with atftpd as a
// package: the script takes in.tftpd from PATH, else unpacks tftpd-hpa's .deb (apt-get download +
// dpkg-deb -x) into .cache/bench/tftpd-hpa and runs it from there.
//
// Topology, in two namespaces this script creates and removes (also on failure and Ctrl-C):
//   ns srv  s0 10.55.0.1/24: the server under test, pinned to CPU 1
//   ns cli  c0 10.55.0.2/24: the clients, pinned to CPU 0
//
// Workloads, each with --clients concurrent atftp processes:
//   undionly.kpxe  the iPXE loader, each client fetching it --repeat times in a row (one fetch is too short
//                  to time against process start-up)
//   big            a --big-mib MiB file, once per client
// Client modes: `blksize` (--option "blksize 1468"), `window8` (plus --option "windowsize 8"; tftpd-hpa does
// not know windowsize and answers lockstep), `plain` (tftp-hpa's client: no options, 512-byte blocks).
//
// Fairness: every server gets the same clients, CPUs, files and order of workloads; rounds alternate the
// order of the servers so the machine's drift hits all of them. MiB/s is payload bytes over the wall time
// from the first client's start to the last client's end. CPU is the server's over that interval, read from
// a cgroup v1 cpuacct group per server so that atftpd's threads and tftpd-hpa's forked children (which the
// kernel reaps for it) count; from /proc when there is no cgroup.
// metalbox runs with tftp.maxTransfersPerClient raised to 1000: every client here shares one address.
// Before measuring, each server serves one fetch of each file (warm page cache, metalbox's JIT).
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Lab, canBuildLab } from '../helpers/netns.ts';
import { ROOT } from '../helpers/process.ts';
import { formatTable, median, onCleanup, scratchRoot } from '../helpers/bench-util.ts';

const SERVER_IP = '10.55.0.1';
const CLIENT_IP = '10.55.0.2';
const SERVER_CPU = '1';
const CLIENT_CPU = '0';
const SERVERS = ['metalbox', 'tftpd-hpa', 'atftpd'] as const;
type ServerName = (typeof SERVERS)[number];
const MODES = { plain: [], blksize: ['--option', 'blksize 1468'], window8: ['--option', 'blksize 1468', '--option', 'windowsize 8'] } as const;
type Mode = keyof typeof MODES;

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '50' },
    rounds: { type: 'string', default: '2' },
    repeat: { type: 'string', default: '20' },
    'big-mib': { type: 'string', default: '30' },
    servers: { type: 'string', default: SERVERS.join(',') },
    modes: { type: 'string', default: 'blksize,window8' },
    workloads: { type: 'string', default: 'small,big' },
  },
});
const CLIENTS = Number(values.clients);
const ROUNDS = Number(values.rounds);
const REPEAT = Number(values.repeat);
const BIG_MIB = Number(values['big-mib']);
const servers = values.servers!.split(',') as ServerName[];
const modes = values.modes!.split(',') as Mode[];
for (const s of servers) if (!SERVERS.includes(s)) throw new Error(`unknown server ${s}`);
for (const m of modes) if (!(m in MODES)) throw new Error(`unknown mode ${m}`);

const lab = canBuildLab();
if (!lab.ok) throw new Error(`cannot build the lab: ${lab.why}`);
for (const tool of ['atftp', 'atftpd', 'taskset']) {
  if (!commandExists(tool)) throw new Error(`${tool} not found: apt-get install atftp atftpd util-linux`);
}
if (modes.includes('plain') && !commandExists('tftp')) throw new Error('tftp not found: apt-get install tftp-hpa');

function commandExists(cmd: string): boolean {
  try { execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }); return true; } catch { return false; }
}

/** in.tftpd from PATH, else from tftpd-hpa's .deb unpacked under .cache/bench (it conflicts with atftpd as a package). */
function inTftpd(): string {
  // atftpd's package also installs an in.tftpd (a symlink to atftpd): only tftp-hpa's will do.
  const isHpa = (bin: string) => { try { return execFileSync(bin, ['-V'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).includes('tftp-hpa'); } catch { return false; } };
  if (commandExists('in.tftpd') && isHpa('in.tftpd')) return 'in.tftpd';
  const dir = join(ROOT, '.cache/bench/tftpd-hpa');
  const bin = join(dir, 'usr/sbin/in.tftpd');
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    execFileSync('apt-get', ['download', 'tftpd-hpa'], { cwd: dir, stdio: 'inherit' });
    const deb = execFileSync('sh', ['-c', 'ls tftpd-hpa_*.deb | head -1'], { cwd: dir, encoding: 'utf8' }).trim();
    execFileSync('dpkg-deb', ['-x', join(dir, deb), dir]);
  }
  if (!isHpa(bin)) throw new Error(`${bin} is not tftp-hpa's in.tftpd`);
  return bin;
}

/** utime + stime + cutime + cstime (proc(5) fields 14-17), seconds; USER_HZ is 100 on Linux. */
function procCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100;
}

const CPUACCT = '/sys/fs/cgroup/cpuacct';

/**
 * Where a server's CPU time is read. tftpd-hpa forks a child per transfer and lets the kernel reap them
 * (SIGCHLD ignored), so their time never reaches its cutime/cstime: each server runs in a cgroup of its
 * own (cgroup v1 cpuacct, which children join), and cpuacct.usage counts them all. Without cgroups, /proc.
 */
function cpuMeter(pid: number, name: string): { seconds: () => number; close: () => void } {
  const dir = join(CPUACCT, `mbx-bench-tftp-${process.pid}-${name}`);
  try {
    mkdirSync(dir);
    writeFileSync(join(dir, 'cgroup.procs'), String(pid));
    return {
      seconds: () => Number(readFileSync(join(dir, 'cpuacct.usage'), 'utf8')) / 1e9,
      close: () => { try { rmdirSync(dir); } catch { /* a task is still in it */ } },
    };
  } catch {
    console.log(`(no cgroup v1 cpuacct: ${name}'s CPU from /proc; forked children are missed)`);
    return { seconds: () => procCpuSeconds(pid), close: () => undefined };
  }
}

async function main(): Promise<void> {
  const L = new Lab('mbb');
  const work = mkdtempSync(join(await scratchRoot(), 'mbx-bench-tftp-'));
  let current: ChildProcess | undefined;
  const cleanup = onCleanup(() => {
    if (current && current.exitCode === null) current.kill('SIGKILL');
    L.destroy();
    rmSync(work, { recursive: true, force: true });
    // A killed server may take a moment to leave its cgroup: retry the rmdir for up to a second.
    for (const name of SERVERS) {
      const dir = join(CPUACCT, `mbx-bench-tftp-${process.pid}-${name}`);
      for (let i = 0; i < 20 && existsSync(dir); i++) {
        try { rmdirSync(dir); } catch { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50); }
      }
    }
  });
  try {
    const srv = L.ns('srv');
    const cli = L.ns('cli');
    L.link({ ns: srv, ifname: 's0', cidr: `${SERVER_IP}/24` }, { ns: cli, ifname: 'c0', cidr: `${CLIENT_IP}/24` });

    const root = join(work, 'root');
    mkdirSync(root);
    const undionly = '/usr/lib/ipxe/undionly.kpxe';
    if (existsSync(undionly)) copyFileSync(undionly, join(root, 'undionly.kpxe'));
    else writeFileSync(join(root, 'undionly.kpxe'), randomBytes(70_000));
    writeFileSync(join(root, 'big.bin'), randomBytes(BIG_MIB * 1024 * 1024));
    // tftpd-hpa drops to nobody and chroots into the root.
    for (const p of [work, root, join(root, 'undionly.kpxe'), join(root, 'big.bin')]) chmodSync(p, p === work || p === root ? 0o755 : 0o644);
    const sizes = { 'undionly.kpxe': readFileSync(join(root, 'undionly.kpxe')).length, 'big.bin': BIG_MIB * 1024 * 1024 };
    const hpaBin = servers.includes('tftpd-hpa') ? inTftpd() : '';

    const config = join(work, 'metalbox.yaml');
    writeFileSync(config, `
  stateDir: ${join(work, 'state')}
  http: { listen: "${SERVER_IP}:5240" }
  interfaces: [s0]
  logLevel: info
  dhcp: { enabled: false }
  dns: { enabled: false }
  ntp: { enabled: false }
  tftp: { root: ${root}, maxTransfers: 1000, maxTransfersPerClient: 1000, rateLimit: { perSecond: 0 } }
  `);

    async function startServer(name: ServerName): Promise<ChildProcess> {
      let child: ChildProcess;
      if (name === 'metalbox') {
        // METALBOX_BENCH_NODE_ARGS: extra node flags for metalbox, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
      const nodeArgs = (process.env.METALBOX_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
      child = L.spawn(srv, 'taskset', ['-c', SERVER_CPU, process.execPath, ...nodeArgs, '--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', config], { ...process.env, NOTIFY_SOCKET: '' });
        let out = '';
        child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
        child.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
        for (let i = 0; i < 300 && !out.includes('"msg":"metalbox ready"'); i++) {
          if (child.exitCode !== null) throw new Error(`metalbox exited:\n${out}`);
          await sleep(100);
        }
        if (!out.includes('"msg":"metalbox ready"')) throw new Error(`metalbox did not start:\n${out}`);
      } else if (name === 'tftpd-hpa') {
        child = L.spawn(srv, 'taskset', ['-c', SERVER_CPU, hpaBin, '-L', '-a', `${SERVER_IP}:69`, '-s', '-u', 'nobody', root]);
      } else {
        child = L.spawn(srv, 'taskset', ['-c', SERVER_CPU, 'atftpd', '--daemon', '--no-fork', '--port', '69', '--bind-address', SERVER_IP,
          '--user', 'root', '--group', 'root', '-m', '1000', '--logfile', '/dev/null', root]);
      }
      // METALBOX_BENCH_LOG=FILE keeps the servers' output (else it is read and dropped).
      if (process.env.METALBOX_BENCH_LOG) {
        const log = createWriteStream(process.env.METALBOX_BENCH_LOG, { flags: 'a' });
        child.stdout?.pipe(log);
        child.stderr?.pipe(log);
      } else {
        child.stdout?.resume();
        child.stderr?.resume();
      }
      current = child;
      // Ready when a fetch works; it also warms the page cache (and metalbox's JIT) for every server alike.
      for (let i = 0; i < 50; i++) {
        if ((await clients('undionly.kpxe', 'blksize', 1, 1)).failed === 0) break;
        await sleep(200);
      }
      if ((await clients('big.bin', 'window8', 1, 1)).failed !== 0) throw new Error(`${name} did not serve the warm-up fetch`);
      return child;
    }

    async function stopServer(child: ChildProcess): Promise<void> {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
      current = undefined;
    }

    /** `n` clients at once, each fetching `file` `repeat` times; returns wall seconds and failed fetches. */
    // Asynchronous: the servers' output pipes must keep draining while the clients run (a full pipe would
  // block metalbox's synchronous log writes and stall it).
  async function clients(file: string, mode: Mode, n: number, repeat: number): Promise<{ seconds: number; failed: number }> {
      const fetch = mode === 'plain'
        ? `tftp -m binary ${SERVER_IP} -c get ${file} /dev/null 2>&1 | grep -q . && exit 1`
        : `atftp ${MODES[mode].map((a) => `'${a}'`).join(' ')} -g -r ${file} -l /dev/null ${SERVER_IP} >/dev/null 2>&1 || exit 1`;
      const script = `
  pids=""
  for i in $(seq ${n}); do
    ( for k in $(seq ${repeat}); do ${fetch}; done ) &
    pids="$pids $!"
  done
  failed=0
  for p in $pids; do wait $p || failed=$((failed+1)); done
  echo $failed`;
      const t0 = process.hrtime.bigint();
      const out = await new Promise<string>((resolve) => {
      execFile('ip', ['netns', 'exec', cli, 'taskset', '-c', CLIENT_CPU, 'sh', '-c', script], { encoding: 'utf8' }, (_err, stdout) => resolve(stdout));
    });
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      return { seconds, failed: out.trim() === '' ? n : Number(out.trim()) };
    }

    const workloads = ([
      { name: 'small', file: 'undionly.kpxe', repeat: REPEAT, label: `undionly.kpxe x${REPEAT}` },
      { name: 'big', file: 'big.bin', repeat: 1, label: `${BIG_MIB} MiB` },
    ] as const).filter((w) => values.workloads!.split(',').includes(w.name));
    // results[workload|mode][server] = { mibs: [], cpuPerMiB: [] }
    const results = new Map<string, Map<ServerName, { mibs: number[]; cpu: number[]; failed: number }>>();

    console.log(`TFTP bench: ${CLIENTS} clients, ${ROUNDS} round(s), servers ${servers.join(', ')}, modes ${modes.join(', ')}`);
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? servers : [...servers].reverse();
      for (const name of order) {
        const child = await startServer(name);
        const meter = cpuMeter(child.pid!, name);
        for (const w of workloads) {
          for (const mode of modes) {
            const key = `${w.label}|${mode}`;
            const c0 = meter.seconds();
            const r = await clients(w.file, mode, CLIENTS, w.repeat);
            const cpu = meter.seconds() - c0;
            const ok = CLIENTS - r.failed;
            const mib = (sizes[w.file] * w.repeat * ok) / (1024 * 1024);
            const row = results.get(key) ?? new Map();
            results.set(key, row);
            const cell = row.get(name) ?? { mibs: [], cpu: [], failed: 0 };
            row.set(name, cell);
            cell.mibs.push(mib / r.seconds);
            cell.cpu.push(mib > 0 ? (cpu * 1000) / mib : Number.NaN);
            cell.failed += r.failed;
            console.log(`round ${round + 1} ${name.padEnd(9)} ${key.padEnd(28)} ${(mib / r.seconds).toFixed(1).padStart(7)} MiB/s  ${r.seconds.toFixed(2)} s  cpu ${cpu.toFixed(2)} s (${((cpu * 1000) / mib).toFixed(1)} ms/MiB)  load ${loadavg()[0]!.toFixed(1)}${r.failed ? `  FAILED ${r.failed}` : ''}`);
          }
        }
        await stopServer(child);
        meter.close();
      }
    }

    const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');
    const header = ['workload | client', ...servers.map((s) => `${s} MiB/s`), ...servers.filter((s) => s !== 'metalbox').map((s) => `mbx/${s}`), ...servers.map((s) => `${s} CPU ms/MiB`)];
    const rows: string[][] = [];
    for (const [key, row] of results) {
      const mibs = servers.map((s) => median(row.get(s)?.mibs ?? []));
      const cpus = servers.map((s) => median(row.get(s)?.cpu ?? []));
      const mbx = mibs[servers.indexOf('metalbox')] ?? Number.NaN;
      const failed = servers.map((s) => row.get(s)?.failed ?? 0);
      rows.push([
        key.replace('|', ' | '),
        ...mibs.map((m, i) => `${fmt(m)}${failed[i] ? ` (${failed[i]} failed)` : ''}`),
        ...servers.filter((s) => s !== 'metalbox').map((s) => fmt(mbx / mibs[servers.indexOf(s)]!, 2)),
        ...cpus.map((c) => fmt(c, 1)),
      ]);
    }
    console.log(`\nmedian of ${ROUNDS} round(s); server on CPU ${SERVER_CPU}, clients on CPU ${CLIENT_CPU}\n`);
    console.log(formatTable(header, rows));
  } finally {
    cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
