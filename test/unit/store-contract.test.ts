// One contract suite, run against every Store implementation (STYLE.md: after abstract-level's compliance
// suite). Implementation-specific behaviour (persistence, lock, damage, migration, backup files) is in
// store-level.test.ts.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMetalboxError } from '../../src/lib/errors.ts';
import { backupStore, restoreBackup } from '../../src/store/backup.ts';
import { openLevelStore } from '../../src/store/level-store.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { LeaseRecord, MachineRecord, Store, WriteOp } from '../../src/store/types.ts';

/** What the harness needs of a tap test. */
interface Test { teardown(fn: () => unknown): void }

interface Harness {
  name: string;
  /** A new, empty store; the harness closes and removes it after the test. */
  open(t: Test): Promise<Store>;
  /** Whether concurrent writes share a sync (the memory store has none to share). */
  groupCommit: boolean;
}

const now = '2024-11-23T00:00:00.000Z';
const machine = (id: string, over: Partial<MachineRecord> = {}): MachineRecord =>
  ({ id, hostname: id, macs: [], state: 'new', tags: [], createdAt: now, updatedAt: now, ...over });
const lease = (ip: string, mac: string, over: Partial<LeaseRecord> = {}): LeaseRecord =>
  ({ ip, mac, subnet: '10.0.0.0/24', expiresAt: now, state: 'bound', ...over });
const mac = (n: number): string => `02:00:00:00:00:${n.toString(16).padStart(2, '0')}`;
const put = (collection: 'machines', key: string, value: MachineRecord): WriteOp => ({ type: 'put', collection, key, value });

async function collect<T>(it: AsyncIterable<[string, T]>): Promise<[string, T][]> {
  const out: [string, T][] = [];
  for await (const e of it) out.push(e);
  return out;
}

