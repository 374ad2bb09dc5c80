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
//
// Restarts: the registry writes a transition's effects on the record (`pendingEffects`) in the same batch as the
// state, and each outcome event here trims them in its own batch (MachineRegistry.recordEffects). start() re-runs
// what a previous run left (it was killed, or stopped, between a state change and its effects): the effects not
// yet carried out, in order, each event marked `resumed`, unless the machine has changed state since (a newer
// transition replaced them) or its phase is past its deadline (the sweeper ends it). At least once: an effect
// under way when metalbox died was not recorded and runs again (a second power cycle early in a boot, or a boot
// device set twice, harm nothing). A BMC call cut short by stop() is not a failure: it is left for the next start.
//
// lifecycle.autoCommission: a machine that has just enlisted (New, inventory from an enlisting boot: the agent
// API's `machine.inventory` event with purpose 'enlist') is commissioned at once, as MAAS does.
import type { BootDeviceRequest, PowerAction } from '../bmc/types.ts';
import type { EventLog, NewEvent } from '../core/events.ts';
import { isMetalboxError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import {
  deadlineOf, isAction, isPhaseState, isState, MAX_REASON_LENGTH, PHASE_FAILED, SYSTEM_ACTIONS, TRANSITIONS, type Action, type Effect, type PhaseState,
} from '../core/lifecycle.ts';
import { drivenEffects, usableSystemUuid, type Machine, type MachineChange, type MachineRegistry, type PendingEffects } from '../core/machines.ts';
import type { Service } from './service.ts';

/** The BMC service as the runner uses it (src/services/bmc/service.ts BmcService fits as is). */
export interface LifecyclePower {
  /** The machine's BMC; `undefined` when it has none. */
  get(machineId: string): Promise<unknown>;
  power(machineId: string, action: PowerAction, actor: string, signal?: AbortSignal): Promise<{ result: string; message: string }>;
  setBootDevice(machineId: string, request: BootDeviceRequest, actor: string, signal?: AbortSignal): Promise<{ result: string; message: string }>;
  /** Logs in and reads the BMC's identity (IPMI Get System GUID, Redfish's system UUID): how an enlisting boot is recognised. */
  test?(machineId: string, actor: string, signal?: AbortSignal): Promise<{ info: { systemUuid?: string } }>;
}

export interface LifecycleRunnerDeps {
  registry: MachineRegistry;
  events: EventLog;
  logger: Logger;
  /** Without it (no BMC service in this process) every power effect is recorded as skipped. */
  power?: LifecyclePower;
  now?: () => number;
  /** Commission a machine as soon as it has enlisted (config lifecycle.autoCommission). */
  autoCommission?: boolean;
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

/** The effects of one transition still to carry out (the record's `pendingEffects`), for one machine. */
interface Work extends PendingEffects {
  machineId: string;
  /** Left undone by a previous run of metalbox. */
  resumed: boolean;
}

export const AUTO_COMMISSION_REASON = 'enlisted: commissioned automatically (lifecycle.autoCommission)';

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
    // In the same tick as the subscription: a change from now on reaches onChange, an earlier one is on its record.
    let resumed = 0;
    for (const m of this.deps.registry.withPendingEffects()) {
      const work = pendingWork(m);
      if (!work) continue;
      resumed++;
      this.enqueue({ machineId: m.id, run: () => this.perform(work) });
    }
    if (resumed > 0) this.deps.logger.info({ machines: resumed }, 're-running lifecycle effects left undone when metalbox stopped');
  }

  /**
   * Stops listening; BMC calls in flight are aborted. What they and the queued effects did not carry out stays on
   * the records, for the next start.
   */
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
      const { machine, from, to, action, effects, event } = change;
      const work = drivenEffects(effects);
      if (work.length === 0) return;
      this.enqueue({ machineId: machine.id, run: () => this.perform({ machineId: machine.id, transition: event.id, action, from, to, effects: work, resumed: false }) });
    } else if (change.kind === 'created' && change.machine.macs.length === 0) {
      const { machine } = change;
      this.enqueue({ machineId: machine.id, run: () => this.enlist(machine) });
    } else if (change.kind === 'updated' && this.deps.autoCommission && enlisted(change)) {
      const id = change.machine.id;
      this.enqueue({ machineId: id, run: () => this.autoCommission(id) });
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

  /** The effects of one transition, in order, each outcome recorded with what is left (see recordEffects). */
  private async perform(w: Work): Promise<void> {
    const id = w.machineId;
    const base = { action: w.action, from: w.from, to: w.to, ...(w.resumed ? { resumed: true } : {}) };
    /** Has a newer transition replaced this one's effects (then they no longer apply)? */
    const superseded = async (rest: Effect[]): Promise<boolean> => {
      const current = this.deps.registry.get(id);
      if (current?.pendingEffects?.transition === w.transition) return false;
      await this.record(w, { ...base, effects: rest.map(describe), result: 'superseded', message: current ? `the machine is ${current.state} now` : 'the machine was deleted' }, rest);
      return true;
    };
    if (await superseded(w.effects)) return;
    if (w.resumed) {
      const deadline = deadlineOf(this.deps.registry.get(id)!);
      if (deadline !== undefined && deadline <= this.now()) {
        // Powering a machine into a phase that has already timed out would only race the sweeper.
        await this.record(w, { ...base, effects: w.effects.map(describe), result: 'superseded', message: `${w.to} is past its deadline: the sweeper ends it` }, w.effects, w.failure);
        return;
      }
      const what = w.failure !== undefined ? `the failed action (${w.failure})` : `${w.effects.length} effect${w.effects.length === 1 ? '' : 's'}`;
      await this.record(w, { ...base, effects: w.effects.map(describe), result: 'resumed', message: `re-run after a restart: ${what} left undone when metalbox stopped` }, w.effects, w.failure);
    }
    if (w.failure !== undefined) {
      await this.fail(w, w.failure);
      return;
    }
    const power = this.deps.power;
    if (!power || (await power.get(id).catch(() => undefined)) === undefined) {
      const message = power ? 'the machine has no BMC: set its boot device and power it by hand' : 'power control is not available in this process';
      await this.record(w, { ...base, effects: w.effects.map(describe), result: 'skipped', message }, []);
      return;
    }
    for (const [i, effect] of w.effects.entries()) {
      if (this.abort.signal.aborted) return; // left on the record for the next start
      if (i > 0 && (await superseded(w.effects.slice(i)))) return;
      const outcome = await this.apply(id, effect);
      // Cut short by stop(): not the BMC's failure; the next start carries it out.
      if (outcome.result === 'failed' && this.abort.signal.aborted) return;
      if (outcome.result === 'failed') {
        const reason = `${outcome.effect} failed: ${outcome.code ? `${outcome.code}: ` : ''}${outcome.message}`.slice(0, MAX_REASON_LENGTH);
        // In a phase, the failure is recorded as still to apply until the failed action replaces the record's
        // effects: a stop in between does not leave the machine waiting in a phase its BMC never started.
        const phase = isPhaseState(w.to);
        await this.record(w, { ...base, ...outcome }, [], phase ? reason : undefined);
        if (phase) await this.fail(w, reason);
        return;
      }
      await this.record(w, { ...base, ...outcome }, w.effects.slice(i + 1));
    }
  }

  /** A machine registered by its BMC alone: next boot from the network, power on, so that it enlists. */
  private async enlist(machine: Machine): Promise<void> {
    const power = this.deps.power;
    if (!power || (await power.get(machine.id).catch(() => undefined)) === undefined) return;
    const base = { action: 'enlist' };
    await this.learnUuid(machine);
    for (const effect of [{ kind: 'bootDevice', device: 'pxe', persistent: false }, { kind: 'power', action: 'on' }] as const) {
      if (this.abort.signal.aborted) return;
      const outcome = await this.apply(machine.id, effect);
      await this.note(machine.id, { ...base, ...outcome });
      if (outcome.result === 'failed') return;
    }
    // Marks the machine as waiting for its enlisting boot (agent-routes.ts links that boot to it).
    await this.deps.registry.amend(machine.id, { set: { enlistment: { poweredOnAt: new Date(this.now()).toISOString() } } }, { actor: RUNNER_ACTOR },
      { type: 'machine.enlistment', data: { message: 'powered on to boot from the network and enlist' } })
      .catch((err: unknown) => this.deps.logger.warn({ err, machine: machine.id }, 'could not mark the machine as enlisting'));
  }

  /**
   * The system UUID the BMC reports becomes the machine's, unless it has one or another machine claims it: the
   * enlisting boot's agent reports the same UUID from SMBIOS, which links the boot to this machine when several
   * machines registered by their BMCs enlist at once (agent-routes.ts). A BMC that cannot say is no failure:
   * enlistment then falls back to "the one machine waiting".
   */
  private async learnUuid(machine: Machine): Promise<void> {
    const power = this.deps.power!;
    if (!power.test || machine.uuid !== undefined) return;
    try {
      const { info } = await power.test(machine.id, RUNNER_ACTOR, this.abort.signal);
      const uuid = usableSystemUuid(info.systemUuid);
      if (uuid === undefined || this.deps.registry.byUuid(uuid) !== undefined) return;
      await this.deps.registry.amend(machine.id, { uuid }, { actor: RUNNER_ACTOR }, { type: 'machine.uuid', data: { uuid, source: 'bmc' } });
    } catch (err) {
      this.deps.logger.warn({ err, machine: machine.id }, 'could not read the system UUID from the BMC');
    }
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

  /** The phase's failed action, if the machine is still in the phase of that transition. */
  private async fail(w: Work, reason: string): Promise<void> {
    if (!isPhaseState(w.to)) return;
    const action = FAILED_ACTION[w.to];
    // A newer transition (an abort, an agent report) decided already: this failure no longer applies, even if the
    // machine has since come back to the same phase.
    if (this.deps.registry.get(w.machineId)?.pendingEffects?.transition !== w.transition) return;
    try {
      await this.deps.registry.act(w.machineId, action, { actor: RUNNER_ACTOR, reason: reason.slice(0, MAX_REASON_LENGTH) });
    } catch (err) {
      // Moved on meanwhile (an agent report, an abort): nothing to fail.
      if (isMetalboxError(err, 'LIFECYCLE_INVALID_TRANSITION') || isMetalboxError(err, 'MACHINE_NOT_FOUND')) return;
      this.deps.logger.error({ err, machine: w.machineId, action }, 'could not move the machine to its failed state');
    }
  }

  /** lifecycle.autoCommission: 'commission' for a machine that has just enlisted and is still New. */
  private async autoCommission(id: string): Promise<void> {
    if (this.abort.signal.aborted || this.deps.registry.get(id)?.state !== 'New') return;
    try {
      await this.deps.registry.act(id, 'commission', { actor: RUNNER_ACTOR, reason: AUTO_COMMISSION_REASON });
    } catch (err) {
      if (isMetalboxError(err, 'LIFECYCLE_INVALID_TRANSITION') || isMetalboxError(err, 'MACHINE_NOT_FOUND')) return;
      this.deps.logger.error({ err, machine: id }, 'could not commission the enlisted machine');
    }
  }

  /** An effect's event, with the effects of `w` still left after it, in one batch (MachineRegistry.recordEffects). */
  private async record(w: Work, data: Record<string, unknown>, left: Effect[], failure?: string): Promise<void> {
    const event: NewEvent = { type: 'machine.state.effect', actor: RUNNER_ACTOR, subject: w.machineId, data };
    await this.deps.registry.recordEffects(w.machineId, w.transition, { effects: left, ...(failure !== undefined ? { failure } : {}) }, event)
      .catch((err: unknown) => this.deps.logger.warn({ err, machine: w.machineId }, 'could not record a lifecycle effect'));
  }

  /** An event of the enlistment power-on (no transition, nothing pending on the record). */
  private async note(id: string, data: Record<string, unknown>): Promise<void> {
    const event: NewEvent = { type: 'machine.state.effect', actor: RUNNER_ACTOR, subject: id, data };
    await this.deps.events.append(event).catch((err: unknown) => this.deps.logger.warn({ err, machine: id }, 'could not record a lifecycle effect'));
  }
}

/** The pending effects stored on a record, as work; undefined when they are not a shape this version wrote. */
function pendingWork(m: Machine): Work | undefined {
  const p = m.pendingEffects;
  if (typeof p !== 'object' || p === null || typeof p.transition !== 'string' || !isAction(p.action) || !isState(p.from) || !isState(p.to)
    || !Array.isArray(p.effects)) return undefined;
  const effects = drivenEffects(p.effects.filter((e): e is Effect => typeof e === 'object' && e !== null));
  if (effects.length === 0 && typeof p.failure !== 'string') return undefined;
  return {
    machineId: m.id, transition: p.transition, action: p.action, from: p.from, to: p.to, effects, resumed: true,
    ...(typeof p.failure === 'string' ? { failure: p.failure } : {}),
  };
}

/** The agent API's record of an enlisting boot's inventory, on a machine still New. */
function enlisted(change: Extract<MachineChange, { kind: 'updated' }>): boolean {
  const data = change.event.data as { purpose?: unknown } | undefined;
  return change.event.type === 'machine.inventory' && data?.purpose === 'enlist' && change.machine.state === 'New';
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
