// DNS records through the API (src/api/routes/dns.ts, rules in src/core/dns-records.ts): each type's checks
// with the field named, zones, RRset rules (duplicates, one TTL, CNAME alone), update, delete, listing.
import t, { type Test } from 'tap';
import type { LightMyRequestResponse } from 'fastify';
import { normalizeRecord, reverseZone, zonesOf } from '../../src/core/dns-records.ts';
import { resourcesFixture, type ResourcesFixture } from '../helpers/resources-app.ts';

const URL = '/api/v1/dns/records';

function refused(t: Test, res: LightMyRequestResponse, field: string, status = 400): void {
  const body = res.json() as { code: string; message: string };
  t.equal(res.statusCode, status, `${field}: ${res.body.slice(0, 200)}`);
  t.equal(body.code, status === 409 ? 'STORE_CONFLICT' : 'VALIDATION_FAILED');
  t.ok(body.message.includes(field), `names ${field}: ${body.message}`);
}

async function create(t: Test, f: ResourcesFixture, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const res = await f.call('POST', URL, f.as.operator, body);
  t.equal(res.statusCode, 201, `create ${JSON.stringify(body)}: ${res.body.slice(0, 200)}`);
  return res.json() as Record<string, unknown>;
}

t.test('zones: the domain and the subnets\' reverse zones', async (t) => {
  t.equal(reverseZone('10.77.0.0/24'), '0.77.10.in-addr.arpa');
  t.equal(reverseZone('10.77.0.0/20'), '77.10.in-addr.arpa', 'rounded down to whole octets');
  t.equal(reverseZone('10.0.0.0/8'), '10.in-addr.arpa');
  t.equal(reverseZone('0.0.0.0/0'), undefined);
  const f = await resourcesFixture(t, { bmc: false, assets: false });
  t.same((await f.call('GET', '/api/v1/dns/zones', f.as.viewer)).json(), { forward: 'rack.internal', reverse: ['0.77.10.in-addr.arpa', '0.88.10.in-addr.arpa'] });
});

