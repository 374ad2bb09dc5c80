// The BMC service: every BMC operation goes through here, whoever asks (the CLI now, the API and the lifecycle
// later). It owns the policy the drivers do not: power on of a running machine does nothing; one operation at
// a time per BMC (bounded queue, BMC_BUSY beyond); at most bmc.maxSessions operations at once over all BMCs;
// a timeout on every operation; an event for every action (who asked, what the BMC answered); a poller that
// reads every BMC's power state and records changes, backing off BMCs that fail; and secrets sealed at rest.
//
// Records live in the store's `bmcs` collection; every change to one happens under that BMC's lock and is
// re-read there, so a poll never overwrites an edit. Drivers (and their sessions) are cached per BMC and
// closed when the BMC is edited, removed, fails, or the service stops.
import { randomBytes } from 'node:crypto';
import type { Config } from '../../config/schema.ts';
import type { EventLog, NewEvent } from '../../core/events.ts';
import { MetalboxError, errnoCode, isMetalboxError, type ErrorCode } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Metrics } from '../../lib/metrics.ts';
import type { BmcRecord, Store } from '../../store/types.ts';
import { builtinDrivers, type DriverSpec, type DriverTable, type ProbeResult } from '../../bmc/drivers.ts';
import { describeManualRequest, type ManualRequest } from '../../bmc/manual.ts';
import { openSecretBox, type SecretBox } from '../../bmc/secrets.ts';
import { POWER_ACTIONS, type BmcDriver, type BmcEndpoint, type BmcInfo, type BootDeviceRequest, type PowerAction, type PowerState } from '../../bmc/types.ts';
import type { Service } from '../service.ts';
import { KeyedMutex, Semaphore, type Release } from './locks.ts';
import { createBmcMetrics, type BmcMetrics } from './metrics.ts';
import { nextPollMs, planPower } from './policy.ts';
import { CONNECTION_FIELDS, checkBmcId, prepareRecord, viewOf, type BmcInput, type BmcPatch, type BmcView } from './records.ts';

/** Operations that may wait for one BMC; beyond, BMC_BUSY. */
export const MAX_QUEUE_PER_BMC = 8;
/** Operations that may wait for a session slot over all BMCs; beyond, BMC_BUSY. */
export const MAX_QUEUE_SESSIONS = 4096;
const POLLER = 'bmc-poller';
const CLOSE_TIMEOUT_MS = 2000;

export interface BmcServiceDeps {
  store: Store;
  events: EventLog;
  /** The secrets key: loaded (created at first start) by start(), or at the first use that needs it. */
  secrets: () => Promise<SecretBox>;
  config: { bmc: Config['bmc']; interfaces: readonly string[] };
  logger: Logger;
  metrics: Metrics;
  /** Driver table; default the built-in drivers. Tests pass fakes. */
  drivers?: DriverTable;
  random?: () => number;
  now?: () => number;
}

export interface PowerResult {
  bmc: string;
  machineId?: string;
  action: PowerAction;
  /** done: the BMC carried it out; noop: nothing to do (on while on); requested: an operator was asked (manual). */
  result: 'done' | 'noop' | 'requested';
  /** The state read before acting. */
  before: PowerState;
  /** What was sent to the BMC, when it differs from `action` (cycle of an off machine: on). */
  performed?: PowerAction;
  message: string;
  ms: number;
}

export interface TestResult { bmc: string; powerState: PowerState; info: BmcInfo; ms: number }
export interface AddResult { bmc: BmcView; /** Redfish: the certificate fingerprint pinned on first use, when none was given. */ pinnedOnFirstUse?: string }

interface Health { failures: number; lastCode?: string; lastPolledAt?: string }
interface CachedDriver { driver: BmcDriver; secrets: string[] }

/** Errors raised by a BMC or its driver (they count as failures of that BMC), as opposed to queueing or stopping. */
const bmcFailures = new WeakSet<object>();

export class BmcService implements Service {
  readonly name = 'bmc';
  private readonly drivers: DriverTable;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly perBmc = new KeyedMutex(MAX_QUEUE_PER_BMC, (id) => `BMC ${id}`);
  private readonly sessions: Semaphore;
  /** Serialises add/edit/remove, which check uniqueness across records. */
  private readonly admin = new Semaphore(1, 256, 'BMC definitions');
  private readonly cache = new Map<string, CachedDriver>();
  private readonly health = new Map<string, Health>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly abort = new AbortController();
  private box: Promise<SecretBox> | undefined;
  private metricsSet: BmcMetrics | undefined;
  private polling = false;
  private stopped = false;
  private bmcCount = 0;

  constructor(private readonly deps: BmcServiceDeps) {
    this.drivers = deps.drivers ?? builtinDrivers();
    this.random = deps.random ?? Math.random;
    this.now = deps.now ?? Date.now;
    this.sessions = new Semaphore(deps.config.bmc.maxSessions, MAX_QUEUE_SESSIONS, 'a BMC session slot (bmc.maxSessions)');
  }

  // -------------------------------------------------------------------------------------------------------
  // Service lifecycle

