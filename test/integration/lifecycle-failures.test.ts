// How each phase (Commissioning, Deploying, Releasing) fails, through the real app: buildApp with the machines
// API, HTTP boot and the agent API, the real MachineRegistry (and its sweeper), LifecycleRunner and BmcService,
// whose IPMI driver talks to ipmi_sim BMCs in a namespace (test/helpers/ipmi-sim.ts; the driver runs in the
// client namespace, test/helpers/ns-ipmi-driver.ts). A machine's boots are its iPXE script requests (which
// issue the per-boot token); its agent's reports are POST /boot/agent/v1/done.
//
//   (a) the agent reports an error             -> the failed state, the agent's code and message as the reason
//   (b) the phase outlives its timeout (config) -> the failed state, "timed out", from the sweeper
//   (c) the BMC refuses (a wrong password; a BMC whose chassis control fails)
//                                              -> the failed state, the BMC's error code in the reason
//
// Each is read back through GET /api/v1/machines/:id and the machine's events (GET .../events, .../timeline),
// and checked on the BMC (what ipmi_sim's chassis was told).
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/api/app.ts';
import type { MachinePowerControl } from '../../src/api/routes/machines.ts';
import { builtinDrivers } from '../../src/bmc/drivers.ts';
import { parseConfig } from '../../src/config/load.ts';
import { phaseTimeoutsMs } from '../../src/config/schema.ts';
import { createAuthCore } from '../../src/core/auth.ts';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { auditAs } from '../../src/core/users.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { BmcService, secretBoxLoader } from '../../src/services/bmc/service.ts';
import { LifecycleRunner } from '../../src/services/lifecycle-runner.ts';
import { AssetStore, IpxeBinaries, parseSource } from '../../src/store/assets.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord } from '../../src/store/types.ts';
import { canBuildLab } from '../helpers/netns.ts';
import { haveIpmiTools, SIM_USERS, startDriverChild, startIpmiSims, type DriverChild, type IpmiSimLab, type SimBmc } from '../helpers/ipmi-sim.ts';
import { namespacedIpmi } from '../helpers/ns-ipmi-driver.ts';

/** Configured phase timeouts (s): the config's minimum and two others, so that each phase's own is checked. */
const TIMEOUTS = { commissionTimeoutSeconds: 60, deployTimeoutSeconds: 120, releaseTimeoutSeconds: 90 };
const DEPLOY_IMAGE = 'disk-img';
const WRONG_PASSWORD = 'mbx-wrong-pw';

/** A chassis_control that answers "get" and refuses every "set" (ipmi_sim then answers with an error completion code). */
const REFUSING_CHASSIS = `#!/bin/sh
case "$2" in
get) shift 2; for p in "$@"; do case $p in power) echo "power:0";; boot) echo "boot:default";; esac; done; exit 0;;
*) echo "refused" >&2; exit 1;;
esac
`;

interface Machine { id: string; state: string; stateReason?: string; phaseDeadline?: string; stateChangedAt?: string }

interface Fixture {
  app: FastifyInstance;
  bmc: BmcService;
  registry: MachineRegistry;
  runner: LifecycleRunner;
  /** Added to the registry's and the runner's clock (the sweeper's "now"). */
  clock: { offset: number };
  /** A machine (POST /api/v1/machines), with its BMC when given. */
  create(mac: string, bmc?: { address: string; password: string }): Promise<string>;
  /** POST .../actions/ACTION as an operator; 200 expected. Waits for the effects. */
  act(id: string, action: string, body?: Record<string, unknown>): Promise<void>;
  /** The machine netboots: its iPXE script; returns the per-boot token and the mode on its kernel command line. */
  boot(mac: string): Promise<{ token: string; mode: string }>;
  /** Its agent reports: POST /boot/agent/v1/done; 204 expected. Waits for the effects. */
  done(token: string, body: Record<string, unknown>): Promise<void>;
  /** The deploy task (GET /boot/agent/v1/task), as the agent reads it before writing: the phone-home URL. */
  deployTask(token: string): Promise<{ phoneHomeUrl: string }>;
  /** Deploy done as the installed system reports it: the phone-home URL, its credentials as Basic authorization. */
  phoneHome(phoneHomeUrl: string): Promise<void>;
  machine(id: string): Promise<Machine>;
  /** GET /api/v1/machines/:id/events, oldest first. */
  events(id: string): Promise<EventRecord[]>;
  /** GET /api/v1/machines/:id/timeline, oldest first. */
  timeline(id: string): Promise<EventRecord[]>;
  /** Machine with its BMC (sim) through commission, commission-done, deploy, phone-home: Deployed. */
  deployed(mac: string, bmc?: { address: string; password: string }): Promise<string>;
}

