// The IPMI driver (src/bmc/ipmi) against real and hostile peers.
//
// 1. OpenIPMI ipmi_sim BMCs in a network namespace (test/helpers/ipmi-sim.ts); our driver runs in a child
//    process in the client namespace (test/helpers/ipmi-driver-child.ts), and every action is checked by
//    ipmitool -I lanplus -C 3 reading the same BMC (and by the BMC's chassis script's record): power
//    on/off/cycle/reset/soft-off, boot device, identify, info; wrong password -> BMC_AUTH_FAILED; an
//    address where no BMC is -> BMC_TIMEOUT within the deadline; a BMC restart (sessions lost) is survived.
// 2. Our own BMC (test/helpers/ipmi-responder.ts, written from the spec) on loopback: cipher suite 17
//    (ipmi_sim 2.0.33 refuses it), Kg, sequence numbers, retransmission, and a table of hostile answers:
//    truncated, bad AuthCode, wrong session ID, replayed, garbage, bad RAKP codes.
import t, { type Test } from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { createIpmiDriver, IpmiClient, type IpmiDriver, type IpmiDriverOptions } from '../../src/bmc/ipmi/index.ts';
import { PRIVILEGE } from '../../src/protocols/ipmi/index.ts';
import type { BmcEndpoint } from '../../src/bmc/types.ts';
import { isMetalboxError } from '../../src/lib/errors.ts';
import { canBuildLab } from '../helpers/netns.ts';
import { haveIpmiTools, SIM_USERS, startDriverChild, startIpmiSims, type DriverChild, type IpmiSimLab } from '../helpers/ipmi-sim.ts';
import { IpmiResponder, type Outgoing } from '../helpers/ipmi-responder.ts';

const RESPONDER_PASSWORD = 'resp-admin-pw';
const SECRETS = [...Object.values(SIM_USERS).map((u) => u.password), RESPONDER_PASSWORD, 'wrong-password-xyz', '0102030405060708090a0b0c0d0e0f1011121314', 'aabbccddeeff00112233'];

/** No error, message or detail may carry a password or Kg. */
function noSecrets(t: Test, what: unknown, label: string): void {
  const text = JSON.stringify(what, (_k, v: unknown) => (v instanceof Error ? { ...v, message: v.message } : v));
  t.notOk(SECRETS.some((s) => text.includes(s)), `${label}: no password or Kg in the error`);
}

// --- 1. ipmi_sim in a namespace ---------------------------------------------------------------------------

