// The agent's in-band BMC (src/agent/bmc.ts, bmc-commands.ts) against a fake BMC (test/helpers/fake-bmc.ts):
// the LAN channel and its address, the metalbox user made in a free slot or taken over, the password forms,
// completion codes and silences as AGENT_BMC_* errors; opening /dev/ipmi0 (module loading, the device node
// made from sysfs); and the commission run reporting the user in done, never printing its password.
import t, { type Test } from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BMC_PASSWORD_LENGTH, BMC_USERNAME, createBmcUser, generatePassword, InbandBmc, openInbandBmc } from '../../src/agent/bmc.ts';
import { decodeChannelInfo, decodeLanAddress, decodeUserAccess, decodeUserName, encodeSetUserPassword } from '../../src/agent/bmc-commands.ts';
import { isAgentError } from '../../src/agent/errors.ts';
import { runAgent } from '../../src/agent/index.ts';
import type { Run } from '../../src/agent/run.ts';
import { FakeBmc, pad } from '../helpers/fake-bmc.ts';
import { startFakeAppliance } from '../helpers/fake-appliance.ts';

/** Runs `fn`, expecting an AgentError with `code`; returns its message. */
async function failsWith(t: Test, fn: () => Promise<unknown>, code: string): Promise<string> {
  try {
    await fn();
  } catch (err) {
    t.ok(isAgentError(err), `an AgentError (${String(err)})`);
    t.equal((err as { code?: string }).code, code);
    return (err as Error).message;
  }
  t.fail(`expected ${code}, got success`);
  return '';
}

t.test('a fresh BMC: the first free slot becomes metalbox, ADMINISTRATOR on the LAN channel, enabled last', async (t) => {
  const bmc = new FakeBmc();
  const user = await createBmcUser(bmc);
  t.match(user, { channel: 1, address: '10.93.0.10', source: 'static', username: 'metalbox', userId: 3, reused: false });
  t.equal(user.password.length, BMC_PASSWORD_LENGTH);
  const u = bmc.users.get(3)!;
  t.equal(u.name, 'metalbox');
  t.ok(u.password.equals(pad(user.password, 20)), 'the password the BMC keeps is the one reported');
  t.ok(u.enabled, 'enabled');
  t.same(u.access.get(1), { privilege: 4, messaging: true }, 'ADMINISTRATOR with IPMI messaging on channel 1');
  t.same(bmc.users.get(2)!.name, 'admin', 'the other user is left alone');
  t.same(bmc.names(), [
    'Get Channel Info', 'Get LAN Configuration Parameters', 'Get LAN Configuration Parameters',
    'Get User Access', ...Array(9).fill('Get User Name'),
    'Set User Name', 'Set User Password', 'Set User Access', 'Set User Password', 'Get User Access',
  ], 'every slot is looked at (a metalbox user may sit above a free one); enable comes after name, password, access');
  const setPw = bmc.sent.find((s) => s.cmd === 0x47 && (s.data[1]! & 3) === 2)!;
  t.equal(setPw.data[0]! & 0x80, 0x80, 'the 20-byte password form');
  t.equal(setPw.data.length, 22);
  t.same([...bmc.sent.find((s) => s.cmd === 0x43)!.data], [0x91, 3, 4], 'Set User Access: change bits, IPMI messaging, channel 1; user 3; ADMINISTRATOR');
  t.same([...bmc.sent.at(-2)!.data], [3, 1], 'enable user: no password bytes');
});

t.test('a metalbox user already there is taken over: no Set User Name, a new password', async (t) => {
  const bmc = new FakeBmc();
  bmc.users.set(6, { name: BMC_USERNAME, password: pad('old-password', 20), enabled: false, access: new Map() });
  const user = await createBmcUser(bmc, { password: 'Fixed-pass-1234x' });
  t.match(user, { userId: 6, reused: true, password: 'Fixed-pass-1234x' });
  t.notOk(bmc.names().includes('Set User Name'));
  t.ok(bmc.users.get(6)!.password.equals(pad('Fixed-pass-1234x', 20)));
  t.ok(bmc.users.get(6)!.enabled);
  t.notOk(bmc.users.has(3), 'the free slot below is not used');
});

