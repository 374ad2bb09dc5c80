// The in-memory store for unit tests: the same contract as the LevelDB store (indexes, conflicts, ordered
// ranges, snapshot iteration, JSON copy semantics), no disk. Values are kept as JSON text, as on disk, so a
// caller can never alias stored state. Writes run one at a time; each counts as its own "sync".
import { MetalboxError } from '../lib/errors.ts';
import { createCollection, pick, type Collections, type StoreBackend } from './collection.ts';
import { checkOps, indexSpace, indexesOf, jsonClone, planWrite, valuesOf } from './indexes.ts';
import { COLLECTIONS, isCollectionName, META_SPACE, rawKey, SCHEMA_VERSIONS, STORE_FORMAT_VERSION } from './schema.ts';
import type { Collection, CollectionName, RangeOptions, Store, StoreStats, WriteOp } from './types.ts';

export function createMemoryStore(): Store {
  const spaces = new Map<string, Map<string, string>>();
  const space = (name: string): Map<string, string> => {
    let s = spaces.get(name);
    if (!s) spaces.set(name, (s = new Map()));
    return s;
  };
  const decode = (text: string | undefined): unknown => (text === undefined ? undefined : JSON.parse(text));
  const stats: StoreStats = { syncs: 0, writes: 0, maxGroup: 0 };
  let chain: Promise<void> = Promise.resolve();
  let closed = false;

  const assertOpen = (): void => {
    if (closed) throw new MetalboxError('STORE_CLOSED', 'the store is closed');
  };

  const backend: StoreBackend = {
    async get(collection, key) {
      assertOpen();
      return decode(space(collection).get(key));
    },
    async getBy(collection, index, value) {
      assertOpen();
      const key = space(indexSpace(collection, index)).get(value);
      if (key === undefined) return undefined;
      const record = decode(space(collection).get(key));
      const def = indexesOf(collection).find(([name]) => name === index)?.[1];
      return def && valuesOf(def, record, collection).has(value) ? record : undefined;
    },
    entries(collection, options) {
      return {
        async *[Symbol.asyncIterator]() {
          assertOpen();
          // The generator body runs at the first next(): that is when the scan starts and its view is fixed.
          const view = [...space(collection)].filter(([k]) => inRange(k, options)).sort(([a], [b]) => compareUtf8(a, b));
          if (options.reverse) view.reverse();
          const limit = Number.isInteger(options.limit) && options.limit! >= 0 ? options.limit! : Infinity;
          for (const [k, text] of view.slice(0, limit)) yield [k, JSON.parse(text)] as [string, unknown];
        },
      };
    },
    async count(collection) {
      assertOpen();
      return space(collection).size;
    },
    write(ops: WriteOp[]) {
      try {
        checkOps(ops);
        assertOpen();
      } catch (err) {
        return Promise.reject(err);
      }
      const copy = jsonClone(ops);
      const done = chain.then(async () => {
        const raw = await planWrite(copy, async (keys) => keys.map(([name, k]) => {
          const text = space(name).get(k);
          return name.startsWith('idx.') ? text : decode(text);
        }));
        for (const { space: name, key, value } of raw) {
          if (value === undefined) space(name).delete(key);
          else space(name).set(key, name.startsWith('idx.') ? (value as string) : JSON.stringify(value));
        }
        stats.syncs++;
        stats.writes++;
        stats.maxGroup = Math.max(stats.maxGroup, 1);
      });
      chain = done.catch(() => undefined);
      return done;
    },
  };

  const collections = Object.fromEntries(COLLECTIONS.map((c) => [c, createCollection(c, backend)])) as unknown as Collections;
  return {
    ...collections,
    collection: <C extends CollectionName>(name: C): Collection<C> => pick(collections, name),
    write: (ops) => backend.write(ops),
    rawSnapshot() {
      assertOpen();
      // The LevelDB store's layout (schema.ts), so a backup of this store restores into a real one.
      const text = (v: unknown): string => JSON.stringify(v);
      const rows: [string, string][] = [
        [rawKey(META_SPACE, 'format'), text(STORE_FORMAT_VERSION)],
        ...COLLECTIONS.map((c): [string, string] => [rawKey(META_SPACE, `schema.${c}`), text(SCHEMA_VERSIONS[c])]),
      ];
      for (const [name, s] of spaces) {
        const version = isCollectionName(name) ? SCHEMA_VERSIONS[name] : undefined;
        for (const [k, v] of s) rows.push([rawKey(name, k), version === undefined ? v : `{"v":${version},"d":${v}}`]);
      }
      const raw = rows.map(([k, v]) => [Buffer.from(k), Buffer.from(v)] as [Uint8Array, Uint8Array]).sort(([a], [b]) => Buffer.compare(a, b));
      return {
        storeFormat: STORE_FORMAT_VERSION,
        count: async () => raw.length,
        entries: async function* () { yield* raw; },
        close: async () => undefined,
      };
    },
    stats: () => ({ ...stats }),
    async close() {
      closed = true;
      await chain;
    },
  };
}

function inRange(k: string, o: RangeOptions): boolean {
  return (o.gt === undefined || compareUtf8(k, o.gt) > 0) && (o.gte === undefined || compareUtf8(k, o.gte) >= 0)
    && (o.lt === undefined || compareUtf8(k, o.lt) < 0) && (o.lte === undefined || compareUtf8(k, o.lte) <= 0);
}

/** LevelDB orders keys by their UTF-8 bytes, which is code point order; JS `<` compares UTF-16 units. */
export function compareUtf8(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x - y;
    if (x > 0xffff) i++;
  }
  return a.length - b.length;
}
