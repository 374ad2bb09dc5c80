// /api/v1/bmcs over the real BMC service, against the Redfish simulator (test/helpers/redfish-sim.ts, HTTPS on
// loopback) and manual BMCs: definitions, trust on first use, power, boot device, test, probe, confirm, the
// driver-dependent field checks (with the field named), conflicts, roles, and no password in any answer.
import t, { type Test } from 'tap';
import type { LightMyRequestResponse } from 'fastify';
import { makeCertificate, startRedfishSim, type RedfishSim } from '../helpers/redfish-sim.ts';
import { resourcesFixture } from '../helpers/resources-app.ts';

const PASSWORD = 'Sim-Pa55word-one';
const PASSWORD2 = 'Sim-Pa55word-two';

function refused(t: Test, res: LightMyRequestResponse, field: string, code = 'VALIDATION_FAILED', status = 400): void {
  const body = res.json() as { code: string; message: string };
  t.equal(res.statusCode, status, `${field}: ${res.body.slice(0, 200)}`);
  t.equal(body.code, code);
  t.ok(body.message.includes(field), `names ${field}: ${body.message}`);
}

let certificate: Awaited<ReturnType<typeof makeCertificate>>;
t.before(async () => { certificate = await makeCertificate(); });

async function sim(t: Test): Promise<RedfishSim> {
  const s = await startRedfishSim({ certificate, username: 'admin', password: PASSWORD });
  t.teardown(() => s.close());
  return s;
}

