// The Redfish driver end to end against the Redfish service simulator (test/helpers/redfish-sim.ts) on
// loopback: every BmcDriver method checked against the simulator's state, sessions and Basic, token
// expiry, redirects, certificate pinning (no credential ever reaches a changed certificate), the allowable
// reset types, and the failure codes (auth, TLS, unsupported, unreachable, timeout, protocol). Plus the pure
// model functions. Last, every captured log line and error text is searched for the password and tokens.
import t, { type Test } from 'tap';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { Writable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedfishDriver, fetchFingerprint, formatCertificate, normalizeFingerprint, probeRedfish, type RedfishDriverOptions } from '../../src/bmc/redfish/index.ts';
import { bootPatch, planReset, powerStateOf, readExtendedError, readServiceRoot, readResetAction, allowableFromActionInfo, memberMatches } from '../../src/bmc/redfish/model.ts';
import type { BmcDriver, BmcEndpoint } from '../../src/bmc/types.ts';
import { MetalboxError, type ErrorCode } from '../../src/lib/errors.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { makeCertificate, startRedfishSim, type RedfishSim, type RedfishSimOptions } from '../helpers/redfish-sim.ts';

const PASSWORD = 'Zq9+very-secret-Pa55';
const certA = await makeCertificate('bmc-a');
const certB = await makeCertificate('bmc-b');

// Everything the driver logs (at trace, the most talkative level) and every error text it produced.
const logLines: string[] = [];
const logger = createLogger('trace', new Writable({ write(chunk: Buffer, _enc, cb) { logLines.push(chunk.toString('utf8')); cb(); } }));
const errorTexts: string[] = [];
const sims: RedfishSim[] = [];

async function sim(t: Test, options: Partial<RedfishSimOptions> = {}): Promise<RedfishSim> {
  const s = await startRedfishSim({ certificate: certA, password: PASSWORD, ...options });
  sims.push(s);
  t.teardown(() => s.close());
  return s;
}

function driver(t: Test, s: { port: number; fingerprint: string }, endpoint: Partial<BmcEndpoint> = {}, options: RedfishDriverOptions = {}): BmcDriver {
  const d = createRedfishDriver({
    driver: 'redfish', address: '127.0.0.1', port: s.port, username: 'admin', password: PASSWORD, tlsFingerprint: s.fingerprint, ...endpoint,
  }, { logger, timeoutMs: 5000, ...options });
  t.teardown(() => d.close());
  return d;
}

async function rejects(t: Test, promise: Promise<unknown>, code: ErrorCode, pattern?: RegExp): Promise<MetalboxError> {
  try {
    await promise;
  } catch (err) {
    if (!(err instanceof MetalboxError)) throw err;
    errorTexts.push(`${err.message} ${JSON.stringify(err.details ?? {})} ${err.stack ?? ''}`);
    t.equal(err.code, code, `${code}: ${err.message}`);
    if (pattern) t.match(err.message, pattern);
    return err;
  }
  t.fail(`expected ${code}`);
  throw new Error('unreachable');
}

const resetsPosted = (s: RedfishSim) => s.requests.filter((r) => r.path.endsWith('/Actions/ComputerSystem.Reset')).map((r) => (JSON.parse(r.body) as { ResetType: string }).ResetType);

// ---------------------------------------------------------------------------------------------------