  /** Loads the secrets key (creating it at first start; SECRET_KEY_UNUSABLE fails the start) and starts the poller. */
  async start(signal: AbortSignal): Promise<void> {
    signal.addEventListener('abort', () => this.abort.abort(), { once: true });
    this.m(); // the metrics exist from the start, not from the first operation
    await this.secretBox();
    const { pollSeconds } = this.deps.config.bmc;
    let count = 0;
    for await (const [id, record] of this.deps.store.bmcs.entries()) {
      count++;
      this.health.set(id, { failures: record.failures ?? 0, ...(record.lastError ? { lastCode: record.lastError.code } : {}) });
      // The first poll of each BMC falls anywhere in the first interval: a restart does not poll a rack at once.
      if (pollSeconds > 0 && this.spec(record.driver)?.pollable) this.schedule(id, Math.round(this.random() * pollSeconds * 1000));
    }
    this.bmcCount = count;
    this.polling = pollSeconds > 0;
    this.deps.logger.info({ bmcs: count, pollSeconds, maxSessions: this.deps.config.bmc.maxSessions }, 'BMC service started');
  }

  /** Stops polling, cancels waiting and running operations (BMC_TIMEOUT, cancelled), closes every session. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.polling = false;
    this.abort.abort();
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    await Promise.allSettled([...this.inflight]);
    await Promise.allSettled([...this.cache.keys()].map((id) => this.dropDriver(id)));
  }

  /** For `metalbox status` and the API. */
  summary(): { bmcs: number; sessionsActive: number; sessionsWaiting: number; sessionsPeak: number; unreachable: number } {
    return { bmcs: this.bmcCount, sessionsActive: this.sessions.running, sessionsWaiting: this.sessions.waiting, sessionsPeak: this.sessions.peak, unreachable: this.unreachableCount() };
  }

  // -------------------------------------------------------------------------------------------------------
  // Definitions: add, edit, remove, list, show

  async list(): Promise<BmcView[]> {
    const out: BmcView[] = [];
    for await (const [, r] of this.deps.store.bmcs.entries()) out.push(this.view(r));
    return out;
  }

  /** By BMC id, else by machine id; undefined when neither names one. */
  async get(ref: string): Promise<BmcView | undefined> {
    const r = await this.find(ref);
    return r && this.view(r);
  }

  async add(input: BmcInput, actor: string, signal?: AbortSignal): Promise<AddResult> {
    this.assertRunning();
    const release = await this.admin.acquire(signal);
    try {
      const at = this.iso();
      const id = input.id ?? (await this.defaultId(input.machineId));
      const prepared = prepareRecord(this.drivers, { ...input, id }, undefined, at);
      const { record } = prepared;
      if (await this.deps.store.bmcs.get(id)) throw new MetalboxError('BMC_INVALID', `a BMC with id ${id} exists; edit it or choose another id`);
      if (record.machineId !== undefined) await this.assertMachineFree(record.machineId, id);
      let pinned: string | undefined;
      if (record.driver === 'redfish' && record.tlsFingerprint === undefined && this.spec('redfish')?.probe) {
        // Trust on first use: pin the certificate the BMC presents now; the operator sees it (CLI, event).
        const probe = await this.probe({ driver: 'redfish', address: record.address, ...(record.port !== undefined ? { port: record.port } : {}) }, signal);
        if (probe.tlsFingerprint !== undefined) record.tlsFingerprint = pinned = probe.tlsFingerprint;
      }
      await this.sealInto(record, prepared.password, prepared.kg);
      await this.write(record, [{
        type: 'bmc.added', actor, subject: subjectOf(record),
        data: { bmc: id, driver: record.driver, address: record.address, ...(record.machineId ? { machineId: record.machineId } : {}), ...(pinned ? { pinnedOnFirstUse: pinned } : {}) },
      }]);
      this.bmcCount++;
      this.health.set(id, { failures: 0 });
      if (this.polling && this.spec(record.driver)?.pollable) this.schedule(id, Math.round(this.random() * 2000));
      this.deps.logger.info({ bmc: id, driver: record.driver, address: record.address, actor }, 'BMC added');
      return { bmc: this.view(record), ...(pinned ? { pinnedOnFirstUse: pinned } : {}) };
    } finally {
      release();
    }
  }

  async edit(ref: string, patch: BmcPatch, actor: string, signal?: AbortSignal): Promise<BmcView> {
    this.assertRunning();
    const release = await this.admin.acquire(signal);
    try {
      const id = (await this.resolve(ref)).id;
      return await this.withBmc(id, signal, async (previous) => {
        const prepared = prepareRecord(this.drivers, { ...patch, id }, previous, this.iso());
        const { record } = prepared;
        if (record.machineId !== undefined && record.machineId !== previous.machineId) await this.assertMachineFree(record.machineId, id);
        await this.sealInto(record, prepared.password, prepared.kg);
        const reconnect = prepared.changed.some((f) => CONNECTION_FIELDS.includes(f));
        if (reconnect) {
          // A new address or credentials deserve a fresh start: failures and the error they left are cleared.
          delete record.lastError;
          delete record.failures;
          this.health.set(id, { failures: 0 });
          await this.dropDriver(id);
        }
        await this.write(record, [{ type: 'bmc.edited', actor, subject: subjectOf(record), data: { bmc: id, changed: prepared.changed } }]);
        if (reconnect && this.polling) {
          this.unschedule(id);
          if (this.spec(record.driver)?.pollable) this.schedule(id, Math.round(this.random() * 2000));
        }
        this.deps.logger.info({ bmc: id, changed: prepared.changed, actor }, 'BMC edited');
        return this.view(record);
      });
    } finally {
      release();
    }
  }

