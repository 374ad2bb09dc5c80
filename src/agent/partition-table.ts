// GPT and MBR: reading a disk's partitions and growing the last one to the end of the disk after an image
// smaller than the disk was written. The codec functions are pure (Buffer <-> values); the disk operations
// take a BlockDevice.
//
// GPT layout: UEFI Specification 2.10 §5.3 (header §5.3.2 table 5-5, entry §5.3.3 table 5-6); protective MBR
// §5.2.3; classic MBR §5.2.1.

import { crc32 } from 'node:zlib';
import { AgentError } from './errors.ts';
import type { BlockDevice } from './block-device.ts';

export interface GptHeader {
  revision: number;
  headerSize: number;
  myLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: string;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entriesCrc: number;
  /** The header's own bytes (headerSize of them), so fields this code does not know survive a rewrite. */
  raw: Buffer;
}

export interface Partition {
  /** 1-based, as the kernel numbers them (sda1 is entry 1). */
  number: number;
  firstLba: number;
  lastLba: number;
  /** GPT partition type GUID (lower case) or MBR type byte as two hex digits. */
  type: string;
  name?: string;
}

export type PartitionTable =
  | { kind: 'gpt'; sectorSize: number; header: GptHeader; entries: Buffer; partitions: Partition[] }
  | { kind: 'mbr'; sectorSize: number; partitions: Partition[] }
  | { kind: 'none'; sectorSize: number };

export const GPT_SIGNATURE = Buffer.from('EFI PART', 'latin1');
export const GPT_TYPE = {
  linuxRootX86_64: '4f68bce3-e8cd-4db1-96e7-fbcaf984b709',
  linuxFilesystem: '0fc63daf-8483-4772-8e79-3d69d8477de4',
  efiSystem: 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b',
  biosBoot: '21686148-6449-6e6f-744e-656564454649',
} as const;
const MBR_EXTENDED = new Set([0x05, 0x0f, 0x85]);
const MBR_PROTECTIVE = 0xee;

function gptError(message: string): AgentError {
  return new AgentError('AGENT_PARTITION_TABLE_INVALID', message);
}

/** A GUID as text: the first three fields little-endian, the rest as stored (UEFI §Appendix A). */
export function formatGuid(b: Buffer): string {
  const h = (s: Buffer) => s.toString('hex');
  const rev = (s: Buffer) => h(Buffer.from(s).reverse());
  return `${rev(b.subarray(0, 4))}-${rev(b.subarray(4, 6))}-${rev(b.subarray(6, 8))}-${h(b.subarray(8, 10))}-${h(b.subarray(10, 16))}`;
}

function u64(b: Buffer, offset: number, what: string): number {
  const v = b.readBigUInt64LE(offset);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw gptError(`GPT ${what} ${v} is out of range`);
  return Number(v);
}

/** A header's CRC: over headerSize bytes with the CRC field zeroed (UEFI §5.3.2). */
function headerCrc(raw: Buffer): number {
  const copy = Buffer.from(raw);
  copy.writeUInt32LE(0, 16);
  return crc32(copy);
}

/** Decodes and checks a GPT header sector: signature, size, CRC. */
export function decodeGptHeader(sector: Buffer): GptHeader {
  if (sector.length < 92 || !sector.subarray(0, 8).equals(GPT_SIGNATURE)) throw gptError('no GPT signature');
  const headerSize = sector.readUInt32LE(12);
  if (headerSize < 92 || headerSize > sector.length) throw gptError(`GPT header size ${headerSize} is invalid`);
  const raw = Buffer.from(sector.subarray(0, headerSize));
  if (headerCrc(raw) !== raw.readUInt32LE(16)) throw gptError('GPT header CRC mismatch');
  const entrySize = raw.readUInt32LE(84);
  const entryCount = raw.readUInt32LE(80);
  // §5.3.2: entry size is 128 x 2^n; more than 16 MiB of entries is not a table anyone wrote.
  if (entrySize < 128 || (entrySize & (entrySize - 1)) !== 0 || entryCount * entrySize > 16 << 20) {
    throw gptError(`GPT entry array ${entryCount} x ${entrySize} bytes is invalid`);
  }
  return {
    revision: raw.readUInt32LE(8),
    headerSize,
    myLba: u64(raw, 24, 'MyLBA'),
    alternateLba: u64(raw, 32, 'AlternateLBA'),
    firstUsableLba: u64(raw, 40, 'FirstUsableLBA'),
    lastUsableLba: u64(raw, 48, 'LastUsableLBA'),
    diskGuid: formatGuid(raw.subarray(56, 72)),
    entriesLba: u64(raw, 72, 'PartitionEntryLBA'),
    entryCount,
    entrySize,
    entriesCrc: raw.readUInt32LE(88),
    raw,
  };
}