t.test('model: pure functions over Redfish JSON', async (t) => {
  t.same(planReset('on', ['On', 'ForceOff']), { kind: 'single', resetType: 'On' });
  t.same(planReset('on', ['ForceOn', 'PushPowerButton']), { kind: 'single', resetType: 'ForceOn' });
  t.equal(planReset('on', ['PushPowerButton']), undefined, 'never a toggle for on');
  t.same(planReset('off', undefined), { kind: 'single', resetType: 'ForceOff' }, 'unknown allowable: first choice');
  t.same(planReset('soft-off', ['GracefulShutdown']), { kind: 'single', resetType: 'GracefulShutdown' });
  t.equal(planReset('soft-off', ['On', 'ForceOff']), undefined);
  t.same(planReset('reset', ['PowerCycle']), { kind: 'single', resetType: 'PowerCycle' });
  t.same(planReset('cycle', ['PowerCycle', 'ForceRestart']), { kind: 'single', resetType: 'PowerCycle' });
  t.same(planReset('cycle', ['On', 'ForceOff', 'ForceRestart']), { kind: 'off-on', off: 'ForceOff', on: 'On' });
  t.same(planReset('cycle', ['ForceRestart', 'GracefulShutdown']), { kind: 'single', resetType: 'ForceRestart' });
  t.equal(planReset('cycle', ['GracefulShutdown']), undefined);

  t.equal(powerStateOf({ PowerState: 'On' }), 'on');
  t.equal(powerStateOf({ PowerState: 'PoweringOff' }), 'on');
  t.equal(powerStateOf({ PowerState: 'PoweringOn' }), 'on');
  t.equal(powerStateOf({ PowerState: 'Off' }), 'off');
  t.equal(powerStateOf({ PowerState: null }), 'unknown');
  t.equal(powerStateOf({ PowerState: 'Hibernating' }), 'unknown');
  t.throws(() => powerStateOf({ PowerState: 1 }), { code: 'BMC_PROTOCOL' });

  t.same(bootPatch({ Boot: { BootSourceOverrideMode: 'Legacy' } }, { device: 'pxe', persistent: false, efi: true }),
    { Boot: { BootSourceOverrideTarget: 'Pxe', BootSourceOverrideEnabled: 'Once', BootSourceOverrideMode: 'UEFI' } });
  t.same(bootPatch({ Boot: {} }, { device: 'disk', persistent: true, efi: true }),
    { Boot: { BootSourceOverrideTarget: 'Hdd', BootSourceOverrideEnabled: 'Continuous' } }, 'no Mode property: none sent');
  t.throws(() => bootPatch({ Boot: { 'BootSourceOverrideTarget@Redfish.AllowableValues': ['Hdd'] } }, { device: 'pxe', persistent: false, efi: false }), { code: 'BMC_UNSUPPORTED' });
  t.throws(() => bootPatch({}, { device: 'pxe', persistent: false, efi: false }), { code: 'BMC_UNSUPPORTED' });

  t.throws(() => readServiceRoot({ Name: 'not redfish' }), { code: 'BMC_PROTOCOL' });
  t.throws(() => readServiceRoot({ Systems: '/redfish/v1/Systems' }), { code: 'BMC_PROTOCOL' });
  t.throws(() => readServiceRoot({ Systems: { '@odata.id': 'http://elsewhere/x' } }), { code: 'BMC_PROTOCOL' });
  t.same(readServiceRoot({ Systems: { '@odata.id': '/redfish/v1/Systems' }, Links: {} }).sessions, undefined);
  t.throws(() => readResetAction({ Actions: { '#ComputerSystem.Reset': { target: 5 } } }), { code: 'BMC_PROTOCOL' });
  t.equal(readResetAction({ Actions: {} }), undefined);
  t.same(allowableFromActionInfo({ Parameters: [{ Name: 'Other' }, { Name: 'ResetType', AllowableValues: ['On', 3, 'ForceOff'] }] }), ['On', 'ForceOff']);
  t.equal(allowableFromActionInfo({ Parameters: 'x' }), undefined);
  t.ok(memberMatches('/redfish/v1/Systems/System.Embedded.1/', 'System.Embedded.1'));
  t.notOk(memberMatches('/redfish/v1/Systems/11', '1'));

  const ext = readExtendedError(Buffer.from(JSON.stringify({ error: { code: 'x', message: 'general', '@Message.ExtendedInfo': [{ MessageId: 'Base.1.0.A', Message: 'first\nline' }, { MessageId: 'Base.1.0.B' }] } })));
  t.same(ext, { text: 'first line; Base.1.0.B', messageIds: ['Base.1.0.A', 'Base.1.0.B'] });
  for (const hostile of ['', 'null', '[]', '{"error":5}', '{"error":{"@Message.ExtendedInfo":"x"}}', '\u0000\u0001', 'x'.repeat(100_000)]) {
    t.doesNotThrow(() => readExtendedError(Buffer.from(hostile)));
  }
  t.ok(readExtendedError(Buffer.from(JSON.stringify({ error: { message: 'y'.repeat(5000) } }))).text!.length <= 303, 'bounded');

  const fp = certA.fingerprint;
  t.equal(normalizeFingerprint(fp.toLowerCase()), fp);
  t.equal(normalizeFingerprint(fp.replace(/:/g, '')), fp);
  t.equal(normalizeFingerprint(`sha256:${fp}`), fp);
  t.equal(normalizeFingerprint('AB:CD'), undefined);
  t.throws(() => createRedfishDriver({ driver: 'redfish', address: '127.0.0.1', username: 'a', password: 'b', tlsFingerprint: 'nope' }), { code: 'BMC_INVALID' });
  t.throws(() => createRedfishDriver({ driver: 'redfish', address: '127.0.0.1' }), { code: 'BMC_INVALID' });
});

