// DNS queries per second and server CPU per query: metalbox, BIND 9 and dnsmasq serving the same 10,000 A and
// 10,000 PTR records, side by side in one run, each driven by dnsperf. Not a timed test; run it by hand, as root:
//
//   node --import tsx test/bench/dns.ts [--seconds S] [--rounds K] [--warmup W] [--servers metalbox,bind,dnsmasq]
//       [--clients C] [--outstanding Q] [--records N]
//
// Defaults: --seconds 10 --rounds 2 --warmup 3 --clients 10 --outstanding 100 --records 10000 (PEERS.md: dnsperf
// -c 10 -T 1 -q 100 -l 10). Peers (Debian packages): bind9 (named), dnsmasq-base (dnsmasq), dnsperf.
//
// Everything runs in one network namespace this script creates and removes (also on failure and Ctrl-C), on
// its loopback, 127.0.0.1:53: one server at a time, pinned to CPU 1 (taskset), dnsperf pinned to CPU 0.
//
// The data: host-00000 ... host-09999.bench.test A 10.10.1.0 ... and the PTR of each address in
// 10.10.in-addr.arpa, TTL 60. The queries: every A name and every PTR name once, shuffled (seeded), 20,000
// lines that dnsperf cycles through.
// - metalbox: test/helpers/dns-server.ts (the DNS service as main.ts wires it) with 10,000 bound DHCP leases
//   in its store, each with its host name: the records are the ones metalbox makes from leases.
// - bind: named -g -n 1 (one worker thread, as metalbox has one JS thread), two primary zones from zone
//   files, recursion no, minimal-responses yes (metalbox sends no authority/additional data with a positive
//   answer either), no query log: BIND at its leanest.
// - bind-stock: the same zones with BIND's defaults (a worker thread per CPU, minimal-responses
//   no-auth-recursive), as PEERS.md ran it.
// - dnsmasq: the names in an --addn-hosts file (dnsmasq makes the PTRs from it), --local for both zones,
//   --local-ttl 60.
//
// Fairness: same CPU, same query file, same dnsperf settings; a warm-up run of --warmup seconds before each
// measured one (V8 compiles metalbox's hot path; BIND and dnsmasq warm their caches); rounds alternate the
// order of the servers. CPU per query is utime+stime of the server process (all threads, /proc/PID/stat) over
// the measured dnsperf run divided by the queries dnsperf completed. Every run must answer 100% NOERROR, or
// the figures are flagged. The summary prints medians over rounds and metalbox's CPU per query over BIND's.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Lab, canBuildLab, sh } from '../helpers/netns.ts';
import { startDnsServer, type DnsChild } from '../helpers/dns-child.ts';
import { formatTable, formatThreadTimes, median, onCleanup, procSample, threadTimes } from '../helpers/bench-util.ts';

type ServerName = 'metalbox' | 'bind' | 'bind-stock' | 'dnsmasq';
const SERVERS: readonly ServerName[] = ['metalbox', 'bind', 'bind-stock', 'dnsmasq'];
const SERVER_CPU = '1';
const LOAD_CPU = '0';
const DOMAIN = 'bench.test';
const REVERSE = '10.10.in-addr.arpa';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    warmup: { type: 'string', default: '3' },
    servers: { type: 'string', default: SERVERS.join(',') },
    clients: { type: 'string', default: '10' },
    outstanding: { type: 'string', default: '100' },
    records: { type: 'string', default: '10000' },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const warmup = Number(values.warmup);
const clients = Number(values.clients);
const outstanding = Number(values.outstanding);
const records = Number(values.records);
const servers = values.servers.split(',').map((s) => s.trim()) as ServerName[];
if (![seconds, rounds, clients, outstanding, records].every((n) => Number.isInteger(n) && n >= 1) || !Number.isInteger(warmup) || warmup < 0
  || records > 60_000 || servers.some((s) => !SERVERS.includes(s))) {
  throw new TypeError(`usage: dns.ts [--seconds S] [--rounds K] [--warmup W] [--servers ${SERVERS.join(',')}] [--clients C] [--outstanding Q] [--records N<=60000]`);
}

const lab = canBuildLab();
if (!lab.ok) throw new Error(`cannot run: ${lab.why}`);
for (const [tool, pkg] of [['dnsperf', 'dnsperf'], ['named', 'bind9'], ['dnsmasq', 'dnsmasq-base'], ['dig', 'bind9-dnsutils'], ['taskset', 'util-linux']]) {
  if (sh('sh', ['-c', `command -v ${tool}`], { allowFail: true }).trim() === '') throw new Error(`${tool} is missing: apt-get install ${pkg}`);
}

// ---------------------------------------------------------------------------------------------------------
// The data, the same for every server

