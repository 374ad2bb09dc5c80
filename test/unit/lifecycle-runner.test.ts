// The lifecycle runner (src/services/lifecycle-runner.ts) against a fake BMC service that records every call
// and fails or hangs on demand: effects in order, recorded as events, failures ending the phase, machines
// without a BMC, phone-home deployments, BMC-only registration, superseded effects, stop; effects pending at a
// restart (on the record, re-run by the next start); lifecycle.autoCommission.
import t, { type Test } from 'tap';
import { Writable } from 'node:stream';
import { MetalboxError } from '../../src/lib/errors.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord, Store, WriteOp } from '../../src/store/types.ts';
import type { BootDeviceRequest, PowerAction } from '../../src/bmc/types.ts';
import { AUTO_COMMISSION_REASON, FAILED_ACTION, LifecycleRunner, type LifecyclePower } from '../../src/services/lifecycle-runner.ts';

const MAC = '52:54:00:77:00:30';

class FakeBmc implements LifecyclePower {
  calls: string[] = [];
  /** Machines that have a BMC. */
  readonly machines = new Set<string>();
  /** The next call matching the key ('power cycle', 'bootdev pxe') throws this. */
  failOn = new Map<string, MetalboxError>();
  /** Calls wait for this before answering, when set. */
  gate: Promise<void> | undefined;
  signals: (AbortSignal | undefined)[] = [];

  async get(id: string): Promise<unknown> { return this.machines.has(id) ? { id: `bmc-${id}` } : undefined; }
  /** What each machine's BMC says its system UUID is (Get System GUID); an Error is thrown instead. */
  readonly uuids = new Map<string, string | Error>();
  async test(id: string) {
    const u = this.uuids.get(id);
    if (u instanceof Error) throw u;
    return { info: u === undefined ? {} : { systemUuid: u } };
  }
  async power(id: string, action: PowerAction, actor: string, signal?: AbortSignal) {
    return this.call(id, `power ${action}`, actor, signal);
  }
  async setBootDevice(id: string, r: BootDeviceRequest, actor: string, signal?: AbortSignal) {
    return this.call(id, `bootdev ${r.device}${r.persistent ? ' persistent' : ''}${r.efi ? ' efi' : ''}`, actor, signal);
  }
  /** Calls matching these keys answer only to an abort (a BMC that hangs; a test's process "dies" there). */
  hangOn = new Set<string>();
  /** Like the BMC service: a call waiting at the gate ends with BMC_TIMEOUT when its signal aborts. */
  honourAbort = false;
  private async call(id: string, what: string, actor: string, signal?: AbortSignal) {
    this.calls.push(`${id} ${what} by ${actor}`);
    this.signals.push(signal);
    if (this.hangOn.has(what)) {
      await new Promise((_, reject) => signal?.addEventListener('abort', () => reject(new MetalboxError('BMC_TIMEOUT', 'the operation was cancelled')), { once: true }));
    }
    if (this.gate && this.honourAbort && signal) {
      await Promise.race([this.gate, new Promise((_, reject) => signal.addEventListener('abort', () => reject(new MetalboxError('BMC_TIMEOUT', 'the operation was cancelled')), { once: true }))]);
    } else if (this.gate) await this.gate;
    const err = this.failOn.get(what);
    if (err) { this.failOn.delete(what); throw err; }
    return { result: 'done', message: `${what} done` };
  }
}

interface Fixture { store: Store; registry: MachineRegistry; bmc: FakeBmc; runner: LifecycleRunner; logs: string[]; effects(): Promise<EventRecord[]> }

/** A fresh metalbox: registry and runner on an empty store (the same wiring as `restart`, below). */
function fixture(t: Test, withPower = true): Promise<Fixture> {
  return restart(t, createMemoryStore(), { withPower });
}

const ctx = { actor: 'op' };

t.test('the failed action of each phase comes from the transition table', async (t) => {
  t.same(FAILED_ACTION, { Commissioning: 'commission-failed', Deploying: 'deploy-failed', Releasing: 'release-failed' });
});