t.test('trust on first use: probe shows the certificate and sends no credentials', async (t) => {
  const s = await sim(t);
  const probe = await probeRedfish('127.0.0.1', s.port, { logger });
  t.equal(probe.certificate.fingerprint, certA.fingerprint);
  t.match(probe.certificate.subject, /CN=bmc-a/);
  t.equal(probe.certificate.selfSigned, true);
  t.equal(probe.certificate.trustedByCa, false);
  t.ok(Date.parse(probe.certificate.validTo) > Date.now());
  t.equal(probe.service.redfishVersion, '1.17.0');
  t.equal(probe.service.vendor, 'metalbox');
  t.match(formatCertificate(probe.certificate), /SHA-256 fingerprint: [0-9A-F:]{95}\n.*CN=bmc-a.*\n.*self-signed/s);
  t.same(s.requests.map((r) => `${r.method} ${r.path}`), ['GET /redfish/v1/'], 'only the unauthenticated service root');
  t.same(s.credentialed(), []);
  const info = await fetchFingerprint('127.0.0.1', s.port);
  t.equal(info.fingerprint, certA.fingerprint);
  await sleep(50);
  t.equal(s.requests.length, 1, 'fetchFingerprint sends no HTTP at all');
});

t.test('every action end to end with a session', async (t) => {
  const s = await sim(t, { powerState: 'Off', requireIfMatch: true });
  const d = driver(t, s);

  let t0 = performance.now();
  t.equal(await d.powerStatus(), 'off');
  const first = performance.now() - t0;
  t0 = performance.now();
  t.equal(await d.powerStatus(), 'off');
  const warm = performance.now() - t0;
  t.comment(`powerStatus: first call (root, login, systems, system) ${first.toFixed(1)} ms, next ${warm.toFixed(1)} ms`);

  await d.power('on');
  t.equal(s.system.powerState, 'On');
  t.equal(await d.powerStatus(), 'on');
  t.equal(s.system.boots, 1);

  // The driver does what it is asked: On while On is sent, and the service must not reset the machine.
  await d.power('on');
  t.equal(s.system.boots, 1, 'On while On did not restart anything');
  t.equal(s.system.powerState, 'On');

  await d.power('reset');
  t.equal(s.system.boots, 2);
  await d.power('cycle');
  t.equal(s.system.boots, 3);
  t.equal(s.system.powerState, 'On');
  await d.power('soft-off');
  t.equal(s.system.powerState, 'Off');
  await d.power('on');
  await d.power('off');
  t.equal(s.system.powerState, 'Off');
  t.equal(await d.powerStatus(), 'off');
  t.same(resetsPosted(s), ['On', 'On', 'ForceRestart', 'PowerCycle', 'GracefulShutdown', 'On', 'ForceOff']);

  await d.setBootDevice({ device: 'pxe', persistent: false, efi: true });
  t.same(s.system.boot, { BootSourceOverrideEnabled: 'Once', BootSourceOverrideTarget: 'Pxe', BootSourceOverrideMode: 'UEFI' });
  await d.setBootDevice({ device: 'disk', persistent: true, efi: false });
  t.same(s.system.boot, { BootSourceOverrideEnabled: 'Continuous', BootSourceOverrideTarget: 'Hdd', BootSourceOverrideMode: 'Legacy' });
  const patches = s.requests.filter((r) => r.method === 'PATCH');
  t.equal(patches.length, 2);
  t.ok(patches.every((p) => typeof p.headers['if-match'] === 'string' && /^W\/"[0-9a-f]{8}"$/.test(p.headers['if-match'])), 'If-Match carries the ETag');

  await d.identify(15);
  t.equal(s.system.locationIndicatorActive, true);
  await d.identify(0);
  t.equal(s.system.locationIndicatorActive, false);

  const info = await d.info();
  t.match(info, {
    manufacturer: 'Metalbox Labs', model: 'RF-Sim 1', firmwareVersion: 'sim-2.71', biosVersion: 'SIMBIOS 1.2.3',
    protocolVersion: '1.17.0', systemUuid: '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f', systemId: '1', authentication: 'session',
  });

  t.equal(s.sessionLog.length, 1, 'one login for the whole run');
  t.ok(s.requests.filter((r) => r.path !== '/redfish/v1/' && !r.path.endsWith('/Sessions')).every((r) => r.auth === 'token'), 'token on every authenticated request');
  t.ok(s.connections <= 2, `keep-alive: ${s.requests.length} requests over ${s.connections} connection(s)`);
  t.comment(`${s.requests.length} requests over ${s.connections} TLS connection(s)`);

  await d.close();
  t.same(s.sessionLog, [{ id: '1', deleted: true }], 'close deletes the session');
  t.equal(s.sessions.size, 0);
  await d.close();
  t.pass('close is idempotent');
  t.equal(await d.powerStatus(), 'off', 'usable again after close: logs in anew');
  t.equal(s.sessionLog.length, 2);
});

