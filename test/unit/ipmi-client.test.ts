// The IPMI client's pure parts: the inbound replay window (§6.12.13-§6.12.14) and the checks on what the
// driver is given (BMC_INVALID without echoing a secret). The client on the wire is in
// test/integration/bmc-ipmi.test.ts.
import t from 'tap';
import { createIpmiDriver, IpmiClient, ReplayWindow } from '../../src/bmc/ipmi/index.ts';

t.test('replay window: each number once; above the highest, or within the 32 below it', async (t) => {
  const w = new ReplayWindow();
  t.ok(w.accept(1), 'the first one');
  t.notOk(w.accept(1), 'a duplicate');
  t.ok(w.accept(2));
  t.ok(w.accept(5), 'a gap (lost packets) is fine');
  t.ok(w.accept(4), 'late but inside the window');
  t.notOk(w.accept(4), 'but only once');
  t.ok(w.accept(3));
  t.notOk(w.accept(2));
  t.ok(w.accept(40));
  t.ok(w.accept(9), '31 below the highest: inside');
  t.notOk(w.accept(8), '32 below: outside');
  t.notOk(w.accept(5), 'far behind');
  t.ok(w.accept(1000), 'a jump beyond the window');
  t.notOk(w.accept(40), 'forgets what fell out of the window');
  t.ok(w.accept(999));
  t.ok(w.accept(0xffffffff), '32-bit numbers');
  t.notOk(w.accept(0xffffffff));

  // Against a set-based model over random arrivals.
  let state = 11;
  const next = (): number => (state = (state * 1103515245 + 12345) >>> 0);
  const model = new ReplayWindow();
  const seen = new Set<number>();
  let highest = -1;
  let disagreements = 0;
  for (let i = 0; i < 20_000; i++) {
    const base = Math.max(0, highest);
    const n = Math.max(0, base + (next() % 48) - 36);
    const expected = !seen.has(n) && (highest < 0 || n > highest || highest - n < 32);
    if (model.accept(n) !== expected) disagreements++;
    if (expected) {
      seen.add(n);
      highest = Math.max(highest, n);
    }
  }
  t.equal(disagreements, 0, 'agrees with a set-based model on 20,000 random arrivals');
});

t.test('options: BMC_INVALID for unusable ones, never echoing a secret', async (t) => {
  const base = { driver: 'ipmi', address: '10.0.0.1', username: 'admin', password: 'Sekrit-Pa55' };
  const cases: [string, Record<string, unknown>, string][] = [
    ['another driver', { ...base, driver: 'redfish' }, 'BMC_INVALID'],
    ['no address', { ...base, address: '' }, 'BMC_INVALID'],
    ['port 0', { ...base, port: 0 }, 'BMC_INVALID'],
    ['port 70000', { ...base, port: 70000 }, 'BMC_INVALID'],
    ['cipher suite 1', { ...base, cipherSuite: 1 }, 'BMC_INVALID'],
    ['user name of 17 bytes', { ...base, username: 'u'.repeat(17) }, 'BMC_INVALID'],
    ['password of 21 bytes', { ...base, password: 'Sekrit-Pa55-Sekrit-Pa' }, 'BMC_INVALID'],
    ['Kg not hex', { ...base, kg: 'Sekrit-Kg' }, 'BMC_INVALID'],
    ['Kg of 21 bytes', { ...base, kg: 'ab'.repeat(21) }, 'BMC_INVALID'],
    ['an IPv6 address', { ...base, address: 'fe80::1' }, 'BMC_UNSUPPORTED'],
  ];
  for (const [name, endpoint, code] of cases) {
    try {
      createIpmiDriver(endpoint as never);
      t.fail(`${name}: accepted`);
    } catch (err) {
      const e = err as { code?: string; message: string; details?: unknown };
      t.equal(e.code, code, `${name}: ${code}`);
      const text = `${e.message} ${JSON.stringify(e.details)}`;
      t.notOk(/Sekrit/.test(text), `${name}: no secret in the error`);
    }
  }
  t.throws(() => new IpmiClient({ address: '10.0.0.1', timeoutMs: 0 }), RangeError, 'a caller bug: RangeError');
  t.throws(() => new IpmiClient({ address: '10.0.0.1', privilege: 5 }), { code: 'BMC_INVALID' }, 'OEM privilege');
  const d = createIpmiDriver({ driver: 'ipmi', address: '10.0.0.1', username: 'admin', password: 'Sekrit-Pa55', cipherSuite: 17, kg: 'AABB' });
  t.equal(d.kind, 'ipmi', 'nothing is sent until the first call');
  t.same(d.stats(), { sent: 0, retransmits: 0, received: 0, ignored: 0, replays: 0, malformed: 0, sessionsOpened: 0, sessionsReopened: 0 });
  await d.close();
  t.pass('closing a driver that never spoke is fine');
  await t.rejects(d.identify(-1), RangeError, 'identify seconds below 0: caller bug');
  await t.rejects(d.power('sideways' as never), TypeError, 'unknown power action: caller bug');
});
