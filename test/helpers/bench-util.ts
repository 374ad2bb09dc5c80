// Helpers for the benchmarks in test/bench (PEERS.md): a server's CPU time, peak memory and run-queue wait read
// from /proc, how busy each CPU was (the machine is shared), the kernel's UDP counters of a namespace,
// percentiles and medians, a plain-text table, a scratch directory on a real disk, and a cleanup that runs
// however the run ends (normal exit, an exception, Ctrl-C).
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

let clockTicks: number | undefined;

/** USER_HZ, the unit of utime/stime in /proc/PID/stat (proc(5)); 100 on every Linux we run on. */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    clockTicks = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return clockTicks;
}

export interface ProcSample {
  /** utime + stime of every thread of the process so far, seconds (resolution 1/USER_HZ). */
  cpuSeconds: number;
  /** VmHWM: the peak resident set since the process started, KiB. */
  peakRssKiB: number;
  /** comm: the executable's name (15 bytes at most). */
  comm: string;
}

/** CPU time, peak RSS and name of a live process; undefined when it is gone. */
export function procSample(pid: number): ProcSample | undefined {
  let stat: string;
  let status: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  // proc(5): "pid (comm) state ..."; comm may hold spaces and parentheses, so split after the last ')'.
  const close = stat.lastIndexOf(')');
  const fields = stat.slice(close + 2).split(' ');
  // Fields 14 (utime) and 15 (stime), counted from 1 at pid; fields[0] here is field 3 (state).
  const ticks = Number(fields[11]) + Number(fields[12]);
  const hwm = /^VmHWM:\s+(\d+) kB/m.exec(status);
  return { cpuSeconds: ticks / ticksPerSecond(), peakRssKiB: hwm ? Number(hwm[1]) : 0, comm: stat.slice(stat.indexOf('(') + 1, close) };
}

export interface CpuTimes {
  /** user+nice+system+irq+softirq+steal, seconds. */
  busy: number;
  /** Every field, idle and iowait included: over an interval it should equal the wall time. */
  accounted: number;
}

/**
 * Each CPU's accounted time since boot (/proc/stat), indexed by CPU number. Over a run, `busy` less the
 * server's own CPU time is what other processes took from the server's CPU; wall time less `accounted` is
 * time the virtual CPU did not run at all (the host ran something else and reported no steal). On a shared
 * machine either can starve a server unseen, and a process's utime+stime still counts the second one.
 */
export function cpuTimes(): CpuTimes[] {
  const out: CpuTimes[] = [];
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(line);
    if (!m) continue;
    const f = m[2]!.trim().split(/\s+/).map(Number);
    // proc(5): user nice system idle iowait irq softirq steal guest guest_nice; guest time is inside user.
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
    const busy = user + nice + system + irq + softirq + steal;
    out[Number(m[1])] = { busy: busy / ticksPerSecond(), accounted: (busy + idle + iowait) / ticksPerSecond() };
  }
  return out;
}

/**
 * CPU seconds (user, system) per thread name of a process (/proc/PID/task/TID/stat), summed over threads of
 * the same name: where a server's time goes (main thread, libuv pool, GC helpers). Ended threads are lost.
 */