t.test('identify turns itself off after the given seconds; IndicatorLED and chassis variants', async (t) => {
  const s = await sim(t, { indicator: 'IndicatorLED' });
  const d = driver(t, s);
  const t0 = performance.now();
  await d.identify(1);
  t.equal(s.system.indicatorLED, 'Blinking');
  await sleep(400);
  t.equal(s.system.indicatorLED, 'Blinking', 'still on before the second is up');
  while (s.system.indicatorLED !== 'Off' && performance.now() - t0 < 10_000) await sleep(20);
  const ms = performance.now() - t0;
  t.equal(s.system.indicatorLED, 'Off', `turned off by the driver after ${ms.toFixed(0)} ms`);
  t.ok(ms >= 1000, 'not before the second was up');

  const c = await sim(t, { indicator: 'chassis' });
  const dc = driver(t, c);
  await dc.identify(30);
  t.equal(c.chassisIndicator, 'Blinking');
  await dc.identify(0);
  t.equal(c.chassisIndicator, 'Off');

  const n = await sim(t, { indicator: 'none' });
  await rejects(t, driver(t, n).identify(5), 'BMC_UNSUPPORTED', /indicator/);
});

t.test('a stale ETag (412) is read again once', async (t) => {
  const s = await sim(t, { requireIfMatch: true });
  const d = driver(t, s);
  await d.powerStatus();
  let bumped = false;
  s.hook = (r) => {
    // Someone else changed the system between our GET and our PATCH.
    if (!bumped && r.method === 'PATCH') { bumped = true; s.system.generation++; }
  };
  await d.setBootDevice({ device: 'pxe', persistent: true, efi: true });
  t.same(s.system.boot.BootSourceOverrideTarget, 'Pxe');
  const patches = s.requests.filter((r) => r.method === 'PATCH');
  t.equal(patches.length, 2, 'first PATCH got 412, the second went through');
});

t.test('boot override values the system does not offer -> BMC_UNSUPPORTED, nothing patched', async (t) => {
  const s = await sim(t, { bootTargets: ['None', 'Hdd'], bootMode: false });
  const d = driver(t, s);
  await rejects(t, d.setBootDevice({ device: 'pxe', persistent: false, efi: false }), 'BMC_UNSUPPORTED', /Pxe/);
  t.equal(s.requests.filter((r) => r.method === 'PATCH').length, 0);
  await d.setBootDevice({ device: 'disk', persistent: false, efi: true });
  t.same(JSON.parse(s.requests.find((r) => r.method === 'PATCH')!.body), { Boot: { BootSourceOverrideTarget: 'Hdd', BootSourceOverrideEnabled: 'Once' } }, 'no BootSourceOverrideMode on a system without it');
});