t.test('each type: what it holds, normalized; the field named when it is wrong', async (t) => {
  const f = await resourcesFixture(t, { bmc: false, assets: false });
  t.match(await create(t, f, { name: 'Web.Rack.Internal.', type: 'A', value: '10.77.0.5', ttl: 300 }), { name: 'web.rack.internal', type: 'A', value: '10.77.0.5', ttl: 300, id: /^[0-9a-f]{16}$/ });
  t.match(await create(t, f, { name: 'web.rack.internal', type: 'AAAA', value: '2001:DB8:0:0:0:0:0:5' }), { value: '2001:db8::5' }, 'RFC 5952 form');
  t.match(await create(t, f, { name: 'www.rack.internal', type: 'CNAME', value: 'web.rack.internal.' }), { value: 'web.rack.internal' });
  t.match(await create(t, f, { name: 'rack.internal', type: 'TXT', value: 'v=spf1 -all' }), { value: 'v=spf1 -all' }, 'TXT at the apex');
  t.match(await create(t, f, { name: '_acme-challenge.web.rack.internal', type: 'TXT', value: 'token\twith tab' }), { name: '_acme-challenge.web.rack.internal' });
  t.match(await create(t, f, { name: 'rack.internal', type: 'MX', priority: 10, target: 'mail.rack.internal' }), { value: '10 mail.rack.internal', priority: 10, target: 'mail.rack.internal' });
  t.match(await create(t, f, { name: '_ldap._tcp.rack.internal', type: 'SRV', priority: 0, weight: 5, port: 389, target: 'ldap.rack.internal' }), { value: '0 5 389 ldap.rack.internal', port: 389, weight: 5 });
  t.match(await create(t, f, { name: '_x._udp.rack.internal', type: 'SRV', priority: 0, weight: 0, port: 0, target: '.' }), { value: '0 0 0 .' }, 'RFC 2782: "." means no such service');
  t.match(await create(t, f, { name: 'lab.rack.internal', type: 'NS', value: 'ns1.lab.rack.internal' }), { type: 'NS' }, 'a delegation below the apex');
  t.match(await create(t, f, { name: '*.apps.rack.internal', type: 'A', value: '10.77.0.6' }), { name: '*.apps.rack.internal' }, 'a wildcard (RFC 4592)');
  // RFC 2317 classless delegation lives in the reverse zone as CNAMEs.
  t.match(await create(t, f, { name: '5.0.77.10.in-addr.arpa', type: 'CNAME', value: '5.0/26.0.77.10.in-addr.arpa'.replace('/', '-') }), { type: 'CNAME' });

  const bad: [Record<string, unknown>, string][] = [
    [{ name: 'x.rack.internal', type: 'A', value: '10.0.0.256' }, 'body.value'],
    [{ name: 'x.rack.internal', type: 'A' }, 'body.value'],
    [{ name: 'x.rack.internal', type: 'AAAA', value: '10.0.0.1' }, 'body.value'],
    [{ name: 'x.rack.internal', type: 'CNAME', value: 'bad_label-.rack.internal' }, 'body.value'],
    [{ name: 'x.rack.internal', type: 'NS', value: '_ns.rack.internal' }, 'body.value'],
    [{ name: 'x.rack.internal', type: 'TXT', value: 'line\nbreak' }, 'body.value'],
    [{ name: 'x.rack.internal', type: 'TXT', value: 'x'.repeat(4001) }, 'body.value'],
    [{ name: 'x.rack.internal', type: 'MX', target: 'mail.rack.internal' }, 'body.priority'],
    [{ name: 'x.rack.internal', type: 'MX', priority: 10, target: 'mail.rack.internal', port: 25 }, 'body.port'],
    [{ name: 'x.rack.internal', type: 'MX', priority: 10, value: '10 mail.rack.internal' }, 'body.value'],
    [{ name: 'x.rack.internal', type: 'MX', priority: 70000, target: 'mail.rack.internal' }, 'body.priority'],
    [{ name: 'x.rack.internal', type: 'MX', priority: 1 }, 'body.target'],
    [{ name: 'ldap.rack.internal', type: 'SRV', priority: 0, weight: 0, port: 389, target: 'ldap.rack.internal' }, 'body.name'],
    [{ name: '_ldap._tcp.rack.internal', type: 'SRV', priority: 0, weight: 0, target: 'ldap.rack.internal' }, 'body.port'],
    [{ name: 'x.rack.internal', type: 'A', value: '10.0.0.1', priority: 1 }, 'body.priority'],
    [{ name: 'x.example.com', type: 'A', value: '10.0.0.1' }, 'body.name'],
    [{ name: 'x..rack.internal', type: 'A', value: '10.0.0.1' }, 'body.name'],
    [{ name: `${'a'.repeat(64)}.rack.internal`, type: 'A', value: '10.0.0.1' }, 'body.name'],
    [{ name: '5.0.77.10.in-addr.arpa', type: 'A', value: '10.0.0.1' }, 'body.type'],
    [{ name: '5.0.99.10.in-addr.arpa', type: 'CNAME', value: 'x.rack.internal' }, 'body.name'],
    [{ name: 'rack.internal', type: 'CNAME', value: 'x.rack.internal' }, 'body.name'],
    [{ name: 'rack.internal', type: 'NS', value: 'ns.rack.internal' }, 'body.name'],
    [{ name: '*.rack.internal', type: 'NS', value: 'ns.rack.internal' }, 'body.name'],
    [{ name: 'x.rack.internal', type: 'PTR', value: 'y.rack.internal' }, 'body.type'],
    [{ name: 'x.rack.internal', type: 'a', value: '10.0.0.1' }, 'body.type'],
    [{ name: 'x.rack.internal', type: 'A', value: '10.0.0.1', ttl: 2 ** 31 }, 'body.ttl'],
    [{ name: 'x.rack.internal', type: 'A', value: '10.0.0.1', ttl: 1.5 }, 'body.ttl'],
    [{ name: 'x.rack.internal', type: 'A', value: '10.0.0.1', comment: 'hi' }, 'body.comment'],
    [{ type: 'A', value: '10.0.0.1' }, 'body.name'],
  ];
  for (const [body, field] of bad) refused(t, await f.call('POST', URL, f.as.operator, body), field);
  t.equal((await f.store.dnsRecords.count()), 11, 'refusals stored nothing');
  t.equal((await f.eventsOf('dns.record.created')).length, 11);
  t.match((await f.eventsOf('dns.record.created'))[0], { actor: 'a-operator', subject: 'web.rack.internal', data: { type: 'A', value: '10.77.0.5' } });
});