const lab = canBuildLab();
const tools = haveIpmiTools();
if (!lab.ok || !tools.ok) {
  t.fail(`cannot build the IPMI lab: ${lab.ok ? '' : lab.why}${tools.ok ? '' : tools.why}`);
} else {
  t.test('ipmi_sim BMCs in a namespace, checked with ipmitool', async (t) => {
    const sims: IpmiSimLab = await startIpmiSims({ count: 2, tag: 'mbxbi' });
    const c: DriverChild = startDriverChild(sims.clientNs);
    t.teardown(async () => {
      await c.stop();
      sims.stop();
    });
    const [bmc, other] = sims.bmcs as [typeof sims.bmcs[0], typeof sims.bmcs[0]];
    const endpoint = (b = bmc, user: keyof typeof SIM_USERS = 'admin', extra: Partial<BmcEndpoint> = {}): BmcEndpoint => ({ driver: 'ipmi', address: b.address, username: SIM_USERS[user].name, password: SIM_USERS[user].password, ...extra });
    const ok = async (key: string, method: string, ...args: unknown[]): Promise<unknown> => {
      const r = await c.call(key, method, ...args);
      if (!r.ok) throw new Error(`${method} failed: ${JSON.stringify(r.error)}`);
      return r.value;
    };
    const ipmitool = async (args: string[]): Promise<string> => {
      const r = await sims.ipmitool(bmc, args);
      return `${r.stdout}${r.stderr}`;
    };
    await c.ok('create', { key: 'd', endpoint: endpoint() });

    await t.test('presence ping', async (t) => {
      const pong = await c.ok('ping', { address: bmc.address }) as { ipmi: boolean; asfVersion: number } | null;
      t.match(pong, { ipmi: true, asfVersion: 1 }, 'ipmi_sim answers the RMCP presence ping');
      const started = performance.now();
      t.equal(await c.ok('ping', { address: sims.unusedAddress, options: { timeoutMs: 300, attempts: 2 } }), null, 'nothing at an unused address: undefined, not an error');
      t.ok(performance.now() - started < 2000, 'within its bound');
    });

    await t.test('power: every action, read back by ipmitool', async (t) => {
      t.equal(await ok('d', 'powerStatus'), 'off');
      t.match(await ipmitool(['chassis', 'power', 'status']), /Chassis Power is off/);

      await ok('d', 'power', 'on');
      t.equal(bmc.state().power, 1, 'the chassis script was told power 1');
      t.match(await ipmitool(['chassis', 'power', 'status']), /Chassis Power is on/, 'ipmitool sees it on');
      t.equal(await ok('d', 'powerStatus'), 'on');

      await ok('d', 'power', 'off');
      t.match(await ipmitool(['chassis', 'power', 'status']), /Chassis Power is off/, 'ipmitool sees it off');

      // Cycle: ipmi_sim powers off, then on again a second later.
      await ok('d', 'power', 'on');
      const before = bmc.state().events.length;
      await ok('d', 'power', 'cycle');
      t.same(bmc.state().events.slice(before, before + 1), ['power 0'], 'cycle: off first');
      let on = '';
      for (let i = 0; i < 30 && !/is on/.test(on); i++) {
        await sleep(200);
        on = await ipmitool(['chassis', 'power', 'status']);
      }
      t.match(on, /Chassis Power is on/, 'cycle: on again, as ipmitool reads it');
      t.same(bmc.state().events.slice(before), ['power 0', 'power 1']);

      const beforeReset = bmc.state().events.length;
      await ok('d', 'power', 'reset');
      t.same(bmc.state().events.slice(beforeReset), ['reset 1'], 'reset: a reset pulse');
      t.match(await ipmitool(['chassis', 'power', 'status']), /Chassis Power is on/, 'reset: still on');

      const beforeSoft = bmc.state().events.length;
      await ok('d', 'power', 'soft-off');
      t.same(bmc.state().events.slice(beforeSoft), ['shutdown 1'], 'soft-off: ACPI soft shutdown (Chassis Control 5)');
      t.match(await ipmitool(['chassis', 'power', 'status']), /Chassis Power is off/, 'soft-off: ipmitool sees it off');
      t.equal(await ok('d', 'powerStatus'), 'off');
    });

    await t.test('boot device, read back by ipmitool', async (t) => {
      await ok('d', 'setBootDevice', { device: 'pxe', persistent: true, efi: true });
      t.equal(bmc.state().boot, 'pxe');
      t.match(await ipmitool(['chassis', 'bootparam', 'get', '5']), /Boot Device Selector : Force PXE/, 'ipmitool reads PXE');
      await ok('d', 'setBootDevice', { device: 'disk', persistent: false, efi: false });
      t.equal(bmc.state().boot, 'default', 'ipmi_sim calls the default hard drive "default"');
      t.match(await ipmitool(['chassis', 'bootparam', 'get', '5']), /Force Boot from default Hard-Drive/, 'ipmitool reads the hard drive');
    });

    await t.test('identify: the same BMC record as ipmitool\'s', async (t) => {
      await sims.ipmitool(bmc, ['chassis', 'identify', '7']);
      const theirs = bmc.state().identify;
      await ok('d', 'identify', 0);
      t.equal(bmc.state().identify, '0 0', 'identify 0: off');
      await ok('d', 'identify', 7);
      t.equal(bmc.state().identify, theirs, `identify 7 reaches the BMC as ipmitool's does (${theirs})`);
      await ok('d', 'identify', 100_000);
      t.equal(bmc.state().identify, '255 1', 'beyond 255 s: force on');
    });

    await t.test('info, as ipmitool reads it', async (t) => {
      const info = await ok('d', 'info') as Record<string, unknown>;
      const guid = await ipmitool(['mc', 'guid']);
      const mc = await ipmitool(['mc', 'info']);
      t.equal(info.systemUuid, bmc.uuid, 'system UUID as configured');
      t.match(guid, new RegExp(`System GUID\\s+: ${bmc.uuid}`), 'and as ipmitool prints it');
      t.equal(info.systemGuid, bmc.guid, 'GUID bytes as configured');
      t.match(mc, new RegExp(`Firmware Revision\\s+: ${String(info.firmwareVersion).replace('.', '\\.')}`), 'firmware revision');
      t.match(mc, new RegExp(`Manufacturer ID\\s+: ${String(info.manufacturerId)}`), 'manufacturer');
      t.match(info, { protocolVersion: 'IPMI 2.0', model: '0x0f02', manufacturer: 'MontaVista (OpenIPMI)' });
    });

    await t.test('calls on one driver are serialised', async (t) => {
      const replies = await Promise.all(Array.from({ length: 8 }, () => c.call('d', 'powerStatus')));
      t.same(replies.map((r) => r.value), Array(8).fill('off'), 'eight concurrent polls all answered');
      const stats = await c.ok('stats', { key: 'd' }) as { sessionsOpened: number; malformed: number; replays: number };
      t.equal(stats.sessionsOpened, 1, 'one session for everything so far');
      t.equal(stats.malformed + stats.replays, 0);
    });

    await t.test('credentials and privilege', async (t) => {
      await c.ok('create', { key: 'wrong', endpoint: endpoint(bmc, 'admin', { password: 'wrong-password-xyz' }) });
      const wrong = await c.call('wrong', 'powerStatus');
      t.match(wrong, { ok: false, error: { code: 'BMC_AUTH_FAILED' } }, 'wrong password: BMC_AUTH_FAILED');
      t.ok(wrong.ms < 1000, `and at once (${Math.round(wrong.ms)} ms), not after retries`);
      noSecrets(t, wrong, 'wrong password');

      await c.ok('create', { key: 'nouser', endpoint: endpoint(bmc, 'admin', { username: 'nobody' }) });
      const nouser = await c.call('nouser', 'powerStatus');
      t.match(nouser, { ok: false, error: { code: 'BMC_AUTH_FAILED' } }, `unknown user: BMC_AUTH_FAILED (${nouser.error?.message})`);
      noSecrets(t, nouser, 'unknown user');

      await c.ok('create', { key: 'oper', endpoint: endpoint(bmc, 'operator'), options: { privilege: 'operator' } });
      await ok('oper', 'power', 'on');
      t.equal(bmc.state().power, 1, 'an operator account with privilege "operator" may power on');
      await ok('oper', 'power', 'off');

      await c.ok('create', { key: 's17', endpoint: endpoint(bmc, 'admin', { cipherSuite: 17 }) });
      t.match(await c.call('s17', 'powerStatus'), { ok: false, error: { code: 'BMC_UNSUPPORTED', details: { rmcpPlusStatus: 4 } } }, 'ipmi_sim refuses suite 17: BMC_UNSUPPORTED');
    });

    await t.test('no BMC at the address: BMC_TIMEOUT within the default deadline', async (t) => {
      await c.ok('create', { key: 'none', endpoint: endpoint(bmc, 'admin', { address: sims.unusedAddress }) });
      const r = await c.call('none', 'powerStatus');
      t.match(r, { ok: false, error: { code: 'BMC_TIMEOUT' } });
      t.ok(r.ms >= 4900 && r.ms < 6000, `gave up after ${Math.round(r.ms)} ms (deadline 5000 ms)`);
      await c.ok('create', { key: 'none2', endpoint: endpoint(bmc, 'admin', { address: sims.unusedAddress }), options: { deadlineMs: 1500, timeoutMs: 300 } });
      const r2 = await c.call('none2', 'info');
      t.match(r2, { ok: false, error: { code: 'BMC_TIMEOUT' } });
      t.ok(r2.ms >= 1450 && r2.ms < 2200, `a configured deadline is kept too (${Math.round(r2.ms)} ms for 1500)`);
    });

    await t.test('the BMC restarts (every session lost): the next call opens a new session', async (t) => {
      t.equal(await ok('d', 'powerStatus'), 'off');
      await bmc.restart();
      const r = await c.call('d', 'powerStatus');
      t.match(r, { ok: true, value: 'off' }, 'answered after the restart');
      const stats = await c.ok('stats', { key: 'd' }) as { sessionsOpened: number; sessionsReopened: number };
      t.equal(stats.sessionsOpened, 2, 'a second session');
      t.equal(stats.sessionsReopened, 1);
      t.ok(r.ms < 4000, `within the deadline (${Math.round(r.ms)} ms)`);
    });

    await t.test('a second BMC, its own session; close() frees the sockets', async (t) => {
      await c.ok('create', { key: 'o', endpoint: endpoint(other) });
      await ok('o', 'power', 'on');
      t.equal(other.state().power, 1);
      t.equal(bmc.state().power, 0, 'the first BMC untouched');
      for (const key of ['d', 'o', 'wrong', 'nouser', 'oper', 's17', 'none', 'none2']) await c.ok('close', { key });
      await c.ok('close', { key: 'd' });
      t.pass('close is idempotent');
      t.equal(await c.ok('sockets'), 0, 'no UDP socket left open or allocated in the driver process');
      t.equal(await ok('d', 'powerStatus'), 'off', 'a closed driver can be used again');
      await c.ok('close', { key: 'd' });
    });
  });
}