/** The header with new placement fields, CRCs recomputed; other bytes kept as they were. */
export function encodeGptHeader(h: GptHeader, sectorSize: number): Buffer {
  const raw = Buffer.from(h.raw);
  raw.writeBigUInt64LE(BigInt(h.myLba), 24);
  raw.writeBigUInt64LE(BigInt(h.alternateLba), 32);
  raw.writeBigUInt64LE(BigInt(h.firstUsableLba), 40);
  raw.writeBigUInt64LE(BigInt(h.lastUsableLba), 48);
  raw.writeBigUInt64LE(BigInt(h.entriesLba), 72);
  raw.writeUInt32LE(h.entriesCrc >>> 0, 88);
  raw.writeUInt32LE(headerCrc(raw), 16);
  const sector = Buffer.alloc(sectorSize);
  raw.copy(sector);
  return sector;
}

/** Used entries of a GPT entry array (type GUID not all zero). */
export function decodeGptEntries(entries: Buffer, entrySize: number): Partition[] {
  const out: Partition[] = [];
  for (let i = 0; (i + 1) * entrySize <= entries.length; i++) {
    const e = entries.subarray(i * entrySize, (i + 1) * entrySize);
    if (e.subarray(0, 16).every((b) => b === 0)) continue;
    const name = e.subarray(56, 128).toString('utf16le').replace(/\0.*$/s, '');
    out.push({
      number: i + 1,
      type: formatGuid(e.subarray(0, 16)),
      firstLba: u64(e, 32, 'StartingLBA'),
      lastLba: u64(e, 40, 'EndingLBA'),
      ...(name !== '' ? { name } : {}),
    });
  }
  return out;
}

/** The four primary entries of an MBR sector (§5.2.1), used ones only. */
export function decodeMbr(sector: Buffer): { partitions: Partition[]; protective: boolean } | undefined {
  if (sector.length < 512 || sector[510] !== 0x55 || sector[511] !== 0xaa) return undefined;
  const partitions: Partition[] = [];
  let protective = false;
  for (let i = 0; i < 4; i++) {
    const e = sector.subarray(446 + 16 * i, 446 + 16 * (i + 1));
    const type = e[4] as number;
    const first = e.readUInt32LE(8);
    const count = e.readUInt32LE(12);
    if (type === 0 || count === 0) continue;
    if (type === MBR_PROTECTIVE) protective = true;
    partitions.push({ number: i + 1, type: type.toString(16).padStart(2, '0'), firstLba: first, lastLba: first + count - 1 });
  }
  return { partitions, protective };
}

/**
 * The disk's partition table. A GPT is looked for at LBA 1 of the disk's own sector size; one found at the
 * other common size (512 vs 4096) means the image was made for another kind of disk and cannot boot here.
 * A damaged primary GPT falls back to the backup at the last LBA (what an erase needs to find partitions).
 */
