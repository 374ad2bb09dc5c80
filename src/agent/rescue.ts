// Rescue: the ephemeral environment as a place to repair the machine from, reached by SSH with the keys of the
// rescue task (the rescue request's, else the machine's deployment's; .notes/agent-contract.md). The agent
// writes /root/.ssh/authorized_keys, makes an ed25519 host key, runs dropbear on port 22 with public-key
// logins only (-s -g: no passwords at all), tells the appliance where to log in (progress phase 'rescue', with
// the host key's fingerprint so the first login need not be taken on trust), and stays: it keeps dropbear
// running (restarting it should it exit) and echoes its log, logins included, on the console. The machine
// leaves Rescue by the appliance powering it off or booting its disk.
//
// Without keys there is nothing to log in with: the agent says so and returns (then /init holds with a console
// shell when booted with metalbox.hold=1, else powers off).

import { spawn as nodeSpawn } from 'node:child_process';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Progress } from './client.ts';
import { AgentError } from './errors.ts';
import { firstLine, type Run } from './run.ts';
import { exists, readAttr } from './sysfs.ts';

export interface RescueTask {
  /** authorized_keys lines for root. */
  sshKeys: string[];
}

/** A started process as rescue needs it. */
export interface Spawned {
  /** Each line the process writes (stdout and stderr). */
  onLine(fn: (line: string) => void): void;
  exited: Promise<{ code: number | null; signal: string | null }>;
  kill(signal?: NodeJS.Signals): void;
}

export type Spawn = (cmd: string, args: string[]) => Spawned;

/** child_process.spawn as a Spawned; a missing program exits with 127 (as from a shell). */
export const spawnProgram: Spawn = (cmd, args) => {
  const child = nodeSpawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const listeners: ((line: string) => void)[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    readline.createInterface({ input: stream }).on('line', (l) => { for (const fn of listeners) fn(l); });
  }
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) => {
      for (const fn of listeners) fn(`${cmd}: ${err.message}`);
      resolve({ code: err.code === 'ENOENT' ? 127 : 126, signal: null });
    });
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  return { onLine: (fn) => { listeners.push(fn); }, exited, kill: (s) => { child.kill(s); } };
};

export interface RescueDeps {
  run: Run;
  spawn: Spawn;
  /** root's home (/root) and dropbear's key directory (/etc/dropbear). */
  homeDir: string;
  hostKeyDir: string;
  /** /proc, for the listening check. */
  procDir: string;
  /** Where the machine is (METALBOX_IP), for the message. */
  address: string | undefined;
  port?: number;
  log: (line: string) => void;
  /** Console marker lines. */
  out: (line: string) => void;
  progress: (p: Progress) => void;
  /** Ends the rescue (tests). Production never ends it: the appliance powers the machine off. */
  signal?: AbortSignal;
  restartDelayMs?: number;
  /** Starts in a row that ended within `quickExitMs` before giving up. */
  maxQuickExits?: number;
  quickExitMs?: number;
}

const KEY_TYPE = 'ed25519';