// --- 2. our own BMC on loopback ---------------------------------------------------------------------------

const FAST: IpmiDriverOptions = { timeoutMs: 150, retries: 3, deadlineMs: 1200 };

async function withResponder(t: Test, options: ConstructorParameters<typeof IpmiResponder>[0] = {}): Promise<IpmiResponder> {
  const r = await new IpmiResponder({ users: { admin: { password: RESPONDER_PASSWORD, privilege: 4 } }, ...options }).start();
  t.teardown(() => r.stop());
  return r;
}

function driverFor(t: Test, r: IpmiResponder, extra: Partial<BmcEndpoint> = {}, options: IpmiDriverOptions = FAST): IpmiDriver {
  const d = createIpmiDriver({ driver: 'ipmi', address: '127.0.0.1', port: r.port, username: 'admin', password: RESPONDER_PASSWORD, ...extra }, options);
  t.teardown(() => d.close());
  return d;
}

async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string; details?: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    if (isMetalboxError(err)) return { code: err.code, message: err.message, ...(err.details ? { details: { ...err.details } } : {}) };
    throw err;
  }
  throw new Error('expected a failure');
}

for (const suite of [17, 3]) {
  t.test(`cipher suite ${suite} against the spec-written responder`, async (t) => {
    const r = await withResponder(t);
    const d = driverFor(t, r, { cipherSuite: suite });
    t.equal(await d.powerStatus(), 'off');
    await d.power('on');
    t.equal(await d.powerStatus(), 'on');
    await d.power('soft-off');
    await d.power('cycle');
    await d.power('reset');
    await d.power('off');
    t.same(r.controls, [1, 5, 2, 3, 0], 'Chassis Control 1, 5, 2, 3, 0');
    await d.setBootDevice({ device: 'pxe', persistent: true, efi: true });
    t.equal(r.bootFlags?.toString('hex'), 'e004000000', 'boot flags: valid, persistent, EFI; PXE in bits 5:2');
    await d.setBootDevice({ device: 'disk', persistent: false, efi: false });
    t.equal(r.bootFlags?.toString('hex'), '8008000000', 'boot flags: valid, next boot only, legacy; disk');
    await d.identify(12);
    t.same(r.identify.map((b) => b.toString('hex')), ['0c']);
    const info = await d.info();
    t.match(info, { systemUuid: 'ffeeddcc-bbaa-9988-7766-554433221100', firmwareVersion: '2.15', protocolVersion: 'IPMI 2.0', manufacturerId: 343, manufacturer: 'Intel' });
    t.same(r.clientErrors, [], 'the responder understood every packet');

    // Our session sequence numbers: 1, 2, 3, ... one per packet.
    const [session] = [...r.sessions.values()];
    t.same(session!.inbound, session!.inbound.map((_, i) => i + 1), 'outbound sequence numbers count up from 1');
    await d.close();
    t.equal(r.sessionsClosed, 1, 'close() sent Close Session');
    t.equal(r.sessions.size, 0);
  });
}