t.test('commission: next boot pxe, then power cycle, in that order, each recorded', async (t) => {
  const f = await fixture(t);
  const m = await f.registry.create({ mac: MAC }, ctx);
  f.bmc.machines.add(m.id);
  await f.registry.act(m.id, 'commission', ctx);
  const ev = await f.effects();
  t.same(f.bmc.calls, [`${m.id} bootdev pxe by lifecycle`, `${m.id} power cycle by lifecycle`]);
  t.match(ev, [
    { subject: m.id, actor: 'lifecycle', data: { action: 'commission', from: 'New', to: 'Commissioning', effect: 'bootdev pxe', result: 'done' } },
    { data: { effect: 'power cycle', result: 'done', message: 'power cycle done' } },
  ]);
  // commission-done: power off.
  await f.registry.act(m.id, 'commission-done', { actor: 'agent' });
  await f.runner.idle();
  t.same(f.bmc.calls.slice(2), [`${m.id} power off by lifecycle`]);
  // A machine whose inventory says UEFI gets UEFI boot requests.
  await f.registry.amend(m.id, { set: { inventory: { firmware: 'uefi' } } }, ctx, { type: 'test' });
  await f.registry.act(m.id, 'rescue', ctx);
  await f.runner.idle();
  t.same(f.bmc.calls.slice(3), [`${m.id} bootdev pxe efi by lifecycle`, `${m.id} power cycle by lifecycle`]);
  await f.registry.act(m.id, 'exit-rescue', ctx);
  await f.runner.idle();
  f.bmc.calls.splice(5);
  // allocate has no effects: nothing called, nothing recorded.
  const before = (await f.effects()).length;
  await f.registry.act(m.id, 'allocate', ctx);
  t.equal((await f.effects()).length, before);
  t.equal(f.bmc.calls.length, 5);
});

t.test('a failing effect ends the phase: the failed state with the reason; its own power off is tried', async (t) => {
  const f = await fixture(t);
  const m = await f.registry.create({ mac: MAC }, ctx);
  f.bmc.machines.add(m.id);
  f.bmc.failOn.set('power cycle', new MetalboxError('BMC_TIMEOUT', 'the BMC did not answer within 20 s'));
  await f.registry.act(m.id, 'commission', ctx);
  await f.runner.idle();
  const after = f.registry.get(m.id)!;
  t.equal(after.state, 'FailedCommissioning');
  t.equal(after.stateReason, 'power cycle failed: BMC_TIMEOUT: the BMC did not answer within 20 s');
  t.same(f.bmc.calls, [`${m.id} bootdev pxe by lifecycle`, `${m.id} power cycle by lifecycle`, `${m.id} power off by lifecycle`],
    'the failed transition\'s own effect (off) is carried out too');
  t.match(await f.effects(), [
    { data: { effect: 'bootdev pxe', result: 'done' } },
    { data: { effect: 'power cycle', result: 'failed', code: 'BMC_TIMEOUT' } },
    { data: { action: 'commission-failed', to: 'FailedCommissioning', effect: 'power off', result: 'done' } },
  ]);
  t.match(f.logs.join(''), /lifecycle effect failed: power cycle/);
});

t.test('a failing effect outside a phase is recorded and changes no state', async (t) => {
  const f = await fixture(t);
  const m = await f.registry.create({ mac: MAC }, ctx);
  f.bmc.machines.add(m.id);
  await f.registry.act(m.id, 'commission', ctx);
  await f.runner.idle();
  f.bmc.failOn.set('power off', new MetalboxError('BMC_UNREACHABLE', 'no route to 10.0.0.9'));
  await f.registry.act(m.id, 'commission-done', { actor: 'agent' });
  await f.runner.idle();
  t.equal(f.registry.get(m.id)!.state, 'Ready', 'Ready has no failed state');
  t.match((await f.effects()).at(-1), { data: { effect: 'power off', result: 'failed', code: 'BMC_UNREACHABLE' } });
});

