// Carries out the lifecycle's effects (src/core/lifecycle.ts): the registry tells it of every durable state
// change, and it sets the boot device and powers the machine through the BMC service, in the order the
// transition lists them. Each effect's outcome is an event on the machine (`machine.state.effect`, on the
// boot timeline next to the BMC service's own `bmc.power`/`bmc.bootdev`). An effect that fails while the
// machine is in a phase (Commissioning, Deploying, Releasing) ends the phase: the table's '<phase>-failed'
// action with the reason; elsewhere (Ready, Rescue, ...) there is no failed state and the event and the log
// say what went wrong.
//
// What it does not do:
// - `bootScript`: the boot service reads the machine's state on every script request; nothing to push.
// - `timeout`: the registry's sweeper expires phases (the deadline is on the record).
// - power of a machine without a BMC: one event says the effects were skipped (power it by hand).
//
// Also: a machine registered by its BMC alone (POST /api/v1/machines with bmc and no MAC) is booted from the
// network once (boot device pxe for the next boot, power on) so that it enlists; the enlisting boot is linked to
// it (src/services/boot-http/agent-routes.ts). Power on, not cycle: a machine that is running is not reset for
// being registered; it enlists at its next network boot.
//
// Effects of one machine run one at a time, in the order of its transitions; when a machine has changed state
// again before its effects ran, the older ones are skipped as superseded (the newer transition's effects say
// what the machine should do now).
import type { BootDeviceRequest, PowerAction } from '../bmc/types.ts';
import type { EventLog, NewEvent } from '../core/events.ts';
import { isMetalboxError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import {
  isPhaseState, PHASE_FAILED, SYSTEM_ACTIONS, TRANSITIONS, type Action, type Effect, type PhaseState, type State,
} from '../core/lifecycle.ts';
import type { Machine, MachineChange, MachineRegistry } from '../core/machines.ts';
import type { Service } from './service.ts';

/** The BMC service as the runner uses it (src/services/bmc/service.ts BmcService fits as is). */
export interface LifecyclePower {
  /** The machine's BMC; `undefined` when it has none. */
  get(machineId: string): Promise<unknown>;
  power(machineId: string, action: PowerAction, actor: string, signal?: AbortSignal): Promise<{ result: string; message: string }>;
  setBootDevice(machineId: string, request: BootDeviceRequest, actor: string, signal?: AbortSignal): Promise<{ result: string; message: string }>;
}

export interface LifecycleRunnerDeps {
  registry: MachineRegistry;
  events: EventLog;
  logger: Logger;
  /** Without it (no BMC service in this process) every power effect is recorded as skipped. */
  power?: LifecyclePower;
  now?: () => number;
}

export const RUNNER_ACTOR = 'lifecycle';

/** A phase's '<phase>-failed' action, from the transition table: the system action (not the timeout) into PHASE_FAILED. */
export const FAILED_ACTION: Readonly<Record<PhaseState, Action>> = Object.fromEntries(
  (Object.keys(PHASE_FAILED) as PhaseState[]).map((phase) => {
    const rule = TRANSITIONS.find((r) => r.from.includes(phase) && r.to === PHASE_FAILED[phase] && r.action !== 'timeout'
      && (SYSTEM_ACTIONS as readonly string[]).includes(r.action));
    if (!rule) throw new TypeError(`lifecycle table: no failed action out of ${phase}`);
    return [phase, rule.action];
  }),
) as Record<PhaseState, Action>;

type EffectOutcome = { effect: string; result: string; message: string; code?: string };

interface Job { machineId: string; run: () => Promise<void> }

export class LifecycleRunner implements Service {
  readonly name = 'lifecycle';
  private unsubscribe: (() => void) | undefined;
  private readonly queues = new Map<string, Promise<void>>();
  private readonly abort = new AbortController();
  private readonly now: () => number;

  constructor(private readonly deps: LifecycleRunnerDeps) {
    this.now = deps.now ?? Date.now;
  }

  async start(signal?: AbortSignal): Promise<void> {
    this.unsubscribe = this.deps.registry.subscribe((change) => this.onChange(change));
    signal?.addEventListener('abort', () => this.abort.abort(), { once: true });
  }

  /** Stops listening; BMC calls in flight are aborted (they end with BMC_TIMEOUT, recorded). */
  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.abort.abort();
    await this.idle();
  }

  /** Resolves once every queued effect has been carried out (tests). */
  async idle(): Promise<void> {
    while (this.queues.size > 0) await Promise.allSettled([...this.queues.values()]);
  }

  private onChange(change: MachineChange): void {
    if (change.kind === 'state') {
      const { machine, from, to, action, effects } = change;
      this.enqueue({ machineId: machine.id, run: () => this.perform(machine, from, to, action, effects) });
    } else if (change.kind === 'created' && change.machine.macs.length === 0) {
      const { machine } = change;
      this.enqueue({ machineId: machine.id, run: () => this.enlist(machine) });
    }
  }

  private enqueue(job: Job): void {
    const prev = this.queues.get(job.machineId) ?? Promise.resolve();
    const run = prev.then(job.run).catch((err: unknown) => {
      this.deps.logger.error({ err, machine: job.machineId }, 'carrying out lifecycle effects failed');
    });
    this.queues.set(job.machineId, run);
    void run.then(() => { if (this.queues.get(job.machineId) === run) this.queues.delete(job.machineId); });
  }

  /** The effects of one transition, in order. */
  private async perform(machine: Machine, from: State, to: State, action: Action, effects: Effect[]): Promise<void> {
    const id = machine.id;
    const work = effects.filter((e) => e.kind === 'bootDevice' || e.kind === 'power');
    if (work.length === 0) return;
    const base = { action, from, to };
    /** Has the machine left this transition's state (then its remaining effects no longer apply)? */
    const superseded = async (rest: typeof work): Promise<boolean> => {
      const current = this.deps.registry.get(id);
      if (current && current.stateChangedAt === machine.stateChangedAt && current.state === to) return false;
      await this.record(id, { ...base, effects: rest.map(describe), result: 'superseded', message: current ? `the machine is ${current.state} now` : 'the machine was deleted' });
      return true;
    };
    if (await superseded(work)) return;
    const power = this.deps.power;
    if (!power || (await power.get(id).catch(() => undefined)) === undefined) {
      const message = power ? 'the machine has no BMC: set its boot device and power it by hand' : 'power control is not available in this process';
      await this.record(id, { ...base, effects: work.map(describe), result: 'skipped', message });
      return;
    }
    for (const [i, effect] of work.entries()) {
      if (this.abort.signal.aborted) return;
      if (i > 0 && (await superseded(work.slice(i)))) return;
      const outcome = await this.apply(id, effect);
      await this.record(id, { ...base, ...outcome });
      if (outcome.result === 'failed') {
        await this.fail(id, to, `${outcome.effect} failed: ${outcome.code ? `${outcome.code}: ` : ''}${outcome.message}`);
        return;
      }
    }
  }

  /** A machine registered by its BMC alone: next boot from the network, power on, so that it enlists. */
  private async enlist(machine: Machine): Promise<void> {
    const power = this.deps.power;
    if (!power || (await power.get(machine.id).catch(() => undefined)) === undefined) return;
    const base = { action: 'enlist' };
    for (const effect of [{ kind: 'bootDevice', device: 'pxe', persistent: false }, { kind: 'power', action: 'on' }] as const) {
      if (this.abort.signal.aborted) return;
      const outcome = await this.apply(machine.id, effect);
      await this.record(machine.id, { ...base, ...outcome });
      if (outcome.result === 'failed') return;
    }
    // Marks the machine as waiting for its enlisting boot (agent-routes.ts links that boot to it).
    await this.deps.registry.amend(machine.id, { set: { enlistment: { poweredOnAt: new Date(this.now()).toISOString() } } }, { actor: RUNNER_ACTOR },
      { type: 'machine.enlistment', data: { message: 'powered on to boot from the network and enlist' } })
      .catch((err: unknown) => this.deps.logger.warn({ err, machine: machine.id }, 'could not mark the machine as enlisting'));
  }

  private async apply(id: string, effect: Effect | { kind: 'power'; action: 'on' }): Promise<EffectOutcome> {
    const power = this.deps.power!;
    const what = describe(effect);
    try {
      const r = effect.kind === 'power'
        ? await power.power(id, effect.action, RUNNER_ACTOR, this.abort.signal)
        : effect.kind === 'bootDevice'
          ? await power.setBootDevice(id, { device: effect.device, persistent: effect.persistent, efi: this.efi(id) }, RUNNER_ACTOR, this.abort.signal)
          : { result: 'skipped', message: 'nothing to do' };
      return { effect: what, result: r.result, message: r.message };
    } catch (err) {
      const code = isMetalboxError(err) ? err.code : 'INTERNAL';
      this.deps.logger.warn({ err, machine: id, effect: what }, `lifecycle effect failed: ${what}`);
      return { effect: what, result: 'failed', code, message: (err as Error).message };
    }
  }

  /**
   * Ask for a UEFI boot when the machine's inventory says its firmware booted by UEFI: the boot flags carry the
   * mode (IPMI v2.0 §28.13 boot flags data 1 bit 5; Redfish BootSourceOverrideMode), and a legacy request to a
   * UEFI machine can send it into its CSM or be refused. Before commissioning nothing is known: legacy.
   */
  private efi(id: string): boolean {
    const inventory = this.deps.registry.get(id)?.inventory as { firmware?: unknown } | undefined;
    return inventory?.firmware === 'uefi';
  }

  /** The phase's failed action, if the machine is still in that phase. */
  private async fail(id: string, state: State, reason: string): Promise<void> {
    if (!isPhaseState(state)) return;
    const action = FAILED_ACTION[state];
    try {
      await this.deps.registry.act(id, action, { actor: RUNNER_ACTOR, reason: reason.slice(0, 500) });
    } catch (err) {
      // Moved on meanwhile (an agent report, an abort): nothing to fail.
      if (isMetalboxError(err, 'LIFECYCLE_INVALID_TRANSITION') || isMetalboxError(err, 'MACHINE_NOT_FOUND')) return;
      this.deps.logger.error({ err, machine: id, action }, 'could not move the machine to its failed state');
    }
  }

  private async record(id: string, data: Record<string, unknown>): Promise<void> {
    const event: NewEvent = { type: 'machine.state.effect', actor: RUNNER_ACTOR, subject: id, data };
    await this.deps.events.append(event).catch((err: unknown) => this.deps.logger.warn({ err, machine: id }, 'could not record a lifecycle effect'));
  }
}

/** 'power cycle', 'bootdev pxe', 'bootdev disk (persistent)'. */
function describe(e: Effect | { kind: 'power'; action: 'on' }): string {
  switch (e.kind) {
    case 'power': return `power ${e.action}`;
    case 'bootDevice': return `bootdev ${e.device}${e.persistent ? ' (persistent)' : ''}`;
    case 'bootScript': return `boot script ${e.script}`;
    case 'timeout': return `timeout ${e.ms} ms`;
  }
}