t.test('Kg (two-key login)', async (t) => {
  const kg = Buffer.from('0102030405060708090a0b0c0d0e0f1011121314', 'hex');
  for (const suite of [3, 17]) {
    const r = await withResponder(t, { kg });
    t.equal(await driverFor(t, r, { cipherSuite: suite, kg: kg.toString('hex') }).powerStatus(), 'off', `suite ${suite}: the right Kg opens the session`);
    const none = await failure(driverFor(t, r, { cipherSuite: suite }).powerStatus());
    t.match(none, { code: 'BMC_AUTH_FAILED', message: /Kg/ }, `suite ${suite}: no Kg for a BMC that has one`);
    const wrong = await failure(driverFor(t, r, { cipherSuite: suite, kg: 'aabbccddeeff00112233' }).powerStatus());
    t.match(wrong, { code: 'BMC_AUTH_FAILED', details: { step: 'RAKP message 4' } }, `suite ${suite}: a wrong Kg fails at RAKP 4`);
    noSecrets(t, [none, wrong], `suite ${suite} Kg`);
  }
  t.throws(() => createIpmiDriver({ driver: 'ipmi', address: '127.0.0.1', kg: 'xyz-secret' }), { code: 'BMC_INVALID', message: /^(?!.*xyz-secret)/ }, 'a malformed Kg is BMC_INVALID without echoing it');
});