t.test('a machine without a BMC: effects are skipped with one event saying so', async (t) => {
  const f = await fixture(t);
  const m = await f.registry.create({ mac: MAC }, ctx);
  await f.registry.act(m.id, 'commission', ctx);
  t.same(f.bmc.calls, []);
  t.match(await f.effects(), [{ subject: m.id, data: { action: 'commission', effects: ['bootdev pxe', 'power cycle'], result: 'skipped', message: /no BMC/ } }]);
  t.equal(f.registry.get(m.id)!.state, 'Commissioning', 'the phase goes on (the operator powers it)');

  const g = await fixture(t, false);
  const n = await g.registry.create({ mac: MAC }, ctx);
  await g.registry.act(n.id, 'commission', ctx);
  t.match(await g.effects(), [{ data: { result: 'skipped', message: /not available/ } }], 'no BMC service at all');
});

t.test('deploy-done from the phone-home: the disk becomes the boot device, the running system is not power cycled', async (t) => {
  const f = await fixture(t);
  const m = await f.registry.create({ mac: MAC }, ctx);
  f.bmc.machines.add(m.id);
  for (const a of ['commission', 'commission-done', 'deploy']) await f.registry.act(m.id, a, ctx);
  await f.runner.idle();
  f.bmc.calls = [];
  await f.registry.act(m.id, 'deploy-done', { actor: 'phone-home' });
  const ev = await f.effects();
  t.same(f.bmc.calls, [`${m.id} bootdev disk persistent by lifecycle`]);
  t.match(ev.slice(-1), [
    { data: { action: 'deploy-done', effect: 'bootdev disk (persistent)', result: 'done' } },
  ]);
  t.notOk(ev.some((e) => (e.data as { effect?: string } | undefined)?.effect === 'power cycle' && (e.data as { action?: string }).action === 'deploy-done'), 'no power effect at all');

  // Whoever applies it: the table itself never power cycles a machine that reports itself deployed.
  const g = await fixture(t);
  const n = await g.registry.create({ mac: MAC }, ctx);
  g.bmc.machines.add(n.id);
  for (const a of ['commission', 'commission-done', 'deploy']) await g.registry.act(n.id, a, ctx);
  await g.runner.idle();
  g.bmc.calls = [];
  await g.registry.act(n.id, 'deploy-done', { actor: 'agent' });
  await g.runner.idle();
  t.same(g.bmc.calls, [`${n.id} bootdev disk persistent by lifecycle`]);
});

t.test('registered by its BMC alone: next boot pxe, power on, marked as enlisting; a machine with a MAC is left alone', async (t) => {
  const f = await fixture(t);
  const withMac = await f.registry.create({ mac: MAC }, ctx);
  f.bmc.machines.add(withMac.id);
  // The BMC is enrolled before the machine is written (the API's beforeWrite): the runner sees it at 'created'.
  const m = await f.registry.create({}, ctx, { beforeWrite: async (draft) => { f.bmc.machines.add(draft.id); } });
  const ev = await f.effects();
  t.same(f.bmc.calls, [`${m.id} bootdev pxe by lifecycle`, `${m.id} power on by lifecycle`]);
  t.match(ev, [{ subject: m.id, data: { action: 'enlist', effect: 'bootdev pxe', result: 'done' } }, { data: { action: 'enlist', effect: 'power on', result: 'done' } }]);
  t.match(f.registry.get(m.id)!.enlistment, { poweredOnAt: String });
  t.equal(f.registry.get(m.id)!.state, 'New');

  const g = await fixture(t);
  const n = await g.registry.create({}, ctx, { beforeWrite: async (draft) => { g.bmc.machines.add(draft.id); } });
  g.bmc.failOn.set('power on', new MetalboxError('BMC_AUTH_FAILED', 'wrong password'));
  await g.runner.idle();
  t.equal(g.registry.get(n.id)!.enlistment, undefined, 'not marked when the power on failed');
  t.match((await g.effects()).at(-1), { data: { effect: 'power on', result: 'failed', code: 'BMC_AUTH_FAILED' } });
});