/** Runs the rescue; resolves when `signal` aborts (or at once without keys); AGENT_RESCUE_FAILED when it cannot. */
export async function rescue(task: RescueTask, d: RescueDeps): Promise<void> {
  const port = d.port ?? 22;
  if (task.sshKeys.length === 0) {
    const why = 'rescue: the task has no SSH keys (deploy keys or the rescue request\'s sshKeys): no SSH server; console only (metalbox.hold=1)';
    d.log(why);
    d.progress({ phase: 'rescue', message: why });
    d.out('METALBOX-AGENT-RESCUE ssh=none');
    return;
  }

  // authorized_keys: dropbear, like OpenSSH, refuses it when it or ~/.ssh is writable by others.
  const sshDir = path.join(d.homeDir, '.ssh');
  await mkdir(sshDir, { recursive: true, mode: 0o700 });
  await chmod(sshDir, 0o700);
  const keysFile = path.join(sshDir, 'authorized_keys');
  await writeFile(keysFile, `${task.sshKeys.join('\n')}\n`, { mode: 0o600 });
  await chmod(keysFile, 0o600);

  await mkdir(d.hostKeyDir, { recursive: true, mode: 0o700 });
  const hostKey = path.join(d.hostKeyDir, `dropbear_${KEY_TYPE}_host_key`);
  if (!(await exists(hostKey))) {
    const made = await d.run('dropbearkey', ['-t', KEY_TYPE, '-f', hostKey], { timeoutMs: 60_000 });
    if (made.code !== 0) throw new AgentError('AGENT_RESCUE_FAILED', `dropbearkey -t ${KEY_TYPE}: ${firstLine(made)}`);
  }
  const pub = await d.run('dropbearkey', ['-y', '-f', hostKey], { timeoutMs: 30_000 });
  const fingerprint = /Fingerprint: (\S+)/.exec(pub.stdout)?.[1];
  if (pub.code !== 0 || fingerprint === undefined) throw new AgentError('AGENT_RESCUE_FAILED', `dropbearkey -y: ${firstLine(pub)}`);

  // -F foreground (we supervise it), -E log to stderr (our console), -s -g no password logins at all.
  const args = ['-F', '-E', '-s', '-g', '-p', String(port), '-r', hostKey, '-P', path.join(d.hostKeyDir, 'dropbear.pid')];
  const maxQuick = d.maxQuickExits ?? 5;
  const quickMs = d.quickExitMs ?? 10_000;
  let quick = 0;
  let announced = false;
  for (;;) {
    const started = performance.now();
    const child = d.spawn('dropbear', args);
    child.onLine((line) => {
      d.log(`dropbear: ${line}`);
      // A login is worth a timeline event (who got in, from where); dropbear's words: "Pubkey auth succeeded for 'root' ...".
      if (/auth succeeded/i.test(line)) d.progress({ phase: 'rescue', message: line.replace(/^\[\d+\]\s*/, '').slice(0, 400) });
    });
    const aborted = new Promise<'aborted'>((resolve) => {
      if (d.signal?.aborted) resolve('aborted');
      d.signal?.addEventListener('abort', () => resolve('aborted'), { once: true });
    });
    if (!announced) {
      const watching = new AbortController();
      const up = await Promise.race([listening(d.procDir, port, 10_000, watching.signal), child.exited.then(() => false), aborted.then(() => false)]);
      watching.abort();
      if (!up && !d.signal?.aborted) d.log(`dropbear is not listening on port ${port} (yet?)`);
      if (up) {
        announced = true;
        const where = d.address !== undefined ? `ssh root@${d.address}${port === 22 ? '' : ` -p ${port}`}` : `ssh as root on port ${port}`;
        const message = `rescue: ${where} (public key only; host key ${KEY_TYPE} ${fingerprint})`;
        d.log(message);
        d.progress({ phase: 'rescue', message });
        d.out(`METALBOX-AGENT-RESCUE ssh=root@${d.address ?? 'unknown'} port=${port} hostkey=${fingerprint}`);
      }
    }
    const ended = await Promise.race([child.exited, aborted]);
    if (ended === 'aborted') {
      child.kill('SIGTERM');
      await Promise.race([child.exited, sleep(5000, undefined, { ref: false })]);
      return;
    }
    const how = ended.signal !== null ? `signal ${ended.signal}` : `code ${ended.code}`;
    quick = performance.now() - started < quickMs ? quick + 1 : 0;
    if (quick >= maxQuick) throw new AgentError('AGENT_RESCUE_FAILED', `dropbear exited ${quick} times in a row within ${quickMs / 1000} s of its start (last: ${how})`);
    d.log(`dropbear exited (${how}); starting it again`);
    await Promise.race([sleep(d.restartDelayMs ?? 2000), aborted]);
    if (d.signal?.aborted) return;
  }
}

/** Whether something listens on TCP `port` (any address, IPv4 or IPv6): /proc/net/tcp{,6} state 0A (LISTEN). */
async function listening(procDir: string, port: number, timeoutMs: number, stop: AbortSignal): Promise<boolean> {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const until = performance.now() + timeoutMs;
  for (;;) {
    for (const f of ['tcp', 'tcp6']) {
      const table = await readAttr(path.join(procDir, 'net', f));
      if (table?.split('\n').some((l) => { const c = l.trim().split(/\s+/); return c[1]?.endsWith(`:${hex}`) && c[3] === '0A'; })) return true;
    }
    if (performance.now() > until || stop.aborted) return false;
    await sleep(100);
  }
}
