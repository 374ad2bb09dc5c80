// `metalbox backup FILE` / `metalbox restore FILE`. A backup is one consistent snapshot of every raw key and
// value (records, index entries, meta), taken on an open store without pausing writes.
//
// File format 1, all inside one gzip stream:
//   "METALBOX-BACKUP\n"
//   u32be n, then n bytes of JSON header { format, storeFormat, createdAt, records }
//   records x ( u32be keyLength, key bytes, u32be valueLength, value bytes ), raw LevelDB keys in key order
//   32 bytes: sha256 of everything before it
// The digest catches truncation and corruption that gzip's own CRC might not see (a cut at a member boundary).
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { errnoCode, isMetalboxError, MetalboxError } from '../lib/errors.ts';
import {
  DB_DIR, openDb, openLevelStore, prepareStateDir, removePidFile, syncDir, writePidFile, type Db,
} from './level-store.ts';
import { META_SPACE, STORE_FORMAT_VERSION } from './schema.ts';
import type { RawSnapshot, Store } from './types.ts';

export const BACKUP_MAGIC = 'METALBOX-BACKUP';
export const BACKUP_FORMAT_VERSION = 1;

export interface BackupInfo {
  file: string;
  format: number;
  storeFormat: number;
  createdAt: string;
  records: number;
}

const MAGIC_LINE = Buffer.from(`${BACKUP_MAGIC}\n`);
const DIGEST = 32;
// Bounds for hostile or damaged files: checked before anything is allocated.
const MAX_HEADER = 64 * 1024;
const MAX_KEY = 64 * 1024;
const MAX_VALUE = 256 * 1024 * 1024;
const RESTORE_BATCH_BYTES = 4 * 1024 * 1024;
const CHUNK = 64 * 1024;

/**
 * Writes a consistent snapshot of `store` to `file`, via `file.tmp`, fsynced and renamed into place, so `file`
 * is either the old content or a complete backup. Works on a store that is serving writes.
 */
