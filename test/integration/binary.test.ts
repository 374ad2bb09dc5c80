// dist/metalbox runs on its own: copied alone into an empty directory, with a PATH where no `node` can be
// found and a HOME, cwd, state dir and runtime dir inside that directory. Everything it needs (the bundle,
// the LevelDB addon, our native module) must travel inside it.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../helpers/process.ts';
import { BINARY, ensureBinary as buildBinary } from '../helpers/binary.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/** Builds when missing or stale (test/helpers/binary.ts); false (after failing) when the build fails. */
function ensureBinary(): boolean {
  try {
    const figures = buildBinary();
    if (figures) t.comment(figures);
    return true;
  } catch (err) {
    t.fail((err as Error).message);
    return false;
  }
}

interface Sandbox {
  dir: string;
  exe: string;
  env: NodeJS.ProcessEnv;
}

/** An empty directory holding only a copy of the binary; an environment that leads nowhere else. */
function sandbox(t: { teardown(fn: () => void): void }): Sandbox {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mbx-binary-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const exe = path.join(dir, 'metalbox');
  fs.copyFileSync(BINARY, exe);
  fs.chmodSync(exe, 0o755);
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  return {
    dir,
    exe,
    // Not inherited from this process: no NODE_OPTIONS, NODE_PATH, npm_* or NOTIFY_SOCKET leak in.
    env: { PATH: bin, HOME: dir, METALBOX_RUNTIME_DIR: path.join(dir, 'run'), METALBOX_STATE_DIR: path.join(dir, 'state'), LANG: 'C' },
  };
}

