// HTTP boot throughput: 8 concurrent fetches of a 100 MiB boot file, metalbox and nginx side by side in one
// run, both loaded by wrk (PEERS.md). Not a timed test; run it by hand (root not needed):
//
//   node --import tsx test/bench/http.ts [--seconds S] [--rounds R] [--size-mib N] [--variants pump:1024,stream:64,...]
//
// Peers (Debian packages): nginx-light (nginx), wrk.
//
// - metalbox: `metalbox serve` from the sources, the file registered with `metalbox images add` and fetched
//   from /boot/assets/bench/kernel (the route machines use). With --variants, also the same app (buildApp +
//   boot-http + HttpService + LevelDB store, test/helpers/boot-http-server.ts) with another body writer
//   and read size: `sendfile:KiB` (the default: sendfile(2) on the native addon's thread; the read size only
//   matters when it falls back), `pump:KiB` (our read loop over two recycled buffers) or `stream:KiB` (a
//   piped fs.ReadStream with that highWaterMark). See BODY_MODES in src/services/boot-http/http-file.ts.
// - nginx: its own config in a temp dir, 1 worker, sendfile on, tcp_nopush, access log off, loopback.
// - Load: `wrk -t1 -c8 -dSs --timeout 30s` (8 connections, keep-alive, each fetching the whole file again and
//   again; wrk's default 2 s timeout would count a slow 100 MiB response on a busy machine as an error).
// - Fairness: the server runs on CPU 1 (taskset -c 1), wrk on CPU 0; both servers get the same file from the
//   page cache (read once before the runs); rounds alternate which server goes first.
// - Figures: GiB/s is wrk's bytes read / its duration; "vs nginx" is the median over rounds of the ratio to
//   nginx's run in the same round; CPU per GiB is the server's utime+stime (all its processes: nginx's master
//   and worker, every Node thread, our sendfile thread) over the wrk run, divided by the GiB served. On this
//   shared 2-CPU machine throughput swings 2x with other load; CPU per GiB is the steadier figure (PEERS.md).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync, openSync, writeSync, closeSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT, freePort } from '../helpers/process.ts';
import { formatTable, median, onCleanup, procSample, scratchRoot, nginxConf } from '../helpers/bench-util.ts';
import { BODY_MODES } from '../../src/services/boot-http/http-file.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    'size-mib': { type: 'string', default: '100' },
    variants: { type: 'string', default: '' },
  },
});
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const SIZE = Number(values['size-mib']) * 1024 * 1024;
const VARIANTS = values.variants ? values.variants.split(',').map((v) => {
  const [body = "", kib = ""] = v.split(':');
  if (!(BODY_MODES as readonly string[]).includes(body) || !(Number(kib) > 0)) throw new Error(`--variants: "${v}" is not MODE:KiB (MODE: ${BODY_MODES.join(', ')})`);
  return { body, bytes: Number(kib) * 1024 };
}) : [];
const SERVER_CPU = '1';
const LOAD_CPU = '0';
const TSX = join(ROOT, 'node_modules/tsx/dist/esm/index.mjs');

for (const tool of ['nginx', 'wrk', 'taskset']) {
  try { execFileSync('sh', ['-c', `command -v ${tool}`]); } catch { throw new Error(`${tool} is missing (apt-get install nginx-light wrk util-linux)`); }
}

const work = mkdtempSync(join(await scratchRoot(), 'mbx-http-bench-'));
chmodSync(work, 0o755); // nginx's worker runs as nobody
const children: ChildProcess[] = [];
onCleanup(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

// The file: random bytes (nothing compresses), written once and read once so both servers hit the page cache.
const file = join(work, 'bench.img');
{
  const fd = openSync(file, 'w', 0o644);
  const block = randomBytes(1024 * 1024);
  for (let off = 0; off < SIZE; off += block.length) writeSync(fd, block, 0, Math.min(block.length, SIZE - off));
  closeSync(fd);
  const initrd = join(work, 'initrd.img');
  writeFileSync(initrd, randomBytes(4096), { mode: 0o644 });
  readFileSync(file);
}

// metalbox's state dir with the file registered as image "bench".
const stateDir = join(work, 'state');
const config = join(work, 'metalbox.yaml');
const mbxPort = await freePort();
writeFileSync(config, `stateDir: ${stateDir}\nhttp: { listen: "127.0.0.1:${mbxPort}" }\nhttps: { listen: "127.0.0.1:0" }\nlogLevel: warn\n`);
execFileSync(process.execPath, ['--import', TSX, join(ROOT, 'src/main.ts'), 'images', 'add', 'bench', '--kernel', file, '--initrd', join(work, 'initrd.img'), '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });

interface Server { name: string; url: string; pids: () => number[]; stop: () => Promise<void> }

function waitForLine(child: ChildProcess, pattern: RegExp, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start:\n${out}`)), 30_000);
    const on = (d: Buffer) => {
      out += d.toString();
      if (pattern.test(out)) { clearTimeout(timer); resolve(); }
    };
    child.stdout?.on('data', on);
    child.stderr?.on('data', on);
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${what} exited (${code}):\n${out}`)); });
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

