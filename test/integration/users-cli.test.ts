// `metalbox users create|list|delete|passwd` on a real LevelDB state dir: straight on the store when no
// metalbox runs, and through a real control socket when one holds the store (the lock keeps the CLI out,
// so only the socket can have done it). The first admin made here logs in through the API. Passwords come
// from METALBOX_PASSWORD, --password-file and standard input, never from argv.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { buildApp } from '../../src/api/app.ts';
import { userControlHandlers, runUsers, type UserFlags } from '../../src/cli/users.ts';
import { defaultConfig } from '../../src/config/load.ts';
import { createAuthCore } from '../../src/core/auth.ts';
import { EventLog } from '../../src/core/events.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { ControlService } from '../../src/services/control.ts';
import { openLevelStore } from '../../src/store/level-store.ts';
import type { EventRecord } from '../../src/store/types.ts';
import { ROOT } from '../helpers/process.ts';

function setup(t: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-users-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = defaultConfig(join(dir, 'state'));
  const controlPath = join(config.stateDir, 'control.sock');
  const out: string[] = [];
  const err: string[] = [];
  const io = { out: (s: string) => { out.push(s); }, err: (s: string) => { err.push(s); } };
  const users = (args: string[], flags: UserFlags = {}) => runUsers(args, flags, config, io, controlPath);
  return { dir, config, controlPath, out, err, io, users };
}

