// Browser sessions: what a login gives the console. The cookie holds 32 random bytes; the store holds only
// their sha-256, as the key of the session's record in `tokens` (`session:<sha256>`, `kind: 'session'`).
//
// A session ends at the first of: logout, `maxSeconds` after login (absolute), `idleSeconds` without a
// request (idle; `lastSeenAt` is written at most once a minute, so idleness is known to the minute), a new
// password for its user, the user's deletion. A user keeps at most `perUser` sessions: a new login ends the
// oldest beyond that, so logging in in a loop cannot fill the store.
//
// CSRF: each session has a synchronizer token, HMAC-SHA256 keyed by the cookie secret. It is computed, not
// stored: only someone holding the cookie can know it, and the cookie is HttpOnly, so script on another site
// (or injected into ours) cannot read it. The console gets it from the login answer or GET /api/v1/session
// and sends it in `X-CSRF-Token` with every state-changing request (OWASP CSRF Prevention Cheat Sheet,
// "Synchronizer Token Pattern"); SameSite=Strict on the cookie is the second layer.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { EventLog } from './events.ts';
import type { Store, TokenRecord, WriteOp } from '../store/types.ts';
import { isRole, prefixEnd, type Audit, type StoredUser, type WriteLock } from './users.ts';

const KEY_PREFIX = 'session:';
const COOKIE_VALUE = /^[A-Za-z0-9_-]{43}$/;
const CSRF_LABEL = 'metalbox csrf v1';

export interface SessionRecord extends TokenRecord {
  kind: 'session';
  /** Public id, `ses_...` (events, logs). */
  sessionId: string;
  userId: string;
  createdAt: string;
  lastSeenAt: string;
  /** The absolute end. */
  expiresAt: string;
  /** The client address and User-Agent at login, for the user's own list of sessions. */
  address: string;
  userAgent?: string;
}

export interface SessionOptions {
  /** Ends a session with no request for this long (default 30 min). */
  idleSeconds?: number;
  /** Ends every session this long after login (default 12 h). */
  maxSeconds?: number;
  /** Sessions one user may hold; the oldest end first (default 20). */
  perUser?: number;
  /** `lastSeenAt` is written at most this often per session (default 60 s). */
  touchEveryMs?: number;
}

export interface SessionsDeps {
  store: Store;
  events: EventLog;
  lock: WriteLock;
  now?: () => number;
  onTouchError?: (err: unknown) => void;
}

export interface SessionIdentity { record: SessionRecord; user: StoredUser; csrfToken: string; idleExpiresAt: string }

const keyOf = (cookie: string): string => KEY_PREFIX + createHash('sha256').update(cookie).digest('hex');

export class Sessions {
  readonly idleMs: number;
  readonly maxMs: number;
  private readonly perUser: number;
  private readonly touchEveryMs: number;
  private readonly now: () => number;

  constructor(private readonly deps: SessionsDeps, options: SessionOptions = {}) {
    this.now = deps.now ?? Date.now;
    this.idleMs = (options.idleSeconds ?? 1800) * 1000;
    this.maxMs = (options.maxSeconds ?? 12 * 3600) * 1000;
    this.perUser = options.perUser ?? 20;
    this.touchEveryMs = options.touchEveryMs ?? 60_000;
    if (!(this.idleMs >= 60_000 && this.maxMs >= this.idleMs && this.perUser >= 1)) throw new TypeError('session limits: idle >= 60 s, max >= idle, perUser >= 1');
  }

  /** The CSRF token of the session whose cookie this is. */
  static csrfFor(cookie: string): string {
    return createHmac('sha256', cookie).update(CSRF_LABEL).digest('base64url');
  }

  /** Whether `given` is the session's CSRF token (constant time). */
  static csrfMatches(cookie: string, given: unknown): boolean {
    if (typeof given !== 'string') return false;
    const want = Buffer.from(Sessions.csrfFor(cookie));
    const got = Buffer.from(given);
    return got.length === want.length && timingSafeEqual(got, want);
  }

