// Users of the API and the console: a name, a role and a password hash.
//
// Roles are ordered: viewer (reads) < operator (acts on machines) < admin (also manages users and settings).
// Passwords are hashed with scrypt (RFC 7914) under a random salt; the parameters travel with the hash in a
// PHC-style string, `$scrypt$ln=15,r=8,p=1$<salt>$<hash>`, so they can be raised later: a login with a hash
// made under weaker parameters re-hashes the password.
//
// scrypt runs on libuv's thread pool (4 threads by default), which LevelDB and file reads share. At the
// default cost one hash takes about 95 ms of one core (measured on the 2-core build machine, see the README):
// a burst of logins must not take every pool thread from DHCP's lease writes, so at most 2 hashes run at once
// and a bounded queue waits behind them; beyond it the caller gets AUTH_RATE_LIMITED at once.
//
// Every change is written in one atomic batch with its audit event (`Audit`: the caller says who and from
// where). Changes run one at a time (`WriteLock`): "never remove the last admin" is a read-check-write that
// two concurrent requests could otherwise both pass.
import { randomBytes, randomUUID, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { MetalboxError, isMetalboxError } from '../lib/errors.ts';
import type { NewEvent, EventLog } from './events.ts';
import type { Store, UserRecord, WriteOp } from '../store/types.ts';

export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];
const RANK: Readonly<Record<Role, number>> = { viewer: 1, operator: 2, admin: 3 };

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

/** Whether `role` may do what needs `least`. */
export function roleAtLeast(role: Role, least: Role): boolean {
  return RANK[role] >= RANK[least];
}

/** The lesser of two roles (an API token never has more than its owner). */
export function lesserRole(a: Role, b: Role): Role {
  return RANK[a] <= RANK[b] ? a : b;
}

/** User names: lower case, like POSIX login names, so they read the same in logs, events and URLs. */
export const USERNAME_PATTERN = '^[a-z][a-z0-9._-]{0,31}$';
const USERNAME = new RegExp(USERNAME_PATTERN);
export const PASSWORD_MIN_LENGTH = 12;
/** scrypt takes any length, but a megabyte password is only a way to waste our CPU. */
export const PASSWORD_MAX_LENGTH = 1024;

export interface StoredUser extends UserRecord {
  role: Role;
  createdAt: string;
  updatedAt: string;
  passwordChangedAt: string;
}

/** What leaves this module: never the hash. */
export interface UserView {
  id: string;
  username: string;
  role: Role;
  createdAt: string;
  updatedAt: string;
  passwordChangedAt: string;
}

export function viewOf(u: StoredUser): UserView {
  return { id: u.id, username: u.username, role: u.role, createdAt: u.createdAt, updatedAt: u.updatedAt, passwordChangedAt: u.passwordChangedAt };
}

/** What a caller says about a change; the audit function adds who did it and from where. */
export interface AuditInput { type: string; subject?: string; data?: Record<string, unknown> }
/** Turns a change into its audit event (actor, address). The API's is `req.auditEvent`. */
export type Audit = (input: AuditInput) => NewEvent;

/** An Audit for callers outside HTTP (the CLI, the control socket): a fixed actor and extra data. */
export function auditAs(actor: string, extra: Record<string, unknown> = {}): Audit {
  return (input) => ({
    type: input.type, actor,
    ...(input.subject !== undefined ? { subject: input.subject } : {}),
    data: { ...input.data, ...extra },
  });
}

// ---------------------------------------------------------------------------------------------------------
// Password hashing.

export interface ScryptParams {
  /** log2 of the CPU/memory cost N. */
  ln: number;
  r: number;
  p: number;
}

/** N = 2^15, r = 8, p = 1: 32 MiB and about 95 ms per hash here; RFC 7914 §2 suggests r = 8. */
export const DEFAULT_SCRYPT: Readonly<ScryptParams> = { ln: 15, r: 8, p: 1 };
/**
 * What a stored hash may ask for: a hash string is data, and a tampered or corrupt one must not make a login
 * take minutes or gigabytes. At most 64 MiB (128 * N * r bytes) and 2^20 N*r*p work (4x the default).
 * ln >= 10 admits the cheap hashes unit tests make.
 */
const LIMITS = { ln: [10, 20], r: [1, 32], p: [1, 16], memory: 64 * 1024 * 1024, work: 2 ** 20 * 8 } as const;
const SALT_BYTES = 16;
const KEY_BYTES = 32;
const PHC = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{43})$/;