  async remove(ref: string, actor: string, signal?: AbortSignal): Promise<BmcView> {
    this.assertRunning();
    const release = await this.admin.acquire(signal);
    try {
      const id = (await this.resolve(ref)).id;
      return await this.withBmc(id, signal, async (record) => {
        await this.deps.store.write([
          { type: 'del', collection: 'bmcs', key: id },
          this.deps.events.op({ type: 'bmc.removed', actor, subject: subjectOf(record), data: { bmc: id, driver: record.driver, address: record.address } }),
        ]);
        this.bmcCount = Math.max(0, this.bmcCount - 1);
        this.unschedule(id);
        this.health.delete(id);
        await this.dropDriver(id);
        this.deps.logger.info({ bmc: id, actor }, 'BMC removed');
        return this.view(record);
      });
    } finally {
      release();
    }
  }

  // -------------------------------------------------------------------------------------------------------
  // Operations

  /** Logs in, reads the power state and what the BMC says about itself. An event either way. */
  async test(ref: string, actor: string, signal?: AbortSignal): Promise<TestResult> {
    this.assertRunning();
    const { id } = await this.resolve(ref);
    return this.withBmc(id, signal, async (record) => {
      const started = this.now();
      try {
        const { state, info } = await this.call(record, 'test', signal, async (d, s) => ({ state: await d.powerStatus(s), info: await d.info(s) }));
        const ms = this.now() - started;
        await this.succeeded(record, state, actor, [{ type: 'bmc.test', actor, subject: subjectOf(record), data: { bmc: id, result: 'ok', powerState: state, ms, ...infoSummary(info) } }]);
        return { bmc: id, powerState: state, info, ms };
      } catch (err) {
        await this.failed(record, err, 'test', actor, { type: 'bmc.test', data: { bmc: id, result: 'failed' } });
        throw err;
      }
    });
  }

  /** Reads the power state now (not an action: no event unless the state changed). */
  async powerStatus(ref: string, actor: string, signal?: AbortSignal): Promise<{ bmc: string; state: PowerState; ms: number }> {
    this.assertRunning();
    const { id } = await this.resolve(ref);
    return this.withBmc(id, signal, async (record) => {
      const started = this.now();
      try {
        const state = await this.call(record, 'status', signal, (d, s) => d.powerStatus(s));
        await this.succeeded(record, state, actor, []);
        return { bmc: id, state, ms: this.now() - started };
      } catch (err) {
        await this.failed(record, err, 'status', actor);
        throw err;
      }
    });
  }

  /**
   * A power action by `actor` (a user, the lifecycle). Reads the state first: on of a running machine and off
   * of an off one do nothing; cycle or reset of an off machine powers it on (see planPower). One event with
   * the outcome: done, noop, requested (manual: the operator was asked), or failed with the error code.
   */
  async power(ref: string, action: PowerAction, actor: string, signal?: AbortSignal): Promise<PowerResult> {
    if (!(POWER_ACTIONS as readonly string[]).includes(action)) throw new MetalboxError('BMC_INVALID', `unknown power action ${JSON.stringify(action)}; one of ${POWER_ACTIONS.join(', ')}`);
    this.assertRunning();
    const { id } = await this.resolve(ref);
    return this.withBmc(id, signal, async (record) => {
      const started = this.now();
      const subject = subjectOf(record);
      const base = { bmc: id, action, ...(record.machineId ? { machineId: record.machineId } : {}) };
      let before: PowerState = 'unknown';
      try {
        before = await this.call(record, 'status', signal, (d, s) => d.powerStatus(s)).catch((err: unknown) => {
          // A driver that cannot read status (none built in) still takes actions.
          if (isMetalboxError(err, 'BMC_UNSUPPORTED')) return 'unknown' as const;
          throw err;
        });
        await this.observe(record, before, actor);
        const plan = planPower(action, before);
        if (plan.kind === 'noop') {
          const ms = this.now() - started;
          this.m().actions.inc({ action, result: 'noop' });
          await this.succeeded(record, before, actor, [{ type: 'bmc.power', actor, subject, data: { ...base, result: 'noop', before, message: plan.reason, ms } }]);
          this.deps.logger.info({ bmc: id, action, actor, result: 'noop' }, `power ${action}: ${plan.reason}`);
          return { ...base, result: 'noop', before, message: plan.reason, ms };
        }
        // A cycle may be off, a wait for off, then on (Redfish without PowerCycle): three times the time.
        await this.call(record, action, signal, (d, s) => d.power(plan.action, s), plan.action === 'cycle' ? 3 : 1);
        const ms = this.now() - started;
        const manual = record.driver === 'manual';
        const message = manual
          ? `the operator was asked to ${describeManualRequest({ kind: 'power', action: plan.action })}${plan.note ? ` (${plan.note})` : ''}`
          : plan.note ?? `power ${plan.action} done`;
        const result = manual ? 'requested' as const : 'done' as const;
        const performed = plan.action !== action ? { performed: plan.action } : {};
        if (manual) this.addPending(record, { kind: 'power', action: plan.action }, actor);
        this.m().actions.inc({ action, result });
        await this.succeeded(record, before, actor, [{ type: 'bmc.power', actor, subject, data: { ...base, ...performed, result, before, message, ms } }]);
        this.deps.logger.info({ bmc: id, action, ...performed, actor, result, before }, `power ${action}: ${message}`);
        return { ...base, ...performed, result, before, message, ms };
      } catch (err) {
        this.m().actions.inc({ action, result: 'failed' });
        await this.failed(record, err, 'power', actor, { type: 'bmc.power', data: { ...base, result: 'failed', before } });
        throw err;
      }
    });
  }

