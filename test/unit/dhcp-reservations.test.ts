// DhcpService and reservations kept in the store (src/core/reservations.ts): read at start, changed live.
import t from 'tap';
import { parseConfig } from '../../src/config/load.ts';
import { EventLog } from '../../src/core/events.ts';
import { ReservationBook } from '../../src/core/reservations.ts';
import { auditAs } from '../../src/core/users.ts';
import { parseIPv4 } from '../../src/lib/ipv4.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { DhcpService } from '../../src/services/dhcp/server.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';

t.test('stored reservations apply at start and change live', async (t) => {
  // No interfaces: start() builds the pools and binds nothing (no root needed).
  const config = parseConfig('subnets:\n  - cidr: 10.77.0.0/24\n    dynamicRanges: [10.77.0.100-10.77.0.109]\n    reservations: [{ mac: "52:54:00:00:00:01", ip: 10.77.0.10 }]\n', { source: 'test', defaultStateDir: '/tmp/unused' });
  const store = createMemoryStore();
  const events = new EventLog(store);
  const live: { dhcp?: DhcpService } = {};
  const book = new ReservationBook({ store, events, subnets: config.subnets, onChange: (cidr, list) => live.dhcp?.setReservations(cidr, list) });
  const by = { actor: 'test', audit: auditAs('test') };
  await book.add('10.77.0.0/24', { mac: '52:54:00:00:00:02', ip: '10.77.0.101', hostname: 'two' }, by);
  const dhcp = live.dhcp = new DhcpService({ config, store, events, logger: createLogger('silent'), metrics: createMetrics({ processMetrics: false }), boot: () => undefined, interfaceAddresses: () => ({}), reservations: book });
  dhcp.setReservations('10.77.0.0/24', []); // before start: nothing to change, and no harm
  await dhcp.start();
  t.teardown(() => dhcp.stop());
  const pool = dhcp.pools().get('10.77.0.0/24')!;
  t.same(pool.reservation('52:54:00:00:00:02'), { ip: parseIPv4('10.77.0.101'), hostname: 'two' }, 'read at start');
  t.same(pool.reservation('52:54:00:00:00:01'), { ip: parseIPv4('10.77.0.10') }, 'the config\'s too');
  t.equal(pool.size, 9);
  await book.add('10.77.0.0/24', { mac: '52:54:00:00:00:03', ip: '10.77.0.102' }, by);
  t.equal(pool.reservation('52:54:00:00:00:03')?.ip, parseIPv4('10.77.0.102'), 'added live');
  t.equal(pool.size, 8);
  await book.remove('10.77.0.0/24', '52:54:00:00:00:02', by);
  t.equal(pool.reservation('52:54:00:00:00:02'), undefined, 'removed live');
  t.equal(pool.reservation('52:54:00:00:00:01')?.ip, parseIPv4('10.77.0.10'), 'the config\'s stays');
  t.equal(pool.size, 9);
});
