// Checks LevelDB's files before LevelDB opens them.
//
// Logs: LevelDB runs with paranoid_checks off (classic-level does not expose it), so at open it drops any
// damaged log block without an error, writes what is left to a table and deletes the log: acknowledged writes
// would vanish silently and for good. We check the logs LevelDB is about to replay and refuse to open instead.
// A torn tail in the newest log is normal after a power cut (that write was never acknowledged), not damage.
//
// Tables: LevelDB opens a table at the first read that needs it, so an overwritten or truncated table would
// open fine and fail some later read. We check each live table's size (against the MANIFEST) and footer.
// A damaged block inside a sound table still fails only the read that meets it (STORE_CORRUPT there);
// `verify: true` at open reads everything.
//
// Only files the MANIFEST names as live are checked: a crash can leave a half-written table or an old log
// behind, which LevelDB deletes at open. If CURRENT or the MANIFEST cannot be read we check nothing and let
// LevelDB's own open report it (it does, as a corruption). Files that vanish while we look (another process
// holds the store and is compacting) are skipped: that open will fail on the lock.
//
// Formats: leveldb doc/log_format.md, doc/table_format.md, db/version_edit.cc.
import { open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '../lib/errors.ts';

const BLOCK = 32768;
const HEADER = 7;
const FULL = 1;
const FIRST = 2;
const MIDDLE = 3;
const LAST = 4; // type 0 is a zero-filled region
const TABLE_MAGIC = Buffer.from('57fb808b247547db', 'hex'); // 0xdb4775248b80fb57, fixed64 little-endian
const FOOTER = 48;

/** A description of the first damage found in the live files of the LevelDB in `dbDir`, or `undefined`. */
export async function findDamage(dbDir: string): Promise<string | undefined> {
  const manifest = await readManifest(dbDir);
  if (!manifest) return undefined;
  const logs = (await readdir(dbDir))
    .map((f) => /^(\d+)\.log$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    // The logs recovery replays (db_impl.cc DBImpl::Recover).
    .filter((n) => n >= manifest.logNumber || n === manifest.prevLogNumber)
    .sort((a, b) => a - b);
  for (const [i, n] of logs.entries()) {
    const name = fileName(n, 'log');
    const buf = await readIfThere(join(dbDir, name));
    const damage = buf && checkLog(buf, i === logs.length - 1);
    if (damage) return `write-ahead log ${name}: ${damage}`;
  }
  for (const [n, size] of manifest.tables) {
    const damage = await checkTable(join(dbDir, fileName(n, 'ldb')), size);
    if (damage) return `table ${fileName(n, 'ldb')}: ${damage}`;
  }
  return undefined;
}

const fileName = (n: number, ext: string): string => `${String(n).padStart(6, '0')}.${ext}`;

async function readIfThere(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** `undefined` if sound or missing (LevelDB reports missing tables itself), else what is wrong. */
async function checkTable(path: string, expectedSize: number): Promise<string | undefined> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    // LevelDB 1.20 names old tables .sst; a missing table LevelDB reports itself.
    if (errnoCode(err) !== 'ENOENT') throw err;
    if (path.endsWith('.ldb')) return checkTable(path.replace(/\.ldb$/, '.sst'), expectedSize);
    return undefined;
  }
  try {
    const { size } = await fh.stat();
    if (size !== expectedSize) return `it is ${size} bytes, the MANIFEST says ${expectedSize}`;
    if (size < FOOTER) return 'it is too short to be a table';
    const { buffer } = await fh.read(Buffer.alloc(8), 0, 8, size - 8);
    if (!buffer.equals(TABLE_MAGIC)) return 'it does not end in a table footer';
    return undefined;
  } finally {
    await fh.close();
  }
}

interface Manifest { logNumber: number; prevLogNumber: number; tables: Map<number, number> }

/** The live log numbers and tables (number -> size) from the MANIFEST that CURRENT names. */
export async function readManifest(dbDir: string): Promise<Manifest | undefined> {
  const current = (await readIfThere(join(dbDir, 'CURRENT')))?.toString('latin1');
  const name = /^(MANIFEST-\d+)\n$/.exec(current ?? '')?.[1];
  const buf = name && (await readIfThere(join(dbDir, name)));
  if (!buf) return undefined;
  const m: Manifest = { logNumber: 0, prevLogNumber: 0, tables: new Map() };
  const live = new Map<string, [number, number]>(); // `level/number` -> [number, size]
  for (const edit of logRecords(buf)) {
    const r = new Reader(edit);
    while (!r.done()) {
      const tag = r.varint();
      switch (tag) {
        case 1: r.bytes(); break; // comparator
        case 2: m.logNumber = r.varint(); break;
        case 3: case 4: r.varint(); break; // next file number, last sequence
        case 5: r.varint(); r.bytes(); break; // compact pointer
        case 6: live.delete(`${r.varint()}/${r.varint()}`); break; // deleted file: level, number
        case 7: { // new file: level, number, size, smallest key, largest key
          const level = r.varint();
          const number = r.varint();
          const size = r.varint();
          r.bytes();
          r.bytes();
          live.set(`${level}/${number}`, [number, size]);
          break;
        }
        case 9: m.prevLogNumber = r.varint(); break;
        default: return undefined; // not a MANIFEST we understand: leave it to LevelDB
      }
      if (r.failed) return undefined;
    }
  }
  for (const [number, size] of live.values()) m.tables.set(number, size);
  return m;
}

class Reader {
  #off = 0;
  failed = false;
  constructor(private readonly buf: Uint8Array) {}
  done(): boolean {
    return this.failed || this.#off >= this.buf.length;
  }
  varint(): number {
    let value = 0;
    for (let shift = 0; shift < 64 && this.#off < this.buf.length; shift += 7) {
      const byte = this.buf[this.#off++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
    this.failed = true;
    return 0;
  }
  bytes(): Uint8Array {
    const n = this.varint();
    if (this.#off + n > this.buf.length) this.failed = true;
    return this.buf.subarray(this.#off, (this.#off += n));
  }
}

/** The logical records of a log-format file, up to the first problem (the MANIFEST is read leniently). */
function* logRecords(buf: Uint8Array): Generator<Uint8Array> {
  let parts: Uint8Array[] = [];
  for (let off = 0; off + HEADER <= buf.length;) {
    const blockEnd = Math.min(off - (off % BLOCK) + BLOCK, buf.length);
    if (blockEnd - off < HEADER) { off = blockEnd; continue; }
    const length = buf[off + 4]! | (buf[off + 5]! << 8);
    const type = buf[off + 6]!;
    if (type === 0 || type > LAST || off + HEADER + length > blockEnd || !crcOk(buf, off, length)) return;
    const payload = buf.subarray(off + HEADER, off + HEADER + length);
    off += HEADER + length;
    if (type === FULL) yield payload;
    else if (type === FIRST) parts = [payload];
    else if (type === MIDDLE) parts.push(payload);
    else {
      parts.push(payload);
      yield Buffer.concat(parts);
      parts = [];
    }
  }
}

/** The first damage in a log, or `undefined` (a torn tail of the newest log is not damage). */
export function checkLog(buf: Uint8Array, newest: boolean): string | undefined {
  let damage: string | undefined;
  let tornOnly = true; // every problem so far could be a power-cut tail (bytes not written, never garbage)
  let off = 0;
  while (off < buf.length) {
    const blockEnd = Math.min(off - (off % BLOCK) + BLOCK, buf.length);
    if (blockEnd - off < HEADER) { off = blockEnd; continue; } // block trailer, or a torn header at EOF
    const length = buf[off + 4]! | (buf[off + 5]! << 8);
    const type = buf[off + 6]!;
    if (type === 0 && length === 0) { off = blockEnd; continue; } // zero fill: LevelDB skips the block too
    let problem: string | undefined;
    let next = blockEnd; // where to look on after a problem: LevelDB drops the rest of the block
    if (type > LAST || type === 0) {
      problem = `unknown record type ${type} at offset ${off}`;
      tornOnly = false;
    } else if (off + HEADER + length > blockEnd) {
      if (blockEnd === buf.length) { damage ??= `record at offset ${off} runs past the end`; break; } // torn at EOF
      problem = `bad record length at offset ${off}`;
      tornOnly = false;
    } else if (!crcOk(buf, off, length)) {
      problem = `checksum mismatch at offset ${off}`;
      next = off + HEADER + length; // the length is sane: step over just this record
    }
    if (problem) {
      damage ??= problem;
      off = next;
      continue;
    }
    // A sound record that starts a later batch means the damage is not the torn tail (only the last batch
    // can be unsynced: every batch is written with sync, one at a time), so LevelDB would lose synced data.
    // A sound MIDDLE or LAST fragment may belong to the torn batch itself (sectors land in any order).
    if (damage && (type === FULL || type === FIRST)) return damage;
    off += HEADER + length;
  }
  if (!damage) return undefined;
  return newest && tornOnly ? undefined : damage;
}

function crcOk(buf: Uint8Array, off: number, length: number): boolean {
  const stored = (buf[off]! | (buf[off + 1]! << 8) | (buf[off + 2]! << 16) | (buf[off + 3]! << 24)) >>> 0;
  return unmask(stored) === crc32c(buf.subarray(off + 6, off + HEADER + length));
}

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1; // Castagnoli, reflected
    t[i] = c >>> 0;
  }
  return t;
})();

export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// leveldb util/crc32c.h: stored CRCs are rotated and offset so a CRC over data containing CRCs stays strong.
function unmask(masked: number): number {
  const rot = (masked - 0xa282ead8) >>> 0;
  return ((rot >>> 17) | (rot << 15)) >>> 0;
}
