// Rescue (src/agent/rescue.ts) with fake process spawning: root's authorized_keys, the host key, dropbear's
// arguments (public keys only), the 'rescue' progress with the address and host key fingerprint once it
// listens, logins reported, restarts, giving up, and a rescue without keys. The real dropbear runs in
// test/e2e/inband-bmc.test.ts (an SSH login into a rescue boot under QEMU).
import t, { type Test } from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { rescue, type RescueDeps, type Spawned } from '../../src/agent/rescue.ts';
import type { Run } from '../../src/agent/run.ts';
import type { Progress } from '../../src/agent/client.ts';
import { runAgent } from '../../src/agent/index.ts';
import { startFakeAppliance } from '../helpers/fake-appliance.ts';

const KEYS = [
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example',
  'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 backup@example',
];
const FINGERPRINT = 'SHA256:CWDwBJyiSmv4L4/1pEFuiOEuTeBTunqG7EPbp6g9kOI';
// /proc/net/tcp with a socket listening on 0.0.0.0:22 (0x0016, state 0A).
const LISTENING = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n'
  + '   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n';

class FakeChild implements Spawned {
  private lines: ((l: string) => void)[] = [];
  private resolveExit!: (v: { code: number | null; signal: string | null }) => void;
  readonly exited = new Promise<{ code: number | null; signal: string | null }>((r) => { this.resolveExit = r; });
  killed: string[] = [];
  constructor(readonly cmd: string, readonly args: string[]) {}
  onLine(fn: (l: string) => void): void { this.lines.push(fn); }
  say(line: string): void { for (const fn of this.lines) fn(line); }
  exit(code: number): void { this.resolveExit({ code, signal: null }); }
  kill(signal: NodeJS.Signals = 'SIGTERM'): void { this.killed.push(signal); this.resolveExit({ code: null, signal }); }
}

