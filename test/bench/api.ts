// GET /api/v1/machines under load: 50 concurrent clients paging through filtered, sorted listings of 10,000
// and 100,000 machines in a LevelDB store, with nginx serving one such page as a static file beside it (the
// ceiling: no auth, no work, the bytes already made). Not a timed test; run it by hand (root not needed):
//
//   node --import tsx test/bench/api.ts [--sizes 10000,100000] [--seconds 10] [--rounds 3] [--connections 50] [--writes 50]
//
// Peers (Debian packages): nginx-light (nginx), wrk.
//
// - Store: each size is a fresh LevelDB state dir filled with realistic machines (host names by rack, 1-2
//   MACs, a UUID, 4-6 tags out of racks/zones/teams/hardware, a state mix like a busy rack: 55% Deployed, 20%
//   Ready, the rest spread over every other state), written in durable batches before the server starts.
// - Server: a child process (this file with --serve) that opens the store, loads the machine registry, builds
//   the app (auth on: every request carries an API token) and listens on loopback; pinned to CPU 1, wrk to CPU 0.
// - Load: `wrk -t1 -c50 -dSs --latency` with a Lua script cycling through 60 URLs: 12 filter/sort
//   combinations (state, tags, host name substring and prefix, MAC, field selection, both orders) x their
//   first 5 pages, the later pages by the cursors the server handed out. p50/p99 are wrk's (all connections).
// - Rows: the listing; the listing while 50 machines/s change (each change a durable write that also
//   invalidates the cached counts); GET /healthz (fastify with no auth and no work: the framework's floor);
//   nginx serving the first page's exact JSON. "vs nginx" is requests/s as a share of nginx's in the same
//   round. Every load runs once per round (order reversed every other round); the table has medians and the
//   p99 range over rounds. "others on its CPU" is what other processes took of the server's CPU meanwhile.
// - Then, one client at a time: first-page latency sorted by host name at each size (300 requests each).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync, readdirSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'node:http';
import { ROOT, freePort } from '../helpers/process.ts';
import { cpuTimes, formatTable, median, onCleanup, percentile, procSample, scratchRoot, nginxConf } from '../helpers/bench-util.ts';
import { openLevelStore } from '../../src/store/level-store.ts';
import { newMachineId } from '../../src/core/machine-fields.ts';
import type { State } from '../../src/core/lifecycle.ts';
import type { Machine } from '../../src/core/machines.ts';
import type { WriteOp } from '../../src/store/types.ts';

const { values } = parseArgs({
  options: {
    serve: { type: 'string' },
    port: { type: 'string' },
    sizes: { type: 'string', default: '10000,100000' },
    seconds: { type: 'string', default: '10' },
    connections: { type: 'string', default: '50' },
    writes: { type: 'string', default: '50' },
    rounds: { type: 'string', default: '3' },
  },
});
const SERVER_CPU = '1';
const LOAD_CPU = '0';
const TSX = join(ROOT, 'node_modules/tsx/dist/esm/index.mjs');

// ---------------------------------------------------------------------------------------------------------
// The server child

