// LeasePool.setReservations: reservations changed while the DHCP service runs (the API adds and removes them).
import t from 'tap';
import { LeasePool, type PoolClient } from '../../src/core/lease-pool.ts';
import { parseCidr, parseIPv4, parseRange } from '../../src/lib/ipv4.ts';

const ip = (s: string) => parseIPv4(s)!;
const client = (n: number): PoolClient => {
  const mac = `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`;
  return { key: `mac:${mac}`, mac };
};
const T0 = Date.parse('2026-01-01T00:00:00Z');
const reservations = (...list: [number, string, string?][]) => new Map(list.map(([n, addr, hostname]) => [client(n).mac, { ip: ip(addr), ...(hostname ? { hostname } : {}) }]));

function pool(): LeasePool {
  return new LeasePool({ id: '10.0.0.0/24', cidr: parseCidr('10.0.0.0/24')!, ranges: [parseRange('10.0.0.10-10.0.0.13')!], excluded: [], reservations: reservations([1, '10.0.0.5']) });
}

t.test('a new reservation: the MAC gets its address at once, the address leaves the pool; removed, it comes back', async (t) => {
  const p = pool();
  t.equal(p.size, 4);
  p.setReservations(reservations([1, '10.0.0.5'], [2, '10.0.0.12', 'node2']));
  t.equal(p.size, 3, 'the reserved address inside the range left the pool');
  t.same(p.stats(T0), { size: 3, bound: 0, offered: 0, declined: 0, free: 3, reserved: 2 });
  t.equal(p.pick(client(2), undefined, T0), ip('10.0.0.12'), 'the MAC is offered its reservation');
  const bound = p.bind(ip('10.0.0.12'), client(2), T0 + 60_000, T0);
  t.equal(bound.records[0]!.hostname, 'node2', 'with the reservation\'s host name');
  // Nobody else gets 10.0.0.12, however often they ask.
  const others: number[] = [];
  for (let n = 3; n < 9; n++) {
    const a = p.pick(client(n), undefined, T0);
    if (a === undefined) break;
    p.offer(a, client(n), T0 + 30_000);
    others.push(a);
  }
  t.same(others.sort(), [ip('10.0.0.10'), ip('10.0.0.11'), ip('10.0.0.13')], 'the three pool addresses, then full');
  t.equal(p.reservation(client(1).mac)?.ip, ip('10.0.0.5'), 'the config reservation stays');

  p.setReservations(reservations([1, '10.0.0.5']));
  t.equal(p.size, 4, 'back in the pool');
  t.equal(p.reservation(client(2).mac), undefined);
  // The lease of 10.0.0.12 runs until it ends; then the address is free for anyone.
  t.equal(p.pick(client(9), undefined, T0 + 1000), undefined, 'still held by its client');
  t.equal(p.pick(client(9), undefined, T0 + 61_000), ip('10.0.0.10'), 'expired offers come back first (FIFO)');
  const later: number[] = [];
  for (let n = 10; n < 20; n++) {
    const a = p.pick(client(n), undefined, T0 + 61_000);
    if (a === undefined) break;
    p.offer(a, client(n), T0 + 90_000);
    later.push(a);
  }
  t.ok(later.includes(ip('10.0.0.12')), 'the formerly reserved address is handed out once its lease ended');
});

t.test('an address reserved while another client holds it: that client keeps it until it ends, the MAC waits', async (t) => {
  const p = pool();
  const a = p.pick(client(3), undefined, T0)!;
  p.bind(a, client(3), T0 + 60_000, T0);
  p.setReservations(reservations([1, '10.0.0.5'], [4, '10.0.0.10']));
  t.equal(a, ip('10.0.0.10'));
  t.equal(p.pick(client(4), undefined, T0 + 1000), undefined, 'the reserved MAC gets nothing while another holds it');
  t.notOk(p.available(a, client(3), T0 + 1000), 'the holder cannot renew a reserved address (it is NAKed and moves)');
  t.equal(p.pick(client(4), undefined, T0 + 61_000), a, 'once the lease ended, the reserved MAC gets it');
});