t.test('wrong password -> BMC_AUTH_FAILED with the service\'s message', async (t) => {
  const s = await sim(t);
  const d = driver(t, s, { password: 'wrong-password-1' });
  await rejects(t, d.powerStatus(), 'BMC_AUTH_FAILED', /session login as "admin" refused \(HTTP 401\).*authorization error/);
  t.equal(s.sessions.size, 0);

  const b = await sim(t, { sessions: 'absent' });
  await rejects(t, driver(t, b, { password: 'wrong-password-2' }).powerStatus(), 'BMC_AUTH_FAILED', /HTTP 401.*no valid session/i);
});

t.test('Basic fallback: no sessions offered, or session login refused', async (t) => {
  const s = await sim(t, { sessions: 'absent', powerState: 'Off' });
  const d = driver(t, s);
  await d.power('on');
  t.equal(s.system.powerState, 'On');
  t.match(await d.info(), { authentication: 'basic' });
  t.notOk(s.requests.some((r) => r.method === 'POST' && r.path.includes('Sessions')), 'no login attempted without Links.Sessions');
  t.ok(s.requests.filter((r) => r.path !== '/redfish/v1/').every((r) => r.auth === 'basic'));

  const r = await sim(t, { sessions: 'refused', powerState: 'Off' });
  const dr = driver(t, r);
  await dr.power('on');
  t.equal(r.system.powerState, 'On');
  t.same(r.requests.slice(0, 3).map((q) => `${q.method} ${q.path} ${q.auth}`), [
    'GET /redfish/v1/ none', 'POST /redfish/v1/SessionService/Sessions none', 'GET /redfish/v1/Systems basic',
  ]);
});

t.test('an expired token is replaced by one new login', async (t) => {
  const s = await sim(t);
  const d = driver(t, s);
  await d.powerStatus();
  s.expireSessions();
  const mark = s.requests.length;
  await d.power('on');
  t.equal(s.system.powerState, 'On');
  t.equal(s.sessionLog.length, 2, 'logged in again');
  t.same(s.requests.slice(mark).map((r) => `${r.method} ${r.path}`), [
    'GET /redfish/v1/Systems/1', 'POST /redfish/v1/SessionService/Sessions', 'GET /redfish/v1/Systems/1', 'POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset',
  ]);

  // The password changed on the BMC while we held a session: one new login, then BMC_AUTH_FAILED.
  s.setPassword('changed-on-the-bmc');
  s.expireSessions();
  await rejects(t, d.powerStatus(), 'BMC_AUTH_FAILED');
  t.equal(s.sessionLog.length, 2, 'the refused login created nothing');
});

t.test('concurrent calls share one login', async (t) => {
  const s = await sim(t);
  const d = driver(t, s);
  const states = await Promise.all([1, 2, 3, 4, 5].map(() => d.powerStatus()));
  t.same(states, ['off', 'off', 'off', 'off', 'off']);
  t.equal(s.sessionLog.length, 1);
});

t.test('redirects are followed on the same origin, to a bounded depth', async (t) => {
  const s = await sim(t, { powerState: 'Off' });
  s.redirects.set('/redfish/v1/', { status: 301, location: '/redfish/v1' });
  s.redirects.set('/redfish/v1/Systems/1', { status: 308, location: `https://127.0.0.1:${s.port}/redfish/v1/Systems/1/` });
  s.redirects.set('/redfish/v1/Systems/1/Actions/ComputerSystem.Reset', { status: 307, location: '/redfish/v1/Systems/1/Actions/ComputerSystem.Reset/' });
  const d = driver(t, s);
  await d.power('on');
  t.equal(s.system.powerState, 'On', 'POST kept its method and body through a 307');
  t.ok(s.requests.some((r) => r.path === '/redfish/v1' && r.method === 'GET'));

  const loop = await sim(t);
  loop.redirects.set('/redfish/v1/', { status: 302, location: '/redfish/v1/' });
  await rejects(t, driver(t, loop).powerStatus(), 'BMC_PROTOCOL', /more than 5 redirects/);
  t.equal(loop.requests.length, 6, 'the first request and 5 redirects');

  const away = await sim(t);
  away.redirects.set('/redfish/v1/Systems', { status: 302, location: 'https://198.51.100.7/redfish/v1/Systems' });
  await rejects(t, driver(t, away).powerStatus(), 'BMC_PROTOCOL', /another origin/);
});

