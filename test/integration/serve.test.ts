// `metalbox serve` as an operator and systemd see it: start, readiness, control socket, failures that
// must end with a clear message and a non-zero exit, and a stop within 10 s.
import t, { type Test } from 'tap';
import { mkdtempSync, writeFileSync, rmSync, chmodSync, mkdirSync, existsSync, statSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { get as httpGet } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runSource, freePort, getJson, requestTls, type Running } from '../helpers/process.ts';

const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({ ...process.env, NOTIFY_SOCKET: '', ...extra });

function workdir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-serve-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function configFile(dir: string, extra = ''): Promise<{ file: string; port: number; httpsPort: number }> {
  const port = await freePort();
  const httpsPort = await freePort();
  const file = join(dir, 'metalbox.yaml');
  writeFileSync(file, `stateDir: ${join(dir, 'state')}\nhttp: { listen: "127.0.0.1:${port}" }\nhttps: { listen: "127.0.0.1:${httpsPort}" }\nlogLevel: info\n${extra}`);
  return { file, port, httpsPort };
}

async function stop(t: Test, r: Running): Promise<void> {
  if (r.child.exitCode !== null) return;
  const t0 = Date.now();
  r.child.kill('SIGTERM');
  const code = await r.exited;
  t.equal(code, 0, 'SIGTERM ends with exit 0');
  t.ok(Date.now() - t0 < 10_000, `stopped in ${Date.now() - t0} ms (< 10 s)`);
}

t.test('serve: healthz, readyz, version, metrics; control socket; graceful stop', async (t) => {
  const dir = workdir(t);
  const { file, port, httpsPort } = await configFile(dir);
  // The first admin, made before the first start (the store is not locked yet).
  const admin = runSource(['users', 'create', 'root', '--admin', '--config', file], { env: env({ METALBOX_PASSWORD: 'root-password-for-serve' }) });
  t.equal(await admin.exited, 0, admin.stderr());
  const r = runSource(['serve', '--config', file], { env: env() });
  t.teardown(() => { r.child.kill('SIGKILL'); });
  await r.waitFor(/"msg":"metalbox ready"/);
  const base = `http://127.0.0.1:${port}`;
  const secure = `https://127.0.0.1:${httpsPort}`;
  // The self-signed certificate made at first start: its fingerprint is in the log and in `status`.
  const fingerprint = (/"fingerprint":"([0-9A-F:]{95})"/.exec(r.stdout()) ?? [])[1]!;
  t.match(fingerprint, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);

  t.same(await getJson(`${base}/healthz`), { status: 200, body: { status: 'ok' } });
  const ready = await getJson(`${base}/readyz`);
  t.equal(ready.status, 200);
  t.same((ready.body as { services: unknown }).services, { control: 'running', http: 'running', bmc: 'running', machines: 'running', lifecycle: 'running' });
  // Plain HTTP serves only firmware and scrapers: anything else is redirected to the same path over HTTPS.
  const redirect = await fetch(`${base}/api/v1/version?x=1`, { redirect: 'manual' });
  t.equal(redirect.status, 308);
  t.equal(redirect.headers.get('location'), `https://127.0.0.1:${httpsPort}/api/v1/version?x=1`);
  // fetch cannot set Host: ask with node:http as a browser would after typing the box's name.
  const browserLocation = await new Promise<string | undefined>((resolve, reject) => {
    httpGet({ host: '127.0.0.1', port, path: '/', headers: { host: 'metalbox.rack.internal:5240' } }, (res) => { res.resume(); resolve(res.headers.location); }).on('error', reject);
  });
  t.equal(browserLocation, `https://metalbox.rack.internal:${httpsPort}/`, 'the name the browser used');
  t.equal((await requestTls(`${secure}/api/v1/version`, fingerprint)).status, 401, 'the API wants a login');
  const login = async () => {
    const res = await requestTls(`${secure}/api/v1/login`, fingerprint, { method: 'POST', body: { username: 'root', password: 'root-password-for-serve' } });
    t.equal(res.status, 200, 'login over HTTPS');
    return { cookie: String(res.headers['set-cookie']).split(';')[0]! };
  };
  const versionAnswer = await requestTls(`${secure}/api/v1/version`, fingerprint, { headers: await login() });
  t.equal(versionAnswer.fingerprint, fingerprint);
  const version = versionAnswer.body as { name: string; instanceId: string };
  t.equal(version.name, 'metalbox');
  t.match(version.instanceId, /^[0-9a-f-]{36}$/);
  const metrics = (await getJson(`${base}/metrics`)).body as string;
  t.match(metrics, /metalbox_service_up\{service="http"\} 1/);
  t.match(metrics, /metalbox_store_syncs_total \d+/);
  t.match(metrics, /metalbox_process_resident_memory_bytes/);

  // Logs are JSON lines with a child logger per service.
  const lines = r.stdout().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.ok(lines.some((l) => l.svc === 'http'), 'service child loggers tag their lines');

  // While serving, the CLI goes through the control socket (the store is locked by serve).
  const sock = join(dir, 'state', 'control.sock');
  t.equal(statSync(sock).mode & 0o777, 0o600, 'control socket is 0600');
  t.equal(statSync(join(dir, 'state')).mode & 0o777, 0o700, 'state dir is 0700');
  const set = runSource(['settings', 'set', 'site.name', 'rack-7', '--config', file], { env: env() });
  t.equal(await set.exited, 0, set.stderr());
  const get = runSource(['settings', 'get', 'site.name', '--config', file], { env: env() });
  t.equal(await get.exited, 0);
  t.equal(get.stdout(), 'rack-7\n');
  const status = runSource(['status', '--config', file], { env: env() });
  t.equal(await status.exited, 0, status.stderr());
  t.match(JSON.parse(status.stdout()), { phase: 'running', pid: r.child.pid, services: { http: 'running' }, https: { port: httpsPort, fingerprint, certificate: 'self-signed' } });
  const backupFile = join(dir, 'live.backup');
  const backup = runSource(['backup', backupFile, '--config', file], { env: env() });
  t.equal(await backup.exited, 0, backup.stderr());
  t.ok(existsSync(backupFile), 'backup taken while serving');

  await stop(t, r);
  t.notOk(existsSync(sock), 'control socket removed on stop');

  // Restart: the instance id and the setting survive.
  const again = runSource(['serve', '--config', file], { env: env() });
  t.teardown(() => { again.child.kill('SIGKILL'); });
  await again.waitFor(/"msg":"metalbox ready"/);
  const again2 = await requestTls(`${secure}/api/v1/version`, fingerprint, { headers: await login() });
  t.equal((again2.body as { instanceId: string }).instanceId, version.instanceId);
  t.equal(again2.fingerprint, fingerprint, 'the certificate (and its pin) survives a restart');
  await stop(t, again);
  const after = runSource(['settings', 'get', 'site.name', '--config', file], { env: env() });
  t.equal(await after.exited, 0, after.stderr());
  t.equal(after.stdout(), 'rack-7\n', 'read directly from the store when no server runs');

  // The live backup restores into an empty state dir.
  const restoreDir = join(dir, 'restored');
  const restore = runSource(['restore', backupFile], { env: env({ METALBOX_STATE_DIR: restoreDir }) });
  t.equal(await restore.exited, 0, restore.stderr());
  const restored = runSource(['settings', 'get', 'system.instanceId'], { env: env({ METALBOX_STATE_DIR: restoreDir }) });
  t.equal(await restored.exited, 0, restored.stderr());
  t.equal(restored.stdout().trim(), version.instanceId);
  const refuse = runSource(['restore', backupFile, '--config', file], { env: env() });
  t.equal(await refuse.exited, 1);
  t.match(refuse.stderr(), /RESTORE_TARGET_NOT_EMPTY/);
});

