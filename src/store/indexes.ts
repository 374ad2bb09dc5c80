// Secondary indexes and the write planner shared by both stores. A store hands `planWrite` the ops of one
// write() call and a reader that sees the newest value of any key, pending writes included; it gets back the
// raw puts/dels (records and index entries) to commit atomically, or a STORE_CONFLICT. Keys live in "spaces":
// a collection name for records, `idx.<collection>.<index>` for index entries (value = primary key).
import { MetalboxError } from '../lib/errors.ts';
import { isCollectionName } from './schema.ts';
import type { CollectionName, Indexes, LeaseRecord, MachineRecord, RangeOptions, Records, UserRecord, WriteOp } from './types.ts';

interface IndexDef<R> {
  /** Unique: a second owner is a conflict. Not unique: the latest writer owns the value. */
  readonly unique: boolean;
  /** Raw values of this index for a record (normalized by `indexValue`). */
  values(record: R): readonly unknown[];
}

export const INDEXES: { readonly [C in keyof Indexes]: Readonly<Record<Indexes[C], IndexDef<Records[C]>>> } = {
  machines: {
    mac: { unique: true, values: (m: MachineRecord) => m.macs },
    uuid: { unique: true, values: (m: MachineRecord) => (m.uuid ? [m.uuid] : []) },
    hostname: { unique: true, values: (m: MachineRecord) => (m.hostname ? [m.hostname] : []) },
  },
  leases: {
    mac: { unique: false, values: (l: LeaseRecord) => [l.mac] },
  },
  users: {
    username: { unique: true, values: (u: UserRecord) => [u.username] },
  },
};

type AnyIndexDef = IndexDef<unknown>;

const INDEXES_OF = new Map<string, [string, AnyIndexDef][]>();

/** The indexes of a collection as [name, definition] pairs (the same array every call: do not change it). */
export function indexesOf(collection: CollectionName): [string, AnyIndexDef][] {
  let list = INDEXES_OF.get(collection);
  if (list === undefined) {
    const defs = (INDEXES as Partial<Record<CollectionName, Record<string, AnyIndexDef>>>)[collection];
    list = defs ? Object.entries(defs) : [];
    // Only names that are collections are cached: the map cannot grow from caller input.
    if (isCollectionName(collection)) INDEXES_OF.set(collection, list);
  }
  return list;
}

export function indexSpace(collection: CollectionName, index: string): string {
  return `idx.${collection}.${index}`;
}

/** Every index space, for stores that create one table per space. */
export const INDEX_SPACES: readonly { collection: CollectionName; index: string; space: string }[] =
  (Object.keys(INDEXES) as CollectionName[]).flatMap((collection) =>
    indexesOf(collection).map(([index]) => ({ collection, index, space: indexSpace(collection, index) })));

/** Index lookups are case-insensitive: MACs, UUIDs and hostnames are all case-insensitive by their specs. */
export function indexValue(value: string): string {
  return value.toLowerCase();
}

/** The normalized, de-duplicated values a record has in one index. A malformed record is a caller bug. */
export function valuesOf(def: AnyIndexDef, record: unknown, where: string): Set<string> {
  return new Set(valueList(def, record, where));
}

/** valuesOf as an array (most indexes give a record one value: no Set needed to de-duplicate). */
function valueList(def: AnyIndexDef, record: unknown, where: string): string[] {
  if (record === undefined) return [];
  if (typeof record !== 'object' || record === null) throw new TypeError(`${where}: record must be an object`);
  const raw = def.values(record);
  if (!Array.isArray(raw)) throw new TypeError(`${where}: indexed field must be an array`);
  const out: string[] = [];
  for (const v of raw) {
    if (typeof v !== 'string') throw new TypeError(`${where}: indexed value must be a string`);
    const n = indexValue(v);
    if (!out.includes(n)) out.push(n);
  }
  return out;
}

type MaybePromise<T> = T | Promise<T>;

