// BMC power-status polls per second across many BMCs: metalbox's IPMI client (one RMCP+ session per BMC,
// kept open, at most --concurrency polls in flight) against what MAAS does (one `ipmitool -I lanplus -C 3
// ... chassis power status` process per poll, the same number at once), in the same run, on the same
// simulated BMCs. Not a timed test; run it by hand, as root:
//
//   node --import tsx test/bench/bmc.ts [--bmcs 50] [--seconds 15] [--concurrency 16] [--rounds 1]
//
// Peers (Debian packages): openipmi (ipmi_sim, the BMCs) and ipmitool.
//
// Topology (test/helpers/ipmi-sim.ts, created and removed by this script, also on failure and Ctrl-C):
//   ns cli  c0 10.93.0.1/24      the poller: a child process of this script (--child metalbox|ipmitool)
//   ns bmc  b0 10.93.0.10-59/24  --bmcs ipmi_sim processes, one address each
// The BMCs run without a chassis_control script, so ipmi_sim answers Get Chassis Status itself instead of
// forking a shell per poll (which would make this a benchmark of ipmi_sim).
//
// Fairness and what is measured:
// - Pinning: every ipmi_sim on CPU 1, the poller (and every ipmitool it starts) on CPU 0.
// - Same BMCs, same concurrency cap, same duration; rounds alternate the order of the two clients.
// - metalbox: sessions are opened before the clock starts (what the BMC service keeps between polls);
//   CPU per poll is the poller process's own CPU (process.cpuUsage: every thread) over the timed window.
// - ipmitool: each poll is a new process that opens a session (Get Channel Auth Caps, Open Session, RAKP
//   1-4, Set Session Privilege), probes (ipmitool 1.8.19 sends three extension commands), asks Get Chassis
//   Status and closes the session. CPU per poll is the CPU of the ipmitool processes: the launcher (a Node
//   child that spawns them) runs in a cgroup v1 cpuacct group, which its children join and which keeps
//   counting processes that have exited; the launcher's own CPU (process.cpuUsage) is subtracted and
//   reported separately ("launcher"), as MAAS's own Python would be. `ip netns exec` hides /sys/fs/cgroup
//   from the child, so the parent places it in the group.
// - BMC CPU: utime+stime of all ipmi_sim processes over the window, per poll: the work each client makes
//   the BMCs do (a real BMC is a small ARM core that also runs everything else).
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createIpmiDriver, type IpmiDriver } from '../../src/bmc/ipmi/index.ts';
import { formatTable, median, onCleanup, percentile, procSample } from '../helpers/bench-util.ts';
import { canBuildLab, sh } from '../helpers/netns.ts';
import { haveIpmiTools, SIM_USERS, startIpmiSims } from '../helpers/ipmi-sim.ts';
import { ROOT } from '../helpers/process.ts';

const { values } = parseArgs({
  options: {
    bmcs: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '15' },
    concurrency: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '1' },
    child: { type: 'string' },
    config: { type: 'string' },
  },
});

interface ChildConfig {
  addresses: string[];
  user: string;
  password: string;
  seconds: number;
  concurrency: number;
}

interface ChildResult {
  polls: number;
  errors: number;
  firstError?: string;
  wallSeconds: number;
  /** The poller process's own CPU over the window. */
  cpuSeconds: number;
  /** The poller process's CPU over its whole life (to subtract from its cgroup's). */
  lifetimeCpuSeconds: number;
  /** ipmitool processes' CPU (cgroup less the launcher), filled in by the parent. */
  childCpuSeconds?: number;
  p50Ms: number;
  p99Ms: number;
  /** Session set-up before the clock started (metalbox). */
  warmupMs?: number;
}

