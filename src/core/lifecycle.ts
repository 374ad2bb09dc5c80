// The machine lifecycle as data: the states, the actions, one table of legal transitions, and a pure
// `transition()` that returns the new record, the side effects to carry out and the event that records the
// change. Nothing here does I/O or reads a clock: the registry (src/core/machines.ts) writes the record and the
// event in one batch; whoever drives machines (the BMC, the boot service, the agent API) carries out the effects.
//
// Effects, in the order to perform them:
//   {kind:'bootScript', script}    what the machine's iPXE script request is answered with from now on
//                                  (the same mapping as BOOT_SCRIPT_BY_STATE; always first, exactly once)
//   {kind:'bootDevice', device, persistent}   set the next boot device before powering (pxe for a phase that
//                                  boots the ephemeral environment; disk, persistent, once an OS is installed)
//   {kind:'power', action}         'cycle' (an off machine is powered on: BmcService planPower), 'off'
//   {kind:'timeout', ms}           the phase must end within ms; past it, `expire()` moves the machine to the
//                                  phase's failed state (the record carries the deadline as `phaseDeadline`)
//
// Contract for the agent (later issues): report `*-done` only once everything is on disk (synced): the
// transition out of Deploying power-cycles the machine into its installed system at once.
import { MetalboxError } from '../lib/errors.ts';
import type { MachineRecord } from '../store/types.ts';
import type { NewEvent } from './events.ts';

export const STATES = [
  'New', 'Commissioning', 'Ready', 'Allocated', 'Deploying', 'Deployed', 'Releasing', 'Rescue', 'Broken',
  'FailedCommissioning', 'FailedDeployment', 'FailedReleasing',
] as const;
export type State = (typeof STATES)[number];

/** Actions an operator asks for (API, CLI, console). */
export const USER_ACTIONS = ['commission', 'allocate', 'deploy', 'release', 'rescue', 'exit-rescue', 'abort', 'mark-broken', 'mark-fixed'] as const;
/** Actions metalbox itself takes: reports of the ephemeral environment's agent, and the phase timeout. */
export const SYSTEM_ACTIONS = ['commission-done', 'commission-failed', 'deploy-done', 'deploy-failed', 'release-done', 'release-failed', 'timeout'] as const;
export const ACTIONS = [...USER_ACTIONS, ...SYSTEM_ACTIONS] as const;
export type UserAction = (typeof USER_ACTIONS)[number];
export type SystemAction = (typeof SYSTEM_ACTIONS)[number];
export type Action = UserAction | SystemAction;

/** States in which the machine runs a phase in the ephemeral environment, each with a deadline. */
export const PHASE_STATES = ['Commissioning', 'Deploying', 'Releasing'] as const;
export type PhaseState = (typeof PHASE_STATES)[number];

/**
 * How long a phase may take before the machine is declared failed. Generous: a real server's POST alone takes
 * 2-10 minutes (twice per deployment), a deployment writes an image, a release may erase disks.
 */
export const PHASE_TIMEOUTS_MS: Readonly<Record<PhaseState, number>> = {
  Commissioning: 30 * 60_000,
  Deploying: 60 * 60_000,
  Releasing: 30 * 60_000,
};

/** Where a phase ends when its deadline passes. */
export const PHASE_FAILED: Readonly<Record<PhaseState, State>> = {
  Commissioning: 'FailedCommissioning',
  Deploying: 'FailedDeployment',
  Releasing: 'FailedReleasing',
};

/** What the ephemeral environment is booted for (its kernel command line names it; src/core/boot-plan.ts). */
export type BootScript = 'enlist' | 'commission' | 'deploy' | 'release' | 'rescue' | 'local-disk';

/**
 * The boot script each state serves. Everything at rest boots its local disk: a machine is never wiped or
 * re-provisioned because it happened to PXE boot.
 */
export const BOOT_SCRIPT_BY_STATE: Readonly<Record<State, BootScript>> = {
  New: 'local-disk',
  Commissioning: 'commission',
  Ready: 'local-disk',
  Allocated: 'local-disk',
  Deploying: 'deploy',
  Deployed: 'local-disk',
  Releasing: 'release',
  Rescue: 'rescue',
  Broken: 'local-disk',
  FailedCommissioning: 'local-disk',
  FailedDeployment: 'local-disk',
  FailedReleasing: 'local-disk',
};

export type Effect =
  | { kind: 'bootScript'; script: BootScript }
  | { kind: 'bootDevice'; device: 'pxe' | 'disk'; persistent: boolean }
  | { kind: 'power'; action: 'cycle' | 'off' }
  | { kind: 'timeout'; ms: number };