/** `f(x)`, once `x` is there: at once for a value, after it resolves for a promise. */
function after<T, U>(x: MaybePromise<T>, f: (v: T) => MaybePromise<U>): MaybePromise<U> {
  return x instanceof Promise ? x.then(f) : f(x);
}

/**
 * Reads a batch of `[space, key]`s (one round trip); `undefined` for a missing key. Records come back decoded.
 * It may answer at once (everything in memory) or with a promise.
 */
export type SpaceReader = (keys: readonly (readonly [string, string])[]) => MaybePromise<readonly unknown[]>;

/** A write op as planWrite takes it: `text` (the value's JSON, if the store made it) travels to the RawOp. */
export type PlanOp = WriteOp & { text?: string };

/** One raw change; `value === undefined` deletes. `text`: the JSON of a record put, when its op had one. */
export interface RawOp { space: string; key: string; value: unknown; text?: string }

interface Claim { space: string; value: string; key: string; collection: CollectionName; index: string; def: AnyIndexDef; owner?: unknown }

interface Planned { collection: CollectionName; key: string; value: unknown; text: string | undefined }

/**
 * The raw changes of one write: the records (the last op on a key wins) and the index entries they take and give up.
 * Answers at once when `read` does (a store whose indexed records are in memory plans without a turn of the event
 * loop), else with a promise; a conflict is a STORE_CONFLICT thrown or rejected accordingly.
 */
export function planWrite(ops: readonly PlanOp[], read: SpaceReader): MaybePromise<RawOp[]> {
  // Last op on a key wins, as in a LevelDB batch; emitting only the final value keeps the batch small. Order: by
  // each key's last op. Keys are looked up per collection (no "collection\0key" strings to build and hash).
  const records: (Planned | undefined)[] = [];
  const seen = new Map<string, Map<string, number>>();
  let dropped = 0;
  for (const op of ops) {
    let keys = seen.get(op.collection);
    if (keys === undefined) seen.set(op.collection, (keys = new Map()));
    const at = keys.get(op.key);
    if (at !== undefined) { records[at] = undefined; dropped++; }
    keys.set(op.key, records.length);
    records.push({ collection: op.collection, key: op.key, value: op.type === 'put' ? op.value : undefined, text: op.type === 'put' ? op.text : undefined });
  }
  const out: RawOp[] = [];
  const indexed: Planned[] = [];
  for (const r of dropped === 0 ? records : records.filter((x) => x !== undefined)) {
    out.push(r!.text === undefined ? { space: r!.collection, key: r!.key, value: r!.value } : { space: r!.collection, key: r!.key, value: r!.value, text: r!.text });
    if (indexesOf(r!.collection).length > 0) indexed.push(r!);
  }
  if (indexed.length === 0) return out;

  // Round 1: what these records look like now, to find the index entries they give up.
  return after(read(indexed.map((r) => [r.collection, r.key])), (before) => {
    const releases: Claim[] = [];
    const claims = new Map<string, Map<string, Claim>>();
    const touched: Claim[] = [];
    indexed.forEach((r, i) => {
      for (const [index, def] of indexesOf(r.collection)) {
        const where = `${r.collection} "${r.key}"`;
        const old = valueList(def, before[i], where);
        const now = valueList(def, r.value, where);
        const space = indexSpace(r.collection, index);
        for (const v of old) {
          if (now.includes(v)) continue;
          const release: Claim = { space, value: v, key: r.key, collection: r.collection, index, def };
          releases.push(release);
          touched.push(release);
        }
        let inSpace = claims.get(space);
        if (inSpace === undefined) claims.set(space, (inSpace = new Map()));
        for (const v of now) {
          // A unique entry the record already owns needs no write; a latest-wins entry is re-pointed on every put.
          if (def.unique && old.includes(v)) continue;
          const rival = inSpace.get(v);
          if (rival && rival.key !== r.key && def.unique) throw conflict({ space, value: v, key: r.key, collection: r.collection, index, def }, rival.key);
          const claim: Claim = { space, value: v, key: r.key, collection: r.collection, index, def };
          if (rival) touched[touched.indexOf(rival)] = claim;
          else touched.push(claim);
          inSpace.set(v, claim);
        }
      }
    });
    if (touched.length === 0) return out;

    // Round 2: the current owner of every index entry touched.
    return after(read(touched.map((c) => [c.space, c.value])), (owners) => {
      touched.forEach((c, i) => { c.owner = owners[i]; });
      for (const rel of releases) {
        // Only drop an entry that still points here (a latest-wins entry may belong to a newer lease).
        if (!claims.get(rel.space)?.has(rel.value) && rel.owner === rel.key) out.push({ space: rel.space, key: rel.value, value: undefined });
      }
      const clashes: Claim[] = [];
      for (const inSpace of claims.values()) {
        for (const claim of inSpace.values()) {
          const owner = claim.owner;
          if (claim.def.unique && typeof owner === 'string' && owner !== claim.key &&
              !releases.some((r) => r.space === claim.space && r.value === claim.value && r.key === owner)) clashes.push(claim);
          else out.push({ space: claim.space, key: claim.value, value: claim.key });
        }
      }
      if (clashes.length === 0) return out;
      // Round 3, only on a clash: an entry whose owner is gone or no longer has the value is stale; take it over.
      return after(read(clashes.map((c) => [c.collection, c.owner as string])), (ownerRecords) => {
        clashes.forEach((claim, i) => {
          const owner = claim.owner as string;
          if (valueList(claim.def, ownerRecords[i], `${claim.collection} "${owner}"`).includes(claim.value)) throw conflict(claim, owner);
          out.push({ space: claim.space, key: claim.value, value: claim.key });
        });
        return out;
      });
    });
  });
}

