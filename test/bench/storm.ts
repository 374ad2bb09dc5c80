// A boot storm: a rack of N machines powered on at once, each going DHCP (PXE) -> TFTP undionly.kpxe -> DHCP
// (iPXE) -> HTTP script, kernel, initrd -> agent enlistment, against metalbox and, in the same run, against the
// classic stack (dnsmasq for DHCP and TFTP, nginx for HTTP) for the phases both serve. Not a timed test; run it
// by hand, as root:
//
//   node --import tsx test/bench/storm.ts [--machines 500] [--rounds 2] [--kernel-mib 8] [--initrd-mib 32]
//       [--client-processes 1] [--warmup 20] [--blksize 1468] [--dhcp-retry firmware|fast] [--spread-ms 0]
//       [--stacks metalbox,classic] [--max-noise 25] [--deadline-s 300] [--raise-neigh-limits] [--keep-logs DIR] [--nice=N]
//
// --nice=-N (negative values need the "=") runs the servers and the clients alike under nice(1), to shield the runs
// from other work on the machine. --keep-logs DIR keeps each server's output (and metalbox's /metrics after the
// storm) as DIR/ROUND-STACK.log, and each machine's result line as DIR/ROUND-STACK-machines.jsonl (its phase
// durations and when it was done: enough to draw how many machines were in each phase over time).
// METALBOX_BENCH_NODE_ARGS adds node flags to metalbox (e.g. "--cpu-prof --cpu-prof-dir=DIR").
//
// Goal (issue 11): 500 machines enlisted in under 60 s with no error, metalbox ahead of the classic stack in
// every phase.
//
// Peers (Debian packages): dnsmasq-base (/usr/sbin/dnsmasq), nginx-light (/usr/sbin/nginx); ipxe for
// /usr/lib/ipxe/undionly.kpxe (the TFTP file both stacks serve).
//
// Topology, in two namespaces this script creates and removes (also on failure and Ctrl-C):
//   ns srv  s0 10.88.0.1/16: the server under test (metalbox, or dnsmasq + nginx), pinned to CPU 1
//   ns cli  c0 10.88.255.254/16, default route on c0 (for 255.255.255.255): the machines
//           (test/helpers/storm-client.ts, --client-processes Node processes), pinned to CPU 0; each machine adds
//           its leased address to c0 (/32) and uses it for TFTP and HTTP
// The pool is 10.88.1.0-10.88.10.255 (2,560 addresses) with 1 h leases on both stacks.
//
// The machines (storm-client.ts has the details): DHCP broadcast with the broadcast flag; dhcp1 as a PXE ROM
// (arch 0, PXEClient, UUID), retransmitting after 4, 8, 16, 32 s (PXE spec; --dhcp-retry fast: 1, 2, 4, 8 s);
// TFTP with tsize and blksize --blksize, lockstep; dhcp2 as iPXE (user class iPXE, option 175), retransmitting
// after 1, 2, 4, 8 s (iPXE); HTTP over one keep-alive connection per machine; the enlistment POST on a new one.
// A failed transfer reboots the machine after 10 s (iPXE's script does `sleep 10; reboot`).
//
// Files: the kernel and initrd are --kernel-mib and --initrd-mib MiB of random bytes (default 8 and 32: the size
// class of a distribution kernel and a small initramfs; 500 machines then fetch 20 GiB), written once and read
// once so both stacks serve them from the page cache. metalbox serves them as image "storm" (`metalbox images add`,
// boot.ephemeralImage: storm), with its per-machine iPXE script and boot token; nginx serves the same two files
// and a static iPXE script with the same kernel and initrd lines (the classic stack has no per-machine script and
// no enlistment: its machines stop after the initrd).
//
// Stacks:
// - metalbox: `metalbox serve` from the sources (tsx), log level warn, DNS and NTP off, state on a real disk
//   (every lease and boot token is fsynced before its answer leaves).
// - classic: dnsmasq 2.90 with `no-ping`, `dhcp-lease-max` and `tftp-max` raised to the pool and 1000 (its
//   defaults, 1000 leases and 50 TFTP transfers, would fail a 2,000-machine storm; metalbox allows 1000
//   transfers), `dhcp-match=set:ipxe,175` to hand iPXE the script URL, its lease file in the run's directory
//   (rewritten on every change, as Debian runs it); nginx with 1 worker, sendfile, tcp_nopush, no access log.
//   Both processes on CPU 1, like metalbox; their CPU seconds and peak RSS are summed.
//
// Each round runs each stack on a fresh server (fresh state dir or lease file, empty client addresses) after a
// warm-up storm of --warmup machines (other MACs; it warms V8's JIT and the page cache, and leaves that many
// leases), alternating which stack goes first. Figures:
// - time to all done: from power-on (every client process released at once) to the last machine enlisted
//   (metalbox) or to the last initrd received (both: "all booted", the comparable figure)
// - per-phase p50/p99 over machines of the successful attempt's duration (ms)
// - errors by phase (failed attempts: DHCP given up after every retransmission or NAKed, TFTP/HTTP failures,
//   enlistments answered with an error) and retries by phase (retransmissions)
// - server CPU seconds (utime+stime, /proc/PID/stat; for the classic stack dnsmasq + nginx master and worker)
//   over the measured storm, and peak RSS (VmHWM)
// - noise on the server's CPU: what other processes took there, and time it did not run at all (the machine is
//   shared). A run over --max-noise % is repeated once and flagged NOISY if it stays over.
// The summary is the median over rounds with the ratio metalbox / classic (below 1: metalbox ahead).
//
// Neighbour table: the server namespace holds one ARP entry per machine, and the kernel's limit
// (net.ipv4.neigh.default.gc_thresh3, 1024 by default) is machine-wide. Above ~900 machines the bench stops
// unless --raise-neigh-limits, which raises gc_thresh2/3 for the run and puts the old values back at exit.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Lab, canBuildLab, sh } from '../helpers/netns.ts';
import { ROOT } from '../helpers/process.ts';
import { cpuTimes, formatTable, formatThreadTimes, median, nginxConf, onCleanup, percentile, procSample, scratchRoot, threadTimes, udpCounters, stopChild } from '../helpers/bench-util.ts';
import { PHASES, stormLines, type MachineResult, type Phase, type StormEvent, type SummaryEvent } from '../helpers/storm-client.ts';
import { openLevelStore } from '../../src/store/level-store.ts';