async function serve(stateDir: string, port: number): Promise<void> {
  const { machinesApp } = await import('../helpers/machines-app.ts');
  const store = await openLevelStore(stateDir);
  const t0 = performance.now();
  const { app, registry, headers } = await machinesApp(store, { logLevel: 'warn' });
  const loadMs = performance.now() - t0;
  await app.listen({ host: '127.0.0.1', port });
  let writer: NodeJS.Timeout | undefined;
  let writes = 0;
  const ids = Array.from({ length: registry.size }, (_, i) => registry.view('hostname').at(i).id);
  createInterface({ input: process.stdin }).on('line', (line) => {
    const [cmd, arg] = line.split(' ');
    if (cmd === 'writes') {
      clearInterval(writer);
      const rate = Number(arg);
      if (rate > 0) {
        // Tag flips on random machines: durable writes that move rows in the updatedAt view and drop cached counts.
        writer = setInterval(() => {
          const id = ids[Math.floor(Math.random() * ids.length)]!;
          const m = registry.get(id);
          if (!m) return;
          const tags = m.tags.includes('bench-flip') ? m.tags.filter((x) => x !== 'bench-flip') : [...m.tags, 'bench-flip'];
          void registry.update(id, { tags }, { actor: 'bench' }).then(() => { writes++; }, () => undefined);
        }, 1000 / rate);
      }
      process.stdout.write(`${JSON.stringify({ ok: true, writes })}\n`);
    } else if (cmd === 'micro') {
      // The listing alone, in process (no HTTP, no auth, no serialization): microseconds per call.
      const out: Record<string, number> = {};
      for (const q of JSON.parse(arg!) as string[]) {
        const params = new URLSearchParams(q);
        const list = (k: string) => params.get(k)?.split(',');
        const query = {
          ...(list('state') ? { state: list('state')! } : {}), ...(list('tag') ? { tags: list('tag')! } : {}),
          ...(params.get('mac') ? { mac: params.get('mac')! } : {}), ...(params.get('hostname') ? { hostname: params.get('hostname')! } : {}),
          ...(params.get('hostnamePrefix') ? { hostnamePrefix: params.get('hostnamePrefix')! } : {}),
          ...(params.get('sort') ? { sort: params.get('sort') as 'hostname' } : {}), ...(params.get('order') ? { order: params.get('order') as 'asc' } : {}),
          ...(params.get('limit') ? { limit: Number(params.get('limit')) } : {}), ...(params.get('cursor') ? { cursor: params.get('cursor')! } : {}),
        };
        const runs: number[] = [];
        for (let r = 0; r < 5; r++) {
          const t0 = performance.now();
          for (let i = 0; i < 200; i++) registry.list(query);
          runs.push(((performance.now() - t0) * 1000) / 200);
        }
        out[q] = runs.sort((a, b) => a - b)[2]!;
      }
      process.stdout.write(`${JSON.stringify({ micro: out })}\n`);
    } else if (cmd === 'stats') {
      process.stdout.write(`${JSON.stringify({ writes, rssMiB: process.memoryUsage().rss / 2 ** 20 })}\n`);
    }
  });
  process.on('SIGTERM', () => { clearInterval(writer); void app.close().then(() => store.close()).then(() => process.exit(0)); });
  process.stdout.write(`${JSON.stringify({ ready: true, token: headers.viewer.authorization, loadMs, machines: registry.size, rssMiB: process.memoryUsage().rss / 2 ** 20 })}\n`);
}

// ---------------------------------------------------------------------------------------------------------
// The driver

function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const STATE_MIX: [State, number][] = [
  ['Deployed', 55], ['Ready', 20], ['Allocated', 8], ['New', 4], ['Deploying', 3], ['Commissioning', 2], ['Broken', 2],
  ['FailedDeployment', 2], ['FailedCommissioning', 1.5], ['Releasing', 1], ['FailedReleasing', 1], ['Rescue', 0.5],
];
const TEAMS = ['infra', 'ml', 'web', 'db', 'ci', 'storage', 'edge', 'research'];