/** Where a transition goes: a state, or a state decided by the record (see `resolveTarget`). */
export type Target =
  | State
  /** The state the machine was in when it entered Rescue (`rescueReturn`). */
  | { return: 'rescue' }
  /** Ready if the machine was ever commissioned (`commissionedAt`), else New. */
  | { commissioned: State; otherwise: State };

export interface TransitionRule {
  from: readonly State[];
  action: Action;
  to: Target;
  /** Effects after the boot script; a phase's `timeout` is added from the timeouts table. */
  effects: readonly Effect[];
  /** One line for the README table. */
  note: string;
}

const PXE: Effect = { kind: 'bootDevice', device: 'pxe', persistent: false };
const DISK: Effect = { kind: 'bootDevice', device: 'disk', persistent: true };
const CYCLE: Effect = { kind: 'power', action: 'cycle' };
const OFF: Effect = { kind: 'power', action: 'off' };
/** Into a phase: boot the ephemeral environment once (the disk stays the persistent boot device), power cycle. */
const BOOT_EPHEMERAL = [PXE, CYCLE] as const;

/** THE transition table. A (state, action) pair not listed here is LIFECYCLE_INVALID_TRANSITION. */
export const TRANSITIONS: readonly TransitionRule[] = [
  { from: ['New', 'Ready', 'Broken', 'FailedCommissioning'], action: 'commission', to: 'Commissioning', effects: BOOT_EPHEMERAL, note: 'inventory the hardware in the ephemeral environment' },
  { from: ['Commissioning'], action: 'commission-done', to: 'Ready', effects: [OFF], note: 'facts stored; the machine waits powered off' },
  { from: ['Commissioning'], action: 'commission-failed', to: 'FailedCommissioning', effects: [OFF], note: 'the agent reported a failure' },
  { from: ['Commissioning'], action: 'timeout', to: 'FailedCommissioning', effects: [OFF], note: 'no report within the phase timeout' },
  { from: ['Commissioning'], action: 'abort', to: 'New', effects: [OFF], note: 'facts may be partial: commission again before deploying' },
  { from: ['Ready'], action: 'allocate', to: 'Allocated', effects: [], note: 'reserved for a user, nothing is touched' },
  { from: ['Ready', 'Allocated', 'FailedDeployment'], action: 'deploy', to: 'Deploying', effects: BOOT_EPHEMERAL, note: 'write the OS image from the ephemeral environment (Ready is allocated implicitly)' },
  // deploy-done is the installed system's own report (cloud-init phone home): it already runs from its disk, so the
  // disk becomes the boot device for every later boot and the power is left alone.
  { from: ['Deploying'], action: 'deploy-done', to: 'Deployed', effects: [DISK], note: 'boot the installed system from now on' },
  { from: ['Deploying'], action: 'deploy-failed', to: 'FailedDeployment', effects: [OFF], note: 'the agent reported a failure' },
  { from: ['Deploying'], action: 'timeout', to: 'FailedDeployment', effects: [OFF], note: 'no report within the phase timeout' },
  { from: ['Deploying'], action: 'abort', to: 'Allocated', effects: [OFF], note: 'still reserved; deploy or release it' },
  { from: ['Allocated'], action: 'release', to: 'Ready', effects: [OFF], note: 'nothing was deployed: straight back to the pool' },
  { from: ['Deployed', 'FailedDeployment', 'FailedReleasing'], action: 'release', to: 'Releasing', effects: BOOT_EPHEMERAL, note: 'clean up (disk erase) in the ephemeral environment' },
  { from: ['Releasing'], action: 'release-done', to: 'Ready', effects: [OFF], note: 'back in the pool, powered off' },
  { from: ['Releasing'], action: 'release-failed', to: 'FailedReleasing', effects: [OFF], note: 'the agent reported a failure' },
  { from: ['Releasing'], action: 'timeout', to: 'FailedReleasing', effects: [OFF], note: 'no report within the phase timeout' },
  { from: ['Releasing'], action: 'abort', to: 'FailedReleasing', effects: [OFF], note: 'the disks were not (all) erased' },
  {
    from: ['Ready', 'Allocated', 'Deployed', 'Broken', 'FailedCommissioning', 'FailedDeployment', 'FailedReleasing'], action: 'rescue', to: 'Rescue',
    effects: BOOT_EPHEMERAL, note: 'boot the ephemeral environment for repairs; remembers the state to return to',
  },
  { from: ['Rescue'], action: 'exit-rescue', to: { return: 'rescue' }, effects: [], note: 'back to the state it came from (Deployed: boot the disk; otherwise power off)' },
  {
    from: ['New', 'Commissioning', 'Ready', 'Allocated', 'Deploying', 'Deployed', 'Releasing', 'FailedCommissioning', 'FailedDeployment', 'FailedReleasing'],
    action: 'mark-broken', to: 'Broken', effects: [], note: 'taken out of service; power is left as it is for the person investigating',
  },
  { from: ['Broken'], action: 'mark-fixed', to: { commissioned: 'Ready', otherwise: 'New' }, effects: [], note: 'Ready if it was ever commissioned, else New' },
];