const hosts = Array.from({ length: records }, (_, i) => {
  const n = i + 256;
  return { name: `host-${String(i).padStart(5, '0')}`, ip: `10.10.${n >> 8}.${n & 255}`, ptr: `${n & 255}.${n >> 8}.${REVERSE}` };
});

function shuffled<T>(list: T[]): T[] {
  let seed = 42;
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const j = seed % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

const dir = mkdtempSync(join(tmpdir(), 'mbx-dns-bench-'));
const L = new Lab('mbxq');
const cleanup = onCleanup(() => { L.destroy(); rmSync(dir, { recursive: true, force: true }); });
const ns = L.ns('dns');

const queries = join(dir, 'queries.txt');
writeFileSync(queries, shuffled([...hosts.map((h) => `${h.name}.${DOMAIN} A`), ...hosts.map((h) => `${h.ptr} PTR`)]).join('\n') + '\n');

writeFileSync(join(dir, 'metalbox.yaml'), `
stateDir: ${join(dir, 'state')}
http: { listen: "0.0.0.0:5240" }
interfaces: [lo]
domain: ${DOMAIN}
logLevel: warn
subnets:
  - cidr: 10.10.0.0/16
dns: { enabled: true, port: 53, ttl: 60 }
dhcp: { enabled: false }
tftp: { enabled: false }
ntp: { enabled: false }
`);
const expires = new Date(Date.now() + 365 * 86_400_000).toISOString();
writeFileSync(join(dir, 'seed.json'), JSON.stringify({
  leases: hosts.map((h, i) => ({ ip: h.ip, mac: `52:54:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`, subnet: '10.10.0.0/16', expiresAt: expires, hostname: h.name, state: 'bound' })),
}));

const soa = `@ IN SOA ns.${DOMAIN}. hostmaster.${DOMAIN}. 1 3600 600 1209600 60\n@ IN NS ns.${DOMAIN}.\n`;
writeFileSync(join(dir, 'forward.zone'), `$TTL 60\n${soa}ns IN A 127.0.0.1\n${hosts.map((h) => `${h.name} IN A ${h.ip}`).join('\n')}\n`);
writeFileSync(join(dir, 'reverse.zone'), `$TTL 60\n${soa}${hosts.map((h) => `${h.ptr}. IN PTR ${h.name}.${DOMAIN}.`).join('\n')}\n`);
writeFileSync(join(dir, 'named.conf'), `
options {
  directory "${dir}";
  pid-file "${dir}/named.pid";
  session-keyfile "${dir}/session.key";
  listen-on port 53 { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  minimal-responses yes;
  notify no;
  dnssec-validation no;
  querylog no;
};
controls { };
zone "${DOMAIN}" { type primary; file "${dir}/forward.zone"; };
zone "${REVERSE}" { type primary; file "${dir}/reverse.zone"; };
`);
// bind-stock: BIND as a package installs it (PEERS.md's figures): its own worker threads, default minimal-responses.
writeFileSync(join(dir, 'named-stock.conf'), readFileSync(join(dir, 'named.conf'), 'utf8').replace('  minimal-responses yes;\n', ''));
writeFileSync(join(dir, 'hosts'), `${hosts.map((h) => `${h.ip} ${h.name}.${DOMAIN}`).join('\n')}\n`);

// ---------------------------------------------------------------------------------------------------------
// Servers

interface Running { pid: number; stop: () => Promise<void> }

async function waitAnswer(): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const out = L.exec(ns, 'dig', ['@127.0.0.1', '+short', '+tries=1', '+time=1', `${hosts[records - 1]!.name}.${DOMAIN}`, 'A'], { allowFail: true }).trim();
    if (out === hosts[records - 1]!.ip) return;
    await sleep(200);
  }
  throw new Error('the server did not answer within 60 s');
}

function spawned(child: ChildProcess): Running {
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { err = (err + d).slice(-4000); });
  return {
    pid: child.pid!,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
      if (child.exitCode !== 0 && child.signalCode !== 'SIGTERM' && err) process.stderr.write(`server stderr:\n${err}\n`);
    },
  };
}

async function start(name: ServerName): Promise<Running> {
  let r: Running;
  if (name === 'metalbox') {
    const child: DnsChild = await startDnsServer(join(dir, 'metalbox.yaml'), { ns, seed: join(dir, 'seed.json'), prefix: ['taskset', '-c', SERVER_CPU] });
    r = { pid: child.pid, stop: child.stop };
  } else if (name === 'bind' || name === 'bind-stock') {
    // ip netns exec execs named, so the pid is named's own.
    const conf = join(dir, name === 'bind' ? 'named.conf' : 'named-stock.conf');
    r = spawned(L.spawn(ns, 'taskset', ['-c', SERVER_CPU, 'named', '-g', ...(name === 'bind' ? ['-n', '1'] : []), '-c', conf]));
  } else {
    r = spawned(L.spawn(ns, 'taskset', ['-c', SERVER_CPU, 'dnsmasq', '--no-daemon', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--user=root', '--pid-file=',
      '--listen-address=127.0.0.1', '--bind-interfaces', '--port=53', `--addn-hosts=${join(dir, 'hosts')}`, `--local=/${DOMAIN}/`, `--local=/${REVERSE}/`, '--local-ttl=60']));
  }
  await waitAnswer();
  return r;
}