/** The child that dispatches like main.ts, with real standard input and environment. */
function child(stateDir: string, args: string[], opts: { env?: NodeJS.ProcessEnv; stdin?: string } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/users-cli-child.ts'), stateDir, ...args], {
      cwd: ROOT, env: { ...process.env, METALBOX_PASSWORD: '', ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    c.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    c.stdin.end(opts.stdin ?? '');
    c.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('no metalbox running: the CLI opens the store; the first admin; list; last-admin rule; passwd', async (t) => {
  const s = setup(t);
  t.equal(await s.users(['list']), 0);
  t.match(s.out.join(''), /no users \(metalbox users create NAME --admin/);
  t.equal(await s.users(['create', 'root'], { admin: true, passwordEnv: 'first-admin-password' }), 0);
  t.match(s.out.join(''), /user root created \(admin, id usr_/);
  t.equal(await s.users(['create', 'olga'], { role: 'operator', passwordEnv: 'olga-long-password' }), 0);
  s.out.length = 0;
  t.equal(await s.users(['list']), 0);
  t.match(s.out.join(''), /^USER +ROLE +CREATED +PASSWORD CHANGED +ID\nolga +operator .*\nroot +admin /);
  await t.rejects(s.users(['delete', 'root']), { code: 'USER_LAST_ADMIN' });
  await t.rejects(s.users(['create', 'root'], { role: 'viewer', passwordEnv: 'another-password' }), { code: 'USER_EXISTS' });
  await t.rejects(s.users(['create', 'Bad Name'], { role: 'viewer', passwordEnv: 'another-password' }), { code: 'USER_INVALID' });
  await t.rejects(s.users(['create', 'shorty'], { role: 'viewer', passwordEnv: 'short' }), { code: 'USER_INVALID', message: /password/ });
  await t.rejects(s.users(['create', 'norole'], { passwordEnv: 'long-enough-password' }), { code: 'CLI_USAGE', message: /--role/ });
  await t.rejects(s.users(['create', 'both'], { admin: true, role: 'viewer', passwordEnv: 'long-enough-password' }), { code: 'CLI_USAGE', message: /disagree/ });
  await t.rejects(s.users(['create', 'argv'], { role: 'viewer', password: 'in-the-process-list' }), { code: 'CLI_USAGE', message: /ps, \/proc/ });
  await t.rejects(s.users(['create', 'nopw'], { role: 'viewer' }), { code: 'CLI_USAGE', message: /no password/ }, 'standard input is no terminal here');
  await t.rejects(s.users(['list', 'extra']), { code: 'CLI_USAGE' });
  await t.rejects(s.users(['list'], { role: 'admin' }), { code: 'CLI_USAGE', message: /go with users create/ });
  t.equal(await s.users(['passwd', 'olga'], { passwordEnv: 'olga-new-password' }), 0);
  t.equal(await s.users(['delete', 'olga']), 0);
  t.match(s.out.join(''), /user olga deleted/);

  // What it left in the store: hashes only, and audit events naming the shell user.
  const store = await openLevelStore(s.config.stateDir);
  t.teardown(() => store.close());
  const root = await store.users.getBy('username', 'root');
  t.match(root, { username: 'root', role: 'admin', passwordHash: /^\$scrypt\$ln=15,r=8,p=1\$/ });
  const events: EventRecord[] = [];
  for await (const [, e] of store.events.entries()) events.push(e);
  t.same(events.map((e) => e.type), ['user.created', 'user.created', 'user.updated', 'user.deleted']);
  t.ok(events.every((e) => e.actor === `cli:${userInfo().username}` && e.data?.via === 'cli'), 'actor cli:<shell user>');
  t.notMatch(JSON.stringify(events), /first-admin-password|olga-long-password|olga-new-password|\$scrypt/, 'no password or hash in events');
});

t.test('metalbox running: the CLI goes through the control socket; the user logs in through the API', async (t) => {
  const s = setup(t);
  const store = await openLevelStore(s.config.stateDir);
  let closed = false;
  t.teardown(async () => { if (!closed) await store.close(); });
  const events = new EventLog(store);
  await events.init();
  const core = createAuthCore({ store, events });
  const lines: string[] = [];
  const logger = createLogger('trace', new Writable({ write(c, _e, cb) { lines.push(String(c)); cb(); } }));
  const control = new ControlService(s.controlPath, userControlHandlers(core), logger);
  await control.start();
  t.teardown(() => control.stop());

  // The store is locked by this process: only the socket can do this.
  const pwFile = join(s.dir, 'pw');
  writeFileSync(pwFile, 'root-password-from-a-file\n');
  chmodSync(pwFile, 0o644);
  t.equal(await s.users(['create', 'root'], { admin: true, 'password-file': pwFile }), 0);
  t.match(s.err.join(''), /readable by group or others \(chmod 600/, 'a loose password file is pointed out');
  t.ok(await core.users.find('root'), 'the server made the user');
  t.equal(await s.users(['create', 'vic'], { role: 'viewer', passwordEnv: 'viewer-password-1' }), 0);
  await t.rejects(s.users(['delete', 'root']), { code: 'USER_LAST_ADMIN' }, 'the error code crosses the socket');

  const app = await buildApp({
    logger, metrics: createMetrics({ processMetrics: false }), version: 'x', instanceId: () => 'i',
    readiness: () => ({ phase: 'running', services: {} }), auth: core,
  });
  t.teardown(() => app.close());
  const login = await app.inject({ method: 'POST', url: '/api/v1/login', payload: { username: 'root', password: 'root-password-from-a-file' } });
  t.equal(login.statusCode, 200, 'the trailing newline of the file is not part of the password');
  const cookie = String(login.headers['set-cookie']).split(';')[0]!;
  const list = await app.inject({ method: 'GET', url: '/api/v1/users', headers: { cookie } });
  t.same(list.json().users.map((u: { username: string }) => u.username), ['root', 'vic']);

  // passwd through the socket ends the user's sessions.
  t.equal(await s.users(['passwd', 'root'], { passwordEnv: 'root-password-number-2' }), 0);
  t.equal((await app.inject({ method: 'GET', url: '/api/v1/users', headers: { cookie } })).statusCode, 401);
  t.equal(await s.users(['delete', 'vic']), 0);
  t.notOk(lines.join('').includes('root-password'), 'no password in the server log');

  // After the server stops, the CLI opens the store itself and sees the same users.
  await control.stop();
  await app.close();
  await store.close();
  closed = true;
  s.out.length = 0;
  t.equal(await s.users(['list']), 0);
  t.match(s.out.join(''), /^USER.*\nroot +admin /);
  t.notMatch(s.out.join(''), /vic/);
});

t.test('dispatched like main: METALBOX_PASSWORD, --password-file - from standard input, exit codes', async (t) => {
  const s = setup(t);
  const env = await child(s.config.stateDir, ['create', 'root', '--admin'], { env: { METALBOX_PASSWORD: 'env-admin-password' } });
  t.equal(env.code, 0, env.stderr);
  const piped = await child(s.config.stateDir, ['create', 'olga', '--role', 'operator', '--password-file', '-'], { stdin: 'piped-olga-password\n' });
  t.equal(piped.code, 0, piped.stderr);
  const usage = await child(s.config.stateDir, ['create', 'x', '--role', 'viewer', '--password', 'visible-in-ps']);
  t.equal(usage.code, 2);
  t.match(usage.stderr, /^metalbox: CLI_USAGE: --password would show the password/);
  const last = await child(s.config.stateDir, ['delete', 'root']);
  t.equal(last.code, 1);
  t.match(last.stderr, /^metalbox: USER_LAST_ADMIN: root is the last admin/);

  const store = await openLevelStore(s.config.stateDir);
  t.teardown(() => store.close());
  const core = createAuthCore({ store, events: new EventLog(store) });
  t.ok(await core.users.authenticate('root', 'env-admin-password'), 'the password from METALBOX_PASSWORD');
  t.ok(await core.users.authenticate('olga', 'piped-olga-password'), 'the password from standard input, newline stripped');
});