/** Runs `poll(i)` for BMC i with at most `concurrency` in flight and never two on one BMC, for `seconds`. */
async function pollLoop(n: number, seconds: number, concurrency: number, poll: (i: number) => Promise<void>): Promise<{ polls: number; errors: number; firstError?: string; wallSeconds: number; latencies: number[] }> {
  const busy = new Array<boolean>(n).fill(false);
  const latencies: number[] = [];
  let cursor = 0;
  let polls = 0;
  let errors = 0;
  let firstError: string | undefined;
  const started = performance.now();
  const end = started + seconds * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      let i = cursor++ % n;
      while (busy[i]) i = cursor++ % n;
      busy[i] = true;
      const t0 = performance.now();
      try {
        await poll(i);
        polls++;
        latencies.push(performance.now() - t0);
      } catch (err) {
        errors++;
        firstError ??= (err as Error).message;
      } finally {
        busy[i] = false;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return { polls, errors, ...(firstError ? { firstError } : {}), wallSeconds: (performance.now() - started) / 1000, latencies: latencies.sort((a, b) => a - b) };
}

async function childMetalbox(c: ChildConfig): Promise<ChildResult> {
  const drivers: IpmiDriver[] = c.addresses.map((address) => createIpmiDriver({ driver: 'ipmi', address, username: c.user, password: c.password }));
  const w0 = performance.now();
  await Promise.all(drivers.map((d) => d.powerStatus()));
  const warmupMs = performance.now() - w0;
  const cpu0 = process.cpuUsage();
  const r = await pollLoop(drivers.length, c.seconds, c.concurrency, async (i) => { await drivers[i]!.powerStatus(); });
  const cpu = process.cpuUsage(cpu0);
  await Promise.all(drivers.map((d) => d.close()));
  return { polls: r.polls, errors: r.errors, ...(r.firstError ? { firstError: r.firstError } : {}), wallSeconds: r.wallSeconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, lifetimeCpuSeconds: lifetimeCpu(), p50Ms: percentile(r.latencies, 50), p99Ms: percentile(r.latencies, 99), warmupMs };
}

function lifetimeCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function childIpmitool(c: ChildConfig): Promise<ChildResult> {
  const run = (address: string): Promise<void> => new Promise((resolve, reject) => {
    const p = spawn('ipmitool', ['-I', 'lanplus', '-C', '3', '-H', address, '-U', c.user, '-E', 'chassis', 'power', 'status'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IPMI_PASSWORD: c.password } });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    p.stderr.setEncoding('utf8').on('data', (d: string) => { out += d; });
    p.on('close', (code) => (code === 0 && /Chassis Power is/.test(out) ? resolve() : reject(new Error(`ipmitool exited ${code}: ${out.trim()}`))));
  });
  const cpu0 = process.cpuUsage();
  const r = await pollLoop(c.addresses.length, c.seconds, c.concurrency, (i) => run(c.addresses[i]!));
  const cpu = process.cpuUsage(cpu0);
  return { polls: r.polls, errors: r.errors, ...(r.firstError ? { firstError: r.firstError } : {}), wallSeconds: r.wallSeconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, lifetimeCpuSeconds: lifetimeCpu(), p50Ms: percentile(r.latencies, 50), p99Ms: percentile(r.latencies, 99) };
}

if (values.child !== undefined) {
  const config = JSON.parse(values.config ?? '{}') as ChildConfig;
  const result = values.child === 'metalbox' ? await childMetalbox(config) : await childIpmitool(config);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

// --- the orchestrator ---------------------------------------------------------------------------------------

const bmcCount = Number(values.bmcs);
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);
const rounds = Number(values.rounds);
if (!Number.isInteger(bmcCount) || bmcCount < 1 || bmcCount > 200 || !(seconds > 0) || !Number.isInteger(concurrency) || concurrency < 1 || !Number.isInteger(rounds) || rounds < 1) {
  throw new TypeError('usage: bmc.ts [--bmcs 1-200] [--seconds S] [--concurrency C] [--rounds R]');
}
const lab = canBuildLab();
if (!lab.ok) throw new Error(lab.why);
const tools = haveIpmiTools();
if (!tools.ok) throw new Error(tools.why);

const CGROUP = `/sys/fs/cgroup/cpuacct/mbx-bench-bmc-${process.pid}`;
const sims = await startIpmiSims({ count: bmcCount, tag: 'mbxbb', chassisControl: false });
const cleanup = onCleanup(() => {
  sims.stop();
  for (let i = 0; i < 20 && existsSync(CGROUP); i++) {
    try { rmdirSync(CGROUP); } catch { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50); }
  }
});