export async function readPartitionTable(dev: BlockDevice): Promise<PartitionTable> {
  const ss = dev.sectorSize;
  if (dev.size < 2 * ss) return { kind: 'none', sectorSize: ss };
  const mbr = decodeMbr(await dev.read(0, 512));
  const primary = await dev.read(ss, ss);
  if (primary.subarray(0, 8).equals(GPT_SIGNATURE) || mbr?.protective) {
    // §5.3.2: a primary header or entry array that fails its checks is replaced by the backup.
    const last = Math.floor(dev.size / ss) - 1;
    let problem = '';
    for (const [lba, sector] of [[1, primary], [last, undefined]] as const) {
      try {
        const header = decodeGptHeader(sector ?? (await dev.read(lba * ss, ss)));
        if (header.myLba !== lba) throw gptError(`GPT header at LBA ${lba} says it is at LBA ${header.myLba}`);
        const entries = await readEntries(dev, header);
        return { kind: 'gpt', sectorSize: ss, header, entries, partitions: decodeGptEntries(entries, header.entrySize) };
      } catch (err) {
        if (!(err instanceof AgentError)) throw err;
        if (problem === '') problem = err.message;
      }
    }
    const other = ss === 512 ? 4096 : 512;
    if (dev.size >= 2 * other && (await dev.read(other, 8)).equals(GPT_SIGNATURE)) {
      throw gptError(`the image's GPT is for ${other}-byte sectors; this disk has ${ss}-byte sectors`);
    }
    if (!mbr || mbr.protective) throw gptError(`GPT unreadable: ${problem}`);
  }
  if (mbr) return { kind: 'mbr', sectorSize: ss, partitions: mbr.partitions };
  return { kind: 'none', sectorSize: ss };
}

async function readEntries(dev: BlockDevice, h: GptHeader): Promise<Buffer> {
  const bytes = h.entryCount * h.entrySize;
  const pos = h.entriesLba * dev.sectorSize;
  if (pos + bytes > dev.size) throw gptError('GPT entry array lies past the end of the disk');
  const entries = await dev.read(pos, bytes);
  if (crc32(entries) !== h.entriesCrc) throw gptError('GPT entry array CRC mismatch');
  return entries;
}

export interface GrowResult {
  kind: 'gpt' | 'mbr' | 'none';
  /** The partition that was grown, if any. */
  partition?: number;
  oldLastLba?: number;
  newLastLba?: number;
  /** Why nothing was grown. */
  skipped?: string;
}

/**
 * Makes the written image's partition table span the whole disk and grows its last partition (by position) to
 * the end. GPT: the backup entry array and header move to the disk's last sectors (§5.3.2: the backup header is
 * at the last LBA, its entry array just before it), LastUsableLBA follows, the last partition's EndingLBA becomes
 * LastUsableLBA, both CRCs of both headers are recomputed, the protective MBR's size is updated and the old backup
 * header (now inside the grown partition, past its file system) is zeroed so no tool finds a stale copy. MBR:
 * the last primary partition is extended up to the disk's end or the 2^32-sector limit; an extended partition
 * is left alone. The file system itself grows at first boot (cloud-init growpart/resize_rootfs).
 */
export async function growLastPartition(dev: BlockDevice): Promise<GrowResult> {
  const table = await readPartitionTable(dev);
  if (table.kind === 'none') return { kind: 'none', skipped: 'no partition table (a bare file system image)' };
  if (table.kind === 'mbr') return growMbr(dev, table.partitions);
  return growGpt(dev, table.header, table.entries);
}

async function growGpt(dev: BlockDevice, h: GptHeader, entries: Buffer): Promise<GrowResult> {
  const ss = dev.sectorSize;
  if (h.myLba !== 1) throw gptError('the primary GPT header is damaged; refusing to rewrite the table from the backup');
  const lastLba = Math.floor(dev.size / ss) - 1;
  const entrySectors = Math.ceil((h.entryCount * h.entrySize) / ss);
  const backupEntriesLba = lastLba - entrySectors;
  const lastUsable = backupEntriesLba - 1;
  if (lastUsable < h.lastUsableLba) throw gptError(`the image's GPT spans ${(h.lastUsableLba + 1) * ss} bytes; the disk has ${dev.size}`);
  const parts = decodeGptEntries(entries, h.entrySize);
  const last = parts.reduce<Partition | undefined>((a, p) => (a === undefined || p.lastLba > a.lastLba ? p : a), undefined);
  const result: GrowResult = { kind: 'gpt' };
  const newEntries = Buffer.from(entries);
  if (last === undefined) {
    result.skipped = 'the GPT has no partitions';
  } else if (last.lastLba >= lastUsable) {
    result.skipped = `partition ${last.number} already ends at the disk's last usable sector`;
  } else {
    newEntries.writeBigUInt64LE(BigInt(lastUsable), (last.number - 1) * h.entrySize + 40);
    Object.assign(result, { partition: last.number, oldLastLba: last.lastLba, newLastLba: lastUsable });
  }
  const entriesCrc = crc32(newEntries);
  const primary: GptHeader = { ...h, alternateLba: lastLba, lastUsableLba: lastUsable, entriesCrc };
  const backup: GptHeader = { ...primary, myLba: lastLba, alternateLba: 1, entriesLba: backupEntriesLba };
  await dev.write(backupEntriesLba * ss, newEntries);
  await dev.write(lastLba * ss, encodeGptHeader(backup, ss));
  if (h.alternateLba !== lastLba && h.alternateLba > h.lastUsableLba && h.alternateLba < backupEntriesLba) {
    await dev.zero(h.alternateLba * ss, ss);
  }
  await dev.write(h.entriesLba * ss, newEntries);
  await dev.write(ss, encodeGptHeader(primary, ss));
  await updateProtectiveMbr(dev, lastLba);
  await dev.sync();
  return result;
}