const SERVER_IP = '10.88.0.1';
const CLIENT_IP = '10.88.255.254';
const CIDR = '10.88.0.0/16';
const POOL = { first: '10.88.1.0', last: '10.88.10.255', size: 2560 };
const HTTP_PORT = 5240;
const NGINX_PORT = 8080;
const SERVER_CPU = '1';
const CLIENT_CPU = '0';
const UNDIONLY = '/usr/lib/ipxe/undionly.kpxe';
const STACKS = ['metalbox', 'classic'] as const;
type StackName = (typeof STACKS)[number];

const { values } = parseArgs({
  options: {
    machines: { type: 'string', default: '500' },
    rounds: { type: 'string', default: '2' },
    'kernel-mib': { type: 'string', default: '8' },
    'initrd-mib': { type: 'string', default: '32' },
    'client-processes': { type: 'string', default: '1' },
    warmup: { type: 'string', default: '20' },
    blksize: { type: 'string', default: '1468' },
    'dhcp-retry': { type: 'string', default: 'firmware' },
    'spread-ms': { type: 'string', default: '0' },
    stacks: { type: 'string', default: STACKS.join(',') },
    'max-noise': { type: 'string', default: '25' },
    'deadline-s': { type: 'string', default: '300' },
    'raise-neigh-limits': { type: 'boolean', default: false },
    'keep-logs': { type: 'string' },
    nice: { type: 'string', default: '0' },
  },
});
const MACHINES = Number(values.machines);
const ROUNDS = Number(values.rounds);
const KERNEL_BYTES = Number(values['kernel-mib']) * 1024 * 1024;
const INITRD_BYTES = Number(values['initrd-mib']) * 1024 * 1024;
const PROCESSES = Number(values['client-processes']);
const WARMUP = Number(values.warmup);
const BLKSIZE = Number(values.blksize);
const DHCP_RETRY = values['dhcp-retry'];
const SPREAD_MS = Number(values['spread-ms']);
const stacks = values.stacks.split(',').map((s) => s.trim()) as StackName[];
const MAX_NOISE = Number(values['max-noise']);
const DEADLINE_S = Number(values['deadline-s']);
const keepLogs = values['keep-logs'];
const NICE = Number(values.nice);
const int = (x: number, min: number, max = Number.MAX_SAFE_INTEGER): boolean => Number.isInteger(x) && x >= min && x <= max;
if (!int(MACHINES, 1, 2000) || !int(ROUNDS, 1) || !(KERNEL_BYTES > 0) || !(INITRD_BYTES > 0) || !int(PROCESSES, 1, 16) || !int(WARMUP, 0, 200) ||
    !int(BLKSIZE, 8, 65464) || (DHCP_RETRY !== 'firmware' && DHCP_RETRY !== 'fast') || !(SPREAD_MS >= 0) || stacks.length === 0 ||
    stacks.some((s) => !STACKS.includes(s)) || !(MAX_NOISE >= 0) || !(DEADLINE_S > 0) || !int(NICE, -20, 19)) {
  throw new TypeError('usage: storm.ts [--machines 1..2000] [--rounds K] [--kernel-mib M] [--initrd-mib M] [--client-processes 1..16] [--warmup 0..200] [--blksize B] [--dhcp-retry firmware|fast] [--spread-ms MS] [--stacks metalbox,classic] [--max-noise PCT] [--deadline-s S] [--raise-neigh-limits] [--keep-logs DIR] [--nice=N]');
}

const labCheck = canBuildLab();
if (!labCheck.ok) throw new Error(`cannot build the lab: ${labCheck.why}`);
for (const [tool, pkg] of [['taskset', 'util-linux'], ...(stacks.includes('classic') ? [['dnsmasq', 'dnsmasq-base'], ['nginx', 'nginx-light']] : [])] as const) {
  if (!sh('sh', ['-c', `command -v ${tool} || test -x /usr/sbin/${tool} && echo /usr/sbin/${tool}`], { allowFail: true }).trim()) throw new Error(`${tool} not found: apt-get install ${pkg}`);
}
if (!existsSync(UNDIONLY)) throw new Error(`${UNDIONLY} not found: apt-get install ipxe`);
const pin = os.cpus().length >= 2;

// ---------------------------------------------------------------------------------------------------------
// The neighbour table (see the header)