t.test('the LAN channel is found among 1-11; fixed names and slots the BMC refuses are skipped', async (t) => {
  const bmc = new FakeBmc();
  bmc.channels = new Map([[1, 0x05], [7, 0x04], [15, 0x0c]]); // serial on 1, LAN on 7
  bmc.users.clear();
  bmc.fixedNames = 3;
  bmc.failures.push({ command: 'Get User Name', cc: 0xcb, when: (d) => d[0] === 4 });
  const user = await createBmcUser(bmc);
  t.equal(user.channel, 7);
  t.equal(user.userId, 5, 'ids 1-3 have fixed names, 4 refused Get User Name');
  t.same(bmc.sent.filter((s) => s.cmd === 0x42).map((s) => s.data[0]), [1, 2, 3, 4, 5, 6, 7], 'stops at the first LAN channel');
  t.same(bmc.users.get(5)!.access.get(7), { privilege: 4, messaging: true });
});

t.test('refusals: no LAN channel, no address, no free slot', async (t) => {
  const none = new FakeBmc();
  none.channels = new Map([[2, 0x05]]);
  t.match(await failsWith(t, () => createBmcUser(none), 'AGENT_BMC_NO_LAN_CHANNEL'), /no 802\.3 LAN channel among 1-11 \(channels 2: medium 0x05\)/);
  t.equal(none.sent.filter((s) => s.cmd === 0x42).length, 11, 'channels 1 to 11 asked');

  const unaddressed = new FakeBmc();
  unaddressed.address = [0, 0, 0, 0];
  unaddressed.addressSource = 2;
  t.match(await failsWith(t, () => createBmcUser(unaddressed), 'AGENT_BMC_NO_ADDRESS'), /channel 1 has no IP address \(source: dhcp, no lease yet\?\)/);
  t.notOk(unaddressed.names().some((n) => n.startsWith('Set')), 'nothing changed on the BMC');

  const full = new FakeBmc();
  full.maxUsers = 4;
  for (const id of [3, 4]) full.users.set(id, { name: `user${id}`, password: pad('', 20), enabled: true, access: new Map() });
  t.match(await failsWith(t, () => createBmcUser(full), 'AGENT_BMC_NO_FREE_USER'), /all 4 user slots of the BMC are taken and none is named metalbox/);
  t.notOk(full.names().some((n) => n.startsWith('Set')));
});

t.test('completion codes: AGENT_BMC_COMMAND_FAILED naming the command and the code; 0xC3 is a timeout', async (t) => {
  const denied = new FakeBmc();
  denied.failures.push({ command: 'Set User Access', cc: 0xd4 });
  t.match(await failsWith(t, () => createBmcUser(denied), 'AGENT_BMC_COMMAND_FAILED'), /^Set User Access \(user 3, channel 1\): completion code 0xd4 \(insufficient privilege level\)$/);
  t.notOk(denied.users.get(3)!.enabled, 'the half-made user is not enabled');

  const busy = new FakeBmc();
  busy.failures.push({ command: 'Set User Name', cc: 0xc3 });
  t.match(await failsWith(t, () => createBmcUser(busy), 'AGENT_BMC_TIMEOUT'), /Set User Name \(user 3\): completion code 0xc3 \(timeout while processing command\)/);

  const lanRefused = new FakeBmc();
  lanRefused.failures.push({ command: 'Get LAN Configuration Parameters', cc: 0x80 });
  t.match(await failsWith(t, () => createBmcUser(lanRefused), 'AGENT_BMC_COMMAND_FAILED'), /Get LAN Configuration Parameters \(IP address\): completion code 0x80 \(command-specific 0x80\)/);

  // A BMC that says yes and keeps nothing is caught by the read-back, not by the appliance's first login.
  const forgetful = new FakeBmc();
  forgetful.ignoreAccess = true;
  t.match(await failsWith(t, () => createBmcUser(forgetful), 'AGENT_BMC_COMMAND_FAILED'), /the BMC answered success, but user 3 on channel 1 has privilege 15 and IPMI messaging off/);
});

