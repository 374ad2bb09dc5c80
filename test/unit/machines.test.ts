import t from 'tap';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry, type MachineChange } from '../../src/core/machines.ts';
import { hostnameCandidates, newMachineId } from '../../src/core/machine-fields.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import { MetalboxError } from '../../src/lib/errors.ts';
import type { EventRecord, Store, WriteOp } from '../../src/store/types.ts';

const T0 = Date.parse('2025-03-01T12:00:00.000Z');

async function setup(opts: { store?: Store; timeouts?: Record<string, number> } = {}) {
  const store = opts.store ?? createMemoryStore();
  let now = T0;
  const clock = { now: () => now, advance: (ms: number) => { now += ms; } };
  const events = new EventLog(store, clock.now);
  await events.init();
  const registry = await MachineRegistry.open({ store, events, now: clock.now, ...(opts.timeouts ? { timeouts: opts.timeouts } : {}) });
  const changes: MachineChange[] = [];
  registry.subscribe((c) => changes.push(c));
  return { store, events, registry, clock, changes };
}

async function allEvents(store: Store): Promise<EventRecord[]> {
  const out: EventRecord[] = [];
  for await (const [, e] of store.events.entries()) out.push(e);
  return out;
}

const alice = { actor: 'alice' };
/** What the store holds of a registry object: its JSON (the registry keeps absent fields as undefined). */
const stored = <T>(m: T): T => JSON.parse(JSON.stringify(m)) as T;

t.test('create from a MAC: New, a stable generated host name, the record and its event durable together', async (t) => {
  const { store, registry, changes } = await setup();
  const m = await registry.create({ mac: '52-54-00-77-00-10', tags: ['rack1', 'gpu', 'rack1'] }, alice);
  t.match(m.id, /^[0-9a-hjkmnp-tv-z]{8}$/);
  t.equal(m.hostname, 'node-770010');
  t.same(m.macs, ['52:54:00:77:00:10']);
  t.equal(m.state, 'New');
  t.same(m.tags, ['rack1', 'gpu'], 'duplicates dropped, order kept');
  t.equal(m.createdAt, new Date(T0).toISOString());
  t.same(await store.machines.get(m.id), stored(m));
  t.same((await store.machines.getBy('mac', '52:54:00:77:00:10'))?.id, m.id);
  const [ev] = await allEvents(store);
  t.match(ev, { type: 'machine.created', actor: 'alice', subject: m.id, data: { hostname: 'node-770010', macs: ['52:54:00:77:00:10'], state: 'New' } });
  t.equal(changes.length, 1);
  t.equal(changes[0]!.kind, 'created');
  t.equal(changes[0]!.event.id, ev!.id, 'listeners get the stored event');
  t.equal(registry.find('52:54:00:77:00:10')?.id, m.id, 'find by MAC');
  t.equal(registry.find('5254.0077.0010')?.id, m.id, 'any MAC form');
  t.equal(registry.find('NODE-770010')?.id, m.id, 'find by host name, any case');
  t.equal(registry.find(m.id)?.id, m.id);
  t.equal(registry.find('nope'), undefined);
  t.throws(() => registry.resolve('nope'), { code: 'MACHINE_NOT_FOUND' });
});

t.test('generated host names: last 3 octets, then the whole MAC, then -2; node-<id> without a MAC', async (t) => {
  const { registry } = await setup();
  const a = await registry.create({ mac: '52:54:00:77:00:10' }, alice);
  const b = await registry.create({ mac: 'aa:bb:cc:77:00:10' }, alice);
  t.equal(a.hostname, 'node-770010');
  t.equal(b.hostname, 'node-aabbcc770010');
  await registry.update(b.id, { hostname: 'web1' }, alice);
  await registry.update(a.id, { hostname: 'node-aabbcc770010' }, alice);
  await registry.remove(b.id, alice);
  const c = await registry.create({ mac: 'aa:bb:cc:77:00:10', hostname: 'other' }, alice);
  t.equal(c.hostname, 'other');
  const d = await registry.create({}, alice);
  t.equal(d.hostname, `node-${d.id}`, 'for a BMC: no MAC');
  t.same(d.macs, []);
  t.same([...take(hostnameCandidates('aa:bb:cc:77:00:10', 'x'), 4)], ['node-770010', 'node-aabbcc770010', 'node-aabbcc770010-2', 'node-aabbcc770010-3']);
  const ids = new Set(Array.from({ length: 2000 }, () => newMachineId()));
  t.ok(ids.size > 1995, 'ids are random');
});

