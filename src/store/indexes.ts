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

export function indexesOf(collection: CollectionName): [string, AnyIndexDef][] {
  const defs = (INDEXES as Partial<Record<CollectionName, Record<string, AnyIndexDef>>>)[collection];
  return defs ? Object.entries(defs) : [];
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
  const out = new Set<string>();
  if (record === undefined) return out;
  if (typeof record !== 'object' || record === null) throw new TypeError(`${where}: record must be an object`);
  const raw = def.values(record);
  if (!Array.isArray(raw)) throw new TypeError(`${where}: indexed field must be an array`);
  for (const v of raw) {
    if (typeof v !== 'string') throw new TypeError(`${where}: indexed value must be a string`);
    out.add(indexValue(v));
  }
  return out;
}

// Reads a batch of `[space, key]`s (one round trip); `undefined` for a missing key. Records come back decoded.
export type SpaceReader = (keys: readonly (readonly [string, string])[]) => Promise<readonly unknown[]>;

/** One raw change; `value === undefined` deletes. */
export interface RawOp { space: string; key: string; value: unknown }

interface Claim { id: string; space: string; value: string; key: string; collection: CollectionName; index: string; def: AnyIndexDef }

export async function planWrite(ops: readonly WriteOp[], read: SpaceReader): Promise<RawOp[]> {
  // Last op on a key wins, as in a LevelDB batch; emitting only the final value keeps the batch small.
  const records = new Map<string, { collection: CollectionName; key: string; value: unknown }>();
  for (const op of ops) {
    const id = `${op.collection}\0${op.key}`;
    records.delete(id); // keep op order for the final value
    records.set(id, { collection: op.collection, key: op.key, value: op.type === 'put' ? op.value : undefined });
  }
  const out: RawOp[] = [...records.values()].map((r) => ({ space: r.collection, key: r.key, value: r.value }));
  const indexed = [...records.values()].filter((r) => indexesOf(r.collection).length > 0);
  if (indexed.length === 0) return out;

  // Round 1: what these records look like now, to find the index entries they give up.
  const before = await read(indexed.map((r) => [r.collection, r.key]));
  const releases: Claim[] = [];
  const claims = new Map<string, Claim>();
  indexed.forEach((r, i) => {
    for (const [index, def] of indexesOf(r.collection)) {
      const where = `${r.collection} "${r.key}"`;
      const old = valuesOf(def, before[i], where);
      const now = valuesOf(def, r.value, where);
      const space = indexSpace(r.collection, index);
      const entry = (value: string): Claim => ({ id: `${space}\0${value}`, space, value, key: r.key, collection: r.collection, index, def });
      for (const v of old) if (!now.has(v)) releases.push(entry(v));
      for (const v of now) {
        // A unique entry the record already owns needs no write; a latest-wins entry is re-pointed on every put.
        if (def.unique && old.has(v)) continue;
        const claim = entry(v);
        const rival = claims.get(claim.id);
        if (rival && rival.key !== r.key && def.unique) throw conflict(claim, rival.key);
        claims.set(claim.id, claim);
      }
    }
  });

  // Round 2: the current owner of every index entry touched.
  const touched = [...releases, ...claims.values()];
  const owners = await read(touched.map((c) => [c.space, c.value]));
  const ownerOf = new Map(touched.map((c, i) => [c.id, owners[i]]));
  const releasedBy = new Set(releases.map((c) => `${c.id}\0${c.key}`));

  for (const rel of releases) {
    // Only drop an entry that still points here (a latest-wins entry may belong to a newer lease).
    if (!claims.has(rel.id) && ownerOf.get(rel.id) === rel.key) out.push({ space: rel.space, key: rel.value, value: undefined });
  }
  for (const claim of claims.values()) {
    const owner = ownerOf.get(claim.id);
    if (claim.def.unique && typeof owner === 'string' && owner !== claim.key && !releasedBy.has(`${claim.id}\0${owner}`)) {
      // Round 3, only on a clash: an entry whose owner is gone or no longer has the value is stale; take it over.
      const [ownerRecord] = await read([[claim.collection, owner]]);
      if (valuesOf(claim.def, ownerRecord, `${claim.collection} "${owner}"`).has(claim.value)) throw conflict(claim, owner);
    }
    out.push({ space: claim.space, key: claim.value, value: claim.key });
  }
  return out;
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
  if (typeof key !== 'string' || key === '' || Buffer.from(key).toString() !== key) {
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
