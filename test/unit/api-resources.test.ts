// The resource API (src/api/routes/resources.ts): who may call what, subnets and reservations (applied live to
// the DHCP pools), leases, settings, status, and a 400 naming the field on every write route.
import t, { type Test } from 'tap';
import type { LightMyRequestResponse } from 'fastify';
import { routeTable, type Access } from '../../src/api/auth.ts';
import { ReservationBook } from '../../src/core/reservations.ts';
import { parseIPv4 } from '../../src/lib/ipv4.ts';
import type { LeaseRecord } from '../../src/store/types.ts';
import { poolFor, resourcesFixture } from '../helpers/resources-app.ts';

const RANK: Record<Access, number> = { public: 0, viewer: 1, operator: 2, admin: 3 };
const MINE = /^\/api\/(v1\/(subnets|leases|dns|bmcs|images|jobs|settings|status)|openapi\.json|docs)\b/;

/** Every resource route and the least role it needs: the README's route table, checked. */
export const EXPECTED_ACCESS: Record<string, Access> = {
  'GET /api/openapi.json': 'viewer',
  'GET /api/docs': 'viewer',
  'GET /api/v1/subnets': 'viewer',
  'GET /api/v1/subnets/:cidr': 'viewer',
  'GET /api/v1/subnets/:cidr/reservations': 'viewer',
  'POST /api/v1/subnets/:cidr/reservations': 'admin',
  'DELETE /api/v1/subnets/:cidr/reservations/:mac': 'admin',
  'GET /api/v1/leases': 'viewer',
  'GET /api/v1/leases/:ip': 'viewer',
  'GET /api/v1/dns/zones': 'viewer',
  'GET /api/v1/dns/records': 'viewer',
  'GET /api/v1/dns/records/:id': 'viewer',
  'POST /api/v1/dns/records': 'operator',
  'PATCH /api/v1/dns/records/:id': 'operator',
  'DELETE /api/v1/dns/records/:id': 'operator',
  'GET /api/v1/bmcs': 'viewer',
  'GET /api/v1/bmcs/:id': 'viewer',
  'POST /api/v1/bmcs': 'admin',
  'PATCH /api/v1/bmcs/:id': 'admin',
  'DELETE /api/v1/bmcs/:id': 'admin',
  'POST /api/v1/bmcs/:id/test': 'operator',
  'GET /api/v1/bmcs/:id/power': 'viewer',
  'POST /api/v1/bmcs/:id/power': 'operator',
  'POST /api/v1/bmcs/:id/bootdev': 'operator',
  'POST /api/v1/bmcs/:id/confirm': 'operator',
  'GET /api/v1/bmcs/:id/probe': 'operator',
  'POST /api/v1/bmcs/probe': 'admin',
  'GET /api/v1/images': 'viewer',
  'GET /api/v1/images/:name': 'viewer',
  'POST /api/v1/images': 'admin',
  'DELETE /api/v1/images/:name': 'admin',
  'GET /api/v1/jobs': 'viewer',
  'GET /api/v1/jobs/:id': 'viewer',
  'DELETE /api/v1/jobs/:id': 'admin',
  'GET /api/v1/settings': 'viewer',
  'GET /api/v1/settings/:key': 'viewer',
  'PUT /api/v1/settings/:key': 'admin',
  'DELETE /api/v1/settings/:key': 'admin',
  'GET /api/v1/status': 'viewer',
};

function concrete(url: string): string {
  return url.replace(':cidr', '10.77.0.0-24').replace(':mac', '52:54:00:00:00:99').replace(':ip', '10.77.0.100')
    .replace(':id', 'x1').replace(':name', 'img').replace(':key', 'site.name');
}