function conflict(claim: Claim, owner: string): MetalboxError {
  return new MetalboxError('STORE_CONFLICT',
    `${claim.collection} ${claim.index} "${claim.value}" already belongs to ${claim.collection} "${owner}"`,
    { details: { collection: claim.collection, index: claim.index, value: claim.value, key: claim.key, owner } });
}

/** Caller bugs in a write are TypeErrors, thrown before anything is queued. */
export function checkOps(ops: readonly WriteOp[]): void {
  if (!Array.isArray(ops)) throw new TypeError('write(ops): ops must be an array');
  for (const op of ops as readonly unknown[]) {
    if (typeof op !== 'object' || op === null) throw new TypeError('write(ops): each op must be an object');
    const { type, collection, key } = op as Record<string, unknown>;
    if (type !== 'put' && type !== 'del') throw new TypeError(`write(ops): op type must be put or del, got ${String(type)}`);
    if (!isCollectionName(collection)) throw new TypeError(`write(ops): unknown collection ${String(collection)}`);
    checkKey(key);
    if (type === 'put' && (op as { value?: unknown }).value === undefined) throw new TypeError(`write(ops): put ${collection} "${String(key)}" without a value`);
  }
}

export function checkKey(key: unknown): asserts key is string {
  // A lone UTF-16 surrogate would not survive the UTF-8 round trip to disk, so the two stores would disagree.
  // isWellFormed (ES2024, in every Node >= 20) says exactly that, without encoding the key (per op, per write).
  if (typeof key !== 'string' || key === '' || !(key as string & { isWellFormed(): boolean }).isWellFormed()) {
    throw new TypeError(`store key must be a non-empty well-formed string, got ${JSON.stringify(key)}`);
  }
}

export function checkRange(o: RangeOptions): void {
  if (o.gt !== undefined && o.gte !== undefined) throw new TypeError('range: give gt or gte, not both');
  if (o.lt !== undefined && o.lte !== undefined) throw new TypeError('range: give lt or lte, not both');
}

/** Deep copy with exactly the semantics of the JSON on disk (undefined fields vanish, Dates become strings). */
export function jsonClone<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}