interface Ran { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

function run(box: Sandbox, args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(box.exe, args, { cwd: box.dir, env: { ...box.env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

interface Server { child: ChildProcess; output(): string; exited: Promise<Ran> }

/** `metalbox serve --config FILE`, resolved once /healthz answers 200. */
async function serve(box: Sandbox, configFile: string, port: number, extraEnv: NodeJS.ProcessEnv = {}): Promise<Server> {
  const child = spawn(box.exe, ['serve', '--config', configFile], { cwd: box.dir, env: { ...box.env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
  child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
  const exited = new Promise<Ran>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  const server: Server = { child, output: () => `stdout:\n${stdout}\nstderr:\n${stderr}`, exited };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`serve exited early (${child.exitCode ?? child.signalCode})\n${server.output()}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`no 200 on /healthz within 30 s\n${server.output()}`);
    }
    const res = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined);
    if (res?.status === 200) return server;
    await sleep(20);
  }
}

async function stop(server: Server): Promise<Ran> {
  server.child.kill('SIGTERM');
  return server.exited;
}

/** A receiver for sd_notify datagrams (socat, else python3), or undefined when neither is installed. */
function notifyPeer(address: string): { received(): string; close(): void } | undefined {
  const has = (cmd: string) => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0 || spawnSync(cmd, ['-V'], { stdio: 'ignore' }).status === 0;
  let child: ChildProcess;
  if (has('socat')) {
    child = spawn('socat', ['-u', `ABSTRACT-RECV:${address.slice(1)}`, '-'], { stdio: ['ignore', 'pipe', 'ignore'] });
  } else if (has('python3')) {
    const py = "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind('\\0'+sys.argv[1][1:])\nwhile True:\n  sys.stdout.write(s.recv(65536).decode()); sys.stdout.flush()";
    child = spawn('python3', ['-c', py, address], { stdio: ['ignore', 'pipe', 'ignore'] });
  } else {
    return undefined;
  }
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => { out += c; });
  return { received: () => out, close: () => { child.kill(); } };
}

async function bound(address: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!fs.readFileSync('/proc/net/unix', 'utf8').split('\n').some((l) => l.endsWith(` ${address}`))) {
    if (Date.now() > deadline) throw new Error(`nothing bound ${address}`);
    await sleep(20);
  }
}

function sha256File(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

if (ensureBinary()) {
t.test('the sandbox really has no node', async (t) => {
  const box = sandbox(t);
  const which = spawnSync('/bin/sh', ['-c', 'command -v node'], { env: box.env });
  t.not(which.status, 0, 'node is not on PATH');
});

t.test('(a) metalbox version', async (t) => {
  const box = sandbox(t);
  const r = await run(box, ['version']);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.trim(), `metalbox ${VERSION}`);
  t.equal(r.stderr, '', 'no ExperimentalWarning or other noise');
});

t.test('(b)(c) serve answers /healthz; settings and instanceId survive restarts', async (t) => {
  const box = sandbox(t);
  const port = await freePort();
  const configFile = path.join(box.dir, 'metalbox.yaml');
  fs.writeFileSync(configFile, `http:\n  listen: "127.0.0.1:${port}"\nhttps:\n  listen: "127.0.0.1:0"\n`);

  // No server runs: the CLI opens the store itself.
  const set = await run(box, ['settings', 'set', 'site.name', 'rack-7']);
  t.equal(set.code, 0, `settings set: ${set.stderr}`);

  const address = `@mbx-binary-${process.pid}-${randomBytes(4).toString('hex')}`;
  const peer = notifyPeer(address);
  if (peer !== undefined) {
    t.teardown(() => peer.close());
    await bound(address);
  }
  const first = await serve(box, configFile, port, peer === undefined ? {} : { NOTIFY_SOCKET: address });
  const health = await fetch(`http://127.0.0.1:${port}/healthz`);
  t.equal(health.status, 200);
  // The API wants HTTPS and a login (test/integration/serve.test.ts); the instance id is also a setting,
  // read here through the control socket of the running binary.
  const v1 = { instanceId: (await run(box, ['settings', 'get', 'system.instanceId'])).stdout.trim() };
  t.match(v1.instanceId, /^[0-9a-f-]{36}$/, 'serve made an instanceId at first start');
  t.equal((await fetch(`http://127.0.0.1:${port}/api/v1/version`, { redirect: 'manual' })).status, 308, 'plain HTTP redirects the API to HTTPS');
  // With the server running the CLI goes through its control socket (the server holds the store lock).
  const during = await run(box, ['settings', 'get', 'site.name']);
  t.equal(during.stdout.trim(), 'rack-7', `settings get while serving: ${during.stderr}`);
  const threadsOf = (server: Server) => fs.readdirSync(`/proc/${server.child.pid}/task`).length;
  const firstThreads = threadsOf(first);
  const firstExit = await stop(first);
  t.equal(firstExit.code, 0, `first serve exits 0 on SIGTERM\n${first.output()}`);
  t.match(peer?.received(), /READY=1[^]*STOPPING=1/, 'READY=1 then STOPPING=1 reached NOTIFY_SOCKET', { skip: peer === undefined && 'neither socat nor python3 is installed' });

  // src/lib/threadpool.ts: 16 libuv pool threads, 12 more than with UV_THREADPOOL_SIZE=4 (libuv's default); an
  // explicit size is kept.
  const second = await serve(box, configFile, port, { UV_THREADPOOL_SIZE: '4' });
  t.equal(firstThreads - threadsOf(second), 12, `16 pool threads: ${firstThreads} threads, ${threadsOf(second)} with UV_THREADPOOL_SIZE=4`);
  const v2 = { instanceId: (await run(box, ['settings', 'get', 'system.instanceId'])).stdout.trim() };
  t.equal(v2.instanceId, v1.instanceId, 'instanceId is the same after a restart');
  const secondExit = await stop(second);
  t.equal(secondExit.code, 0, `second serve exits 0 on SIGTERM\n${second.output()}`);

  const get = await run(box, ['settings', 'get', 'site.name']);
  t.equal(get.code, 0, get.stderr);
  t.equal(get.stdout.trim(), 'rack-7', 'the value survived two restarts');
});

t.test('(d) addons are written once, by hash, into a private dir', async (t) => {
  const box = sandbox(t);
  const runDir = box.env.METALBOX_RUNTIME_DIR as string;
  // Any store command needs LevelDB, hence the classic-level addon. (Our own module is loaded only when
  // NOTIFY_SOCKET is set; the serve test above covers it.)
  const first = await run(box, ['settings', 'set', 'site.name', 'x']);
  t.equal(first.code, 0, first.stderr);

  t.equal(fs.statSync(runDir).mode & 0o777, 0o700, 'runtime dir is 0700');
  const prebuild = path.join(ROOT, 'node_modules', 'classic-level', 'prebuilds', 'linux-x64', 'classic-level.node');
  const expected = `classic_level-${sha256File(prebuild).slice(0, 16)}.node`;
  const files = fs.readdirSync(runDir);
  t.ok(files.includes(expected), `${expected} in ${files.join(', ')}`);
  for (const f of files) {
    t.match(f, /^[a-z_]+-[0-9a-f]{16}\.node$/, 'only hash-named addons, no temp files');
    t.equal(fs.statSync(path.join(runDir, f)).mode & 0o777, 0o600, `${f} is 0600`);
  }
  const before = fs.statSync(path.join(runDir, expected));

  const second = await run(box, ['settings', 'get', 'site.name']);
  t.equal(second.code, 0, second.stderr);
  t.equal(second.stdout.trim(), 'x');
  const after = fs.statSync(path.join(runDir, expected));
  t.equal(after.ino, before.ino, 'the second run reuses the file');
  t.equal(after.mtimeMs, before.mtimeMs, 'and does not rewrite it');
  t.same(fs.readdirSync(runDir), files, 'no new files');

  // A damaged copy is replaced, not loaded.
  fs.writeFileSync(path.join(runDir, expected), 'not an ELF file');
  const third = await run(box, ['settings', 'get', 'site.name']);
  t.equal(third.code, 0, third.stderr);
  t.equal(sha256File(path.join(runDir, expected)), sha256File(prebuild));

  // An unsafe runtime dir is refused with ADDON_LOAD_FAILED.
  fs.chmodSync(runDir, 0o777);
  const refused = await run(box, ['settings', 'get', 'site.name']);
  t.not(refused.code, 0);
  t.match(refused.stderr, /ADDON_LOAD_FAILED/);
});

// The sandbox's PATH leads nowhere, so the tools are named by absolute path.
const unshare = ['/usr/bin/unshare', '/bin/unshare'].find((f) => fs.existsSync(f));
const mount = ['/usr/bin/mount', '/bin/mount'].find((f) => fs.existsSync(f));
t.test('(e) with node and node_modules hidden by a mount namespace', { skip: (process.getuid?.() !== 0 || unshare === undefined || mount === undefined) && 'needs root, unshare and mount' }, async (t) => {
  if (unshare === undefined || mount === undefined) return;
  const box = sandbox(t);
  // Over the real node binary and every node_modules this machine has, mount nothing.
  const hide = [process.execPath, path.join(ROOT, 'node_modules'), '/usr/lib/node_modules', '/usr/local/lib/node_modules']
    .filter((p) => fs.existsSync(p))
    .map((p) => (fs.statSync(p).isDirectory() ? `${mount} -t tmpfs none ${p}` : `${mount} --bind /dev/null ${p}`));
  const script = `${hide.join(' && ')} && exec ${box.exe} settings set site.name hidden`;
  const set = spawnSync(unshare, ['--mount', '--propagation', 'private', '/bin/sh', '-c', script], { cwd: box.dir, env: box.env, encoding: 'utf8' });
  t.equal(set.status, 0, `settings set with node hidden: ${set.stderr}`);
  const get = spawnSync(unshare, ['--mount', '--propagation', 'private', '/bin/sh', '-c', `${hide.join(' && ')} && exec ${box.exe} settings get site.name`], { cwd: box.dir, env: box.env, encoding: 'utf8' });
  t.equal(get.stdout.trim(), 'hidden', get.stderr);
});
}
