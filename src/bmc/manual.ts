// The manual "driver": a machine without a BMC or Wake-on-LAN, powered by a person. An action is a request
// to the operator ("power node7 on"), which the BMC service records as a pending request that the API and the
// console show until the operator confirms what they did. The power state is what the operator last
// confirmed, else unknown: nothing here can observe the machine.
import type { BmcDriver, BmcEndpoint, BmcInfo, BootDeviceRequest, PowerAction, PowerState } from './types.ts';

/** What the operator was asked to do. */
export type ManualRequest =
  | { kind: 'power'; action: PowerAction }
  | { kind: 'bootdev'; device: BootDeviceRequest['device']; persistent: boolean; efi: boolean }
  | { kind: 'identify'; seconds: number };

export interface ManualOptions {
  /** The state the operator last confirmed (from the BMC record); absent = unknown. */
  confirmed?: PowerState;
  /** Told of each request; the service turns it into a pending request on the record and an event. */
  onRequest?: (request: ManualRequest) => void;
}

export interface ManualDriver extends BmcDriver {
  readonly kind: 'manual';
  /** Requests made through this driver, oldest first. */
  readonly requests: readonly ManualRequest[];
}

export function describeManualRequest(r: ManualRequest): string {
  switch (r.kind) {
    case 'power': return r.action === 'soft-off' ? 'shut the machine down (soft off)' : `power ${r.action}`;
    case 'bootdev': return `set the next boot to ${r.device}${r.persistent ? ' (persistent)' : ''}${r.efi ? ' in UEFI mode' : ''}`;
    case 'identify': return r.seconds === 0 ? 'turn the identify light off' : `turn the identify light on for ${r.seconds} s`;
  }
}

export function createManualDriver(endpoint: BmcEndpoint, options: ManualOptions = {}): ManualDriver {
  const requests: ManualRequest[] = [];
  const ask = async (r: ManualRequest): Promise<void> => {
    requests.push(r);
    options.onRequest?.(r);
  };
  return {
    kind: 'manual',
    requests,
    powerStatus: async () => options.confirmed ?? 'unknown',
    power: (action) => ask({ kind: 'power', action }),
    setBootDevice: (req) => ask({ kind: 'bootdev', device: req.device, persistent: req.persistent, efi: req.efi }),
    identify: (seconds) => ask({ kind: 'identify', seconds }),
    info: async (): Promise<BmcInfo> => ({ protocolVersion: 'manual', ...(endpoint.address ? { location: endpoint.address } : {}) }),
    close: async () => undefined,
  };
}