function* take<T>(it: Iterable<T>, n: number): Generator<T> {
  for (const x of it) { if (n-- <= 0) return; yield x; }
}

t.test('conflicts and bad fields are refused before anything is written', async (t) => {
  const { store, registry } = await setup();
  const a = await registry.create({ mac: '52:54:00:00:00:01', hostname: 'web1', uuid: '8B3C6A52-2F0E-4C7B-9D55-0A1B2C3D4E5F' }, alice);
  t.equal(a.uuid, '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f');
  await t.rejects(registry.create({ mac: '52:54:00:00:00:01' }, alice), { code: 'MACHINE_CONFLICT', message: new RegExp(`mac 52:54:00:00:00:01 already belongs to machine ${a.id}`) });
  await t.rejects(registry.create({ mac: '52:54:00:00:00:02', hostname: 'WEB1' }, alice), { code: 'MACHINE_CONFLICT', message: /hostname web1/ });
  await t.rejects(registry.create({ mac: '52:54:00:00:00:02', uuid: '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f' }, alice), { code: 'MACHINE_CONFLICT', message: /uuid/ });
  await t.rejects(registry.create({ mac: '01:00:5e:00:00:01' }, alice), { code: 'MACHINE_INVALID', message: /multicast/ });
  await t.rejects(registry.create({ mac: 'zz' }, alice), { code: 'MACHINE_INVALID', message: /^mac:/ });
  await t.rejects(registry.create({ mac: '52:54:00:00:00:02', hostname: '-bad' }, alice), { code: 'MACHINE_INVALID', message: /^hostname: must be an RFC 1123 label/ });
  await t.rejects(registry.create({ mac: '52:54:00:00:00:02', hostname: 'a'.repeat(64) }, alice), { code: 'MACHINE_INVALID' });
  await t.rejects(registry.create({ mac: '52:54:00:00:00:02', tags: ['ok', 'Not Ok'] }, alice), { code: 'MACHINE_INVALID', message: /^tags\[1\]:/ });
  await t.rejects(registry.create({ mac: '52:54:00:00:00:02', uuid: 'nope' }, alice), { code: 'MACHINE_INVALID', message: /^uuid:/ });
  await t.rejects(registry.update(a.id, { hostname: 'a_b' }, alice), { code: 'MACHINE_INVALID' });
  t.equal(await store.machines.count(), 1);
  t.equal((await allEvents(store)).length, 1);
  // Two creates racing for one MAC: exactly one wins.
  const results = await Promise.allSettled([registry.create({ mac: '52:54:00:00:00:09' }, alice), registry.create({ mac: '52:54:00:00:00:09' }, alice)]);
  t.same(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  t.match((results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason, { code: 'MACHINE_CONFLICT' });
});

t.test('a store conflict the registry did not foresee becomes MACHINE_CONFLICT', async (t) => {
  const store = createMemoryStore();
  // Another writer (a bug, or a restore) put a machine with this MAC behind the registry's back.
  await store.machines.put('zzzzzzzz', { id: 'zzzzzzzz', hostname: 'ghost', macs: ['52:54:00:00:00:05'], state: 'New', tags: [], createdAt: '', updatedAt: '' });
  const { registry } = await setup({ store });
  await store.machines.put('zzzzzzzy', { id: 'zzzzzzzy', hostname: 'ghost2', macs: ['52:54:00:00:00:06'], state: 'New', tags: [], createdAt: '', updatedAt: '' });
  await t.rejects(registry.create({ mac: '52:54:00:00:00:06' }, alice), { code: 'MACHINE_CONFLICT', message: /already belongs to machine zzzzzzzy/ });
  t.equal(registry.byMac('52:54:00:00:00:06'), undefined, 'nothing applied');
});

t.test('update: host name and tags with an event; no change is no write', async (t) => {
  const { store, registry, changes } = await setup();
  const m = await registry.create({ mac: '52:54:00:00:00:01' }, alice);
  const before = (await allEvents(store)).length;
  t.equal(await registry.update(m.hostname, { hostname: m.hostname, tags: [] }, alice), registry.get(m.id), 'unchanged: same object');
  t.equal((await allEvents(store)).length, before);
  const u = await registry.update(m.id, { hostname: 'Web-01', tags: ['a'] }, { actor: 'bob' });
  t.equal(u.hostname, 'web-01');
  t.same(u.tags, ['a']);
  t.same(await store.machines.get(m.id), stored(u));
  t.equal(registry.byHostname(m.hostname), undefined, 'old name released');
  t.equal(registry.byHostname('web-01')?.id, m.id);
  const ev = (await allEvents(store)).at(-1)!;
  t.match(ev, { type: 'machine.updated', actor: 'bob', data: { changed: { hostname: { from: 'node-000001', to: 'web-01' }, tags: { from: [], to: ['a'] } } } });
  t.equal(changes.at(-1)!.kind, 'updated');
  const other = await registry.create({ mac: '52:54:00:00:00:02' }, alice);
  await t.rejects(registry.update(other.id, { hostname: 'web-01' }, alice), { code: 'MACHINE_CONFLICT' });
  await t.rejects(registry.update('nope', { tags: [] }, alice), { code: 'MACHINE_NOT_FOUND' });
});

t.test('actions: state and event in one batch, effects returned, illegal ones change nothing', async (t) => {
  const inner = createMemoryStore();
  const batches: WriteOp[][] = [];
  const store: Store = { ...inner, write: (ops) => { batches.push(ops); return inner.write(ops); } };
  const { registry, changes } = await setup({ store });
  const m = await registry.create({ mac: '52:54:00:00:00:01' }, alice);
  const r = await registry.act(m.id, 'commission', { actor: 'carol', reason: 'new rack' });
  t.equal(r.machine.state, 'Commissioning');
  t.same(r.effects.map((e) => e.kind), ['bootScript', 'bootDevice', 'power', 'timeout']);
  const last = batches.at(-1)!;
  t.same(last.map((o) => `${o.type} ${o.collection}`), ['put machines', 'put events'], 'one batch');
  t.match((last[1] as { value: EventRecord }).value, { type: 'machine.state', actor: 'carol', subject: m.id, data: { from: 'New', to: 'Commissioning', action: 'commission', reason: 'new rack' } });
  t.equal(r.event.id, (last[1] as { key: string }).key);
  t.same(await inner.machines.get(m.id), stored(r.machine));
  t.match(changes.at(-1), { kind: 'state', from: 'New', to: 'Commissioning', action: 'commission' });

  const n = batches.length;
  await t.rejects(registry.act(m.id, 'deploy', alice), { code: 'LIFECYCLE_INVALID_TRANSITION', message: /is Commissioning: deploy is allowed only from Ready, Allocated, FailedDeployment/ });
  t.equal(batches.length, n, 'nothing written');
  t.equal(registry.get(m.id)!.state, 'Commissioning');
  await t.rejects(registry.act('nope', 'commission', alice), { code: 'MACHINE_NOT_FOUND' });

  // Deleting is refused mid-phase, allowed at rest.
  await t.rejects(registry.remove(m.id, alice), { code: 'LIFECYCLE_INVALID_TRANSITION', message: /abort it before deleting/ });
  await registry.act(m.id, 'abort', alice);
  await registry.remove(m.id, alice);
  t.equal(registry.get(m.id), undefined);
  t.equal(await inner.machines.get(m.id), undefined);
  t.equal(changes.at(-1)!.kind, 'deleted');
});

t.test('two actions on one machine at once: one at a time, the second sees the first', async (t) => {
  const { registry } = await setup();
  const m = await registry.create({ mac: '52:54:00:00:00:01' }, alice);
  const results = await Promise.allSettled([registry.act(m.id, 'commission', alice), registry.act(m.id, 'commission', alice), registry.act(m.id, 'abort', alice)]);
  t.same(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
  t.equal(registry.get(m.id)!.state, 'New');
});

t.test('a failed store write leaves memory as it was', async (t) => {
  const inner = createMemoryStore();
  let fail = false;
  const store: Store = { ...inner, write: (ops) => (fail ? Promise.reject(new MetalboxError('STORE_WRITE_FAILED', 'disk full')) : inner.write(ops)) };
  const { registry, changes } = await setup({ store });
  const m = await registry.create({ mac: '52:54:00:00:00:01', hostname: 'web1' }, alice);
  fail = true;
  await t.rejects(registry.act(m.id, 'commission', alice), { code: 'STORE_WRITE_FAILED' });
  await t.rejects(registry.create({ mac: '52:54:00:00:00:02', hostname: 'web2' }, alice), { code: 'STORE_WRITE_FAILED' });
  await t.rejects(registry.update(m.id, { hostname: 'web3' }, alice), { code: 'STORE_WRITE_FAILED' });
  t.equal(registry.get(m.id)!.state, 'New');
  t.equal(registry.size, 1);
  t.equal(changes.length, 1);
  t.equal(registry.list({}).total, 1);
  fail = false;
  t.equal((await registry.create({ mac: '52:54:00:00:00:02', hostname: 'web2' }, alice)).hostname, 'web2', 'claims were released');
  t.equal((await registry.update(m.id, { hostname: 'web3' }, alice)).hostname, 'web3');
});

t.test('the sweeper moves machines past their phase deadline to the failed state, once', async (t) => {
  const { store, registry, clock, changes } = await setup({ timeouts: { Commissioning: 60_000, Deploying: 120_000 } });
  const a = await registry.create({ mac: '52:54:00:00:00:01' }, alice);
  const b = await registry.create({ mac: '52:54:00:00:00:02' }, alice);
  const c = await registry.create({ mac: '52:54:00:00:00:03' }, alice);
  await registry.act(a.id, 'commission', alice);
  await registry.act(b.id, 'commission', alice);
  clock.advance(30_000);
  await registry.act(b.id, 'commission-done', { actor: 'agent' });
  await registry.act(c.id, 'commission', alice);
  t.equal(await registry.sweep(), 0, 'nothing due');
  clock.advance(30_000);
  t.equal(await registry.sweep(), 1, 'a is due, c is not');
  const failed = registry.get(a.id)!;
  t.equal(failed.state, 'FailedCommissioning');
  t.equal(failed.stateReason, `Commissioning timed out: no report by ${new Date(T0 + 60_000).toISOString()} (entered ${new Date(T0).toISOString()})`);
  t.equal(failed.phaseDeadline, undefined);
  const ev = (await allEvents(store)).at(-1)!;
  t.match(ev, { type: 'machine.state', actor: 'lifecycle', subject: a.id, data: { from: 'Commissioning', to: 'FailedCommissioning', action: 'timeout' } });
  t.match(changes.at(-1), { kind: 'state', action: 'timeout', effects: [{ kind: 'bootScript', script: 'local-disk' }, { kind: 'power', action: 'off' }] });
  t.equal(await registry.sweep(), 0, 'not twice');
  clock.advance(30_000);
  t.equal(await registry.sweep(), 1);
  t.equal(registry.get(c.id)!.state, 'FailedCommissioning');
  t.equal(registry.get(b.id)!.state, 'Ready', 'finished phases are left alone');
  // start() runs a sweep at once and on an interval; stop() waits for it.
  const d = await registry.create({ mac: '52:54:00:00:00:04' }, alice);
  await registry.act(d.id, 'commission', alice);
  clock.advance(60_000);
  await registry.start();
  await registry.stop();
  t.equal(registry.get(d.id)!.state, 'FailedCommissioning');
});

t.test('listeners run after the write is durable; a throwing listener does not break the write', async (t) => {
  const { store, registry } = await setup();
  const seen: string[] = [];
  registry.subscribe(() => { throw new Error('listener bug'); });
  const off = registry.subscribe((c) => { void store.machines.get(c.machine.id).then((r) => seen.push(`${c.kind}:${r?.state ?? 'gone'}`)); });
  const m = await registry.create({ mac: '52:54:00:00:00:01' }, alice);
  await registry.act(m.id, 'commission', alice);
  await registry.act(m.id, 'abort', alice);
  await registry.remove(m.id, alice);
  off();
  await registry.create({ mac: '52:54:00:00:00:02' }, alice);
  await new Promise((r) => setImmediate(r));
  t.same(seen, ['created:New', 'state:Commissioning', 'state:New', 'deleted:gone']);
});