t.test('retransmission: a lost answer costs one timeout; the retry is a new packet with the same rqSeq', async (t) => {
  let dropped = 0;
  const r = await withResponder(t, {
    mischief: (o) => (o.kind === 'response' && o.cmd === 0x01 && o.netFn === 0x00 && dropped++ === 0 ? [] : undefined),
  });
  const d = driverFor(t, r, { cipherSuite: 17 });
  const started = performance.now();
  t.equal(await d.powerStatus(), 'off');
  const ms = performance.now() - started;
  t.ok(ms >= 140 && ms < 1000, `answered after one retransmission (${Math.round(ms)} ms, timeout 150 ms)`);
  const status = r.commands.filter((c) => c.netFn === 0x00 && c.cmd === 0x01);
  t.equal(status.length, 2, 'the BMC saw the request twice');
  t.equal(status[0]!.rqSeq, status[1]!.rqSeq, 'same rqSeq');
  t.equal(status[1]!.sequence, status[0]!.sequence + 1, 'next session sequence number');
  t.equal(d.stats().retransmits, 1);
});

/** Replaces in-session answers to Get Chassis Status (the next one, or every one) with what `hostile` makes of them. */
function onStatus(hostile: (o: Outgoing) => Buffer[], every = false): (o: Outgoing) => Buffer[] | undefined {
  let armed = true;
  return (o) => {
    if (!armed || o.kind !== 'response' || o.netFn !== 0x00 || o.cmd !== 0x01) return undefined;
    armed = every;
    return hostile(o);
  };
}

const flip = (b: Buffer, at: number): Buffer => {
  const c = Buffer.from(b);
  const i = at < 0 ? c.length + at : at;
  c[i] = c[i]! ^ 0x40;
  return c;
};
const withSessionId = (b: Buffer, id: number): Buffer => {
  const c = Buffer.from(b);
  c.writeUInt32LE(id, 6);
  return c;
};
const lastResponse = (history: readonly Buffer[]): Buffer => [...history].reverse().find((p) => p.length > 16 && p[5] === 0xc0)!;

interface Hostile {
  name: string;
  /** Datagrams sent instead of the answer: with only these, the call must fail with `alone`. */
  bad: (o: Outgoing) => Buffer[];
  alone: 'BMC_PROTOCOL' | 'BMC_TIMEOUT';
  counter: 'malformed' | 'ignored' | 'replays';
}