function checkParams(p: ScryptParams): boolean {
  const n = 2 ** p.ln;
  return Number.isInteger(p.ln) && Number.isInteger(p.r) && Number.isInteger(p.p)
    && p.ln >= LIMITS.ln[0] && p.ln <= LIMITS.ln[1] && p.r >= LIMITS.r[0] && p.r <= LIMITS.r[1] && p.p >= LIMITS.p[0] && p.p <= LIMITS.p[1]
    && 128 * n * p.r <= LIMITS.memory && n * p.r * p.p <= LIMITS.work;
}

const b64 = (b: Buffer): string => b.toString('base64').replace(/=+$/, '');

export interface HasherOptions {
  params?: ScryptParams;
  /** Hashes running at once (default 2: leave libuv's other pool threads to LevelDB and file reads). */
  concurrency?: number;
  /** Hashes waiting beyond those (default 32); more get AUTH_RATE_LIMITED at once. */
  queue?: number;
}

export class PasswordHasher {
  readonly params: Readonly<ScryptParams>;
  private readonly concurrency: number;
  private readonly queueMax: number;
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  /** A hash of a random password under the current parameters: unknown users cost as much as known ones. */
  private dummy: Promise<string> | undefined;

  constructor(options: HasherOptions = {}) {
    this.params = { ...(options.params ?? DEFAULT_SCRYPT) };
    if (!checkParams(this.params)) throw new TypeError(`scrypt parameters out of range: ${JSON.stringify(this.params)}`);
    this.concurrency = options.concurrency ?? 2;
    this.queueMax = options.queue ?? 32;
  }

  async hash(password: string): Promise<string> {
    const salt = randomBytes(SALT_BYTES);
    const key = await this.derive(password, salt, this.params);
    const { ln, r, p } = this.params;
    return `$scrypt$ln=${ln},r=${r},p=${p}$${b64(salt)}$${b64(key)}`;
  }

  /** Whether `password` matches `stored`. A malformed or out-of-limits hash never matches (and costs nothing). */
  async verify(password: string, stored: string): Promise<boolean> {
    const m = PHC.exec(stored);
    if (!m) return false;
    const params = { ln: Number(m[1]), r: Number(m[2]), p: Number(m[3]) };
    if (!checkParams(params)) return false;
    const salt = Buffer.from(m[4]!, 'base64');
    const want = Buffer.from(m[5]!, 'base64');
    if (salt.length !== SALT_BYTES || want.length !== KEY_BYTES) return false;
    const got = await this.derive(password, salt, params);
    return timingSafeEqual(got, want);
  }

  /** Spends what a verify costs, for a user that does not exist (no timing difference to find names by). */
  async verifyNobody(password: string): Promise<false> {
    this.dummy ??= this.hash(randomBytes(16).toString('hex'));
    await this.verify(password, await this.dummy);
    return false;
  }

  /** The hash was made under other parameters than the current ones. */
  outdated(stored: string): boolean {
    const { ln, r, p } = this.params;
    return !stored.startsWith(`$scrypt$ln=${ln},r=${r},p=${p}$`);
  }

  private async derive(password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
    await this.acquire();
    try {
      const n = 2 ** params.ln;
      const options: ScryptOptions = { N: n, r: params.r, p: params.p, maxmem: 128 * n * params.r * 2 + 1024 * 1024 };
      return await new Promise<Buffer>((resolve, reject) => {
        scrypt(password.normalize('NFC'), salt, KEY_BYTES, options, (err, key) => (err ? reject(err) : resolve(key)));
      });
    } finally {
      this.release();
    }
  }

  private async acquire(): Promise<void> {
    if (this.running < this.concurrency) { this.running++; return; }
    if (this.waiting.length >= this.queueMax) {
      throw new MetalboxError('AUTH_RATE_LIMITED', 'too many password checks at once; try again in a second', { details: { retryAfterSeconds: 1 } });
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next(); // the slot passes straight to the next waiter
    else this.running--;
  }
}

// ---------------------------------------------------------------------------------------------------------
// One change at a time.

/** Runs async sections one after another (a process-wide lock for the auth collections' read-check-writes). */
export class WriteLock {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(section: () => Promise<T>): Promise<T> {
    const result = this.tail.then(section, section);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Users.

export function checkUsername(value: unknown): string {
  if (typeof value !== 'string' || !USERNAME.test(value)) {
    throw new MetalboxError('USER_INVALID', 'username must be 1-32 characters: a lower-case letter, then lower-case letters, digits, ".", "_" or "-"', { details: { field: 'username' } });
  }
  return value;
}

export function checkRole(value: unknown, field = 'role'): Role {
  if (!isRole(value)) throw new MetalboxError('USER_INVALID', `${field} must be one of ${ROLES.join(', ')}`, { details: { field } });
  return value;
}

export function checkPassword(value: unknown, field = 'password'): string {
  if (typeof value !== 'string' || value.length < PASSWORD_MIN_LENGTH || value.length > PASSWORD_MAX_LENGTH) {
    throw new MetalboxError('USER_INVALID', `${field} must be ${PASSWORD_MIN_LENGTH} to ${PASSWORD_MAX_LENGTH} characters`, { details: { field } });
  }
  return value;
}

export interface NewUser { username: string; role: Role; password: string }
export interface UserPatch { role?: Role; password?: string }

export interface UsersDeps {
  store: Store;
  events: EventLog;
  hasher: PasswordHasher;
  lock: WriteLock;
  now?: () => number;
}

/** Key prefixes in `tokens` of the credentials a user owns (src/core/api-tokens.ts, src/core/sessions.ts). */
export const CREDENTIAL_PREFIXES = ['api:', 'session:'] as const;

export class Users {
  private readonly now: () => number;