// ---------------------------------------------------------------------------------------------------------
// dnsperf

interface Perf { qps: number; completed: number; lost: number; noerror: number; text: string }

function dnsperf(secs: number): Perf {
  const text = execFileSync('ip', ['netns', 'exec', ns, 'taskset', '-c', LOAD_CPU, 'dnsperf', '-s', '127.0.0.1', '-p', '53', '-d', queries,
    '-c', String(clients), '-T', '1', '-q', String(outstanding), '-l', String(secs)], { encoding: 'utf8', maxBuffer: 16 << 20 });
  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? Number.NaN);
  return {
    qps: num(/Queries per second:\s+([\d.]+)/),
    completed: num(/Queries completed:\s+(\d+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    noerror: num(/NOERROR (\d+)/),
    text,
  };
}

interface Result { server: ServerName; round: number; qps: number; usPerQuery: number; lost: number; allNoerror: boolean; rssMiB: number }

const results: Result[] = [];
process.stdout.write(`dns bench: ${records} A + ${records} PTR records, dnsperf -c ${clients} -T 1 -q ${outstanding} -l ${seconds}, ${rounds} round(s), warm-up ${warmup} s; server on CPU ${SERVER_CPU}, dnsperf on CPU ${LOAD_CPU}\n`);
try {
  for (let round = 1; round <= rounds; round++) {
    const order = round % 2 === 1 ? servers : [...servers].reverse();
    for (const name of order) {
      const server = await start(name);
      try {
        if (warmup > 0) dnsperf(warmup);
        const threadsBefore = threadTimes(server.pid);
        const before = procSample(server.pid);
        const perf = dnsperf(seconds);
        const after = procSample(server.pid);
        const threads = formatThreadTimes(threadTimes(server.pid), threadsBefore);
        if (!before || !after) throw new Error(`${name} (pid ${server.pid}) vanished during the run`);
        const cpu = after.cpuSeconds - before.cpuSeconds;
        const r: Result = {
          server: name, round, qps: perf.qps, usPerQuery: (cpu / perf.completed) * 1e6, lost: perf.lost,
          allNoerror: perf.noerror === perf.completed, rssMiB: after.peakRssKiB / 1024,
        };
        results.push(r);
        process.stdout.write(`round ${round} ${name.padEnd(8)} ${r.qps.toFixed(0).padStart(7)} qps  ${r.usPerQuery.toFixed(2).padStart(6)} us CPU/query  lost ${r.lost}  ${r.allNoerror ? 'all NOERROR' : `NOT ALL NOERROR (${perf.noerror}/${perf.completed})`}  peak RSS ${r.rssMiB.toFixed(0)} MiB  threads: ${threads}\n`);
        if (!r.allNoerror) process.stdout.write(perf.text);
      } finally {
        await server.stop();
      }
    }
  }
} finally {
  cleanup();
}

const rows = servers.map((name) => {
  const mine = results.filter((r) => r.server === name);
  return { name, qps: median(mine.map((r) => r.qps)), us: median(mine.map((r) => r.usPerQuery)), rss: median(mine.map((r) => r.rssMiB)), ok: mine.every((r) => r.allNoerror) };
});
process.stdout.write(`\n${formatTable(['server', 'qps (median)', 'µs CPU/query', 'peak RSS MiB', 'answers'], rows.map((r) => [r.name, r.qps.toFixed(0), r.us.toFixed(2), r.rss.toFixed(0), r.ok ? 'all NOERROR' : 'ERRORS']))}\n`);
const mb = rows.find((r) => r.name === 'metalbox');
const bind = rows.find((r) => r.name === 'bind');
if (mb && bind) process.stdout.write(`\nmetalbox / BIND (-n 1, minimal-responses) CPU per query: ${(mb.us / bind.us).toFixed(2)}x (goal: <= 1.00); qps ${(mb.qps / bind.qps).toFixed(2)}x\n`);
const stock = rows.find((r) => r.name === 'bind-stock');
if (mb && stock) process.stdout.write(`metalbox / BIND (stock settings) CPU per query: ${(mb.us / stock.us).toFixed(2)}x; qps ${(mb.qps / stock.qps).toFixed(2)}x\n`);
