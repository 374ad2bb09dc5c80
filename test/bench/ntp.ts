// NTP requests per second and server CPU per request: metalbox's NTP service and chronyd side by side in one
// run, driven by the same load generator (PEERS.md). Not a timed test; run it by hand, as root:
//
//   node --import tsx test/bench/ntp.ts [--seconds 5] [--rounds 2] [--window 64]
//
// Peers (Debian packages): chrony. The load generator is test/bench/ntp-load.c, built here with cc -O2: it keeps
// --window requests in flight with sendmmsg/recvmmsg and counts the replies that echo its transmit timestamps.
//
// Everything runs on loopback: chronyd -x (never touches the clock) with "local stratum 2", "allow all",
// 127.0.0.1:PORT; metalbox's NTP service (test/helpers/ntp-child.ts) on device lo, with ntp.localStratum 2 and
// rate limiting off (every request comes from one address). Servers are pinned to CPU 1, the load generator to
// CPU 0 (taskset), and they run back to back, alternating, --rounds times each, so the machine's drift hits
// both. CPU per request is the server's utime + stime (/proc/PID/stat) over the run divided by the replies.
// Each server gets one second of load before measuring (metalbox's JIT). The machine is shared: each line also
// says how long the server waited for its CPU (run queue, /proc/PID/task/*/schedstat) and how busy other
// processes kept that CPU, so a round spoilt by a neighbour shows as such.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { cpuTimes, formatTable, median, onCleanup, procSample, runQueueSeconds } from '../helpers/bench-util.ts';
import { ROOT } from '../helpers/process.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '2' },
    window: { type: 'string', default: '64' },
  },
});
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const WINDOW = Number(values.window);
const SERVER_CPU = '1';
const LOAD_CPU = '0';
const CHRONY_PORT = 12_300 + (process.pid % 500);
const METALBOX_PORT = CHRONY_PORT + 500;

if (process.getuid?.() !== 0) throw new Error('bench/ntp: run as root (binds port below 1024 is not needed, but chronyd -u root is)');
const dir = mkdtempSync(join(tmpdir(), 'mbx-bench-ntp-'));
const children: ChildProcess[] = [];
onCleanup(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const load = join(dir, 'ntp-load');
execFileSync('cc', ['-O2', '-o', load, join(ROOT, 'test/bench/ntp-load.c')]);

interface Server { name: string; pid: number; port: number; stop(): Promise<void> }

async function startChrony(): Promise<Server> {
  const conf = join(dir, 'chrony.conf');
  writeFileSync(conf, `local stratum 2\nallow all\nport ${CHRONY_PORT}\nbindaddress 127.0.0.1\ncmdport 0\nbindcmdaddress /\npidfile ${join(dir, 'chrony.pid')}\n`);
  const child = spawn('taskset', ['-c', SERVER_CPU, 'chronyd', '-x', '-d', '-u', 'root', '-f', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { log += d; });
  await sleep(1000);
  if (child.exitCode !== null) throw new Error(`chronyd exited: ${log}`);
  return { name: 'chrony', pid: child.pid!, port: CHRONY_PORT, stop: () => stop(child) };
}

async function startMetalbox(): Promise<Server> {
  const yaml = `http: { listen: "0.0.0.0:5240" }\ninterfaces: [lo]\nlogLevel: warn\nntp: { port: ${METALBOX_PORT}, localStratum: 2, rateLimit: { perSecond: 0 } }\n`;
  const child = spawn('taskset', ['-c', SERVER_CPU, process.execPath, '--import', 'tsx', join(ROOT, 'test/helpers/ntp-child.ts'), yaml], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { log += d; });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`metalbox ntp did not start: ${log}`)), 60_000);
    createInterface({ input: child.stdout! }).once('line', () => { clearTimeout(timer); resolve(); });
  });
  return { name: 'metalbox', pid: child.pid!, port: METALBOX_PORT, stop: () => stop(child) };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(5000)]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

function drive(port: number, seconds: number): { sent: number; received: number; kod: number; lost: number; seconds: number } {
  const out = execFileSync('taskset', ['-c', LOAD_CPU, load, '127.0.0.1', String(port), String(seconds), String(WINDOW)], { encoding: 'utf8' });
  return JSON.parse(out) as { sent: number; received: number; kod: number; lost: number; seconds: number };
}

interface Result { server: string; rate: number; cpuUs: number; cpuShare: number; lost: number; rssMiB: number; waitShare: number; othersShare: number }

async function measure(start: () => Promise<Server>): Promise<Result> {
  const s = await start();
  try {
    drive(s.port, 1); // warm-up
    const before = procSample(s.pid)!;
    const waitBefore = runQueueSeconds(s.pid);
    const cpuBefore = cpuTimes()[Number(SERVER_CPU)]!;
    const r = drive(s.port, SECONDS);
    const cpuAfter = cpuTimes()[Number(SERVER_CPU)]!;
    const waitAfter = runQueueSeconds(s.pid);
    const after = procSample(s.pid)!;
    const cpu = after.cpuSeconds - before.cpuSeconds;
    if (r.received === 0) throw new Error(`${s.name}: no replies`);
    return {
      server: s.name, rate: r.received / r.seconds, cpuUs: (cpu / r.received) * 1e6, cpuShare: cpu / r.seconds, lost: r.lost / r.sent, rssMiB: after.peakRssKiB / 1024,
      waitShare: (waitAfter - waitBefore) / r.seconds, othersShare: Math.max(0, cpuAfter.busy - cpuBefore.busy - cpu) / r.seconds,
    };
  } finally {
    await s.stop();
  }
}

const results: Result[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 === 0 ? [startChrony, startMetalbox] : [startMetalbox, startChrony];
  for (const start of order) {
    const r = await measure(start);
    results.push(r);
    console.log(`round ${round + 1}: ${r.server.padEnd(8)} ${Math.round(r.rate)} req/s, ${r.cpuUs.toFixed(2)} µs CPU/request, server CPU ${(r.cpuShare * 100).toFixed(0)}%, waited for CPU ${(r.waitShare * 100).toFixed(0)}%, others on its CPU ${(r.othersShare * 100).toFixed(0)}%, ${(r.lost * 100).toFixed(2)}% unanswered in 20 ms`);
  }
}

const by = (name: string) => results.filter((r) => r.server === name);
const row = (name: string): string[] => {
  const rs = by(name);
  const pct = (pick: (r: Result) => number, digits = 0) => `${(median(rs.map(pick)) * 100).toFixed(digits)}%`;
  return [name, String(Math.round(median(rs.map((r) => r.rate)))), median(rs.map((r) => r.cpuUs)).toFixed(2), pct((r) => r.cpuShare), pct((r) => r.waitShare), pct((r) => r.othersShare), pct((r) => r.lost, 2), median(rs.map((r) => r.rssMiB)).toFixed(0)];
};
console.log(`\nNTP, ${SECONDS} s x ${ROUNDS} rounds, window ${WINDOW}, server on CPU ${SERVER_CPU}, load on CPU ${LOAD_CPU} (medians)`);
console.log(formatTable(['server', 'req/s', 'µs CPU/req', 'server CPU', 'waited', 'others', 'unanswered', 'peak RSS MiB'], [row('chrony'), row('metalbox')]));
const ratio = median(by('metalbox').map((r) => r.rate)) / median(by('chrony').map((r) => r.rate));
console.log(`\nmetalbox / chrony request rate: ${ratio.toFixed(2)} (goal: at least 0.5)`);