t.test('a changed certificate -> BMC_TLS_MISMATCH before any credential is sent', async (t) => {
  const s = await sim(t);
  const d = driver(t, s);
  t.equal(await d.powerStatus(), 'off');
  const mark = s.requests.length;
  s.setCertificate(certB);
  const err = await rejects(t, d.power('on'), 'BMC_TLS_MISMATCH');
  t.ok(err.message.includes(certA.fingerprint) && err.message.includes(certB.fingerprint), 'names the expected and the seen fingerprint');
  t.same(err.details, { expected: certA.fingerprint, seen: certB.fingerprint, subject: 'CN=bmc-b, O=metalbox test', validTo: err.details!.validTo });
  t.same(s.requests.slice(mark), [], 'the simulator saw no request at all after the change');
  t.equal(s.system.powerState, 'Off');

  // A fresh driver pinned to another certificate: not even the service root is requested.
  const fresh = await sim(t, { certificate: certB });
  await rejects(t, driver(t, fresh, { tlsFingerprint: certA.fingerprint }).powerStatus(), 'BMC_TLS_MISMATCH', /re-pin/);
  t.same(fresh.requests, []);
  t.same(fresh.credentialed(), []);

  // No pin at all: a self-signed certificate is refused, and the message shows what to pin.
  const unpinned = await sim(t);
  await rejects(t, driver(t, unpinned, { tlsFingerprint: undefined }).powerStatus(), 'BMC_TLS_MISMATCH', new RegExp(`not trusted.*${certA.fingerprint}`));
  t.same(unpinned.requests, []);
});

t.test('reset types the system does not offer', async (t) => {
  const s = await sim(t, { resetTypes: ['On', 'ForceOff'], powerState: 'On' });
  const d = driver(t, s);
  await rejects(t, d.power('soft-off'), 'BMC_UNSUPPORTED', /offers ResetType On, ForceOff/);
  await rejects(t, d.power('reset'), 'BMC_UNSUPPORTED');
  t.same(resetsPosted(s), [], 'nothing posted');

  // Stated through an ActionInfo resource instead of the inline annotation.
  const ai = await sim(t, { resetTypes: ['On', 'ForceOff'], advertise: 'actionInfo', powerState: 'Off' });
  const dai = driver(t, ai);
  await rejects(t, dai.power('soft-off'), 'BMC_UNSUPPORTED');
  await dai.power('on');
  t.equal(ai.system.powerState, 'On');
  t.ok(ai.requests.some((r) => r.path === '/redfish/v1/Systems/1/ResetActionInfo'));

  // Not stated at all: the driver tries, the service refuses, the refusal is BMC_UNSUPPORTED with its text.
  const none = await sim(t, { resetTypes: ['On', 'ForceOff'], advertise: 'none', powerState: 'On' });
  await rejects(t, driver(t, none).power('soft-off'), 'BMC_UNSUPPORTED', /GracefulShutdown.*not in the list of acceptable values/);
  t.equal(none.system.powerState, 'On');
});

t.test('cycle without PowerCycle: ForceOff, wait for Off, then On; else ForceRestart', async (t) => {
  const s = await sim(t, { resetTypes: ['On', 'ForceOff', 'ForceRestart'], powerState: 'On', transitionMs: 150 });
  const d = driver(t, s, {}, { cyclePollMs: 25, cycleOffMs: 50 });
  const t0 = performance.now();
  await d.power('cycle');
  const ms = performance.now() - t0;
  t.same(resetsPosted(s), ['ForceOff', 'On']);
  t.ok(ms >= 150, `waited for PoweringOff to end (${ms.toFixed(0)} ms)`);
  await sleep(200);
  t.equal(s.system.powerState, 'On');
  t.equal(s.system.boots, 1);

  const off = await sim(t, { resetTypes: ['On', 'ForceOff'], powerState: 'Off' });
  await driver(t, off, {}, { cyclePollMs: 25, cycleOffMs: 50 }).power('cycle');
  t.same(resetsPosted(off), ['On'], 'an Off system only gets On');

  const stuck = await sim(t, { resetTypes: ['On', 'ForceOff'], powerState: 'On', transitionMs: 60_000 });
  await rejects(t, driver(t, stuck, {}, { cyclePollMs: 25, cycleOffTimeoutMs: 200 }).power('cycle'), 'BMC_TIMEOUT', /did not reach Off/);
  t.same(resetsPosted(stuck), ['ForceOff']);

  const restart = await sim(t, { resetTypes: ['ForceRestart', 'GracefulShutdown'], powerState: 'On' });
  await driver(t, restart).power('cycle');
  t.same(resetsPosted(restart), ['ForceRestart']);
  t.equal(restart.system.boots, 1);
});