t.test('a Redfish BMC: enrol (pinning its certificate), probe, test, power, boot device, edit, remove', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, assets: false });
  const s = await sim(t);
  const body = { driver: 'redfish', address: '127.0.0.1', port: s.port, username: 'admin', password: PASSWORD, machineId: 'm1' };
  t.equal((await f.call('POST', '/api/v1/bmcs', f.as.operator, body)).statusCode, 403, 'an operator does not manage BMCs');

  // Look before enrolling: the certificate, no credentials sent.
  const pre = await f.call('POST', '/api/v1/bmcs/probe', f.as.admin, { driver: 'redfish', address: '127.0.0.1', port: s.port });
  t.equal(pre.statusCode, 200, pre.body);
  t.equal(pre.json().tlsFingerprint, s.fingerprint);
  t.equal(s.credentialed().length, 0, 'the probe sent no credentials');

  const added = await f.call('POST', '/api/v1/bmcs', f.as.admin, body);
  t.equal(added.statusCode, 201, added.body);
  t.match(added.json(), { bmc: { id: 'm1', machineId: 'm1', driver: 'redfish', address: '127.0.0.1', port: s.port, username: 'admin', hasPassword: true, hasKg: false, tlsFingerprint: s.fingerprint, powerState: 'unknown' }, pinnedOnFirstUse: s.fingerprint });
  t.notOk('password' in added.json().bmc, 'the password never comes back');
  t.match(await f.eventsOf('bmc.added'), [{ actor: 'a-admin', data: { bmc: 'm1', pinnedOnFirstUse: s.fingerprint } }]);
  refused(t, await f.call('POST', '/api/v1/bmcs', f.as.admin, { ...body, id: 'm1' }), 'exists', 'STORE_CONFLICT', 409);
  refused(t, await f.call('POST', '/api/v1/bmcs', f.as.admin, { ...body, id: 'other' }), 'already has BMC m1', 'STORE_CONFLICT', 409);

  const list = await f.call('GET', '/api/v1/bmcs', f.as.viewer);
  t.same(list.json().items.map((b: { id: string }) => b.id), ['m1']);
  t.equal((await f.call('GET', '/api/v1/bmcs/m1', f.as.viewer)).json().driver, 'redfish');
  const missing = await f.call('GET', '/api/v1/bmcs/nope', f.as.viewer);
  t.equal(missing.statusCode, 404);
  t.equal(missing.json().code, 'BMC_NOT_FOUND');

  t.equal((await f.call('GET', '/api/v1/bmcs/m1/probe', f.as.viewer)).statusCode, 403);
  t.equal((await f.call('GET', '/api/v1/bmcs/m1/probe', f.as.operator)).json().tlsFingerprint, s.fingerprint);

  const tested = await f.call('POST', '/api/v1/bmcs/m1/test', f.as.operator);
  t.equal(tested.statusCode, 200, tested.body);
  t.match(tested.json(), { bmc: 'm1', powerState: 'off', info: { protocolVersion: String } });

  t.equal((await f.call('POST', '/api/v1/bmcs/m1/power', f.as.viewer, { action: 'on' })).statusCode, 403, 'a viewer cannot act');
  const on = await f.call('POST', '/api/v1/bmcs/m1/power', f.as.operator, { action: 'on' });
  t.equal(on.statusCode, 200, on.body);
  t.match(on.json(), { bmc: 'm1', machineId: 'm1', action: 'on', result: 'done', before: 'off' });
  t.equal(s.system.powerState, 'On', 'the simulated machine is on');
  t.match((await f.call('POST', '/api/v1/bmcs/m1/power', f.as.operator, { action: 'on' })).json(), { result: 'noop', before: 'on' }, 'on while on does nothing');
  t.match((await f.call('GET', '/api/v1/bmcs/m1/power', f.as.viewer)).json(), { bmc: 'm1', state: 'on' });
  t.match(await f.eventsOf('bmc.power'), [{ actor: 'a-operator', data: { result: 'done' } }, { actor: 'a-operator', data: { result: 'noop' } }]);

  const boot = await f.call('POST', '/api/v1/bmcs/m1/bootdev', f.as.operator, { device: 'pxe', persistent: true });
  t.equal(boot.statusCode, 200, boot.body);
  t.match(boot.json(), { result: 'done' });
  t.match(s.system.boot, { BootSourceOverrideTarget: 'Pxe', BootSourceOverrideEnabled: 'Continuous' });

  const confirm = await f.call('POST', '/api/v1/bmcs/m1/confirm', f.as.operator, { state: 'off' });
  t.equal(confirm.statusCode, 422, 'only manual BMCs take a confirmation');
  t.equal(confirm.json().code, 'BMC_UNSUPPORTED');

  // A new password: the service reconnects with it; the BMC refuses it until it has it too.
  const edited = await f.call('PATCH', '/api/v1/bmcs/m1', f.as.admin, { password: PASSWORD2 });
  t.equal(edited.statusCode, 200, edited.body);
  t.match(edited.json(), { id: 'm1', hasPassword: true });
  const wrong = await f.call('POST', '/api/v1/bmcs/m1/test', f.as.operator);
  t.equal(wrong.statusCode, 502);
  t.equal(wrong.json().code, 'BMC_AUTH_FAILED');
  s.setPassword(PASSWORD2);
  t.equal((await f.call('POST', '/api/v1/bmcs/m1/test', f.as.operator)).statusCode, 200, 'and accepted once the BMC has it');
  refused(t, await f.call('PATCH', '/api/v1/bmcs/m1', f.as.admin, { username: null }), 'body.username');
  refused(t, await f.call('PATCH', '/api/v1/bmcs/m1', f.as.admin, { password: null }), 'body.password');
  refused(t, await f.call('PATCH', '/api/v1/bmcs/m1', f.as.admin, { kg: 'aabb' }), 'body.kg');
  refused(t, await f.call('PATCH', '/api/v1/bmcs/m1', f.as.admin, { driver: 'wol' }), 'body.address', 'VALIDATION_FAILED');
  t.equal((await f.call('PATCH', '/api/v1/bmcs/nope', f.as.admin, { port: 443 })).statusCode, 404);
  const cleared = await f.call('PATCH', '/api/v1/bmcs/m1', f.as.admin, { machineId: null });
  t.equal(cleared.statusCode, 200);
  t.notOk('machineId' in cleared.json(), 'null clears a field');

  t.equal((await f.call('DELETE', '/api/v1/bmcs/m1', f.as.operator)).statusCode, 403);
  t.equal((await f.call('DELETE', '/api/v1/bmcs/m1', f.as.admin)).statusCode, 204);
  t.equal((await f.call('DELETE', '/api/v1/bmcs/m1', f.as.admin)).statusCode, 404);
  t.equal((await f.call('POST', '/api/v1/bmcs/m1/power', f.as.operator, { action: 'off' })).statusCode, 404);

  // Nothing that left, and nothing in the store or the events, holds a password.
  const everything = [...f.responses, JSON.stringify(await f.eventsOf())];
  for await (const [, r] of f.store.bmcs.entries()) everything.push(JSON.stringify(r));
  for (const p of [PASSWORD, PASSWORD2]) t.notOk(everything.some((x) => x.includes(p)), 'no password anywhere');
});

t.test('manual BMCs: requests to the operator, confirmed through the API', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, assets: false });
  const added = await f.call('POST', '/api/v1/bmcs', f.as.admin, { driver: 'manual', address: 'row 3, rack 7, U12', machineId: 'node7' });
  t.equal(added.statusCode, 201, added.body);
  t.equal(added.json().bmc.id, 'node7', 'the machine id names the BMC');
  const on = await f.call('POST', '/api/v1/bmcs/node7/power', f.as.operator, { action: 'on' });
  t.match(on.json(), { result: 'requested', message: /power on/ });
  t.match((await f.call('POST', '/api/v1/bmcs/node7/bootdev', f.as.operator, { device: 'disk' })).json(), { result: 'requested' });
  t.match((await f.call('GET', '/api/v1/bmcs/node7', f.as.viewer)).json(), { pending: [{ actor: 'a-operator' }, { actor: 'a-operator' }] });
  const confirmed = await f.call('POST', '/api/v1/bmcs/node7/confirm', f.as.operator, { state: 'on' });
  t.equal(confirmed.statusCode, 200, confirmed.body);
  t.match(confirmed.json(), { powerState: 'on', pending: [] });
  const probe = await f.call('GET', '/api/v1/bmcs/node7/probe', f.as.operator);
  t.equal(probe.statusCode, 422, 'nothing to probe');
  t.equal(probe.json().code, 'BMC_UNSUPPORTED');
});

