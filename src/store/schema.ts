// What the stored data looks like, versioned. Each stored record is an envelope `{ v, d }`: `v` is the
// schema version of its collection when it was written, `d` the record. Changing a record's shape means:
// bump its SCHEMA_VERSIONS entry and add the step from the old version to MIGRATIONS; the LevelDB store
// migrates older records (and rebuilds the collection's indexes) when it opens. STORE_FORMAT_VERSION covers
// the layout around the records (sublevel names, envelope, index encoding); a change there needs code in
// level-store.ts, not a migration step.
import type { CollectionName } from './types.ts';

export const COLLECTIONS = [
  'machines', 'interfaces', 'leases', 'bmcs', 'images', 'dnsRecords', 'events', 'users', 'tokens', 'settings',
] as const satisfies readonly CollectionName[];

// Compile-time check that COLLECTIONS lists every collection of `Records`.
const allListed: Exclude<CollectionName, (typeof COLLECTIONS)[number]> extends never ? true : never = true;
void allListed;

export const STORE_FORMAT_VERSION = 1;

/**
 * Layout (store format 1): each space (a collection, an index `idx.<collection>.<index>`, or `meta`) is a
 * classic-level sublevel, so its raw key is `!<space>!<key>`. Record values are JSON `{"v":..,"d":..}`, index
 * values the owner's primary key, meta values JSON (`format`, `schema.<collection>`, `reindex.<collection>`,
 * `restoreIncomplete`).
 */
export const META_SPACE = 'meta';

export function rawKey(space: string, key: string): string {
  return `!${space}!${key}`;
}

export type SchemaVersions = Record<CollectionName, number>;

export const SCHEMA_VERSIONS: SchemaVersions = {
  machines: 1, interfaces: 1, leases: 1, bmcs: 1, images: 1, dnsRecords: 1, events: 1, users: 1, tokens: 1, settings: 1,
};

/** `MIGRATIONS[c][v]` turns a record of collection `c` at version `v` into version `v + 1`. Pure functions. */
export type MigrationStep = (record: unknown) => unknown;
export type Migrations = { [C in CollectionName]?: Readonly<Record<number, MigrationStep>> };

export const MIGRATIONS: Migrations = {};

export function isCollectionName(name: unknown): name is CollectionName {
  return typeof name === 'string' && (COLLECTIONS as readonly string[]).includes(name);
}
