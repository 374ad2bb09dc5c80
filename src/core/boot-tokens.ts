// Per-boot tokens: each iPXE script that boots the ephemeral environment carries a fresh random token on the
// kernel command line (metalbox.token=...). The environment presents it to the agent API, which checks it
// with `verifyBootToken`. Only the token's sha-256 is stored (the key is derived from it, so a lookup needs
// no scan); the token itself is never stored or logged.
import { createHash, randomBytes } from 'node:crypto';
import { MetalboxError } from '../lib/errors.ts';
import type { Store, TokenRecord, WriteOp } from '../store/types.ts';

export interface BootTokenRecord extends TokenRecord {
  kind: 'boot';
  /** The machine the token was issued to: what the script request named (MAC, UUID) and the machine id if known. */
  mac?: string;
  uuid?: string;
  machineId?: string;
  /** The boot kind the script started (enlist, commission, ...). */
  purpose: string;
  createdAt: string;
  expiresAt: string;
}

export interface BootTokenSubject { mac?: string; uuid?: string; machineId?: string; purpose: string }

const KEY_PREFIX = 'boot:';
/** 32 random bytes, base64url: 43 characters of [A-Za-z0-9_-], safe on a kernel command line and in iPXE. */
const TOKEN = /^[A-Za-z0-9_-]{43}$/;

const hashOf = (token: string): string => createHash('sha256').update(token).digest('hex');

/**
 * A new token and the write op that stores its hash. Put the op in the same batch as the event of the script
 * fetch, and answer only once the batch is durable: a token the machine holds must verify after a crash.
 */
export function newBootToken(subject: BootTokenSubject, ttlMs: number, now: number = Date.now()): { token: string; op: WriteOp; record: BootTokenRecord } {
  const token = randomBytes(32).toString('base64url');
  const hash = hashOf(token);
  const record: BootTokenRecord = {
    id: KEY_PREFIX + hash,
    kind: 'boot',
    hash,
    purpose: subject.purpose,
    createdAt: new Date(now).toISOString(),
    expiresAt: new Date(now + ttlMs).toISOString(),
  };
  if (subject.mac !== undefined) record.mac = subject.mac;
  if (subject.uuid !== undefined) record.uuid = subject.uuid;
  if (subject.machineId !== undefined) record.machineId = subject.machineId;
  return { token, record, op: { type: 'put', collection: 'tokens', key: record.id, value: record } };
}

/** The token's record if it is a boot token that has not expired; `undefined` otherwise (not an error). */
export async function verifyBootToken(store: Store, token: unknown, now: number = Date.now()): Promise<BootTokenRecord | undefined> {
  if (typeof token !== 'string' || !TOKEN.test(token)) return undefined;
  const record = await store.tokens.get(KEY_PREFIX + hashOf(token));
  if (record === undefined || record.kind !== 'boot' || typeof record.expiresAt !== 'string') return undefined;
  if (!(Date.parse(record.expiresAt) > now)) return undefined;
  return record as BootTokenRecord;
}

/** For the agent API: the record, or BOOT_TOKEN_INVALID (401) without saying which check failed. */
export async function requireBootToken(store: Store, token: unknown, now: number = Date.now()): Promise<BootTokenRecord> {
  const record = await verifyBootToken(store, token, now);
  if (!record) throw new MetalboxError('BOOT_TOKEN_INVALID', 'the boot token is unknown or expired');
  return record;
}

/** Deletes expired boot tokens; returns how many. Run now and then: every script fetch makes one. */
export async function pruneBootTokens(store: Store, now: number = Date.now()): Promise<number> {
  const ops: WriteOp[] = [];
  for await (const [key, value] of store.tokens.entries({ gte: KEY_PREFIX, lt: 'boot;' })) {
    if (value.kind === 'boot' && !(Date.parse(String(value.expiresAt)) > now)) ops.push({ type: 'del', collection: 'tokens', key });
  }
  for (let i = 0; i < ops.length; i += 1000) await store.write(ops.slice(i, i + 1000));
  return ops.length;
}
