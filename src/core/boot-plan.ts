// What a machine boots when its iPXE asks for a script: one small pure decision (Pixiecore's Booter idea),
// so the HTTP service only renders what this returns.
//
// The table BOOT_BY_STATE maps every lifecycle state (src/core/lifecycle.ts STATES) to a boot kind; it is the
// lifecycle's own BOOT_SCRIPT_BY_STATE, so the two cannot drift apart (test/unit/boot-plan.test.ts checks that
// every state has a row). A state not in the table (a record edited by hand, written by a newer metalbox)
// boots from local disk: never wipe or re-provision a machine because of a state we do not know. States
// match exactly: 'deploying' is not 'Deploying'.
import type { MachineRecord } from '../store/types.ts';
import { BOOT_SCRIPT_BY_STATE, isState, type BootScript, type State } from './lifecycle.ts';

export const BOOT_KINDS = ['enlist', 'commission', 'deploy', 'release', 'local-disk', 'rescue'] as const;
export type BootKind = (typeof BOOT_KINDS)[number];

// Compile-time check that the lifecycle's boot scripts and our kinds are the same set.
const sameKinds: [Exclude<BootScript, BootKind>, Exclude<BootKind, BootScript>] extends [never, never] ? true : never = true;
void sameKinds;

export interface BootPlan {
  kind: BootKind;
  /** One line for the console (echoed by the script) and the event log. */
  reason: string;
}

/**
 * State -> boot kind. The ephemeral environment gets the kind on its kernel command line (metalbox.mode) and
 * asks the agent API (/boot/agent/v1/task) what to do in detail.
 */
export const BOOT_BY_STATE: Readonly<Record<State, BootKind>> = BOOT_SCRIPT_BY_STATE;

/** What the deploy request on a machine record looks like to the boot plan (src/services/boot-http/agent-routes.ts writes it). */
interface DeploymentMark { writtenAt?: unknown }

/**
 * A Deploying machine whose agent reported its image written (and rebooted it) boots its disk: on a machine
 * whose firmware tries the network first, booting the ephemeral environment again would deploy forever.
 */
export function imageWritten(machine: MachineRecord): boolean {
  const d = machine.deployment as DeploymentMark | undefined;
  return typeof d === 'object' && d !== null && typeof d.writtenAt === 'string';
}

export function planBoot(machine: MachineRecord | undefined): BootPlan {
  if (machine === undefined) return { kind: 'enlist', reason: 'unknown machine: enlisting' };
  const state = typeof machine.state === 'string' ? machine.state : '';
  if (!isState(state)) {
    return { kind: 'local-disk', reason: `machine ${machine.id} is in state "${state}", which has no network boot: booting from local disk` };
  }
  const kind = BOOT_BY_STATE[state];
  if (kind === 'deploy' && imageWritten(machine)) {
    return { kind: 'local-disk', reason: `machine ${machine.id} is ${state} and its image is written: booting it from local disk` };
  }
  return { kind, reason: `machine ${machine.id} is ${state}: ${kind}` };
}