/** Effects of leaving Rescue, by the state returned to (the row above has none of its own). */
export const RESCUE_EXIT_EFFECTS: Readonly<Partial<Record<State, readonly Effect[]>>> = {
  Deployed: [DISK, CYCLE],
};
const RESCUE_EXIT_DEFAULT: readonly Effect[] = [OFF];

/** Lifecycle fields the registry keeps on a machine record. */
export interface LifecycleFields {
  state: string;
  /** When the machine entered its state. */
  stateChangedAt?: string;
  /** Phase states only: when the phase times out. */
  phaseDeadline?: string;
  /** Why it is in this state (a failure, a timeout, an operator's reason). */
  stateReason?: string;
  /** Rescue only: the state exit-rescue returns to. */
  rescueReturn?: string;
  /** When commissioning last succeeded. */
  commissionedAt?: string;
}

export interface TransitionContext {
  actor: string;
  /** The time of the transition, ms since the epoch (the caller's clock: this module reads none). */
  now: number;
  /** Operator's or agent's reason; kept as `stateReason` and in the event. At most 500 characters. */
  reason?: string;
  /** Per-phase timeout overrides (ms). */
  timeouts?: Partial<Record<PhaseState, number>>;
}

export interface TransitionResult<M extends MachineRecord = MachineRecord> {
  from: State;
  state: State;
  action: Action;
  /** The new record (a copy; the input is not modified). */
  machine: M;
  effects: Effect[];
  /** The event that records this transition (type `machine.state`); write it in the same batch as `machine`. */
  event: NewEvent;
}

export const MAX_REASON_LENGTH = 500;

const stateSet: ReadonlySet<string> = new Set(STATES);
const actionSet: ReadonlySet<string> = new Set(ACTIONS);
export const isState = (s: unknown): s is State => typeof s === 'string' && stateSet.has(s);
export const isAction = (a: unknown): a is Action => typeof a === 'string' && actionSet.has(a);
export const isPhaseState = (s: unknown): s is PhaseState => s === 'Commissioning' || s === 'Deploying' || s === 'Releasing';

/** rule lookup: action -> state -> rule (built once from the table; the table stays the single source). */
const RULES = new Map<Action, Map<State, TransitionRule>>();
for (const rule of TRANSITIONS) {
  let byState = RULES.get(rule.action);
  if (!byState) RULES.set(rule.action, (byState = new Map()));
  for (const from of rule.from) {
    if (byState.has(from)) throw new TypeError(`lifecycle table: two rules for (${from}, ${rule.action})`);
    byState.set(from, rule);
  }
}

/** The rule for (state, action), or undefined when the table has none. */
export function ruleFor(state: string, action: string): TransitionRule | undefined {
  if (!isState(state) || !isAction(action)) return undefined;
  return RULES.get(action)?.get(state);
}

/** The actions legal from a state, in table order (for the console's buttons and error messages). */
export function actionsFrom(state: string, which: readonly Action[] = ACTIONS): Action[] {
  return which.filter((a) => ruleFor(state, a) !== undefined);
}

/** The states an action is legal from. */
export function statesFor(action: Action): State[] {
  return STATES.filter((s) => RULES.get(action)?.has(s));
}

function resolveTarget(target: Target, machine: MachineRecord & Partial<LifecycleFields>): State {
  if (typeof target === 'string') return target;
  if ('return' in target) {
    // A record without a usable return state (edited by hand, older version) goes to Broken: the operator
    // decides, rather than us guessing Ready (re-deployable) for a machine that may hold someone's system.
    return isState(machine.rescueReturn) && machine.rescueReturn !== 'Rescue' ? machine.rescueReturn : 'Broken';
  }
  return typeof machine.commissionedAt === 'string' ? target.commissioned : target.otherwise;
}

/**
 * Applies `action` to `machine`: the new record, the effects and the event, or LIFECYCLE_INVALID_TRANSITION
 * (409 in the API) naming the state, the action and where the action is allowed. Pure.
 */