t.test('registered by its BMC alone: the system UUID the BMC reports becomes the machine\'s (how its enlisting boot is recognised)', async (t) => {
  const f = await fixture(t);
  const uuid = '8B3C6A52-2F0E-4C7B-9D55-0A1B2C3D0001';
  const reg = (u: string | Error | undefined) => f.registry.create({}, ctx, { beforeWrite: async (draft) => { f.bmc.machines.add(draft.id); if (u !== undefined) f.bmc.uuids.set(draft.id, u); } });
  const a = await reg(uuid);
  await f.runner.idle();
  t.equal(f.registry.get(a.id)!.uuid, uuid.toLowerCase(), 'learnt from the BMC, lower case');
  t.equal(f.registry.byUuid(uuid.toLowerCase())?.id, a.id, 'and indexed');
  t.same(f.bmc.calls, [`${a.id} bootdev pxe by lifecycle`, `${a.id} power on by lifecycle`], 'then booted to enlist as before');
  // Another machine whose BMC reports the same UUID (a cloned board) does not take it; a placeholder is ignored;
  // a BMC that cannot say does not stop the enlistment.
  const b = await reg(uuid);
  const c = await reg('00000000-0000-0000-0000-000000000000');
  const d = await reg(new MetalboxError('BMC_UNSUPPORTED', 'no Get System GUID'));
  await f.runner.idle();
  t.equal(f.registry.get(b.id)!.uuid, undefined, 'a UUID another machine has is not taken twice');
  t.equal(f.registry.get(c.id)!.uuid, undefined, 'an all-zero placeholder is not a UUID');
  t.equal(f.registry.get(d.id)!.uuid, undefined, 'no UUID when the BMC cannot say');
  t.ok(f.bmc.calls.includes(`${d.id} power on by lifecycle`), 'and it is powered on to enlist all the same');
  t.match(f.logs.join(''), /could not read the system UUID from the BMC/);
});

t.test('effects of a transition the machine has already left are skipped as superseded', async (t) => {
  const f = await fixture(t);
  const m = await f.registry.create({ mac: MAC }, ctx);
  f.bmc.machines.add(m.id);
  let open!: () => void;
  f.bmc.gate = new Promise((r) => { open = r; });
  await f.registry.act(m.id, 'commission', ctx);
  await new Promise((r) => setImmediate(r));
  t.same(f.bmc.calls, [`${m.id} bootdev pxe by lifecycle`], 'the first effect is under way');
  await f.registry.act(m.id, 'abort', ctx);
  f.bmc.gate = undefined;
  open();
  const ev = await f.effects();
  t.same(f.bmc.calls, [`${m.id} bootdev pxe by lifecycle`, `${m.id} power off by lifecycle`], 'no power cycle of an aborted machine');
  t.match(ev, [
    { data: { action: 'commission', effect: 'bootdev pxe', result: 'done' } },
    { data: { action: 'commission', effects: ['power cycle'], result: 'superseded', message: 'the machine is New now' } },
    { data: { action: 'abort', effect: 'power off', result: 'done' } },
  ]);
});

t.test('stop: no more effects; calls in flight get an aborted signal', async (t) => {
  const f = await fixture(t);
  const m = await f.registry.create({ mac: MAC }, ctx);
  f.bmc.machines.add(m.id);
  let open!: () => void;
  f.bmc.gate = new Promise((r) => { open = r; });
  await f.registry.act(m.id, 'commission', ctx);
  await new Promise((r) => setImmediate(r));
  const stopping = f.runner.stop();
  t.equal(f.bmc.signals[0]?.aborted, true, 'the BMC call sees the abort');
  open();
  await stopping;
  t.same(f.bmc.calls, [`${m.id} bootdev pxe by lifecycle`], 'nothing after the stop');
  await f.registry.act(m.id, 'abort', ctx);
  await new Promise((r) => setImmediate(r));
  t.equal(f.bmc.calls.length, 1, 'no longer listening');
});

// --- effects pending at a restart (MachineRegistry pendingEffects) -----------------------------------------

/** metalbox after a restart: a new registry and runner on the same store. */
async function restart(t: Test, store: Store, opts: { now?: () => number; bmcFor?: string[]; autoCommission?: boolean; withPower?: boolean } = {}): Promise<Fixture> {
  const events = new EventLog(store);
  await events.init();
  const logs: string[] = [];
  const logger = createLogger('info', new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } }));
  const registry = await MachineRegistry.open({ store, events, logger });
  const bmc = new FakeBmc();
  for (const id of opts.bmcFor ?? []) bmc.machines.add(id);
  const runner = new LifecycleRunner({ registry, events, logger, ...(opts.withPower === false ? {} : { power: bmc }), ...(opts.now ? { now: opts.now } : {}), ...(opts.autoCommission ? { autoCommission: true } : {}) });
  await runner.start(new AbortController().signal);
  t.teardown(() => runner.stop());
  return {
    store, registry, bmc, runner, logs,
    async effects() {
      await runner.idle();
      const out: EventRecord[] = [];
      for await (const [, e] of store.events.entries()) if (e.type === 'machine.state.effect') out.push(e);
      return out;
    },
  };
}