  async setBootDevice(ref: string, request: BootDeviceRequest, actor: string, signal?: AbortSignal): Promise<{ bmc: string; result: 'done' | 'requested'; message: string; ms: number }> {
    if (request.device !== 'pxe' && request.device !== 'disk') throw new MetalboxError('BMC_INVALID', `boot device must be pxe or disk, got ${JSON.stringify(request.device)}`);
    const req: BootDeviceRequest = { device: request.device, persistent: request.persistent === true, efi: request.efi === true };
    this.assertRunning();
    const { id } = await this.resolve(ref);
    return this.withBmc(id, signal, async (record) => {
      const started = this.now();
      const data = { bmc: id, ...req };
      try {
        await this.call(record, 'bootdev', signal, (d, s) => d.setBootDevice(req, s));
        const ms = this.now() - started;
        const manual = record.driver === 'manual';
        const what: ManualRequest = { kind: 'bootdev', ...req };
        const message = manual ? `the operator was asked to ${describeManualRequest(what)}` : `next boot from ${req.device}${req.persistent ? ' (persistent)' : ''}${req.efi ? ', UEFI' : ''}`;
        const result = manual ? 'requested' as const : 'done' as const;
        if (manual) this.addPending(record, what, actor);
        this.m().actions.inc({ action: `bootdev-${req.device}`, result });
        await this.succeeded(record, undefined, actor, [{ type: 'bmc.bootdev', actor, subject: subjectOf(record), data: { ...data, result, message, ms } }]);
        this.deps.logger.info({ bmc: id, ...req, actor, result }, `boot device: ${message}`);
        return { bmc: id, result, message, ms };
      } catch (err) {
        this.m().actions.inc({ action: `bootdev-${req.device}`, result: 'failed' });
        await this.failed(record, err, 'bootdev', actor, { type: 'bmc.bootdev', data: { ...data, result: 'failed' } });
        throw err;
      }
    });
  }

  /** Manual BMCs: the operator says what the machine's power state now is; pending requests are done. */
  async confirm(ref: string, state: 'on' | 'off', actor: string, signal?: AbortSignal): Promise<BmcView> {
    if (state !== 'on' && state !== 'off') throw new MetalboxError('BMC_INVALID', 'confirm on or off');
    this.assertRunning();
    const { id } = await this.resolve(ref);
    return this.withBmc(id, signal, async (record) => {
      if (record.driver !== 'manual') throw new MetalboxError('BMC_UNSUPPORTED', `BMC ${id} uses the ${record.driver} driver, which reads the power state itself; only manual BMCs take a confirmation`);
      const done = (record.pending ?? []).map((p) => p.request);
      const from = record.lastPowerState ?? 'unknown';
      const at = this.iso();
      record.lastPowerState = state;
      record.lastPolledAt = at;
      if (from !== state) record.lastChangedAt = at;
      delete record.pending;
      record.updatedAt = at;
      await this.write(record, [{ type: 'bmc.power.confirmed', actor, subject: subjectOf(record), data: { bmc: id, from, to: state, done } }]);
      await this.dropDriver(id); // a cached manual driver holds the old confirmed state
      return this.view(record);
    });
  }

  /** Looks at a BMC before enrolling it (Redfish: the certificate fingerprint to pin). No credentials needed. */
  async probe(endpoint: Pick<BmcEndpoint, 'driver' | 'address' | 'port'>, signal?: AbortSignal): Promise<ProbeResult> {
    this.assertRunning();
    const spec = this.spec(endpoint.driver);
    if (!spec) throw new MetalboxError('BMC_INVALID', `unknown driver ${JSON.stringify(endpoint.driver)}`);
    if (!spec.probe) throw new MetalboxError('BMC_UNSUPPORTED', `the ${endpoint.driver} driver has nothing to probe`);
    const probe = spec.probe.bind(spec);
    const release = await this.sessions.acquire(this.signalOf(signal));
    try {
      return await this.deadline(`probe of ${endpoint.address}`, signal, (s) => probe(endpoint, this.context(undefined), s));
    } catch (err) {
      throw toBmcError(err, []);
    } finally {
      release();
    }
  }

