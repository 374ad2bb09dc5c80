import t from 'tap';
import { LeasePool, type PoolClient } from '../../src/core/lease-pool.ts';
import { parseCidr, parseIPv4, parseRange, formatIPv4 } from '../../src/lib/ipv4.ts';

const ip = (s: string) => parseIPv4(s)!;
const client = (n: number, extra: Partial<PoolClient> = {}): PoolClient => {
  const mac = `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`;
  return { key: `mac:${mac}`, mac, ...extra };
};

function pool(opts: { ranges?: string[]; excluded?: string[]; reservations?: [string, string, string?][] } = {}) {
  return new LeasePool({
    id: '10.0.0.0/24',
    cidr: parseCidr('10.0.0.0/24')!,
    ranges: (opts.ranges ?? ['10.0.0.10-10.0.0.19']).map((r) => parseRange(r)!),
    excluded: (opts.excluded ?? []).map((r) => parseRange(r)!),
    reservations: new Map((opts.reservations ?? []).map(([mac, addr, hostname]) => [mac, { ip: ip(addr), ...(hostname ? { hostname } : {}) }])),
  });
}

const T0 = Date.parse('2026-01-01T00:00:00Z');

t.test('hands out distinct addresses in order, skipping excluded ones, then reports full', async (t) => {
  const p = pool({ excluded: ['10.0.0.12-10.0.0.13'] });
  t.equal(p.size, 8);
  const got = new Set<string>();
  for (let i = 0; i < 8; i++) {
    const a = p.pick(client(i), undefined, T0)!;
    t.ok(a !== undefined);
    p.offer(a, client(i), T0 + 30_000);
    got.add(formatIPv4(a));
  }
  t.equal(got.size, 8);
  t.notOk(got.has('10.0.0.12'));
  t.equal(p.pick(client(99), undefined, T0), undefined, 'full pool: undefined, no hang');
  t.same(p.stats(T0), { size: 8, bound: 0, offered: 8, declined: 0, free: 0, reserved: 0 });
  t.ok(p.pick(client(99), undefined, T0 + 31_000) !== undefined, 'an expired offer frees its address');
});

t.test('a client gets its own address back: offered, bound, released, expired', async (t) => {
  const p = pool();
  const c = client(1);
  const a = p.pick(c, undefined, T0)!;
  p.offer(a, c, T0 + 30_000);
  t.equal(p.pick(c, undefined, T0 + 1000), a, 'same offer on a repeated DISCOVER');
  const { records } = p.bind(a, c, T0 + 3_600_000, T0);
  t.match(records, [{ ip: formatIPv4(a), mac: c.mac, state: 'bound', subnet: '10.0.0.0/24' }]);
  t.equal(p.current(c, T0)?.ip, a);
  p.release(a, c, T0 + 10);
  t.equal(p.pick(c, undefined, T0 + 20), a, 'after RELEASE the client gets the same address');
  // another client takes the rest of the pool but not the released address first
  const other = p.pick(client(2), undefined, T0 + 30);
  t.not(other, a, 'released address waits at the tail of the queue');
});

t.test('requested address (option 50) honoured when free, refused when held by another', async (t) => {
  const p = pool();
  const want = ip('10.0.0.17');
  t.equal(p.pick(client(1), want, T0), want);
  p.bind(want, client(1), T0 + 3600_000, T0);
  t.not(p.pick(client(2), want, T0), want);
  t.notOk(p.available(want, client(2), T0));
  t.ok(p.available(want, client(1), T0));
  t.notOk(p.available(ip('10.0.0.200'), client(2), T0), 'outside the ranges');
  t.notOk(p.available(ip('10.9.0.1'), client(2), T0), 'outside the subnet');
});

t.test('reservations: only their MAC gets them; that MAC gets nothing else', async (t) => {
  const p = pool({ reservations: [['52:54:00:00:00:01', '10.0.0.5', 'node1'], ['52:54:00:00:00:02', '10.0.0.11']] });
  t.equal(p.size, 9, 'a reserved address inside a range leaves the pool');
  t.equal(p.pick(client(1), undefined, T0), ip('10.0.0.5'));
  t.notOk(p.available(ip('10.0.0.12'), client(1), T0), 'a reserved client may not take a pool address');
  t.notOk(p.available(ip('10.0.0.5'), client(3), T0));
  const { records } = p.bind(ip('10.0.0.5'), client(1), T0 + 1000, T0);
  t.equal(records[0]?.hostname, 'node1');
  for (let i = 10; i < 40; i++) {
    const a = p.pick(client(i), undefined, T0);
    if (a === undefined) break;
    t.not(a, ip('10.0.0.11'));
    p.offer(a, client(i), T0 + 1000);
  }
});

t.test('DECLINE quarantines the address until the time passes', async (t) => {
  const p = pool({ ranges: ['10.0.0.10-10.0.0.10'] });
  const a = p.pick(client(1), undefined, T0)!;
  p.decline(a, client(1), T0 + 600_000);
  t.equal(p.pick(client(1), undefined, T0 + 1), undefined, 'not offered again, not even to the decliner');
  t.equal(p.stats(T0 + 1).declined, 1);
  t.equal(p.pick(client(2), undefined, T0 + 600_001), a, 'back after the quarantine');
});