/** A registry with no runner: its transitions' effects stay pending, as after a kill right behind the write. */
async function noRunner(): Promise<{ store: Store; registry: MachineRegistry }> {
  const store = createMemoryStore();
  const events = new EventLog(store);
  return { store, registry: await MachineRegistry.open({ store, events }) };
}

const settle = async (n = 5) => { for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r)); };
const PXE = { kind: 'bootDevice', device: 'pxe', persistent: false };
const CYCLE = { kind: 'power', action: 'cycle' };

t.test('the effects left are on the record: written with the state change, trimmed with each outcome, then cleared', async (t) => {
  const f = await fixture(t);
  const batches: WriteOp[][] = [];
  const write = f.store.write.bind(f.store);
  f.store.write = async (ops) => { batches.push(ops); return write(ops); };
  const m = await f.registry.create({ mac: MAC }, ctx);
  f.bmc.machines.add(m.id);
  let open!: () => void;
  f.bmc.gate = new Promise((r) => { open = r; });
  const r = await f.registry.act(m.id, 'commission', ctx);
  const stored = async () => (await f.store.machines.get(m.id))?.pendingEffects;
  t.same(await stored(), { transition: r.event.id, action: 'commission', from: 'New', to: 'Commissioning', effects: [PXE, CYCLE] },
    'on disk with the state change, before any effect ran');
  t.same(batches.at(-1)!.map((o) => o.collection), ['machines', 'events'], 'one batch: the record with its effects, and the machine.state event');
  await settle();
  t.same(f.bmc.calls, [`${m.id} bootdev pxe by lifecycle`]);
  f.bmc.gate = undefined;
  open();
  await f.runner.idle();
  t.equal(await stored(), undefined, 'cleared once both are carried out');
  t.equal(f.registry.get(m.id)!.pendingEffects, undefined, 'in memory too');
  const outcomes = batches.filter((b) => b.some((o) => o.type === 'put' && (o.value as EventRecord).type === 'machine.state.effect'));
  t.equal(outcomes.length, 2, 'one batch per effect outcome');
  for (const b of outcomes) t.same(b.map((o) => o.collection), ['machines', 'events'], 'each outcome event with the record it trims');
  t.same((outcomes[0]![0] as unknown as { value: { pendingEffects: unknown } }).value.pendingEffects,
    { transition: r.event.id, action: 'commission', from: 'New', to: 'Commissioning', effects: [CYCLE] }, 'after bootdev, the power cycle is left');
  // A transition without BMC work leaves nothing; the field is the registry's own.
  await f.registry.act(m.id, 'commission-done', ctx);
  await f.runner.idle();
  await f.registry.act(m.id, 'allocate', ctx);
  t.equal(await stored(), undefined);
  await t.rejects(f.registry.act(m.id, 'release', { actor: 'op', set: { pendingEffects: undefined } }), TypeError, 'not writable as an extra field');
});