t.test('an IPMI v1.5 BMC refuses the 20-byte password form: the 16-byte form is used', async (t) => {
  const old = new FakeBmc();
  old.only16 = true;
  const logs: string[] = [];
  const user = await createBmcUser(old, { log: (l) => logs.push(l) });
  const pws = old.sent.filter((s) => s.cmd === 0x47 && (s.data[1]! & 3) === 2);
  t.same(pws.map((s) => s.data.length), [22, 18], 'tried 20 bytes, then 16');
  t.ok(old.users.get(3)!.password.equals(pad(user.password, 20)));
  t.match(logs.join('\n'), /the 20-byte form was refused \(request data length invalid\); using the 16-byte form/);
  const other = new FakeBmc();
  other.failures.push({ command: 'Set User Password', cc: 0xd5 });
  await failsWith(t, () => createBmcUser(other), 'AGENT_BMC_COMMAND_FAILED');
  t.equal(other.sent.filter((s) => s.cmd === 0x47).length, 1, 'another refusal is not retried');
});

t.test('timeouts: the device\'s ETIMEDOUT, and a transport that never answers, are AGENT_BMC_TIMEOUT', async (t) => {
  const slow = new FakeBmc();
  slow.timeOut = 'Set User Password';
  t.match(await failsWith(t, () => createBmcUser(slow, { timeoutMs: 3000 }), 'AGENT_BMC_TIMEOUT'), /^Set User Password \(user 3, set password\): the BMC did not answer within 3 s$/);

  const silent = new FakeBmc();
  silent.hang = 'Get Channel Info';
  const t0 = performance.now();
  await failsWith(t, () => createBmcUser(silent, { timeoutMs: 100 }), 'AGENT_BMC_TIMEOUT');
  const ms = performance.now() - t0;
  t.ok(ms >= 2000 && ms < 6000, `bounded by the guard (timeout + 2 s): ${Math.round(ms)} ms`);

  const broken: ConstructorParameters<typeof InbandBmc>[0] = {
    request: () => Promise.reject(Object.assign(new Error('ENXIO: no such device or address, ioctl(IPMICTL_SEND_COMMAND)'), { code: 'ENXIO' })),
    close: async () => undefined,
  };
  t.match(await failsWith(t, () => new InbandBmc(broken).lan(), 'AGENT_BMC_UNAVAILABLE'), /Get Channel Info \(channel 1\): ENXIO/);
});

t.test('codecs refuse short responses before reading them', async (t) => {
  for (const [what, fn] of [
    ['channel info', () => decodeChannelInfo(Buffer.from([1, 4]))],
    ['lan address', () => decodeLanAddress(Buffer.from([0x11, 10, 0, 0]))],
    ['user access', () => decodeUserAccess(Buffer.from([10, 1, 0]))],
    ['user name', () => decodeUserName(Buffer.alloc(15))],
  ] as const) {
    t.throws(fn, { code: 'AGENT_BMC_COMMAND_FAILED', message: /expected at least/ }, what);
  }
  t.equal(decodeUserName(pad('metalbox', 16)), 'metalbox');
  t.equal(decodeUserName(Buffer.alloc(16)), undefined, 'an empty slot');
  t.equal(decodeUserName(Buffer.from('sixteen-chars-xx')), 'sixteen-chars-xx', 'a full 16 bytes without NUL');
  t.throws(() => encodeSetUserPassword(3, 2, { text: 'x'.repeat(17), bytes: 16 }), TypeError);
  // A BMC answering a malformed response mid-sequence: the agent stops with the code, not a crash.
  const odd = new FakeBmc();
  odd.request = async (netfn, cmd, data, ms) => (cmd === 0x44 ? { completionCode: 0, data: Buffer.from([63]) } : FakeBmc.prototype.request.call(odd, netfn, cmd, data, ms));
  t.match(await failsWith(t, () => createBmcUser(odd), 'AGENT_BMC_COMMAND_FAILED'), /Get User Access: the BMC answered 1 data bytes, expected at least 4/);
});