  // -------------------------------------------------------------------------------------------------------
  // Poller

  private schedule(id: string, delayMs: number): void {
    if (this.stopped) return;
    this.unschedule(id);
    const timer = setTimeout(() => {
      this.timers.delete(id);
      this.track(this.pollOne(id));
    }, delayMs);
    timer.unref();
    this.timers.set(id, timer);
  }

  private unschedule(id: string): void {
    const t = this.timers.get(id);
    if (t) clearTimeout(t);
    this.timers.delete(id);
  }

  private async pollOne(id: string): Promise<void> {
    if (!this.polling) return;
    const timing = this.deps.config.bmc;
    // An operation running or queued on this BMC will read the state itself: do not queue behind it.
    const release = this.perBmc.tryAcquire(id);
    if (!release) { this.schedule(id, nextPollMs(0, undefined, timing, this.random)); return; }
    let reschedule = true;
    try {
      const record = await this.deps.store.bmcs.get(id);
      if (!record || !this.spec(record.driver)?.pollable) { reschedule = false; return; }
      try {
        const started = performance.now();
        const state = await this.call(record, 'poll', undefined, (d, s) => d.powerStatus(s));
        this.m().polls.inc({ result: 'ok' });
        this.deps.logger.debug({ bmc: id, state, ms: Math.round(performance.now() - started) }, 'BMC polled');
        await this.succeeded(record, state, POLLER, []);
      } catch (err) {
        if (!bmcFailures.has(err as object)) return; // stopping, or no session slot: not the BMC's fault
        this.m().polls.inc({ result: 'failed' });
        await this.failed(record, err, 'poll', POLLER);
      }
    } catch (err) {
      // The store closing under a poll at shutdown, or a write failure: the next poll tries again.
      if (!this.stopped) this.deps.logger.warn({ bmc: id, err: { code: errnoCode(err), message: (err as Error).message } }, 'BMC poll could not record its result');
    } finally {
      release();
      if (reschedule && this.polling) {
        const h = this.health.get(id) ?? { failures: 0 };
        this.schedule(id, nextPollMs(h.failures, h.lastCode, timing, this.random));
      }
    }
  }

  // -------------------------------------------------------------------------------------------------------
  // Session plumbing

  /** Runs `fn` holding BMC `id`'s lock, with its record as stored now. */
  private async withBmc<T>(id: string, signal: AbortSignal | undefined, fn: (record: BmcRecord) => Promise<T>): Promise<T> {
    const release: Release = await this.perBmc.acquire(id, this.signalOf(signal));
    const work = (async () => {
      try {
        const record = await this.deps.store.bmcs.get(id);
        if (!record) throw new MetalboxError('BMC_NOT_FOUND', `BMC ${id} was removed`);
        return await fn(record);
      } finally {
        release();
      }
    })();
    this.track(work);
    return work;
  }

  /**
   * One driver call: a global session slot, the cached driver (made with the secrets opened now), the
   * timeout. Errors come back as MetalboxError with a BMC code and a message scrubbed of the secrets.
   */
  private async call<T>(record: BmcRecord, op: string, signal: AbortSignal | undefined, fn: (driver: BmcDriver, signal: AbortSignal) => Promise<T>, timeouts = 1): Promise<T> {
    const release = await this.sessions.acquire(this.signalOf(signal));
    const started = performance.now();
    let cached: CachedDriver | undefined;
    try {
      cached = await this.driverFor(record);
      const driver = cached.driver;
      return await this.deadline(`${op} on BMC ${record.id} (${record.address})`, signal, (s) => fn(driver, s), timeouts);
    } catch (err) {
      const e = toBmcError(err, cached?.secrets ?? []);
      // Cancelled (the caller left, metalbox stops) is nobody's failure; an action this driver cannot do
      // (Wake-on-LAN asked to power off) is the asker's, not a sign of the BMC's health.
      const health = !isCancel(e) && !(e.code === 'BMC_UNSUPPORTED' && op !== 'poll' && op !== 'status' && op !== 'test');
      if (health) bmcFailures.add(e);
      if (!isCancel(e)) this.m().failures.inc({ op, code: e.code });
      // A session that failed or was cut off may be half-open: start the next operation from scratch.
      if (e.code !== 'BMC_UNSUPPORTED') await this.dropDriver(record.id);
      throw e;
    } finally {
      this.m().duration.observe({ op }, (performance.now() - started) / 1000);
      release();
    }
  }