async function scratch(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'metalbox-store-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function storeContract(h: Harness): void {
  t.test(`${h.name}: put, get, del; a missing record is undefined`, async (t) => {
    const s = await h.open(t);
    t.equal(await s.machines.get('nope'), undefined);
    await s.machines.put('a', machine('a', { extraField: { nested: [1, 2] } }));
    t.same(await s.machines.get('a'), machine('a', { extraField: { nested: [1, 2] } }));
    await s.machines.del('a');
    t.equal(await s.machines.get('a'), undefined);
    await s.machines.del('a'); // deleting a missing record is fine
    await s.settings.put('site.null', null);
    await s.settings.put('site.name', 'rack-1');
    t.equal(await s.settings.get('site.null'), null, 'a stored null is not a missing record');
    t.equal(await s.settings.get('site.name'), 'rack-1');
    t.equal(s.collection('settings'), s.settings);
    t.throws(() => s.collection('nope' as 'settings'), TypeError);
  });

  t.test(`${h.name}: values are copies with JSON semantics`, async (t) => {
    const s = await h.open(t);
    const m = machine('a', { tags: ['x'], when: new Date(now), gone: undefined });
    await s.machines.put('a', m);
    m.tags.push('mutated');
    const got = await s.machines.get('a');
    t.same(got?.tags, ['x']);
    t.equal(got?.when, now, 'a Date is stored as its JSON string');
    t.notOk(got && 'gone' in got, 'undefined fields vanish');
    got!.tags.push('mutated');
    t.same((await s.machines.get('a'))?.tags, ['x']);
  });

  t.test(`${h.name}: records held in memory (leases) are JSON copies too, flat or not`, async (t) => {
    const s = await h.open(t);
    // Flat records take a field-by-field copy in the LevelDB store; these must come out as JSON would have them.
    const odd = lease('10.0.0.1', mac(1), { hostname: undefined, extra: -0, nan: Number.NaN, when: new Date(now), nested: { a: [1] }, none: null, yes: true } as Partial<LeaseRecord>);
    const flat = lease('10.0.0.2', mac(2), { hostname: 'h', gone: undefined, n: 1.5 } as Partial<LeaseRecord>);
    await s.write([{ type: 'put', collection: 'leases', key: '10.0.0.1', value: odd }, { type: 'put', collection: 'leases', key: '10.0.0.2', value: flat }]);
    (flat as unknown as Record<string, unknown>).n = 2;
    flat.hostname = 'changed';
    t.same(await s.leases.get('10.0.0.1'), JSON.parse(JSON.stringify(odd)));
    t.same(await s.leases.get('10.0.0.2'), { ...lease('10.0.0.2', mac(2)), hostname: 'h', n: 1.5 }, 'undefined fields vanish; later changes to the caller\'s object do not show');
    t.notOk('gone' in ((await s.leases.get('10.0.0.2')) ?? {}));
    t.equal(Object.is((await s.leases.get('10.0.0.1') as unknown as Record<string, unknown>).extra, 0), true, '-0 comes back as 0');
    t.same(await s.leases.getBy('mac', mac(2)), { ...lease('10.0.0.2', mac(2)), hostname: 'h', n: 1.5 }, 'the index sees the copy');
  });

  t.test(`${h.name}: entries are key-ordered (UTF-8 byte order) with ranges, limit and reverse`, async (t) => {
    const s = await h.open(t);
    // U+1F600 sorts after U+FFFD in UTF-8 (and LevelDB), before it in UTF-16.
    const keys = ['d', 'b', 'a', 'e', 'c', '\u{1F600}', '\uFFFD', 'é'];
    await Promise.all(keys.map((k) => s.settings.put(k, k)));
    const all = ['a', 'b', 'c', 'd', 'e', 'é', '\uFFFD', '\u{1F600}'];
    const ks = async (o?: Parameters<Store['settings']['entries']>[0]): Promise<string[]> => (await collect(s.settings.entries(o))).map(([k]) => k);
    t.same(await ks(), all);
    t.same((await collect(s.settings.entries())).map(([, v]) => v), all, 'values come with their keys');
    t.same(await ks({ gt: 'b', lt: 'e' }), ['c', 'd']);
    t.same(await ks({ gte: 'b', lte: 'e' }), ['b', 'c', 'd', 'e']);
    t.same(await ks({ limit: 2 }), ['a', 'b']);
    t.same(await ks({ limit: 0 }), []);
    t.same(await ks({ reverse: true, limit: 3 }), ['\u{1F600}', '\uFFFD', 'é']);
    t.same(await ks({ reverse: true, gte: 'c', lt: 'e' }), ['d', 'c']);
    t.same(await ks({ gt: 'z', lt: 'zz' }), []);
    t.equal(await s.settings.count(), all.length);
    t.equal(await s.machines.count(), 0);
    t.throws(() => s.settings.entries({ gt: 'a', gte: 'a' }), TypeError);
  });

  t.test(`${h.name}: a scan sees the data as of its start`, async (t) => {
    const s = await h.open(t);
    for (const k of ['a', 'b', 'c', 'd']) await s.settings.put(k, k);
    const it = s.settings.entries()[Symbol.asyncIterator]();
    t.same((await it.next()).value, ['a', 'a']);
    await s.settings.del('c');
    await s.settings.put('bb', 'new');
    await s.settings.put('d', 'changed');
    const rest: unknown[] = [];
    for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value);
    t.same(rest, [['b', 'b'], ['c', 'c'], ['d', 'd']]);
    t.same((await collect(s.settings.entries())).map(([k]) => k), ['a', 'b', 'bb', 'd']);
  });

  t.test(`${h.name}: a multi-op write across collections is all there`, async (t) => {
    const s = await h.open(t);
    await s.write([
      put('machines', 'm1', machine('m1', { macs: [mac(1)] })),
      { type: 'put', collection: 'leases', key: '10.0.0.5', value: lease('10.0.0.5', mac(1)) },
      { type: 'put', collection: 'events', key: 'e1', value: { id: 'e1', at: now, type: 'machine.created', actor: 'test' } },
      { type: 'put', collection: 'settings', key: 'x', value: 1 },
      { type: 'del', collection: 'settings', key: 'x' },
      { type: 'put', collection: 'settings', key: 'y', value: 1 },
      { type: 'put', collection: 'settings', key: 'y', value: 2 },
    ]);
    t.equal((await s.machines.get('m1'))?.id, 'm1');
    t.equal((await s.leases.get('10.0.0.5'))?.mac, mac(1));
    t.equal((await s.events.get('e1'))?.type, 'machine.created');
    t.equal(await s.settings.get('x'), undefined, 'the later op on a key wins');
    t.equal(await s.settings.get('y'), 2);
    await s.write([]);
  });

  t.test(`${h.name}: machine indexes by mac, uuid and hostname, case-insensitive`, async (t) => {
    const s = await h.open(t);
    const m = machine('m1', { hostname: 'Node-1', uuid: 'A0B1C2D3-0000-4000-8000-000000000001', macs: [mac(1), mac(2).toUpperCase()] });
    await s.machines.put('m1', m);
    t.equal((await s.machines.getBy('mac', mac(1)))?.id, 'm1');
    t.equal((await s.machines.getBy('mac', mac(1).toUpperCase()))?.id, 'm1');
    t.equal((await s.machines.getBy('mac', mac(2)))?.id, 'm1', 'stored upper case, found lower case');
    t.equal((await s.machines.getBy('uuid', 'a0b1c2d3-0000-4000-8000-000000000001'))?.id, 'm1');
    t.equal((await s.machines.getBy('hostname', 'NODE-1'))?.id, 'm1');
    t.equal((await s.machines.getBy('hostname', 'node-1'))?.hostname, 'Node-1', 'the record keeps its spelling');
    t.equal(await s.machines.getBy('mac', mac(9)), undefined);
    t.equal(await s.machines.getBy('hostname', ''), undefined);
    await t.rejects(s.machines.getBy('nope' as 'mac', 'x'), TypeError);

    // Update: stale entries go, new ones come.
    await s.machines.put('m1', { ...m, hostname: 'node-2', uuid: undefined, macs: [mac(2), mac(3)] });
    t.equal(await s.machines.getBy('hostname', 'node-1'), undefined);
    t.equal((await s.machines.getBy('hostname', 'node-2'))?.id, 'm1');
    t.equal(await s.machines.getBy('uuid', m.uuid!), undefined);
    t.equal(await s.machines.getBy('mac', mac(1)), undefined);
    t.equal((await s.machines.getBy('mac', mac(2)))?.id, 'm1');
    t.equal((await s.machines.getBy('mac', mac(3)))?.id, 'm1');

    // The freed values can be taken by another machine.
    await s.machines.put('m2', machine('m2', { hostname: 'node-1', macs: [mac(1)], uuid: m.uuid }));
    t.equal((await s.machines.getBy('hostname', 'node-1'))?.id, 'm2');

    // Delete: every entry goes.
    await s.machines.del('m1');
    t.equal(await s.machines.getBy('hostname', 'node-2'), undefined);
    t.equal(await s.machines.getBy('mac', mac(2)), undefined);
    t.equal(await s.machines.getBy('mac', mac(3)), undefined);
    t.equal((await s.machines.getBy('mac', mac(1)))?.id, 'm2');

    // An empty hostname is not indexed, so many unnamed machines can exist.
    await s.machines.put('u1', machine('u1', { hostname: '' }));
    await s.machines.put('u2', machine('u2', { hostname: '' }));
    t.equal(await s.machines.count(), 3);
  });

  t.test(`${h.name}: lease by mac is the lease most recently written for that MAC`, async (t) => {
    const s = await h.open(t);
    await s.leases.put('10.0.0.5', lease('10.0.0.5', mac(1)));
    t.equal((await s.leases.getBy('mac', mac(1).toUpperCase()))?.ip, '10.0.0.5');
    await s.leases.put('10.0.0.6', lease('10.0.0.6', mac(1)));
    t.equal((await s.leases.getBy('mac', mac(1)))?.ip, '10.0.0.6', 'a newer lease of the MAC takes the entry');
    await s.leases.put('10.0.0.5', lease('10.0.0.5', mac(1), { state: 'released' }));
    t.equal((await s.leases.getBy('mac', mac(1)))?.ip, '10.0.0.5', 'so does a renewal');
    await s.leases.del('10.0.0.6');
    t.equal((await s.leases.getBy('mac', mac(1)))?.ip, '10.0.0.5', 'deleting a lease that is not current leaves the entry');
    await s.leases.put('10.0.0.5', lease('10.0.0.5', mac(2)));
    t.equal(await s.leases.getBy('mac', mac(1)), undefined, 'the entry goes when its lease moves to another MAC');
    t.equal((await s.leases.getBy('mac', mac(2)))?.ip, '10.0.0.5');
    await s.leases.del('10.0.0.5');
    t.equal(await s.leases.getBy('mac', mac(2)), undefined);
  });

  t.test(`${h.name}: STORE_CONFLICT rejects the whole write and only that write`, async (t) => {
    const s = await h.open(t);
    await s.machines.put('a', machine('a', { hostname: 'alpha', uuid: 'u-a', macs: [mac(1)] }));
    const before = await s.machines.get('a');

    const err = await s.write([
      { type: 'put', collection: 'settings', key: 'side.effect', value: true },
      put('machines', 'b', machine('b', { hostname: 'beta', macs: [mac(2), mac(1)] })),
    ]).then(() => undefined, (e: unknown) => e);
    t.ok(isMetalboxError(err, 'STORE_CONFLICT'), 'mac clash is STORE_CONFLICT');
    t.match((err as Error).message, /mac "02:00:00:00:00:01" already belongs to machines "a"/);
    t.equal(await s.machines.get('b'), undefined, 'nothing of the write was stored');
    t.equal(await s.settings.get('side.effect'), undefined, 'not even its ops on other collections');
    t.equal(await s.machines.getBy('hostname', 'beta'), undefined);
    t.equal(await s.machines.getBy('mac', mac(2)), undefined);
    t.same(await s.machines.get('a'), before);

    await t.rejects(s.machines.put('c', machine('c', { hostname: 'ALPHA' })), { code: 'STORE_CONFLICT' }, 'hostname clash, case-insensitive');
    await t.rejects(s.machines.put('c', machine('c', { uuid: 'U-A' })), { code: 'STORE_CONFLICT' }, 'uuid clash');
    await t.rejects(s.write([put('machines', 'c', machine('c', { macs: [mac(5)] })), put('machines', 'd', machine('d', { macs: [mac(5)] }))]),
      { code: 'STORE_CONFLICT' }, 'two records of one write');
    t.equal(await s.machines.count(), 1);
    await s.machines.put('a', { ...before!, tags: ['kept'] });
    t.same((await s.machines.get('a'))?.tags, ['kept'], 'a record does not clash with itself');
  });

  t.test(`${h.name}: one write may move values between records, in any op order`, async (t) => {
    const s = await h.open(t);
    await s.write([
      put('machines', 'a', machine('a', { hostname: 'one', macs: [mac(1)] })),
      put('machines', 'b', machine('b', { hostname: 'two', macs: [mac(2)] })),
    ]);
    // Swap hostnames and move mac(1) from a to b; b's op comes first.
    await s.write([
      put('machines', 'b', machine('b', { hostname: 'one', macs: [mac(2), mac(1)] })),
      put('machines', 'a', machine('a', { hostname: 'two', macs: [] })),
    ]);
    t.equal((await s.machines.getBy('hostname', 'one'))?.id, 'b');
    t.equal((await s.machines.getBy('hostname', 'two'))?.id, 'a');
    t.equal((await s.machines.getBy('mac', mac(1)))?.id, 'b');
    // Delete and re-create under another key in one write.
    await s.write([put('machines', 'c', machine('c', { hostname: 'one' })), { type: 'del', collection: 'machines', key: 'b' }]);
    t.equal((await s.machines.getBy('hostname', 'one'))?.id, 'c');
    t.equal(await s.machines.getBy('mac', mac(1)), undefined);
  });

  t.test(`${h.name}: concurrent writes are applied in call order; a conflict fails only its own call`, async (t) => {
    const s = await h.open(t);
    const results = await Promise.allSettled([
      s.machines.put('x', machine('x', { macs: [mac(1)] })),
      s.machines.put('y', machine('y', { macs: [mac(1)] })), // sees x's pending write: conflict
      s.settings.put('unrelated', 1),
      s.machines.del('x'),
      s.machines.put('z', machine('z', { macs: [mac(1)] })), // x is gone by now in call order
      ...Array.from({ length: 20 }, (_, i) => s.machines.put(`n${i}`, machine(`n${i}`, { macs: [mac(100 + (i % 10))] }))),
    ]);
    t.same(results.slice(0, 5).map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled']);
    t.ok(isMetalboxError((results[1] as PromiseRejectedResult).reason, 'STORE_CONFLICT'));
    const tail = results.slice(5).map((r) => r.status);
    t.same(tail, [...Array(10).fill('fulfilled'), ...Array(10).fill('rejected')], 'the second claimant of each MAC fails');
    t.equal((await s.machines.getBy('mac', mac(1)))?.id, 'z');
    t.equal(await s.machines.get('y'), undefined);
    t.equal(await s.settings.get('unrelated'), 1);
    t.equal(await s.machines.count(), 11);
  });

  t.test(`${h.name}: concurrent writes ${h.groupCommit ? 'share syncs' : 'are each acknowledged'}`, async (t) => {
    const s = await h.open(t);
    const before = s.stats();
    await Promise.all(Array.from({ length: 200 }, (_, i) => s.write([
      put('machines', `m${i}`, machine(`m${i}`, { macs: [`02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`] })),
      { type: 'put', collection: 'events', key: `e${i}`, value: { id: `e${i}`, at: now, type: 't', actor: 'test' } },
    ])));
    const after = s.stats();
    t.equal(after.writes - before.writes, 200);
    if (h.groupCommit) {
      t.ok(after.maxGroup > 1, `maxGroup ${after.maxGroup} > 1`);
      t.ok(after.syncs - before.syncs < 200, `${after.syncs - before.syncs} syncs for 200 writes`);
    }
    t.equal(await s.machines.count(), 200);
    t.equal(await s.events.count(), 200);
  });

  t.test(`${h.name}: caller bugs are TypeErrors`, async (t) => {
    const s = await h.open(t);
    await t.rejects(s.write([{ type: 'put', collection: 'nope' as 'settings', key: 'a', value: 1 }]), TypeError);
    await t.rejects(s.write([{ type: 'put', collection: 'settings', key: '', value: 1 }]), TypeError);
    await t.rejects(s.write([{ type: 'put', collection: 'settings', key: 'a', value: undefined as unknown as null }]), TypeError);
    await t.rejects(s.write([{ type: 'upsert' as 'del', collection: 'settings', key: 'a' }]), TypeError);
    await t.rejects(s.settings.put('\uD800', 1), TypeError, 'a lone surrogate cannot be stored as UTF-8');
    await t.rejects(s.machines.put('m', { ...machine('m'), macs: 'aa' as unknown as string[] }), TypeError);
    t.equal(await s.settings.count(), 0);
  });

  t.test(`${h.name}: a raw snapshot is a fixed, consistent view and its backup restores`, async (t) => {
    const s = await h.open(t);
    await s.machines.put('a', machine('a', { hostname: 'alpha', macs: [mac(1)] }));
    await s.leases.put('10.0.0.5', lease('10.0.0.5', mac(1)));
    const snap = s.rawSnapshot();
    await s.machines.put('b', machine('b'));
    const keys: string[] = [];
    for await (const [k] of snap.entries()) keys.push(Buffer.from(k).toString());
    await snap.close();
    const later = s.rawSnapshot();
    t.equal(await later.count(), keys.length + 2, 'a later snapshot has b and its hostname entry');
    await later.close();
    t.ok(keys.includes('!machines!a') && !keys.includes('!machines!b'), 'the first one does not');
    t.same(keys, [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))), 'in raw key order');

    const dir = await scratch(t);
    const file = join(dir, 'backup.mbk');
    const info = await backupStore(s, file);
    t.equal(info.records, keys.length + 2);
    await restoreBackup(file, join(dir, 'state'));
    const restored = await openLevelStore(join(dir, 'state'));
    t.teardown(() => restored.close());
    t.equal((await restored.machines.getBy('hostname', 'ALPHA'))?.id, 'a');
    t.equal((await restored.leases.getBy('mac', mac(1)))?.ip, '10.0.0.5');
    t.equal(await restored.machines.count(), 2);
  });

  t.test(`${h.name}: a closed store refuses with STORE_CLOSED`, async (t) => {
    const s = await h.open(t);
    const pending = s.settings.put('a', 1);
    await s.close();
    await pending; // accepted before close: completed by close
    await t.rejects(s.settings.put('b', 1), { code: 'STORE_CLOSED' });
    await t.rejects(s.settings.get('a'), { code: 'STORE_CLOSED' });
    await s.close(); // idempotent
  });
}

storeContract({
  name: 'memory',
  groupCommit: false,
  async open(t) {
    const s = createMemoryStore();
    t.teardown(() => s.close());
    return s;
  },
});

storeContract({
  name: 'level',
  groupCommit: true,
  async open(t) {
    const s = await openLevelStore(await scratch(t));
    t.teardown(() => s.close());
    return s;
  },
});