function setup(t: Test, opts: { listening?: boolean; keygen?: (args: string[]) => { code: number; stdout: string; stderr: string } } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-rescue-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const procDir = path.join(dir, 'proc');
  mkdirSync(path.join(procDir, 'net'), { recursive: true });
  writeFileSync(path.join(procDir, 'net', 'tcp'), opts.listening === false ? LISTENING.split('\n')[0]! : LISTENING);
  const ran: string[] = [];
  const run: Run = async (cmd, args) => {
    ran.push(`${cmd} ${args.join(' ')}`);
    if (cmd === 'dropbearkey' && args[0] === '-t') {
      const r = opts.keygen?.(args) ?? { code: 0, stdout: '', stderr: 'Generating 256 bit ed25519 key, this may take a while...' };
      if (r.code === 0) writeFileSync(args[3]!, 'KEY');
      return r;
    }
    if (cmd === 'dropbearkey' && args[0] === '-y') return { code: 0, stdout: `Public key portion is:\nssh-ed25519 AAAAC3Nza root@vm\nFingerprint: ${FINGERPRINT}\n`, stderr: '' };
    return { code: 127, stdout: '', stderr: `${cmd}: not found` };
  };
  const children: FakeChild[] = [];
  const progress: Progress[] = [];
  const logs: string[] = [];
  const out: string[] = [];
  const ac = new AbortController();
  const deps: RescueDeps = {
    run, spawn: (cmd, args) => { const c = new FakeChild(cmd, args); children.push(c); return c; },
    homeDir: path.join(dir, 'root'), hostKeyDir: path.join(dir, 'etc', 'dropbear'), procDir, address: '10.0.2.15',
    log: (l) => logs.push(l), out: (l) => out.push(l), progress: (p) => progress.push(p), signal: ac.signal, restartDelayMs: 10,
  };
  const until = async (what: string, ok: () => boolean) => {
    const end = performance.now() + 5000;
    while (!ok()) {
      if (performance.now() > end) throw new Error(`timed out waiting for ${what}; logs: ${logs.join(' | ')}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  return { dir, deps, ran, children, progress, logs, out, ac, until };
}

t.test('keys written for root, an ed25519 host key made, dropbear with public keys only; announced once it listens; stays until ended', async (t) => {
  const s = setup(t);
  const running = rescue({ sshKeys: KEYS }, s.deps);
  await s.until('the announcement', () => s.progress.length > 0);
  const keysFile = path.join(s.deps.homeDir, '.ssh', 'authorized_keys');
  t.equal(readFileSync(keysFile, 'utf8'), `${KEYS.join('\n')}\n`);
  t.equal(statSync(keysFile).mode & 0o777, 0o600);
  t.equal(statSync(path.dirname(keysFile)).mode & 0o777, 0o700, '~/.ssh is 0700 (dropbear refuses group/world-writable ones)');
  const hostKey = path.join(s.deps.hostKeyDir, 'dropbear_ed25519_host_key');
  t.same(s.ran, [`dropbearkey -t ed25519 -f ${hostKey}`, `dropbearkey -y -f ${hostKey}`]);
  t.equal(s.children.length, 1);
  t.equal(s.children[0]!.cmd, 'dropbear');
  t.same(s.children[0]!.args, ['-F', '-E', '-s', '-g', '-p', '22', '-r', hostKey, '-P', path.join(s.deps.hostKeyDir, 'dropbear.pid')], 'foreground, stderr log, no password logins');
  t.same(s.progress, [{ phase: 'rescue', message: `rescue: ssh root@10.0.2.15 (public key only; host key ed25519 ${FINGERPRINT})` }]);
  t.same(s.out, [`METALBOX-AGENT-RESCUE ssh=root@10.0.2.15 port=22 hostkey=${FINGERPRINT}`]);

  // A login is a timeline event; other log lines only go to the console.
  s.children[0]!.say('[231] Nov 23 07:01:02 Child connection from 10.0.2.2:40522');
  s.children[0]!.say("[231] Nov 23 07:01:03 Pubkey auth succeeded for 'root' with ssh-ed25519 key SHA256:abc from 10.0.2.2:40522");
  t.same(s.progress.slice(1), [{ phase: 'rescue', message: "Nov 23 07:01:03 Pubkey auth succeeded for 'root' with ssh-ed25519 key SHA256:abc from 10.0.2.2:40522" }]);
  t.match(s.logs.join('\n'), /dropbear: \[231\] .* Child connection from 10\.0\.2\.2/);

  let settled = false;
  void running.then(() => { settled = true; });
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(settled, 'it stays up');
  s.ac.abort();
  await running;
  t.same(s.children[0]!.killed, ['SIGTERM'], 'dropbear is stopped when the rescue ends');
});

t.test('an existing host key is kept; dropbear that exits is started again, and given up after repeated quick exits', async (t) => {
  const s = setup(t);
  mkdirSync(s.deps.hostKeyDir, { recursive: true });
  writeFileSync(path.join(s.deps.hostKeyDir, 'dropbear_ed25519_host_key'), 'OLD KEY');
  const running = rescue({ sshKeys: KEYS.slice(0, 1) }, { ...s.deps, maxQuickExits: 3 });
  const failed = running.then(() => undefined, (err: unknown) => err);
  await s.until('the first start', () => s.children.length === 1 && s.progress.length === 1);
  t.notOk(s.ran.some((r) => r.startsWith('dropbearkey -t')), 'no new host key');
  s.children[0]!.exit(1);
  await s.until('a restart', () => s.children.length === 2);
  t.match(s.logs.join('\n'), /dropbear exited \(code 1\); starting it again/);
  s.children[1]!.exit(1);
  await s.until('another restart', () => s.children.length === 3);
  s.children[2]!.exit(255);
  t.match(await failed, { code: 'AGENT_RESCUE_FAILED', message: /dropbear exited 3 times in a row within 10 s of its start \(last: code 255\)/ });
  t.equal(s.progress.length, 1, 'announced once');
});

t.test('without keys: no SSH server, said so; a host key that cannot be made fails the rescue', async (t) => {
  const s = setup(t);
  await rescue({ sshKeys: [] }, s.deps);
  t.equal(s.children.length, 0, 'no dropbear');
  t.same(s.ran, []);
  t.match(s.progress, [{ phase: 'rescue', message: /the task has no SSH keys .*: no SSH server; console only/ }]);
  t.same(s.out, ['METALBOX-AGENT-RESCUE ssh=none']);

  const k = setup(t, { keygen: () => ({ code: 127, stdout: '', stderr: 'dropbearkey: not found' }) });
  await t.rejects(rescue({ sshKeys: KEYS }, k.deps), { code: 'AGENT_RESCUE_FAILED', message: /dropbearkey -t ed25519: dropbearkey: not found/ });
  t.equal(k.children.length, 0);
});

t.test('dropbear that is missing (exit 127 at once) fails the rescue; one that does not listen is not announced', async (t) => {
  const s = setup(t, { listening: false });
  const running = rescue({ sshKeys: KEYS }, { ...s.deps, maxQuickExits: 2 }).then(() => undefined, (err: unknown) => err);
  await s.until('a start', () => s.children.length === 1);
  s.children[0]!.exit(127);
  await s.until('a restart', () => s.children.length === 2);
  s.children[1]!.exit(127);
  t.match(await running, { code: 'AGENT_RESCUE_FAILED' });
  t.same(s.progress, [], 'never announced');
  t.same(s.out, []);
});

t.test('metalbox agent in rescue: the task\'s keys, progress, then the rescue lasts until ended; no power action', async (t) => {
  const fa = await startFakeAppliance();
  t.teardown(() => fa.close());
  const s = setup(t);
  writeFileSync(path.join(s.dir, 'env'), `METALBOX_URL='${fa.url}'\nMETALBOX_TOKEN='${fa.token}'\nMETALBOX_MODE='rescue'\nMETALBOX_IP='10.0.2.15'\n`);
  fa.task = { mode: 'rescue', rescue: { sshKeys: KEYS } };
  let out = '';
  const powered: string[] = [];
  const agent = runAgent(['--env-file', path.join(s.dir, 'env')], {}, { out: (x) => { out += x; }, err: (x) => { out += x; } }, {
    power: async (a) => { powered.push(a); }, run: s.deps.run, spawn: s.deps.spawn,
    roots: { sys: '/sys', proc: s.deps.procDir, dev: '/dev' }, rescueDirs: { home: s.deps.homeDir, hostKeys: s.deps.hostKeyDir }, rescueSignal: s.ac.signal,
  });
  await s.until('dropbear', () => s.children.length === 1 && out.includes('METALBOX-AGENT-RESCUE'));
  t.match(out, /task: rescue with 2 SSH key\(s\)/);
  t.match(out, /METALBOX-AGENT-RESCUE ssh=root@10\.0\.2\.15 port=22/);
  t.equal(readFileSync(path.join(s.deps.homeDir, '.ssh', 'authorized_keys'), 'utf8'), `${KEYS.join('\n')}\n`);
  s.ac.abort();
  t.equal(await agent, 0);
  t.same(powered, []);
  t.match(fa.progress, [{ phase: 'rescue', message: /ssh root@10\.0\.2\.15/ }], 'the progress was posted before the agent ended');
  t.same(fa.done, [], 'a rescue reports no done: it is never done');

  // A malformed key in the task is refused before anything is written.
  fa.task = { mode: 'rescue', rescue: { sshKeys: ['ssh-ed25519 AAAA\nrm -rf /'] } };
  let bad = '';
  const code = await runAgent(['--env-file', path.join(s.dir, 'env')], {}, { out: (x) => { bad += x; }, err: (x) => { bad += x; } }, { power: async () => undefined, spawn: s.deps.spawn });
  t.equal(code, 1);
  t.match(bad, /AGENT_TASK_INVALID: task: rescue\.sshKeys\[0\] must be one non-empty line/);
});