  /**
   * A new session for `user` (who just proved their password) and the ops: put it, end `replaces` (the session
   * the client presented, if any) and the user's oldest beyond `perUser`, and the audit event, in one batch.
   */
  async create(user: StoredUser, client: { address: string; userAgent?: string | undefined }, audit: Audit, replaces?: string): Promise<{ cookie: string; identity: SessionIdentity }> {
    const cookie = randomBytes(32).toString('base64url');
    const now = this.now();
    const at = new Date(now).toISOString();
    const record: SessionRecord = {
      id: keyOf(cookie), kind: 'session', hash: keyOf(cookie).slice(KEY_PREFIX.length),
      sessionId: `ses_${randomBytes(12).toString('base64url')}`,
      userId: user.id, createdAt: at, lastSeenAt: at, expiresAt: new Date(now + this.maxMs).toISOString(),
      address: client.address,
      ...(client.userAgent ? { userAgent: client.userAgent.slice(0, 200) } : {}),
    };
    await this.deps.lock.run(async () => {
      const ends = new Set<string>();
      if (replaces !== undefined && COOKIE_VALUE.test(replaces)) {
        const old = await this.deps.store.tokens.get(keyOf(replaces));
        if (old?.kind === 'session') ends.add(old.id);
      }
      const mine = (await this.records()).filter((s) => s.userId === user.id && !ends.has(s.id)).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
      for (const s of mine.slice(0, Math.max(0, mine.length - (this.perUser - 1)))) ends.add(s.id);
      await this.deps.store.write([
        { type: 'put', collection: 'tokens', key: record.id, value: record },
        ...[...ends].map((key): WriteOp => ({ type: 'del', collection: 'tokens', key })),
        this.deps.events.op(audit({ type: 'auth.login', subject: user.username, data: { session: record.sessionId, ...(ends.size > 0 ? { sessionsEnded: ends.size } : {}) } })),
      ]);
    });
    return { cookie, identity: { record, user, csrfToken: Sessions.csrfFor(cookie), idleExpiresAt: new Date(now + this.idleMs).toISOString() } };
  }

  /** The identity behind a cookie value, or `undefined` when it is malformed, unknown, ended or expired. */
  async verify(cookie: string): Promise<SessionIdentity | undefined> {
    if (!COOKIE_VALUE.test(cookie)) return undefined;
    const record = await this.deps.store.tokens.get(keyOf(cookie));
    if (!record || record.kind !== 'session' || typeof record.userId !== 'string') return undefined;
    const s = record as SessionRecord;
    const now = this.now();
    if (!(Date.parse(s.expiresAt) > now) || !(Date.parse(s.lastSeenAt) + this.idleMs > now)) return undefined;
    const user = (await this.deps.store.users.get(s.userId)) as StoredUser | undefined;
    if (!user || !isRole(user.role)) return undefined;
    const seen = await this.touch(s, now);
    return { record: s, user, csrfToken: Sessions.csrfFor(cookie), idleExpiresAt: new Date(Math.min(Date.parse(seen) + this.idleMs, Date.parse(s.expiresAt))).toISOString() };
  }

  /** Ends the session of this cookie (logout); false when there was none. */
  async end(cookie: string, audit: Audit, username: string): Promise<boolean> {
    if (!COOKIE_VALUE.test(cookie)) return false;
    return this.deps.lock.run(async () => {
      const record = await this.deps.store.tokens.get(keyOf(cookie));
      if (record?.kind !== 'session') return false;
      await this.deps.store.write([
        { type: 'del', collection: 'tokens', key: record.id },
        this.deps.events.op(audit({ type: 'auth.logout', subject: username, data: { session: (record as SessionRecord).sessionId } })),
      ]);
      return true;
    });
  }

  /** The store key of a cookie's session (to keep it when a password change ends the others). */
  static keyOf(cookie: string): string {
    return keyOf(cookie);
  }

  /** Deletes sessions past their absolute or idle end; returns how many. */
  async prune(): Promise<number> {
    const now = this.now();
    const ops: WriteOp[] = (await this.records())
      .filter((s) => !(Date.parse(s.expiresAt) > now) || !(Date.parse(s.lastSeenAt) + this.idleMs > now))
      .map((s) => ({ type: 'del', collection: 'tokens', key: s.id }));
    // Under the lock: a touch of a session being pruned must not write it back.
    await this.deps.lock.run(async () => {
      for (let i = 0; i < ops.length; i += 1000) await this.deps.store.write(ops.slice(i, i + 1000));
    });
    return ops.length;
  }

  private async records(): Promise<SessionRecord[]> {
    const out: SessionRecord[] = [];
    for await (const [, t] of this.deps.store.tokens.entries({ gte: KEY_PREFIX, lt: prefixEnd(KEY_PREFIX) })) {
      if (t.kind === 'session') out.push(t as SessionRecord);
    }
    return out;
  }

  /** Writes lastSeenAt at most once per `touchEveryMs`, on a fresh read under the lock (never resurrects). */
  private async touch(s: SessionRecord, now: number): Promise<string> {
    if (now - Date.parse(s.lastSeenAt) < this.touchEveryMs) return s.lastSeenAt;
    const at = new Date(now).toISOString();
    try {
      await this.deps.lock.run(async () => {
        const current = await this.deps.store.tokens.get(s.id);
        if (current?.kind === 'session' && !(now - Date.parse(String(current.lastSeenAt)) < this.touchEveryMs)) await this.deps.store.tokens.put(s.id, { ...current, lastSeenAt: at });
      });
    } catch (err) {
      this.deps.onTouchError?.(err);
    }
    return at;
  }
}