export function transition<M extends MachineRecord>(machine: M, action: string, ctx: TransitionContext): TransitionResult<M> {
  const from = machine.state;
  const rule = ruleFor(from, action);
  if (!rule || !isState(from) || !isAction(action)) throw invalidTransition(machine, action);
  if (ctx.reason !== undefined && ctx.reason.length > MAX_REASON_LENGTH) throw new TypeError(`transition: reason longer than ${MAX_REASON_LENGTH} characters`);
  const at = new Date(ctx.now).toISOString();
  const to = resolveTarget(rule.to, machine);

  const effects: Effect[] = [{ kind: 'bootScript', script: BOOT_SCRIPT_BY_STATE[to] }];
  if (typeof rule.to === 'object' && 'return' in rule.to) effects.push(...(RESCUE_EXIT_EFFECTS[to] ?? RESCUE_EXIT_DEFAULT));
  else effects.push(...rule.effects);

  const next = { ...machine } as M & Partial<LifecycleFields>;
  next.state = to;
  next.stateChangedAt = at;
  next.updatedAt = at;
  // Cleared by assignment, not `delete`: a deleted property sends V8 objects into slow dictionary mode, and the
  // registry walks 100,000 of these. JSON drops undefined fields on the way to the store.
  next.phaseDeadline = undefined;
  next.stateReason = undefined;
  next.rescueReturn = undefined;
  if (isPhaseState(to)) {
    const ms = ctx.timeouts?.[to] ?? PHASE_TIMEOUTS_MS[to];
    effects.push({ kind: 'timeout', ms });
    next.phaseDeadline = new Date(ctx.now + ms).toISOString();
  }
  if (to === 'Rescue') next.rescueReturn = from;
  if (action === 'commission-done') next.commissionedAt = at;
  if (ctx.reason !== undefined && ctx.reason !== '') next.stateReason = ctx.reason;

  const data: Record<string, unknown> = { from, to, action, hostname: machine.hostname, effects };
  if (next.stateReason !== undefined) data.reason = next.stateReason;
  return {
    from, state: to, action, machine: next as M, effects,
    event: { type: 'machine.state', actor: ctx.actor, subject: machine.id, data },
  };
}

export function invalidTransition(machine: Pick<MachineRecord, 'id' | 'state'>, action: string): MetalboxError {
  if (!isAction(action)) {
    return new MetalboxError('LIFECYCLE_INVALID_TRANSITION', `unknown action ${JSON.stringify(action)}`, { details: { machine: machine.id, state: machine.state, action } });
  }
  const allowed = statesFor(action);
  const legal = actionsFrom(machine.state, USER_ACTIONS);
  return new MetalboxError('LIFECYCLE_INVALID_TRANSITION',
    `machine ${machine.id} is ${machine.state}: ${action} is allowed only from ${allowed.join(', ')}`
      + (legal.length > 0 ? `; from ${machine.state}: ${legal.join(', ')}` : ''),
    { details: { machine: machine.id, state: machine.state, action, allowedFrom: allowed } });
}

/** The deadline of a machine's phase (ms), or undefined when it is not in a phase. */
export function deadlineOf(machine: MachineRecord & Partial<LifecycleFields>, timeouts?: Partial<Record<PhaseState, number>>): number | undefined {
  if (!isPhaseState(machine.state)) return undefined;
  const stored = typeof machine.phaseDeadline === 'string' ? Date.parse(machine.phaseDeadline) : Number.NaN;
  if (!Number.isNaN(stored)) return stored;
  // A phase record without a deadline (written before deadlines existed, or by hand): count from when it
  // entered the state, else from its last update.
  const since = Date.parse(typeof machine.stateChangedAt === 'string' ? machine.stateChangedAt : machine.updatedAt);
  return (Number.isNaN(since) ? 0 : since) + (timeouts?.[machine.state] ?? PHASE_TIMEOUTS_MS[machine.state]);
}

/**
 * A machine stuck in a phase past its deadline: the `timeout` transition to the phase's failed state, with
 * the reason. `undefined` when the machine is not in a phase or its deadline has not passed. Pure.
 */
export function expire<M extends MachineRecord>(machine: M, now: number, timeouts?: Partial<Record<PhaseState, number>>): TransitionResult<M> | undefined {
  const deadline = deadlineOf(machine, timeouts);
  if (deadline === undefined || now < deadline) return undefined;
  const m = machine as M & Partial<LifecycleFields>;
  const since = typeof m.stateChangedAt === 'string' ? ` (entered ${m.stateChangedAt})` : '';
  const reason = `${machine.state} timed out: no report by ${new Date(deadline).toISOString()}${since}`;
  return transition(machine, 'timeout', { actor: 'lifecycle', now, reason, ...(timeouts ? { timeouts } : {}) });
}