function refused(t: Test, res: LightMyRequestResponse, field: string, code = 'VALIDATION_FAILED'): void {
  t.equal(res.statusCode, code === 'STORE_CONFLICT' ? 409 : 400, `${field}: status (${res.body.slice(0, 160)})`);
  const body = res.json() as { code: string; message: string };
  t.equal(body.code, code, `${field}: code`);
  t.ok(body.message.startsWith(field) || body.message.includes(` ${field}`) || body.message.includes(field), `the message names ${field}: ${body.message}`);
}

t.test('every resource route: its access level, 401 without credentials, 403 below its role', async (t) => {
  const f = await resourcesFixture(t);
  const table = routeTable(f.app).filter((r) => r.method !== 'HEAD' && MINE.test(r.url));
  t.same(Object.fromEntries(table.map((r) => [`${r.method} ${r.url}`, r.access]).sort()), Object.fromEntries(Object.entries(EXPECTED_ACCESS).sort()), 'the route table');
  for (const r of table) {
    const url = concrete(r.url);
    const payload = r.method === 'GET' ? undefined : {};
    const anon = await f.call(r.method as 'GET', url, undefined, payload);
    t.equal(anon.statusCode, 401, `${r.method} ${url} without credentials`);
    for (const role of ['viewer', 'operator', 'admin'] as const) {
      const res = await f.call(r.method as 'GET', url, f.as[role], payload);
      if (RANK[role] < RANK[r.access]) {
        t.equal(res.statusCode, 403, `${role} -> ${r.method} ${r.url} is forbidden`);
        t.equal(res.json().code, 'AUTH_FORBIDDEN');
      } else {
        t.notOk([401, 403].includes(res.statusCode), `${role} -> ${r.method} ${r.url} passes auth (${res.statusCode})`);
      }
    }
  }
});

t.test('subnets: the config with pool usage; one subnet by either CIDR spelling', async (t) => {
  const f = await resourcesFixture(t);
  const list = await f.call('GET', '/api/v1/subnets', f.as.viewer);
  t.equal(list.statusCode, 200);
  const [a, b] = (list.json() as { items: Record<string, unknown>[] }).items;
  t.match(a, {
    cidr: '10.77.0.0/24', gateway: '10.77.0.1', dynamicRanges: ['10.77.0.100-10.77.0.109'], excludedRanges: ['10.77.0.105-10.77.0.105'], proxyDhcp: false,
    options: { leaseSeconds: 3600, dnsServers: ['10.77.0.2'], ntpServers: [], domainSearch: [] },
    reservations: { config: 1, api: 0 },
    // 10 addresses in the range, one excluded; the config reservation (10.77.0.10) is outside the range.
    usage: { size: 9, bound: 0, offered: 0, declined: 0, free: 9, reserved: 1, utilization: 0 },
  });
  t.match(b, { cidr: '10.88.0.0/24', proxyDhcp: true, usage: null }, 'proxyDHCP: no pool');
  // A client takes an address: the usage follows the pool.
  const pool = f.pools.get('10.77.0.0/24')!;
  const client = { key: 'mac:52:54:00:aa:00:01', mac: '52:54:00:aa:00:01' };
  pool.bind(pool.pick(client, undefined, f.clock.now)!, client, f.clock.now + 60_000, f.clock.now);
  const one = await f.call('GET', '/api/v1/subnets/10.77.0.0%2F24', f.as.viewer);
  t.equal(one.statusCode, 200);
  t.match(one.json(), { cidr: '10.77.0.0/24', usage: { size: 9, bound: 1, free: 8 } });
  t.match(one.json().usage.utilization, 1 / 9);
  t.equal((await f.call('GET', '/api/v1/subnets/10.77.0.0-24', f.as.viewer)).json().cidr, '10.77.0.0/24', 'dash form');
  const missing = await f.call('GET', '/api/v1/subnets/10.99.0.0-24', f.as.viewer);
  t.equal(missing.statusCode, 404);
  t.equal(missing.json().code, 'NOT_FOUND');
  refused(t, await f.call('GET', '/api/v1/subnets/banana', f.as.viewer), 'params.cidr');

  const noDhcp = await resourcesFixture(t, { dhcp: false });
  t.same((await noDhcp.call('GET', '/api/v1/subnets', noDhcp.as.viewer)).json().items.map((s: { usage: unknown }) => s.usage), [null, null], 'DHCP not running: no usage');
});

