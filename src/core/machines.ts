// The machine registry: every machine in memory, with its indexes and sorted views, in front of the store's
// `machines` collection. It is the ONLY writer of that collection (enlistment, the API, the lifecycle all go
// through it), which is what keeps the views exact:
//
// - open() loads every machine once (about 1 s per 100,000 from LevelDB);
// - a write goes to the store first (the record and its event in one durable batch) and only once that
//   resolved are the maps and views changed and listeners told: what the API lists is always on disk;
// - writes to one machine run one at a time (a per-machine queue), so an action and the timeout sweeper never
//   both act on the same old state; writes to different machines run concurrently (and share syncs);
// - uniqueness (MAC, host name, UUID) is checked here first for a clear MACHINE_CONFLICT, and enforced again
//   by the store's unique indexes (STORE_CONFLICT, mapped to MACHINE_CONFLICT) for anything that races.
//
// Reads (get, find, list) are synchronous and never touch the store.
//
// A transition's effects (boot device, power) are carried out by the lifecycle runner after the write. So that
// metalbox stopping in between (kill -9, power loss) loses none, the record carries them as `pendingEffects`,
// written in the transition's batch and trimmed (recordEffects) in the batch of each effect's outcome event;
// the runner re-runs what is left at start.
import { MetalboxError, isMetalboxError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import type { EventRecord, MachineRecord, Store, WriteOp } from '../store/types.ts';
import type { EventLog, NewEvent } from './events.ts';
import {
  expire, isPhaseState, PHASE_STATES, transition, type Action, type Effect, type LifecycleFields, type PhaseState, type State,
} from './lifecycle.ts';
import { checkHostname, checkMac, checkTags, checkUuid, hostnameCandidates, newMachineId } from './machine-fields.ts';
import { CountCache, listPage, SORT_FIELDS, SortedView, type ListPage, type ListQuery, type ListSource, type SortField } from './machine-list.ts';

/** A machine as the registry keeps it: the store record with the lifecycle's fields. */
export type Machine = MachineRecord & Partial<Omit<LifecycleFields, 'state'>> & { pendingEffects?: PendingEffects };

/**
 * The effects of a machine's latest transition not carried out yet. Replaced by every transition (a newer one
 * supersedes what the older one left), trimmed as the runner carries them out, cleared when none is left.
 */
export interface PendingEffects {
  /** The transition's `machine.state` event id: unique, where two transitions may share a millisecond. */
  transition: string;
  action: Action;
  from: State;
  to: State;
  /** What is left to do, in order (only kinds someone carries out: see `drivenEffects`). */
  effects: Effect[];
  /** An effect failed during a phase and the phase's failed action is yet to be applied, with this reason. */
  failure?: string;
}

/**
 * The effects someone must carry out on the machine: boot device and power. The others need no one: the boot
 * script follows the state (the boot service reads it per request), the sweeper keeps phase deadlines.
 */
export function drivenEffects(effects: readonly Effect[]): Effect[] {
  return effects.filter((e) => e.kind === 'bootDevice' || e.kind === 'power');
}

/** Who does something, and how their event is finished (the API fills in the client address and marks the request audited). */
export interface ActorContext {
  actor: string;
  /** Turns the registry's event into the one written (src/api/auth.ts `req.auditEvent`); default: `actor` as is. */
  audit?: (event: { type: string; subject?: string; data?: Record<string, unknown> }) => NewEvent;
}

export interface CreateInput {
  /** The machine's boot MAC; absent for a machine created for its BMC. */
  mac?: string;
  hostname?: string;
  uuid?: string;
  tags?: string[];
}

export interface UpdateInput {
  hostname?: string;
  tags?: string[];
}

export type MachineChange =
  | { kind: 'created'; machine: Machine; event: EventRecord }
  | { kind: 'updated'; machine: Machine; before: Machine; event: EventRecord }
  | { kind: 'deleted'; machine: Machine; event: EventRecord }
  | { kind: 'state'; machine: Machine; before: Machine; from: State; to: State; action: Action; effects: Effect[]; event: EventRecord };
export type MachineListener = (change: MachineChange) => void;

export interface ActResult { machine: Machine; effects: Effect[]; event: EventRecord }

export interface RegistryOptions {
  store: Store;
  events: EventLog;
  logger?: Logger;
  now?: () => number;
  /** Per-phase timeouts (ms), overriding the lifecycle's defaults. */
  timeouts?: Partial<Record<PhaseState, number>>;
  /** How often the sweeper looks for machines past their phase deadline (default 5 s). */
  sweepMs?: number;
  /** For tests: machine ids. */
  newId?: () => string;
}

const SYSTEM_ACTOR = 'lifecycle';

export class MachineRegistry implements ListSource {
  readonly name = 'machines';
  private readonly byId = new Map<string, Machine>();
  private readonly macs = new Map<string, string>();
  private readonly hostnames = new Map<string, string>();
  private readonly uuids = new Map<string, string>();
  private readonly states = new Map<string, Set<Machine>>();
  private readonly tagSets = new Map<string, Set<Machine>>();
  private readonly views: Record<SortField, SortedView>;
  private readonly counts = new CountCache();
  /** Values claimed by writes in flight (not yet in the maps). */
  private readonly reserved = new Set<string>();
  private readonly queues = new Map<string, Promise<unknown>>();
  private readonly listeners = new Set<MachineListener>();
  private readonly now: () => number;
  private readonly newId: () => string;
  private sweeper: NodeJS.Timeout | undefined;
  private sweeping: Promise<number> | undefined;

  private constructor(private readonly opts: RegistryOptions) {
    this.now = opts.now ?? Date.now;
    this.newId = opts.newId ?? (() => newMachineId());
    this.views = Object.fromEntries(SORT_FIELDS.map((f) => [f, new SortedView(f)])) as Record<SortField, SortedView>;
  }

  /** Loads every machine from the store. */
  static async open(opts: RegistryOptions): Promise<MachineRegistry> {
    const r = new MachineRegistry(opts);
    for await (const [, record] of opts.store.machines.entries()) r.index(undefined, normalize(record));
    for (const v of Object.values(r.views)) v.load(r.byId.values());
    return r;
  }

  get size(): number { return this.byId.size; }
  view(field: SortField): SortedView { return this.views[field]; }
  withState(state: string): ReadonlySet<Machine> | undefined { return this.states.get(state); }
  withTag(tag: string): ReadonlySet<Machine> | undefined { return this.tagSets.get(tag); }

  get(id: string): Machine | undefined { return this.byId.get(id); }
  byMac(mac: string): Machine | undefined {
    const id = this.macs.get(mac.toLowerCase());
    return id === undefined ? undefined : this.byId.get(id);
  }
  byHostname(hostname: string): Machine | undefined {
    const id = this.hostnames.get(hostname.toLowerCase());
    return id === undefined ? undefined : this.byId.get(id);
  }
  byUuid(uuid: string): Machine | undefined {
    const id = this.uuids.get(uuid.toLowerCase());
    return id === undefined ? undefined : this.byId.get(id);
  }

  /** By id, else MAC (any accepted form), else host name; `undefined` when none matches. */
  find(ref: string): Machine | undefined {
    const direct = this.byId.get(ref);
    if (direct) return direct;
    let mac: string | undefined;
    try { mac = checkMac(ref); } catch { mac = undefined; }
    return (mac !== undefined ? this.byMac(mac) : undefined) ?? this.byHostname(ref);
  }

  /** Like find, or MACHINE_NOT_FOUND. */
  resolve(ref: string): Machine {
    const m = this.find(ref);
    if (!m) throw new MetalboxError('MACHINE_NOT_FOUND', `no machine has id, MAC or host name ${JSON.stringify(ref)}`, { details: { machine: ref } });
    return m;
  }

  list(q: ListQuery): ListPage {
    return listPage(this, q, this.counts);
  }

  /** Machines whose latest transition has effects left to carry out (the lifecycle runner resumes them at start). */
  withPendingEffects(): Machine[] {
    const out: Machine[] = [];
    for (const m of this.byId.values()) if (m.pendingEffects !== undefined) out.push(m);
    return out;
  }

  /** Told of every change after it is durable; returns the unsubscribe function. A listener that throws is logged. */
  subscribe(listener: MachineListener): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  // -------------------------------------------------------------------------------------------------------
  // Writes

  /**
   * A new machine in state New, from its MAC or (no MAC) for its BMC. `beforeWrite` runs once the machine is
   * checked and its MAC, host name and UUID are claimed, before anything is written (the API enrols the BMC
   * there); if it throws, nothing is written.
   */
  async create(input: CreateInput, ctx: ActorContext, hooks: { beforeWrite?: (m: Machine) => Promise<void> } = {}): Promise<Machine> {
    const mac = input.mac !== undefined ? checkMac(input.mac) : undefined;
    const uuid = input.uuid !== undefined ? checkUuid(input.uuid) : undefined;
    const tags = input.tags !== undefined ? checkTags(input.tags) : [];
    let hostname = input.hostname !== undefined ? checkHostname(input.hostname) : undefined;
    const claims: string[] = [];
    try {
      if (mac !== undefined) this.claim(claims, 'mac', mac, this.macs);
      if (uuid !== undefined) this.claim(claims, 'uuid', uuid, this.uuids);
      let id = this.newId();
      while (this.byId.has(id) || this.reserved.has(`id\0${id}`)) id = this.newId();
      this.claim(claims, 'id', id, this.byId);
      if (hostname !== undefined) this.claim(claims, 'hostname', hostname, this.hostnames);
      else {
        for (const name of hostnameCandidates(mac, id)) {
          if (!this.hostnames.has(name) && !this.reserved.has(`hostname\0${name}`)) { hostname = name; break; }
        }
        this.claim(claims, 'hostname', hostname!, this.hostnames);
      }
      const at = new Date(this.now()).toISOString();
      const machine = shape({ id, hostname: hostname!, uuid, macs: mac !== undefined ? [mac] : [], state: 'New', tags, createdAt: at, updatedAt: at, stateChangedAt: at });
      await hooks.beforeWrite?.(machine);
      const event = this.eventOp(ctx, { type: 'machine.created', subject: id, data: { hostname: machine.hostname, macs: machine.macs, ...(uuid ? { uuid } : {}), tags, state: 'New' } });
      await this.commit([{ type: 'put', collection: 'machines', key: id, value: machine }, event.op]);
      this.applyChange(undefined, machine);
      this.emit({ kind: 'created', machine, event: event.record });
      return machine;
    } finally {
      for (const c of claims) this.reserved.delete(c);
    }
  }

  /** Host name and tags. Nothing changed: no write, no event. */
  async update(ref: string, input: UpdateInput, ctx: ActorContext): Promise<Machine> {
    const hostname = input.hostname !== undefined ? checkHostname(input.hostname) : undefined;
    const tags = input.tags !== undefined ? checkTags(input.tags) : undefined;
    const { id } = this.resolve(ref);
    return this.serial(id, async () => {
      const before = this.current(id);
      const changed: Record<string, { from: unknown; to: unknown }> = {};
      if (hostname !== undefined && hostname !== before.hostname) changed.hostname = { from: before.hostname, to: hostname };
      if (tags !== undefined && JSON.stringify(tags) !== JSON.stringify(before.tags)) changed.tags = { from: before.tags, to: tags };
      if (Object.keys(changed).length === 0) return before;
      const claims: string[] = [];
      try {
        if (changed.hostname) this.claim(claims, 'hostname', hostname!, this.hostnames);
        const after = shape({ ...before, ...(changed.hostname ? { hostname } : {}), ...(changed.tags ? { tags } : {}), updatedAt: this.iso() });
        const event = this.eventOp(ctx, { type: 'machine.updated', subject: id, data: { hostname: after.hostname, changed } });
        await this.commit([{ type: 'put', collection: 'machines', key: id, value: after }, event.op]);
        this.applyChange(before, after);
        this.emit({ kind: 'updated', machine: after, before, event: event.record });
        return after;
      } finally {
        for (const c of claims) this.reserved.delete(c);
      }
    });
  }

  /**
   * Forgets a machine. Refused (LIFECYCLE_INVALID_TRANSITION) while it runs a phase or is in Rescue: abort or
   * exit first, so a machine is never deleted under a running ephemeral environment.
   */
  async remove(ref: string, ctx: ActorContext): Promise<Machine> {
    const { id } = this.resolve(ref);
    return this.serial(id, async () => {
      const before = this.current(id);
      if (isPhaseState(before.state) || before.state === 'Rescue') {
        throw new MetalboxError('LIFECYCLE_INVALID_TRANSITION',
          `machine ${id} is ${before.state}: ${before.state === 'Rescue' ? 'exit-rescue' : 'abort'} it before deleting it`,
          { details: { machine: id, state: before.state, action: 'delete' } });
      }
      const event = this.eventOp(ctx, { type: 'machine.deleted', subject: id, data: { hostname: before.hostname, macs: before.macs, state: before.state } });
      await this.commit([{ type: 'del', collection: 'machines', key: id }, event.op]);
      this.applyChange(before, undefined);
      this.emit({ kind: 'deleted', machine: before, event: event.record });
      return before;
    });
  }

  /**
   * A lifecycle action: the state change and its event in one batch; the effects for whoever drives the machine.
   * `set` adds fields the action carries (the deploy request, the release's erase mode, commissioning's
   * inventory) to the same record write; it may not touch the registry's own fields (EXTRA_FIELD rule).
   */
  async act(ref: string, action: string, ctx: ActorContext & { reason?: string; set?: ExtraFields }): Promise<ActResult> {
    if (ctx.set) checkExtra(ctx.set);
    const { id } = this.resolve(ref);
    return this.serial(id, async () => this.applyTransition(this.current(id), ctx, (m) => transition(ctx.set ? { ...m, ...ctx.set } : m, action, {
      actor: ctx.actor, now: this.now(), ...(ctx.reason !== undefined ? { reason: ctx.reason } : {}), ...(this.opts.timeouts ? { timeouts: this.opts.timeouts } : {}),
    })));
  }

  /**
   * What a machine reports about itself (the agent API, src/services/boot-http/agent-routes.ts): a MAC it booted
   * from (added to `macs`), its SMBIOS UUID (only when it has none: an existing one is never replaced), and
   * extra fields (`inventory`, `deployment`, ...). The record and `event` are written in one batch; listeners
   * get an 'updated' change. Nothing new: no write, no event.
   */
  async amend(ref: string, input: { mac?: string; uuid?: string; set?: ExtraFields }, ctx: ActorContext, event: { type: string; data?: Record<string, unknown> }): Promise<Machine> {
    const mac = input.mac !== undefined ? checkMac(input.mac) : undefined;
    const uuid = input.uuid !== undefined ? checkUuid(input.uuid) : undefined;
    if (input.set) checkExtra(input.set);
    const { id } = this.resolve(ref);
    return this.serial(id, async () => {
      const before = this.current(id);
      const addMac = mac !== undefined && !before.macs.includes(mac);
      const addUuid = uuid !== undefined && before.uuid === undefined;
      if (!addMac && !addUuid && !input.set) return before;
      const claims: string[] = [];
      try {
        if (addMac) this.claim(claims, 'mac', mac, this.macs);
        if (addUuid) this.claim(claims, 'uuid', uuid, this.uuids);
        const after = shape({
          ...before, ...input.set,
          ...(addMac ? { macs: [...before.macs, mac] } : {}), ...(addUuid ? { uuid } : {}), updatedAt: this.iso(),
        });
        const data = { hostname: after.hostname, ...(addMac ? { mac } : {}), ...(addUuid ? { uuid } : {}), ...event.data };
        const e = this.eventOp(ctx, { type: event.type, subject: id, data });
        await this.commit([{ type: 'put', collection: 'machines', key: id, value: after }, e.op]);
        this.applyChange(before, after);
        this.emit({ kind: 'updated', machine: after, before, event: e.record });
        return after;
      } finally {
        for (const c of claims) this.reserved.delete(c);
      }
    });
  }

  /**
   * The lifecycle runner's record of carrying out a transition's effects: `event` (an effect's outcome) and what
   * is still left of that transition (`left.effects` empty and no failure: nothing, the marker is cleared), in
   * one batch. When the machine's pending effects belong to another transition by now (a newer one replaced
   * them) or the machine is gone, the event alone is written. No listener is told: nothing a client sees changed.
   */
  async recordEffects(id: string, transition: string, left: { effects: Effect[]; failure?: string }, event: NewEvent): Promise<void> {
    await this.serial(id, async () => {
      const op = this.opts.events.op(event);
      const before = this.byId.get(id);
      const pending = before?.pendingEffects;
      if (!before || pending?.transition !== transition) { await this.opts.store.write([op]); return; }
      const rest: PendingEffects | undefined = left.effects.length > 0 || left.failure !== undefined
        ? { ...pending, effects: left.effects, failure: left.failure }
        : undefined;
      const after = shape({ ...before, pendingEffects: rest });
      await this.commit([{ type: 'put', collection: 'machines', key: id, value: after }, op]);
      this.applyChange(before, after);
    });
  }

  /** Moves every machine past its phase deadline to the phase's failed state; returns how many. */
  async sweep(): Promise<number> {
    if (this.sweeping) return this.sweeping;
    const run = (async () => {
      const now = this.now();
      const due: string[] = [];
      for (const phase of PHASE_STATES) {
        for (const m of this.states.get(phase) ?? []) if (expire(m, now, this.opts.timeouts)) due.push(m.id);
      }
      let n = 0;
      for (const id of due) {
        try {
          await this.serial(id, async () => {
            const m = this.byId.get(id);
            const r = m && expire(m, this.now(), this.opts.timeouts);
            if (!r) return; // changed meanwhile (an agent report, an abort, a delete)
            await this.applyTransition(m, { actor: SYSTEM_ACTOR }, () => r);
            n++;
            this.opts.logger?.warn({ machine: id, hostname: m.hostname, from: r.from, to: r.state }, r.machine.stateReason ?? 'phase timed out');
          });
        } catch (err) {
          this.opts.logger?.error({ err, machine: id }, 'could not move a timed-out machine to its failed state');
        }
      }
      return n;
    })();
    this.sweeping = run;
    try {
      return await run;
    } finally {
      this.sweeping = undefined;
    }
  }

  /** Starts the timeout sweeper (a Service for main's runner: the name is `machines`). */
  async start(signal?: AbortSignal): Promise<void> {
    const every = this.opts.sweepMs ?? 5000;
    this.sweeper = setInterval(() => void this.sweep(), every);
    this.sweeper.unref();
    signal?.addEventListener('abort', () => clearInterval(this.sweeper), { once: true });
    void this.sweep(); // phases that expired while metalbox was down
  }

  async stop(): Promise<void> {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    await this.sweeping;
    await Promise.allSettled([...this.queues.values()]);
  }

  // -------------------------------------------------------------------------------------------------------
  // Internals

  private async applyTransition(before: Machine, ctx: ActorContext, step: (m: Machine) => ReturnType<typeof transition<Machine>>): Promise<ActResult> {
    const r = step(before);
    const event = this.eventOp(ctx, { type: r.event.type, ...(r.event.subject !== undefined ? { subject: r.event.subject } : {}), ...(r.event.data ? { data: r.event.data } : {}) });
    // What the runner must do, durable with the state change; replaces whatever an earlier transition left.
    const work = drivenEffects(r.effects);
    r.machine = shape({
      ...r.machine,
      pendingEffects: work.length > 0 ? { transition: event.record.id, action: r.action, from: r.from, to: r.state, effects: work } : undefined,
    });
    await this.commit([{ type: 'put', collection: 'machines', key: before.id, value: r.machine }, event.op]);
    this.applyChange(before, r.machine);
    this.emit({ kind: 'state', machine: r.machine, before, from: r.from, to: r.state, action: r.action, effects: r.effects, event: event.record });
    return { machine: r.machine, effects: r.effects, event: event.record };
  }

  private eventOp(ctx: ActorContext, e: { type: string; subject?: string; data?: Record<string, unknown> }): { op: WriteOp; record: EventRecord } {
    const event: NewEvent = ctx.audit ? ctx.audit(e) : { ...e, actor: ctx.actor };
    const op = this.opts.events.op(event);
    return { op, record: (op as { value: EventRecord }).value };
  }

  private async commit(ops: WriteOp[]): Promise<void> {
    try {
      await this.opts.store.write(ops);
    } catch (err) {
      if (isMetalboxError(err, 'STORE_CONFLICT')) {
        const d = err.details ?? {};
        throw new MetalboxError('MACHINE_CONFLICT', `${String(d.index ?? 'a unique field')} ${JSON.stringify(d.value)} already belongs to machine ${String(d.owner)}`,
          { cause: err, details: { field: d.index, owner: d.owner } });
      }
      throw err;
    }
  }

  /** Claims a unique value for a write in flight, or MACHINE_CONFLICT naming the owner. */
  private claim(claims: string[], field: string, value: string, owners: Map<string, unknown>): void {
    const key = `${field}\0${value}`;
    const owner = owners.get(value);
    if (owner !== undefined) {
      const id = typeof owner === 'string' ? owner : value;
      throw new MetalboxError('MACHINE_CONFLICT', `${field} ${value} already belongs to machine ${id}`, { details: { field, owner: id } });
    }
    if (this.reserved.has(key)) throw new MetalboxError('MACHINE_CONFLICT', `${field} ${value} is being given to another machine right now`, { details: { field } });
    this.reserved.add(key);
    claims.push(key);
  }

  private current(id: string): Machine {
    const m = this.byId.get(id);
    if (!m) throw new MetalboxError('MACHINE_NOT_FOUND', `machine ${id} was deleted`, { details: { machine: id } });
    return m;
  }

  /** Runs `fn` after every earlier write to the same machine. */
  private serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(id) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.queues.set(id, tail);
    void tail.then(() => { if (this.queues.get(id) === tail) this.queues.delete(id); });
    return run;
  }

  private applyChange(before: Machine | undefined, after: Machine | undefined): void {
    this.index(before, after);
    for (const v of Object.values(this.views)) v.update(before, after);
    this.counts.update(before, after);
  }

  /** Maps and sets (not the sorted views). */
  private index(before: Machine | undefined, after: Machine | undefined): void {
    if (before) {
      this.byId.delete(before.id);
      for (const mac of before.macs) if (this.macs.get(mac) === before.id) this.macs.delete(mac);
      if (this.hostnames.get(before.hostname) === before.id) this.hostnames.delete(before.hostname);
      if (before.uuid !== undefined && this.uuids.get(before.uuid) === before.id) this.uuids.delete(before.uuid);
      this.states.get(before.state)?.delete(before);
      for (const t of before.tags) this.tagSets.get(t)?.delete(before);
    }
    if (after) {
      this.byId.set(after.id, after);
      for (const mac of after.macs) this.macs.set(mac, after.id);
      this.hostnames.set(after.hostname, after.id);
      if (after.uuid !== undefined) this.uuids.set(after.uuid, after.id);
      let s = this.states.get(after.state);
      if (!s) this.states.set(after.state, (s = new Set()));
      s.add(after);
      for (const t of after.tags) {
        let set = this.tagSets.get(t);
        if (!set) this.tagSets.set(t, (set = new Set()));
        set.add(after);
      }
    }
    if (before) {
      if (this.states.get(before.state)?.size === 0) this.states.delete(before.state);
      for (const t of before.tags) if (this.tagSets.get(t)?.size === 0) this.tagSets.delete(t);
    }
  }

  private emit(change: MachineChange): void {
    for (const l of this.listeners) {
      try {
        l(change);
      } catch (err) {
        this.opts.logger?.error({ err }, 'a machine change listener failed');
      }
    }
  }

  private iso(): string {
    return new Date(this.now()).toISOString();
  }
}