const NEIGH = '/proc/sys/net/ipv4/neigh/default';
const neighBefore = { thresh2: Number(readFileSync(`${NEIGH}/gc_thresh2`, 'utf8')), thresh3: Number(readFileSync(`${NEIGH}/gc_thresh3`, 'utf8')) };
const neighNeeded = MACHINES + WARMUP + 128;
let neighRaised = false;
if (neighBefore.thresh3 < neighNeeded) {
  if (!values['raise-neigh-limits']) {
    throw new Error(`${MACHINES} machines need ${neighNeeded} ARP entries in the server namespace; net.ipv4.neigh.default.gc_thresh3 is ${neighBefore.thresh3} (machine-wide): pass --raise-neigh-limits (raised for the run, restored at exit) or raise it yourself`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The lab, the files, the cleanup

const lab = new Lab('mbst');
const workDir = mkdtempSync(join(await scratchRoot(), 'metalbox-storm-bench-'));
chmodSync(workDir, 0o755); // nginx's worker runs as nobody
const children = new Set<ChildProcess>();
onCleanup(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  lab.destroy();
  if (neighRaised) {
    writeFileSync(`${NEIGH}/gc_thresh3`, String(neighBefore.thresh3));
    writeFileSync(`${NEIGH}/gc_thresh2`, String(neighBefore.thresh2));
  }
  rmSync(workDir, { recursive: true, force: true });
});
if (neighBefore.thresh3 < neighNeeded) {
  neighRaised = true;
  writeFileSync(`${NEIGH}/gc_thresh3`, String(neighNeeded * 2));
  writeFileSync(`${NEIGH}/gc_thresh2`, String(Math.max(neighBefore.thresh2, neighNeeded)));
}

const srv = lab.ns('srv');
const cli = lab.ns('cli');
lab.link({ ns: srv, ifname: 's0', cidr: `${SERVER_IP}/16` }, { ns: cli, ifname: 'c0', cidr: `${CLIENT_IP}/16` });
/**
 * TCP congestion control: cubic (the kernel's default) on the rack's route in both namespaces. This machine's default
 * is bbr, and over the veth its bandwidth estimate of some connections collapsed to a few kbit/s (ss -tnoi:
 * pacing_rate 2728bps, a 32 MiB initrd stalled for minutes), for either stack: that measures BBR on a veth, not the
 * servers. A route's congctl needs no sysctl (a namespace may only pick from net.ipv4.tcp_allowed_congestion_control).
 */
function cubicRoute(ns: string, ifname: string, src: string): void {
  lab.exec(ns, 'ip', ['route', 'replace', CIDR, 'dev', ifname, 'proto', 'kernel', 'scope', 'link', 'src', src, 'congctl', 'cubic']);
}
cubicRoute(srv, 's0', SERVER_IP);
// A veth hands each packet to the receiving side on the sending CPU: without steering, the machines' TCP receive
// work for 20 GiB of kernels and initrds ran in softirq on the server's CPU, where on a rack it runs on the machines.
// RPS (Documentation/networking/scaling.rst) queues what c0 receives to the clients' CPU instead. Not the other way:
// steered to the server's CPU, the clients' packets wait in its backlog (net.core.netdev_max_backlog) for
// ksoftirqd, which a server under --nice=-N starves: the backlog overflowed (/proc/net/softnet_stat) and took every
// DHCP retransmission of a 7 s window with it. Unsteered, the server's receive work (ACKs, requests) runs in the
// clients' sending context, on their CPU.
if (pin) lab.exec(cli, 'sh', ['-c', `echo ${(1 << Number(CLIENT_CPU)).toString(16)} > /sys/class/net/c0/queues/rx-0/rps_cpus`]);

/** Empty the client interface of the machines' addresses (a new round's servers lease them anew). */
function resetClientAddresses(): void {
  lab.exec(cli, 'ip', ['addr', 'flush', 'dev', 'c0']);
  lab.exec(cli, 'ip', ['addr', 'add', `${CLIENT_IP}/16`, 'dev', 'c0']);
  // A limited broadcast (255.255.255.255) needs a route out of the client namespace.
  lab.exec(cli, 'ip', ['route', 'replace', 'default', 'dev', 'c0']);
  cubicRoute(cli, 'c0', CLIENT_IP);
}

/** Random bytes (nothing compresses), written in 1 MiB blocks. */
function randomFile(path: string, size: number): void {
  const fd = openSync(path, 'w', 0o644);
  const block = randomBytes(1024 * 1024);
  for (let off = 0; off < size; off += block.length) writeSync(fd, block, 0, Math.min(block.length, size - off));
  closeSync(fd);
}
const files = join(workDir, 'files');
mkdirSync(files, { mode: 0o755 });
const kernelFile = join(files, 'kernel');
const initrdFile = join(files, 'initrd');
randomFile(kernelFile, KERNEL_BYTES);
randomFile(initrdFile, INITRD_BYTES);
copyFileSync(UNDIONLY, join(files, 'undionly.kpxe'));
chmodSync(join(files, 'undionly.kpxe'), 0o644);
// The classic stack's script: what metalbox's says for an enlisting machine, without the per-boot arguments.
writeFileSync(join(files, 'boot.ipxe'), [
  '#!ipxe',
  `kernel http://${SERVER_IP}:${NGINX_PORT}/kernel initrd=initrd console=tty0 console=ttyS0,115200n8 || goto failed`,
  `initrd http://${SERVER_IP}:${NGINX_PORT}/initrd || goto failed`,
  'boot || goto failed',
  ':failed',
  'sleep 10',
  'reboot',
  '',
].join('\n'), { mode: 0o644 });
for (const f of [kernelFile, initrdFile]) readFileSync(f); // into the page cache

// ---------------------------------------------------------------------------------------------------------
// Processes

/** `ip netns exec NS [nice -n N] [taskset -c CPU] CMD ARGS`; ip, nice and taskset exec in place, so the child's pid is CMD's. */
function spawnIn(ns: string, cpu: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, stdin: 'ignore' | 'pipe' = 'ignore'): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns, ...(NICE ? ['nice', '-n', String(NICE)] : []), ...(pin ? ['taskset', '-c', cpu] : []), cmd, ...args], { env, cwd: ROOT, stdio: [stdin, 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

function collect(child: ChildProcess): { text: () => string; exited: Promise<number> } {
  let text = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => { text += d; });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { text += d; });
  const exited = new Promise<number>((resolve) => child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : -1))));
  return { text: () => text, exited };
}