function machineAt(i: number, rand: () => number): Machine {
  const rack = Math.floor(i / 40);
  const hostname = `r${String(rack).padStart(4, '0')}-n${String(i % 40).padStart(2, '0')}`;
  const hex = (n: number) => n.toString(16).padStart(2, '0');
  const macs = [`52:54:${hex(i >> 24 & 255)}:${hex(i >> 16 & 255)}:${hex(i >> 8 & 255)}:${hex(i & 255)}`];
  if (rand() < 0.5) macs.push(`5e:54:${hex(i >> 24 & 255)}:${hex(i >> 16 & 255)}:${hex(i >> 8 & 255)}:${hex(i & 255)}`);
  const tags = [`rack-${String(rack % 100).padStart(2, '0')}`, `zone-${'abc'[rack % 3]}`, `team-${TEAMS[Math.floor(rand() * TEAMS.length)]}`, rand() < 0.4 ? 'nvme' : rand() < 0.5 ? 'ssd' : 'hdd', ['10g', '25g', '100g'][Math.floor(rand() * 3)]!];
  if (rand() < 0.1) tags.push('gpu');
  let x = rand() * 100;
  let state: State = 'Deployed';
  for (const [s, w] of STATE_MIX) { if ((x -= w) < 0) { state = s; break; } }
  const created = Date.UTC(2023, 0, 1) + Math.floor(rand() * 730 * 86_400_000);
  const changed = created + Math.floor(rand() * 30 * 86_400_000);
  const updated = changed + Math.floor(rand() * 86_400_000);
  const uuid = `${hex(i >> 24 & 255)}${hex(i >> 16 & 255)}${hex(i >> 8 & 255)}${hex(i & 255)}-0000-4000-8000-${String(i).padStart(12, '0')}`;
  const m: Machine = {
    id: newMachineId(), hostname, uuid, macs, state, tags,
    createdAt: new Date(created).toISOString(), updatedAt: new Date(updated).toISOString(), stateChangedAt: new Date(changed).toISOString(),
  };
  if (!['New', 'Commissioning', 'FailedCommissioning'].includes(state)) m.commissionedAt = new Date(created + 3_600_000).toISOString();
  if (['Commissioning', 'Deploying', 'Releasing'].includes(state)) m.phaseDeadline = new Date(changed + 1_800_000).toISOString();
  if (state.startsWith('Failed')) m.stateReason = `${state.slice(6)} timed out: no report by ${new Date(changed).toISOString()}`;
  if (state === 'Rescue') m.rescueReturn = 'Deployed';
  return m;
}

async function fill(stateDir: string, n: number): Promise<number> {
  const t0 = performance.now();
  const store = await openLevelStore(stateDir);
  const rand = rng(n);
  for (let i = 0; i < n; i += 2000) {
    const ops: WriteOp[] = [];
    for (let j = i; j < Math.min(n, i + 2000); j++) {
      const m = machineAt(j, rand);
      ops.push({ type: 'put', collection: 'machines', key: m.id, value: m });
    }
    await store.write(ops);
  }
  await store.close();
  return performance.now() - t0;
}

interface Server { child: ChildProcess; port: number; token: string; loadMs: number; rssMiB: number; command(line: string): Promise<Record<string, unknown>> }

async function startServer(stateDir: string): Promise<Server> {
  const port = await freePort();
  const child = spawn('taskset', ['-c', SERVER_CPU, process.execPath, '--import', TSX, join(ROOT, 'test/bench/api.ts'), '--serve', stateDir, '--port', String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  const lines = createInterface({ input: child.stdout! });
  const pending: ((v: Record<string, unknown>) => void)[] = [];
  let first: ((v: Record<string, unknown>) => void) | undefined;
  const ready = new Promise<Record<string, unknown>>((r) => { first = r; });
  lines.on('line', (line) => {
    let v: Record<string, unknown>;
    try { v = JSON.parse(line) as Record<string, unknown>; } catch { process.stderr.write(`server: ${line}\n`); return; }
    if (v.ready) first?.(v);
    else pending.shift()?.(v);
  });
  const info = await Promise.race([ready, new Promise<never>((_, rej) => child.once('exit', (c) => rej(new Error(`server exited ${c}`))))]);
  return {
    child, port, token: String(info.token), loadMs: Number(info.loadMs), rssMiB: Number(info.rssMiB),
    command: (line) => new Promise((r) => { pending.push(r); child.stdin!.write(`${line}\n`); }),
  };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

const agent = new Agent({ keepAlive: true, maxSockets: 1 });
function get(port: number, path: string, token: string | undefined): Promise<{ status: number; body: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request({ host: '127.0.0.1', port, path, agent, headers: token ? { authorization: token } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - t0 }));
    });
    req.on('error', reject);
    req.end();
  });
}

