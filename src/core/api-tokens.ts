// API tokens: long random secrets for scripts and other programs (`Authorization: Bearer mbx_...`).
//
// A token is shown once, when it is made. Only its sha-256 is stored, as the key of its record in `tokens`
// (`api:<sha256>`, `kind: 'api'`, like the per-boot tokens of src/core/boot-tokens.ts), so checking one is a
// single get and the store holds nothing a thief could present. A plain hash (not scrypt) is enough here: the
// secret is 256 random bits, not a password someone could guess. The public id (`tok_...`) names it in lists
// and revocations.
//
// A token has a name, an owner and a role no higher than the owner's when it is made and, at each use, no
// higher than the owner's role then (a demoted user's tokens are demoted with them; a deleted user's are
// deleted with them). Every token expires: after `defaultDays` unless asked otherwise, never after `maxDays`.
// `lastUsedAt` is written at most once a minute per token, so a busy script does not cost a sync per request.
import { createHash, randomBytes } from 'node:crypto';
import { MetalboxError } from '../lib/errors.ts';
import type { EventLog } from './events.ts';
import type { Store, TokenRecord, WriteOp } from '../store/types.ts';
import { isRole, lesserRole, prefixEnd, roleAtLeast, type Audit, type Role, type StoredUser, type WriteLock } from './users.ts';

export const API_TOKEN_PREFIX = 'mbx_';
const KEY_PREFIX = 'api:';
/** `mbx_` and 32 random bytes in base64url. */
const TOKEN = /^mbx_[A-Za-z0-9_-]{43}$/;
export const TOKEN_ID_PATTERN = '^tok_[A-Za-z0-9_-]{16}$';
export const TOKEN_NAME_PATTERN = '^[^\\u0000-\\u001f\\u007f]{1,100}$';
const TOKEN_NAME = new RegExp(TOKEN_NAME_PATTERN, 'u');
const DAY_MS = 24 * 3600 * 1000;
/** Expired tokens stay listed (as expired) this long, then are pruned. */
const KEEP_EXPIRED_MS = 30 * DAY_MS;

export interface ApiTokenRecord extends TokenRecord {
  kind: 'api';
  /** Public id, `tok_...`. */
  tokenId: string;
  name: string;
  userId: string;
  role: Role;
  createdAt: string;
  expiresAt: string;
  lastUsedAt?: string;
}

/** What leaves this module: never the secret or its hash. */
export interface ApiTokenView {
  id: string;
  name: string;
  userId: string;
  username: string;
  role: Role;
  createdAt: string;
  expiresAt: string;
  lastUsedAt: string | null;
  expired: boolean;
}

export interface ApiTokenOptions {
  /** Lifetime when the creator gives none (default 90 days). */
  defaultDays?: number;
  /** Longest lifetime a token may be given (default 365 days). */
  maxDays?: number;
  /** `lastUsedAt` is written at most this often per token (default 60 s). */
  touchEveryMs?: number;
}

export interface ApiTokensDeps {
  store: Store;
  events: EventLog;
  lock: WriteLock;
  now?: () => number;
  /** A failed `lastUsedAt` write (it never fails the request it belongs to). */
  onTouchError?: (err: unknown) => void;
}

/** A verified token: its record, its owner and the role it acts with. */
export interface TokenIdentity { record: ApiTokenRecord; user: StoredUser; role: Role }

export const hashSecret = (secret: string): string => createHash('sha256').update(secret).digest('hex');

export class ApiTokens {
  readonly defaultDays: number;
  readonly maxDays: number;
  private readonly touchEveryMs: number;
  private readonly now: () => number;
  /** When each token's lastUsedAt was last written (by this process); bounded, see touch(). */
  private readonly touched = new Map<string, number>();

  constructor(private readonly deps: ApiTokensDeps, options: ApiTokenOptions = {}) {
    this.now = deps.now ?? Date.now;
    this.maxDays = options.maxDays ?? 365;
    this.defaultDays = Math.min(options.defaultDays ?? 90, this.maxDays);
    this.touchEveryMs = options.touchEveryMs ?? 60_000;
    if (!(Number.isInteger(this.maxDays) && this.maxDays >= 1 && Number.isInteger(this.defaultDays) && this.defaultDays >= 1)) {
      throw new TypeError('API token lifetimes must be whole days >= 1');
    }
  }

