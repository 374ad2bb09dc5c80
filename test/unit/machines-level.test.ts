// The registry on the real store: what it shows after a reopen is what was acknowledged before.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { machineEvents, subjectsOf } from '../../src/core/machine-events.ts';
import { openLevelStore } from '../../src/store/level-store.ts';

t.test('machines, states, indexes and events survive a reopen of the LevelDB store', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mbx-machines-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  let now = Date.parse('2025-03-01T12:00:00.000Z');
  const clock = () => (now += 5);
  {
    const store = await openLevelStore(dir);
    const events = new EventLog(store, clock);
    await events.init();
    const registry = await MachineRegistry.open({ store, events, now: clock, timeouts: { Commissioning: 1000 } });
    const a = await registry.create({ mac: '52:54:00:77:00:10', tags: ['rack1'] }, { actor: 'alice' });
    const b = await registry.create({ mac: '52:54:00:77:00:11', hostname: 'db1', uuid: '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f' }, { actor: 'alice' });
    const c = await registry.create({ mac: '52:54:00:77:00:12' }, { actor: 'alice' });
    await registry.act(a.id, 'commission', { actor: 'alice' });
    await registry.act(a.id, 'commission-done', { actor: 'agent' });
    await registry.act(a.id, 'deploy', { actor: 'bob' });
    await registry.act(b.id, 'commission', { actor: 'alice' });
    await registry.update(c.id, { hostname: 'web7', tags: ['gpu'] }, { actor: 'alice' });
    await registry.remove(c.id, { actor: 'alice' });
    await store.close();
  }
  {
    const store = await openLevelStore(dir);
    const events = new EventLog(store, clock);
    await events.init();
    const registry = await MachineRegistry.open({ store, events, now: clock, timeouts: { Commissioning: 1000 } });
    t.equal(registry.size, 2);
    const a = registry.byMac('52:54:00:77:00:10')!;
    t.equal(a.state, 'Deploying');
    t.equal(a.hostname, 'node-770010');
    t.ok(a.commissionedAt, 'commissioned once');
    t.ok(a.phaseDeadline);
    const b = registry.find('db1')!;
    t.equal(b.state, 'Commissioning');
    t.equal(registry.byUuid('8B3C6A52-2F0E-4C7B-9D55-0A1B2C3D4E5F')?.id, b.id);
    t.equal(registry.find('web7'), undefined, 'the deleted machine stays deleted');
    t.equal(registry.find('52:54:00:77:00:12'), undefined);
    t.same(registry.list({ state: ['Deploying', 'Commissioning'], sort: 'state' }).items.map((m) => m.id), [b.id, a.id]);
    t.same(registry.list({ tags: ['rack1'] }).items.map((m) => m.id), [a.id]);
    // The store's indexes were kept with the records: a new machine may take the deleted one's name and MAC.
    const c2 = await registry.create({ mac: '52:54:00:77:00:12', hostname: 'web7' }, { actor: 'alice' });
    t.equal(c2.hostname, 'web7');
    await t.rejects(registry.create({ mac: '52:54:00:77:00:11' }, { actor: 'alice' }), { code: 'MACHINE_CONFLICT' });
    // A phase that timed out while metalbox was down is failed by the first sweep.
    now += 10_000;
    t.equal(await registry.sweep(), 1);
    t.equal(registry.get(b.id)!.state, 'FailedCommissioning');
    // The events of a machine, newest first, by id and MAC; event keys continue after the reopen.
    const page = await machineEvents(store, subjectsOf(registry.get(a.id)!), { limit: 10 });
    t.same(page.items.map((e) => `${e.type}:${String(e.data?.to ?? '')}`), ['machine.state:Deploying', 'machine.state:Ready', 'machine.state:Commissioning', 'machine.created:']);
    t.same(page.items.map((e) => e.actor), ['bob', 'agent', 'alice', 'alice']);
    const older = await machineEvents(store, subjectsOf(registry.get(a.id)!), { limit: 2 });
    t.equal(older.items.length, 2);
    const rest = await machineEvents(store, subjectsOf(registry.get(a.id)!), { limit: 10, before: older.next! });
    t.same(rest.items.map((e) => e.type), ['machine.state', 'machine.created']);
    t.equal(rest.next, null);
    await store.close();
  }
});
