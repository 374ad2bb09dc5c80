// The production store: LevelDB (classic-level) under `<stateDir>/db`, one sublevel per collection, one per
// index, and `meta`. Values are JSON envelopes `{ v, d }` (see schema.ts); index entries map a normalized value
// to a primary key.
//
// Durability: every write() goes out in a batch with {sync: true}, and LevelDB makes a batch visible to reads
// only after its log fsync, so get()/entries() only ever see acknowledged-or-about-to-be data. Group commit:
// one batch is in flight at a time; write() calls that arrive meanwhile are prepared (index maintenance and
// conflict checks, against an overlay of the not-yet-durable values of earlier writes) and go out together as
// the next batch, sharing its one fsync.
//
// Disk space: LevelDB refuses every later write once a log write has failed (the log's state is indeterminate;
// only reopening clears that), and so it does after a failed background compaction. So the store keeps a
// reserve: it measures the state file system's free space (statfs) every second and counts what it writes in
// between; while that is under `reserveBytes` it refuses writes with STORE_DISK_FULL before LevelDB sees them
// (reads go on), and accepts them again as soon as there is room. If a write fails anyway (a disk filled faster
// than measured, an I/O error), every write is refused with STORE_WRITE_FAILED until the store has reopened
// LevelDB, which it tries every `recoverMs` once there is room (close and open of the same handle: reads issued
// meanwhile wait for the open); the resident collections are then reloaded from disk. The failed write was never
// acknowledged; like any write whose caller never learnt the outcome, LevelDB may or may not replay it at the
// reopen (a torn last log record is dropped, a whole one is kept).
import { ClassicLevel } from 'classic-level';
import { constants } from 'node:fs';
import { access, mkdir, open, readdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode, isMetalboxError, MetalboxError } from '../lib/errors.ts';
import { createCollection, pick, type Collections, type StoreBackend } from './collection.ts';
import { checkOps, INDEX_SPACES, indexesOf, indexSpace, planWrite, valuesOf, type PlanOp, type RawOp } from './indexes.ts';
import { findDamage } from './leveldb-check.ts';
import {
  COLLECTIONS, META_SPACE, MIGRATIONS, rawKey, SCHEMA_VERSIONS, STORE_FORMAT_VERSION, type Migrations, type SchemaVersions,
} from './schema.ts';
import type {
  Collection, CollectionName, RangeOptions, RawSnapshot, Store, StoreStats, WriteOp,
} from './types.ts';

export const DB_DIR = 'db';
export const PID_FILE = 'metalbox.pid';
/** Writes are taken into one group until it holds this many raw ops (bounds batch size and latency). */
const MAX_GROUP_OPS = 20_000;
/** Writes planned in one lot (one prefetch). */
const MAX_PLAN_BATCH = 1000;
const MIGRATE_BATCH = 500;

/**
 * Kept in memory as well as on disk: leases (the DHCP hot path writes one per ACK), users and tokens (every API
 * request checks its token and its owner), settings (every boot script reads the ephemeral image's name). All are
 * bounded: addresses of the pools, people, live credentials, a few operator settings.
 */
export const DEFAULT_RESIDENT: readonly CollectionName[] = ['leases', 'users', 'tokens', 'settings'];

export interface LevelStoreOptions {
  /** `false`: every write() is its own sync batch, one at a time (the benchmark's baseline). Default true. */
  groupCommit?: boolean;
  /**
   * Read every entry at open, so a damaged block fails the open (STORE_CORRUPT) rather than the read that
   * meets it. Costs about 3.5 µs per entry (1.3 s for 360k). Default false: the logs are checked in full and
   * the table files' footers always.
   */
  verify?: boolean;
  /**
   * Collections held in memory as well (with their index entries), loaded at open and updated as writes become
   * durable, so planning a write to them and get/getBy never read the disk (entries() scans still do).
   * Default DEFAULT_RESIDENT.
   */
  resident?: readonly CollectionName[];
  /** Override the schema versions and migration steps (tests of the migration machinery). */
  schemaVersions?: Partial<SchemaVersions>;
  migrations?: Migrations;
  /**
   * Free space (bytes) the state file system keeps: below it writes are refused (STORE_DISK_FULL) until there is
   * room again (see "Disk space" above). Default DEFAULT_RESERVE_BYTES; 0 refuses nothing.
   */
  reserveBytes?: number;
  /** How often free space is measured, ms. Default 1000. */
  spaceCheckMs?: number;
  /** After a failed write, how often reopening LevelDB is tried, ms. Default 5000. */
  recoverMs?: number;
  /** Free bytes of the file system holding `dir` (tests); default statfs's blocks available to us. */
  freeSpace?: (dir: string) => Promise<number>;
  /** Told when writes stop or start being accepted (metalbox serve logs it). */
  onHealth?: (health: StoreHealth) => void;
}

/** 64 MiB: room for LevelDB's compactions of a rack's worth of records, and for an operator to notice. */
export const DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024;

/** Whether the store takes writes, and why not (LevelStore.health()). */
export interface StoreHealth {
  writable: boolean;
  /** Why writes are refused: under the space reserve, or a write failed and LevelDB has not been reopened yet. */
  reason?: 'disk-full' | 'write-failed';
  /** The failed write's error, with reason write-failed. */
  error?: string;
  /** Free bytes at the last measurement, less twice what was written since (the log, then compaction). */
  freeBytes: number;
  reserveBytes: number;
  /** Writes refused for either reason, since open. */
  refused: number;
  /** Times LevelDB was reopened after a failed write. */
  recoveries: number;
}