  /** `fn` with a signal that aborts at the timeout, when the caller gives up, or at stop; rejects then even if `fn` does not. */
  private async deadline<T>(what: string, signal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<T>, timeouts = 1): Promise<T> {
    const ms = this.deps.config.bmc.timeoutSeconds * 1000 * timeouts;
    // A referenced timer, not AbortSignal.timeout (unreferenced): a CLI waiting on a silent BMC must not
    // see its process end before the timeout does.
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), ms);
    const combined = AbortSignal.any([timeout.signal, this.signalOf(signal)]);
    let onAbort: (() => void) | undefined;
    try {
      if (combined.aborted) throw cancelError(what, false, ms);
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(cancelError(what, timeout.signal.aborted, ms));
        combined.addEventListener('abort', onAbort, { once: true });
      });
      const work = Promise.resolve().then(() => fn(combined));
      work.catch(() => undefined); // if the timeout wins, the driver's own late rejection is not unhandled
      return await Promise.race([work, aborted]);
    } finally {
      clearTimeout(timer);
      if (onAbort) combined.removeEventListener('abort', onAbort);
    }
  }

  private async driverFor(record: BmcRecord): Promise<CachedDriver> {
    const hit = this.cache.get(record.id);
    if (hit) return hit;
    const spec = this.spec(record.driver);
    if (!spec) throw new MetalboxError('BMC_INVALID', `BMC ${record.id} has unknown driver ${record.driver}`);
    const endpoint: BmcEndpoint = { driver: record.driver, address: record.address };
    const secrets: string[] = [];
    if (record.port !== undefined) endpoint.port = record.port;
    if (record.username !== undefined) endpoint.username = record.username;
    if (record.cipherSuite !== undefined) endpoint.cipherSuite = record.cipherSuite;
    if (record.tlsFingerprint !== undefined) endpoint.tlsFingerprint = record.tlsFingerprint;
    if (record.systemId !== undefined) endpoint.systemId = record.systemId;
    if (record.passwordSealed !== undefined || record.kgSealed !== undefined) {
      const box = await this.secretBox();
      if (record.passwordSealed !== undefined) secrets.push(endpoint.password = box.open(record.passwordSealed, aadOf(record.id, 'password')));
      if (record.kgSealed !== undefined) secrets.push(endpoint.kg = box.open(record.kgSealed, aadOf(record.id, 'kg')));
    }
    const entry: CachedDriver = { driver: spec.create(endpoint, this.context(record)), secrets };
    this.cache.set(record.id, entry);
    return entry;
  }

  private context(record: BmcRecord | undefined) {
    const wol = record?.wolInterface ?? this.deps.config.bmc.wolInterface;
    const confirmed = record?.driver === 'manual' ? record.lastPowerState : undefined;
    return {
      timeoutMs: this.deps.config.bmc.timeoutSeconds * 1000,
      wolInterfaces: wol !== undefined ? [wol] : [...this.deps.config.interfaces],
      ...(confirmed !== undefined ? { confirmed } : {}),
      logger: this.deps.logger,
    };
  }

  private async dropDriver(id: string): Promise<void> {
    const entry = this.cache.get(id);
    if (!entry) return;
    this.cache.delete(id);
    // Closing says goodbye to the BMC (IPMI Close Session, Redfish DELETE of the session): bounded, since a
    // dead BMC must not hold up an edit or the shutdown.
    let timer: NodeJS.Timeout | undefined;
    const bounded = new Promise<void>((resolve) => { timer = setTimeout(resolve, CLOSE_TIMEOUT_MS); });
    await Promise.race([entry.driver.close(), bounded])
      .catch((err: unknown) => this.deps.logger.debug({ bmc: id, err: { message: scrub((err as Error).message, entry.secrets) } }, 'closing a BMC driver failed'))
      .finally(() => clearTimeout(timer));
  }

  // -------------------------------------------------------------------------------------------------------
  // Recording outcomes

  /** A state read from the BMC (or `undefined` when the operation read none): records a change with an event. */
  private async observe(record: BmcRecord, state: PowerState, actor: string): Promise<void> {
    const changes = this.stateChange(record, state, actor);
    if (changes.length > 0) await this.write(record, changes);
  }

  private stateChange(record: BmcRecord, state: PowerState | undefined, actor: string): NewEvent[] {
    // 'unknown' never overwrites what is known (Wake-on-LAN, a manual BMC, a BMC that cannot tell).
    const h = this.healthOf(record.id);
    h.lastPolledAt = this.iso();
    if (state === undefined || state === 'unknown' || record.lastPowerState === state) return [];
    const from = record.lastPowerState ?? 'unknown';
    const at = this.iso();
    record.lastPowerState = state;
    record.lastChangedAt = at;
    record.lastPolledAt = at;
    record.updatedAt = at;
    this.deps.logger.info({ bmc: record.id, from, to: state, actor }, 'BMC power state changed');
    return [{ type: 'bmc.power.changed', actor, subject: subjectOf(record), data: { bmc: record.id, from, to: state } }];
  }

  /** Success: the state change (if any), recovery from failures (if any) and `events`, in one write. */
  private async succeeded(record: BmcRecord, state: PowerState | undefined, actor: string, events: NewEvent[]): Promise<void> {
    const all = [...this.stateChange(record, state, actor)];
    const h = this.healthOf(record.id);
    const wasUnreachable = h.failures >= this.deps.config.bmc.unreachableAfter;
    if (h.failures > 0 || record.lastError !== undefined || record.failures !== undefined) {
      if (wasUnreachable) all.push({ type: 'bmc.reachable', actor, subject: subjectOf(record), data: { bmc: record.id, after: h.failures } });
      h.failures = 0;
      delete h.lastCode;
      delete record.lastError;
      delete record.failures;
      record.updatedAt = this.iso();
    }
    all.push(...events);
    if (all.length > 0) await this.write(record, all);
  }

  /**
   * A failure: counted against the BMC when the BMC (not the queue) failed; written to the record when its
   * code differs from the last one or when the BMC crosses into unreachable, so a dead BMC polled for days
   * does not write every poll. `event`, if given, is the operation's own event and is always written.
   */
  private async failed(record: BmcRecord, err: unknown, op: string, actor: string, event?: { type: string; data: Record<string, unknown> }): Promise<void> {
    const e = isMetalboxError(err) ? err : toBmcError(err, []);
    const events: NewEvent[] = [];
    const subject = subjectOf(record);
    if (event) events.push({ type: event.type, actor, subject, data: { ...event.data, code: e.code, message: e.message } });
    const level = bmcFailures.has(e) ? 'warn' : 'info';
    this.deps.logger[level]({ bmc: record.id, op, actor, code: e.code }, `BMC ${op} failed: ${e.message}`);
    let dirty = false;
    if (bmcFailures.has(e)) {
      const h = this.healthOf(record.id);
      const { unreachableAfter } = this.deps.config.bmc;
      h.failures++;
      const newCode = h.lastCode !== e.code || record.lastError?.code !== e.code;
      h.lastCode = e.code;
      const crossed = h.failures === unreachableAfter;
      if (newCode || crossed) {
        const at = this.iso();
        record.lastError = { code: e.code, message: e.message, at };
        record.failures = h.failures;
        record.updatedAt = at;
        dirty = true;
        if (op === 'poll' && newCode) events.push({ type: 'bmc.poll.failed', actor, subject, data: { bmc: record.id, code: e.code, message: e.message } });
        if (crossed) events.push({ type: 'bmc.unreachable', actor, subject, data: { bmc: record.id, failures: h.failures, code: e.code, message: e.message, nextPollSeconds: this.deps.config.bmc.unreachablePollSeconds } });
      }
    }
    if (dirty || events.length > 0) await this.write(record, events);
  }

  private addPending(record: BmcRecord, request: ManualRequest, actor: string): void {
    const pending = record.pending ?? [];
    pending.push({ request: describeManualRequest(request), actor, at: this.iso() });
    // The newest 20: an operator who ignores the console should not grow the record without end.
    record.pending = pending.slice(-20);
    record.updatedAt = this.iso();
  }

  private async write(record: BmcRecord, events: NewEvent[]): Promise<void> {
    await this.deps.store.write([
      { type: 'put', collection: 'bmcs', key: record.id, value: record },
      ...events.map((e) => this.deps.events.op(e)),
    ]);
  }

  // -------------------------------------------------------------------------------------------------------
  // Helpers

  private async sealInto(record: BmcRecord, password: string | null | undefined, kg: string | null | undefined): Promise<void> {
    if (password === null) delete record.passwordSealed;
    if (kg === null) delete record.kgSealed;
    if (typeof password === 'string' || typeof kg === 'string') {
      const box = await this.secretBox();
      if (typeof password === 'string') record.passwordSealed = box.seal(password, aadOf(record.id, 'password'));
      if (typeof kg === 'string') record.kgSealed = box.seal(kg, aadOf(record.id, 'kg'));
    }
  }

  private secretBox(): Promise<SecretBox> {
    if (!this.box) {
      this.box = this.deps.secrets();
      this.box.catch(() => { this.box = undefined; }); // a key fixed by the operator is picked up on the next try
    }
    return this.box;
  }

  private async resolve(ref: string): Promise<BmcRecord> {
    const r = await this.find(ref);
    if (!r) throw new MetalboxError('BMC_NOT_FOUND', `no BMC has id or machine ${JSON.stringify(ref)}`);
    return r;
  }

  private async find(ref: string): Promise<BmcRecord | undefined> {
    if (typeof ref !== 'string' || ref === '') return undefined;
    const direct = await this.deps.store.bmcs.get(ref);
    if (direct) return direct;
    for await (const [, r] of this.deps.store.bmcs.entries()) if (r.machineId === ref) return r;
    return undefined;
  }

  private async assertMachineFree(machineId: string, id: string): Promise<void> {
    for await (const [, r] of this.deps.store.bmcs.entries()) {
      if (r.machineId === machineId && r.id !== id) throw new MetalboxError('BMC_INVALID', `machine ${machineId} already has BMC ${r.id}; a machine has one BMC`);
    }
  }

  private async defaultId(machineId: string | undefined): Promise<string> {
    if (machineId !== undefined && /^[a-z0-9][a-z0-9._-]{0,62}$/.test(machineId) && !(await this.deps.store.bmcs.get(machineId))) return machineId;
    for (;;) {
      const id = `bmc-${randomBytes(4).toString('hex')}`;
      if (!(await this.deps.store.bmcs.get(id))) return checkBmcId(id);
    }
  }

  private view(r: BmcRecord): BmcView {
    const h = this.health.get(r.id);
    return viewOf(r, { unreachableAfter: this.deps.config.bmc.unreachableAfter, ...(h ? { failures: h.failures, ...(h.lastPolledAt ? { lastPolledAt: h.lastPolledAt } : {}) } : {}) });
  }

  private healthOf(id: string): Health {
    let h = this.health.get(id);
    if (!h) this.health.set(id, (h = { failures: 0 }));
    return h;
  }

  private unreachableCount(): number {
    let n = 0;
    for (const h of this.health.values()) if (h.failures >= this.deps.config.bmc.unreachableAfter) n++;
    return n;
  }

  private spec(driver: string): DriverSpec | undefined {
    return Object.hasOwn(this.drivers, driver) ? this.drivers[driver] : undefined;
  }

  private signalOf(signal: AbortSignal | undefined): AbortSignal {
    return signal ? AbortSignal.any([signal, this.abort.signal]) : this.abort.signal;
  }

  private track<T>(p: Promise<T>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p)).catch(() => undefined);
  }

  private assertRunning(): void {
    if (this.stopped) throw new MetalboxError('BMC_BUSY', 'the BMC service is stopping');
  }

  private iso(): string {
    return new Date(this.now()).toISOString();
  }

  private m(): BmcMetrics {
    this.metricsSet ??= createBmcMetrics(this.deps.metrics, () => ({ active: this.sessions.running, waiting: this.sessions.waiting, bmcs: this.bmcCount, unreachable: this.unreachableCount() }));
    return this.metricsSet;
  }
}