t.test('the service\'s extended error text is surfaced, and scrubbed of secrets', async (t) => {
  const s = await sim(t, { powerState: 'Off' });
  const d = driver(t, s);
  await rejects(t, d.power('reset'), 'BMC_PROTOCOL', /HTTP 409.*resource is in standby/);
  s.overrides.set('POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset', {
    status: 400,
    body: JSON.stringify({ error: { code: 'Base.1.18.GeneralError', message: 'x', '@Message.ExtendedInfo': [{ MessageId: 'Oem.1.0.Echo', Message: `bad password ${PASSWORD} for admin` }] } }),
    headers: { 'Content-Type': 'application/json' },
  });
  const err = await rejects(t, d.power('on'), 'BMC_PROTOCOL', /bad password \[redacted\] for admin/);
  t.notOk(err.message.includes(PASSWORD));
});

t.test('choosing the system by id', async (t) => {
  const s = await sim(t, { systems: ['A', 'B'], powerState: 'Off' });
  await driver(t, s, { systemId: 'B' }).power('on');
  t.equal(s.systems.get('B')!.powerState, 'On');
  t.equal(s.systems.get('A')!.powerState, 'Off');
  await driver(t, s).power('on');
  t.equal(s.systems.get('A')!.powerState, 'On', 'default: the first member');
  await rejects(t, driver(t, s, { systemId: 'C' }).powerStatus(), 'BMC_INVALID', /no system "C".*Systems\/A, \/redfish\/v1\/Systems\/B/);
});

t.test('unreachable port -> BMC_UNREACHABLE', async (t) => {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rejects(t, driver(t, { port, fingerprint: certA.fingerprint }).powerStatus(), 'BMC_UNREACHABLE', /ECONNREFUSED/);
  await rejects(t, fetchFingerprint('127.0.0.1', port), 'BMC_UNREACHABLE');
});

async function silentServer(t: Test): Promise<number> {
  // Accepts TCP connections and never says a word (not even a TLS ServerHello).
  const sockets = new Set<Socket>();
  const server: TcpServer = createTcpServer((s) => { sockets.add(s); s.on('error', () => undefined); });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()); }));
  return (server.address() as AddressInfo).port;
}

t.test('a hanging BMC -> BMC_TIMEOUT within the bound', async (t) => {
  const s = await sim(t);
  s.hang = true;
  let t0 = performance.now();
  await rejects(t, driver(t, s, {}, { timeoutMs: 300 }).powerStatus(), 'BMC_TIMEOUT', /no answer in time/);
  let ms = performance.now() - t0;
  t.ok(ms >= 280 && ms < 3000, `HTTP never answered: BMC_TIMEOUT after ${ms.toFixed(0)} ms (bound 300 ms)`);

  const port = await silentServer(t);
  t0 = performance.now();
  await rejects(t, driver(t, { port, fingerprint: certA.fingerprint }, {}, { timeoutMs: 300 }).powerStatus(), 'BMC_TIMEOUT', /no answer in time|no TLS handshake/);
  ms = performance.now() - t0;
  t.ok(ms >= 280 && ms < 3000, `TLS never answered: BMC_TIMEOUT after ${ms.toFixed(0)} ms (bound 300 ms)`);
  await rejects(t, fetchFingerprint('127.0.0.1', port, { timeoutMs: 300 }), 'BMC_TIMEOUT');

  // Headers and half a body, then silence.
  const half = await sim(t);
  half.overrides.set('GET /redfish/v1/', { status: 200, body: '{"Systems": {', headers: { 'Content-Length': '4000', 'Content-Type': 'application/json' } });
  t0 = performance.now();
  await rejects(t, driver(t, half, {}, { timeoutMs: 300 }).powerStatus(), 'BMC_TIMEOUT', /no answer in time/);
  ms = performance.now() - t0;
  t.ok(ms >= 280 && ms < 3000, `body stalled: BMC_TIMEOUT after ${ms.toFixed(0)} ms (bound 300 ms)`);

  // The caller's own signal ends a call early too.
  const s2 = await sim(t);
  s2.hang = true;
  const err = await rejects(t, driver(t, s2, {}, { timeoutMs: 60_000 }).powerStatus(AbortSignal.timeout(200)), 'BMC_TIMEOUT', /aborted/);
  t.same(err.details, { reason: 'aborted' });
});