t.test('reservations: added and removed through the API, applied to the DHCP pool at once, kept across a restart', async (t) => {
  const f = await resourcesFixture(t);
  const url = '/api/v1/subnets/10.77.0.0-24/reservations';
  const pool = f.pools.get('10.77.0.0/24')!;
  const mac = '52:54:00:00:00:02';
  const client = { key: `mac:${mac}`, mac };
  // Before: the MAC gets a pool address like anyone.
  t.equal(pool.pick(client, undefined, f.clock.now), parseIPv4('10.77.0.100'));
  const added = await f.call('POST', url, f.as.admin, { mac: '52-54-00-00-00-02', ip: '10.77.0.101', hostname: 'Node2' });
  t.equal(added.statusCode, 201, added.body);
  t.match(added.json(), { mac, ip: '10.77.0.101', hostname: 'node2', source: 'api', createdBy: 'a-admin' });
  t.same(pool.reservation(mac), { ip: parseIPv4('10.77.0.101'), hostname: 'node2' }, 'the pool has it');
  t.equal(pool.pick(client, undefined, f.clock.now), parseIPv4('10.77.0.101'), 'the MAC is offered its reserved address');
  t.equal(pool.size, 8, 'an address reserved inside the range left the pool');
  const other = { key: 'mac:52:54:00:00:00:03', mac: '52:54:00:00:00:03' };
  t.notOk(pool.available(parseIPv4('10.77.0.101')!, other, f.clock.now), 'nobody else gets it');
  t.match((await f.call('GET', '/api/v1/subnets/10.77.0.0-24', f.as.viewer)).json(), { reservations: { config: 1, api: 1 }, usage: { size: 8, reserved: 2 } });

  const list = await f.call('GET', url, f.as.viewer);
  t.same(list.json().items.map((r: { mac: string; ip: string; source: string }) => [r.mac, r.ip, r.source]), [['52:54:00:00:00:01', '10.77.0.10', 'config'], [mac, '10.77.0.101', 'api']]);
  const [event] = await f.eventsOf('dhcp.reservation.added');
  t.match(event, { actor: 'a-admin', subject: mac, data: { subnet: '10.77.0.0/24', ip: '10.77.0.101' } });
  t.ok(event!.data!.address, 'the audit event has the client address');

  // Conflicts: the MAC again, the address for another MAC, a config reservation's MAC or address, a leased address.
  refused(t, await f.call('POST', url, f.as.admin, { mac, ip: '10.77.0.60' }), 'already has a reservation', 'STORE_CONFLICT');
  refused(t, await f.call('POST', url, f.as.admin, { mac: '52:54:00:00:00:03', ip: '10.77.0.101' }), 'already reserved', 'STORE_CONFLICT');
  refused(t, await f.call('POST', url, f.as.admin, { mac: '52:54:00:00:00:01', ip: '10.77.0.61' }), 'from the config file', 'STORE_CONFLICT');
  refused(t, await f.call('POST', url, f.as.admin, { mac: '52:54:00:00:00:03', ip: '10.77.0.10' }), 'already reserved', 'STORE_CONFLICT');
  await f.store.leases.put('10.77.0.62', { ip: '10.77.0.62', mac: '52:54:00:00:00:77', subnet: '10.77.0.0/24', state: 'bound', expiresAt: new Date(f.clock.now + 60_000).toISOString() });
  refused(t, await f.call('POST', url, f.as.admin, { mac: '52:54:00:00:00:03', ip: '10.77.0.62' }), 'is leased to 52:54:00:00:00:77', 'STORE_CONFLICT');
  // Bad input names the field.
  refused(t, await f.call('POST', url, f.as.admin, { mac: 'nope', ip: '10.77.0.63' }), 'body.mac');
  refused(t, await f.call('POST', url, f.as.admin, { mac: '01:00:5e:00:00:01', ip: '10.77.0.63' }), 'body.mac');
  refused(t, await f.call('POST', url, f.as.admin, { mac: '52:54:00:00:00:04', ip: '10.78.0.5' }), 'body.ip');
  refused(t, await f.call('POST', url, f.as.admin, { mac: '52:54:00:00:00:04', ip: '10.77.0.255' }), 'body.ip');
  refused(t, await f.call('POST', url, f.as.admin, { mac: '52:54:00:00:00:04', ip: '10.77.0.105' }), 'body.ip');
  refused(t, await f.call('POST', url, f.as.admin, { mac: '52:54:00:00:00:04', ip: '10.77.0.63', hostname: '-bad-' }), 'body.hostname');
  refused(t, await f.call('POST', url, f.as.admin, { mac: '52:54:00:00:00:04', ip: '10.77.0.63', color: 'red' }), 'body.color');
  refused(t, await f.call('POST', url, f.as.admin, { ip: '10.77.0.63' }), 'body.mac');
  refused(t, await f.call('POST', '/api/v1/subnets/10.88.0.0-24/reservations', f.as.admin, { mac: '52:54:00:00:00:04', ip: '10.88.0.5' }), 'params.cidr');
  t.equal((await f.call('POST', '/api/v1/subnets/10.99.0.0-24/reservations', f.as.admin, { mac: '52:54:00:00:00:04', ip: '10.99.0.5' })).statusCode, 404);
  refused(t, await f.call('DELETE', `${url}/52:54:00:00:00:01`, f.as.admin), 'params.mac', 'VALIDATION_FAILED');
  t.equal((await f.call('DELETE', `${url}/52:54:00:00:00:42`, f.as.admin)).statusCode, 404, 'no such reservation');
  t.equal((await f.call('POST', url, f.as.operator, { mac: '52:54:00:00:00:05', ip: '10.77.0.64' })).statusCode, 403, 'an operator cannot');
  t.equal((await f.store.settings.get('dhcp.reservations') as Record<string, unknown[]>)['10.77.0.0/24']!.length, 1, 'refusals stored nothing');

  // A restart: the DHCP service reads the stored reservations when it builds its pools.
  const again = new ReservationBook({ store: f.store, events: f.events, subnets: f.config.subnets });
  const restarted = poolFor(f.config.subnets[0]!, (await again.all()).get('10.77.0.0/24'));
  t.equal(restarted.pick(client, undefined, f.clock.now), parseIPv4('10.77.0.101'), 'after a restart too');
  // The config changed under it (the address is now excluded): the config wins, and the API says why.
  const edited = new ReservationBook({ store: f.store, events: f.events, subnets: [{ ...f.config.subnets[0]!, excludedRanges: ['10.77.0.100-10.77.0.101'] }] });
  t.match(await edited.list('10.77.0.0/24'), [{ mac, ip: '10.77.0.101', inactive: /excluded range 10.77.0.100-10.77.0.101/ }]);
  t.same((await edited.all()).get('10.77.0.0/24'), [], 'the DHCP service does not apply it');
  const configured = new ReservationBook({ store: f.store, events: f.events, subnets: [{ ...f.config.subnets[0]!, reservations: [{ mac, ip: '10.77.0.11' }] }] });
  t.match(await configured.list('10.77.0.0/24'), [{ mac, inactive: /the config file reserves an address for/ }]);
  t.notOk('inactive' in (await f.call('GET', url, f.as.viewer)).json().items[1], 'active ones carry no reason');

  const removed = await f.call('DELETE', `${url}/52-54-00-00-00-02`, f.as.admin);
  t.equal(removed.statusCode, 204);
  t.equal(pool.reservation(mac), undefined, 'gone from the pool');
  t.equal(pool.size, 9, 'the address is back in the pool');
  const again2 = pool.pick(client, undefined, f.clock.now)!;
  t.ok(again2 >= parseIPv4('10.77.0.100')! && again2 <= parseIPv4('10.77.0.109')!, 'the MAC gets a pool address again');
  t.match(await f.eventsOf('dhcp.reservation.removed'), [{ actor: 'a-admin', subject: mac }]);
  t.equal((await f.store.settings.get('dhcp.reservations') as Record<string, unknown>)['10.77.0.0/24'], undefined, 'the setting holds nothing for the subnet');

  // Concurrent adds of one address: exactly one wins.
  const racing = await Promise.all(['52:54:00:00:01:01', '52:54:00:00:01:02', '52:54:00:00:01:03'].map((m) => f.call('POST', url, f.as.admin, { mac: m, ip: '10.77.0.70' })));
  t.same(racing.map((r) => r.statusCode).sort(), [201, 409, 409]);

  // Without a reservation book, the config's are listed and none can be added.
  const bare = await resourcesFixture(t, { reservations: false });
  t.equal((await bare.call('GET', url, bare.as.viewer)).json().items.length, 1);
  t.equal((await bare.call('POST', url, bare.as.admin, { mac, ip: '10.77.0.101' })).statusCode, 404);
});

