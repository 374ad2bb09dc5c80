// What a machine boots when its iPXE asks for a script: one small pure decision (Pixiecore's Booter idea),
// so the HTTP service only renders what this returns.
//
// Extension point for the lifecycle issue: machine states are strings today (MachineRecord.state); the
// table BOOT_BY_STATE below maps each state to a boot kind. When the lifecycle's transition table lands, its
// states go here, with a test that every lifecycle state has a row. A state not in the table boots from
// local disk: never wipe or re-provision a machine because of a state we do not know.
import type { MachineRecord } from '../store/types.ts';

export const BOOT_KINDS = ['enlist', 'commission', 'deploy', 'local-disk', 'rescue'] as const;
export type BootKind = (typeof BOOT_KINDS)[number];

export interface BootPlan {
  kind: BootKind;
  /** One line for the console (echoed by the script) and the event log. */
  reason: string;
}

/**
 * State -> boot kind. The ephemeral environment gets the kind on its kernel command line (metalbox.mode) and
 * asks the API what to do in detail. Keys are lower case.
 */
export const BOOT_BY_STATE: Readonly<Record<string, BootKind>> = {
  new: 'commission',
  commissioning: 'commission',
  testing: 'commission',
  deploying: 'deploy',
  deployed: 'local-disk',
  ready: 'local-disk',
  allocated: 'local-disk',
  releasing: 'commission',
  'rescue-mode': 'rescue',
  rescue: 'rescue',
  broken: 'local-disk',
};

export function planBoot(machine: MachineRecord | undefined): BootPlan {
  if (machine === undefined) return { kind: 'enlist', reason: 'unknown machine: enlisting' };
  const state = String(machine.state ?? '').toLowerCase();
  const kind = Object.hasOwn(BOOT_BY_STATE, state) ? BOOT_BY_STATE[state]! : undefined;
  if (kind === undefined) return { kind: 'local-disk', reason: `machine ${machine.id} is in state "${state}", which has no network boot: booting from local disk` };
  return { kind, reason: `machine ${machine.id} is ${state}: ${kind}` };
}