  /**
   * Makes a token for `owner`. `role` defaults to the owner's and may not exceed it (AUTH_FORBIDDEN). The
   * secret is in the result and nowhere else.
   */
  async create(owner: StoredUser, input: { name: string; role?: Role; expiresInDays?: number }, audit: Audit): Promise<{ token: string; view: ApiTokenView }> {
    if (typeof input.name !== 'string' || !TOKEN_NAME.test(input.name)) {
      throw new MetalboxError('API_TOKEN_INVALID', 'name must be 1-100 characters without control characters', { details: { field: 'name' } });
    }
    const role = input.role ?? owner.role;
    if (!isRole(role)) throw new MetalboxError('API_TOKEN_INVALID', 'role must be viewer, operator or admin', { details: { field: 'role' } });
    if (!roleAtLeast(owner.role, role)) {
      throw new MetalboxError('AUTH_FORBIDDEN', `a token cannot have more than its owner: ${owner.username} is ${owner.role}`, { details: { field: 'role' } });
    }
    const days = input.expiresInDays ?? this.defaultDays;
    if (!Number.isInteger(days) || days < 1 || days > this.maxDays) {
      throw new MetalboxError('API_TOKEN_INVALID', `expiresInDays must be a whole number from 1 to ${this.maxDays}`, { details: { field: 'expiresInDays' } });
    }
    const token = API_TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const hash = hashSecret(token);
    const now = this.now();
    const record: ApiTokenRecord = {
      id: KEY_PREFIX + hash, kind: 'api', hash,
      tokenId: `tok_${randomBytes(12).toString('base64url')}`,
      name: input.name, userId: owner.id, role,
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + days * DAY_MS).toISOString(),
    };
    await this.deps.lock.run(async () => {
      // The owner may have been deleted while we were not holding the lock.
      if (!(await this.deps.store.users.get(owner.id))) throw new MetalboxError('AUTH_INVALID', 'the user no longer exists');
      await this.deps.store.write([
        { type: 'put', collection: 'tokens', key: record.id, value: record },
        this.deps.events.op(audit({ type: 'token.created', subject: record.tokenId, data: { name: record.name, owner: owner.username, role, expiresAt: record.expiresAt } })),
      ]);
    });
    return { token, view: this.viewOf(record, owner.username) };
  }

  /** Tokens of one user, or of everyone (`userId` undefined), newest first; expired ones included and marked. */
  async list(userId?: string): Promise<ApiTokenView[]> {
    const names = new Map<string, string>();
    for await (const [id, u] of this.deps.store.users.entries()) names.set(id, u.username);
    const out: ApiTokenView[] = [];
    for (const r of await this.records()) {
      if (userId === undefined || r.userId === userId) out.push(this.viewOf(r, names.get(r.userId) ?? ''));
    }
    return out.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || a.id.localeCompare(b.id));
  }

  /**
   * Revokes (deletes) a token by its public id. `by` may revoke their own tokens, an admin anyone's; a token
   * the caller may not see is NOT_FOUND, like one that does not exist.
   */
  async revoke(tokenId: string, by: { userId: string; role: Role }, audit: Audit): Promise<ApiTokenView> {
    return this.deps.lock.run(async () => {
      const record = (await this.records()).find((r) => r.tokenId === tokenId);
      if (!record || (record.userId !== by.userId && by.role !== 'admin')) throw new MetalboxError('NOT_FOUND', `no API token ${tokenId}`);
      const owner = await this.deps.store.users.get(record.userId);
      await this.deps.store.write([
        { type: 'del', collection: 'tokens', key: record.id },
        this.deps.events.op(audit({ type: 'token.revoked', subject: record.tokenId, data: { name: record.name, owner: owner?.username ?? record.userId } })),
      ]);
      this.touched.delete(record.id);
      return this.viewOf(record, owner?.username ?? '');
    });
  }

  /** The identity behind a bearer secret, or `undefined` when it is malformed, unknown, revoked or expired. */
  async verify(secret: string): Promise<TokenIdentity | undefined> {
    if (!TOKEN.test(secret)) return undefined;
    const record = await this.deps.store.tokens.get(KEY_PREFIX + hashSecret(secret));
    if (!record || record.kind !== 'api' || !isRole(record.role) || typeof record.userId !== 'string') return undefined;
    const now = this.now();
    if (!(Date.parse(String(record.expiresAt)) > now)) return undefined;
    const user = (await this.deps.store.users.get(record.userId)) as StoredUser | undefined;
    if (!user || !isRole(user.role)) return undefined;
    const rec = record as ApiTokenRecord;
    await this.touch(rec, now);
    return { record: rec, user, role: lesserRole(rec.role, user.role) };
  }

  /** Deletes tokens that expired more than 30 days ago; returns how many. */
  async prune(): Promise<number> {
    const now = this.now();
    const ops: WriteOp[] = (await this.records())
      .filter((r) => !(Date.parse(r.expiresAt) + KEEP_EXPIRED_MS > now))
      .map((r) => ({ type: 'del', collection: 'tokens', key: r.id }));
    for (let i = 0; i < ops.length; i += 1000) await this.deps.store.write(ops.slice(i, i + 1000));
    return ops.length;
  }

  private async records(): Promise<ApiTokenRecord[]> {
    const out: ApiTokenRecord[] = [];
    for await (const [, t] of this.deps.store.tokens.entries({ gte: KEY_PREFIX, lt: prefixEnd(KEY_PREFIX) })) {
      if (t.kind === 'api') out.push(t as ApiTokenRecord);
    }
    return out;
  }

  private viewOf(r: ApiTokenRecord, username: string): ApiTokenView {
    return {
      id: r.tokenId, name: r.name, userId: r.userId, username, role: r.role, createdAt: r.createdAt, expiresAt: r.expiresAt,
      lastUsedAt: r.lastUsedAt ?? null, expired: !(Date.parse(r.expiresAt) > this.now()),
    };
  }

  /**
   * Records the use, at most once per `touchEveryMs`. Under the lock and on a fresh read: a put of a stale copy
   * after a revocation would bring the token back.
   */
  private async touch(record: ApiTokenRecord, now: number): Promise<void> {
    const last = Math.max(this.touched.get(record.id) ?? 0, Date.parse(record.lastUsedAt ?? '') || 0);
    if (now - last < this.touchEveryMs) return;
    this.touched.set(record.id, now);
    if (this.touched.size > 10_000) {
      for (const [k, at] of this.touched) if (now - at >= this.touchEveryMs) this.touched.delete(k);
    }
    try {
      await this.deps.lock.run(async () => {
        const current = await this.deps.store.tokens.get(record.id);
        if (current?.kind === 'api') await this.deps.store.tokens.put(record.id, { ...current, lastUsedAt: new Date(now).toISOString() });
      });
    } catch (err) {
      this.deps.onTouchError?.(err);
    }
  }
}
