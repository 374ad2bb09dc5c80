// The pieces of authentication, made once per process and shared by the HTTP API and the control socket
// (one WriteLock for both, so "never remove the last admin" holds across them), plus the login limiter.
import type { EventLog } from './events.ts';
import type { Store } from '../store/types.ts';
import { ApiTokens, type ApiTokenOptions } from './api-tokens.ts';
import { Sessions, type SessionOptions } from './sessions.ts';
import { PasswordHasher, Users, WriteLock, type HasherOptions } from './users.ts';

export interface AuthOptions {
  hasher?: HasherOptions;
  sessions?: SessionOptions;
  tokens?: ApiTokenOptions;
  /** Failed logins allowed per client address and per user name within `windowSeconds` (default 5 per 60 s). */
  loginFailures?: { max?: number; windowSeconds?: number; maxKeys?: number };
}

export interface AuthCore {
  store: Store;
  events: EventLog;
  hasher: PasswordHasher;
  users: Users;
  tokens: ApiTokens;
  sessions: Sessions;
  /** Failed logins by client address, and by user name (also failed current-password checks). */
  failuresByAddress: FailureLimiter;
  failuresByUser: FailureLimiter;
  now: () => number;
}

export function createAuthCore(deps: { store: Store; events: EventLog; now?: () => number; onTouchError?: (err: unknown) => void }, options: AuthOptions = {}): AuthCore {
  const now = deps.now ?? Date.now;
  const lock = new WriteLock();
  const hasher = new PasswordHasher(options.hasher);
  const common = { store: deps.store, events: deps.events, lock, now, ...(deps.onTouchError ? { onTouchError: deps.onTouchError } : {}) };
  const limits = { max: 5, windowSeconds: 60, maxKeys: 10_000, ...options.loginFailures };
  return {
    store: deps.store,
    events: deps.events,
    hasher,
    users: new Users({ ...common, hasher }),
    tokens: new ApiTokens(common, options.tokens),
    sessions: new Sessions(common, options.sessions),
    failuresByAddress: new FailureLimiter({ ...limits, now }),
    failuresByUser: new FailureLimiter({ ...limits, now }),
    now,
  };
}

/**
 * Counts failures per key in a sliding window: after `max` failures within `windowSeconds` the key must wait
 * until the oldest of them leaves the window. Memory is bounded: at most `max` times per key and `maxKeys`
 * keys, the least recently failed dropped first. Dropping a key early only forgets failures; an attacker
 * cycling through many keys to push one out is slowed by the password hashing every failure costs first
 * (2 at a time, about 20 per second here), so pushing out 10,000 keys takes longer than the window.
 */
export class FailureLimiter {
  private readonly max: number;
  private readonly windowMs: number;
  private readonly maxKeys: number;
  private readonly now: () => number;
  private readonly failures = new Map<string, number[]>();

  constructor(options: { max?: number; windowSeconds?: number; maxKeys?: number; now?: () => number } = {}) {
    this.max = options.max ?? 5;
    this.windowMs = (options.windowSeconds ?? 60) * 1000;
    this.maxKeys = options.maxKeys ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /** Seconds `key` must wait before its next attempt; 0 when it may try now. */
  retryAfter(key: string): number {
    const times = this.recent(key);
    if (times.length < this.max) return 0;
    return Math.max(1, Math.ceil((times[0]! + this.windowMs - this.now()) / 1000));
  }

  fail(key: string): void {
    const times = this.recent(key);
    times.push(this.now());
    if (times.length > this.max) times.splice(0, times.length - this.max);
    this.failures.delete(key); // re-insert: Map order is least recently failed first
    this.failures.set(key, times);
    while (this.failures.size > this.maxKeys) this.failures.delete(this.failures.keys().next().value as string);
  }

  clear(key: string): void {
    this.failures.delete(key);
  }

  get size(): number {
    return this.failures.size;
  }

  private recent(key: string): number[] {
    const times = this.failures.get(key);
    if (!times) return [];
    const since = this.now() - this.windowMs;
    while (times.length > 0 && times[0]! <= since) times.shift();
    if (times.length === 0) this.failures.delete(key);
    return times;
  }
}