export interface LevelStore extends Store {
  readonly stateDir: string;
  health(): StoreHealth;
  /** Measures free space now rather than at the next periodic check (health() then tells the result). */
  measureSpace(): Promise<void>;
}

export type Db = ClassicLevel<string, string>;
const sublevelOf = (db: Db, name: string) => db.sublevel(name);
type Sublevel = ReturnType<typeof sublevelOf>;
type BatchOp = { type: 'put'; sublevel: Sublevel; key: string; value: string } | { type: 'del'; sublevel: Sublevel; key: string };

export async function openLevelStore(stateDir: string, options: LevelStoreOptions = {}): Promise<LevelStore> {
  const dbDir = join(stateDir, DB_DIR);
  const fresh = await prepareStateDir(stateDir, dbDir);
  const db = await openDb(stateDir, dbDir, fresh);
  const versions: SchemaVersions = { ...SCHEMA_VERSIONS, ...options.schemaVersions };
  try {
    await writePidFile(stateDir);
    if (options.verify === true) await verifyAll(db, dbDir);
    await upgrade(db, dbDir, versions, options.migrations ?? MIGRATIONS);
    // LevelDB made a new log (and maybe the db dir) at open without syncing the directories: the log's
    // directory entry must be durable before any write in it is acknowledged.
    await syncDir(dbDir);
    await syncDir(stateDir);
  } catch (err) {
    await db.close().catch(() => undefined);
    await removePidFile(stateDir);
    throw levelError(err, dbDir);
  }
  const resident = new Map<string, Map<string, unknown>>();
  try {
    for (const c of options.resident ?? DEFAULT_RESIDENT) {
      resident.set(c, await loadResident(db, c, dbDir));
      for (const [index] of indexesOf(c)) resident.set(indexSpace(c, index), await loadResident(db, indexSpace(c, index), dbDir));
    }
  } catch (err) {
    await db.close().catch(() => undefined);
    await removePidFile(stateDir);
    throw levelError(err, dbDir);
  }
  const store = new LevelStoreImpl(stateDir, dbDir, db, versions, options.groupCommit !== false, resident, options);
  await store.measureSpace();
  return store;
}

async function statfsFree(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/** Loads a resident space: a collection's records decoded, an index space's entries as they are. */
async function loadResident(db: Db, space: string, dbDir: string): Promise<Map<string, unknown>> {
  const isIndex = space.startsWith('idx.');
  return loadSpace(sublevelOf(db, space), isIndex ? (_, text) => text : (key, text) => decodeEnvelope(text, space as CollectionName, key, dbDir).d);
}

/**
 * `JSON.parse(text)` where `text` is `JSON.stringify(value)`: a copy with exactly the JSON semantics. A flat plain
 * object of strings, booleans, null and finite numbers (a lease record, written per ACK) is copied field by field,
 * which gives the same object without parsing the text again; anything else is parsed.
 */
function jsonCopy(value: unknown, text: string): unknown {
  if (typeof value !== 'object' || value === null || Object.getPrototypeOf(value) !== Object.prototype) return JSON.parse(text);
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    const v = (value as Record<string, unknown>)[key];
    const t = typeof v;
    if (t === 'string' || t === 'boolean' || v === null || (t === 'number' && Number.isFinite(v) && !Object.is(v, -0))) out[key] = v;
    else if (v !== undefined) return JSON.parse(text); // nested, Date, toJSON, NaN, -0, functions: JSON decides
  }
  return out;
}

/** A caller's own copy of a resident value (callers may change what they get, as with values read from disk). */
function copyOf(value: unknown): unknown {
  return value === undefined ? undefined : structuredClone(value);
}