t.test('passwords: 16 printable characters of every class by default, random, 4-20 allowed', async (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const pw = generatePassword();
    t.equal(pw.length, 16);
    t.match(pw, /^[\x21-\x7e]+$/);
    t.match(pw, /[a-z]/);
    t.match(pw, /[A-Z]/);
    t.match(pw, /[0-9]/);
    t.match(pw, /[-_.+=]/);
    t.notMatch(pw, /[lIO01]/, 'no look-alikes');
    seen.add(pw);
  }
  t.equal(seen.size, 200, 'no repeats');
  t.equal(generatePassword(20).length, 20);
  t.throws(() => generatePassword(21), RangeError);
  t.throws(() => generatePassword(3), RangeError);
  // The classes are placed by the shuffle, not always first: with a fixed picker the result is still whole.
  t.equal(generatePassword(8, () => 0).length, 8);
});

t.test('opening the in-band BMC: modules, the device node from sysfs, none, and a node that cannot be opened', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-bmc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const roots = { sys: path.join(dir, 'sys'), proc: path.join(dir, 'proc'), dev: path.join(dir, 'dev') };
  mkdirSync(roots.dev, { recursive: true });
  const calls: string[] = [];
  const run: Run = async (cmd, args) => {
    calls.push(`${cmd} ${args.join(' ')}`);
    if (cmd === 'mknod') writeFileSync(args[2]!, '');
    return { code: 0, stdout: '', stderr: '' };
  };
  const opened: string[] = [];
  const open = (p: string) => { opened.push(p); return new FakeBmc(); };
  const log = () => undefined;

  t.equal(await openInbandBmc({ roots, run, loadModules: true, open, log }), undefined, 'no BMC: undefined');
  t.same(calls, ['modprobe ipmi_si', 'modprobe ipmi_devintf'], 'its drivers are loaded first');

  // ipmi_devintf registered ipmi0 but nothing made the node (no devtmpfs, no udev).
  mkdirSync(path.join(roots.sys, 'class', 'ipmi', 'ipmi0'), { recursive: true });
  writeFileSync(path.join(roots.sys, 'class', 'ipmi', 'ipmi0', 'dev'), '239:0\n');
  calls.length = 0;
  t.ok(await openInbandBmc({ roots, run, loadModules: false, open, log }));
  t.same(calls, [`mknod -m 0600 ${path.join(roots.dev, 'ipmi0')} c 239 0`]);
  t.same(opened, [path.join(roots.dev, 'ipmi0')]);

  // The node exists now: opened as is.
  calls.length = 0;
  t.ok(await openInbandBmc({ roots, run, loadModules: false, open, log }));
  t.same(calls, []);

  const refusing = () => { throw Object.assign(new Error('EACCES: permission denied, open'), { code: 'EACCES' }); };
  t.match(await failsWith(t, () => openInbandBmc({ roots, run, loadModules: false, open: refusing, log }), 'AGENT_BMC_UNAVAILABLE'), /cannot open .*ipmi0: EACCES/);

  // The firmware declares a BMC (SMBIOS type 38) that the kernel has not registered yet: waited for, then none.
  rmSync(path.join(roots.sys, 'class'), { recursive: true });
  rmSync(path.join(roots.dev, 'ipmi0'));
  mkdirSync(path.join(roots.sys, 'firmware', 'dmi', 'entries', '38-0'), { recursive: true });
  const t0 = performance.now();
  t.equal(await openInbandBmc({ roots, run, loadModules: false, open, log, waitMs: 600 }), undefined);
  t.ok(performance.now() - t0 >= 550, 'it waited for ipmi0');
});

