// The BMC service's 'ipmi' driver for a test process in the root namespace whose BMCs (ipmi_sim,
// test/helpers/ipmi-sim.ts) live in a network namespace: each driver the service makes is the real IPMI driver
// (src/bmc/ipmi), created and called inside the client namespace by test/helpers/ipmi-driver-child.ts, with its
// errors (code, message, details) handed back as MetalboxError. The service, its policy, locks and events run
// in the test process as in metalbox.
//
// Not carried across: abort signals (a call runs to its own deadline, which is the service's timeout less 1 s,
// as builtinDrivers sets it).
import type { DriverSpec } from '../../src/bmc/drivers.ts';
import type { BmcDriver, BmcInfo, PowerState } from '../../src/bmc/types.ts';
import { MetalboxError, type ErrorCode } from '../../src/lib/errors.ts';
import type { ChildReply, DriverChild } from './ipmi-sim.ts';

function toError(error: ChildReply['error']): Error {
  if (error?.code !== undefined) return new MetalboxError(error.code as ErrorCode, error.message ?? '', error.details ? { details: error.details } : undefined);
  return new Error(error?.message ?? 'the driver child failed');
}

export function namespacedIpmi(child: DriverChild): DriverSpec {
  let next = 0;
  return {
    pollable: true,
    credentials: true,
    defaultPort: 623,
    create(endpoint, ctx): BmcDriver {
      const key = `ns-${++next}`;
      const created = child.request('create', { key, endpoint, options: { deadlineMs: Math.max(1000, ctx.timeoutMs - 1000) } });
      const call = async (method: string, ...args: unknown[]): Promise<unknown> => {
        const c = await created;
        if (!c.ok) throw toError(c.error);
        const r = await child.call(key, method, ...args);
        if (!r.ok) throw toError(r.error);
        return r.value;
      };
      return {
        kind: 'ipmi',
        powerStatus: async () => (await call('powerStatus')) as PowerState,
        power: async (action) => { await call('power', action); },
        setBootDevice: async (request) => { await call('setBootDevice', request); },
        identify: async (seconds) => { await call('identify', seconds); },
        info: async () => (await call('info')) as BmcInfo,
        close: async () => {
          if ((await created).ok) await child.request('close', { key });
        },
      };
    },
  };
}
