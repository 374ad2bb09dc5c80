// The lifecycle runner (src/services/lifecycle-runner.ts) against a fake BMC service that records every call
// and fails or hangs on demand: effects in order, recorded as events, failures ending the phase, machines
// without a BMC, phone-home deployments, BMC-only registration, superseded effects, stop.
import t, { type Test } from 'tap';
import { Writable } from 'node:stream';
import { MetalboxError } from '../../src/lib/errors.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord, Store } from '../../src/store/types.ts';
import type { BootDeviceRequest, PowerAction } from '../../src/bmc/types.ts';
import { FAILED_ACTION, LifecycleRunner, type LifecyclePower } from '../../src/services/lifecycle-runner.ts';

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
  async power(id: string, action: PowerAction, actor: string, signal?: AbortSignal) {
    return this.call(id, `power ${action}`, actor, signal);
  }
  async setBootDevice(id: string, r: BootDeviceRequest, actor: string, signal?: AbortSignal) {
    return this.call(id, `bootdev ${r.device}${r.persistent ? ' persistent' : ''}${r.efi ? ' efi' : ''}`, actor, signal);
  }
  private async call(id: string, what: string, actor: string, signal?: AbortSignal) {
    this.calls.push(`${id} ${what} by ${actor}`);
    this.signals.push(signal);
    if (this.gate) await this.gate;
    const err = this.failOn.get(what);
    if (err) { this.failOn.delete(what); throw err; }
    return { result: 'done', message: `${what} done` };
  }
}

interface Fixture { store: Store; registry: MachineRegistry; bmc: FakeBmc; runner: LifecycleRunner; logs: string[]; effects(): Promise<EventRecord[]> }

async function fixture(t: Test, withPower = true): Promise<Fixture> {
  const store = createMemoryStore();
  const events = new EventLog(store);
  const logs: string[] = [];
  const logger = createLogger('info', new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } }));
  const registry = await MachineRegistry.open({ store, events, logger });
  const bmc = new FakeBmc();
  const runner = new LifecycleRunner({ registry, events, logger, ...(withPower ? { power: bmc } : {}) });
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