const QUERIES = (mac: string) => [
  '?limit=50',
  '?state=Deployed&limit=50',
  '?state=Ready&sort=updatedAt&order=desc&limit=50',
  '?tag=gpu&limit=50',
  '?tag=rack-07&state=Deployed&limit=50',
  '?hostname=n07&limit=50',
  '?hostnamePrefix=r0012&limit=50',
  '?state=Broken,FailedDeployment&sort=state&limit=50',
  '?sort=createdAt&order=desc&limit=50&fields=id,hostname,state',
  `?mac=${mac}`,
  '?tag=nvme,25g&order=desc&limit=100',
  '?state=Deployed&tag=zone-b&hostname=7&limit=50',
];

async function urls(port: number, token: string, mac: string): Promise<string[]> {
  const out: string[] = [];
  for (const q of QUERIES(mac)) {
    let path = `/api/v1/machines${q}`;
    for (let page = 0; page < 5; page++) {
      const res = await get(port, path, token);
      if (res.status !== 200) throw new Error(`${path}: ${res.status} ${res.body}`);
      out.push(path);
      const next = (JSON.parse(res.body) as { next: string | null }).next;
      if (next === null) break;
      path = `/api/v1/machines${q}&cursor=${next}`;
    }
  }
  return out;
}

interface WrkRun { rps: number; p50: number; p99: number; requests: number; cpu: number; others: number }

function toMs(v: string, unit: string): number {
  return Number(v) * ({ us: 1e-3, ms: 1, s: 1000, m: 60_000 }[unit] ?? Number.NaN);
}

function wrk(url: string, script: string | undefined, seconds: number, pids: number[]): WrkRun {
  const args = ['-c', LOAD_CPU, 'wrk', '-t1', `-c${CONNECTIONS}`, '--latency', '--timeout', '10s', ...(script ? ['-s', script] : [])];
  execFileSync('taskset', [...args, '-d2s', url], { encoding: 'utf8' }); // warm-up: V8 compiles the hot path
  const cpu0 = pids.reduce((s, p) => s + (procSample(p)?.cpuSeconds ?? 0), 0);
  const busy0 = cpuTimes()[Number(SERVER_CPU)]!.busy;
  const out = execFileSync('taskset', [...args, `-d${seconds}s`, url], { encoding: 'utf8' });
  const cpu1 = pids.reduce((s, p) => s + (procSample(p)?.cpuSeconds ?? 0), 0);
  const busy1 = cpuTimes()[Number(SERVER_CPU)]!.busy;
  const errors = /Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)/.exec(out);
  if (errors) throw new Error(`wrk ${url}: ${errors[0]}\n${out}`);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /50%\s+([\d.]+)(us|ms|s|m)\b/.exec(out);
  const p99 = /99%\s+([\d.]+)(us|ms|s|m)\b/.exec(out);
  const n = /(\d+) requests in/.exec(out);
  if (!rps || !p50 || !p99 || !n) throw new Error(`cannot parse wrk output:\n${out}`);
  return { rps: Number(rps[1]), p50: toMs(p50[1]!, p50[2]!), p99: toMs(p99[1]!, p99[2]!), requests: Number(n[1]), cpu: (cpu1 - cpu0) / seconds, others: Math.max(0, (busy1 - busy0) - (cpu1 - cpu0)) / seconds };
}

