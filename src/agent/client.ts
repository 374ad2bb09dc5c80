// The agent's side of the agent API (/boot/agent/v1, .notes/agent-contract.md): per-boot bearer token,
// retries for what a flaky provisioning network does to requests, and progress that never blocks the work.

import { AgentError, describe, errno } from './errors.ts';
import { readBody, request } from './http.ts';
import type { Inventory } from './inventory.ts';
import { parseTask, type AgentTask } from './task.ts';

export interface Progress {
  phase: string;
  done?: number;
  total?: number;
  message?: string;
}

export interface DoneBody {
  mode: string;
  ok: boolean;
  error?: { code: string; message: string };
  bmc?: { address: string; username: string; password: string };
}

export interface InventoryReply {
  machineId?: string;
  hostname?: string;
  mode?: string;
}

export interface ClientOptions {
  url: string;
  token: string;
  /** Tries of one request after the first (network errors, 408, 429, 5xx). */
  retries?: number;
  /** Wait before try n (1-based). Default 1, 2, 4, 8, 8, ... s. */
  retryDelayMs?: (attempt: number) => number;
  idleMs?: number;
  /**
   * Least time between two progress posts. The appliance keeps 1/s per machine, timed by arrival: a margin
   * over that second keeps a post whose predecessor was slower on the wire (a new connection) from being dropped.
   */
  progressIntervalMs?: number;
  log?: (line: string) => void;
}

const API = '/boot/agent/v1';

export class ApplianceClient {
  private readonly opts: Required<ClientOptions>;
  private lastProgressAt = -Infinity;
  private pendingProgress: Progress | undefined;
  private progressTimer: NodeJS.Timeout | undefined;
  /** Resolves when the pending timer has fired (and its post has started). */
  private timerFired: Promise<void> = Promise.resolve();
  private inFlight: Promise<void> = Promise.resolve();
  private progressFailures = 0;

  constructor(opts: ClientOptions) {
    this.opts = {
      retries: 5,
      retryDelayMs: (n) => Math.min(8000, 1000 * 2 ** (n - 1)),
      idleMs: 30_000,
      progressIntervalMs: 1200,
      log: () => undefined,
      ...opts,
    };
  }

  get baseUrl(): string {
    return this.opts.url;
  }

  /** Authorization for a URL: only the appliance's own origin gets the token. */
  authFor(url: string): Record<string, string> {
    return new URL(url).origin === new URL(this.opts.url).origin ? { authorization: `Bearer ${this.opts.token}` } : {};
  }

  async task(): Promise<AgentTask> {
    return parseTask(await this.call('GET', `${API}/task`), this.opts.url);
  }

  async inventory(inventory: Inventory): Promise<InventoryReply> {
    const reply = await this.call('POST', `${API}/inventory`, inventory);
    return typeof reply === 'object' && reply !== null ? reply as InventoryReply : {};
  }

  async done(body: DoneBody): Promise<void> {
    await this.settleProgress();
    await this.call('POST', `${API}/done`, body);
  }

  /**
   * Reports progress without waiting: at most one post per interval and one in flight; a newer report replaces
   * one not yet sent. A failed post is dropped (progress is a timeline, not state).
   */
  progress(p: Progress): void {
    this.pendingProgress = p;
    if (this.progressTimer !== undefined) return;
    const wait = Math.max(0, this.lastProgressAt + this.opts.progressIntervalMs - performance.now());
    this.timerFired = new Promise((resolve) => {
      this.progressTimer = setTimeout(() => {
        this.progressTimer = undefined;
        this.sendProgress();
        resolve();
      }, wait);
    });
  }

  /** Waits until the last report has been posted, keeping to the interval (the appliance drops faster ones). */
  async settleProgress(): Promise<void> {
    await this.timerFired;
    await this.inFlight;
  }

  /** Sends a report still waiting for its turn, and waits for the one in flight. */
  async flushProgress(): Promise<void> {
    if (this.progressTimer !== undefined) {
      clearTimeout(this.progressTimer);
      this.progressTimer = undefined;
      this.sendProgress();
    }
    await this.inFlight;
  }

  private sendProgress(): void {
    const p = this.pendingProgress;
    if (p === undefined) return;
    this.pendingProgress = undefined;
    this.lastProgressAt = performance.now();
    this.inFlight = this.inFlight.then(() => this.call('POST', `${API}/progress`, p, 0)).then(() => undefined, (err: unknown) => {
      if (this.progressFailures++ < 3) this.opts.log(`progress report failed: ${describe(err)}`);
    });
  }

  /** One API call with retries; the JSON answer (undefined for 204). */
  private async call(method: 'GET' | 'POST', path: string, body?: unknown, retries = this.opts.retries): Promise<unknown> {
    const url = `${this.opts.url}${path}`;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    for (let attempt = 0; ; attempt++) {
      let failure: AgentError;
      try {
        const res = await request(url, {
          method,
          idleMs: this.opts.idleMs,
          headers: {
            authorization: `Bearer ${this.opts.token}`,
            accept: 'application/json',
            ...(payload !== undefined ? { 'content-type': 'application/json' } : {}),
          },
          ...(payload !== undefined ? { body: payload } : {}),
        });
        const text = (await readBody(res.body)).toString('utf8');
        if (res.status >= 200 && res.status < 300) {
          if (text.trim() === '') return undefined;
          try {
            return JSON.parse(text) as unknown;
          } catch {
            throw new AgentError('AGENT_APPLIANCE_REFUSED', `${method} ${path}: answer is not JSON`);
          }
        }
        failure = new AgentError('AGENT_APPLIANCE_REFUSED', `${method} ${path}: ${res.status} ${errorSummary(text)}`);
        // The request itself is wrong (or the token is): the same request will fail the same way.
        if (res.status < 500 && res.status !== 408 && res.status !== 429) throw failure;
      } catch (err) {
        if (err instanceof AgentError) throw err;
        failure = new AgentError('AGENT_APPLIANCE_UNREACHABLE', `${method} ${path}: ${errno(err) ?? ''} ${describe(err)}`.replace(/\s+/g, ' '), { cause: err });
      }
      if (attempt >= retries) throw failure;
      const delay = this.opts.retryDelayMs(attempt + 1);
      this.opts.log(`${failure.message}; retrying in ${Math.round(delay / 100) / 10} s`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** `CODE: message` of the appliance's error shape, else the start of the body. */
function errorSummary(text: string): string {
  try {
    const e = JSON.parse(text) as { code?: unknown; message?: unknown };
    if (typeof e.code === 'string') return `${e.code}${typeof e.message === 'string' ? `: ${e.message}` : ''}`;
  } catch {
    // not JSON
  }
  return text.slice(0, 200).replace(/\s+/g, ' ');
}