t.test('leases: filters, address order, paging, the MAC index, expiry', async (t) => {
  const f = await resourcesFixture(t);
  const at = (s: number) => new Date(f.clock.now + s * 1000).toISOString();
  const leases: LeaseRecord[] = [
    { ip: '10.77.0.100', mac: '52:54:00:00:00:10', subnet: '10.77.0.0/24', state: 'bound', expiresAt: at(600), hostname: 'n10' },
    { ip: '10.77.0.9', mac: '52:54:00:00:00:11', subnet: '10.77.0.0/24', state: 'bound', expiresAt: at(-5) },
    { ip: '10.77.0.20', mac: '52:54:00:00:00:12', subnet: '10.77.0.0/24', state: 'released', expiresAt: at(-100) },
    { ip: '10.77.0.101', mac: '52:54:00:00:00:13', subnet: '10.77.0.0/24', state: 'offered', expiresAt: at(20), clientId: '01525400000013' },
    { ip: '10.77.0.102', mac: '52:54:00:00:00:14', subnet: '10.77.0.0/24', state: 'declined', expiresAt: at(300) },
    { ip: '10.88.0.5', mac: '52:54:00:00:00:15', subnet: '10.88.0.0/24', state: 'bound', expiresAt: at(600) },
  ];
  for (const l of leases) await f.store.leases.put(l.ip, l);
  await f.store.machines.put('m1', { id: 'm1', hostname: 'n10', macs: ['52:54:00:00:00:10'], state: 'New', tags: [], createdAt: at(0), updatedAt: at(0) });
  const get = async (q: string) => {
    const res = await f.call('GET', `/api/v1/leases${q}`, f.as.viewer);
    t.equal(res.statusCode, 200, `${q}: ${res.body.slice(0, 200)}`);
    return res.json() as { items: { ip: string; expired: boolean; machineId?: string }[]; total: number; next: string | null };
  };
  const all = await get('');
  t.same(all.items.map((l) => l.ip), ['10.77.0.9', '10.77.0.20', '10.77.0.100', '10.77.0.101', '10.77.0.102', '10.88.0.5'], 'in address order, not text order');
  t.equal(all.total, 6);
  t.match(all.items[2], { ip: '10.77.0.100', mac: '52:54:00:00:00:10', state: 'bound', expired: false, hostname: 'n10', machineId: 'm1' });
  t.same(all.items.map((l) => l.expired), [true, true, false, false, false, false]);
  t.same((await get('?subnet=10.88.0.0-24')).items.map((l) => l.ip), ['10.88.0.5']);
  t.same((await get('?state=bound,offered&expired=false')).items.map((l) => l.ip), ['10.77.0.100', '10.77.0.101', '10.88.0.5'], 'what is held now');
  t.same((await get('?state=bound&state=released')).items.map((l) => l.ip), ['10.77.0.9', '10.77.0.20', '10.77.0.100', '10.88.0.5'], 'repeated key');
  t.same((await get('?expired=true')).items.map((l) => l.ip), ['10.77.0.9', '10.77.0.20']);
  t.same((await get('?mac=52-54-00-00-00-13')).items.map((l) => l.ip), ['10.77.0.101'], 'by MAC (the lease index)');
  t.same((await get('?mac=52:54:00:00:00:99')).items, []);
  const p1 = await get('?limit=4');
  t.same(p1.items.map((l) => l.ip), ['10.77.0.9', '10.77.0.20', '10.77.0.100', '10.77.0.101']);
  t.equal(p1.next, '10.77.0.101');
  const p2 = await get(`?limit=4&cursor=${p1.next}`);
  t.same(p2.items.map((l) => l.ip), ['10.77.0.102', '10.88.0.5']);
  t.equal(p2.next, null);
  t.match((await f.call('GET', '/api/v1/leases/10.77.0.101', f.as.viewer)).json(), { ip: '10.77.0.101', state: 'offered', clientId: '01525400000013', expired: false });
  t.equal((await f.call('GET', '/api/v1/leases/10.77.0.222', f.as.viewer)).statusCode, 404);
  refused(t, await f.call('GET', '/api/v1/leases/not-an-ip', f.as.viewer), 'params.ip');
  refused(t, await f.call('GET', '/api/v1/leases?state=gone', f.as.viewer), 'querystring.state[0]');
  refused(t, await f.call('GET', '/api/v1/leases?limit=0', f.as.viewer), 'querystring.limit');
  refused(t, await f.call('GET', '/api/v1/leases?mac=zz', f.as.viewer), 'querystring.mac');
  refused(t, await f.call('GET', '/api/v1/leases?expired=perhaps', f.as.viewer), 'querystring.expired');
  refused(t, await f.call('GET', '/api/v1/leases?sort=ip', f.as.viewer), 'querystring.sort');
});