t.test('RRsets: no duplicates, one TTL, a CNAME alone at its name', async (t) => {
  const f = await resourcesFixture(t, { bmc: false, assets: false });
  const a1 = await create(t, f, { name: 'db.rack.internal', type: 'A', value: '10.77.0.7', ttl: 60 });
  refused(t, await f.call('POST', URL, f.as.operator, { name: 'DB.rack.internal', type: 'A', value: '10.77.0.7' }), 'exists already', 409);
  refused(t, await f.call('POST', URL, f.as.operator, { name: 'db.rack.internal', type: 'A', value: '10.77.0.8', ttl: 120 }), 'body.ttl');
  const a2 = await create(t, f, { name: 'db.rack.internal', type: 'A', value: '10.77.0.8' });
  t.equal(a2.ttl, 60, 'a record without a TTL takes its RRset\'s');
  refused(t, await f.call('POST', URL, f.as.operator, { name: 'db.rack.internal', type: 'CNAME', value: 'web.rack.internal' }), 'alone at its name', 409);
  await create(t, f, { name: 'alias.rack.internal', type: 'CNAME', value: 'db.rack.internal' });
  refused(t, await f.call('POST', URL, f.as.operator, { name: 'alias.rack.internal', type: 'TXT', value: 'x' }), 'is an alias', 409);
  refused(t, await f.call('POST', URL, f.as.operator, { name: 'alias.rack.internal', type: 'CNAME', value: 'web.rack.internal' }), 'already has a CNAME', 409);
  // Changing one record's TTL changes its RRset's, in one write.
  const patched = await f.call('PATCH', `${URL}/${String(a1.id)}`, f.as.operator, { ttl: 600 });
  t.equal(patched.statusCode, 200, patched.body);
  t.equal(patched.json().ttl, 600);
  t.equal((await f.call('GET', `${URL}/${String(a2.id)}`, f.as.viewer)).json().ttl, 600, 'the sibling followed');
  t.match((await f.eventsOf('dns.record.updated'))[0], { data: { rrsetTtl: 600, alsoUpdated: [a2.id] } });
  const cleared = await f.call('PATCH', `${URL}/${String(a2.id)}`, f.as.operator, { ttl: null });
  t.equal(cleared.statusCode, 200);
  t.notOk('ttl' in cleared.json(), 'null clears the TTL');
  t.notOk('ttl' in (await f.call('GET', `${URL}/${String(a1.id)}`, f.as.viewer)).json(), 'for the RRset');
});

