// BMC service policy (src/services/bmc) with in-memory fake drivers: what a power request turns into, one
// operation per BMC, the global session cap, BMC_BUSY, timeouts, backoff and the unreachable mark, events and
// what never appears in them. The real drivers are tested against real BMCs in their own suites.
import t, { type Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultConfig } from '../../src/config/load.ts';
import { EventLog } from '../../src/core/events.ts';
import { MetalboxError } from '../../src/lib/errors.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord, Store } from '../../src/store/types.ts';
import { builtinDrivers, type DriverSpec } from '../../src/bmc/drivers.ts';
import type { BmcDriver, BmcEndpoint, PowerAction, PowerState } from '../../src/bmc/types.ts';
import { BmcService, secretBoxLoader, scrub, toBmcError } from '../../src/services/bmc/service.ts';
import { nextPollMs, planPower } from '../../src/services/bmc/policy.ts';
import { Semaphore } from '../../src/services/bmc/locks.ts';

/** One fake machine behind a fake BMC, shared by every driver instance made for its address. */
class FakeMachine {
  state: PowerState = 'off';
  calls: string[] = [];
  active = 0;
  maxActive = 0;
  delayMs = 0;
  /** Next calls fail with this (until cleared). */
  failWith: MetalboxError | undefined;
  /** Calls never settle and ignore the signal. */
  hang = false;
  endpoints: BmcEndpoint[] = [];
  closes = 0;
}

class Fleet {
  readonly machines = new Map<string, FakeMachine>();
  globalActive = 0;
  globalMax = 0;
  created = 0;

  machine(address: string): FakeMachine {
    let m = this.machines.get(address);
    if (!m) this.machines.set(address, (m = new FakeMachine()));
    return m;
  }

  spec(): DriverSpec {
    return {
      pollable: true, credentials: true, defaultPort: 623,
      create: (endpoint) => {
        this.created++;
        const m = this.machine(endpoint.address);
        m.endpoints.push(endpoint);
        const op = async <T>(name: string, fn: () => T): Promise<T> => {
          m.calls.push(name);
          m.active++; this.globalActive++;
          m.maxActive = Math.max(m.maxActive, m.active);
          this.globalMax = Math.max(this.globalMax, this.globalActive);
          try {
            if (m.hang) await new Promise(() => undefined);
            if (m.delayMs) await sleep(m.delayMs);
            if (m.failWith) throw m.failWith;
            return fn();
          } finally {
            m.active--; this.globalActive--;
          }
        };
        const driver: BmcDriver = {
          kind: 'fake',
          powerStatus: () => op('status', () => m.state),
          power: (action: PowerAction) => op(`power ${action}`, () => { m.state = action === 'off' || action === 'soft-off' ? 'off' : 'on'; }),
          setBootDevice: (r) => op(`bootdev ${r.device}`, () => undefined),
          identify: () => op('identify', () => undefined),
          info: () => op('info', () => ({ manufacturer: 'Fake', protocolVersion: '2.0' })),
          close: async () => { m.closes++; },
        };
        return driver;
      },
    };
  }
}

interface Setup { service: BmcService; store: Store; fleet: Fleet; events: () => Promise<EventRecord[]>; stateDir: string }

async function setup(t: Test, bmc: Partial<ReturnType<typeof defaultConfig>['bmc']> = {}, opts: { start?: boolean } = {}): Promise<Setup> {
  const stateDir = await mkdtemp(join(tmpdir(), 'mbx-bmc-svc-'));
  const store = createMemoryStore();
  const events = new EventLog(store);
  const fleet = new Fleet();
  const base = defaultConfig(stateDir);
  const config = { ...base, bmc: { ...base.bmc, pollSeconds: 0, ...bmc } };
  const service = new BmcService({
    store, events, config,
    secrets: secretBoxLoader(store, stateDir),
    logger: createLogger('silent'),
    metrics: createMetrics({ processMetrics: false }),
    drivers: { ...builtinDrivers(), ipmi: fleet.spec() },
    random: () => 0,
  });
  if (opts.start !== false) await service.start(new AbortController().signal);
  t.teardown(async () => {
    await service.stop();
    await store.close();
    await rm(stateDir, { recursive: true, force: true });
  });
  const all = async () => {
    const out: EventRecord[] = [];
    for await (const [, e] of store.events.entries()) out.push(e);
    return out;
  };
  return { service, store, fleet, events: all, stateDir };
}