t.test('settings: read by viewers, written by admins, metalbox\'s own keys refused, events', async (t) => {
  const f = await resourcesFixture(t);
  await f.store.settings.put('system.instanceId', 'inst-1');
  const put = await f.call('PUT', '/api/v1/settings/site.name', f.as.admin, { value: { rack: 'r1', slots: [1, 2] } });
  t.equal(put.statusCode, 200, put.body);
  t.same(put.json(), { key: 'site.name', value: { rack: 'r1', slots: [1, 2] } });
  t.same((await f.call('GET', '/api/v1/settings/site.name', f.as.viewer)).json(), { key: 'site.name', value: { rack: 'r1', slots: [1, 2] } });
  t.equal((await f.call('PUT', '/api/v1/settings/site.null', f.as.admin, { value: null })).statusCode, 200, 'null is a value');
  t.same((await f.call('GET', '/api/v1/settings/site.null', f.as.viewer)).json(), { key: 'site.null', value: null });
  t.same((await f.call('GET', '/api/v1/settings', f.as.viewer)).json().items.map((s: { key: string }) => s.key), ['site.name', 'site.null', 'system.instanceId']);
  t.match(await f.eventsOf('setting.changed'), [{ actor: 'a-admin', subject: 'site.name', data: { key: 'site.name', created: true } }, { subject: 'site.null' }]);
  t.notMatch(JSON.stringify(await f.eventsOf('setting.changed')), /r1/, 'values stay out of events');
  t.equal((await f.call('PUT', '/api/v1/settings/site.name', f.as.operator, { value: 1 })).statusCode, 403);
  t.equal((await f.call('DELETE', '/api/v1/settings/site.name', f.as.admin)).statusCode, 204);
  t.equal((await f.call('GET', '/api/v1/settings/site.name', f.as.viewer)).statusCode, 404);
  t.equal((await f.call('DELETE', '/api/v1/settings/site.name', f.as.admin)).statusCode, 404);
  t.match(await f.eventsOf('setting.removed'), [{ actor: 'a-admin', subject: 'site.name' }]);
  // Known settings are checked; owned keys are refused.
  t.equal((await f.call('PUT', '/api/v1/settings/boot.ephemeralImage', f.as.admin, { value: 'debian-12' })).statusCode, 200);
  refused(t, await f.call('PUT', '/api/v1/settings/boot.ephemeralImage', f.as.admin, { value: 42 }), 'body.value');
  refused(t, await f.call('PUT', '/api/v1/settings/system.instanceId', f.as.admin, { value: 'mine' }), 'params.key');
  refused(t, await f.call('DELETE', '/api/v1/settings/system.instanceId', f.as.admin), 'params.key');
  refused(t, await f.call('PUT', '/api/v1/settings/dhcp.reservations', f.as.admin, { value: {} }), 'params.key');
  t.equal(await f.store.settings.get('system.instanceId'), 'inst-1', 'untouched');
  refused(t, await f.call('PUT', '/api/v1/settings/Site', f.as.admin, { value: 1 }), 'params.key');
  refused(t, await f.call('PUT', `/api/v1/settings/a.${'b'.repeat(200)}`, f.as.admin, { value: 1 }), 'params.key');
  refused(t, await f.call('PUT', '/api/v1/settings/site.x', f.as.admin, {}), 'body.value');
  refused(t, await f.call('PUT', '/api/v1/settings/site.x', f.as.admin, { value: 1, extra: 2 }), 'body.extra');
  refused(t, await f.call('PUT', '/api/v1/settings/site.x', f.as.admin, { value: 'x'.repeat(70 * 1024) }), 'body.value');
  refused(t, await f.call('GET', '/api/v1/settings/bad..key', f.as.viewer), 'params.key');
  t.equal((await f.call('PUT', `/api/v1/settings/a.${'b'.repeat(198)}`, f.as.admin, { value: 1 })).statusCode, 200, 'a 200-character key');
  const badUrl = await f.call('GET', '/api/v1/settings/%ZZ', f.as.viewer);
  t.match({ status: badUrl.statusCode, ...badUrl.json() }, { status: 400, statusCode: 400, code: 'REQUEST_INVALID' }, 'the router\'s own refusals have the error shape too');
});