t.test('embedded default: no config file, state in $METALBOX_STATE_DIR', async (t) => {
  const dir = workdir(t);
  // The default listens on 127.0.0.1:5240; run it only if that port is free here.
  const probe = await fetch('http://127.0.0.1:5240/healthz').then(() => true, () => false);
  t.notOk(probe, 'port 5240 is free for this test');
  const r = runSource(['serve'], { env: env({ METALBOX_STATE_DIR: join(dir, 'st') }) });
  t.teardown(() => { r.child.kill('SIGKILL'); });
  await r.waitFor(/"msg":"metalbox ready"/);
  t.match(r.stdout(), /no provisioning interface configured/);
  t.equal((await getJson('http://127.0.0.1:5240/healthz')).status, 200);
  t.ok(existsSync(join(dir, 'st', 'db')), 'state created in METALBOX_STATE_DIR');
  await stop(t, r);
});

t.test('bad config: exit 2, message names the key path and the reason', async (t) => {
  const dir = workdir(t);
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, 'stateDir: /tmp/x\nsubnets:\n  - cidr: 10.0.0.0/24\n    gateway: 10.9.9.9\ndns: { forwarders: [resolver.example] }\n');
  const unknown = join(dir, 'unknown.yaml');
  writeFileSync(unknown, 'stateDir: /tmp/x\nhttp: { listen: "127.0.0.1:5240", port: 1 }\n');
  for (const args of [['serve', '--config', file], ['config', 'check', file]]) {
    const r = runSource(args, { env: env() });
    t.equal(await r.exited, 2, args.join(' '));
    t.match(r.stderr(), /CONFIG_INVALID/);
    t.match(r.stderr(), /subnets\[0\]\.gateway \(line 4\): 10\.9\.9\.9 is outside 10\.0\.0\.0\/24/);
    t.match(r.stderr(), /dns\.forwarders\[0\] \(line 5\): "resolver\.example" is not an IPv4 address/);
  }
  const r = runSource(['config', 'check', unknown], { env: env() });
  t.equal(await r.exited, 2);
  t.match(r.stderr(), /http\.port \(line 2\): unknown key/);
  const missing = runSource(['serve', '--config', join(dir, 'nope.yaml')], { env: env() });
  t.equal(await missing.exited, 2);
  t.match(missing.stderr(), /CONFIG_UNREADABLE: cannot read config .*nope\.yaml: ENOENT/);
  const good = runSource(['config', 'check', (await configFile(dir)).file], { env: env() });
  t.equal(await good.exited, 0);
  t.match(good.stdout(), /^ok: /);
  const usage = runSource(['serve', '--bogus'], { env: env() });
  t.equal(await usage.exited, 2);
  t.match(usage.stderr(), /CLI_USAGE/);
});

