// sd_notify through the native module, received by a real AF_UNIX datagram socket. Node cannot bind one,
// so the receiving peer is socat (CI installs it) or python3; each available peer runs the same checks,
// for a filesystem socket and for an abstract ('@') one.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildNative } from '../../image/build-binary.ts';
import { loadAddon } from '../../src/lib/addon.ts';
import { createNotifier, type NotifySender } from '../../src/lib/sd-notify.ts';

interface Native { sdNotify: NotifySender }

// The native module is a build product (gitignored): build it when missing or stale.
buildNative();
const native = loadAddon('metalbox_native') as Native;

interface Peer {
  /** Every datagram received so far, in order. */
  received(): string[];
  close(): void;
}

type PeerKind = 'socat' | 'python3';

const PY_RECEIVER = [
  'import socket, sys',
  'a = sys.argv[1]',
  's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
  "s.bind('\\0' + a[1:] if a.startswith('@') else a)",
  'while True:',
  "    sys.stdout.write(s.recv(65536).decode() + '\\n'); sys.stdout.flush()",
].join('\n');

function available(kind: PeerKind): boolean {
  return spawnSync(kind, [kind === 'socat' ? '-V' : '--version'], { stdio: 'ignore' }).status === 0;
}

/** Starts a receiver bound to `address` ("/path" or "@name") and waits until the kernel lists it. */
async function startPeer(kind: PeerKind, address: string): Promise<Peer> {
  const child: ChildProcess = kind === 'socat'
    ? spawn('socat', ['-u', address.startsWith('@') ? `ABSTRACT-RECV:${address.slice(1)}` : `UNIX-RECV:${address}`, '-'], { stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn('python3', ['-c', PY_RECEIVER, address], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => { out += chunk; });
  const deadline = Date.now() + 5000;
  // /proc/net/unix lists bound sockets by path, abstract ones as "@name".
  while (!fs.readFileSync('/proc/net/unix', 'utf8').split('\n').some((line) => line.endsWith(` ${address}`))) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill();
      throw new Error(`${kind} did not bind ${address}`);
    }
    await sleep(20);
  }
  return {
    // python3 ends each datagram with a newline; socat writes them back to back. Messages we send have
    // no newline, so for socat we split on the known message boundaries instead.
    received: () => (kind === 'python3' ? out.split('\n').filter(Boolean) : out.split(/(?=READY=|WATCHDOG=|STOPPING=|STATUS=)/).filter(Boolean)),
    close: () => { child.kill(); },
  };
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

t.test('without NOTIFY_SOCKET every call is a no-op and nothing is sent', async (t) => {
  let sent = 0;
  const n = createNotifier({ WATCHDOG_USEC: '30000000' }, () => t.fail('no error expected'), () => { sent++; });
  t.equal(n.enabled, false);
  t.equal(n.watchdogIntervalMs, undefined);
  t.equal(n.ready(), false);
  t.equal(n.watchdog(), false);
  t.equal(n.stopping(), false);
  t.equal(n.status('x'), false);
  t.equal(sent, 0);
  t.equal(createNotifier({ NOTIFY_SOCKET: '' }).enabled, false, 'an empty NOTIFY_SOCKET counts as unset');
});

t.test('watchdog interval is half of WATCHDOG_USEC, and only for us', async (t) => {
  const base = { NOTIFY_SOCKET: '/run/systemd/notify' };
  t.equal(createNotifier({ ...base }).watchdogIntervalMs, undefined);
  t.equal(createNotifier({ ...base, WATCHDOG_USEC: '30000000' }).watchdogIntervalMs, 15_000);
  t.equal(createNotifier({ ...base, WATCHDOG_USEC: '30000000', WATCHDOG_PID: String(process.pid) }).watchdogIntervalMs, 15_000);
  t.equal(createNotifier({ ...base, WATCHDOG_USEC: '30000000', WATCHDOG_PID: String(process.pid + 1) }).watchdogIntervalMs, undefined, 'meant for another process');
  t.equal(createNotifier({ ...base, WATCHDOG_USEC: '1000' }).watchdogIntervalMs, 1, 'never 0');
  for (const bad of ['0', '-5', '1e6', 'soon', ' 10']) {
    t.equal(createNotifier({ ...base, WATCHDOG_USEC: bad }).watchdogIntervalMs, undefined, `WATCHDOG_USEC=${JSON.stringify(bad)}`);
  }
});

t.test('messages: one assignment per datagram, STATUS kept to one line', async (t) => {
  const sent: [string, string][] = [];
  const n = createNotifier({ NOTIFY_SOCKET: '@x' }, undefined, (p, m) => { sent.push([p, m]); });
  t.equal(n.enabled, true);
  t.ok(n.ready() && n.watchdog() && n.status('serving\n3 machines\r\nREADY=0') && n.stopping());
  t.same(sent, [['@x', 'READY=1'], ['@x', 'WATCHDOG=1'], ['@x', 'STATUS=serving 3 machines READY=0'], ['@x', 'STOPPING=1']]);
});

t.test('a failed send returns false and reports, never throws', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mbx-notify-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cases: [string, string][] = [
    [path.join(dir, 'nobody-listens'), 'ENOENT'],
    [`@mbx-nobody-${randomBytes(6).toString('hex')}`, 'ECONNREFUSED'],
    ['relative/path', 'EINVAL'],
    [`/${'x'.repeat(200)}`, 'ENAMETOOLONG'],
  ];
  for (const [socket, code] of cases) {
    const errors: Error[] = [];
    const n = createNotifier({ NOTIFY_SOCKET: socket }, (err) => errors.push(err));
    t.equal(n.ready(), false, socket);
    t.equal(errors.length, 1);
    t.match(errors[0], { code, syscall: 'sendto', path: socket }, `${socket} -> ${code}`);
  }
  const n = createNotifier({ NOTIFY_SOCKET: '/x' }, undefined, () => { throw new Error('boom'); });
  t.equal(n.watchdog(), false, 'a failing sender without onError is still silent');
});

t.test('native sdNotify rejects wrong argument types as caller bugs', async (t) => {
  const call = native.sdNotify as (...args: unknown[]) => void;
  t.throws(() => call(1, 'READY=1'), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  t.throws(() => call('/x', null), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  t.throws(() => call('/x'), { name: 'TypeError', code: 'ERR_MISSING_ARGS' });
});

const peers = (['socat', 'python3'] as const).filter(available);
t.ok(peers.length > 0, 'socat or python3 is installed to receive datagrams');

for (const kind of peers) {
  t.test(`${kind} receives READY=1, WATCHDOG=1, STOPPING=1`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mbx-notify-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const addresses = [path.join(dir, 'notify.sock'), `@mbx-test-${process.pid}-${randomBytes(6).toString('hex')}`];
    for (const address of addresses) {
      const peer = await startPeer(kind, address);
      t.teardown(() => peer.close());
      const errors: Error[] = [];
      const n = createNotifier({ NOTIFY_SOCKET: address, WATCHDOG_USEC: '2000000', WATCHDOG_PID: String(process.pid) }, (err) => errors.push(err));
      t.equal(n.enabled, true);
      t.equal(n.watchdogIntervalMs, 1000);
      t.ok(n.ready(), `${address}: ready sent`);
      t.ok(n.status('serving'));
      t.ok(n.watchdog());
      t.ok(n.stopping());
      await until(() => peer.received().length >= 4, `4 datagrams on ${address}`);
      t.same(peer.received(), ['READY=1', 'STATUS=serving', 'WATCHDOG=1', 'STOPPING=1'], address);
      t.same(errors, []);
      peer.close();
    }
  });
}