t.test('commission with bmcUser.create: the user made before the inventory, reported in done; the password never printed', async (t) => {
  const fa = await startFakeAppliance();
  t.teardown(() => fa.close());
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-bmc-run-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'env'), `METALBOX_URL='${fa.url}'\nMETALBOX_TOKEN='${fa.token}'\nMETALBOX_MODE='commission'\n`);
  const si = { systemInfo: async () => ({ cpu: async () => ({ manufacturer: 'X', brand: 'Y', cores: 1, physicalCores: 1, processors: 1 }), mem: async () => ({ total: 1 }) }) };
  const agent = async (bmc: FakeBmc | undefined) => {
    let out = '';
    const powered: string[] = [];
    const code = await runAgent(['--env-file', path.join(dir, 'env')], {}, { out: (s) => { out += s; }, err: (s) => { out += s; } }, {
      ...si, power: async (a) => { powered.push(a); }, retryDelayMs: () => 20, openBmc: async () => bmc,
    });
    return { code, out, powered };
  };

  fa.task = { mode: 'commission', bmcUser: { create: true } };
  const bmc = new FakeBmc();
  const r = await agent(bmc);
  t.equal(r.code, 0, r.out);
  t.same(r.powered, ['poweroff']);
  const done = fa.done[0] as { mode: string; ok: boolean; bmc?: { address: string; username: string; password: string } };
  t.match(done, { mode: 'commission', ok: true, bmc: { address: '10.93.0.10', username: 'metalbox', password: String } });
  t.ok(bmc.users.get(3)!.password.equals(pad(done.bmc!.password, 20)), 'done carries the password the BMC has');
  t.match(fa.inventories[0], { bmc: { present: true, address: '10.93.0.10' } });
  t.match(fa.progress, [{ phase: 'bmc', message: /BMC user "metalbox" \(id 3\) with ADMINISTRATOR on LAN channel 1, BMC at 10\.93\.0\.10/ }]);
  t.ok(bmc.closed, 'the device is closed');
  t.notOk(r.out.includes(done.bmc!.password), 'the password is not printed');
  t.notOk(JSON.stringify(fa.progress).includes(done.bmc!.password), 'nor in progress');
  // Progress goes out on its own timer; done waits for it.
  t.same(fa.requests.map((q) => q.path).sort(), ['/boot/agent/v1/done', '/boot/agent/v1/inventory', '/boot/agent/v1/progress', '/boot/agent/v1/task']);
  t.equal(fa.requests.at(-1)!.path, '/boot/agent/v1/done');

  // The BMC refuses: commissioning fails with its code, before any inventory is reported.
  fa.requests.length = 0; fa.done.length = 0; fa.inventories.length = 0;
  const refusing = new FakeBmc();
  refusing.failures.push({ command: 'Set User Password', cc: 0xcc });
  const failed = await agent(refusing);
  t.equal(failed.code, 1);
  t.same(failed.powered, [], 'no power action after a failure');
  t.match(failed.out, /METALBOX-AGENT-DONE mode=commission ok=false code=AGENT_BMC_COMMAND_FAILED/);
  t.match(fa.done, [{ mode: 'commission', ok: false, error: { code: 'AGENT_BMC_COMMAND_FAILED', message: /Set User Password/ } }]);
  t.same(fa.inventories, []);
  t.ok(refusing.closed);

  // Not asked for a user: the address still goes into the inventory; a BMC failure is only logged.
  fa.requests.length = 0; fa.done.length = 0; fa.inventories.length = 0;
  fa.task = { mode: 'commission' };
  const plain = new FakeBmc();
  t.equal((await agent(plain)).code, 0);
  t.match(fa.inventories[0], { bmc: { present: true, address: '10.93.0.10' } });
  t.same(fa.done, [{ mode: 'commission', ok: true }]);
  t.notOk(plain.names().some((n) => n.startsWith('Set')), 'nothing set on the BMC');
  fa.inventories.length = 0; fa.done.length = 0;
  const mute = new FakeBmc();
  mute.channels = new Map();
  const quiet = await agent(mute);
  t.equal(quiet.code, 0);
  t.match(quiet.out, /in-band BMC: address unknown: the BMC has no 802\.3 LAN channel/);
  t.same((fa.inventories[0] as { bmc: unknown }).bmc, { present: true });
});