t.test('locked state dir: a second metalbox fails at once naming the holder', async (t) => {
  const dir = workdir(t);
  const { file } = await configFile(dir);
  const first = runSource(['serve', '--config', file], { env: env() });
  t.teardown(() => { first.child.kill('SIGKILL'); });
  await first.waitFor(/"msg":"metalbox ready"/);
  const { file: file2 } = await configFile(dir, '');
  // Same state dir, other port.
  const t0 = Date.now();
  const second = runSource(['serve', '--config', file2], { env: env() });
  t.equal(await second.exited, 1);
  // Generous: a tsx start on a loaded 2-core CI machine alone can take seconds. A lock wait would hang.
  t.ok(Date.now() - t0 < 30_000, 'fails at once, no retry loop');
  t.match(second.stderr(), /STATE_DIR_LOCKED/);
  t.match(second.stderr(), new RegExp(`pid ${first.child.pid}`));
  await stop(t, first);
});

t.test('unreadable state dir: clear message, exit 1', async (t) => {
  const dir = workdir(t);
  const state = join(dir, 'state');
  mkdirSync(state);
  const { file } = await configFile(dir);
  chmodSync(state, 0o000);
  chmodSync(dir, 0o755);
  // Root ignores file modes: run metalbox as nobody so the permission check is real.
  const asRoot = process.getuid?.() === 0;
  const r = runSource(['serve', '--config', file], { env: env({ HOME: dir }), ...(asRoot ? { uid: 65534, gid: 65534 } : {}) });
  t.equal(await r.exited, 1, r.stderr());
  t.match(r.stderr(), /STATE_DIR_UNUSABLE/);
  t.match(r.stderr(), new RegExp(state.replace(/[/.]/g, '\\$&')));
  t.match(r.stderr(), /EACCES|permission/i);
});

t.test('a taken port fails the start with exit 1 and the address', async (t) => {
  const dir = workdir(t);
  const { file, port } = await configFile(dir);
  const { createServer } = await import('node:net');
  const blocker = createServer().listen(port, '127.0.0.1');
  t.teardown(() => blocker.close());
  await new Promise((r) => blocker.once('listening', r));
  const r = runSource(['serve', '--config', file], { env: env() });
  t.equal(await r.exited, 1);
  t.match(r.stderr(), new RegExp(`SERVICE_START_FAILED: http: cannot listen on 127.0.0.1:${port}: EADDRINUSE`));
});

t.test('systemd: READY=1 once serving, STOPPING=1 on SIGTERM, WATCHDOG=1 at half of WatchdogSec', async (t) => {
  const dir = workdir(t);
  const { file } = await configFile(dir);
  const sockPath = join(dir, 'notify.sock');
  // socat is the receiving peer: Node cannot bind an AF_UNIX datagram socket.
  const socat = spawn('socat', ['-u', `UNIX-RECV:${sockPath}`, 'STDOUT'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => socat.kill());
  let got = '';
  socat.stdout.setEncoding('utf8').on('data', (d: string) => { got += `${d}\n`; });
  for (let i = 0; i < 50 && !existsSync(sockPath); i++) await new Promise((r) => setTimeout(r, 50));
  const r = runSource(['serve', '--config', file], { env: env({ NOTIFY_SOCKET: sockPath, WATCHDOG_USEC: '400000' }) });
  t.teardown(() => { r.child.kill('SIGKILL'); });
  await r.waitFor(/"msg":"metalbox ready"/);
  await new Promise((res) => setTimeout(res, 700));
  t.match(got, /READY=1/);
  t.ok((got.match(/WATCHDOG=1/g) ?? []).length >= 2, `watchdog pings every 200 ms: ${JSON.stringify(got)}`);
  await stop(t, r);
  await new Promise((res) => setTimeout(res, 100));
  t.match(got, /STOPPING=1/);
  t.ok(got.indexOf('READY=1') < got.indexOf('STOPPING=1'));
});