/** Fields an action or a report adds to a machine record beside the registry's own (see `act`, `amend`). */
export type ExtraFields = Record<string, unknown>;

/** The registry's own fields, which `set` may not write: they have their own checks, indexes and transitions. */
const OWN_FIELDS: ReadonlySet<string> = new Set(['id', 'hostname', 'uuid', 'macs', 'state', 'tags', 'createdAt', 'updatedAt',
  'stateChangedAt', 'stateReason', 'phaseDeadline', 'rescueReturn', 'commissionedAt', 'pendingEffects']);

function checkExtra(set: ExtraFields): void {
  for (const k of Object.keys(set)) if (OWN_FIELDS.has(k)) throw new TypeError(`machine field ${k} cannot be set as an extra field`);
}

/** A stored record as the registry holds it: MACs, host name and UUID in lower case, tags an array. */
function normalize(r: MachineRecord): Machine {
  return shape({
    ...r,
    hostname: typeof r.hostname === 'string' ? r.hostname.toLowerCase() : '',
    uuid: typeof r.uuid === 'string' ? r.uuid.toLowerCase() : undefined,
    macs: Array.isArray(r.macs) ? r.macs.map((x) => x.toLowerCase()) : [],
    tags: Array.isArray(r.tags) ? r.tags : [],
  });
}

/**
 * Every machine object with the same fields in the same order (absent ones undefined, dropped by JSON): one
 * V8 hidden class for all, so the list walks read `state`, `tags` and `hostname` monomorphically.
 */
function shape(r: Machine): Machine {
  const { id, hostname, uuid, macs, state, tags, createdAt, updatedAt, stateChangedAt, stateReason, phaseDeadline, rescueReturn, commissionedAt, pendingEffects, ...extra } = r;
  return { id, hostname, uuid, macs, state, tags, createdAt, updatedAt, stateChangedAt, stateReason, phaseDeadline, rescueReturn, commissionedAt, pendingEffects, ...extra };
}

/**
 * A system UUID (SMBIOS, IPMI Get System GUID, Redfish) that can name one machine, lower case; `undefined` for
 * a malformed one or a firmware placeholder (all zeros, all ones): QUIRK(firmware) boards that share such a
 * placeholder are common.
 */
export function usableSystemUuid(uuid: string | undefined): string | undefined {
  if (uuid === undefined) return undefined;
  const u = uuid.toLowerCase();
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(u)) return undefined;
  if (/^[0-]+$/.test(u) || /^[f-]+$/.test(u)) return undefined;
  return u;
}
