// What the agent API needs from the machine registry (src/core/machines.ts): `amend` (a MAC, a UUID and extra
// fields a machine reports about itself) and `act` with `set` (fields an action carries), on the memory store.
import t from 'tap';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord } from '../../src/store/types.ts';

async function fixture() {
  const store = createMemoryStore();
  const events = new EventLog(store);
  const registry = await MachineRegistry.open({ store, events });
  const changes: string[] = [];
  registry.subscribe((c) => changes.push(c.kind));
  const all = async () => { const out: EventRecord[] = []; for await (const [, e] of store.events.entries()) out.push(e); return out; };
  return { store, registry, changes, all };
}

const ctx = { actor: 'agent' };

t.test('amend: a MAC and a UUID for a machine registered without them, indexed in memory and in the store', async (t) => {
  const { store, registry, changes, all } = await fixture();
  const m = await registry.create({}, ctx);
  const after = await registry.amend(m.id, { mac: '52-54-00-77-00-50', uuid: '8B3C6A52-2F0E-4C7B-9D55-0A1B2C3D4E5F', set: { inventory: { cpu: 'x' } } }, ctx, { type: 'machine.inventory', data: { purpose: 'enlist' } });
  t.same(after.macs, ['52:54:00:77:00:50']);
  t.equal(after.uuid, '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f');
  t.same(after.inventory, { cpu: 'x' });
  t.equal(registry.byMac('52:54:00:77:00:50')?.id, m.id);
  t.equal(registry.byUuid('8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f')?.id, m.id);
  t.equal((await store.machines.getBy('mac', '52:54:00:77:00:50'))?.id, m.id, 'the store index too');
  t.match((await all()).at(-1), { type: 'machine.inventory', actor: 'agent', subject: m.id, data: { purpose: 'enlist', mac: '52:54:00:77:00:50', uuid: '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f' } });
  t.same(changes, ['created', 'updated']);

  // Nothing new: no write, no event. An existing UUID is never replaced.
  const n = (await all()).length;
  t.equal(await registry.amend(m.id, { mac: '52:54:00:77:00:50', uuid: '00000000-0000-4000-8000-000000000001' }, ctx, { type: 'x' }), registry.get(m.id));
  t.equal((await all()).length, n);
  t.equal(registry.get(m.id)!.uuid, '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f');
});

t.test('amend: a MAC another machine has is MACHINE_CONFLICT and nothing is written; own fields cannot be set', async (t) => {
  const { registry, all } = await fixture();
  const a = await registry.create({ mac: '52:54:00:77:00:51' }, ctx);
  const b = await registry.create({}, ctx);
  const n = (await all()).length;
  await t.rejects(registry.amend(b.id, { mac: '52:54:00:77:00:51', set: { inventory: {} } }, ctx, { type: 'x' }), { code: 'MACHINE_CONFLICT', message: new RegExp(a.id) });
  t.same(registry.get(b.id)!.macs, []);
  t.equal(registry.get(b.id)!.inventory, undefined);
  t.equal((await all()).length, n);
  await t.rejects(registry.amend(b.id, { set: { state: 'Deployed' } }, ctx, { type: 'x' }), TypeError);
  await t.rejects(registry.amend(b.id, { set: { macs: [] } }, ctx, { type: 'x' }), TypeError);
  await t.rejects(registry.amend('nope', { set: { inventory: {} } }, ctx, { type: 'x' }), { code: 'MACHINE_NOT_FOUND' });
});

t.test('act with set: the fields and the transition in one record write; own fields refused', async (t) => {
  const { store, registry } = await fixture();
  const m = await registry.create({ mac: '52:54:00:77:00:52' }, ctx);
  await registry.act(m.id, 'commission', ctx);
  const r = await registry.act(m.id, 'commission-done', { ...ctx, set: { inventory: { firmware: 'uefi' } } });
  t.equal(r.machine.state, 'Ready');
  t.match(await store.machines.get(m.id), { state: 'Ready', inventory: { firmware: 'uefi' } });
  await t.rejects(registry.act(m.id, 'allocate', { ...ctx, set: { commissionedAt: 'never' } }), TypeError);
  await t.rejects(registry.act(m.id, 'deploy-done', { ...ctx, set: { inventory: {} } }), { code: 'LIFECYCLE_INVALID_TRANSITION' });
  t.same(registry.get(m.id)!.inventory, { firmware: 'uefi' }, 'a refused action writes none of its fields');
});
