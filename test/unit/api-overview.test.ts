// GET /api/v1/overview: machines by state and tag, each rack service's phase and figures (from the metrics
// registry), the newest events; viewer access.
import t from 'tap';
import { Counter, Gauge } from 'prom-client';
import { buildApp } from '../../src/api/app.ts';
import { createAuthCore } from '../../src/core/auth.ts';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { auditAs } from '../../src/core/users.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import { TEST_SCRYPT } from '../helpers/auth-fixture.ts';

t.test('overview', async (t) => {
  const store = createMemoryStore();
  const events = new EventLog(store);
  await events.init();
  const logger = createLogger('silent');
  const metrics = createMetrics({ processMetrics: false });
  const auth = createAuthCore({ store, events }, { hasher: { params: TEST_SCRYPT } });
  await auth.users.create({ username: 'viewer', role: 'viewer', password: 'long-enough-password' }, auditAs('test'));
  const { token } = await auth.tokens.create((await auth.users.find('viewer'))!, { name: 't' }, auditAs('test'));
  const registry = await MachineRegistry.open({ store, events, logger });
  const ctx = { actor: 'test' };
  for (let i = 0; i < 5; i++) await registry.create({ mac: `52:54:00:00:00:0${i}`, tags: i < 3 ? ['gpu', 'rack-1'] : ['rack-2'] }, ctx);
  const first = registry.list({ limit: 1 }).items[0]!;
  await registry.act(first.id, 'commission', ctx);
  // What the services register in the process's registry (the same names they use).
  const dhcpReq = new Counter({ name: 'metalbox_dhcp_requests_total', help: 'x', labelNames: ['type'], registers: [metrics.registry] });
  dhcpReq.inc({ type: 'discover' }, 3); dhcpReq.inc({ type: 'request' }, 2);
  new Gauge({ name: 'metalbox_bmc_count', help: 'x', registers: [metrics.registry] }).set(7);
  metrics.httpRequests.inc({ route: '/boot/ipxe', method: 'GET', status: '200' }, 4);
  metrics.httpRequests.inc({ route: '/boot/assets/:image/:file', method: 'GET', status: '404' }, 1);
  metrics.httpRequests.inc({ route: '/api/v1/machines', method: 'GET', status: '200' }, 9);

  const app = await buildApp({
    logger, metrics, version: 't', instanceId: () => 'i', auth, console: false,
    readiness: () => ({ phase: 'running', services: { http: 'running', dhcp: 'running', bmc: 'failed' } }),
    machines: { registry, store, logger },
  });
  t.teardown(() => app.close());
  t.equal((await app.inject('/api/v1/overview')).statusCode, 401, 'needs credentials');
  const res = await app.inject({ url: '/api/v1/overview?events=3', headers: { authorization: `Bearer ${token}` } });
  t.equal(res.statusCode, 200, 'a viewer may');
  const o = res.json();
  t.equal(o.machines.total, 5);
  t.equal(o.machines.byState.New, 4);
  t.equal(o.machines.byState.Commissioning, 1);
  t.equal(o.machines.byState.Deployed, 0, 'every state is listed');
  t.same(Object.keys(o.machines.byState).slice(0, 3), ['New', 'Commissioning', 'Ready'], 'in lifecycle order');
  t.same(o.machines.tags, [{ tag: 'gpu', count: 3 }, { tag: 'rack-1', count: 3 }, { tag: 'rack-2', count: 2 }], 'most used first');
  const svc = Object.fromEntries(o.services.map((s: { id: string }) => [s.id, s]));
  t.same(o.services.map((s: { id: string }) => s.id), ['dhcp', 'tftp', 'http-boot', 'dns', 'ntp', 'bmc']);
  t.equal(svc.dhcp.state, 'running');
  t.equal(svc.tftp.state, 'off', 'not run by this process');
  t.equal(svc.bmc.state, 'failed');
  t.equal(svc['http-boot'].state, 'running', 'HTTP boot is the http service');
  const fig = (id: string, label: string) => svc[id].figures.find((f: { label: string }) => f.label === label).value;
  t.equal(fig('dhcp', 'requests'), 5, 'summed over labels');
  t.equal(fig('dhcp', 'replies'), null, 'not published: null');
  t.equal(fig('bmc', 'BMCs'), 7);
  t.equal(fig('http-boot', 'boot requests'), 5, '/boot/ routes only');
  t.equal(fig('http-boot', 'boot errors'), 1);
  t.equal(o.events.length, 3);
  t.equal(o.events[0].type, 'machine.state', 'newest first');
  t.notOk('data' in o.events[0], 'no event data (it may name addresses): the type, subject and actor');
  const bad = await app.inject({ url: '/api/v1/overview?events=500', headers: { authorization: `Bearer ${token}` } });
  t.equal(bad.statusCode, 400);
});