const ipmi = (id: string, address = `10.0.0.${Number(id.replace(/\D/g, '') || 1)}`) =>
  ({ id, machineId: `m-${id}`, driver: 'ipmi', address, username: 'admin', password: `pw-${id}-Secret` });

t.test('planPower: on while on and off while off do nothing; cycle or reset of an off machine powers it on', async (t) => {
  t.same(planPower('on', 'on'), { kind: 'noop', reason: 'the machine is already on' });
  t.same(planPower('on', 'off'), { kind: 'act', action: 'on' });
  t.same(planPower('on', 'unknown'), { kind: 'act', action: 'on' });
  t.equal(planPower('off', 'off').kind, 'noop');
  t.equal(planPower('soft-off', 'off').kind, 'noop');
  t.same(planPower('off', 'on'), { kind: 'act', action: 'off' });
  t.match(planPower('cycle', 'off'), { kind: 'act', action: 'on', note: /powered on instead of a power cycle/ });
  t.match(planPower('reset', 'off'), { kind: 'act', action: 'on' });
  t.same(planPower('cycle', 'on'), { kind: 'act', action: 'cycle' });
  t.same(planPower('cycle', 'unknown'), { kind: 'act', action: 'cycle' });
});

t.test('nextPollMs: interval, doubling per failure up to the unreachable interval, persistent codes at once, jitter', async (t) => {
  const timing = { pollSeconds: 60, unreachableAfter: 5, unreachablePollSeconds: 900 };
  const mid = () => 0.5;
  t.equal(nextPollMs(0, undefined, timing, mid), 60_000);
  t.equal(nextPollMs(1, 'BMC_TIMEOUT', timing, mid), 120_000);
  t.equal(nextPollMs(2, 'BMC_TIMEOUT', timing, mid), 240_000);
  t.equal(nextPollMs(3, 'BMC_TIMEOUT', timing, mid), 480_000);
  t.equal(nextPollMs(4, 'BMC_TIMEOUT', timing, mid), 900_000, 'capped');
  t.equal(nextPollMs(5, 'BMC_TIMEOUT', timing, mid), 900_000, 'unreachable');
  t.equal(nextPollMs(500, 'BMC_TIMEOUT', timing, mid), 900_000, 'never faster, never abandoned');
  t.equal(nextPollMs(1, 'BMC_AUTH_FAILED', timing, mid), 900_000, 'a wrong password is not retried every minute');
  t.equal(nextPollMs(0, undefined, timing, () => 0), 54_000);
  t.equal(nextPollMs(0, undefined, timing, () => 0.999999), 66_000);
});

t.test('power on of a running machine does nothing; each action is an event with actor and answer', async (t) => {
  const s = await setup(t);
  await s.service.add(ipmi('n1'), 'alice');
  const m = s.fleet.machine('10.0.0.1');
  m.state = 'on';
  const noop = await s.service.power('m-n1', 'on', 'alice');
  t.match(noop, { bmc: 'n1', machineId: 'm-n1', action: 'on', result: 'noop', before: 'on', message: 'the machine is already on' });
  t.same(m.calls, ['status'], 'read the state, sent nothing');

  const off = await s.service.power('n1', 'off', 'bob');
  t.match(off, { result: 'done', before: 'on' });
  t.same(m.calls, ['status', 'status', 'power off']);
  const again = await s.service.power('n1', 'off', 'bob');
  t.equal(again.result, 'noop');

  const cycle = await s.service.power('n1', 'cycle', 'carol');
  t.match(cycle, { result: 'done', before: 'off', performed: 'on', message: /powered on instead of a power cycle/ });
  t.equal(m.calls.at(-1), 'power on', 'a cycle of an off machine is a power on');

  const power = (await s.events()).filter((e) => e.type === 'bmc.power');
  t.same(power.map((e) => [e.actor, e.subject, e.data?.action, e.data?.result, e.data?.before]), [
    ['alice', 'm-n1', 'on', 'noop', 'on'],
    ['bob', 'm-n1', 'off', 'done', 'on'],
    ['bob', 'm-n1', 'off', 'noop', 'off'],
    ['carol', 'm-n1', 'cycle', 'done', 'off'],
  ]);
  const changes = (await s.events()).filter((e) => e.type === 'bmc.power.changed').map((e) => [e.data?.from, e.data?.to]);
  t.same(changes, [['unknown', 'on'], ['on', 'off']], 'state changes seen while acting are recorded');
});