async function loadSpace(sub: Sublevel, decode: (key: string, text: string) => unknown): Promise<Map<string, unknown>> {
  const out = new Map<string, unknown>();
  const it = sub.iterator();
  try {
    for (let batch = await it.nextv(1000); batch.length > 0; batch = await it.nextv(1000)) {
      for (const [key, text] of batch) out.set(key, decode(key, text));
    }
  } finally {
    await it.close();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Opening: state dir checks, lock, damage, format and schema versions.

/** Creates the state dir if missing; returns whether the db dir is new (missing or empty). */
export async function prepareStateDir(stateDir: string, dbDir: string): Promise<boolean> {
  const rwx = constants.R_OK | constants.W_OK | constants.X_OK;
  try {
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    await access(stateDir, rwx);
  } catch (err) {
    throw unusable(stateDir, err);
  }
  let files: string[];
  try {
    files = await readdir(dbDir);
    await access(dbDir, rwx);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return true;
    throw unusable(dbDir, err);
  }
  if (files.length === 0) return true;
  // Without CURRENT, LevelDB would create a new empty database over the old files and later delete them.
  if (!files.includes('CURRENT')) throw corrupt(dbDir, 'its CURRENT file is missing');
  let damage: string | undefined;
  try {
    damage = await findDamage(dbDir);
  } catch (err) {
    throw unusable(dbDir, err);
  }
  if (damage) throw corrupt(dbDir, damage);
  return false;
}

export async function openDb(stateDir: string, dbDir: string, fresh: boolean): Promise<Db> {
  const db = new ClassicLevel<string, string>(dbDir, { createIfMissing: fresh });
  try {
    await db.open();
  } catch (err) {
    // classic-level wraps the LevelDB status in LEVEL_DATABASE_NOT_OPEN; the cause's code says what happened.
    const cause = err instanceof Error && err.cause !== undefined ? err.cause : err;
    const code = errnoCode(cause);
    if (code === 'LEVEL_LOCKED') throw await locked(stateDir, cause); // LevelDB's lock is non-blocking: fails at once
    if (code === 'LEVEL_CORRUPTION') throw corrupt(dbDir, messageOf(cause), cause);
    throw unusable(dbDir, cause);
  }
  return db;
}

async function locked(stateDir: string, cause: unknown): Promise<MetalboxError> {
  const pid = await readPid(stateDir);
  const holder = pid === undefined ? 'another metalbox' : `another metalbox (pid ${pid})`;
  return new MetalboxError('STATE_DIR_LOCKED',
    `state directory ${stateDir} is in use by ${holder}; stop it first or choose another state directory`,
    { cause, details: { path: stateDir, ...(pid === undefined ? {} : { pid }) } });
}

async function readPid(stateDir: string): Promise<number | undefined> {
  const text = await readFile(join(stateDir, PID_FILE), 'utf8').catch(() => '');
  const pid = Number.parseInt(text, 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Beside the db, so a second metalbox can name the holder of the lock. */
export async function writePidFile(stateDir: string): Promise<void> {
  await writeFile(join(stateDir, PID_FILE), `${process.pid}\n`);
}

export async function removePidFile(stateDir: string): Promise<void> {
  if ((await readPid(stateDir)) === process.pid) await rm(join(stateDir, PID_FILE), { force: true }).catch(() => undefined);
}

/** Reads every entry once: LevelDB reads table blocks lazily, so a damaged one would otherwise fail some later read. */
async function verifyAll(db: Db, dbDir: string): Promise<void> {
  const it = db.iterator<Buffer, Buffer>({ keyEncoding: 'buffer', valueEncoding: 'buffer', fillCache: false });
  try {
    while ((await it.nextv(1000)).length > 0);
  } catch (err) {
    throw corrupt(dbDir, messageOf(err), err);
  } finally {
    await it.close().catch(() => undefined);
  }
}

async function upgrade(db: Db, dbDir: string, versions: SchemaVersions, migrations: Migrations): Promise<void> {
  const meta = sublevelOf(db, META_SPACE);
  if ((await readMeta(meta, 'restoreIncomplete', dbDir)) !== undefined) {
    throw corrupt(dbDir, 'a restore into it did not finish; remove it and run the restore again');
  }
  const format = await readMeta(meta, 'format', dbDir);
  if (format === undefined) {
    if ((await db.keys({ limit: 1 }).all()).length > 0) throw corrupt(dbDir, 'it holds data but no metalbox format marker');
    await db.batch([
      metaPut(meta, 'format', STORE_FORMAT_VERSION),
      ...COLLECTIONS.map((c) => metaPut(meta, `schema.${c}`, versions[c])),
    ], { sync: true });
    return;
  }
  if (format > STORE_FORMAT_VERSION) {
    throw tooNew(dbDir, `store format ${format}, this metalbox knows format ${STORE_FORMAT_VERSION}`);
  }
  for (const c of COLLECTIONS) {
    // A collection added after the store was made has no records yet: it is at the current version.
    const recorded = await readMeta(meta, `schema.${c}`, dbDir);
    const stored = recorded ?? versions[c];
    if (stored > versions[c]) throw tooNew(dbDir, `${c} at schema version ${stored}, this metalbox knows ${versions[c]}`);
    const reindex = (await readMeta(meta, `reindex.${c}`, dbDir)) !== undefined;
    if (stored < versions[c] || reindex) await migrate(db, dbDir, c, versions[c], migrations);
    else if (recorded === undefined) await db.batch([metaPut(meta, `schema.${c}`, stored)], { sync: true });
  }
}

/**
 * Brings every record of `c` to version `to`, then rebuilds the collection's indexes (a migration may change
 * indexed fields). Crash-safe by construction: each record carries its own version, and the `reindex.<c>`
 * marker, written first and removed last, makes the next open redo the rebuild.
 */
async function migrate(db: Db, dbDir: string, c: CollectionName, to: number, migrations: Migrations): Promise<void> {
  const meta = sublevelOf(db, META_SPACE);
  const records = sublevelOf(db, c);
  const indexed = indexesOf(c).length > 0;
  if (indexed) await db.batch([metaPut(meta, `reindex.${c}`, true)], { sync: true });
  const flush = async (batch: BatchOp[]): Promise<void> => {
    if (batch.length > 0) await db.batch(batch.splice(0), { sync: true });
  };
  const batch: BatchOp[] = [];
  for await (const [key, text] of records.iterator()) {
    const env = decodeEnvelope(text, c, key, dbDir);
    if (env.v > to) throw tooNew(dbDir, `${c} "${key}" at schema version ${env.v}, this metalbox knows ${to}`);
    if (env.v === to) continue;
    let d = env.d;
    for (let v = env.v; v < to; v++) {
      const step = migrations[c]?.[v];
      if (!step) throw new TypeError(`no migration step for ${c} from schema version ${v}`);
      d = step(d);
    }
    batch.push({ type: 'put', sublevel: records, key, value: JSON.stringify({ v: to, d }) });
    if (batch.length >= MIGRATE_BATCH) await flush(batch);
  }
  await flush(batch);
  if (indexed) {
    for (const [index, def] of indexesOf(c)) {
      const sub = sublevelOf(db, indexSpace(c, index));
      await sub.clear();
      const owners = new Map<string, string>();
      for await (const [key, text] of records.iterator()) {
        for (const value of valuesOf(def, decodeEnvelope(text, c, key, dbDir).d, `${c} "${key}"`)) {
          const prev = owners.get(value);
          if (def.unique && prev !== undefined) {
            throw new MetalboxError('STORE_CONFLICT',
              `migrating ${c}: ${index} "${value}" belongs to both "${prev}" and "${key}"`, { details: { collection: c, index, value } });
          }
          owners.set(value, key); // a latest-wins entry goes to the last owner in key order: write order is gone
        }
      }
      for (const [value, key] of owners) {
        batch.push({ type: 'put', sublevel: sub, key: value, value: key });
        if (batch.length >= MIGRATE_BATCH) await flush(batch);
      }
      await flush(batch);
    }
  }
  await db.batch([metaPut(meta, `schema.${c}`, to), { type: 'del', sublevel: meta, key: `reindex.${c}` }], { sync: true });
}

async function readMeta(meta: Sublevel, key: string, dbDir: string): Promise<number | undefined> {
  const text = await meta.get(key);
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (value === true) return 1;
  if (typeof value !== 'number' || !Number.isInteger(value)) throw corrupt(dbDir, `meta ${key} is ${text}`);
  return value;
}

function metaPut(meta: Sublevel, key: string, value: number | boolean): BatchOp {
  return { type: 'put', sublevel: meta, key, value: JSON.stringify(value) };
}

function decodeEnvelope(text: string, c: string, key: string, dbDir: string): { v: number; d: unknown } {
  let env: unknown;
  try {
    env = JSON.parse(text);
  } catch {
    env = undefined;
  }
  if (typeof env !== 'object' || env === null || !Number.isInteger((env as { v?: unknown }).v) || !('d' in env)) {
    throw corrupt(dbDir, `${c} "${key}" is not a valid record`);
  }
  return env as { v: number; d: unknown };
}

// ---------------------------------------------------------------------------------------------------------
// Errors

const OS_REASONS: Record<string, string> = {
  EACCES: 'permission denied', EPERM: 'operation not permitted', EROFS: 'read-only file system',
  ENOSPC: 'no space left on device', EDQUOT: 'disk quota exceeded', ENOTDIR: 'a path component is not a directory',
  EEXIST: 'exists and is not a directory', ELOOP: 'too many symbolic links', EIO: 'I/O error',
};

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function unusable(path: string, err: unknown): MetalboxError {
  const code = errnoCode(err);
  const reason = code && OS_REASONS[code] ? `${OS_REASONS[code]} (${code})` : messageOf(err);
  return new MetalboxError('STATE_DIR_UNUSABLE', `state directory ${path} is unusable: ${reason}`,
    { cause: err, details: { path, ...(code ? { errno: code } : {}) } });
}

function corrupt(dbDir: string, reason: string, cause?: unknown): MetalboxError {
  return new MetalboxError('STORE_CORRUPT',
    `the store in ${dbDir} is damaged (${reason}); move ${dbDir} aside and load a backup with \`metalbox restore FILE\``,
    { cause, details: { path: dbDir } });
}

function tooNew(dbDir: string, what: string): MetalboxError {
  return new MetalboxError('STORE_TOO_NEW',
    `the store in ${dbDir} was written by a newer metalbox (${what}); run that version or restore an older backup`,
    { details: { path: dbDir } });
}

function levelError(err: unknown, dbDir: string): unknown {
  if (isMetalboxError(err)) return err;
  const code = errnoCode(err);
  if (code === 'LEVEL_DATABASE_NOT_OPEN' || code === 'LEVEL_ITERATOR_NOT_OPEN' || code === 'LEVEL_SNAPSHOT_NOT_OPEN') {
    return new MetalboxError('STORE_CLOSED', 'the store is closed', { cause: err });
  }
  if (code === 'LEVEL_CORRUPTION' || code === 'LEVEL_DECODE_ERROR') return corrupt(dbDir, messageOf(err), err);
  return err;
}

// ---------------------------------------------------------------------------------------------------------
// The open store

interface Prepared {
  /** Raw keys and values, in order; value `undefined` deletes. */
  rawKeys: string[];
  rawValues: (string | undefined)[];
  /** Overlay entries this write set (space, key, value), removed once durable unless a later write set them again. */
  spaces: string[];
  keys: string[];
  /** The values of `keys`, in order (for resident spaces once durable). */
  values: unknown[];
  seq: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface OverlayEntry { value: unknown; seq: number }

interface Queued {
  /**
   * The ops, each put with its value's JSON (`text`, what goes to disk); put values of collections that planning
   * reads (indexed or resident) are private copies.
   */
  ops: PlanOp[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** Values by space, then key: lookups without building a "space\0key" string per key. */
class SpaceMap<V> {
  readonly #spaces = new Map<string, Map<string, V>>();
  get(space: string, key: string): V | undefined { return this.#spaces.get(space)?.get(key); }
  has(space: string, key: string): boolean { return this.#spaces.get(space)?.has(key) ?? false; }
  set(space: string, key: string, value: V): void {
    let m = this.#spaces.get(space);
    if (m === undefined) this.#spaces.set(space, (m = new Map()));
    m.set(key, value);
  }
  delete(space: string, key: string): void { this.#spaces.get(space)?.delete(key); }
  clear(): void { this.#spaces.clear(); }
}

class LevelStoreImpl implements LevelStore {
  readonly machines!: Collection<'machines'>;
  readonly interfaces!: Collection<'interfaces'>;
  readonly leases!: Collection<'leases'>;
  readonly bmcs!: Collection<'bmcs'>;
  readonly images!: Collection<'images'>;
  readonly dnsRecords!: Collection<'dnsRecords'>;
  readonly events!: Collection<'events'>;
  readonly users!: Collection<'users'>;
  readonly tokens!: Collection<'tokens'>;
  readonly settings!: Collection<'settings'>;

  readonly #collections: Collections;
  readonly #spaces = new Map<string, Sublevel>();
  /** Newest not-yet-durable value per space and key (undefined = pending delete), for planning later writes. */
  readonly #overlay = new SpaceMap<OverlayEntry>();
  readonly #stats: StoreStats = { syncs: 0, writes: 0, maxGroup: 0 };
  /** Collections whose records planning reads or keeps (indexed or resident). */
  readonly #planned: Set<string>;
  #seq = 0;
  #queue: Queued[] = [];
  #planning = false;
  /** Durable values read while planning the current lot, by space and key. */
  #cache: SpaceMap<unknown> | undefined;
  #ready: Prepared[] = [];
  #inFlight = false;
  #idle: (() => void)[] = [];
  #failed: MetalboxError | undefined;
  #closing: Promise<void> | undefined;
  // Disk space and recovery (see "Disk space" above).
  readonly #reserve: number;
  readonly #recoverMs: number;
  readonly #freeSpace: (dir: string) => Promise<number>;
  readonly #onHealth: ((health: StoreHealth) => void) | undefined;
  #free = Number.POSITIVE_INFINITY;
  /** Bytes written since #free was measured. */
  #writtenSince = 0;
  #diskFull = false;
  #measuring: Promise<void> | undefined;
  #spaceTimer: NodeJS.Timeout | undefined;
  #recoverTimer: NodeJS.Timeout | undefined;
  #reopening = false;
  #refused = 0;
  #recoveries = 0;
  #lastHealth = '';

  constructor(
    readonly stateDir: string,
    private readonly dbDir: string,
    private readonly db: Db,
    private readonly versions: SchemaVersions,
    private readonly groupCommit: boolean,
    /** Resident spaces (see LevelStoreOptions.resident): durable value by key; a missing key is absent. */
    private readonly resident: Map<string, Map<string, unknown>>,
    options: LevelStoreOptions = {},
  ) {
    this.#reserve = options.reserveBytes ?? DEFAULT_RESERVE_BYTES;
    this.#recoverMs = options.recoverMs ?? 5000;
    this.#freeSpace = options.freeSpace ?? statfsFree;
    this.#onHealth = options.onHealth;
    this.#spaceTimer = setInterval(() => void this.measureSpace(), options.spaceCheckMs ?? 1000);
    this.#spaceTimer.unref();
    this.#planned = new Set(COLLECTIONS.filter((c) => indexesOf(c).length > 0 || resident.has(c)));
    this.#makeSpaces();
    const backend: StoreBackend = {
      get: (c, key) => this.#get(c, key),
      getBy: (c, index, value) => this.#getBy(c, index, value),
      entries: (c, o) => ({ [Symbol.asyncIterator]: () => this.#scan(c, o) }),
      count: (c) => this.#count(c),
      write: (ops) => this.write(ops),
    };
    this.#collections = Object.fromEntries(COLLECTIONS.map((c) => [c, createCollection(c, backend)])) as unknown as Collections;
    Object.assign(this, this.#collections);
  }

  /** One sublevel per collection and index. Made again after a reopen: a closed sublevel stays closed. */
  #makeSpaces(): void {
    for (const c of COLLECTIONS) this.#spaces.set(c, sublevelOf(this.db, c));
    for (const { space } of INDEX_SPACES) this.#spaces.set(space, sublevelOf(this.db, space));
  }

  collection<C extends CollectionName>(name: C): Collection<C> {
    return pick(this.#collections, name);
  }

  stats(): StoreStats {
    return { ...this.#stats };
  }

  health(): StoreHealth {
    const freeBytes = Math.max(0, this.#free - 2 * this.#writtenSince);
    const base = { freeBytes: Number.isFinite(freeBytes) ? freeBytes : 0, reserveBytes: this.#reserve, refused: this.#refused, recoveries: this.#recoveries };
    if (this.#failed) return { writable: false, reason: 'write-failed', error: this.#failed.message, ...base };
    if (this.#diskFull) return { writable: false, reason: 'disk-full', ...base };
    return { writable: true, ...base };
  }

  /** Measures free space now (also every spaceCheckMs); one measurement at a time. Never throws. */
  measureSpace(): Promise<void> {
    this.#measuring ??= (async () => {
      try {
        const written = this.#writtenSince;
        const free = await this.#freeSpace(this.dbDir);
        this.#free = free;
        this.#writtenSince -= written;
        this.#diskFull = this.#reserve > 0 && free - 2 * this.#writtenSince < this.#reserve;
      } catch {
        // A state dir that cannot be measured is not taken for a full one: writes will say what is wrong.
        this.#diskFull = false;
      } finally {
        this.#measuring = undefined;
      }
      this.#reportHealth();
    })();
    return this.#measuring;
  }

  /** Tells onHealth when writable/reason changed. */
  #reportHealth(): void {
    const health = this.health();
    const key = `${health.writable}:${health.reason ?? ''}`;
    if (key === this.#lastHealth) return;
    const first = this.#lastHealth === '';
    this.#lastHealth = key;
    if (first && health.writable) return;
    try {
      this.#onHealth?.(health);
    } catch {
      // a listener's failure is not the store's
    }
  }

  // --- reads: durable data only ------------------------------------------------------------------------

  #sub(space: string): Sublevel {
    const sub = this.#spaces.get(space);
    if (!sub) throw new TypeError(`unknown store space ${space}`);
    return sub;
  }

  #decode(c: string, key: string, text: string | undefined): unknown {
    return text === undefined ? undefined : decodeEnvelope(text, c, key, this.dbDir).d;
  }

  async #get(c: CollectionName, key: string): Promise<unknown> {
    const resident = this.#residentRead(c);
    if (resident) return copyOf(resident.get(key));
    try {
      return this.#decode(c, key, await this.#sub(c).get(key));
    } catch (err) {
      throw levelError(err, this.dbDir);
    }
  }

  async #getBy(c: CollectionName, index: string, value: string): Promise<unknown> {
    const resident = this.#residentRead(c);
    if (resident) {
      // The resident copy changes only when a batch is durable, records and index entries together: one view.
      const key = this.resident.get(indexSpace(c, index))!.get(value) as string | undefined;
      const record = key === undefined ? undefined : resident.get(key);
      const def = indexesOf(c).find(([name]) => name === index)![1];
      return valuesOf(def, record, `${c} "${key}"`).has(value) ? copyOf(record) : undefined;
    }
    // One explicit snapshot for both reads, so a write landing between them cannot pair an index entry with a
    // record that no longer has the value.
    let snapshot: ReturnType<Db['snapshot']> | undefined;
    try {
      snapshot = this.db.snapshot();
      const key = await this.#sub(indexSpace(c, index)).get(value, { snapshot });
      if (key === undefined) return undefined;
      const record = this.#decode(c, key, await this.#sub(c).get(key, { snapshot }));
      const def = indexesOf(c).find(([name]) => name === index)![1];
      return valuesOf(def, record, `${c} "${key}"`).has(value) ? record : undefined;
    } catch (err) {
      throw levelError(err, this.dbDir);
    } finally {
      await snapshot?.close();
    }
  }

  /**
   * A resident collection's durable records, for reads that need no disk (the API's per-request token and user
   * lookups, DHCP's lease reads); undefined for other collections. Same view as LevelDB's: it changes when a batch
   * is durable. A closed store refuses like LevelDB does.
   */
  #residentRead(c: CollectionName): Map<string, unknown> | undefined {
    const resident = this.resident.get(c);
    if (resident && this.db.status !== 'open' && !this.#reopening) throw new MetalboxError('STORE_CLOSED', 'the store is closed');
    return resident;
  }

  async *#scan(c: CollectionName, o: RangeOptions): AsyncGenerator<[string, unknown]> {
    // Created at the first next(): the iterator's implicit snapshot fixes the view there.
    const range: Record<string, unknown> = {};
    for (const k of ['gt', 'gte', 'lt', 'lte', 'limit', 'reverse'] as const) if (o[k] !== undefined) range[k] = o[k];
    let it;
    try {
      it = this.#sub(c).iterator(range);
      for (;;) {
        const entries = await it.nextv(256);
        if (entries.length === 0) return;
        for (const [key, text] of entries) yield [key, this.#decode(c, key, text)];
      }
    } catch (err) {
      throw levelError(err, this.dbDir);
    } finally {
      await it?.close().catch(() => undefined);
    }
  }

  async #count(c: CollectionName): Promise<number> {
    let n = 0;
    try {
      const it = this.#sub(c).keys();
      try {
        for (let keys = await it.nextv(1000); keys.length > 0; keys = await it.nextv(1000)) n += keys.length;
      } finally {
        await it.close();
      }
    } catch (err) {
      throw levelError(err, this.dbDir);
    }
    return n;
  }

  rawSnapshot(): RawSnapshot {
    let snapshot: ReturnType<Db['snapshot']>;
    try {
      snapshot = this.db.snapshot();
    } catch (err) {
      throw levelError(err, this.dbDir);
    }
    const db = this.db;
    const dbDir = this.dbDir;
    const iterate = async function* <T>(it: { nextv(n: number): Promise<T[]>; close(): Promise<void> }): AsyncGenerator<T> {
      try {
        for (let batch = await it.nextv(1000); batch.length > 0; batch = await it.nextv(1000)) yield* batch;
      } catch (err) {
        throw levelError(err, dbDir);
      } finally {
        await it.close().catch(() => undefined);
      }
    };
    return {
      storeFormat: STORE_FORMAT_VERSION,
      async count() {
        let n = 0;
        for await (const _ of iterate(db.keys<Buffer>({ keyEncoding: 'buffer', snapshot }))) n++;
        return n;
      },
      entries: () => iterate(db.iterator<Buffer, Buffer>({ keyEncoding: 'buffer', valueEncoding: 'buffer', snapshot })),
      close: () => snapshot.close(),
    };
  }

  // --- writes ------------------------------------------------------------------------------------------
  //
  // write() queues; the planner takes everything queued, prefetches in two round trips what planning will
  // read, then plans each write in call order (each sees the ones before it through the overlay) and hands it
  // to #flush. Planning one write at a time with its own reads was the bottleneck: on a disk whose fsync takes
  // half a millisecond, groups stayed near one write.

  write(ops: WriteOp[]): Promise<void> {
    const copy: PlanOp[] = new Array(ops.length);
    try {
      checkOps(ops);
      if (this.#closing) throw new MetalboxError('STORE_CLOSED', 'the store is closing');
      // The caller may mutate its objects once write() returns: serialize now. The text is what goes to disk;
      // planning reads a copy parsed back from it only where it looks inside (indexed or resident collections).
      for (let i = 0; i < ops.length; i++) {
        const op = ops[i]!;
        if (op.type !== 'put') {
          copy[i] = op;
          continue;
        }
        const text = JSON.stringify(op.value) as string | undefined;
        if (text === undefined) throw new TypeError(`write(ops): put ${op.collection} "${op.key}": the value is not JSON`);
        copy[i] = { type: 'put', collection: op.collection, key: op.key, value: this.#planned.has(op.collection) ? jsonCopy(op.value, text) : op.value, text } as PlanOp;
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ ops: copy, resolve, reject });
      this.#pump();
    });
  }

  #pump(): void {
    if (this.#planning || this.#queue.length === 0) return;
    this.#planning = true;
    void this.#planQueued().finally(() => {
      this.#planning = false;
      this.#pump();
      this.#wakeIfIdle();
    });
  }

  async #planQueued(): Promise<void> {
    const writes = this.#queue.splice(0, MAX_PLAN_BATCH);
    this.#cache = new SpaceMap();
    const prefetched = this.#prefetch(writes);
    if (prefetched !== undefined) {
      // Only an optimization: whatever it could not fetch, planning reads itself and reports properly.
      await prefetched.catch(() => undefined);
    }
    for (const w of writes) {
      // Writes whose reads are all in memory (resident collections, the overlay, the prefetch) plan at once.
      const planned = this.#plan(w);
      if (planned !== undefined) await planned;
    }
    this.#cache = undefined;
  }

  /** Plans one write and hands it to #flush; a promise only when planning had to read the disk. Never throws. */
  #plan(w: Queued): Promise<void> | undefined {
    if (this.#failed) {
      this.#refused++;
      w.reject(this.#writeFailed());
      return undefined;
    }
    if (this.#diskFull) {
      this.#refused++;
      const free = Math.max(0, this.#free - 2 * this.#writtenSince);
      w.reject(new MetalboxError('STORE_DISK_FULL',
        `the state file system (${this.dbDir}) has ${mib(free)} free, under the ${mib(this.#reserve)} reserve: writes are refused until there is room`,
        { details: { freeBytes: free, reserveBytes: this.#reserve } }));
      return undefined;
    }
    let raw: RawOp[] | Promise<RawOp[]>;
    try {
      raw = planWrite(w.ops, (keys) => this.#readPending(keys));
    } catch (err) {
      w.reject(levelError(err, this.dbDir)); // a conflict rejects this call only; nothing of it was queued
      return undefined;
    }
    if (!(raw instanceof Promise)) {
      this.#prepare(w, raw);
      return undefined;
    }
    return raw.then((r) => {
      if (this.#failed) w.reject(this.#writeFailed()); // failed while we were reading
      else this.#prepare(w, r);
    }, (err: unknown) => w.reject(levelError(err, this.dbDir)));
  }

  #prepare({ resolve, reject }: Queued, raw: RawOp[]): void {
    const seq = ++this.#seq;
    const n = raw.length;
    const rawKeys: string[] = new Array(n);
    const rawValues: (string | undefined)[] = new Array(n);
    const spaces: string[] = [];
    const keys: string[] = [];
    const values: unknown[] = [];
    for (let i = 0; i < n; i++) {
      const { space, key, value, text } = raw[i]!;
      const isRecord = !space.startsWith('idx.');
      rawKeys[i] = rawKey(space, key);
      rawValues[i] = value === undefined ? undefined
        : isRecord ? `{"v":${this.versions[space as CollectionName]},"d":${text!}}` : String(value);
      // Only what planning reads needs the overlay (records of indexed or resident collections, index entries).
      if (!isRecord || this.#planned.has(space)) {
        this.#overlay.set(space, key, { value, seq });
        spaces.push(space);
        keys.push(key);
        values.push(value);
      }
    }
    this.#ready.push({ rawKeys, rawValues, spaces, keys, values, seq, resolve, reject });
    this.#flush();
  }

  /**
   * Reads, in two round trips for the whole lot, the records these writes touch and the index entries involved;
   * undefined when there is nothing to read (only resident or unindexed collections).
   */
  #prefetch(writes: Queued[]): Promise<void> | undefined {
    let any = false;
    for (const { ops } of writes) {
      for (const op of ops) if (indexesOf(op.collection).length > 0 && !this.resident.has(op.collection)) any = true;
    }
    return any ? this.#prefetchReads(writes) : undefined;
  }

  async #prefetchReads(writes: Queued[]): Promise<void> {
    const records = new Map<string, [string, string]>();
    const entries = new Map<string, [string, string]>();
    const want = (m: Map<string, [string, string]>, space: string, key: string): void => {
      m.set(`${space}\0${key}`, [space, key]);
    };
    const wantEntries = (c: CollectionName, record: unknown): void => {
      for (const [index, def] of indexesOf(c)) {
        for (const v of valuesOf(def, record, c)) want(entries, indexSpace(c, index), v);
      }
    };
    for (const { ops } of writes) {
      for (const op of ops) {
        if (indexesOf(op.collection).length === 0 || this.resident.has(op.collection)) continue;
        want(records, op.collection, op.key);
        if (op.type === 'put') wantEntries(op.collection, op.value);
      }
    }
    const pairs = [...records.values()];
    const values = await this.#readPending(pairs);
    pairs.forEach(([space], i) => wantEntries(space as CollectionName, values[i]));
    await this.#readPending([...entries.values()]);
  }

  /**
   * The newest value of each key: a pending write's (overlay), else the durable one (prefetch cache, else one
   * getMany on the root for all spaces). No race: a key not in the overlay has no pending write, and only the
   * planner (the caller) adds one. A cached durable value stays valid while planning: it is dropped when a
   * write to its key becomes durable.
   */
  #readPending(keys: readonly (readonly [string, string])[]): unknown[] | Promise<unknown[]> {
    const out: unknown[] = new Array(keys.length);
    let missing: number[] | undefined;
    for (let i = 0; i < keys.length; i++) {
      const [space, key] = keys[i]!;
      const pending = this.#overlay.get(space, key);
      const resident = this.resident.get(space);
      if (pending) out[i] = pending.value;
      else if (resident) out[i] = resident.get(key);
      else if (this.#cache?.has(space, key)) out[i] = this.#cache.get(space, key);
      else (missing ??= []).push(i);
    }
    if (missing === undefined) return out;
    const need = missing;
    return this.db.getMany(need.map((i) => rawKey(...keys[i]!))).then((texts) => {
      need.forEach((pos, j) => {
        const [space, key] = keys[pos]!;
        out[pos] = space.startsWith('idx.') ? texts[j] : this.#decode(space, key, texts[j]);
        this.#cache?.set(space, key, out[pos]);
      });
      return out;
    });
  }

  #flush(): void {
    if (this.#inFlight || this.#ready.length === 0) return;
    let take = 1;
    if (this.groupCommit) {
      for (let ops = this.#ready[0]!.rawKeys.length; take < this.#ready.length; take++) {
        ops += this.#ready[take]!.rawKeys.length;
        if (ops > MAX_GROUP_OPS) break;
      }
    }
    const group = this.#ready.splice(0, take);
    let bytes = 0;
    // A chained batch with raw keys: abstract-level's array batch() costs ~8 µs of main-thread time per op
    // (it copies and re-encodes each one), ten times this.
    const batch = this.db.batch();
    for (const w of group) {
      const { rawKeys, rawValues } = w;
      for (let i = 0; i < rawKeys.length; i++) {
        const value = rawValues[i];
        bytes += rawKeys[i]!.length + (value === undefined ? 0 : value.length);
        if (value === undefined) batch.del(rawKeys[i]!);
        else batch.put(rawKeys[i]!, value);
      }
    }
    this.#inFlight = true;
    this.#writtenSince += bytes;
    if (this.#reserve > 0 && this.#free - 2 * this.#writtenSince < this.#reserve) void this.measureSpace();
    batch.write({ sync: true }).then(() => {
      this.#stats.syncs++;
      this.#stats.writes += group.length;
      this.#stats.maxGroup = Math.max(this.#stats.maxGroup, group.length);
      const last = group.at(-1)!.seq;
      for (const w of group) {
        const { spaces, keys, values } = w;
        for (let i = 0; i < keys.length; i++) {
          const space = spaces[i]!;
          const key = keys[i]!;
          const resident = this.resident.get(space);
          if (resident) {
            if (values[i] === undefined) resident.delete(key);
            else resident.set(key, values[i]);
          }
          const entry = this.#overlay.get(space, key); // gone already if two writes of this group set the key
          if (entry && entry.seq <= last) this.#overlay.delete(space, key);
          this.#cache?.delete(space, key);
        }
      }
      for (const w of group) w.resolve();
    }, (err: unknown) => {
      // LevelDB refuses all further writes after a failed log write or sync, and the writes queued behind
      // this group were planned on top of it: fail them all. Reopening the store recovers.
      this.#failed = new MetalboxError('STORE_WRITE_FAILED', `the store could not write to ${this.dbDir}: ${messageOf(err)}`, { cause: err });
      for (const w of [...group, ...this.#ready.splice(0)]) w.reject(this.#failed);
      this.#overlay.clear();
      this.#cache?.clear();
      this.#reportHealth();
      this.#scheduleRecover();
    }).finally(() => {
      this.#inFlight = false;
      this.#flush();
      this.#wakeIfIdle();
    });
  }

  #wakeIfIdle(): void {
    if (this.#planning || this.#inFlight || this.#queue.length > 0 || this.#ready.length > 0) return;
    for (const wake of this.#idle.splice(0)) wake();
  }

  #writeFailed(): MetalboxError {
    return new MetalboxError('STORE_WRITE_FAILED', `${this.#failed!.message} (an earlier write failed; the store reopens itself when there is room)`, { cause: this.#failed });
  }

  #scheduleRecover(): void {
    if (this.#recoverTimer !== undefined || this.#closing) return;
    this.#recoverTimer = setTimeout(() => {
      this.#recoverTimer = undefined;
      void this.#recover();
    }, this.#recoverMs);
    this.#recoverTimer.unref();
  }

  /**
   * After a failed write: once there is room, waits until no write is being planned or written, reopens LevelDB
   * and reloads the resident collections from disk; writes are accepted again. Tried again later on any failure.
   */
  async #recover(): Promise<void> {
    if (this.#closing || !this.#failed) return;
    try {
      await this.measureSpace();
      if (this.#diskFull) {
        this.#scheduleRecover();
        return;
      }
      await new Promise<void>((wake) => {
        this.#idle.push(wake);
        this.#wakeIfIdle();
      });
      if (this.#closing) return;
      this.#reopening = true;
      // Called together: abstract-level queues reads made from here on until the open has finished.
      const closed = this.db.close();
      const opened = this.db.open({ createIfMissing: false });
      this.#makeSpaces(); // sublevels of a reopening parent wait for it
      await closed;
      await opened;
      await syncDir(this.dbDir);
      for (const [space, map] of this.resident) {
        const fresh = await loadResident(this.db, space, this.dbDir);
        map.clear();
        for (const [key, value] of fresh) map.set(key, value);
      }
      this.#failed = undefined;
      this.#recoveries++;
      this.#reportHealth();
    } catch {
      this.#scheduleRecover();
    } finally {
      this.#reopening = false;
    }
  }

  close(): Promise<void> {
    clearInterval(this.#spaceTimer);
    clearTimeout(this.#recoverTimer);
    this.#closing ??= (async () => {
      await new Promise<void>((wake) => {
        this.#idle.push(wake);
        this.#wakeIfIdle();
      });
      await this.db.close();
      await removePidFile(this.stateDir);
    })();
    return this.#closing;
  }
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}
