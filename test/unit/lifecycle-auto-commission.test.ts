// lifecycle.autoCommission through the app (buildApp with HTTP boot and the agent API, app.inject): an unknown
// machine netboots, gets the enlist script, its agent reports the inventory, and the lifecycle runner commissions
// the new machine at once; its next boot is a commissioning boot. Also for a machine registered by its BMC
// alone (powered on to enlist by the runner). Off (the default): the machine waits in New.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildApp } from '../../src/api/app.ts';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { AUTO_COMMISSION_REASON, LifecycleRunner, type LifecyclePower } from '../../src/services/lifecycle-runner.ts';
import { AssetStore, IpxeBinaries, parseSource } from '../../src/store/assets.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord } from '../../src/store/types.ts';

const MAC = '52:54:00:7a:00:01';
const INVENTORY = {
  cpu: { model: 'QEMU Virtual CPU', cores: 2, threads: 2, sockets: 1 },
  memoryBytes: 1073741824,
  firmware: 'bios',
  dmi: { vendor: 'LabCorp', product: 'PXE-Node', uuid: '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d7a01' },
  disks: [{ name: 'vda', path: '/dev/vda', sizeBytes: 4294967296, rotational: false, removable: false }],
  nics: [{ name: 'eth0', mac: MAC, link: true }],
};

/** BMC calls, for machines registered with one. */
class RecordingPower implements LifecyclePower {
  calls: string[] = [];
  readonly machines = new Set<string>();
  async get(id: string): Promise<unknown> { return this.machines.has(id) ? { id } : undefined; }
  async power(id: string, action: string) { this.calls.push(`${id} power ${action}`); return { result: 'done', message: 'ok' }; }
  async setBootDevice(id: string, r: { device: string }) { this.calls.push(`${id} bootdev ${r.device}`); return { result: 'done', message: 'ok' }; }
}

async function fixture(t: Test, autoCommission: boolean) {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-auto-commission-'));
  const store = createMemoryStore();
  const events = new EventLog(store);
  const logger = createLogger('silent');
  const registry = await MachineRegistry.open({ store, events, logger });
  const power = new RecordingPower();
  const runner = new LifecycleRunner({ registry, events, logger, power, autoCommission });
  await runner.start(new AbortController().signal);
  const assets = new AssetStore(join(dir, 'assets'), store);
  await assets.open();
  for (const f of ['vmlinuz', 'initrd']) writeFileSync(join(dir, f), f);
  await assets.add({ name: 'eph', files: { kernel: parseSource(join(dir, 'vmlinuz')), initrd: parseSource(join(dir, 'initrd')) } }, { maxBytes: 1e6 });
  const app = await buildApp({
    logger, metrics: createMetrics({ processMetrics: false }), version: 'test', instanceId: () => 'test',
    readiness: () => ({ phase: 'running', services: {} }),
    boot: { store, events, assets, ipxe: new IpxeBinaries(join(dir, 'ipxe')), logger, ephemeralImage: 'eph', tokenTtlMs: 3600_000, agent: { registry } },
  });
  t.teardown(async () => {
    await app.close();
    await runner.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  /** A network boot: the script's mode and per-boot token. */
  const boot = async (mac: string) => {
    const res = await app.inject({ url: `/boot/ipxe?mac=${mac}` });
    return { mode: /metalbox\.mode=(\S+)/.exec(res.body)?.[1], token: /metalbox\.token=(\S+)/.exec(res.body)?.[1] };
  };
  /** The enlisting agent: inventory, then done. */
  const enlist = async (token: string) => {
    const inv = await app.inject({ method: 'POST', url: '/boot/agent/v1/inventory', headers: { authorization: `Bearer ${token}` }, payload: INVENTORY });
    t.equal(inv.statusCode, 200, 'inventory accepted');
    const done = await app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: { authorization: `Bearer ${token}` }, payload: { mode: 'enlist', ok: true } });
    t.equal(done.statusCode, 204);
    await runner.idle();
    return (inv.json() as { machineId: string }).machineId;
  };
  const stateEvents = async (id: string) => {
    const out: EventRecord[] = [];
    for await (const [, e] of store.events.entries()) if (e.type === 'machine.state' && e.subject === id) out.push(e);
    return out;
  };
  return { registry, power, runner, boot, enlist, stateEvents };
}

t.test('on: an enlisted machine is commissioned at once; its next boot commissions it', async (t) => {
  const f = await fixture(t, true);
  const first = await f.boot(MAC);
  t.equal(first.mode, 'enlist');
  const id = await f.enlist(first.token!);
  const m = f.registry.get(id)!;
  t.equal(m.state, 'Commissioning');
  t.equal(m.stateReason, AUTO_COMMISSION_REASON);
  t.match(await f.stateEvents(id), [{ actor: 'lifecycle', data: { action: 'commission', from: 'New', to: 'Commissioning', reason: AUTO_COMMISSION_REASON } }]);
  t.same(f.power.calls, [], 'no BMC known: its effects are skipped (an operator powers it)');
  t.equal((await f.boot(MAC)).mode, 'commission', 'the next boot is a commissioning boot');
});

t.test('on: a machine registered by its BMC alone enlists, then is commissioned through its BMC', async (t) => {
  const f = await fixture(t, true);
  const m = await f.registry.create({}, { actor: 'op' }, { beforeWrite: async (draft) => { f.power.machines.add(draft.id); } });
  await f.runner.idle();
  t.same(f.power.calls, [`${m.id} bootdev pxe`, `${m.id} power on`], 'powered on to enlist');
  const id = await f.enlist((await f.boot(MAC)).token!);
  t.equal(id, m.id, 'the enlisting boot is linked to it');
  t.equal(f.registry.get(id)!.state, 'Commissioning');
  t.same(f.power.calls.slice(2), [`${m.id} bootdev pxe`, `${m.id} power cycle`], 'commissioning\'s effects through its BMC');
});

t.test('off (the default): the enlisted machine waits in New', async (t) => {
  const f = await fixture(t, false);
  const id = await f.enlist((await f.boot(MAC)).token!);
  t.equal(f.registry.get(id)!.state, 'New');
  t.same(await f.stateEvents(id), []);
  t.equal((await f.boot(MAC)).mode, undefined, 'a New machine boots its disk');
});