/** Children of a process (nginx's worker), from /proc. */
function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      try { out.push(...readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)); } catch { /* gone */ }
    }
  } catch { /* gone */ }
  return out;
}

/** Listening sockets of a pid in the server namespace, as "proto:port". */
function listening(pid: number): Set<string> {
  const out = new Set<string>();
  for (const line of sh('ip', ['netns', 'exec', srv, 'ss', '-Hlnputa'], { allowFail: true }).split('\n')) {
    if (!line.includes(`pid=${pid},`)) continue;
    const m = /^(\w+)\s+\S+\s+\d+\s+\d+\s+\S+:(\d+)\s/.exec(line);
    if (m) out.add(`${m[1]}:${m[2]}`);
  }
  return out;
}

async function waitListening(what: string, pid: () => number[], want: string[], out: () => string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const have = new Set(pid().flatMap((p) => [...listening(p)]));
    if (want.every((w) => have.has(w))) return;
    if (Date.now() > end) throw new Error(`${what} not listening on ${want.join(', ')} after ${timeoutMs / 1000} s (has ${[...have].join(', ')}):\n${out()}`);
    await sleep(250);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The stacks

interface RunningStack {
  /** Every process of the stack: CPU and peak RSS are summed over them. */
  pids(): number[];
  stop(): Promise<void>;
  /** The server's own counters of what it did not answer (metalbox's /metrics), or ''. */
  drops(): string;
  /** Everything it says about itself (metalbox's /metrics), for --keep-logs. */
  metrics(): string;
  /** After stop: leases and machines the server kept (a sanity check against the clients' view). */
  kept(): Promise<string>;
  output(): string;
}

const TSX = join(ROOT, 'node_modules/tsx/dist/esm/index.mjs');

async function startMetalbox(dir: string): Promise<RunningStack> {
  const stateDir = join(dir, 'state');
  const config = join(dir, 'metalbox.yaml');
  writeFileSync(config, [
    `stateDir: ${stateDir}`,
    `http: { listen: "0.0.0.0:${HTTP_PORT}" }`,
    'https: { listen: "127.0.0.1:0" }',
    'interfaces: [s0]',
    'logLevel: warn',
    'subnets:',
    `  - cidr: ${CIDR}`,
    `    dynamicRanges: ["${POOL.first}-${POOL.last}"]`,
    '    leaseSeconds: 3600',
    'boot: { ephemeralImage: storm }',
    'dns: { enabled: false }',
    'ntp: { enabled: false }',
    '',
  ].join('\n'));
  // The binary sizes libuv's pool itself (src/lib/threadpool.ts); run from source, tsx starts the pool first.
  const env: NodeJS.ProcessEnv = { UV_THREADPOOL_SIZE: '16', ...process.env, METALBOX_RUNTIME_DIR: join(dir, 'run') };
  delete env.NOTIFY_SOCKET;
  // Registered before the start (the store is not locked yet): the files are copied into the asset store.
  sh(process.execPath, ['--import', TSX, join(ROOT, 'src/main.ts'), 'images', 'add', 'storm', '--kernel', kernelFile, '--initrd', initrdFile, '--config', config]);
  // The copies are still dirty in the page cache: ext4's first fsyncs (the store's) would write them out first.
  sh('sync', ['-f', stateDir]);
  // METALBOX_BENCH_NODE_ARGS: extra node flags for metalbox, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const nodeArgs = (process.env.METALBOX_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const child = spawnIn(srv, SERVER_CPU, process.execPath, [...nodeArgs, '--import', TSX, join(ROOT, 'src/main.ts'), 'serve', '--config', config], env);
  const out = collect(child);
  await waitListening('metalbox', () => [child.pid!], ['udp:67', 'udp:69', `tcp:${HTTP_PORT}`], out.text, 120_000);
  if (procSample(child.pid!)?.comm !== 'node') throw new Error(`pid ${child.pid} is not node: CPU would be read from the wrong process`);
  const metrics = (): string => sh('ip', ['netns', 'exec', srv, 'curl', '-s', `http://${SERVER_IP}:${HTTP_PORT}/metrics`], { allowFail: true });
  return {
    pids: () => [child.pid!],
    stop: () => stopChild(child, out.exited),
    output: out.text,
    metrics,
    drops() {
      const text = metrics();
      const notable = /^metalbox_(dhcp_(dropped|socket_shed|pool_exhausted)|tftp_(transfers_failed|retransmissions|refused|events_dropped|malformed)|http_requests_total\{[^}]*status="(4\d\d|5\d\d)")/;
      return text.split('\n').filter((l) => notable.test(l) && !/ 0$/.test(l)).map((l) => l.replace(/^metalbox_/, '').replace(/_total/, '')).join(', ');
    },
    async kept() {
      const store = await openLevelStore(stateDir);
      let leases = 0;
      let machines = 0;
      try {
        for await (const [, l] of store.leases.entries()) if (l.state === 'bound') leases++;
        for await (const [,] of store.machines.entries()) machines++;
      } finally {
        await store.close();
      }
      return `${leases} bound leases, ${machines} machines in the store`;
    },
  };
}

async function startClassic(dir: string): Promise<RunningStack> {
  const leaseFile = join(dir, 'dnsmasq.leases');
  const conf = join(dir, 'dnsmasq.conf');
  writeFileSync(conf, [
    'port=0', // no DNS
    'interface=s0',
    'bind-interfaces',
    'user=root',
    `dhcp-range=${POOL.first},${POOL.last},255.255.0.0,1h`,
    `dhcp-leasefile=${leaseFile}`,
    `dhcp-lease-max=${POOL.size}`,
    'dhcp-authoritative',
    'no-ping',
    'dhcp-match=set:ipxe,175',
    'dhcp-userclass=set:ipxe,iPXE',
    `dhcp-boot=tag:!ipxe,undionly.kpxe,,${SERVER_IP}`,
    `dhcp-boot=tag:ipxe,http://${SERVER_IP}:${NGINX_PORT}/boot.ipxe`,
    'enable-tftp',
    `tftp-root=${files}`,
    'tftp-max=1000',
    'log-facility=-',
    '',
  ].join('\n'));
  const dnsmasq = spawnIn(srv, SERVER_CPU, '/usr/sbin/dnsmasq', ['--keep-in-foreground', `--conf-file=${conf}`, `--pid-file=${join(dir, 'dnsmasq.pid')}`]);
  const dOut = collect(dnsmasq);
  const nginxDir = join(dir, 'nginx');
  mkdirSync(nginxDir, { recursive: true });
  const nconf = join(nginxDir, 'nginx.conf');
  // bench-util's conf (PEERS.md: 1 worker, sendfile, tcp_nopush, no access log), on the server's address, with
  // room for every machine's connection.
  writeFileSync(nconf, nginxConf(nginxDir, NGINX_PORT, files, 'application/octet-stream')
    .replace('listen 127.0.0.1:', `listen ${SERVER_IP}:`)
    .replace('worker_connections 1024;', 'worker_connections 8192;')
    .replace('worker_processes 1;', 'worker_processes 1;\nworker_rlimit_nofile 16384;'));
  const nginx = spawnIn(srv, SERVER_CPU, '/usr/sbin/nginx', ['-c', nconf, '-p', nginxDir, '-e', join(nginxDir, 'error.log')]);
  const nOut = collect(nginx);
  const output = () => `${dOut.text()}\n${nOut.text()}`;
  const pids = () => [dnsmasq.pid!, nginx.pid!, ...childPids(nginx.pid!)];
  await waitListening('dnsmasq + nginx', pids, ['udp:67', 'udp:69', `tcp:${NGINX_PORT}`], output, 30_000);
  return {
    pids,
    async stop() { await Promise.all([stopChild(dnsmasq, dOut.exited), stopChild(nginx, nOut.exited)]); },
    output,
    drops: () => '',
    metrics: () => '',
    async kept() {
      const lines = existsSync(leaseFile) ? readFileSync(leaseFile, 'utf8').split('\n').filter(Boolean).length : 0;
      return `${lines} leases in dnsmasq's lease file`;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// One storm

interface StormResult {
  machines: MachineResult[];
  summaries: SummaryEvent[];
  /** ms from power-on to the last machine done, and to the last initrd (all booted). */
  allDoneMs: number;
  allBootedMs: number;
  errors: Partial<Record<Phase, number>>;
  retries: Partial<Record<Phase, number>>;
  reboots: number;
  errorLines: string[];
  wallSeconds: number;
}

/** `count` machines from `first` (MAC index), split over the client processes, all released at once. */
async function storm(count: number, first: number, macPrefix: string, enlist: boolean): Promise<StormResult> {
  const per = Math.ceil(count / PROCESSES);
  const procs: { child: ChildProcess; out: ReturnType<typeof collect>; ready: Promise<void> }[] = [];
  const machines: MachineResult[] = [];
  const summaries: SummaryEvent[] = [];
  const errorLines: string[] = [];
  for (let p = 0; p * per < count; p++) {
    const n = Math.min(per, count - p * per);
    const child = spawnIn(cli, CLIENT_CPU, process.execPath, ['--import', TSX, join(ROOT, 'test/helpers/storm-client.ts'),
      '--machines', String(n), '--first', String(first + p * per), '--mac-prefix', macPrefix, '--interface', 'c0', '--start-at', 'stdin',
      '--blksize', String(BLKSIZE), '--dhcp-retry', DHCP_RETRY, '--spread-ms', String(SPREAD_MS), '--deadline-s', String(DEADLINE_S),
      ...(enlist ? [] : ['--no-enlist'])], process.env, 'pipe');
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    let readyResolve!: () => void;
    const ready = new Promise<void>((resolve) => { readyResolve = resolve; });
    child.stdout!.setEncoding('utf8').on('data', stormLines((e: StormEvent) => {
      if (e.ev === 'ready') readyResolve();
      else if (e.ev === 'machine') machines.push(e);
      else if (e.ev === 'summary') summaries.push(e);
      else if (e.ev === 'error') errorLines.push(`${e.phase} ${e.mac}: ${e.message}`);
    }));
    const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
    procs.push({ child, out: { text: () => stderr, exited }, ready });
  }
  await Promise.race([
    Promise.all(procs.map((p) => p.ready)),
    sleep(60_000).then(() => { throw new Error(`storm clients not ready after 60 s: ${procs.map((p) => p.out.text()).join('\n')}`); }),
    ...procs.map((p) => p.out.exited.then((code) => { throw new Error(`a storm client exited (${code}) before it was ready: ${p.out.text()}`); })),
  ]);
  // Power-on: every process gets the same time zero, a little ahead so they all read it before it comes.
  const t0 = Date.now() + 200;
  for (const p of procs) p.child.stdin!.end(`${t0}\n`);
  await Promise.all(procs.map((p) => p.out.exited));
  const wallSeconds = (Date.now() - t0) / 1000;
  for (const p of procs) if (p.out.text().trim()) errorLines.push(`client stderr: ${p.out.text().trim().slice(0, 500)}`);
  const sum = (what: 'errors' | 'retries'): Partial<Record<Phase, number>> => {
    const out: Partial<Record<Phase, number>> = {};
    for (const m of machines) for (const [k, v] of Object.entries(m[what])) out[k as Phase] = (out[k as Phase] ?? 0) + v;
    return out;
  };
  // A machine's initrd ended when it was done less its enlistment.
  return {
    machines, summaries, errorLines, wallSeconds,
    allDoneMs: machines.length === count ? Math.max(...machines.map((m) => m.t)) : Number.NaN,
    allBootedMs: machines.length === count ? Math.max(...machines.map((m) => m.t - (m.ms.enlist ?? 0))) : Number.NaN,
    errors: sum('errors'), retries: sum('retries'), reboots: machines.reduce((s, m) => s + m.reboots, 0),
  };
}

// ---------------------------------------------------------------------------------------------------------
// One measured run on a fresh stack

interface Run {
  stack: StackName;
  round: number;
  storm: StormResult;
  done: number;
  cpuSeconds: number;
  peakRssKiB: number;
  othersOnServerCpu: number;
  lostOnServerCpu: number;
  kept: string;
  drops: string;
  /** UDP datagrams the kernel dropped at a full socket (RcvbufErrors + InErrors), server and client namespace. */
  udpDrops: { srv: number; cli: number };
  /** Packets each CPU's backlog dropped (/proc/net/softnet_stat, second column): machine-wide, so others' count too. */
  softnetDrops: number[];
  /** CPU per thread of the server's processes over the storm. */
  threads: string;
}

/** Second column of /proc/net/softnet_stat per CPU: packets dropped because the CPU's backlog was full. */
function softnetDrops(): number[] {
  return readFileSync('/proc/net/softnet_stat', 'utf8').trim().split('\n').map((l) => parseInt(l.trim().split(/\s+/)[1] ?? '0', 16));
}

let warmupBase = 0x100000;

async function measure(stack: StackName, round: number): Promise<Run> {
  const dir = mkdtempSync(join(workDir, `${round}-${stack}-`));
  chmodSync(dir, 0o755);
  resetClientAddresses();
  // The previous run's ARP entries (another stack leased other addresses) would fill the neighbour table
  // (gc_thresh3, 1,024 by default): the second stack of a round then lost its unicast replies (iPXE's DHCP stalled
  // for 18 s on 483 of 500 machines, whichever stack ran second).
  for (const ns of [srv, cli]) sh('ip', ['-n', ns, 'neigh', 'flush', 'all']);
  const server = stack === 'metalbox' ? await startMetalbox(dir) : await startClassic(dir);
  try {
    if (WARMUP > 0) {
      const w = await storm(WARMUP, warmupBase, '52:54:0e', stack === 'metalbox');
      warmupBase += WARMUP;
      if (w.machines.length !== WARMUP) throw new Error(`${stack}: the warm-up storm did not complete (${w.machines.length}/${WARMUP}): ${w.errorLines.slice(0, 5).join('; ')}\n${server.output().slice(-3000)}`);
    }
    const sample = () => server.pids().map((p) => procSample(p)).filter((s) => s !== undefined);
    const before = sample();
    const cpusBefore = cpuTimes();
    const udpBefore = { srv: udpCounters(srv), cli: udpCounters(cli) };
    const softnetBefore = softnetDrops();
    const threadsBefore = server.pids().map((p) => threadTimes(p));
    const t0 = performance.now();
    const result = await storm(MACHINES, 0, '52:54:0f', stack === 'metalbox');
    const wall = (performance.now() - t0) / 1000;
    const after = sample();
    const cpusAfter = cpuTimes();
    const udpAfter = { srv: udpCounters(srv), cli: udpCounters(cli) };
    const softnetAfter = softnetDrops();
    const threads = server.pids().map((p, i) => formatThreadTimes(threadTimes(p), threadsBefore[i] ?? {})).filter(Boolean).join(' | ');
    const udpDrops = (ns: 'srv' | 'cli'): number => (udpAfter[ns].RcvbufErrors ?? 0) - (udpBefore[ns].RcvbufErrors ?? 0) + (udpAfter[ns].InErrors ?? 0) - (udpBefore[ns].InErrors ?? 0);
    if (after.length < before.length) throw new Error(`${stack} died during the storm:\n${server.output().slice(-3000)}`);
    const cpuSeconds = after.reduce((s, x) => s + x.cpuSeconds, 0) - before.reduce((s, x) => s + x.cpuSeconds, 0);
    const cpuDelta = (field: 'busy' | 'accounted'): number => (cpusAfter[Number(SERVER_CPU)]?.[field] ?? 0) - (cpusBefore[Number(SERVER_CPU)]?.[field] ?? 0);
    const drops = server.drops();
    if (keepLogs) writeFileSync(join(keepLogs, `${round}-${stack}.log`), `${server.output()}\n${server.metrics()}\n`);
    if (keepLogs) writeFileSync(join(keepLogs, `${round}-${stack}-machines.jsonl`), result.machines.map((m) => JSON.stringify(m)).join('\n') + '\n');
    await server.stop();
    return {
      stack, round, storm: result, done: result.machines.length, cpuSeconds,
      peakRssKiB: after.reduce((s, x) => s + x.peakRssKiB, 0),
      othersOnServerCpu: pin ? Math.max(0, cpuDelta('busy') - cpuSeconds) / wall : Number.NaN,
      lostOnServerCpu: pin ? Math.max(0, wall - cpuDelta('accounted')) / wall : Number.NaN,
      kept: await server.kept(),
      drops,
      udpDrops: { srv: udpDrops('srv'), cli: udpDrops('cli') },
      softnetDrops: softnetAfter.map((n, i) => n - (softnetBefore[i] ?? 0)),
      threads,
    };
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Reporting

const fmt = (x: number, digits = 0): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');
const phaseMs = (r: Run, phase: Phase, p: number): number =>
  percentile(r.storm.machines.map((m) => m.ms[phase]).filter((x): x is number => x !== undefined).sort((a, b) => a - b), p);
const errorsOf = (r: Run): string => PHASES.filter((p) => r.storm.errors[p]).map((p) => `${p} ${r.storm.errors[p]}`).join(', ') || 'none';
const retriesOf = (r: Run): string => PHASES.filter((p) => r.storm.retries[p]).map((p) => `${p} ${r.storm.retries[p]}`).join(', ') || 'none';

function printRun(r: Run): void {
  const s = r.storm;
  const phases = PHASES.map((p) => `${p} ${fmt(phaseMs(r, p, 50))}/${fmt(phaseMs(r, p, 99))}`).join(', ');
  const gib = s.summaries.reduce((a, x) => a + x.bytes, 0) / 1024 ** 3;
  console.log(`  round ${r.round} ${r.stack.padEnd(8)} ${r.done}/${MACHINES} machines ${r.stack === 'metalbox' ? 'enlisted' : 'booted'}, ${fmt(gib, 2)} GiB received; ` +
    `all booted ${fmt(s.allBootedMs / 1000, 1)} s${r.stack === 'metalbox' ? `, all enlisted ${fmt(s.allDoneMs / 1000, 1)} s` : ''}; p50/p99 ms: ${phases}; ` +
    `errors: ${errorsOf(r)}; retries: ${retriesOf(r)}; reboots ${s.reboots}; server CPU ${fmt(r.cpuSeconds, 2)} s, peak RSS ${fmt(r.peakRssKiB / 1024, 1)} MiB; ` +
    `server's CPU: others ${fmt(r.othersOnServerCpu * 100)}%, not running ${fmt(r.lostOnServerCpu * 100)}%; clients CPU ${fmt(s.summaries.reduce((a, x) => a + x.cpuSeconds, 0), 1)} s, DHCP replies read ${s.summaries.reduce((a, x) => a + x.dhcp.received, 0)} (${s.summaries.reduce((a, x) => a + x.dhcp.unmatched, 0)} unmatched), event loop delay p99/max ${s.summaries.map((x) => `${fmt(x.loopDelayMs.p99)}/${fmt(x.loopDelayMs.max)}`).join(' ')} ms; UDP rcvbuf drops srv ${r.udpDrops.srv} cli ${r.udpDrops.cli}, CPU backlog drops ${r.softnetDrops.join('/')}; server threads: ${r.threads}; ${r.kept}` +
    (r.drops ? `; server counters: ${r.drops}` : ''));
  for (const line of s.errorLines.slice(0, 10)) console.log(`    ${line}`);
}

/**
 * Bytes of kernels and initrds over the time from the first kernel request to the last initrd byte: the HTTP phases'
 * aggregate rate. Per-machine kernel and initrd times depend on how many machines download at once, which the
 * earlier phases decide (a server that answers every DHCP at once has every machine downloading at once).
 */
function httpRate(r: Run): number {
  const ms = r.storm.machines.filter((m) => m.ms.kernel !== undefined && m.ms.initrd !== undefined);
  if (ms.length === 0) return Number.NaN;
  const ends = ms.map((m) => m.t - (m.ms.enlist ?? 0));
  const starts = ms.map((m, i) => ends[i]! - m.ms.initrd! - m.ms.kernel!);
  return (ms.length * (KERNEL_BYTES + INITRD_BYTES)) / 1024 ** 3 / ((Math.max(...ends) - Math.min(...starts)) / 1000);
}

interface Metric { name: string; value: (r: Run) => number; digits: number }
const METRICS: Metric[] = [
  { name: 'machines done', value: (r) => r.done, digits: 0 },
  { name: 'time to all booted (initrd) s', value: (r) => r.storm.allBootedMs / 1000, digits: 1 },
  { name: 'time to all enlisted s', value: (r) => (r.stack === 'metalbox' ? r.storm.allDoneMs / 1000 : Number.NaN), digits: 1 },
  ...PHASES.flatMap((p) => [50, 99].map((q) => ({ name: `${p} p${q} ms`, value: (r: Run) => phaseMs(r, p, q), digits: q === 50 ? 1 : 0 }))),
  { name: 'kernels+initrds served GiB/s', value: httpRate, digits: 2 },
  { name: 'errors (all phases)', value: (r) => Object.values(r.storm.errors).reduce((s, v) => s + v, 0), digits: 0 },
  { name: 'retries (all phases)', value: (r) => Object.values(r.storm.retries).reduce((s, v) => s + v, 0), digits: 0 },
  { name: 'server CPU s', value: (r) => r.cpuSeconds, digits: 2 },
  { name: 'server peak RSS MiB', value: (r) => r.peakRssKiB / 1024, digits: 1 },
  { name: 'noise: others on server CPU %', value: (r) => r.othersOnServerCpu * 100, digits: 0 },
  { name: 'noise: server CPU not running %', value: (r) => r.lostOnServerCpu * 100, digits: 0 },
];

function summary(runs: Run[]): string {
  const rows = METRICS.map((m) => {
    const of = (s: StackName) => runs.filter((r) => r.stack === s).map(m.value);
    const mb = median(of('metalbox'));
    const cl = median(of('classic'));
    const ratio = Number.isFinite(mb / cl) ? `${(mb / cl).toFixed(2)}x` : '-';
    return [m.name, fmt(mb, m.digits), fmt(cl, m.digits), ratio, of('metalbox').map((v) => fmt(v, m.digits)).join(' '), of('classic').map((v) => fmt(v, m.digits)).join(' ')];
  });
  return formatTable(['metric', 'metalbox median', 'classic median', 'ratio', 'metalbox runs', 'classic runs'], rows);
}

// ---------------------------------------------------------------------------------------------------------

console.log(`storm bench: ${MACHINES} machines, ${ROUNDS} round(s), stacks ${stacks.join(', ')}; kernel ${KERNEL_BYTES / 1048576} MiB, initrd ${INITRD_BYTES / 1048576} MiB, ` +
  `undionly.kpxe ${readFileSync(UNDIONLY).length} B over TFTP blksize ${BLKSIZE}; DHCP retries ${DHCP_RETRY}; ${PROCESSES} client process(es); warm-up ${WARMUP} machines; ` +
  `${pin ? `server on CPU ${SERVER_CPU}, clients on CPU ${CLIENT_CPU}` : 'one CPU: no pinning'}; ${sh('/usr/sbin/dnsmasq', ['--version'], { allowFail: true }).split('\n')[0]}; ` +
  `${sh('/usr/sbin/nginx', ['-v'], { allowFail: true }).trim() || 'nginx'}; node ${process.versions.node}${neighRaised ? `; gc_thresh3 raised to ${neighNeeded * 2} for the run` : ''}`);
const runs: Run[] = [];
for (let round = 1; round <= ROUNDS; round++) {
  const order = (round % 2 === 1 ? [...STACKS] : [...STACKS].reverse()).filter((s) => stacks.includes(s));
  for (const stack of order) {
    for (let attempt = 0; ; attempt++) {
      const r = await measure(stack, round);
      const noise = (r.othersOnServerCpu + r.lostOnServerCpu) * 100;
      if (noise > MAX_NOISE && attempt < 1) {
        console.log(`  round ${round} ${stack.padEnd(8)} discarded: others took ${fmt(r.othersOnServerCpu * 100)}% and the host ${fmt(r.lostOnServerCpu * 100)}% of the server's CPU (over --max-noise ${MAX_NOISE}%), repeating`);
        continue;
      }
      if (noise > MAX_NOISE) console.log(`  NOISY: the next run stayed over --max-noise ${MAX_NOISE}%`);
      printRun(r);
      runs.push(r);
      break;
    }
  }
}
console.log(`\nmedian over ${ROUNDS} round(s) (ratio = metalbox / classic: below 1, metalbox ahead); per-phase times are each machine's successful attempt`);
console.log(summary(runs));
const mb = runs.filter((r) => r.stack === 'metalbox');
if (mb.length > 0) {
  const enlisted = median(mb.map((r) => r.storm.allDoneMs / 1000));
  const errors = mb.reduce((s, r) => s + Object.values(r.storm.errors).reduce((a, v) => a + v, 0), 0);
  console.log(`\ngoal (issue 11): ${MACHINES} machines enlisted in under 60 s with no error: median ${fmt(enlisted, 1)} s, ${errors} error(s) over ${mb.length} run(s): ${enlisted < 60 && errors === 0 && mb.every((r) => r.done === MACHINES) ? 'met' : 'NOT met'}`);
}