/**
 * The secrets loader main and the CLI hand the service: reads `<stateDir>/secret.key`, creating it only when
 * the store holds no sealed secret (a restored store without its key file must not get a new key: its
 * secrets would be lost for good, silently).
 */
export function secretBoxLoader(store: Store, stateDir: string): () => Promise<SecretBox> {
  return async () => {
    let sealed = false;
    for await (const [, r] of store.bmcs.entries()) if (r.passwordSealed !== undefined || r.kgSealed !== undefined) { sealed = true; break; }
    return openSecretBox(stateDir, { create: !sealed });
  };
}

/** Associated data for a sealed field: the record and the field, so a value moved elsewhere does not open. */
export function aadOf(id: string, field: 'password' | 'kg'): string {
  return `bmc/${id}/${field}`;
}

function subjectOf(record: BmcRecord): string {
  return record.machineId ?? `bmc:${record.id}`;
}

function infoSummary(info: BmcInfo): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ['manufacturer', 'model', 'firmwareVersion', 'protocolVersion', 'systemUuid'] as const) {
    const v = info[k];
    if (typeof v === 'string' && v.length <= 200) out[k] = v;
  }
  return out;
}

const UNREACHABLE_ERRNO = ['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'EADDRNOTAVAIL'];
const BMC_CODES: readonly string[] = ['BMC_AUTH_FAILED', 'BMC_TIMEOUT', 'BMC_UNREACHABLE', 'BMC_UNSUPPORTED', 'BMC_PROTOCOL', 'BMC_TLS_MISMATCH', 'BMC_BUSY', 'BMC_NOT_FOUND', 'BMC_INVALID', 'SECRET_KEY_UNUSABLE'];

/** Any error from a driver as a MetalboxError with a BMC code, its message scrubbed of `secrets`. */
export function toBmcError(err: unknown, secrets: readonly string[]): MetalboxError {
  const message = scrub(err instanceof Error ? err.message : String(err), secrets);
  if (isMetalboxError(err) && BMC_CODES.includes(err.code)) {
    return message === err.message ? err : new MetalboxError(err.code, message, { details: scrubDetails(err.details, secrets) });
  }
  const errno = errnoCode(err) ?? (isMetalboxError(err) ? String(err.details?.errno ?? '') : '');
  let code: ErrorCode = 'BMC_PROTOCOL';
  if (UNREACHABLE_ERRNO.includes(errno) || (isMetalboxError(err) && err.code.startsWith('SOCKET_'))) code = 'BMC_UNREACHABLE';
  else if (errno === 'ETIMEDOUT') code = 'BMC_TIMEOUT';
  return new MetalboxError(code, message);
}

/** Replaces every occurrence of a secret (as text, base64 or hex) in a message. Defence in depth: drivers never put one there. */
export function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) {
    if (s.length < 3) continue;
    for (const form of [s, Buffer.from(s).toString('base64'), Buffer.from(s).toString('hex')]) out = out.split(form).join('[redacted]');
  }
  return out;
}

function scrubDetails(details: Readonly<Record<string, unknown>> | undefined, secrets: readonly string[]): Record<string, unknown> | undefined {
  if (details === undefined) return undefined;
  return JSON.parse(scrub(JSON.stringify(details), secrets)) as Record<string, unknown>;
}

function cancelError(what: string, timedOut: boolean, ms: number): MetalboxError {
  return timedOut
    ? new MetalboxError('BMC_TIMEOUT', `${what}: no answer within ${ms / 1000} s (bmc.timeoutSeconds)`)
    : new MetalboxError('BMC_TIMEOUT', `${what}: cancelled`, { details: { cancelled: true } });
}

function isCancel(err: unknown): boolean {
  return isMetalboxError(err, 'BMC_TIMEOUT') && err.details?.cancelled === true;
}