try {
  let cgroup: string | undefined = CGROUP;
  try { mkdirSync(CGROUP); } catch { cgroup = undefined; console.log('(no cgroup v1 cpuacct: ipmitool CPU per poll not measured)'); }
  const pids = sims.bmcs.map((b) => b.pid()!);
  for (const pid of pids) sh('taskset', ['-p', '-c', '1', String(pid)]);
  const bmcCpu = (): number => pids.reduce((s, pid) => s + (procSample(pid)?.cpuSeconds ?? 0), 0);
  const admin = SIM_USERS.admin;
  const config: ChildConfig = { addresses: sims.bmcs.map((b) => b.address), user: admin.name, password: admin.password, seconds, concurrency };
  const cgroupCpu = (): number => (cgroup ? Number(readFileSync(join(cgroup, 'cpuacct.usage'), 'utf8')) / 1e9 : Number.NaN);

  const runChild = async (mode: 'metalbox' | 'ipmitool'): Promise<ChildResult & { bmcCpuSeconds: number }> => {
    const before = bmcCpu();
    const child = spawn('ip', ['netns', 'exec', sims.clientNs, 'taskset', '-c', '0', process.execPath, '--import', 'tsx', join(ROOT, 'test/bench/bmc.ts'), '--child', mode, '--config', JSON.stringify(config)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    // The same pid becomes taskset and then node (exec): in the group before it can start any ipmitool.
    const group0 = cgroupCpu();
    if (mode === 'ipmitool' && cgroup) writeFileSync(join(cgroup, 'cgroup.procs'), String(child.pid));
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    if (code !== 0) throw new Error(`${mode} poller exited ${code}: ${out}`);
    const r = JSON.parse(out.trim().split('\n').pop()!) as ChildResult;
    if (mode === 'ipmitool') r.childCpuSeconds = cgroupCpu() - group0 - r.lifetimeCpuSeconds;
    // The BMC CPU includes metalbox's session set-up (before its clock): small, and shown with the run.
    return { ...r, bmcCpuSeconds: bmcCpu() - before };
  };

  console.log(`${bmcCount} ipmi_sim BMCs, ${seconds} s per client per round, at most ${concurrency} polls in flight, ${rounds} round(s); BMCs on CPU 1, pollers on CPU 0`);
  const results: Record<'metalbox' | 'ipmitool', (ChildResult & { bmcCpuSeconds: number })[]> = { metalbox: [], ipmitool: [] };
  for (let round = 0; round < rounds; round++) {
    const order: ('metalbox' | 'ipmitool')[] = round % 2 === 0 ? ['metalbox', 'ipmitool'] : ['ipmitool', 'metalbox'];
    for (const mode of order) {
      const r = await runChild(mode);
      results[mode].push(r);
      const rate = r.polls / r.wallSeconds;
      console.log(`round ${round + 1} ${mode}: ${r.polls} polls in ${r.wallSeconds.toFixed(1)} s = ${rate.toFixed(1)}/s, errors ${r.errors}${r.firstError ? ` (${r.firstError})` : ''}, p50 ${r.p50Ms.toFixed(1)} ms, p99 ${r.p99Ms.toFixed(1)} ms${r.warmupMs ? `, ${bmcCount} sessions opened in ${r.warmupMs.toFixed(0)} ms` : ''}`);
    }
  }

  const summary = (mode: 'metalbox' | 'ipmitool') => {
    const rs = results[mode];
    const rate = median(rs.map((r) => r.polls / r.wallSeconds));
    const ms = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');
    const clientCpu = median(rs.map((r) => (mode === 'metalbox' ? r.cpuSeconds : r.childCpuSeconds ?? Number.NaN) / r.polls * 1000));
    const launcher = mode === 'ipmitool' ? median(rs.map((r) => r.cpuSeconds / r.polls * 1000)) : Number.NaN;
    const bmc = median(rs.map((r) => r.bmcCpuSeconds / r.polls * 1000));
    return { rate, clientCpu, launcher, bmc, p50: median(rs.map((r) => r.p50Ms)), p99: median(rs.map((r) => r.p99Ms)), errors: rs.reduce((s, r) => s + r.errors, 0), cells: [ms(clientCpu), ms(launcher), ms(bmc)] };
  };
  const m = summary('metalbox');
  const i = summary('ipmitool');
  console.log('');
  console.log(formatTable(
    ['client', 'polls/s', 'p50 ms', 'p99 ms', 'errors', 'client CPU ms/poll', 'launcher CPU ms/poll', 'BMC CPU ms/poll'],
    [
      ['metalbox (sessions kept open)', m.rate.toFixed(1), m.p50.toFixed(1), m.p99.toFixed(1), String(m.errors), ...m.cells],
      ['ipmitool process per poll', i.rate.toFixed(1), i.p50.toFixed(1), i.p99.toFixed(1), String(i.errors), ...i.cells],
    ],
  ));
  console.log('');
  console.log(`metalbox / ipmitool: ${(m.rate / i.rate).toFixed(1)}x the polls per second, ${(i.clientCpu / m.clientCpu).toFixed(1)}x less client CPU per poll, ${(i.bmc / m.bmc).toFixed(1)}x less BMC CPU per poll`);
  writeFileSync(join(sims.dir, 'done'), '');
} finally {
  cleanup();
}