  constructor(private readonly deps: UsersDeps) {
    this.now = deps.now ?? Date.now;
  }

  async list(): Promise<UserView[]> {
    const out: UserView[] = [];
    for await (const [, u] of this.deps.store.users.entries()) out.push(viewOf(u as StoredUser));
    return out.sort((a, b) => a.username.localeCompare(b.username));
  }

  async count(): Promise<number> {
    return this.deps.store.users.count();
  }

  /** By id, else by user name; `undefined` when neither matches. */
  async find(ref: string): Promise<StoredUser | undefined> {
    if (typeof ref !== 'string' || ref === '' || ref.length > 100 || Buffer.from(ref).toString() !== ref) return undefined;
    const byId = await this.deps.store.users.get(ref);
    if (byId) return byId as StoredUser;
    if (!USERNAME.test(ref.toLowerCase())) return undefined;
    return (await this.deps.store.users.getBy('username', ref)) as StoredUser | undefined;
  }

  async get(ref: string): Promise<UserView | undefined> {
    const u = await this.find(ref);
    return u && viewOf(u);
  }

  async create(input: NewUser, audit: Audit): Promise<UserView> {
    const username = checkUsername(input.username);
    const role = checkRole(input.role);
    const passwordHash = await this.deps.hasher.hash(checkPassword(input.password));
    return this.deps.lock.run(async () => {
      if (await this.deps.store.users.getBy('username', username)) throw exists(username);
      const at = new Date(this.now()).toISOString();
      const user: StoredUser = { id: `usr_${randomUUID()}`, username, role, passwordHash, createdAt: at, updatedAt: at, passwordChangedAt: at };
      try {
        await this.deps.store.write([
          { type: 'put', collection: 'users', key: user.id, value: user },
          this.deps.events.op(audit({ type: 'user.created', subject: username, data: { role } })),
        ]);
      } catch (err) {
        // The index is the last word (another process is not possible, but a direct store write is).
        if (isMetalboxError(err, 'STORE_CONFLICT')) throw exists(username);
        throw err;
      }
      return viewOf(user);
    });
  }

  /**
   * An admin changes a user's role or sets a new password (a reset: the old one is not needed). A new
   * password ends the user's sessions; a lower role takes effect on their next request (tokens included).
   */
  async update(ref: string, patch: UserPatch, audit: Audit): Promise<UserView> {
    const role = patch.role === undefined ? undefined : checkRole(patch.role);
    const passwordHash = patch.password === undefined ? undefined : await this.deps.hasher.hash(checkPassword(patch.password));
    return this.deps.lock.run(async () => {
      const user = await this.find(ref);
      if (!user) throw notFound(ref);
      const at = new Date(this.now()).toISOString();
      const next: StoredUser = { ...user, updatedAt: at };
      const data: Record<string, unknown> = {};
      if (role !== undefined && role !== user.role) {
        if (user.role === 'admin') await this.assertNotLastAdmin(user, 'given another role');
        next.role = role;
        data.role = { from: user.role, to: role };
      }
      const ops: WriteOp[] = [];
      if (passwordHash !== undefined) {
        next.passwordHash = passwordHash;
        next.passwordChangedAt = at;
        data.passwordReset = true;
        ops.push(...await this.sessionDeletes(user.id));
        data.sessionsEnded = ops.length;
      }
      await this.deps.store.write([
        { type: 'put', collection: 'users', key: user.id, value: next },
        ...ops,
        this.deps.events.op(audit({ type: 'user.updated', subject: user.username, data })),
      ]);
      return viewOf(next);
    });
  }