t.test('status: version, services, store, HTTPS fingerprint, BMC and DHCP summaries', async (t) => {
  const f = await resourcesFixture(t);
  const res = await f.call('GET', '/api/v1/status', f.as.viewer);
  t.equal(res.statusCode, 200);
  const s = res.json();
  t.match(s, {
    name: 'metalbox', version: '9.9.9', node: process.versions.node, instanceId: 'inst-1', pid: process.pid, phase: 'running',
    services: { http: 'running', dhcp: 'running' },
    store: { writes: Number, syncs: Number, maxGroup: Number },
    https: { fingerprint: 'AB:CD', certificate: 'self-signed' },
    bmc: { bmcs: 0, sessionsActive: 0, sessionsWaiting: 0, unreachable: 0 },
    dhcp: { subnets: 1, size: 9, bound: 0, free: 9 },
  });
  t.ok(s.store.writes > 0, 'the store has written (users, tokens)');
  t.ok(Date.parse(s.startedAt) <= Date.now() && s.uptimeSeconds >= 0);
  const bare = await resourcesFixture(t, { dhcp: false, bmc: false });
  const b = (await bare.call('GET', '/api/v1/status', bare.as.viewer)).json();
  t.notOk('bmc' in b || 'dhcp' in b, 'no summaries of services that are not there');
});

