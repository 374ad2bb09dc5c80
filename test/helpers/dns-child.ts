// Drives test/helpers/dns-server.ts from a test: starts it (optionally inside a namespace), waits for its ready
// line, sends it commands and reads their answers, stops it.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ROOT } from './process.ts';

export interface DnsChild {
  child: ChildProcess;
  pid: number;
  /** One command (see dns-server.ts); resolves with its answer line. */
  send(cmd: Record<string, unknown>): Promise<Record<string, unknown>>;
  stderr(): string;
  stop(): Promise<void>;
}

export async function startDnsServer(config: string, opts: { ns?: string; seed?: string; env?: NodeJS.ProcessEnv; prefix?: string[] } = {}): Promise<DnsChild> {
  // METALBOX_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR" profiles the server (as the DHCP bench does).
  const nodeArgs = (process.env.METALBOX_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const node = [process.execPath, ...nodeArgs, '--import', 'tsx', `${ROOT}test/helpers/dns-server.ts`, config, ...(opts.seed ? [opts.seed] : [])];
  const argv = [...(opts.prefix ?? []), ...(opts.ns ? ['ip', 'netns', 'exec', opts.ns] : []), ...node];
  const child = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const waiting: ((line: Record<string, unknown>) => void)[] = [];
  let onReady: ((line: Record<string, unknown>) => void) | undefined;
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let o: Record<string, unknown>;
    try { o = JSON.parse(line) as Record<string, unknown>; } catch { return; }
    if (o.ready) onReady?.(o);
    else waiting.shift()?.(o);
  });
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`dns server did not start:\n${err}`)), 60_000);
    onReady = (o) => { clearTimeout(timer); resolve(o); };
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`dns server exited (${code}):\n${err}`)); });
  });
  return {
    child,
    pid: Number(ready.pid),
    send: (cmd) => new Promise((resolve) => { waiting.push(resolve); child.stdin!.write(`${JSON.stringify(cmd)}\n`); }),
    stderr: () => err,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
