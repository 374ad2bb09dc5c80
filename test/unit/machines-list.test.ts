// The listing against a brute-force oracle: random machines, random changes through the registry, then
// random queries paged to the end in every sort order. Each page must be exactly the oracle's slice, with no
// row repeated or skipped, whichever path (sorted-view walk or candidate sort) answered it.
import t from 'tap';
import { EventLog } from '../../src/core/events.ts';
import { STATES } from '../../src/core/lifecycle.ts';
import { MachineRegistry, type Machine } from '../../src/core/machines.ts';
import { SORT_FIELDS, type ListQuery, type SortField } from '../../src/core/machine-list.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { WriteOp } from '../../src/store/types.ts';

// A small deterministic PRNG (mulberry32), so a failure is reproducible.
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(42);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
const TAGS = ['rack1', 'rack2', 'rack3', 'gpu', 'ssd', 'hdd', 'rare-1', 'rare-2'];
const WORDS = ['web', 'db', 'gpu', 'node', 'cache', 'ci'];

function randomMachine(i: number): Machine {
  const mac = `52:54:${[i >> 16, (i >> 8) & 255, i & 255, Math.floor(rand() * 256)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
  const created = new Date(Date.UTC(2024, 0, 1) + Math.floor(rand() * 1e9)).toISOString();
  const tags = TAGS.filter((tag) => rand() < (tag.startsWith('rare') ? 0.01 : 0.3));
  return {
    id: `m${String(i).padStart(7, '0')}`,
    // Collisions of the time fields are likely: ties must still order by id.
    hostname: `${pick(WORDS)}-${i}`, macs: [mac], state: pick(STATES), tags,
    createdAt: created, updatedAt: rand() < 0.3 ? created : new Date(Date.parse(created) + Math.floor(rand() * 1e6)).toISOString(),
  };
}

const STATE_RANK = new Map<string, number>(STATES.map((s, i) => [s, i]));
function oracle(all: Machine[], q: ListQuery): Machine[] {
  const sort: SortField = q.sort ?? 'hostname';
  const key = (m: Machine): [string | number, string] =>
    sort === 'state' ? [STATE_RANK.get(m.state)!, m.hostname] : [m[sort] as string, ''];
  const rows = all.filter((m) => (!q.state?.length || q.state.includes(m.state))
    && (q.tags ?? []).every((tg) => m.tags.includes(tg))
    && (q.mac === undefined || m.macs.includes(q.mac))
    && (q.hostname === undefined || m.hostname.includes(q.hostname))
    && (q.hostnamePrefix === undefined || m.hostname.startsWith(q.hostnamePrefix)));
  rows.sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    return ka[0] < kb[0] ? -1 : ka[0] > kb[0] ? 1 : ka[1] < kb[1] ? -1 : ka[1] > kb[1] ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
  return q.order === 'desc' ? rows.reverse() : rows;
}

t.test('filters, sorts and cursor pages agree with the oracle', async (t) => {
  const store = createMemoryStore();
  const N = 3000;
  const seed = Array.from({ length: N }, (_, i) => randomMachine(i));
  for (let i = 0; i < N; i += 500) {
    await store.write(seed.slice(i, i + 500).map((m): WriteOp => ({ type: 'put', collection: 'machines', key: m.id, value: m })));
  }
  let now = Date.UTC(2025, 0, 1);
  const events = new EventLog(store, () => now);
  const registry = await MachineRegistry.open({ store, events, now: () => (now += 7) });
  t.equal(registry.size, N);

  // Changes through the registry move rows in every view (and adjust the cached counts).
  const ids = [...seed.map((m) => m.id)];
  let round = 0;
  const change = async () => {
    round++;
    for (let i = 0; i < 300; i++) {
      const id = pick(ids);
      const m = registry.get(id);
      if (!m) continue;
      const r = rand();
      if (r < 0.3) await registry.update(id, { hostname: `${pick(WORDS)}-x${round}-${i}` }, { actor: 't' });
      else if (r < 0.5) await registry.update(id, { tags: TAGS.filter(() => rand() < 0.3) }, { actor: 't' });
      else if (r < 0.6 && !['Commissioning', 'Deploying', 'Releasing', 'Rescue'].includes(m.state)) await registry.remove(id, { actor: 't' });
      else await registry.act(id, 'mark-broken', { actor: 't' }).catch(() => registry.act(id, 'mark-fixed', { actor: 't' }).catch(() => undefined));
    }
    for (let i = 0; i < 50; i++) await registry.create({ mac: `02:00:00:${round.toString(16).padStart(2, '0')}:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`, tags: ['rare-2'] }, { actor: 't' });
  };
  await change();
  let all: Machine[] = [];
  const reload = async () => {
    all = [];
    for await (const [, m] of store.machines.entries()) all.push(m as Machine);
    t.equal(registry.size, all.length, 'memory matches the store');
  };
  await reload();

  const queries: ListQuery[] = [
    {}, { state: ['Ready'] }, { state: ['Broken', 'New'] }, { tags: ['gpu'] }, { tags: ['gpu', 'ssd'] }, { tags: ['rare-1'] },
    { tags: ['rare-2'], state: ['New'] }, { hostname: 'web' }, { hostnamePrefix: 'db-1' }, { hostnamePrefix: 'zzz' }, { tags: ['nope'] },
    { mac: all[5]!.macs[0]! }, { mac: '02:00:00:00:99:99' }, { state: ['Deployed'], tags: ['rack1'], hostname: '1' },
  ];
  let pages = 0;
  for (const base of queries) {
    for (const sort of SORT_FIELDS) {
      for (const order of ['asc', 'desc'] as const) {
        for (const [limit, path] of [[7, undefined], [1000, undefined], [7, 'walk'], [7, 'index']] as const) {
          const q: ListQuery = { ...base, sort, order, limit, ...(path ? { path } : {}) };
          const want = oracle(all, q).map((m) => m.id);
          const got: string[] = [];
          let cursor: string | undefined;
          for (;;) {
            const page = registry.list({ ...q, ...(cursor ? { cursor } : {}) });
            pages++;
            t.equal(page.total, want.length, `total ${JSON.stringify(q)}`);
            got.push(...page.items.map((m) => m.id));
            if (page.next === null) break;
            t.equal(page.items.length, limit, 'a page before the last is full');
            cursor = page.next;
          }
          t.same(got, want, `rows ${JSON.stringify(q)}`);
        }
      }
    }
  }
  t.ok(pages > 1000, `${pages} pages checked`);

  // The counts are cached now; more changes must keep every one exact.
  await change();
  await reload();
  for (const q of queries) t.equal(registry.list({ ...q, limit: 1 }).total, oracle(all, q).length, `total after changes ${JSON.stringify(q)}`);
});

t.test('cursors survive rows inserted and deleted between pages', async (t) => {
  const store = createMemoryStore();
  const events = new EventLog(store);
  const registry = await MachineRegistry.open({ store, events });
  for (let i = 0; i < 20; i++) await registry.create({ mac: `02:00:00:00:00:${i.toString(16).padStart(2, '0')}`, hostname: `h${String(i * 2).padStart(2, '0')}` }, { actor: 't' });
  const p1 = registry.list({ limit: 5 });
  t.same(p1.items.map((m) => m.hostname), ['h00', 'h02', 'h04', 'h06', 'h08']);
  await registry.remove('h08', { actor: 't' }); // the cursor's own row
  await registry.create({ mac: '02:00:00:00:01:01', hostname: 'h01' }, { actor: 't' }); // before the cursor
  await registry.create({ mac: '02:00:00:00:01:02', hostname: 'h09' }, { actor: 't' }); // after it
  const p2 = registry.list({ limit: 5, cursor: p1.next! });
  t.same(p2.items.map((m) => m.hostname), ['h09', 'h10', 'h12', 'h14', 'h16']);
  t.throws(() => registry.list({ cursor: p1.next!, sort: 'state' }), { code: 'VALIDATION_FAILED', message: /cursor: this cursor pages a listing sorted by hostname asc, not state asc/ });
  t.throws(() => registry.list({ cursor: 'garbage!' }), { code: 'VALIDATION_FAILED', message: /^cursor: not a cursor/ });
  t.throws(() => registry.list({ cursor: Buffer.from('{"a":1}').toString('base64url') }), { code: 'VALIDATION_FAILED' });
});

t.test('counts are cached until the next change', async (t) => {
  const store = createMemoryStore();
  const registry = await MachineRegistry.open({ store, events: new EventLog(store) });
  const a = await registry.create({ mac: '02:00:00:00:00:01', tags: ['x'] }, { actor: 't' });
  t.equal(registry.list({ hostname: 'node' }).total, 1);
  t.equal(registry.list({ tags: ['x'] }).total, 1);
  await registry.create({ mac: '02:00:00:00:00:02', tags: ['x'] }, { actor: 't' });
  t.equal(registry.list({ hostname: 'node' }).total, 2);
  await registry.update(a.id, { tags: [] }, { actor: 't' });
  t.equal(registry.list({ tags: ['x'] }).total, 1);
  t.equal(registry.list({ state: ['New'] }).total, 2);
  t.equal(registry.list({ state: ['Ready'] }).total, 0);
});