const HOSTILE: Hostile[] = [
  { name: 'truncated packet', bad: (o) => [o.packet.subarray(0, 20)], alone: 'BMC_PROTOCOL', counter: 'malformed' },
  { name: 'truncated integrity trailer', bad: (o) => [o.packet.subarray(0, o.packet.length - 5)], alone: 'BMC_PROTOCOL', counter: 'malformed' },
  { name: 'bad AuthCode (HMAC)', bad: (o) => [flip(o.packet, -1)], alone: 'BMC_PROTOCOL', counter: 'malformed' },
  { name: 'ciphertext changed (AuthCode then fails)', bad: (o) => [flip(o.packet, 40)], alone: 'BMC_PROTOCOL', counter: 'malformed' },
  { name: 'wrong session ID', bad: (o) => [withSessionId(o.packet, 0x01020304)], alone: 'BMC_TIMEOUT', counter: 'ignored' },
  { name: 'replayed earlier answer', bad: (o) => [lastResponse(o.history)], alone: 'BMC_TIMEOUT', counter: 'replays' },
  { name: 'garbage', bad: () => [Buffer.from('not an ipmi packet at all')], alone: 'BMC_PROTOCOL', counter: 'malformed' },
  { name: 'unauthenticated answer in the session', bad: (o) => [Buffer.concat([o.packet.subarray(0, 5), Buffer.from([0x00]), o.packet.subarray(6, 16 + o.packet.readUInt16LE(14))])], alone: 'BMC_PROTOCOL', counter: 'malformed' },
];

t.test('hostile answers in the session', async (t) => {
  for (const h of HOSTILE) {
    await t.test(h.name, async (t) => {
      // Alone (every answer hostile, the session re-established too): the call fails within the deadline.
      const r1 = await withResponder(t, { mischief: onStatus(h.bad, true) });
      const d1 = driverFor(t, r1, { cipherSuite: 17 }, { timeoutMs: 150, retries: 0, deadlineMs: 1200 });
      await d1.info(); // session up, and an answer for the replay to reuse
      const started = performance.now();
      const f = await failure(d1.powerStatus());
      t.equal(f.code, h.alone, `alone: ${h.alone} (${f.message})`);
      t.ok(performance.now() - started < 1500, 'within the deadline');
      t.ok(d1.stats()[h.counter] >= 1, `counted as ${h.counter}`);

      // Before the real answer: ignored, and the real answer is used.
      const r2 = await withResponder(t, { mischief: onStatus((o) => [...h.bad(o), o.packet]) });
      r2.power = true;
      const d2 = driverFor(t, r2, { cipherSuite: 17 });
      await d2.info();
      t.equal(await d2.powerStatus(), 'on', 'followed by the real answer: that one counts');
      t.equal(d2.stats().retransmits, 0, 'without a retransmission');
    });
  }

  await t.test('a replay of an earlier "power on" answer does not become the answer', async (t) => {
    let onAnswer: Buffer | undefined;
    const r = await withResponder(t, {
      mischief: (o) => {
        if (o.kind !== 'response' || o.cmd !== 0x01 || o.netFn !== 0x00) return undefined;
        if (onAnswer === undefined) { onAnswer = o.packet; return undefined; }
        return [onAnswer, o.packet];
      },
    });
    const d = driverFor(t, r, { cipherSuite: 3 });
    r.power = true;
    t.equal(await d.powerStatus(), 'on');
    r.power = false;
    t.equal(await d.powerStatus(), 'off', 'the replayed "on" was refused by the sequence window');
    t.equal(d.stats().replays, 1);
  });
});

