// The store's public surface. `core`, `services` and `api` import types only; `main` picks an implementation.
export type * from './types.ts';
export { openLevelStore, DB_DIR, PID_FILE, type LevelStore, type LevelStoreOptions } from './level-store.ts';
export { createMemoryStore } from './memory-store.ts';
export { backupStore, backupStateDir, readBackup, restoreBackup, BACKUP_MAGIC, BACKUP_FORMAT_VERSION, type BackupInfo } from './backup.ts';
export { eventKey, createEventKeys } from '../lib/event-key.ts';
export { COLLECTIONS, SCHEMA_VERSIONS, MIGRATIONS, STORE_FORMAT_VERSION, type Migrations, type MigrationStep, type SchemaVersions } from './schema.ts';