t.test('update, delete, get, list: sorted, filtered, paged; operators write, viewers read', async (t) => {
  const f = await resourcesFixture(t, { bmc: false, assets: false });
  const mx = await create(t, f, { name: 'rack.internal', type: 'MX', priority: 10, target: 'mail.rack.internal' });
  const moved = await f.call('PATCH', `${URL}/${String(mx.id)}`, f.as.operator, { priority: 20 });
  t.equal(moved.statusCode, 200, moved.body);
  t.match(moved.json(), { value: '20 mail.rack.internal', target: 'mail.rack.internal', priority: 20, createdAt: mx.createdAt });
  const retyped = await f.call('PATCH', `${URL}/${String(mx.id)}`, f.as.operator, { type: 'TXT', value: 'now text' });
  t.equal(retyped.statusCode, 200, retyped.body);
  t.match(retyped.json(), { type: 'TXT', value: 'now text' });
  t.notOk('priority' in retyped.json() || 'target' in retyped.json(), 'the MX fields are gone');
  refused(t, await f.call('PATCH', `${URL}/${String(mx.id)}`, f.as.operator, { type: 'A' }), 'body.value');
  refused(t, await f.call('PATCH', `${URL}/${String(mx.id)}`, f.as.operator, {}), 'body');
  t.equal((await f.call('PATCH', `${URL}/0123456789abcdef`, f.as.operator, { value: 'x' })).statusCode, 404);
  t.equal((await f.call('PATCH', `${URL}/${String(mx.id)}`, f.as.viewer, { value: 'x' })).statusCode, 403);

  for (const [n, v] of [['b', '10.77.0.2'], ['a', '10.77.0.1'], ['c', '10.77.0.3'], ['a', '10.77.0.4']]) await create(t, f, { name: `${n}.rack.internal`, type: 'A', value: v });
  await create(t, f, { name: 'a.rack.internal', type: 'TXT', value: 'hello' });
  const all = (await f.call('GET', URL, f.as.viewer)).json();
  t.same(all.items.map((r: { name: string; type: string; value: string }) => `${r.name} ${r.type} ${r.value}`), [
    'a.rack.internal A 10.77.0.1', 'a.rack.internal A 10.77.0.4', 'a.rack.internal TXT hello', 'b.rack.internal A 10.77.0.2', 'c.rack.internal A 10.77.0.3', 'rack.internal TXT now text',
  ]);
  t.equal(all.total, 6);
  t.same((await f.call('GET', `${URL}?name=A.rack.internal.&type=A`, f.as.viewer)).json().items.map((r: { value: string }) => r.value), ['10.77.0.1', '10.77.0.4']);
  t.equal((await f.call('GET', `${URL}?zone=b.rack.internal`, f.as.viewer)).json().total, 1);
  const p1 = (await f.call('GET', `${URL}?limit=4`, f.as.viewer)).json();
  t.equal(p1.items.length, 4);
  const p2 = (await f.call('GET', `${URL}?limit=4&cursor=${String(p1.next)}`, f.as.viewer)).json();
  t.same(p2.items.map((r: { name: string }) => r.name), ['c.rack.internal', 'rack.internal']);
  t.equal(p2.next, null);
  refused(t, await f.call('GET', `${URL}?type=PTR`, f.as.viewer), 'querystring.type');
  refused(t, await f.call('GET', `${URL}?limit=5000`, f.as.viewer), 'querystring.limit');
  refused(t, await f.call('GET', `${URL}/zz`, f.as.viewer), 'params.id');
  t.equal((await f.call('GET', `${URL}/0123456789abcdef`, f.as.viewer)).statusCode, 404);

  t.equal((await f.call('DELETE', `${URL}/${String(mx.id)}`, f.as.viewer)).statusCode, 403);
  t.equal((await f.call('DELETE', `${URL}/${String(mx.id)}`, f.as.operator)).statusCode, 204);
  t.equal((await f.call('DELETE', `${URL}/${String(mx.id)}`, f.as.operator)).statusCode, 404);
  t.match(await f.eventsOf('dns.record.deleted'), [{ actor: 'a-operator', data: { id: mx.id, type: 'TXT' } }]);
});

t.test('normalizeRecord alone: the core rules the DNS server relies on', async (t) => {
  const zones = zonesOf('Rack.Internal.', [{ cidr: '10.77.0.0/24' }]);
  t.same(zones, { forward: 'rack.internal', reverse: ['0.77.10.in-addr.arpa'] });
  t.same(normalizeRecord({ name: 'X.RACK.internal', type: 'a', value: '10.0.0.1' }, zones), { name: 'x.rack.internal', type: 'A', value: '10.0.0.1' }, 'type in any case here (the API schema wants upper case)');
  t.throws(() => normalizeRecord({ name: 'x.rack.internal', type: 'A', value: '010.0.0.1' }, zones), { code: 'VALIDATION_FAILED', details: { field: 'value' } } as never, 'no leading zeros');
  t.throws(() => normalizeRecord({ name: 'x.rack.internal', type: 'AAAA', value: '2001:db8::1%eth0' }, zones), { code: 'VALIDATION_FAILED', details: { field: 'value' } } as never, 'no zone index');
  t.throws(() => normalizeRecord({ name: `${'a.'.repeat(126)}rack.internal`, type: 'A', value: '10.0.0.1' }, zones), { code: 'VALIDATION_FAILED', details: { field: 'name' } } as never, 'over 253 characters');
});