t.test('fields by driver: each driver takes its own (all of them at once), refuses the others, naming them', async (t) => {
  const f = await resourcesFixture(t, { dhcp: false, assets: false });
  const s = await sim(t);
  const full: Record<string, Record<string, unknown>> = {
    ipmi: { driver: 'ipmi', address: 'bmc1.rack.internal', port: 6230, username: 'ADMIN', password: 'ipmi-secret', cipherSuite: 17, kg: '00112233445566778899' },
    redfish: { driver: 'redfish', address: '127.0.0.1', port: s.port, username: 'admin', password: PASSWORD, tlsFingerprint: s.fingerprint.replace(/:/g, '').toLowerCase(), systemId: '1' },
    wol: { driver: 'wol', address: '52-54-00-12-34-56', port: 7, wolInterface: 'eth0' },
    manual: { driver: 'manual', address: 'somewhere' },
  };
  const extra: Record<string, unknown> = { port: 623, username: 'u', password: 'p', cipherSuite: 3, kg: 'aa', tlsFingerprint: 'AB'.repeat(32), systemId: 's', wolInterface: 'eth1' };
  for (const [driver, body] of Object.entries(full)) {
    const res = await f.call('POST', '/api/v1/bmcs', f.as.admin, { ...body, id: `b-${driver}` });
    t.equal(res.statusCode, 201, `${driver} with every field it takes: ${res.body.slice(0, 200)}`);
    for (const [field, value] of Object.entries(extra)) {
      if (field in body) continue;
      refused(t, await f.call('POST', '/api/v1/bmcs', f.as.admin, { ...body, id: `c-${driver}`, [field]: value }), `body.${field}`);
    }
  }
  t.match((await f.call('GET', '/api/v1/bmcs/b-redfish', f.as.viewer)).json(), { tlsFingerprint: s.fingerprint }, 'fingerprint normalized');
  t.match((await f.call('GET', '/api/v1/bmcs/b-wol', f.as.viewer)).json(), { address: '52:54:00:12:34:56' }, 'MAC normalized');
  t.match((await f.call('GET', '/api/v1/bmcs/b-ipmi', f.as.viewer)).json(), { hasKg: true, hasPassword: true, cipherSuite: 17 });

  const bad: [Record<string, unknown>, string][] = [
    [{ driver: 'ipmi', address: '10.0.0.1', password: 'p' }, 'body.username'],
    [{ driver: 'ipmi', address: '10.0.0.1', username: 'u' }, 'body.password'],
    [{ driver: 'ipmi', address: '10.0.0.1', username: 'u', password: 'x'.repeat(21) }, 'body.password'],
    [{ driver: 'ipmi', address: '10.0.0.1', username: 'u'.repeat(17), password: 'p' }, 'body.username'],
    [{ driver: 'ipmi', address: '10.0.0.1', username: 'u', password: 'p', cipherSuite: 5 }, 'body.cipherSuite'],
    [{ driver: 'ipmi', address: '10.0.0.1', username: 'u', password: 'p', kg: 'xyz' }, 'body.kg'],
    [{ driver: 'ipmi', address: 'bad host!', username: 'u', password: 'p' }, 'body.address'],
    [{ driver: 'redfish', address: '10.0.0.1', username: 'u', password: 'p', tlsFingerprint: 'AB:CD' }, 'body.tlsFingerprint'],
    [{ driver: 'redfish', address: '10.0.0.1', username: 'u', password: 'p', systemId: 'a/b' }, 'body.systemId'],
    [{ driver: 'wol', address: '10.0.0.1' }, 'body.address'],
    [{ driver: 'wol', address: '52:54:00:12:34:57', wolInterface: 'e th0' }, 'body.wolInterface'],
    [{ driver: 'manual', address: 'x'.repeat(201) }, 'body.address'],
    [{ driver: 'telnet', address: '10.0.0.1' }, 'body.driver'],
    [{ address: '10.0.0.1' }, 'body.driver'],
    [{ driver: 'manual', address: 'x', id: 'Upper' }, 'body.id'],
    [{ driver: 'manual', address: 'x', machineId: '-m' }, 'body.machineId'],
    [{ driver: 'manual', address: 'x', color: 'red' }, 'body.color'],
  ];
  for (const [body, field] of bad) refused(t, await f.call('POST', '/api/v1/bmcs', f.as.admin, body), field);
  refused(t, await f.call('POST', '/api/v1/bmcs/probe', f.as.admin, { driver: 'redfish', address: 'no such host!' }), 'body.address');
  refused(t, await f.call('POST', '/api/v1/bmcs/b-manual/power', f.as.operator, { action: 'status' }), 'body.action');
  refused(t, await f.call('POST', '/api/v1/bmcs/b-manual/bootdev', f.as.operator, { device: 'pxe', efi: 'yes' }), 'body.efi');
  t.equal((await f.call('GET', '/api/v1/bmcs', f.as.viewer)).json().items.length, 4, 'refusals added nothing');
});