t.test('malformed or schema-violating answers -> BMC_PROTOCOL', async (t) => {
  const s = await sim(t);
  const d = driver(t, s);
  t.equal(await d.powerStatus(), 'off');
  s.overrides.set('GET /redfish/v1/Systems/1', { status: 200, body: '{"PowerState": "On", ', headers: { 'Content-Type': 'application/json' } });
  await rejects(t, d.powerStatus(), 'BMC_PROTOCOL', /not JSON/);
  s.overrides.set('GET /redfish/v1/Systems/1', { status: 200, body: '<html>login</html>', headers: { 'Content-Type': 'text/html' } });
  await rejects(t, d.powerStatus(), 'BMC_PROTOCOL', /not JSON/);
  s.overrides.set('GET /redfish/v1/Systems/1', { status: 200, body: '[1,2]' });
  await rejects(t, d.powerStatus(), 'BMC_PROTOCOL', /not a JSON object/);
  s.overrides.set('GET /redfish/v1/Systems/1', { status: 200, body: JSON.stringify({ PowerState: 7 }) });
  await rejects(t, d.powerStatus(), 'BMC_PROTOCOL', /PowerState/);
  s.overrides.set('GET /redfish/v1/Systems/1', { status: 200, body: JSON.stringify({ Actions: { '#ComputerSystem.Reset': { target: 'nowhere' } } }) });
  await rejects(t, d.power('on'), 'BMC_PROTOCOL', /target/);
  s.overrides.set('GET /redfish/v1/Systems/1', { status: 200, body: 'x'.repeat(2 * 1024 * 1024) });
  await rejects(t, d.powerStatus(), 'BMC_PROTOCOL', /larger than/);
  s.overrides.delete('GET /redfish/v1/Systems/1');
  t.equal(await d.powerStatus(), 'off', 'recovers when the answers are sane again');

  const c = await sim(t);
  c.overrides.set('GET /redfish/v1/Systems', { status: 200, body: JSON.stringify({ Members: 'all of them' }) });
  await rejects(t, driver(t, c).powerStatus(), 'BMC_PROTOCOL', /Members/);
  const r = await sim(t);
  r.overrides.set('GET /redfish/v1/', { status: 200, body: JSON.stringify({ Name: 'a web page' }) });
  await rejects(t, driver(t, r).powerStatus(), 'BMC_PROTOCOL', /no "Systems"/);
  await rejects(t, probeRedfish('127.0.0.1', r.port), 'BMC_PROTOCOL');

  // Plain HTTP where TLS was expected.
  const http = createHttpServer((_req, res) => res.end('{}'));
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => http.close(() => resolve())));
  const port = (http.address() as AddressInfo).port;
  await rejects(t, driver(t, { port, fingerprint: certA.fingerprint }).powerStatus(), 'BMC_PROTOCOL', /TLS handshake failed/);
});

t.test('no password and no token in any log line or error', async (t) => {
  const tokens = sims.flatMap((s) => s.issuedTokens);
  t.ok(tokens.length >= 10, `${tokens.length} tokens issued during the run`);
  t.ok(logLines.length > 50, `${logLines.length} log lines captured at trace level`);
  t.ok(errorTexts.length > 20, `${errorTexts.length} error texts captured`);
  const all = logLines.join('') + errorTexts.join('\n');
  const basic = Buffer.from(`admin:${PASSWORD}`).toString('base64');
  for (const secret of [PASSWORD, 'wrong-password-1', 'wrong-password-2', 'changed-on-the-bmc', basic, ...tokens]) {
    t.notOk(all.includes(secret), `not found: ${secret === PASSWORD ? 'the password' : secret.slice(0, 6) + '...'}`);
  }
  t.match(all, /redfish request/, 'the log does describe the requests');
});