t.test('failures carry a code and a readable message, and are events; secrets never appear anywhere', async (t) => {
  const s = await setup(t);
  const { password } = ipmi('n2');
  await s.service.add({ ...ipmi('n2'), kg: '0123456789abcdef' }, 'alice');
  const m = s.fleet.machine('10.0.0.2');
  t.equal(m.endpoints.length, 0, 'no session at add');
  m.failWith = new MetalboxError('BMC_AUTH_FAILED', `the BMC refused user admin with password ${password}`);
  const err = await s.service.power('n2', 'on', 'alice').then(() => { throw new Error('succeeded'); }, (e: unknown) => e as MetalboxError);
  t.equal(err.code, 'BMC_AUTH_FAILED');
  t.equal(err.message, 'the BMC refused user admin with password [redacted]', 'scrubbed even when a driver slips');
  t.equal(m.endpoints[0]?.password, password, 'the driver got the password in clear, in memory');
  t.equal(m.endpoints[0]?.kg, '0123456789abcdef');
  const ev = (await s.events()).find((e) => e.type === 'bmc.power');
  t.match(ev, { actor: 'alice', data: { result: 'failed', code: 'BMC_AUTH_FAILED', message: /refused user admin/ } });
  const view = await s.service.get('n2');
  t.match(view, { hasPassword: true, hasKg: true, lastError: { code: 'BMC_AUTH_FAILED' }, failures: 1 });
  t.notOk('passwordSealed' in view!, 'the view has no sealed secret either');

  // Everything the store holds, the views and the events: no password, no Kg, in any usual encoding.
  const dump: string[] = [];
  for await (const [, r] of s.store.bmcs.entries()) dump.push(JSON.stringify(r));
  dump.push(JSON.stringify(await s.events()), JSON.stringify(await s.service.list()));
  const all = dump.join('\n');
  for (const secret of [password, '0123456789abcdef']) {
    for (const form of [secret, Buffer.from(secret).toString('base64'), Buffer.from(secret).toString('hex')]) t.notOk(all.includes(form), `no ${form}`);
  }
  t.match(all, /"passwordSealed":"v1:/);
});

t.test('one operation at a time per BMC, in order', async (t) => {
  const s = await setup(t);
  await s.service.add(ipmi('n3'), 'a');
  const m = s.fleet.machine('10.0.0.3');
  m.delayMs = 15;
  const actions: PowerAction[] = ['on', 'off', 'on', 'cycle', 'off'];
  const results = await Promise.all(actions.map((a) => s.service.power('n3', a, 'a')));
  t.equal(m.maxActive, 1, 'never two calls on one BMC at once');
  t.same(results.map((r) => r.result), ['done', 'done', 'done', 'done', 'done']);
  t.same(m.calls.filter((c) => c.startsWith('power')), ['power on', 'power off', 'power on', 'power cycle', 'power off'], 'FIFO');
});

t.test('the global session cap is never exceeded, and is used', async (t) => {
  const s = await setup(t, { maxSessions: 3 });
  for (let i = 1; i <= 12; i++) await s.service.add(ipmi(`c${i}`, `10.1.0.${i}`), 'a');
  for (let i = 1; i <= 12; i++) s.fleet.machine(`10.1.0.${i}`).delayMs = 10;
  await Promise.all(Array.from({ length: 12 }, (_, i) => s.service.power(`c${i + 1}`, 'on', 'a')));
  t.equal(s.fleet.globalMax, 3, 'at most bmc.maxSessions at once, and that many');
  t.equal(s.service.summary().sessionsPeak, 3);
  t.equal(s.service.summary().sessionsActive, 0);
});

t.test('a full queue for one BMC answers BMC_BUSY at once', async (t) => {
  const s = await setup(t);
  await s.service.add(ipmi('n4'), 'a');
  const m = s.fleet.machine('10.0.0.4');
  m.delayMs = 50;
  const first = s.service.power('n4', 'on', 'a');
  await sleep(5);
  const queued = Array.from({ length: 8 }, () => s.service.powerStatus('n4', 'a'));
  const started = Date.now();
  await t.rejects(s.service.power('n4', 'off', 'a'), { code: 'BMC_BUSY', message: /8 operations already wait for BMC n4/ });
  t.ok(Date.now() - started < 40, 'refused without waiting');
  await first;
  await Promise.all(queued);
  t.equal(m.maxActive, 1);
  t.match(await s.service.power('n4', 'off', 'a'), { result: 'done' }, 'accepted again once the queue drains');
});

t.test('semaphore: FIFO, bounded queue, abort while waiting', async (t) => {
  const sem = new Semaphore(1, 2, 'x');
  const r1 = await sem.acquire();
  const order: number[] = [];
  const p2 = sem.acquire().then((r) => { order.push(2); return r; });
  const ac = new AbortController();
  const p3 = sem.acquire(ac.signal);
  await t.rejects(sem.acquire(), { code: 'BMC_BUSY' });
  ac.abort();
  await t.rejects(p3, { code: 'BMC_TIMEOUT', message: /cancelled/ });
  t.equal(sem.waiting, 1);
  r1();
  r1(); // a second release is harmless
  (await p2)();
  t.same(order, [2]);
  t.ok(sem.idle);
  t.equal(sem.peak, 1);
});

t.test('an operation that hangs ends with BMC_TIMEOUT and its session is dropped', async (t) => {
  const s = await setup(t, { timeoutSeconds: 1 });
  await s.service.add(ipmi('n5'), 'a');
  const m = s.fleet.machine('10.0.0.5');
  m.hang = true;
  const started = Date.now();
  await t.rejects(s.service.power('n5', 'on', 'a'), { code: 'BMC_TIMEOUT', message: /status on BMC n5 \(10\.0\.0\.5\): no answer within 1 s/ });
  t.ok(Date.now() - started < 2500, `took ${Date.now() - started} ms`);
  t.equal(m.closes, 1, 'the cached driver was closed');
  m.hang = false;
  t.match(await s.service.power('n5', 'on', 'a'), { result: 'done' }, 'a fresh session works');
  t.equal(s.fleet.created, 2);
});

t.test('drivers are cached per BMC and closed on edit, remove and stop', async (t) => {
  const s = await setup(t);
  await s.service.add(ipmi('n6'), 'a');
  const m = s.fleet.machine('10.0.0.6');
  await s.service.powerStatus('n6', 'a');
  await s.service.powerStatus('n6', 'a');
  t.equal(s.fleet.created, 1, 'one session for both');
  await s.service.edit('n6', { username: 'root' }, 'a');
  t.equal(m.closes, 1, 'closed when the credentials changed');
  await s.service.powerStatus('n6', 'a');
  t.equal(m.endpoints.at(-1)?.username, 'root');
  t.equal(m.endpoints.at(-1)?.password, 'pw-n6-Secret', 'the password carried over');
  await s.service.edit('n6', { machineId: 'other' }, 'a');
  t.equal(m.closes, 1, 'not closed for a change that does not touch the connection');
  await s.service.remove('other', 'a');
  t.equal(m.closes, 2);
  await t.rejects(s.service.powerStatus('n6', 'a'), { code: 'BMC_NOT_FOUND' });
  await s.service.add(ipmi('n7'), 'a');
  await s.service.powerStatus('n7', 'a');
  await s.service.stop();
  t.equal(s.fleet.machine('10.0.0.7').closes, 1, 'closed at stop');
  await t.rejects(s.service.power('n7', 'on', 'a'), { code: 'BMC_BUSY', message: /stopping/ });
  const types = (await s.events()).map((e) => e.type);
  t.same(types.filter((x) => x.startsWith('bmc.') && !x.startsWith('bmc.power')), ['bmc.added', 'bmc.edited', 'bmc.edited', 'bmc.removed', 'bmc.added']);
  const edited = (await s.events()).find((e) => e.type === 'bmc.edited');
  t.same(edited?.data?.changed, ['username']);
});

t.test('stop cancels operations waiting for a BMC', async (t) => {
  const s = await setup(t);
  await s.service.add(ipmi('n8'), 'a');
  s.fleet.machine('10.0.0.8').delayMs = 200;
  const running = s.service.power('n8', 'on', 'a').then(() => undefined, (e: unknown) => e as MetalboxError);
  await sleep(10);
  const waiting = s.service.power('n8', 'off', 'a').catch((e: unknown) => e as MetalboxError);
  await s.service.stop();
  t.match(await running, { code: 'BMC_TIMEOUT', message: /cancelled/ });
  t.match(await waiting, { code: 'BMC_TIMEOUT', message: /cancelled/ });
});

t.test('definitions are checked: driver, address, credentials, IPMI limits, one BMC per machine', async (t) => {
  const s = await setup(t);
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ driver: 'snmp', address: '10.0.0.1' }, /unknown driver "snmp"/],
    [{ driver: 'ipmi', address: 'not an address!', username: 'a', password: 'b' }, /not an IPv4 address or a host name/],
    [{ driver: 'ipmi', address: '10.0.0.1', password: 'b' }, /needs a username/],
    [{ driver: 'ipmi', address: '10.0.0.1', username: 'a' }, /needs a password/],
    [{ driver: 'ipmi', address: '10.0.0.1', username: 'a', password: 'x'.repeat(21) }, /at most 20 bytes/],
    [{ driver: 'ipmi', address: '10.0.0.1', username: 'u'.repeat(17), password: 'b' }, /at most 16 bytes/],
    [{ driver: 'ipmi', address: '10.0.0.1', username: 'a', password: 'b', cipherSuite: 1 }, /cipher suite 1 is not supported/],
    [{ driver: 'ipmi', address: '10.0.0.1', username: 'a', password: 'b', kg: 'xyz' }, /Kg must be/],
    [{ driver: 'ipmi', address: '10.0.0.1', username: 'a', password: 'b', port: 70000 }, /1-65535/],
    [{ driver: 'ipmi', address: '10.0.0.1', username: 'a', password: 'b', tlsFingerprint: 'AA' }, /does not apply to the ipmi driver/],
    [{ driver: 'wol', address: '10.0.0.1' }, /MAC as its address/],
    [{ driver: 'wol', address: '52:54:00:00:00:01', username: 'a' }, /--user does not apply/],
    [{ driver: 'redfish', address: 'bmc.example', username: 'a', password: 'b', tlsFingerprint: 'zz' }, /SHA-256 fingerprint/],
    [{ id: 'Bad Id', driver: 'manual', address: '' }, /BMC id "Bad Id"/],
  ];
  for (const [input, message] of bad) {
    await t.rejects(s.service.add(input as never, 'a'), { code: 'BMC_INVALID', message }, JSON.stringify(input));
  }
  const ok = await s.service.add({ driver: 'redfish', address: 'BMC1.example', username: 'a', password: 'b', tlsFingerprint: 'ab'.repeat(32), machineId: 'node9' }, 'a');
  t.match(ok.bmc, { id: 'node9', address: 'bmc1.example', tlsFingerprint: /^AB:AB:/ }, 'id from the machine; fingerprint canonical');
  await t.rejects(s.service.add({ driver: 'manual', address: '', machineId: 'node9' }, 'a'), { code: 'BMC_INVALID', message: /already has BMC node9/ });
  await t.rejects(s.service.add({ id: 'node9', driver: 'manual', address: '' }, 'a'), { code: 'BMC_INVALID', message: /exists/ });
  const wol = await s.service.add({ driver: 'wol', address: '52-54-00-AA-BB-CC' }, 'a');
  t.match(wol.bmc, { id: /^bmc-[0-9a-f]{8}$/, address: '52:54:00:aa:bb:cc' });
  await t.rejects(s.service.power('nobody', 'on', 'a'), { code: 'BMC_NOT_FOUND' });
  await t.rejects(s.service.power('node9', 'explode' as PowerAction, 'a'), { code: 'BMC_INVALID' });
  // Changing the driver drops the fields the new one does not take; the password survives ipmi <-> redfish.
  const moved = await s.service.edit('node9', { driver: 'ipmi', address: '10.9.9.9' }, 'a');
  t.match(moved, { driver: 'ipmi', hasPassword: true });
  t.notOk('tlsFingerprint' in moved);
});