export function threadTimes(pid: number): Record<string, { user: number; system: number }> {
  const out: Record<string, { user: number; system: number }> = {};
  let tids: string[];
  try { tids = readdirSync(`/proc/${pid}/task`); } catch { return out; }
  for (const tid of tids) {
    let stat: string;
    try { stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'); } catch { continue; }
    const close = stat.lastIndexOf(')');
    const comm = tid === String(pid) ? 'main' : stat.slice(stat.indexOf('(') + 1, close).replace(/[0-9]+$/, '');
    const f = stat.slice(close + 2).split(' ');
    const t = (out[comm] ??= { user: 0, system: 0 });
    t.user += Number(f[11]) / ticksPerSecond();
    t.system += Number(f[12]) / ticksPerSecond();
  }
  return out;
}

/** The difference of two threadTimes() samples as "name u+s" text, busiest first. */
export function formatThreadTimes(after: ReturnType<typeof threadTimes>, before: ReturnType<typeof threadTimes>): string {
  return Object.entries(after)
    .map(([name, t]) => [name, t.user - (before[name]?.user ?? 0), t.system - (before[name]?.system ?? 0)] as const)
    .filter(([, u, s]) => u + s > 0.005)
    .sort((a, b) => b[1] + b[2] - a[1] - a[2])
    .map(([name, u, s]) => `${name} ${u.toFixed(2)}u+${s.toFixed(2)}s`)
    .join(', ');
}

/**
 * Seconds the process's threads have spent runnable but waiting for a CPU (/proc/PID/task/TID/schedstat,
 * second field; needs schedstats, which every kernel we run has). Threads that already ended are not counted.
 */
export function runQueueSeconds(pid: number): number {
  let ns = 0;
  let tids: string[];
  try { tids = readdirSync(`/proc/${pid}/task`); } catch { return Number.NaN; }
  for (const tid of tids) {
    try { ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[1]); } catch { /* ended */ }
  }
  return ns / 1e9;
}

/** The Udp: line of /proc/net/snmp (InDatagrams, RcvbufErrors, ...) as seen from inside a namespace. */
export function udpCounters(ns?: string): Record<string, number> {
  const text = ns
    ? execFileSync('ip', ['netns', 'exec', ns, 'cat', '/proc/net/snmp'], { encoding: 'utf8' })
    : readFileSync('/proc/net/snmp', 'utf8');
  const lines = text.split('\n').filter((l) => l.startsWith('Udp: '));
  const names = (lines[0] ?? '').split(/\s+/).slice(1);
  const values = (lines[1] ?? '').split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(names.map((n, i) => [n, values[i] ?? 0]));
}

/** Nearest-rank percentile (p in 0..100) of an ascending array; NaN when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** Median of the finite values; NaN when there are none. */
export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** Columns padded to their widest cell; the first column left-aligned, the others right-aligned. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

const TMPFS_MAGIC = 0x01021994;

/** A directory on a real disk for state that is fsynced: fsync on tmpfs costs nothing and would flatter a durable writer. */
export async function scratchRoot(): Promise<string> {
  if ((await statfs(tmpdir())).type !== TMPFS_MAGIC) return tmpdir();
  const dir = fileURLToPath(new URL('../../.cache/bench', import.meta.url));
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * Runs `cleanup` once when the process ends: normal exit, an uncaught exception, or SIGINT/SIGTERM/SIGHUP
 * (after which the signal is re-raised, so the exit status still says what killed us). `cleanup` must be
 * synchronous. Returns a function that runs it now and unregisters it.
 */
export function onCleanup(cleanup: () => void): () => void {
  let done = false;
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  const run = (): void => {
    if (done) return;
    done = true;
    process.off('exit', run);
    for (const s of signals) process.off(s, onSignal);
    cleanup();
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    run();
    process.kill(process.pid, signal);
  };
  process.on('exit', run);
  for (const s of signals) process.once(s, onSignal);
  return run;
}

/**
 * nginx.conf of the HTTP peer in the benchmarks (PEERS.md): one worker, sendfile, no access log, keep-alive
 * without a request limit, every temp path under `dir`, serving `root` on 127.0.0.1:`port`.
 */
export function nginxConf(dir: string, port: number, root: string, defaultType: string): string {
  return `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  default_type ${defaultType};
  server { listen 127.0.0.1:${port}; root ${root}; }
}
`;
}

/** SIGTERM, then SIGKILL after 20 s; resolves once `exited` (the child's close) has. */
export async function stopChild(child: ChildProcess, exited: Promise<number>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  await exited;
  clearTimeout(killer);
}
