// The service contract and the runner that owns the order of start and stop.
// A service's constructor only assigns fields; `start(signal)` binds its sockets and fails fast
// (a taken port rejects start); `stop()` is graceful and idempotent. `signal` aborts when the process
// is shutting down, for work a service runs in the background.
import type { Logger } from '../lib/logger.ts';
import type { Metrics } from '../lib/metrics.ts';
import { MetalboxError } from '../lib/errors.ts';

export interface Service {
  readonly name: string;
  start(signal: AbortSignal): Promise<void>;
  stop(): Promise<void>;
}

export type ServiceState = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

export interface RunnerStatus {
  phase: 'starting' | 'running' | 'stopping' | 'stopped';
  services: Record<string, ServiceState>;
}

/** Starts services in order, stops them in reverse; the first fatal error stops them all. */
export class ServiceRunner {
  private readonly states = new Map<string, ServiceState>();
  private readonly abort = new AbortController();
  private phase: RunnerStatus['phase'] = 'starting';
  private stopping: Promise<void> | undefined;
  private firstError: unknown;

  constructor(
    private readonly services: readonly Service[],
    private readonly deps: {
      logger: Logger; metrics: Metrics; stopTimeoutMs: number;
      /** Told of a fatal error after the stop began, so the owner (main) can exit non-zero. */
      onFatal?: (service: string, err: unknown) => void;
    },
  ) {
    for (const s of services) this.states.set(s.name, 'idle');
  }

  /** Starts every service in order. If one fails, those already started are stopped and the error rethrown. */
  async start(): Promise<void> {
    for (const s of this.services) {
      if (this.abort.signal.aborted) break;
      this.set(s.name, 'starting');
      try {
        await s.start(this.abort.signal);
      } catch (err) {
        this.set(s.name, 'failed');
        this.firstError ??= err;
        await this.stop();
        throw err instanceof MetalboxError ? err : new MetalboxError('SERVICE_START_FAILED', `service ${s.name} failed to start: ${(err as Error).message}`, { cause: err, details: { service: s.name } });
      }
      this.set(s.name, 'running');
      this.deps.logger.info({ svc: s.name }, 'service started');
    }
    if (!this.abort.signal.aborted) this.phase = 'running';
  }

  /** A running service reports an error it cannot recover from: everything stops, main exits non-zero. */
  fatal(service: string, err: unknown): void {
    this.deps.logger.fatal({ svc: service, err }, 'fatal service error; stopping');
    this.firstError ??= err;
    // Still stopped like the others (its sockets must close), then shown as failed.
    void this.stop().then(() => this.set(service, 'failed'));
    this.deps.onFatal?.(service, err);
  }

  /** Stops started services in reverse order, each bounded by what is left of the stop timeout. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  /** Resolves when stop() has finished; carries the first fatal error, if any. */
  get error(): unknown { return this.firstError; }

  status(): RunnerStatus {
    return { phase: this.phase, services: Object.fromEntries(this.states) };
  }

  private async doStop(): Promise<void> {
    this.phase = 'stopping';
    this.abort.abort();
    const deadline = Date.now() + this.deps.stopTimeoutMs;
    for (const s of [...this.services].reverse()) {
      const state = this.states.get(s.name);
      if (state === 'idle' || state === 'stopped' || state === 'failed') continue;
      this.set(s.name, 'stopping');
      const left = Math.max(0, deadline - Date.now());
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          s.stop(),
          new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`did not stop within ${this.deps.stopTimeoutMs} ms`)), left); }),
        ]);
        this.set(s.name, 'stopped');
      } catch (err) {
        this.deps.logger.error({ svc: s.name, err }, 'service stop failed');
        this.set(s.name, 'failed');
      } finally {
        clearTimeout(timer);
      }
    }
    this.phase = 'stopped';
  }

  private set(name: string, state: ServiceState): void {
    this.states.set(name, state);
    this.deps.metrics.serviceUp.set({ service: name }, state === 'running' ? 1 : 0);
  }
}
