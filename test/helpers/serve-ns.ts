// `metalbox serve` (src/main.ts, from source) inside a lab namespace, for the rate-limit tests: started until
// "metalbox ready", its log, /metrics (curl inside the namespace), its resident memory (/proc), and a stop.
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { Lab } from './netns.ts';
import { ROOT } from './process.ts';

export interface Served {
  child: ChildProcess;
  log(): string;
  /** /metrics as `name{labels}` -> value. */
  metrics(): Promise<Map<string, number>>;
  /** VmRSS and VmHWM of the server process, MiB. */
  memory(): { rssMiB: number; peakMiB: number };
  stop(): Promise<void>;
}

/** The two-namespace lab these tests share: srv (p0 10.77.0.1/24, the server) and cl (q0 10.77.0.50/24, the peers). */
export interface ServerLab {
  L: Lab;
  dir: string;
  srv: string;
  cl: string;
  /** A TFTP root in `dir` holding hello.txt ("hello\n"). */
  tftpRoot: string;
  /**
   * The config these tests start from: state in `dir`, HTTP and HTTPS on every address, p0, 10.77.0.0/24 with the
   * dynamic range `range`, logs at info; then `extra` (YAML lines: the keys under test).
   */
  config(range: string, extra: string): string;
  /** Starts `metalbox serve` in srv with this config (and node flags); stopped, with the lab and `dir`, at the test's end. */
  serve(yaml: string, nodeArgs?: string[]): Promise<Served>;
}

export function serverLab(t: Test, name: string): ServerLab {
  const L = new Lab(name);
  const dir = mkdtempSync(join(tmpdir(), `${name}-`));
  const held: { served?: Served } = {};
  t.teardown(async () => { await held.served?.stop(); L.destroy(); rmSync(dir, { recursive: true, force: true }); });
  const srv = L.ns('srv');
  const cl = L.ns('cl');
  L.link({ ns: srv, ifname: 'p0', cidr: '10.77.0.1/24' }, { ns: cl, ifname: 'q0', cidr: '10.77.0.50/24' });
  const tftpRoot = join(dir, 'tftp');
  mkdirSync(tftpRoot);
  writeFileSync(join(tftpRoot, 'hello.txt'), 'hello\n');
  const config = (range: string, extra: string) => `
stateDir: ${join(dir, 'state')}
http: { listen: "0.0.0.0:5240" }
https: { listen: "0.0.0.0:5443" }
interfaces: [p0]
logLevel: info
subnets:
  - cidr: 10.77.0.0/24
    dynamicRanges: ["${range}"]
${extra.trim()}
`;
  return { L, dir, srv, cl, tftpRoot, config, serve: async (yaml, nodeArgs) => (held.served = await serveIn(L, srv, dir, yaml, nodeArgs)) };
}

/** A command in a namespace, without blocking the event loop: stdout + stderr. */
export function runIn(ns: string, cmd: string, args: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 }, (_err, stdout, stderr) => resolve(`${stdout}${stderr}`));
  });
}

export async function serveIn(L: Lab, ns: string, dir: string, yaml: string, nodeArgs: string[] = []): Promise<Served> {
  const config = join(dir, 'metalbox.yaml');
  writeFileSync(config, yaml);
  const child = L.spawn(ns, process.execPath, [...nodeArgs, '--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', config], { ...process.env, NOTIFY_SOCKET: '' });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { log += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { log += d; });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`metalbox did not start:\n${log}`)), 60_000);
    child.stdout!.on('data', () => { if (log.includes('"msg":"metalbox ready"')) { clearTimeout(timer); resolve(); } });
    child.on('exit', () => { clearTimeout(timer); reject(new Error(`metalbox exited:\n${log}`)); });
  });
  const port = /listen: "[^:]+:(\d+)"/.exec(yaml)?.[1] ?? '5240';
  return {
    child,
    log: () => log,
    async metrics() {
      const text = await runIn(ns, 'curl', ['-s', '--max-time', '20', `http://127.0.0.1:${port}/metrics`]);
      const out = new Map<string, number>();
      for (const line of text.split('\n')) {
        if (line.startsWith('#') || line === '') continue;
        const i = line.lastIndexOf(' ');
        out.set(line.slice(0, i), Number(line.slice(i + 1)));
      }
      return out;
    },
    memory() {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
      return { rssMiB: kib('VmRSS') / 1024, peakMiB: kib('VmHWM') / 1024 };
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}