t.test('killed between a state change and its effects: the next start carries out what is left, marked resumed', async (t) => {
  const f = await fixture(t);
  const m = await f.registry.create({ mac: MAC }, ctx);
  f.bmc.machines.add(m.id);
  f.bmc.hangOn.add('power cycle'); // the process "dies" in the power cycle: this runner is abandoned, never stopped
  await f.registry.act(m.id, 'commission', ctx);
  await settle(20);
  t.same(f.bmc.calls, [`${m.id} bootdev pxe by lifecycle`, `${m.id} power cycle by lifecycle`], 'bootdev done, the power cycle hangs');
  t.same(((await f.store.machines.get(m.id))?.pendingEffects as { effects?: unknown } | undefined)?.effects, [CYCLE], 'the power cycle is still to do');

  const g = await restart(t, f.store, { bmcFor: [m.id] });
  const ev = await g.effects();
  t.same(g.bmc.calls, [`${m.id} power cycle by lifecycle`], 'only what was left: no second bootdev');
  t.match(ev.slice(-2), [
    { subject: m.id, actor: 'lifecycle', data: { action: 'commission', to: 'Commissioning', resumed: true, result: 'resumed', effects: ['power cycle'], message: /re-run after a restart: 1 effect left undone/ } },
    { data: { action: 'commission', resumed: true, effect: 'power cycle', result: 'done' } },
  ]);
  t.equal(g.registry.get(m.id)!.state, 'Commissioning');
  t.equal((await f.store.machines.get(m.id))?.pendingEffects, undefined, 'nothing left');
  t.match(g.logs.join(''), /re-running lifecycle effects left undone/);
  const h = await restart(t, f.store, { bmcFor: [m.id] });
  await h.runner.idle();
  t.same(h.bmc.calls, [], 'a third start has nothing to do');
});

t.test('at a restart: only the latest transition counts, in order, before the changes that follow', async (t) => {
  const { store, registry } = await noRunner();
  const m = await registry.create({ mac: MAC }, ctx);
  await registry.act(m.id, 'commission', ctx);
  await registry.act(m.id, 'abort', ctx); // same millisecond, likely: the marker names the transition's event, not a time
  const n = await registry.create({ mac: '52:54:00:77:00:31' }, ctx);
  await registry.act(n.id, 'commission', ctx);

  const g = await restart(t, store, { bmcFor: [m.id, n.id] });
  let open!: () => void;
  g.bmc.gate = new Promise((r) => { open = r; });
  await settle();
  // While n's resumed bootdev is under way, an operator aborts it: queued behind, and the power cycle is superseded.
  await g.registry.act(n.id, 'abort', ctx);
  g.bmc.gate = undefined;
  open();
  const ev = await g.effects();
  t.same(g.bmc.calls.filter((c) => c.startsWith(m.id)), [`${m.id} power off by lifecycle`], "m: the abort's power off, never the commission's cycle");
  t.same(g.bmc.calls.filter((c) => c.startsWith(n.id)), [`${n.id} bootdev pxe by lifecycle`, `${n.id} power off by lifecycle`]);
  t.match(ev.filter((e) => e.subject === n.id).map((e) => e.data), [
    { action: 'commission', resumed: true, result: 'resumed' },
    { action: 'commission', resumed: true, effect: 'bootdev pxe', result: 'done' },
    { action: 'commission', resumed: true, effects: ['power cycle'], result: 'superseded', message: 'the machine is New now' },
    { action: 'abort', effect: 'power off', result: 'done' },
  ]);
  t.equal(g.registry.withPendingEffects().length, 0);
});

t.test('at a restart: a phase past its deadline is left to the sweeper; a failure not yet applied is applied', async (t) => {
  const late = await noRunner();
  const m = await late.registry.create({ mac: MAC }, ctx);
  const deadline = Date.parse((await late.registry.act(m.id, 'commission', ctx)).machine.phaseDeadline!);
  const g = await restart(t, late.store, { bmcFor: [m.id], now: () => deadline + 1 });
  t.match((await g.effects()).at(-1), { data: { resumed: true, result: 'superseded', effects: ['bootdev pxe', 'power cycle'], message: 'Commissioning is past its deadline: the sweeper ends it' } });
  t.same(g.bmc.calls, [], 'no power cycle into a phase that has timed out');

  // The power cycle failed and was recorded; metalbox died before commission-failed was written.
  const failed = await noRunner();
  const n = await failed.registry.create({ mac: MAC }, ctx);
  const r = await failed.registry.act(n.id, 'commission', ctx);
  const rec = (await failed.store.machines.get(n.id))!;
  const reason = 'power cycle failed: BMC_TIMEOUT: the BMC did not answer within 20 s';
  await failed.store.write([{ type: 'put', collection: 'machines', key: n.id, value: { ...rec, pendingEffects: { ...r.machine.pendingEffects, effects: [], failure: reason } } }]);
  const h = await restart(t, failed.store, { bmcFor: [n.id] });
  const ev = await h.effects();
  t.equal(h.registry.get(n.id)!.state, 'FailedCommissioning');
  t.equal(h.registry.get(n.id)!.stateReason, reason);
  t.same(h.bmc.calls, [`${n.id} power off by lifecycle`], "the failed transition's own power off");
  t.match(ev.map((e) => e.data), [
    { action: 'commission', resumed: true, result: 'resumed', message: `re-run after a restart: the failed action (${reason}) left undone when metalbox stopped` },
    { action: 'commission-failed', effect: 'power off', result: 'done' },
  ]);
});