async function startNginx(root: string): Promise<{ port: number; child: ChildProcess; pids: () => number[] }> {
  const port = await freePort();
  const dir = join(root, 'nginx');
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, nginxConf(dir, port, root, 'application/json'));
  const child = spawn('taskset', ['-c', SERVER_CPU, 'nginx', '-c', conf, '-p', dir, '-e', join(dir, 'error.log')], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  for (let i = 0; ; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/page.json`).then((r) => r.ok, () => false);
    if (ok) break;
    if (i > 100 || child.exitCode !== null) throw new Error(`nginx did not start: ${readFileSync(join(dir, 'error.log'), 'utf8')}`);
    await sleep(100);
  }
  return { port, child, pids: () => [child.pid!, ...childPids(child.pid!)] };
}

function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try { out.push(...readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)); } catch { /* gone */ }
  }
  return out;
}

const children: ChildProcess[] = [];
let CONNECTIONS = 50;

async function main(): Promise<void> {
  for (const tool of ['nginx', 'wrk', 'taskset']) {
    try { execFileSync('sh', ['-c', `command -v ${tool}`]); } catch { throw new Error(`${tool} is missing (apt-get install nginx-light wrk util-linux)`); }
  }
  const sizes = values.sizes!.split(',').map(Number);
  const seconds = Number(values.seconds);
  CONNECTIONS = Number(values.connections);
  const writeRate = Number(values.writes);
  const rounds = Number(values.rounds);
  const work = mkdtempSync(join(await scratchRoot(), 'mbx-api-bench-'));
  chmodSync(work, 0o755); // nginx's worker runs as nobody
  onCleanup(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    rmSync(work, { recursive: true, force: true });
  });
  process.stdout.write(`wrk -t1 -c${CONNECTIONS} -d${seconds}s --latency; server on CPU ${SERVER_CPU}, wrk on CPU ${LOAD_CPU}; Node ${process.versions.node}\n`);

  const rows: string[][] = [];
  const firstPage: string[][] = [];
  const setup: string[][] = [];
  const micro: string[][] = [];
  for (const n of sizes) {
    const stateDir = join(work, `state-${n}`);
    const fillMs = await fill(stateDir, n);
    const server = await startServer(stateDir);
    const pids = () => [server.child.pid!, ...childPids(server.child.pid!)];
    const base = `http://127.0.0.1:${server.port}`;
    const list = await urls(server.port, server.token, '52:54:00:00:00:07');
    const script = join(work, `paths-${n}.lua`);
    writeFileSync(script, `wrk.headers["Authorization"] = ${JSON.stringify(server.token)}
local paths = { ${list.map((u) => JSON.stringify(u)).join(',\n  ')} }
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
`);
    const pageBody = (await get(server.port, list[0]!, server.token)).body;
    const firstPages = QUERIES('52:54:00:00:00:07');
    const deep = list.filter((u) => u.includes('cursor=')).slice(0, 2).map((u) => u.slice('/api/v1/machines?'.length));
    const micro1 = (await server.command(`micro ${JSON.stringify([...firstPages.map((q) => q.slice(1)), ...deep])}`)).micro as Record<string, number>;
    Object.entries(micro1).forEach(([q, us], i) => {
      const label = q.includes('cursor=') ? `${q.replace(/&?cursor=[^&]*/, '')} (a later page)` : q;
      const row = micro[i] ?? (micro[i] = [label]);
      row.push(us.toFixed(1));
    });
    writeFileSync(join(work, 'page.json'), pageBody, { mode: 0o644 });

    // One client at a time: the first page sorted by host name.
    for (const [what, q] of [['first page by host name, 50 rows', '?sort=hostname&limit=50'], ['same, descending', '?sort=hostname&order=desc&limit=50'],
      ['first page by host name, 1000 rows', '?sort=hostname&limit=1000'], ['by host name, filter hostname=n3 + tag=gpu', '?sort=hostname&hostname=n3&tag=gpu&limit=50']] as const) {
      const ms: number[] = [];
      for (let i = 0; i < 300; i++) {
        const r = await get(server.port, `/api/v1/machines${q}`, server.token);
        if (r.status !== 200) throw new Error(`${q}: ${r.status}`);
        ms.push(r.ms);
      }
      ms.sort((a, b) => a - b);
      firstPage.push([n.toLocaleString('en-US'), what, percentile(ms, 50).toFixed(2), percentile(ms, 99).toFixed(2)]);
    }

    // Rounds, each running every load once (the order reversed every other round); figures are medians over
    // rounds, with the p99 range, since a GC pause or a neighbour on this shared machine moves one run's p99.
    const nginx = await startNginx(work);
    const loads: { name: string; run: () => Promise<WrkRun> }[] = [
      { name: `GET /api/v1/machines (${list.length} paged+filtered URLs)`, run: async () => wrk(`${base}/api/v1/machines`, script, seconds, pids()) },
      ...(writeRate > 0 ? [{
        name: `same, while ${writeRate} machines/s change`,
        run: async () => {
          const before = Number((await server.command('stats')).writes);
          await server.command(`writes ${writeRate}`);
          const r = wrk(`${base}/api/v1/machines`, script, seconds, pids());
          await server.command('writes 0');
          const done = Number((await server.command('stats')).writes) - before;
          if (done < writeRate * seconds * 0.8) process.stderr.write(`warning: only ${done} writes in ${seconds} s\n`);
          return r;
        },
      }] : []),
      { name: 'GET /healthz (framework floor)', run: async () => wrk(`${base}/healthz`, undefined, seconds, pids()) },
      { name: 'nginx, the first page as a static file', run: async () => wrk(`http://127.0.0.1:${nginx.port}/page.json`, undefined, seconds, nginx.pids()) },
    ];
    const results = new Map<string, WrkRun[]>(loads.map((l) => [l.name, []]));
    for (let round = 0; round < rounds; round++) {
      for (const l of round % 2 === 0 ? loads : [...loads].reverse()) results.get(l.name)!.push(await l.run());
    }
    const rss = Number((await server.command('stats')).rssMiB);
    await stopChild(server.child);
    await stopChild(nginx.child);

    const peer = results.get(loads.at(-1)!.name)!;
    for (const l of loads) {
      const runs = results.get(l.name)!;
      const p99s = runs.map((r) => r.p99).sort((x, y) => x - y);
      const cpuPerReq = median(runs.map((r) => r.cpu / r.rps));
      rows.push([n.toLocaleString('en-US'), l.name, median(runs.map((r) => r.rps)).toFixed(0), median(runs.map((r) => r.p50)).toFixed(2),
        median(p99s).toFixed(2), runs.length > 1 ? `${p99s[0]!.toFixed(0)}-${p99s.at(-1)!.toFixed(0)}` : '',
        `${(100 * median(runs.map((r, i) => r.rps / peer[i]!.rps))).toFixed(0)}%`, `${(100 * median(runs.map((r) => r.cpu))).toFixed(0)}%`,
        (cpuPerReq * 1e6).toFixed(0), `${(100 * median(runs.map((r) => r.others))).toFixed(0)}%`]);
    }
    setup.push([n.toLocaleString('en-US'), `${(fillMs / 1000).toFixed(1)} s`, `${(server.loadMs / 1000).toFixed(2)} s`, `${server.rssMiB.toFixed(0)} MiB`, `${rss.toFixed(0)} MiB`, `${(Buffer.byteLength(pageBody) / 1024).toFixed(1)} KiB`]);
    process.stdout.write(`${n} machines done\n`);
  }
  process.stdout.write(`\n${formatTable(['machines', 'store fill', 'registry load', 'server RSS at start', 'RSS after', 'first page'], setup)}\n`);
  process.stdout.write(`\nmedians over ${rounds} round(s)\n${formatTable(['machines', 'load', 'req/s', 'p50 ms', 'p99 ms', 'p99 range', 'vs nginx req/s (same round)', 'server CPU', 'CPU µs/req', 'others on its CPU'], rows)}\n`);
  process.stdout.write(`\nthe listing alone (registry.list in the server process, no HTTP/auth/JSON), µs per call, median of 5 x 200\n${formatTable(['query', ...sizes.map((n) => n.toLocaleString('en-US'))], micro)}\n`);
  process.stdout.write(`\none client, 300 requests each (keep-alive, auth on)\n${formatTable(['machines', 'request', 'p50 ms', 'p99 ms'], firstPage)}\n`);
}

if (values.serve !== undefined) await serve(values.serve, Number(values.port));
else await main();
