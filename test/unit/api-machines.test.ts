import t from 'tap';
import { request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { SseWriter } from '../../src/api/routes/events.ts';
import type { BmcEnrollment, MachinePowerControl } from '../../src/api/routes/machines.ts';
import { USER_ACTIONS } from '../../src/core/lifecycle.ts';
import { MetalboxError } from '../../src/lib/errors.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord, Store } from '../../src/store/types.ts';
import { machinesApp } from '../helpers/machines-app.ts';

/** A BMC service stand-in: records calls, answers like the real one. */
function fakeBmc(): MachinePowerControl & { calls: string[]; enrolled: Map<string, BmcEnrollment>; failEnroll?: boolean } {
  const calls: string[] = [];
  const enrolled = new Map<string, BmcEnrollment>();
  const fake = {
    calls, enrolled, failEnroll: false,
    async powerAction(id: string, action: string, actor: string) {
      calls.push(`power ${id} ${action} ${actor}`);
      if (!enrolled.has(id)) throw new MetalboxError('BMC_NOT_FOUND', `no BMC has id or machine "${id}"`);
      return { result: 'done' as const, message: `power ${action} done`, before: 'off' as const };
    },
    async powerStatus(id: string, actor: string) {
      calls.push(`status ${id} ${actor}`);
      if (!enrolled.has(id)) throw new MetalboxError('BMC_NOT_FOUND', `no BMC has id or machine "${id}"`);
      return { state: 'on' as const };
    },
    async setBootDevice(id: string, req: { device: string; persistent: boolean; efi: boolean }, actor: string) {
      calls.push(`bootdev ${id} ${req.device} ${req.persistent} ${req.efi} ${actor}`);
      return { result: 'done' as const, message: `next boot from ${req.device}` };
    },
    async enroll(id: string, bmc: BmcEnrollment, actor: string) {
      calls.push(`enroll ${id} ${bmc.driver} ${bmc.address} ${actor}`);
      if (fake.failEnroll) throw new MetalboxError('BMC_INVALID', 'bad address');
      enrolled.set(id, bmc);
      return { bmc: id };
    },
    async unenroll(id: string, actor: string) {
      calls.push(`unenroll ${id} ${actor}`);
      enrolled.delete(id);
    },
  };
  return fake;
}

async function events(store: Store): Promise<EventRecord[]> {
  const out: EventRecord[] = [];
  for await (const [, e] of store.events.entries()) out.push(e);
  return out;
}

t.test('create, get, list, update, delete', async (t) => {
  const { app, store, headers } = await machinesApp(createMemoryStore());
  t.teardown(() => app.close());
  const op = headers.operator;

  const created = await app.inject({ method: 'POST', url: '/api/v1/machines', headers: op, payload: { mac: '52:54:00:77:00:10', tags: ['rack1'] } });
  t.equal(created.statusCode, 201);
  const m = created.json();
  t.match(m, { hostname: 'node-770010', macs: ['52:54:00:77:00:10'], state: 'New', tags: ['rack1'], actions: ['commission', 'mark-broken'] });
  const ev = (await events(store)).find((e) => e.type === 'machine.created')!;
  t.equal(ev.actor, 'operator-user', 'the caller is the actor');
  t.equal(ev.data?.address, '127.0.0.1', 'and the audit record has the address');

  for (const ref of [m.id, 'node-770010', '52-54-00-77-00-10']) {
    const got = await app.inject({ url: `/api/v1/machines/${ref}`, headers: headers.viewer });
    t.equal(got.statusCode, 200, ref);
    t.equal(got.json().id, m.id);
  }
  const missing = await app.inject({ url: '/api/v1/machines/nothing-here', headers: headers.viewer });
  t.equal(missing.statusCode, 404);
  t.match(missing.json(), { code: 'MACHINE_NOT_FOUND', message: /nothing-here/ });

  const patched = await app.inject({ method: 'PATCH', url: `/api/v1/machines/${m.id}`, headers: op, payload: { hostname: 'Web-01', tags: ['rack2', 'gpu'] } });
  t.equal(patched.statusCode, 200);
  t.match(patched.json(), { hostname: 'web-01', tags: ['rack2', 'gpu'] });

  await app.inject({ method: 'POST', url: '/api/v1/machines', headers: op, payload: { mac: '52:54:00:77:00:11', hostname: 'db-01' } });
  const conflict = await app.inject({ method: 'PATCH', url: `/api/v1/machines/${m.id}`, headers: op, payload: { hostname: 'db-01' } });
  t.equal(conflict.statusCode, 409);
  t.equal(conflict.json().code, 'MACHINE_CONFLICT');
  const dupMac = await app.inject({ method: 'POST', url: '/api/v1/machines', headers: op, payload: { mac: '52:54:00:77:00:11' } });
  t.equal(dupMac.statusCode, 409);
  t.match(dupMac.json(), { code: 'MACHINE_CONFLICT', message: /mac 52:54:00:77:00:11 already belongs to machine/ });

  const del = await app.inject({ method: 'DELETE', url: '/api/v1/machines/db-01', headers: op });
  t.equal(del.statusCode, 204);
  t.equal(del.body, '');
  t.equal((await app.inject({ method: 'DELETE', url: '/api/v1/machines/db-01', headers: op })).statusCode, 404);

  // The viewer reads but does not act.
  const forbidden = await app.inject({ method: 'POST', url: `/api/v1/machines/${m.id}/actions/commission`, headers: headers.viewer });
  t.equal(forbidden.statusCode, 403);
  t.equal((await app.inject({ url: '/api/v1/machines' })).statusCode, 401, 'no credentials');
});

t.test('list: filters, sort, cursor paging, field selection', async (t) => {
  const { app, registry, headers } = await machinesApp(createMemoryStore());
  t.teardown(() => app.close());
  for (let i = 0; i < 30; i++) {
    const m = await registry.create({ mac: `02:00:00:00:00:${i.toString(16).padStart(2, '0')}`, hostname: `${i % 2 ? 'web' : 'db'}-${String(i).padStart(2, '0')}`, tags: i % 3 === 0 ? ['gpu', 'rack1'] : ['rack1'] }, { actor: 't' });
    if (i % 5 === 0) await registry.act(m.id, 'mark-broken', { actor: 't' });
  }
  const get = async (qs: string) => {
    const res = await app.inject({ url: `/api/v1/machines${qs}`, headers: headers.viewer });
    t.equal(res.statusCode, 200, qs);
    return res.json() as { items: Record<string, unknown>[]; total: number; next: string | null };
  };
  const all = await get('');
  t.equal(all.total, 30);
  t.equal(all.items.length, 30);
  t.equal(all.items[0]!.hostname, 'db-00');
  t.notOk('actions' in all.items[0]!, 'rows carry no actions unless asked');
  t.equal(all.next, null);

  t.equal((await get('?state=Broken')).total, 6);
  t.equal((await get('?state=Broken,New')).total, 30, 'a,b');
  t.equal((await get('?state=Broken&state=New')).total, 30, 'repeated');
  t.equal((await get('?tag=gpu')).total, 10);
  t.equal((await get('?tag=gpu,rack1&state=Broken')).total, 2, 'tags AND, with state');
  t.same((await get('?hostname=EB-1')).items.map((r) => r.hostname), ['web-11', 'web-13', 'web-15', 'web-17', 'web-19']);
  t.same((await get('?hostnamePrefix=db-2&order=desc')).items.map((r) => r.hostname), ['db-28', 'db-26', 'db-24', 'db-22', 'db-20']);
  t.same((await get('?mac=02-00-00-00-00-1d')).items.map((r) => r.hostname), ['web-29']);

  // Paging: 30 rows by 7, sorted by state then host name, descending.
  const seen: string[] = [];
  let qs = '?sort=state&order=desc&limit=7&fields=hostname,state';
  for (let page = 0; ; page++) {
    const p = await get(qs);
    t.ok(page < 5);
    for (const r of p.items) t.same(Object.keys(r).sort(), ['hostname', 'id', 'state'], 'only the fields asked for, and id');
    seen.push(...p.items.map((r) => String(r.hostname)));
    if (p.next === null) break;
    qs = `?sort=state&order=desc&limit=7&fields=hostname,state&cursor=${p.next}`;
  }
  t.equal(seen.length, 30);
  t.equal(new Set(seen).size, 30);
  t.same(seen.slice(0, 6), ['web-25', 'web-15', 'web-05', 'db-20', 'db-10', 'db-00'], 'Broken sorts after New; desc reverses both keys');
  const withActions = await get('?fields=actions&limit=1');
  t.same(withActions.items[0], { id: withActions.items[0]!.id, actions: ['commission', 'rescue', 'mark-fixed'] });
});

t.test('list rows are the machine view without actions, whatever fields a record holds', async (t) => {
  const store = createMemoryStore();
  // A record with a field no schema knows (a later version, a hand edit): it must not leak.
  await store.machines.put('abcd2345', { id: 'abcd2345', hostname: 'old1', macs: ['02:00:00:00:00:09'], state: 'Ready', tags: ['t'], createdAt: '2024-01-01T00:00:00.000Z', updatedAt: '2024-01-01T00:00:00.000Z', internalNote: 'x' });
  const { app, registry, headers } = await machinesApp(store);
  t.teardown(() => app.close());
  const a = await registry.create({ mac: '02:00:00:00:00:01', uuid: '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f', tags: ['x'] }, { actor: 't' });
  await registry.act(a.id, 'commission', { actor: 't' });
  await registry.act(a.id, 'commission-done', { actor: 't' });
  await registry.act(a.id, 'rescue', { actor: 't', reason: 'fsck' });
  const b = await registry.create({ mac: '02:00:00:00:00:02' }, { actor: 't' });
  await registry.act(b.id, 'commission', { actor: 't' });
  const list = await app.inject({ url: '/api/v1/machines', headers: headers.viewer });
  t.match(list.headers['content-type'], /^application\/json/);
  const rows = list.json().items as Record<string, unknown>[];
  t.equal(rows.length, 3);
  for (const row of rows) {
    const full = (await app.inject({ url: `/api/v1/machines/${String(row.id)}`, headers: headers.viewer })).json();
    delete full.actions;
    t.same(row, full, `row ${String(row.hostname)} = GET without actions`);
    t.notOk('internalNote' in row);
  }
  t.match(rows.find((r) => r.id === a.id), { state: 'Rescue', rescueReturn: 'Ready', stateReason: 'fsck', uuid: '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f' });
  t.ok(rows.find((r) => r.id === b.id)!.phaseDeadline);
  // A change is visible in the next listing (the row cache is by record version).
  await registry.update(b.id, { tags: ['changed'] }, { actor: 't' });
  const again = (await app.inject({ url: '/api/v1/machines', headers: headers.viewer })).json().items as Record<string, unknown>[];
  t.same(again.find((r) => r.id === b.id)!.tags, ['changed']);
});

t.test('lifecycle actions: effects, 409 for an illegal transition, empty or reasoned body', async (t) => {
  const { app, store, registry, headers } = await machinesApp(createMemoryStore());
  t.teardown(() => app.close());
  const m = await registry.create({ mac: '02:00:00:00:00:01' }, { actor: 't' });
  const res = await app.inject({ method: 'POST', url: `/api/v1/machines/${m.id}/actions/commission`, headers: headers.operator });
  t.equal(res.statusCode, 200);
  const body = res.json();
  t.equal(body.machine.state, 'Commissioning');
  t.same(body.machine.actions, ['abort', 'mark-broken']);
  t.ok(body.machine.phaseDeadline);
  t.same(body.effects, [
    { kind: 'bootScript', script: 'commission' }, { kind: 'bootDevice', device: 'pxe', persistent: false }, { kind: 'power', action: 'cycle' }, { kind: 'timeout', ms: 1_800_000 },
  ]);
  const stored = (await events(store)).find((e) => e.id === body.event)!;
  t.match(stored, { type: 'machine.state', actor: 'operator-user', subject: m.id, data: { from: 'New', to: 'Commissioning', action: 'commission', address: '127.0.0.1' } });

  const illegal = await app.inject({ method: 'POST', url: `/api/v1/machines/${m.id}/actions/deploy`, headers: headers.operator, payload: {} });
  t.equal(illegal.statusCode, 409);
  t.match(illegal.json(), { code: 'LIFECYCLE_INVALID_TRANSITION', error: 'Conflict', message: /is Commissioning: deploy is allowed only from Ready, Allocated, FailedDeployment; from Commissioning: abort, mark-broken/ });
  const delMid = await app.inject({ method: 'DELETE', url: `/api/v1/machines/${m.id}`, headers: headers.operator });
  t.equal(delMid.statusCode, 409);
  t.equal(delMid.json().code, 'LIFECYCLE_INVALID_TRANSITION');

  const broken = await app.inject({ method: 'POST', url: `/api/v1/machines/${m.id}/actions/mark-broken`, headers: headers.operator, payload: { reason: 'PSU smells' } });
  t.equal(broken.statusCode, 200);
  t.equal(broken.json().machine.stateReason, 'PSU smells');
  t.equal((await app.inject({ method: 'POST', url: '/api/v1/machines/nope/actions/commission', headers: headers.operator })).statusCode, 404);
  // Only operator actions are routes: agent reports and timeouts are not.
  t.equal((await app.inject({ method: 'POST', url: `/api/v1/machines/${m.id}/actions/commission-done`, headers: headers.admin })).statusCode, 404);
});

t.test('power, power status and boot device go to the BMC control; 503 without one', async (t) => {
  const bmc = fakeBmc();
  const { app, registry, headers } = await machinesApp(createMemoryStore(), { bmc });
  t.teardown(() => app.close());
  const m = await registry.create({ mac: '02:00:00:00:00:01', hostname: 'n1' }, { actor: 't' });
  const noBmc = await app.inject({ method: 'POST', url: '/api/v1/machines/n1/power', headers: headers.operator, payload: { action: 'on' } });
  t.equal(noBmc.statusCode, 404);
  t.equal(noBmc.json().code, 'BMC_NOT_FOUND');
  bmc.enrolled.set(m.id, { driver: 'manual', address: 'rack 4' });
  const on = await app.inject({ method: 'POST', url: '/api/v1/machines/n1/power', headers: headers.operator, payload: { action: 'cycle' } });
  t.equal(on.statusCode, 200);
  t.same(on.json(), { result: 'done', message: 'power cycle done', before: 'off' });
  const status = await app.inject({ url: '/api/v1/machines/n1/power', headers: headers.viewer });
  t.same(status.json(), { state: 'on' });
  const dev = await app.inject({ method: 'PUT', url: '/api/v1/machines/n1/boot-device', headers: headers.operator, payload: { device: 'pxe', efi: true } });
  t.equal(dev.statusCode, 200);
  t.same(bmc.calls.slice(-3), [`power ${m.id} cycle operator-user`, `status ${m.id} viewer-user`, `bootdev ${m.id} pxe false true operator-user`]);
  t.equal((await app.inject({ method: 'POST', url: '/api/v1/machines/zz/power', headers: headers.operator, payload: { action: 'on' } })).statusCode, 404);

  const bare = await machinesApp(createMemoryStore());
  t.teardown(() => bare.app.close());
  await bare.registry.create({ mac: '02:00:00:00:00:01', hostname: 'n1' }, { actor: 't' });
  const unavailable = await bare.app.inject({ method: 'POST', url: '/api/v1/machines/n1/power', headers: bare.headers.operator, payload: { action: 'on' } });
  t.equal(unavailable.statusCode, 503);
  t.equal(unavailable.json().code, 'MACHINE_POWER_UNAVAILABLE');
  const forBmc = await bare.app.inject({ method: 'POST', url: '/api/v1/machines', headers: bare.headers.operator, payload: { bmc: { driver: 'ipmi', address: '10.0.0.9' } } });
  t.equal(forBmc.statusCode, 503);
  t.equal(bare.registry.size, 1, 'nothing created');
});

t.test('create for a BMC: the BMC is enrolled with the new id; a failure on either side leaves nothing', async (t) => {
  const bmc = fakeBmc();
  const inner = createMemoryStore();
  let failMachineWrites = false;
  const store: Store = { ...inner, write: (ops) => (failMachineWrites && ops.some((o) => o.collection === 'machines') ? Promise.reject(new MetalboxError('STORE_WRITE_FAILED', 'disk full')) : inner.write(ops)) };
  const { app, registry, headers, logLines } = await machinesApp(store, { bmc });
  t.teardown(() => app.close());
  const payload = { bmc: { driver: 'ipmi', address: '10.0.0.9', username: 'admin', password: 'hunter2-secret' }, tags: ['rack9'] };
  const res = await app.inject({ method: 'POST', url: '/api/v1/machines', headers: headers.operator, payload });
  t.equal(res.statusCode, 201);
  const m = res.json();
  t.equal(m.hostname, `node-${m.id}`);
  t.same(m.macs, []);
  t.same(bmc.enrolled.get(m.id), payload.bmc);
  t.equal(bmc.calls.at(-1), `enroll ${m.id} ipmi 10.0.0.9 operator-user`);

  bmc.failEnroll = true;
  const refused = await app.inject({ method: 'POST', url: '/api/v1/machines', headers: headers.operator, payload });
  t.equal(refused.statusCode, 400);
  t.equal(refused.json().code, 'BMC_INVALID');
  t.equal(registry.size, 1);
  bmc.failEnroll = false;

  failMachineWrites = true;
  const failed = await app.inject({ method: 'POST', url: '/api/v1/machines', headers: headers.operator, payload });
  t.equal(failed.statusCode, 503);
  t.match(bmc.calls.at(-1), /^unenroll \w+ operator-user$/, 'the BMC enrolled for it is removed again');
  t.equal(bmc.enrolled.size, 1);
  t.equal(registry.size, 1);
  failMachineWrites = false;

  const taken = await app.inject({ method: 'POST', url: '/api/v1/machines', headers: headers.operator, payload: { ...payload, hostname: m.hostname } });
  t.equal(taken.statusCode, 409);
  t.notMatch(bmc.calls.at(-1), /^enroll/, 'a conflict is found before the BMC is touched');

  const del = await app.inject({ method: 'DELETE', url: `/api/v1/machines/${m.id}`, headers: headers.operator });
  t.equal(del.statusCode, 204);
  t.equal(bmc.calls.at(-1), `unenroll ${m.id} operator-user`);
  t.notOk(logLines.some((l) => l.includes('hunter2')), 'the BMC password is never logged');
});

t.test('every write route answers bad input with 400 VALIDATION_FAILED naming the field', async (t) => {
  const bmc = fakeBmc();
  const { app, registry, headers, logLines } = await machinesApp(createMemoryStore(), { bmc });
  t.teardown(() => app.close());
  const m = await registry.create({ mac: '02:00:00:00:00:01', hostname: 'n1' }, { actor: 't' });
  const cases: [string, string, unknown, RegExp][] = [
    ['POST', '/api/v1/machines', {}, /^body\.mac: give the machine's boot MAC/],
    ['POST', '/api/v1/machines', { mac: 5 }, /^body\.mac: must be string/],
    ['POST', '/api/v1/machines', { mac: 'not-a-mac' }, /^body\.mac: must be a MAC address/],
    ['POST', '/api/v1/machines', { mac: 'ff:ff:ff:ff:ff:ff' }, /^body\.mac: is a multicast/],
    ['POST', '/api/v1/machines', { mac: '02:00:00:00:00:09', hostname: '-web' }, /^body\.hostname: must match pattern/],
    ['POST', '/api/v1/machines', { mac: '02:00:00:00:00:09', hostname: 'a'.repeat(64) }, /^body\.hostname: /],
    ['POST', '/api/v1/machines', { mac: '02:00:00:00:00:09', tags: ['ok', 'NOT OK'] }, /^body\.tags\[1\]: must match pattern/],
    ['POST', '/api/v1/machines', { mac: '02:00:00:00:00:09', uuid: 'xyz' }, /^body\.uuid: /],
    ['POST', '/api/v1/machines', { mac: '02:00:00:00:00:09', hostnme: 'x' }, /^body\.hostnme: is not a known field/],
    ['POST', '/api/v1/machines', { bmc: { driver: 'telnet', address: 'x' } }, /^body\.bmc\.driver: must be one of ipmi, redfish, wol, manual/],
    ['POST', '/api/v1/machines', { bmc: { driver: 'ipmi' } }, /^body\.bmc\.address: is required/],
    ['POST', '/api/v1/machines', { bmc: { driver: 'ipmi', address: 'x', port: 70000 } }, /^body\.bmc\.port: /],
    ['PATCH', `/api/v1/machines/${m.id}`, {}, /^body: /],
    ['PATCH', `/api/v1/machines/${m.id}`, { hostname: 'bad_name' }, /^body\.hostname: /],
    ['PATCH', `/api/v1/machines/${m.id}`, { tags: 'gpu' }, /^body\.tags: must be array/],
    ['PATCH', `/api/v1/machines/${m.id}`, { state: 'Ready' }, /^body\.state: is not a known field/],
    ['PATCH', '/api/v1/machines/bad%20ref', { tags: [] }, /^params\.id: /],
    ['DELETE', '/api/v1/machines/bad%20ref', undefined, /^params\.id: /],
    ['POST', `/api/v1/machines/${m.id}/power`, { action: 'explode' }, /^body\.action: must be one of on, off, soft-off, cycle, reset/],
    ['POST', `/api/v1/machines/${m.id}/power`, {}, /^body\.action: is required/],
    ['PUT', `/api/v1/machines/${m.id}/boot-device`, { device: 'usb' }, /^body\.device: must be one of pxe, disk/],
    ['PUT', `/api/v1/machines/${m.id}/boot-device`, { device: 'pxe', persistent: 'yes' }, /^body\.persistent: must be boolean/],
    ...USER_ACTIONS.flatMap((a): [string, string, unknown, RegExp][] => [
      ['POST', `/api/v1/machines/${m.id}/actions/${a}`, { reason: 'x'.repeat(501) }, /^body\.reason: must not have more than 500 characters/],
      ['POST', `/api/v1/machines/${m.id}/actions/${a}`, { force: true }, /^body\.force: is not a known field/],
      ['POST', `/api/v1/machines/bad%20ref/actions/${a}`, {}, /^params\.id: /],
    ]),
  ];
  for (const [method, url, payload, message] of cases) {
    const res = await app.inject({ method: method as 'POST', url, headers: headers.admin, ...(payload !== undefined ? { payload: payload as object } : {}) });
    t.equal(res.statusCode, 400, `${method} ${url} ${JSON.stringify(payload)?.slice(0, 60)}`);
    t.equal(res.json().code, 'VALIDATION_FAILED');
    t.match(res.json().message, message);
  }
  // Queries too.
  for (const [qs, message] of [
    ['?limit=0', /^querystring\.limit: must be >= 1/], ['?limit=x', /^querystring\.limit: must be integer/],
    ['?state=Nope', /^querystring\.state\[0\]: must be one of New, Commissioning/], ['?sort=size', /^querystring\.sort: must be one of hostname, state, createdAt, updatedAt/],
    ['?colour=red', /^querystring\.colour: is not a known field/], ['?fields=id,password', /^querystring\.fields\[1\]: must be one of/],
    ['?mac=zz', /^querystring\.mac: must be a MAC/], ['?cursor=abc', /^cursor: not a cursor/], ['?tag=A', /^querystring\.tag\[0\]: must match/],
  ] as const) {
    const res = await app.inject({ url: `/api/v1/machines${qs}`, headers: headers.viewer });
    t.equal(res.statusCode, 400, qs);
    t.match(res.json(), { code: 'VALIDATION_FAILED', message }, qs);
  }
  t.equal(registry.size, 1, 'nothing was created');
  t.same(bmc.calls, [], 'and the BMC never called');
  t.notOk(logLines.some((l) => /"level":"(error|warn)"/.test(l)), '4xx are not warnings');
});

t.test('a machine\'s events and boot timeline', async (t) => {
  let now = Date.parse('2025-03-01T12:00:00.000Z');
  const { app, registry, events, headers } = await machinesApp(createMemoryStore(), { now: () => (now += 10) });
  t.teardown(() => app.close());
  const m = await registry.create({ mac: '52:54:00:77:00:10', uuid: '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f' }, { actor: 'alice' });
  await registry.act(m.id, 'commission', { actor: 'alice' });
  await events.append(
    { type: 'lease.bound', actor: 'dhcp', subject: '52:54:00:77:00:10', data: { ip: '10.77.0.50' } },
    { type: 'boot.http', actor: 'http', subject: '52:54:00:77:00:10', data: { path: '/boot/52-54-00-77-00-10.ipxe' } },
    { type: 'boot.http', actor: 'http', subject: '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f', data: { path: '/boot/assets/x/kernel' } },
    { type: 'lease.bound', actor: 'dhcp', subject: '52:54:00:77:00:99', data: { ip: '10.77.0.51' } },
    { type: 'user.created', actor: 'admin', subject: 'bob' },
  );
  const all = await app.inject({ url: `/api/v1/machines/${m.id}/events`, headers: headers.viewer });
  t.equal(all.statusCode, 200);
  t.same(all.json().items.map((e: EventRecord) => e.type), ['boot.http', 'boot.http', 'lease.bound', 'machine.state', 'machine.created']);
  t.equal(all.json().next, null);
  const page = await app.inject({ url: `/api/v1/machines/${m.id}/events?limit=2&type=boot,machine.created`, headers: headers.viewer });
  t.same(page.json().items.map((e: EventRecord) => e.data?.path), ['/boot/assets/x/kernel', '/boot/52-54-00-77-00-10.ipxe']);
  const rest = await app.inject({ url: `/api/v1/machines/${m.id}/events?type=boot&type=machine.created&before=${page.json().next}`, headers: headers.viewer });
  t.same(rest.json().items.map((e: EventRecord) => e.type), ['machine.created']);
  const timeline = await app.inject({ url: '/api/v1/machines/52:54:00:77:00:10/timeline', headers: headers.viewer });
  t.same(timeline.json().items.map((e: EventRecord) => e.type), ['machine.state', 'lease.bound', 'boot.http', 'boot.http'], 'oldest first, boot events only');
  t.equal((await app.inject({ url: `/api/v1/machines/${m.id}/events?before=yesterday`, headers: headers.viewer })).statusCode, 400);
  t.equal((await app.inject({ url: '/api/v1/machines/nope/timeline', headers: headers.viewer })).statusCode, 404);
});

/** An SSE client on a real socket: collects messages as {event, id, data}. */
function sse(port: number, headers: Record<string, string>, path = '/api/v1/events/stream') {
  const messages: { event?: string; id?: string; data?: string; comment?: string }[] = [];
  let res: IncomingMessage | undefined;
  const waiters: (() => void)[] = [];
  const ready = new Promise<IncomingMessage>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { accept: 'text/event-stream', ...headers } }, (r) => {
      res = r;
      let buf = '';
      r.setEncoding('utf8');
      r.on('data', (chunk: string) => {
        buf += chunk;
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const msg: { event?: string; id?: string; data?: string; comment?: string } = {};
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) msg.comment = line.slice(1).trim();
            else {
              const [k, ...v] = line.split(': ');
              (msg as Record<string, string>)[k!] = v.join(': ');
            }
          }
          messages.push(msg);
          for (const w of waiters.splice(0)) w();
        }
      });
      resolve(r);
    });
    req.on('error', reject);
    req.end();
  });
  const until = async (pred: () => boolean, what: string) => {
    const deadline = Date.now() + 5000;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(messages)}`);
      await new Promise<void>((r) => { waiters.push(r); setTimeout(r, 50); });
    }
  };
  return { messages, ready, until, close: () => res?.destroy() };
}

t.test('the live stream: state changes as they happen, heartbeats, replay after Last-Event-ID, per-machine filter', async (t) => {
  const { app, registry, headers } = await machinesApp(createMemoryStore(), { streamHeartbeatMs: 100 });
  t.teardown(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as AddressInfo).port;
  const a = await registry.create({ mac: '02:00:00:00:00:01', hostname: 'a1' }, { actor: 't' });
  const b = await registry.create({ mac: '02:00:00:00:00:02', hostname: 'b1' }, { actor: 't' });

  const unauth = sse(port, {});
  t.equal((await unauth.ready).statusCode, 401);
  unauth.close();

  const all = sse(port, headers.viewer);
  const res = await all.ready;
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /^text\/event-stream/);
  const onlyB = sse(port, headers.viewer, `/api/v1/events/stream?machine=b1`);
  await onlyB.ready;
  await all.until(() => all.messages.some((m) => m.comment === 'ping'), 'a heartbeat');

  const op = await app.inject({ method: 'POST', url: `/api/v1/machines/${a.id}/actions/commission`, headers: headers.operator });
  t.equal(op.statusCode, 200);
  await all.until(() => all.messages.some((m) => m.event === 'machine.state'), 'the state change');
  const msg = all.messages.find((m) => m.event === 'machine.state')!;
  t.equal(msg.id, op.json().event, 'the SSE id is the event id');
  t.match(JSON.parse(msg.data!), { type: 'machine.state', actor: 'operator-user', subject: a.id, data: { from: 'New', to: 'Commissioning', action: 'commission' } });
  await registry.act(b.id, 'mark-broken', { actor: 't' });
  await registry.update(b.id, { tags: ['x'] }, { actor: 't' });
  await onlyB.until(() => onlyB.messages.filter((m) => m.event?.startsWith('machine.')).length === 2, 'b\'s two changes');
  t.same(onlyB.messages.filter((m) => m.event?.startsWith('machine.')).map((m) => m.event), ['machine.state', 'machine.updated'], 'a\'s change is not in b\'s stream');
  await all.until(() => all.messages.filter((m) => m.event?.startsWith('machine.')).length === 3, 'three changes');
  all.close();
  onlyB.close();

  // Missed while away: replayed from the log, in order, then live ones; nothing twice.
  const lastSeen = msg.id!;
  await registry.act(a.id, 'abort', { actor: 't' });
  const again = sse(port, { ...headers.viewer, 'last-event-id': lastSeen });
  await again.ready;
  await again.until(() => again.messages.filter((m) => m.event?.startsWith('machine.')).length === 3, 'the replay');
  await registry.remove(a.id, { actor: 't' });
  await again.until(() => again.messages.some((m) => m.event === 'machine.deleted'), 'a live event after the replay');
  const types = again.messages.filter((m) => m.event?.startsWith('machine.')).map((m) => m.event);
  t.same(types, ['machine.state', 'machine.updated', 'machine.state', 'machine.deleted']);
  const ids = again.messages.filter((m) => m.id).map((m) => m.id!);
  t.same(ids, [...ids].sort(), 'in id order');
  t.equal(new Set(ids).size, ids.length, 'no repeats');
  again.close();
  t.equal((await app.inject({ url: '/api/v1/events/stream?machine=nope', headers: headers.viewer })).statusCode, 404);
  t.equal((await app.inject({ url: '/api/v1/events/stream?since=1', headers: headers.viewer })).statusCode, 400);
});

t.test('a stream whose client does not read is closed once its queue passes the limit', async (t) => {
  const written: string[] = [];
  // A socket that accepts one chunk and then never drains.
  const out = new Writable({ highWaterMark: 8, write(chunk, _enc, _cb) { written.push(String(chunk)); } });
  let overflowed = 0;
  const w = new SseWriter(out, 1000, () => overflowed++);
  w.send('x'.repeat(10));
  t.equal(written.length, 1);
  for (let i = 0; i < 99; i++) w.send('y'.repeat(10));
  t.equal(overflowed, 0, '990 bytes queued: under the limit');
  t.notOk(w.closed);
  w.send('z'.repeat(20));
  t.equal(overflowed, 1);
  t.ok(w.closed);
  await new Promise((r) => setImmediate(r));
  t.ok(out.destroyed, 'the connection is closed');
  w.send('after');
  t.equal(written.length, 1, 'nothing more is written');

  // A socket that drains: queued messages go out in order in one write.
  const got: string[] = [];
  let release: (() => void) | undefined;
  const slow = new Writable({ highWaterMark: 1, write(chunk, _enc, cb) { got.push(String(chunk)); release = cb; } });
  const w2 = new SseWriter(slow, 1000);
  w2.send('a1;');
  w2.send('b2;');
  w2.send('c3;');
  release!();
  await new Promise((r) => setImmediate(r));
  release!();
  await new Promise((r) => setImmediate(r));
  t.same(got, ['a1;', 'b2;c3;']);
});