/** §5.2.3: the protective partition covers LBA 1 to the end of the disk, its size capped at 0xFFFFFFFF. */
async function updateProtectiveMbr(dev: BlockDevice, lastLba: number): Promise<void> {
  const mbr = await dev.read(0, 512);
  if (mbr[510] !== 0x55 || mbr[511] !== 0xaa) return;
  for (let i = 0; i < 4; i++) {
    const off = 446 + 16 * i;
    if (mbr[off + 4] === MBR_PROTECTIVE && mbr.readUInt32LE(off + 8) === 1) {
      mbr.writeUInt32LE(Math.min(lastLba, 0xffffffff), off + 12);
      // Ending CHS: that of the last LBA, or 0xFFFFFF when CHS cannot express it (§5.2.3).
      const chs = encodeChs(lastLba);
      if (chs === undefined) mbr.fill(0xff, off + 5, off + 8);
      else chs.copy(mbr, off + 5);
      await dev.write(0, mbr);
      return;
    }
  }
}

async function growMbr(dev: BlockDevice, partitions: Partition[]): Promise<GrowResult> {
  const last = partitions.reduce<Partition | undefined>((a, p) => (a === undefined || p.lastLba > a.lastLba ? p : a), undefined);
  if (last === undefined) return { kind: 'mbr', skipped: 'the MBR has no partitions' };
  if (MBR_EXTENDED.has(Number.parseInt(last.type, 16))) return { kind: 'mbr', skipped: `the last partition (${last.number}) is an extended partition` };
  const diskSectors = Math.floor(dev.size / dev.sectorSize);
  // MBR entries are 32-bit: nothing can end past sector 2^32 - 1.
  const endExclusive = Math.min(diskSectors, 0x100000000);
  const newCount = Math.min(endExclusive - last.firstLba, 0xffffffff);
  const newLast = last.firstLba + newCount - 1;
  if (newLast <= last.lastLba) return { kind: 'mbr', skipped: `partition ${last.number} already ends at the disk's end` };
  const mbr = await dev.read(0, 512);
  const off = 446 + 16 * (last.number - 1);
  mbr.writeUInt32LE(newCount, off + 12);
  // Ending CHS past 1024 cylinders cannot be expressed: the conventional 1023/254/63 (FE FF FF) says "use LBA".
  (encodeChs(newLast) ?? Buffer.from([0xfe, 0xff, 0xff])).copy(mbr, off + 5);
  await dev.write(0, mbr);
  await dev.sync();
  return { kind: 'mbr', partition: last.number, oldLastLba: last.lastLba, newLastLba: newLast };
}

/**
 * An LBA as the 3-byte CHS of an MBR entry with the usual 255-head, 63-sector geometry (head; sector and the
 * cylinder's top two bits; the cylinder's low byte), or undefined past cylinder 1023.
 */
export function encodeChs(lba: number): Buffer | undefined {
  const cylinder = Math.floor(lba / (255 * 63));
  if (cylinder > 1023) return undefined;
  const head = Math.floor(lba / 63) % 255;
  const sector = (lba % 63) + 1;
  return Buffer.from([head, sector | ((cylinder >> 2) & 0xc0), cylinder & 0xff]);
}