t.test('stop during a BMC call: not a failure; the phase goes on and the next start carries the effects out', async (t) => {
  const f = await fixture(t);
  const m = await f.registry.create({ mac: MAC }, ctx);
  f.bmc.machines.add(m.id);
  f.bmc.honourAbort = true;
  f.bmc.gate = new Promise(() => undefined);
  await f.registry.act(m.id, 'commission', ctx);
  await settle();
  await f.runner.stop();
  t.equal(f.registry.get(m.id)!.state, 'Commissioning', 'not FailedCommissioning: metalbox stopped, the BMC did not fail');
  t.same(await f.effects(), [], 'no outcome recorded');
  t.same(((await f.store.machines.get(m.id))?.pendingEffects as { effects?: unknown } | undefined)?.effects, [PXE, CYCLE]);
  const g = await restart(t, f.store, { bmcFor: [m.id] });
  await g.runner.idle();
  t.same(g.bmc.calls, [`${m.id} bootdev pxe by lifecycle`, `${m.id} power cycle by lifecycle`]);
  t.equal(g.registry.withPendingEffects().length, 0);
});

// --- lifecycle.autoCommission ---------------------------------------------------------------------------

t.test('autoCommission: the inventory of an enlisting boot commissions the New machine at once', async (t) => {
  const { store } = await noRunner();
  const f = await restart(t, store, { autoCommission: true });
  const enlist = { type: 'machine.inventory', data: { purpose: 'enlist' } };
  const m = await f.registry.create({ mac: MAC }, { actor: 'agent' });
  f.bmc.machines.add(m.id);
  await f.registry.amend(m.id, { set: { inventory: { firmware: 'bios' } } }, { actor: 'agent' }, enlist);
  await f.runner.idle();
  const after = f.registry.get(m.id)!;
  t.equal(after.state, 'Commissioning');
  t.equal(after.stateReason, AUTO_COMMISSION_REASON);
  t.same(f.bmc.calls, [`${m.id} bootdev pxe by lifecycle`, `${m.id} power cycle by lifecycle`], 'and its effects carried out');
  const state = [];
  for await (const [, e] of store.events.entries()) if (e.type === 'machine.state') state.push(e);
  t.match(state, [{ actor: 'lifecycle', subject: m.id, data: { action: 'commission', from: 'New', to: 'Commissioning', reason: AUTO_COMMISSION_REASON } }]);

  // Not for other reports, not for a machine that is not New, not when the setting is off.
  const other = await f.registry.create({ mac: '52:54:00:77:00:31' }, ctx);
  await f.registry.amend(other.id, { set: { inventory: {} } }, { actor: 'agent' }, { type: 'machine.inventory', data: { purpose: 'rescue' } });
  await f.registry.amend(other.id, { set: { x: 1 } }, { actor: 'agent' }, { type: 'machine.updated', data: { purpose: 'enlist' } });
  await f.registry.amend(m.id, { set: { inventory: { firmware: 'uefi' } } }, { actor: 'agent' }, enlist);
  await f.runner.idle();
  t.equal(f.registry.get(other.id)!.state, 'New');
  t.equal(f.registry.get(m.id)!.state, 'Commissioning', 'a second enlist report of a Commissioning machine changes nothing');
  const g = await fixture(t);
  const n = await g.registry.create({ mac: MAC }, { actor: 'agent' });
  await g.registry.amend(n.id, { set: { inventory: {} } }, { actor: 'agent' }, enlist);
  await g.runner.idle();
  t.equal(g.registry.get(n.id)!.state, 'New', 'autoCommission off (the default): it waits for an operator');
});