t.test('bind moves a client to a new address and releases the old one; undo restores', async (t) => {
  const p = pool();
  const c = client(1);
  const a = ip('10.0.0.10');
  const b = ip('10.0.0.15');
  p.bind(a, c, T0 + 3600_000, T0);
  const { records, undo } = p.bind(b, c, T0 + 3600_000, T0);
  t.match(records, [{ ip: '10.0.0.10', state: 'released' }, { ip: '10.0.0.15', state: 'bound' }]);
  undo();
  t.equal(p.current(c, T0)?.ip, a, 'undo: the client holds its old address again');
  t.equal(p.holder(b), undefined);
});

t.test('undo restores holders and client pointers exactly, for every kind of change, newest first', async (t) => {
  const p = pool();
  const a = ip('10.0.0.10');
  const b = ip('10.0.0.11');
  const c1 = client(1);
  const c2 = client(2);
  p.bind(a, c1, T0 + 3600_000, T0);
  p.offer(b, c2, T0 + 30_000);
  // The whole visible state: every holder, and what each client currently holds.
  const state = () => JSON.stringify({ holders: [...p.entries()].sort((x, y) => x.ip - y.ip), c1: p.current(c1, T0 + 1), c2: p.current(c2, T0 + 1) });
  const before = state();
  // A batch of decisions persisted together (the DHCP service writes a drain slice's leases as one write): on a
  // failed write each is undone, newest first.
  const undos = [
    p.bind(b, c2, T0 + 3600_000, T0).undo, // c2 takes its offer
    p.bind(a, c1, T0 + 7200_000, T0).undo, // c1 renews (same address: holder and pointer captured once)
    p.release(a, c1, T0)!.undo, // then releases it
    p.decline(b, c2, T0 + 600_000)!.undo, // c2 declines its address
    p.bind(ip('10.0.0.12'), c1, T0 + 3600_000, T0).undo, // c1 binds another address
  ];
  t.not(state(), before);
  for (const undo of undos.reverse()) undo();
  t.equal(state(), before, 'back to the state before the batch');
  t.equal(p.pick(c2, undefined, T0 + 1), b, 'c2 is offered its address again');
  t.equal(p.current(c1, T0 + 1)?.ip, a);
});

t.test('restart: leases loaded from the store hold their addresses until they expire', async (t) => {
  const p1 = pool();
  const recs = [];
  for (let i = 0; i < 5; i++) {
    const a = p1.pick(client(i), undefined, T0)!;
    recs.push(...p1.bind(a, client(i), T0 + 3600_000, T0).records);
  }
  const p2 = pool();
  p2.load(recs);
  for (let i = 0; i < 5; i++) t.equal(p2.current(client(i), T0 + 1)?.ip, ip(recs[i]!.ip), `client ${i} keeps its address`);
  const fresh = new Set<number>();
  for (let i = 10; i < 15; i++) { const a = p2.pick(client(i), undefined, T0 + 1)!; p2.offer(a, client(i), T0 + 30_000); fresh.add(a); }
  for (const r of recs) t.notOk(fresh.has(ip(r.ip)), `${r.ip} not offered to anyone else`);
  t.equal(p2.pick(client(20), undefined, T0 + 2), undefined, 'pool full');
  t.ok(p2.pick(client(20), undefined, T0 + 3600_001) !== undefined, 'expired leases return to the pool');
});

t.test('allocation stays cheap as leases grow (a /16 pool, 60k leases)', async (t) => {
  const p = new LeasePool({ id: '10.1.0.0/16', cidr: parseCidr('10.1.0.0/16')!, ranges: [parseRange('10.1.0.1-10.1.239.255')!], excluded: [], reservations: new Map() });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < 60_000; i++) {
    const c = { key: `mac:${i}`, mac: `m${i}` };
    const a = p.pick(c, undefined, T0)!;
    p.bind(a, c, T0 + 3600_000, T0);
  }
  const perOp = Number(process.hrtime.bigint() - t0) / 60_000;
  t.ok(perOp < 50_000, `pick+bind ${Math.round(perOp)} ns per lease`);
  t.equal(p.stats(T0).bound, 60_000);
});

t.test('a client bound at one address that takes an offer of another holds one lease: the old one is released at bind', async (t) => {
  const pool = new LeasePool({ id: '10.9.0.0/24', cidr: parseCidr('10.9.0.0/24')!, ranges: [parseRange('10.9.0.100-10.9.0.110')!], excluded: [], reservations: new Map() });
  const client = { key: 'mac:52:54:00:00:00:01', mac: '52:54:00:00:00:01' };
  const now = Date.parse('2026-01-01T00:00:00Z');
  const a = pool.pick(client, undefined, now)!;
  pool.offer(a, client, now + 30_000);
  pool.bind(a, client, now + 3_600_000, now);
  // The client asks for another free address (option 50), is offered it, and takes it.
  const b = parseIPv4('10.9.0.105')!;
  t.not(b, a);
  t.equal(pool.pick(client, b, now + 1000), a, 'a DISCOVER gets the bound address back first');
  pool.offer(b, client, now + 31_000);
  t.equal(pool.current(client, now + 1000)?.ip, a, 'the offer does not hide the bound lease');
  const { records } = pool.bind(b, client, now + 3_601_000, now + 1000);
  t.same(records.map((r) => [r.ip, r.state]), [['10.9.0.' + (a & 0xff), 'released'], ['10.9.0.105', 'bound']]);
  const bound = [...pool.entries()].filter((h) => h.state === 'bound' && h.clientKey === client.key);
  t.equal(bound.length, 1, 'one bound lease per client');
});