/**
 * Bad input on every write route: a 400 whose message names the field. The list must cover every
 * state-changing resource route (checked against the app's route table), so a new route needs its case here.
 */
t.test('every write route answers bad input with 400 naming the field', async (t) => {
  const f = await resourcesFixture(t);
  const cases: { route: string; url: string; body?: unknown; field: string; code?: string }[] = [
    { route: 'POST /api/v1/subnets/:cidr/reservations', url: '/api/v1/subnets/10.77.0.0-24/reservations', body: { mac: '52:54:00:00:00:09', ip: 'ten' }, field: 'body.ip' },
    { route: 'DELETE /api/v1/subnets/:cidr/reservations/:mac', url: '/api/v1/subnets/10.77.0.0-24/reservations/nope', field: 'params.mac' },
    { route: 'POST /api/v1/dns/records', url: '/api/v1/dns/records', body: { name: 'x.rack.internal', type: 'A', value: '300.1.1.1' }, field: 'body.value' },
    { route: 'PATCH /api/v1/dns/records/:id', url: '/api/v1/dns/records/0123456789abcdef', body: { ttl: -1 }, field: 'body.ttl' },
    { route: 'DELETE /api/v1/dns/records/:id', url: '/api/v1/dns/records/NOT-AN-ID', field: 'params.id' },
    { route: 'POST /api/v1/bmcs', url: '/api/v1/bmcs', body: { driver: 'ipmi', address: '10.0.0.1', port: 70000 }, field: 'body.port' },
    { route: 'PATCH /api/v1/bmcs/:id', url: '/api/v1/bmcs/b1', body: { port: 'six' }, field: 'body.port' },
    { route: 'DELETE /api/v1/bmcs/:id', url: '/api/v1/bmcs/-b1', field: 'params.id' },
    { route: 'POST /api/v1/bmcs/:id/test', url: '/api/v1/bmcs/-b1/test', field: 'params.id' },
    { route: 'POST /api/v1/bmcs/:id/power', url: '/api/v1/bmcs/b1/power', body: { action: 'explode' }, field: 'body.action' },
    { route: 'POST /api/v1/bmcs/:id/bootdev', url: '/api/v1/bmcs/b1/bootdev', body: { device: 'usb' }, field: 'body.device' },
    { route: 'POST /api/v1/bmcs/:id/confirm', url: '/api/v1/bmcs/b1/confirm', body: { state: 'maybe' }, field: 'body.state' },
    { route: 'POST /api/v1/bmcs/probe', url: '/api/v1/bmcs/probe', body: { driver: 'redfish' }, field: 'body.address' },
    { route: 'POST /api/v1/images', url: '/api/v1/images', body: { name: 'Bad Name', kernel: { url: 'http://x/k' }, initrd: { url: 'http://x/i' } }, field: 'body.name' },
    { route: 'DELETE /api/v1/images/:name', url: '/api/v1/images/Bad%20Name', field: 'params.name' },
    { route: 'DELETE /api/v1/jobs/:id', url: '/api/v1/jobs/nope', field: 'params.id' },
    { route: 'PUT /api/v1/settings/:key', url: '/api/v1/settings/site.name', body: { valu: 1 }, field: 'body.valu' },
    { route: 'DELETE /api/v1/settings/:key', url: '/api/v1/settings/9lives', field: 'params.key' },
  ];
  const writes = routeTable(f.app).filter((r) => !['GET', 'HEAD'].includes(r.method) && MINE.test(r.url)).map((r) => `${r.method} ${r.url}`);
  t.same([...new Set(cases.map((c) => c.route))].sort(), writes.sort(), 'a case for every write route');
  for (const c of cases) {
    const [method] = c.route.split(' ');
    refused(t, await f.call(method as 'POST', c.url, f.as.admin, c.body), c.field, c.code);
  }
  t.equal((await f.eventsOf()).filter((e) => e.actor.startsWith('a-')).length, 0, 'no refusal was recorded as a change');
});