  /**
   * A user changes their own password, proving the current one. Their other sessions end (`keepSession`, the
   * key of the session making the change, stays). Wrong current password: USER_PASSWORD_WRONG.
   */
  async changePassword(id: string, current: string, next: string, audit: Audit, keepSession?: string): Promise<void> {
    checkPassword(next, 'newPassword');
    const user = await this.find(id);
    if (!user || typeof current !== 'string' || current.length > PASSWORD_MAX_LENGTH || !(await this.deps.hasher.verify(current, user.passwordHash))) {
      throw new MetalboxError('USER_PASSWORD_WRONG', 'the current password is wrong', { details: { field: 'currentPassword' } });
    }
    const passwordHash = await this.deps.hasher.hash(next);
    await this.deps.lock.run(async () => {
      const now = await this.find(id);
      if (!now) throw notFound(id);
      const at = new Date(this.now()).toISOString();
      const ends = (await this.sessionDeletes(id)).filter((op) => op.key !== keepSession);
      await this.deps.store.write([
        { type: 'put', collection: 'users', key: id, value: { ...now, passwordHash, passwordChangedAt: at, updatedAt: at } },
        ...ends,
        this.deps.events.op(audit({ type: 'user.password-changed', subject: now.username, data: { sessionsEnded: ends.length } })),
      ]);
    });
  }

  /** Deletes a user with their API tokens and sessions, in one batch. */
  async delete(ref: string, audit: Audit): Promise<UserView> {
    return this.deps.lock.run(async () => {
      const user = await this.find(ref);
      if (!user) throw notFound(ref);
      if (user.role === 'admin') await this.assertNotLastAdmin(user, 'deleted');
      const creds = await this.credentialDeletes(user.id);
      await this.deps.store.write([
        { type: 'del', collection: 'users', key: user.id },
        ...creds,
        this.deps.events.op(audit({ type: 'user.deleted', subject: user.username, data: { role: user.role, credentialsRevoked: creds.length } })),
      ]);
      return viewOf(user);
    });
  }

  /**
   * The user if the password is theirs; `undefined` otherwise, after the same work either way. A hash made
   * under older parameters is replaced (best effort: a failure to store it does not fail the login).
   */
  async authenticate(username: string, password: string): Promise<StoredUser | undefined> {
    if (typeof password !== 'string' || password.length > PASSWORD_MAX_LENGTH) return undefined;
    const user = typeof username === 'string' && USERNAME.test(username.toLowerCase())
      ? (await this.deps.store.users.getBy('username', username)) as StoredUser | undefined
      : undefined;
    if (!user) return this.deps.hasher.verifyNobody(password).then(() => undefined);
    if (!(await this.deps.hasher.verify(password, user.passwordHash))) return undefined;
    if (this.deps.hasher.outdated(user.passwordHash)) {
      const passwordHash = await this.deps.hasher.hash(password);
      await this.deps.lock.run(async () => {
        const now = (await this.deps.store.users.get(user.id)) as StoredUser | undefined;
        // Only if nobody changed the password meanwhile.
        if (now && now.passwordHash === user.passwordHash) await this.deps.store.users.put(user.id, { ...now, passwordHash });
      }).catch(() => undefined);
    }
    return user;
  }

  private async assertNotLastAdmin(user: StoredUser, what: string): Promise<void> {
    for await (const [key, u] of this.deps.store.users.entries()) {
      if (key !== user.id && u.role === 'admin') return;
    }
    throw new MetalboxError('USER_LAST_ADMIN', `${user.username} is the last admin and cannot be ${what}; make another admin first`);
  }

  private async sessionDeletes(userId: string): Promise<WriteOp[]> {
    return this.ownedDeletes(userId, ['session:']);
  }

  private async credentialDeletes(userId: string): Promise<WriteOp[]> {
    return this.ownedDeletes(userId, CREDENTIAL_PREFIXES);
  }

  private async ownedDeletes(userId: string, prefixes: readonly string[]): Promise<WriteOp[]> {
    const ops: WriteOp[] = [];
    for (const prefix of prefixes) {
      for await (const [key, t] of this.deps.store.tokens.entries({ gte: prefix, lt: prefixEnd(prefix) })) {
        if (t.userId === userId) ops.push({ type: 'del', collection: 'tokens', key });
      }
    }
    return ops;
  }
}

/** The first key after every key that starts with `prefix` (prefixes here end in ':'). */
export function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

function exists(username: string): MetalboxError {
  return new MetalboxError('USER_EXISTS', `a user named ${username} already exists`, { details: { field: 'username' } });
}

function notFound(ref: string): MetalboxError {
  return new MetalboxError('NOT_FOUND', `no user ${JSON.stringify(ref)}`);
}