async function fixture(t: Test, child: DriverChild): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-lifecycle-failures-'));
  const config = parseConfig(`lifecycle: ${JSON.stringify(TIMEOUTS)}\nbmc: { pollSeconds: 0, timeoutSeconds: 5 }\n`, { source: 'test', defaultStateDir: dir });
  const store = createMemoryStore();
  const events = new EventLog(store);
  const logs: string[] = [];
  const logger = createLogger('info', new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } }));
  const auth = createAuthCore({ store, events }, { hasher: { params: { ln: 10, r: 8, p: 1 } } });
  await auth.users.create({ username: 'op', role: 'operator', password: 'correct horse battery' }, auditAs('test'));
  const { token: apiToken } = await auth.tokens.create((await auth.users.find('op'))!, { name: 'test' }, auditAs('test'));
  const headers = { authorization: `Bearer ${apiToken}` };

  const clock = { offset: 0 };
  const now = () => Date.now() + clock.offset;
  const signal = new AbortController().signal;
  const bmc = new BmcService({
    store, events, config, logger, metrics: createMetrics({ processMetrics: false }),
    secrets: secretBoxLoader(store, dir), drivers: { ...builtinDrivers(), ipmi: namespacedIpmi(child) },
  });
  await bmc.start(signal);
  // As main wires it: the timeouts from the config's lifecycle section.
  const registry = await MachineRegistry.open({ store, events, logger, now, timeouts: phaseTimeoutsMs(config.lifecycle), sweepMs: 50 });
  await registry.start(signal);
  const runner = new LifecycleRunner({ registry, events, logger, power: bmc, now });
  await runner.start(signal);

  const assets = new AssetStore(join(dir, 'assets'), store);
  await assets.open();
  for (const f of ['vmlinuz', 'initrd', 'disk.img']) writeFileSync(join(dir, f), `${f} bytes`);
  const files = { kernel: parseSource(join(dir, 'vmlinuz')), initrd: parseSource(join(dir, 'initrd')) };
  await assets.add({ name: 'eph', files }, { maxBytes: 1e6 });
  await assets.add({ name: DEPLOY_IMAGE, files: { ...files, rootfs: parseSource(join(dir, 'disk.img')) } }, { maxBytes: 1e6 });

  const power: MachinePowerControl = {
    powerAction: async (id, action, actor) => bmc.power(id, action, actor),
    powerStatus: async (id, actor) => ({ state: (await bmc.powerStatus(id, actor)).state }),
    setBootDevice: async (id, request, actor) => bmc.setBootDevice(id, request, actor),
    enroll: async (id, input, actor) => ({ bmc: (await bmc.add({ ...input, machineId: id }, actor)).bmc.id }),
    unenroll: async (id, actor) => { await bmc.remove(id, actor); },
  };
  const app = await buildApp({
    logger, metrics: createMetrics({ processMetrics: false }), version: 'test', instanceId: () => 'test',
    readiness: () => ({ phase: 'running', services: {} }),
    auth,
    boot: { store, events, assets, ipxe: new IpxeBinaries(join(dir, 'ipxe')), logger, ephemeralImage: 'eph', tokenTtlMs: 3600_000, agent: { registry } },
    machines: { registry, store, logger, bmc: power },
  });
  t.teardown(async () => {
    await app.close();
    await runner.stop();
    await registry.stop();
    await bmc.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  t.teardown(() => { if (t.passing()) return; t.comment(logs.join('')); });

  const settle = async () => { await runner.idle(); };
  const f: Fixture = {
    app, bmc, registry, runner, clock,
    async create(mac, b) {
      const res = await app.inject({
        method: 'POST', url: '/api/v1/machines', headers,
        payload: { mac, ...(b ? { bmc: { driver: 'ipmi', address: b.address, username: SIM_USERS.admin.name, password: b.password } } : {}) },
      });
      if (res.statusCode !== 201) throw new Error(`create ${mac}: ${res.statusCode} ${res.body}`);
      await settle();
      return (res.json() as { id: string }).id;
    },
    async act(id, action, body = {}) {
      const res = await app.inject({ method: 'POST', url: `/api/v1/machines/${id}/actions/${action}`, headers, payload: body });
      if (res.statusCode !== 200) throw new Error(`${action} ${id}: ${res.statusCode} ${res.body}`);
      await settle();
    },
    async boot(mac) {
      const res = await app.inject({ url: `/boot/ipxe?mac=${mac}` });
      const token = /metalbox\.token=(\S+)/.exec(res.body)?.[1];
      const mode = /metalbox\.mode=(\S+)/.exec(res.body)?.[1];
      if (res.statusCode !== 200 || token === undefined || mode === undefined) throw new Error(`boot ${mac}: ${res.statusCode} ${res.body}`);
      return { token, mode };
    },
    async done(token, body) {
      const res = await app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: { authorization: `Bearer ${token}` }, payload: body });
      if (res.statusCode !== 204) throw new Error(`done: ${res.statusCode} ${res.body}`);
      await settle();
    },
    async deployTask(token) {
      const task = await app.inject({ url: '/boot/agent/v1/task', headers: { authorization: `Bearer ${token}` } });
      const deploy = (task.json() as { deploy?: { phoneHomeUrl: string } }).deploy;
      if (task.statusCode !== 200 || !deploy) throw new Error(`task: ${task.statusCode} ${task.body}`);
      return deploy;
    },
    async phoneHome(phoneHomeUrl) {
      const url = new URL(phoneHomeUrl);
      const basic = Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64');
      const res = await app.inject({ method: 'POST', url: url.pathname, headers: { authorization: `Basic ${basic}` }, payload: { instance_id: 'i-1', hostname: 'x' } });
      if (res.statusCode !== 200) throw new Error(`phone-home: ${res.statusCode} ${res.body}`);
      await settle();
    },
    async machine(id) {
      const res = await app.inject({ url: `/api/v1/machines/${id}`, headers });
      return res.json() as Machine;
    },
    async events(id) {
      const res = await app.inject({ url: `/api/v1/machines/${id}/events?limit=1000`, headers });
      if (res.statusCode !== 200) throw new Error(`events: ${res.statusCode} ${res.body}`);
      return (res.json() as { items: EventRecord[] }).items.reverse();
    },
    async timeline(id) {
      const res = await app.inject({ url: `/api/v1/machines/${id}/timeline?limit=1000`, headers });
      if (res.statusCode !== 200) throw new Error(`timeline: ${res.statusCode} ${res.body}`);
      return (res.json() as { items: EventRecord[] }).items;
    },
    async deployed(mac, b) {
      const id = await f.create(mac, b);
      await f.act(id, 'commission');
      await f.done((await f.boot(mac)).token, { mode: 'commission', ok: true });
      await f.act(id, 'deploy', { image: DEPLOY_IMAGE });
      const { token } = await f.boot(mac);
      const task = await f.deployTask(token);
      await f.done(token, { mode: 'deploy', ok: true });
      await f.phoneHome(task.phoneHomeUrl);
      return id;
    },
  };
  return f;
}

