// A child process for test/integration/lifecycle-crash.test.ts: metalbox's lifecycle wiring (LevelDB store,
// event log, machine registry, BMC service with the real IPMI driver, lifecycle runner), run inside the
// namespace of the test's ipmi_sim BMC.
//
//   node --import tsx test/helpers/lifecycle-crash-child.ts DIR transition ADDRESS USER PASSWORD
//     makes a machine with that BMC and commissions it. The runner's power calls never return (everything else
//     goes to the BMC): prints `machine ID`, then `hung power ACTION` once the runner is stuck there, and waits
//     to be killed.
//   node --import tsx test/helpers/lifecycle-crash-child.ts DIR resume
//     starts as metalbox does (BMC service, registry, runner), waits until the runner is idle, prints
//     `result {machines, events}` (every machine record and every machine.state.effect event) and exits.
import { openLevelStore } from '../../src/store/level-store.ts';
import { defaultConfig } from '../../src/config/load.ts';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { BmcService, secretBoxLoader } from '../../src/services/bmc/service.ts';
import { LifecycleRunner, type LifecyclePower } from '../../src/services/lifecycle-runner.ts';
import type { EventRecord, MachineRecord } from '../../src/store/types.ts';

const [dir, mode, address, username, password] = process.argv.slice(2);
if (!dir || (mode !== 'transition' && mode !== 'resume')) throw new TypeError('usage: lifecycle-crash-child.ts DIR transition ADDRESS USER PASSWORD | DIR resume');
const say = (line: string): void => { process.stdout.write(`${line}\n`); };

const store = await openLevelStore(dir);
const events = new EventLog(store);
await events.init();
const logger = createLogger('warn', process.stderr); // stdout carries the lines the test reads
const base = defaultConfig(dir);
const bmc = new BmcService({
  store, events, logger, metrics: createMetrics({ processMetrics: false }),
  config: { bmc: { ...base.bmc, pollSeconds: 0, timeoutSeconds: 10 }, interfaces: [] },
  secrets: secretBoxLoader(store, dir),
});
const signal = new AbortController().signal;
await bmc.start(signal);
const registry = await MachineRegistry.open({ store, events, logger });
await registry.start(signal);

if (mode === 'transition') {
  const power: LifecyclePower = {
    get: (id) => bmc.get(id),
    setBootDevice: (id, request, actor, s) => bmc.setBootDevice(id, request, actor, s),
    power: async (_id, action) => {
      say(`hung power ${action}`);
      return new Promise(() => undefined);
    },
  };
  const runner = new LifecycleRunner({ registry, events, logger, power });
  await runner.start(signal);
  const m = await registry.create({ mac: '52:54:00:5c:00:01' }, { actor: 'test' });
  await bmc.add({ driver: 'ipmi', address: address!, username: username!, password: password!, machineId: m.id }, 'test');
  say(`machine ${m.id}`);
  await registry.act(m.id, 'commission', { actor: 'test' });
  // Killed here.
} else {
  const runner = new LifecycleRunner({ registry, events, logger, power: bmc });
  await runner.start(signal);
  await runner.idle();
  const machines: MachineRecord[] = [];
  for await (const [, m] of store.machines.entries()) machines.push(m);
  const effects: EventRecord[] = [];
  for await (const [, e] of store.events.entries()) if (e.type === 'machine.state.effect') effects.push(e);
  say(`result ${JSON.stringify({ machines, events: effects })}`);
  await runner.stop();
  await registry.stop();
  await bmc.stop();
  await store.close();
}
