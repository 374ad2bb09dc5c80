// The typed per-collection facade over a store's untyped primitives; both stores share it, so argument
// checks and normalization cannot drift apart.
import { checkKey, checkRange, indexesOf, indexValue } from './indexes.ts';
import type { Collection, CollectionName, IndexName, RangeOptions, Records, WriteOp } from './types.ts';

export interface StoreBackend {
  get(collection: CollectionName, key: string): Promise<unknown>;
  /** `value` is already normalized. */
  getBy(collection: CollectionName, index: string, value: string): Promise<unknown>;
  entries(collection: CollectionName, options: RangeOptions): AsyncIterable<[string, unknown]>;
  count(collection: CollectionName): Promise<number>;
  write(ops: WriteOp[]): Promise<void>;
}

export function createCollection<C extends CollectionName>(name: C, backend: StoreBackend): Collection<C> {
  const indexes = new Set(indexesOf(name).map(([index]) => index));
  return {
    name,
    async get(key) {
      checkKey(key);
      return (await backend.get(name, key)) as Records[C] | undefined;
    },
    async getBy(index: IndexName<C>, value: string) {
      if (!indexes.has(index)) throw new TypeError(`${name} has no index ${String(index)}`);
      if (typeof value !== 'string') throw new TypeError(`${name}.getBy(${index}): value must be a string`);
      if (value === '') return undefined;
      return (await backend.getBy(name, index, indexValue(value))) as Records[C] | undefined;
    },
    entries(options = {}) {
      checkRange(options);
      return backend.entries(name, options) as AsyncIterable<[string, Records[C]]>;
    },
    count: () => backend.count(name),
    put: (key, value) => backend.write([{ type: 'put', collection: name, key, value } as WriteOp]),
    del: (key) => backend.write([{ type: 'del', collection: name, key }]),
  };
}

export type Collections = { readonly [C in CollectionName]: Collection<C> };

export function pick<C extends CollectionName>(collections: Collections, name: C): Collection<C> {
  if (!Object.hasOwn(collections, name)) throw new TypeError(`unknown collection ${String(name)}`);
  return collections[name] as Collection<C>;
}