async function startMetalbox(): Promise<Server> {
  const child = spawn('taskset', ['-c', SERVER_CPU, process.execPath, '--import', TSX, join(ROOT, 'src/main.ts'), 'serve', '--config', config, '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NOTIFY_SOCKET: '' } });
  children.push(child);
  await waitForLine(child, /"msg":"metalbox ready"/, 'metalbox serve');
  return { name: 'metalbox serve', url: `http://127.0.0.1:${mbxPort}/boot/assets/bench/kernel`, pids: () => [child.pid!], stop: () => stopChild(child) };
}

async function startBootHttp(body: string, chunk: number): Promise<Server> {
  const port = await freePort();
  const child = spawn('taskset', ['-c', SERVER_CPU, process.execPath, '--import', TSX, join(ROOT, 'test/helpers/boot-http-server.ts'), stateDir, String(port), String(chunk), body], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  await waitForLine(child, /listening \d+/, 'boot-http-server');
  return { name: variantName(body, chunk), url: `http://127.0.0.1:${port}/boot/assets/bench/kernel`, pids: () => [child.pid!], stop: () => stopChild(child) };
}

async function startNginx(): Promise<Server> {
  const port = await freePort();
  const dir = join(work, 'nginx');
  execFileSync('mkdir', ['-p', dir]);
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, nginxConf(dir, port, work, 'application/octet-stream'));
  const child = spawn('taskset', ['-c', SERVER_CPU, 'nginx', '-c', conf, '-p', dir, '-e', join(dir, 'error.log')], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  // nginx prints nothing when it starts: wait until it answers.
  for (let i = 0; ; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/initrd.img`).then((r) => r.ok, () => false);
    if (ok) break;
    if (i > 100 || child.exitCode !== null) throw new Error(`nginx did not start: ${readFileSync(join(dir, 'error.log'), 'utf8')}`);
    await sleep(100);
  }
  const pids = () => [child.pid!, ...childPids(child.pid!)];
  return { name: 'nginx (1 worker, sendfile)', url: `http://127.0.0.1:${port}/bench.img`, pids, stop: () => stopChild(child) };
}

/** Children of a process (nginx's worker), from /proc. */
function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try { out.push(...readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)); } catch { /* gone */ }
  }
  return out;
}

interface Run { gibPerSec: number; cpuPerGib: number; cpuShare: number; requests: number }

async function measure(server: Server): Promise<Run> {
  // A short warm-up (V8 compiles the hot path; nginx opens its file cache).
  execFileSync('taskset', ['-c', LOAD_CPU, 'wrk', '-t1', '-c8', '-d2s', '--timeout', '30s', server.url], { encoding: 'utf8' });
  const pids = server.pids();
  const cpu0 = pids.reduce((s, p) => s + (procSample(p)?.cpuSeconds ?? 0), 0);
  const out = execFileSync('taskset', ['-c', LOAD_CPU, 'wrk', '-t1', '-c8', `-d${SECONDS}s`, '--timeout', '30s', server.url], { encoding: 'utf8' });
  const cpu1 = pids.reduce((s, p) => s + (procSample(p)?.cpuSeconds ?? 0), 0);
  const m = /(\d+) requests in ([\d.]+)(m?s), ([\d.]+)([KMGT]?B) read/.exec(out);
  if (!m) throw new Error(`cannot parse wrk output:\n${out}`);
  const seconds = Number(m[2]) * (m[3] === 'ms' ? 1e-3 : 1);
  const unit = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 }[m[5]!]!;
  const gib = (Number(m[4]) * unit) / 1024 ** 3;
  const errors = /Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)/.exec(out);
  if (errors) process.stderr.write(`warning (${server.name}): ${errors[0]}\n`);
  return { gibPerSec: gib / seconds, cpuPerGib: (cpu1 - cpu0) / gib, cpuShare: (cpu1 - cpu0) / seconds, requests: Number(m[1]) };
}

type Starter = () => Promise<Server>;
function variantName(body: string, bytes: number): string {
  return `boot-http ${body}, ${bytes / 1024} KiB`;
}
const starters: [string, Starter][] = [
  ['nginx (1 worker, sendfile)', startNginx],
  ['metalbox serve', startMetalbox],
  ...VARIANTS.map((v): [string, Starter] => [variantName(v.body, v.bytes), () => startBootHttp(v.body, v.bytes)]),
];
const results = new Map<string, Run[]>(starters.map(([n]) => [n, []]));

process.stdout.write(`${SIZE / 1024 / 1024} MiB file, wrk -t1 -c8 -d${SECONDS}s, ${ROUNDS} round(s); server on CPU ${SERVER_CPU}, wrk on CPU ${LOAD_CPU}\n`);
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 === 0 ? starters : [...starters].reverse();
  for (const [name, start] of order) {
    const server = await start();
    try {
      const run = await measure(server);
      results.get(name)!.push(run);
      process.stdout.write(`round ${round + 1}: ${name.padEnd(30)} ${run.gibPerSec.toFixed(2)} GiB/s  ${run.cpuPerGib.toFixed(3)} CPU s/GiB  server ${(100 * run.cpuShare).toFixed(0)}% busy\n`);
    } finally {
      await server.stop();
    }
  }
}

// "vs nginx" pairs each run with nginx's run of the same round (the machine's load drifts between rounds);
// nginx and metalbox serve always run next to each other (first two, or last two when the order is reversed).
const nginxRuns = results.get(starters[0]![0])!;
const nginxCpu = median(nginxRuns.map((r) => r.cpuPerGib));
const rows = starters.map(([name]) => {
  const runs = results.get(name)!;
  return [
    name,
    median(runs.map((r) => r.gibPerSec)).toFixed(2),
    `${(100 * median(runs.map((r, i) => r.gibPerSec / nginxRuns[i]!.gibPerSec))).toFixed(0)}%`,
    median(runs.map((r) => r.cpuPerGib)).toFixed(3),
    `${(median(runs.map((r) => r.cpuPerGib)) / nginxCpu).toFixed(1)}x`,
    `${(100 * median(runs.map((r) => r.cpuShare))).toFixed(0)}%`,
  ];
});
process.stdout.write(`\nmedians over ${ROUNDS} round(s)\n${formatTable(['server', 'GiB/s', 'vs nginx (same round)', 'CPU s per GiB', 'CPU vs nginx', 'server busy'], rows)}\n`);