t.test('manual BMCs: actions become pending requests until the operator confirms', async (t) => {
  const s = await setup(t);
  await s.service.add({ id: 'hand', driver: 'manual', address: 'row 4, rack 2, U17', machineId: 'old-box' }, 'alice');
  const r = await s.service.power('hand', 'on', 'lifecycle');
  t.match(r, { result: 'requested', before: 'unknown', message: 'the operator was asked to power on' });
  await s.service.setBootDevice('hand', { device: 'pxe', persistent: false, efi: true }, 'lifecycle');
  const view = await s.service.get('old-box');
  t.same(view?.pending.map((p) => [p.request, p.actor]), [['power on', 'lifecycle'], ['set the next boot to pxe in UEFI mode', 'lifecycle']]);
  t.equal(view?.powerState, 'unknown');
  await t.rejects(s.service.test('hand', 'a').then(() => s.service.confirm('nobody', 'on', 'a')), { code: 'BMC_NOT_FOUND' });
  const confirmed = await s.service.confirm('hand', 'on', 'bob');
  t.match(confirmed, { powerState: 'on', pending: [] });
  t.match(await s.service.power('hand', 'on', 'lifecycle'), { result: 'noop', before: 'on' }, 'on while confirmed on does nothing');
  t.match(await s.service.power('hand', 'off', 'lifecycle'), { result: 'requested', before: 'on' });
  const types = (await s.events()).filter((e) => e.type.startsWith('bmc.power') || e.type === 'bmc.bootdev').map((e) => `${e.type}:${String(e.data?.result ?? e.data?.to)}`);
  t.same(types, ['bmc.power:requested', 'bmc.bootdev:requested', 'bmc.power.confirmed:on', 'bmc.power:noop', 'bmc.power:requested']);
  await s.service.add({ id: 'w', driver: 'wol', address: '52:54:00:00:00:09' }, 'a');
  await t.rejects(s.service.confirm('w', 'on', 'a'), { code: 'BMC_UNSUPPORTED' });
});