export async function backupStore(store: Store, file: string): Promise<BackupInfo> {
  const snapshot = store.rawSnapshot();
  const tmp = `${file}.tmp`;
  try {
    const records = await snapshot.count();
    const header = { format: BACKUP_FORMAT_VERSION, storeFormat: snapshot.storeFormat, createdAt: new Date().toISOString(), records };
    // 0600: users and tokens carry password and token hashes.
    const fh = await open(tmp, 'w', 0o600);
    try {
      await pipeline(Readable.from(encode(header, snapshot)), createGzip(), async (gz: AsyncIterable<Buffer>) => {
        for await (const chunk of gz) await fh.write(chunk);
      });
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
    await syncDir(dirname(file));
    return { file, ...header };
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    if (isMetalboxError(err)) throw err;
    throw new MetalboxError('BACKUP_WRITE_FAILED', `cannot write backup ${file}: ${errnoCode(err) ?? (err as Error).message}`, { cause: err, details: { file } });
  } finally {
    await snapshot.close();
  }
}

/** `metalbox backup FILE` when no server runs: opens the state dir (taking its lock), backs up, closes. */
export async function backupStateDir(stateDir: string, file: string): Promise<BackupInfo> {
  const store = await openLevelStore(stateDir);
  try {
    return await backupStore(store, file);
  } finally {
    await store.close();
  }
}

async function* encode(header: object, snapshot: RawSnapshot): AsyncGenerator<Buffer> {
  const hash = createHash('sha256');
  let parts: Buffer[] = [];
  let size = 0;
  const push = (b: Uint8Array): void => {
    parts.push(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    size += b.byteLength;
  };
  const take = (): Buffer => {
    const out = Buffer.concat(parts, size);
    hash.update(out);
    parts = [];
    size = 0;
    return out;
  };
  const json = Buffer.from(JSON.stringify(header));
  push(MAGIC_LINE);
  push(u32(json.length));
  push(json);
  let n = 0;
  for await (const [key, value] of snapshot.entries()) {
    push(u32(key.byteLength));
    push(key);
    push(u32(value.byteLength));
    push(value);
    n++;
    if (size >= CHUNK) yield take();
  }
  // Both passes read one snapshot, so this cannot differ unless the snapshot is broken.
  if (n !== (header as { records: number }).records) throw new Error(`backup: snapshot yielded ${n} entries, counted ${(header as { records: number }).records}`);
  yield take();
  yield hash.digest();
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/**
 * Reads and checks a whole backup file: structure, bounds, record count and digest. `onEntry`, when given,
 * receives each raw entry in order (before the digest has been checked: verify first with a call without it).
 * Any damage is BACKUP_INVALID.
 */
export async function readBackup(file: string, onEntry?: (key: Buffer, value: Buffer) => Promise<void> | void): Promise<BackupInfo> {
  const invalid = (reason: string, cause?: unknown): MetalboxError =>
    new MetalboxError('BACKUP_INVALID', `${file} is not a valid metalbox backup: ${reason}`, { cause, details: { file } });
  let info: BackupInfo | undefined;
  try {
    await pipeline(createReadStream(file), createGunzip(), async (source: AsyncIterable<Buffer>) => {
      const r = new ChunkReader(source[Symbol.asyncIterator](), () => invalid('it is truncated'));
      if (!(await r.read(MAGIC_LINE.length)).equals(MAGIC_LINE)) throw invalid(`it does not start with ${BACKUP_MAGIC}`);
      const headerLength = (await r.read(4)).readUInt32BE();
      if (headerLength > MAX_HEADER) throw invalid('its header is too long');
      let header: Record<string, unknown>;
      try {
        header = JSON.parse((await r.read(headerLength)).toString('utf8')) as Record<string, unknown>;
      } catch (err) {
        if (isMetalboxError(err)) throw err;
        throw invalid('its header is not JSON');
      }
      const { format, storeFormat, createdAt, records } = header;
      if (format !== BACKUP_FORMAT_VERSION) throw invalid(`unknown backup format ${String(format)}`);
      if (!Number.isInteger(storeFormat) || !Number.isInteger(records) || (records as number) < 0 || typeof createdAt !== 'string') {
        throw invalid('its header is incomplete');
      }
      for (let i = 0; i < (records as number); i++) {
        const keyLength = (await r.read(4)).readUInt32BE();
        if (keyLength === 0 || keyLength > MAX_KEY) throw invalid(`entry ${i} has a bad key length`);
        const key = await r.read(keyLength);
        const valueLength = (await r.read(4)).readUInt32BE();
        if (valueLength > MAX_VALUE) throw invalid(`entry ${i} has a bad value length`);
        const value = await r.read(valueLength);
        await onEntry?.(key, value);
      }
      const expected = r.digest();
      if (!(await r.read(DIGEST, false)).equals(expected)) throw invalid('its checksum does not match (the file is damaged)');
      if (!(await r.atEnd())) throw invalid('it has data after the checksum');
      info = { file, format, storeFormat: storeFormat as number, createdAt, records: records as number };
    });
  } catch (err) {
    if (isMetalboxError(err)) throw err;
    const code = errnoCode(err);
    if (code?.startsWith('Z_')) throw invalid(`it is not intact gzip data (${(err as Error).message})`, err);
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR') throw invalid(`it cannot be read (${(err as Error).message})`, err);
    throw err;
  }
  return info!;
}

/** Pulls exact byte counts out of a stream of chunks, hashing what it hands out. */
class ChunkReader {
  readonly #hash: Hash = createHash('sha256');
  #chunks: Buffer[] = [];
  #buffered = 0;

  constructor(private readonly source: AsyncIterator<Buffer>, private readonly truncated: () => Error) {}

  async read(n: number, hashed = true): Promise<Buffer> {
    while (this.#buffered < n) {
      const next = await this.source.next();
      if (next.done) throw this.truncated();
      this.#chunks.push(next.value);
      this.#buffered += next.value.length;
    }
    const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#buffered);
    const out = all.subarray(0, n);
    this.#chunks = n < all.length ? [all.subarray(n)] : [];
    this.#buffered -= n;
    if (hashed) this.#hash.update(out);
    return out;
  }

  digest(): Buffer {
    return this.#hash.copy().digest();
  }

  async atEnd(): Promise<boolean> {
    if (this.#buffered > 0) return false;
    for (let next = await this.source.next(); !next.done; next = await this.source.next()) if (next.value.length > 0) return false;
    return true;
  }
}

/**
 * `metalbox restore FILE`: checks the whole file, then loads it into the state dir's store, which must be empty
 * (a store that only holds format markers counts as empty). A marker in `meta` stays set until the last entry
 * is on disk, so a store left behind by an interrupted restore refuses to open. Finally opens the result once,
 * as `serve` will (format checks, migrations).
 */
export async function restoreBackup(file: string, stateDir: string): Promise<BackupInfo> {
  const info = await readBackup(file);
  if (info.storeFormat > STORE_FORMAT_VERSION) {
    throw new MetalboxError('STORE_TOO_NEW', `${file} holds store format ${info.storeFormat}, this metalbox knows format ${STORE_FORMAT_VERSION}`, { details: { file } });
  }
  const db = await openRestoreTarget(stateDir);
  try {
    const meta = db.sublevel(META_SPACE);
    await meta.clear();
    await db.batch([{ type: 'put', sublevel: meta, key: 'restoreIncomplete', value: 'true' }], { sync: true });
    let batch = db.batch();
    let bytes = 0;
    await readBackup(file, async (key, value) => {
      batch.put(key, value, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
      bytes += key.length + value.length;
      if (batch.length >= 1000 || bytes >= RESTORE_BATCH_BYTES) {
        await batch.write({ sync: true });
        batch = db.batch();
        bytes = 0;
      }
    });
    await batch.write({ sync: true });
    await db.batch([{ type: 'del', sublevel: meta, key: 'restoreIncomplete' }], { sync: true });
  } finally {
    await db.close();
    await removePidFile(stateDir);
  }
  const store = await openLevelStore(stateDir);
  await store.close();
  return info;
}

async function openRestoreTarget(stateDir: string): Promise<Db> {
  const dbDir = join(stateDir, DB_DIR);
  const notEmpty = (why: string): MetalboxError => new MetalboxError('RESTORE_TARGET_NOT_EMPTY',
    `${dbDir} ${why}; restore only loads into an empty state directory (move ${dbDir} aside first)`, { details: { path: dbDir } });
  let db: Db;
  try {
    db = await openDb(stateDir, dbDir, await prepareStateDir(stateDir, dbDir));
  } catch (err) {
    if (isMetalboxError(err, 'STORE_CORRUPT')) throw notEmpty('holds a damaged store');
    throw err;
  }
  try {
    // Any key outside the meta sublevel ("!meta!" .. "!meta\"") is data.
    const data = [...await db.keys({ lt: '!meta!', limit: 1 }).all(), ...await db.keys({ gte: '!meta"', limit: 1 }).all()];
    if (data.length > 0) throw notEmpty('holds data');
    await writePidFile(stateDir);
    return db;
  } catch (err) {
    await db.close();
    throw err;
  }
}