t.test('hostile answers while the session is set up', async (t) => {
  const cases: { name: string; kind: Outgoing['kind']; bad: (p: Buffer) => Buffer; code: string }[] = [
    { name: 'RAKP 2 with a wrong key exchange code', kind: 'rakp2', bad: (p) => flip(p, -1), code: 'BMC_AUTH_FAILED' },
    { name: 'RAKP 4 with a wrong integrity check value', kind: 'rakp4', bad: (p) => flip(p, -1), code: 'BMC_AUTH_FAILED' },
    { name: 'Open Session Response cut short', kind: 'open-session', bad: (p) => p.subarray(0, 30), code: 'BMC_PROTOCOL' },
    { name: 'RAKP 2 cut short', kind: 'rakp2', bad: (p) => p.subarray(0, 40), code: 'BMC_PROTOCOL' },
    { name: 'Get Channel Auth Caps answer with a bad checksum', kind: 'auth-caps', bad: (p) => flip(p, -1), code: 'BMC_PROTOCOL' },
  ];
  for (const c of cases) {
    const r = await withResponder(t, { mischief: (o) => (o.kind === c.kind ? [c.bad(o.packet)] : undefined) });
    const f = await failure(driverFor(t, r, { cipherSuite: 17 }).powerStatus());
    t.equal(f.code, c.code, `${c.name}: ${c.code} (${f.message})`);
    noSecrets(t, f, c.name);
  }
  const r = await withResponder(t, { users: { admin: { password: RESPONDER_PASSWORD, privilege: 2 } } });
  t.match(await failure(driverFor(t, r).power('on')), { code: 'BMC_AUTH_FAILED', details: { rmcpPlusStatus: 0x0a } }, 'a user account asking for administrator: refused in RAKP 2');
  // A user-privilege session (the client allows it; the driver asks for operator at least): 0xD4.
  const userSession = new IpmiClient({ address: '127.0.0.1', port: r.port, username: 'admin', password: RESPONDER_PASSWORD, privilege: PRIVILEGE.USER, timeoutMs: 150, retries: 3, deadlineMs: 1200 });
  t.teardown(() => userSession.close());
  t.match(await failure(userSession.command(0x00, 0x02, Buffer.from([1]), 'power on')), { code: 'BMC_AUTH_FAILED', details: { completionCode: 0xd4 } }, 'insufficient privilege (0xD4): BMC_AUTH_FAILED');
  const op = await withResponder(t, { users: { admin: { password: RESPONDER_PASSWORD, privilege: 3 } } });
  await driverFor(t, op, {}, { ...FAST, privilege: 'operator' }).power('on');
  t.same(op.controls, [1], 'operator privilege is enough for Chassis Control');
  const noSuite = await withResponder(t, { suites: [3] });
  t.match(await failure(driverFor(t, noSuite, { cipherSuite: 17 }).powerStatus()), { code: 'BMC_UNSUPPORTED', details: { cipherSuite: 17 } }, 'a BMC without suite 17: BMC_UNSUPPORTED');
});

t.test('sessions the BMC drops are re-established; idle ones are closed and reopened', async (t) => {
  const r = await withResponder(t);
  const d = driverFor(t, r, { cipherSuite: 17 });
  t.equal(await d.powerStatus(), 'off');
  r.dropSessions();
  r.power = true;
  t.equal(await d.powerStatus(), 'on', 'answered in a new session after the BMC forgot the old one');
  t.equal(r.sessionsOpened, 2);
  t.equal(d.stats().sessionsReopened, 1);

  const r2 = await withResponder(t);
  const idle = driverFor(t, r2, { cipherSuite: 3 }, { ...FAST, sessionIdleMs: 200 });
  await idle.powerStatus();
  await sleep(300);
  await idle.powerStatus();
  t.equal(r2.sessionsClosed, 1, 'the idle session was closed first (its BMC slot freed)');
  t.equal(r2.sessionsOpened, 2, 'and a new one opened');
  t.equal(idle.stats().retransmits, 0, 'without waiting for a silent request');
});

t.test('abort and close', async (t) => {
  const r = await withResponder(t, { mischief: (o) => (o.kind === 'response' && o.cmd === 0x01 && o.netFn === 0x00 ? [] : undefined) });
  const d = driverFor(t, r, {}, { timeoutMs: 1000, retries: 4, deadlineMs: 5000 });
  await d.info();
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 100);
  const started = performance.now();
  t.match(await failure(d.powerStatus(ac.signal)), { code: 'BMC_TIMEOUT', details: { reason: 'aborted' } }, 'an aborted call: BMC_TIMEOUT, reason aborted');
  t.ok(performance.now() - started < 500, 'at once');
  const pending = failure(d.powerStatus());
  await sleep(50);
  await d.close();
  t.match(await pending, { code: 'BMC_TIMEOUT', details: { reason: 'closed' } }, 'a call in flight when close() runs: BMC_TIMEOUT, reason closed');
  t.equal(r.sessionsClosed, 1, 'and the session was closed at the BMC');
});