t.test('Wake-on-LAN asked to power off: BMC_UNSUPPORTED, and it does not count against the BMC', async (t) => {
  const s = await setup(t);
  await s.service.add({ id: 'w1', driver: 'wol', address: '52:54:00:00:00:0a' }, 'a');
  await t.rejects(s.service.power('w1', 'off', 'a'), { code: 'BMC_UNSUPPORTED', message: /can only power a machine on/ });
  const v = await s.service.get('w1');
  t.equal(v?.failures, 0);
  t.notOk(v?.lastError);
  t.match((await s.events()).find((e) => e.type === 'bmc.power')?.data, { result: 'failed', code: 'BMC_UNSUPPORTED' });
});

t.test('poller: records changes, backs off a failing BMC, marks it unreachable, notices it return', async (t) => {
  const s = await setup(t, { pollSeconds: 1, unreachableAfter: 2, unreachablePollSeconds: 2 }, { start: false });
  await s.service.add(ipmi('p1', '10.2.0.1'), 'a');
  const m = s.fleet.machine('10.2.0.1');
  m.state = 'on';
  await s.service.start(new AbortController().signal); // random() = 0: first poll at once
  const waitFor = async (what: string, pred: (ev: EventRecord[]) => boolean, ms = 8000) => {
    const end = Date.now() + ms;
    for (;;) {
      const ev = await s.events();
      if (pred(ev)) return ev;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(ev.map((e) => e.type))}`);
      await sleep(25);
    }
  };
  await waitFor('first observation', (ev) => ev.some((e) => e.type === 'bmc.power.changed'));
  m.state = 'off';
  const ev1 = await waitFor('the change to off', (ev) => ev.filter((e) => e.type === 'bmc.power.changed').length === 2);
  t.match(ev1.filter((e) => e.type === 'bmc.power.changed').map((e) => ({ actor: e.actor, subject: e.subject, data: e.data })), [
    { actor: 'bmc-poller', subject: 'm-p1', data: { bmc: 'p1', from: 'unknown', to: 'on' } },
    { actor: 'bmc-poller', subject: 'm-p1', data: { bmc: 'p1', from: 'on', to: 'off' } },
  ]);
  const pollsBefore = m.calls.length;
  m.failWith = new MetalboxError('BMC_TIMEOUT', 'no answer from 10.2.0.1 after 4 tries');
  const t0 = Date.now();
  const ev2 = await waitFor('unreachable', (ev) => ev.some((e) => e.type === 'bmc.unreachable'));
  const took = Date.now() - t0;
  t.ok(took >= 1500, `the second failed poll came after a doubled interval (${took} ms)`);
  t.same(ev2.filter((e) => e.type === 'bmc.poll.failed').length, 1, 'one event for a run of the same failure');
  t.match(ev2.find((e) => e.type === 'bmc.unreachable')?.data, { bmc: 'p1', failures: 2, code: 'BMC_TIMEOUT', nextPollSeconds: 2 });
  t.match(await s.service.get('p1'), { unreachable: true, failures: 2, lastError: { code: 'BMC_TIMEOUT' } });
  t.equal(m.calls.length - pollsBefore, 2, 'polled twice in that time, not in a tight loop');
  m.failWith = undefined;
  await waitFor('reachable again', (ev) => ev.some((e) => e.type === 'bmc.reachable'));
  t.match(await s.service.get('p1'), { unreachable: false, failures: 0 });
  t.notOk((await s.service.get('p1'))?.lastError);
  t.equal(m.maxActive, 1);
});

t.test('the poller skips a BMC that is busy instead of queueing behind it', async (t) => {
  const s = await setup(t, { pollSeconds: 1 }, { start: false });
  await s.service.add(ipmi('q1', '10.3.0.1'), 'a');
  const m = s.fleet.machine('10.3.0.1');
  m.delayMs = 250;
  const action = s.service.power('q1', 'on', 'a'); // holds the BMC for ~500 ms
  await sleep(20);
  await s.service.start(new AbortController().signal); // first poll due at once: finds the BMC busy
  await action;
  await sleep(150);
  t.same(m.calls, ['status', 'power on'], 'no poll queued behind the action');
  const end = Date.now() + 3000;
  while (m.calls.length < 3 && Date.now() < end) await sleep(20);
  t.same(m.calls, ['status', 'power on', 'status'], 'polled at the next interval');
  t.equal(m.maxActive, 1);
});

t.test('error mapping and scrubbing', async (t) => {
  t.match(toBmcError(Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:443'), { code: 'ECONNREFUSED' }), []), { code: 'BMC_UNREACHABLE' });
  t.match(toBmcError(Object.assign(new Error('x'), { code: 'ETIMEDOUT' }), []), { code: 'BMC_TIMEOUT' });
  t.match(toBmcError(new Error('weird'), []), { code: 'BMC_PROTOCOL', message: 'weird' });
  t.match(toBmcError(new MetalboxError('SOCKET_SEND_FAILED', 'no route', { details: { errno: 'ENETUNREACH' } }), []), { code: 'BMC_UNREACHABLE' });
  t.equal(scrub('pw hunter22 aHVudGVyMjI= 68756e7465723232', ['hunter22']), 'pw [redacted] [redacted] [redacted]');
  t.equal(scrub('a b', ['a']), 'a b', 'one- and two-character secrets are not scrubbed (they would mangle every message)');
});
