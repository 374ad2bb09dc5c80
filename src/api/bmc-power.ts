// The machine API's view of the BMC service (MachinePowerControl): a machine's BMC is the one registered for its
// id. Here so that serve (src/main.ts) and the test apps wire the same thing.
import { isMetalboxError } from '../lib/errors.ts';
import type { BmcService } from '../services/bmc/service.ts';
import type { MachinePowerControl } from './routes/machines.ts';

export function bmcPowerControl(bmc: BmcService): MachinePowerControl {
  return {
    powerAction: async (machineId, action, actor) => {
      const r = await bmc.power(machineId, action, actor);
      return { result: r.result, message: r.message, before: r.before, ...(r.performed ? { performed: r.performed } : {}) };
    },
    powerStatus: async (machineId, actor) => ({ state: (await bmc.powerStatus(machineId, actor)).state }),
    setBootDevice: async (machineId, request, actor) => {
      const r = await bmc.setBootDevice(machineId, request, actor);
      return { result: r.result, message: r.message };
    },
    enroll: async (machineId, input, actor) => ({ bmc: (await bmc.add({ ...input, machineId }, actor)).bmc.id }),
    unenroll: async (machineId, actor) => { await bmc.remove(machineId, actor).catch((err: unknown) => { if (!isMetalboxError(err, 'BMC_NOT_FOUND')) throw err; }); },
  };
}