/**
 * Waits until the simulated chassis is on. QUIRK(ipmi_sim): a power cycle of a chassis that is on turns it off
 * and back on a second later, so a phase that starts on a running machine (release after deploy) leaves it off
 * for that second; a power off sent within it would find the machine off already.
 */
async function poweredOn(bmc: SimBmc): Promise<boolean> {
  for (let i = 0; i < 100 && bmc.state().power !== 1; i++) await sleep(50);
  return bmc.state().power === 1;
}

/** What the machine's phase start and end did on the BMC, from `from` on. */
const chassisSince = (bmc: SimBmc, from: number): string[] => bmc.state().events.slice(from);

/** The data of the machine's events of one type, oldest first. */
const dataOf = (events: EventRecord[], type: string): Record<string, unknown>[] => events.filter((e) => e.type === type).map((e) => e.data ?? {});

const lab = canBuildLab();
const tools = haveIpmiTools();
if (!lab.ok || !tools.ok) {
  t.fail(`cannot build the IPMI lab: ${lab.ok ? '' : lab.why}${tools.ok ? '' : tools.why}`);
} else {
  t.test('each phase fails cleanly: agent error, timeout, BMC refusal', { timeout: 240_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mbx-lifecycle-sims-'));
    const refusing = join(dir, 'refusing-chassis.sh');
    writeFileSync(refusing, REFUSING_CHASSIS, { mode: 0o755 });
    // BMCs 0-2 record what they are told (the helper's own script, CHASSIS_SCRIPT in ipmi-sim.ts, which it
    // writes two levels above each chassis directory); BMC 3 refuses every chassis command.
    const sims: IpmiSimLab = await startIpmiSims({
      count: 4, tag: 'mbxlf', subnet: 96,
      chassisControl: (b) => (b.index === 3 ? `${refusing} ${b.chassisDir}` : `${join(b.chassisDir, '..', '..', 'chassis.sh')} ${b.chassisDir}`),
    });
    const child = startDriverChild(sims.clientNs);
    t.teardown(async () => {
      await child.stop();
      sims.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    const [b0, b1, b2, b3] = sims.bmcs as [SimBmc, SimBmc, SimBmc, SimBmc];
    const good = (b: SimBmc) => ({ address: b.address, password: SIM_USERS.admin.password });
    const wrong = (b: SimBmc) => ({ address: b.address, password: WRONG_PASSWORD });

    await t.test('(a) the agent reports an error: the failed state with its code and message, powered off', async (t) => {
      const f = await fixture(t, child);
      const cases = [
        { phase: 'Commissioning', bmc: b0, mac: '52:54:00:a1:00:01', failed: 'FailedCommissioning', action: 'commission-failed', error: { code: 'AGENT_INVENTORY_FAILED', message: 'no /sys/class/dmi/id: not a PC?' } },
        { phase: 'Deploying', bmc: b1, mac: '52:54:00:a1:00:02', failed: 'FailedDeployment', action: 'deploy-failed', error: { code: 'AGENT_IMAGE_CHECKSUM_MISMATCH', message: 'sha256 of the image is 00ff.., not ab12..' } },
        { phase: 'Releasing', bmc: b2, mac: '52:54:00:a1:00:03', failed: 'FailedReleasing', action: 'release-failed', error: { code: 'AGENT_ERASE_FAILED', message: 'blkdiscard /dev/vda: I/O error' } },
      ];
      for (const c of cases) {
        await t.test(c.phase, async (t) => {
          let id: string;
          if (c.phase === 'Commissioning') {
            id = await f.create(c.mac, good(c.bmc));
            await f.act(id, 'commission');
          } else if (c.phase === 'Deploying') {
            id = await f.create(c.mac, good(c.bmc));
            await f.act(id, 'commission');
            await f.done((await f.boot(c.mac)).token, { mode: 'commission', ok: true });
            await f.act(id, 'deploy', { image: DEPLOY_IMAGE });
          } else {
            id = await f.deployed(c.mac, good(c.bmc));
            await f.act(id, 'release');
          }
          t.equal((await f.machine(id)).state, c.phase);
          t.ok(await poweredOn(c.bmc), 'the phase power cycled the machine into its boot');
          const before = c.bmc.state().events.length;
          const boot = await f.boot(c.mac);
          t.equal(boot.mode, c.phase === 'Commissioning' ? 'commission' : c.phase === 'Deploying' ? 'deploy' : 'release', 'the boot is for the phase');
          await f.done(boot.token, { mode: boot.mode, ok: false, error: c.error });

          const m = await f.machine(id);
          const reason = `${c.error.code}: ${c.error.message}`;
          t.equal(m.state, c.failed);
          t.equal(m.stateReason, reason, 'the reason: the agent\'s code and message');
          const events = await f.events(id);
          t.match(dataOf(events, 'machine.state').at(-1), { action: c.action, from: c.phase, to: c.failed, reason });
          t.equal(events.filter((e) => e.type === 'machine.state').at(-1)!.actor, 'agent');
          t.match(dataOf(events, 'boot.agent.done').at(-1), { mode: boot.mode, ok: false, error: c.error }, 'the report itself');
          t.match(dataOf(events, 'machine.state.effect').at(-1), { action: c.action, to: c.failed, effect: 'power off', result: 'done' });
          t.same(chassisSince(c.bmc, before), ['power 0'], 'the BMC powered it off');
          t.match(dataOf(await f.timeline(id), 'machine.state').at(-1), { action: c.action, reason }, 'on the boot timeline too');
        });
      }
    });

    await t.test('(b) a phase outlives its configured timeout: the sweeper moves it to the failed state', async (t) => {
      const f = await fixture(t, child);
      const c = await f.create('52:54:00:b1:00:01', good(b0));
      await f.act(c, 'commission');
      const d = await f.create('52:54:00:b1:00:02', good(b1));
      await f.act(d, 'commission');
      await f.done((await f.boot('52:54:00:b1:00:02')).token, { mode: 'commission', ok: true });
      await f.act(d, 'deploy', { image: DEPLOY_IMAGE });
      const r = await f.deployed('52:54:00:b1:00:03', good(b2));
      await f.act(r, 'release');
      for (const b of [b0, b1, b2]) t.ok(await poweredOn(b), `${b.name} on: its machine is booting for the phase`);
      const cases = [
        { id: c, bmc: b0, phase: 'Commissioning', failed: 'FailedCommissioning', seconds: TIMEOUTS.commissionTimeoutSeconds },
        { id: d, bmc: b1, phase: 'Deploying', failed: 'FailedDeployment', seconds: TIMEOUTS.deployTimeoutSeconds },
        { id: r, bmc: b2, phase: 'Releasing', failed: 'FailedReleasing', seconds: TIMEOUTS.releaseTimeoutSeconds },
      ];
      const marks = new Map<string, number>();
      for (const x of cases) {
        const m = await f.machine(x.id);
        t.equal(m.state, x.phase);
        t.equal(Date.parse(m.phaseDeadline!) - Date.parse(m.stateChangedAt!), x.seconds * 1000, `${x.phase}: the deadline is the configured ${x.seconds} s`);
        marks.set(x.id, x.bmc.state().events.length);
      }

      f.clock.offset = (TIMEOUTS.commissionTimeoutSeconds - 5) * 1000;
      await sleep(300); // several sweeps
      for (const x of cases) t.equal((await f.machine(x.id)).state, x.phase, `${x.phase}: still going 5 s before the shortest deadline`);

      f.clock.offset = (Math.max(...cases.map((x) => x.seconds)) + 1) * 1000;
      for (let i = 0; i < 200 && (await Promise.all(cases.map(async (x) => (await f.machine(x.id)).state === x.failed))).includes(false); i++) await sleep(50);
      await f.runner.idle();
      for (const x of cases) {
        await t.test(x.phase, async (t) => {
          const m = await f.machine(x.id);
          t.equal(m.state, x.failed);
          t.match(m.stateReason, new RegExp(`^${x.phase} timed out: no report by `));
          const events = await f.events(x.id);
          const last = events.filter((e) => e.type === 'machine.state').at(-1)!;
          t.match(last, { actor: 'lifecycle', data: { action: 'timeout', from: x.phase, to: x.failed, reason: /timed out/ } });
          t.match(dataOf(events, 'machine.state.effect').at(-1), { action: 'timeout', effect: 'power off', result: 'done' });
          t.same(chassisSince(x.bmc, marks.get(x.id)!), ['power 0'], 'the BMC powered it off');
        });
      }
    });

    await t.test('(c) the BMC refuses: the failed state with the BMC\'s error code', async (t) => {
      const f = await fixture(t, child);
      // Commissioning: registered with a wrong password.
      const marks = sims.bmcs.map((b) => b.state().events.length);
      const c = await f.create('52:54:00:c1:00:01', wrong(b0));
      // Deploying: commissioned without a BMC (its effects are skipped: an operator powers it), then given a
      // BMC whose chassis control refuses every command.
      const d = await f.create('52:54:00:c1:00:02');
      await f.act(d, 'commission');
      await f.done((await f.boot('52:54:00:c1:00:02')).token, { mode: 'commission', ok: true });
      await f.bmc.add({ driver: 'ipmi', address: b3.address, username: SIM_USERS.admin.name, password: SIM_USERS.admin.password, machineId: d }, 'test');
      // Releasing: deployed without a BMC, then given one with a wrong password.
      const r = await f.deployed('52:54:00:c1:00:03');
      await f.bmc.add({ driver: 'ipmi', address: b2.address, username: SIM_USERS.admin.name, password: WRONG_PASSWORD, machineId: r }, 'test');

      // The failed state's own power off goes to the same BMC: refused as well with a wrong password; with the
      // refusing chassis, status still reads (off), so there is nothing to do.
      const cases = [
        { id: c, action: 'commission', from: 'New', phase: 'Commissioning', failed: 'FailedCommissioning', failedAction: 'commission-failed', code: 'BMC_AUTH_FAILED', off: { result: 'failed', code: 'BMC_AUTH_FAILED' } },
        { id: d, action: 'deploy', from: 'Ready', phase: 'Deploying', failed: 'FailedDeployment', failedAction: 'deploy-failed', code: 'BMC_PROTOCOL', off: { result: 'noop' } },
        { id: r, action: 'release', from: 'Deployed', phase: 'Releasing', failed: 'FailedReleasing', failedAction: 'release-failed', code: 'BMC_AUTH_FAILED', off: { result: 'failed', code: 'BMC_AUTH_FAILED' } },
      ];
      for (const x of cases) {
        await t.test(`${x.phase}: ${x.code}`, async (t) => {
          await f.act(x.id, x.action, x.action === 'deploy' ? { image: DEPLOY_IMAGE } : {});
          const m = await f.machine(x.id);
          t.equal(m.state, x.failed);
          t.match(m.stateReason, new RegExp(`^bootdev pxe failed: ${x.code}: `), 'the reason names the effect and the BMC error code');
          const events = await f.events(x.id);
          const effects = dataOf(events, 'machine.state.effect');
          const refused = effects.find((e) => e.action === x.action && e.effect === 'bootdev pxe');
          t.match(refused, { from: x.from, to: x.phase, result: 'failed', code: x.code }, 'the effect event carries the code');
          t.notOk(effects.some((e) => e.action === x.action && e.effect === 'power cycle'), 'no power cycle after the boot device was refused');
          const last = events.filter((e) => e.type === 'machine.state').at(-1)!;
          t.match(last, { actor: 'lifecycle', data: { action: x.failedAction, from: x.phase, to: x.failed, reason: m.stateReason } });
          t.match(effects.at(-1), { action: x.failedAction, effect: 'power off', ...x.off }, 'the failed state\'s power off: recorded, no further state');
          t.match(dataOf(events, 'bmc.bootdev').at(-1), { result: 'failed', code: x.code }, 'the BMC service\'s own event');
        });
      }
      t.same(sims.bmcs.map((b, i) => chassisSince(b, marks[i]!)), [[], [], [], []], 'no BMC carried out anything');
      t.notMatch(JSON.stringify(await f.events(c)), WRONG_PASSWORD, 'the password is in no event');
    });
  });
}
