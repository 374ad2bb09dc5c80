// Erasing a released machine's disks.
//
// quick: zeroes where on-disk signatures live, so no tool, firmware or installer finds the old partitions, file
// systems, RAID members or volume groups any more, without touching the data in between:
//   - the disk's first MiB (MBR and boot code, primary GPT header and entries, a whole-disk file system's
//     superblock) and its last MiB (backup GPT, md 0.90/1.0 superblocks, ZFS labels L2/L3 of a whole-disk pool);
//   - each partition's first and last MiB: ext2/3/4 (1 KiB in), xfs (0), btrfs (64 KiB), LVM PV labels
//     (sectors 0-3), LUKS headers (0, LUKS2's second at 16 KiB), md 1.1/1.2 (0, 4 KiB) and swap signatures at
//     the start; md 0.90/1.0 and ZFS L2/L3 at the end. (btrfs keeps mirror superblocks at 64 MiB and 256 GiB,
//     which blkid does not look at; full erase covers them.)
// full: zeroes every byte; the data is gone for anything short of forensic recovery of remapped sectors.

import type { BlockDevice } from './block-device.ts';
import { AgentError, describe } from './errors.ts';
import { readPartitionTable, type Partition } from './partition-table.ts';
import type { EraseMode } from './task.ts';

const MIB = 1 << 20;

export interface EraseResult {
  mode: EraseMode;
  /** Bytes zeroed. */
  bytes: number;
  /** Partitions whose signatures were zeroed (quick). */
  partitions: number;
}

export async function eraseDisk(dev: BlockDevice, mode: EraseMode, onProgress: (done: number, total: number) => void = () => undefined): Promise<EraseResult> {
  try {
    if (mode === 'none') return { mode, bytes: 0, partitions: 0 };
    if (mode === 'full') {
      await dev.zero(0, dev.size, (done) => onProgress(done, dev.size));
      await dev.sync();
      return { mode, bytes: dev.size, partitions: 0 };
    }
    const ranges = await quickRanges(dev);
    let done = 0;
    const total = ranges.reduce((n, [, len]) => n + len, 0);
    for (const [start, len] of ranges) {
      await dev.zero(start, len);
      done += len;
      onProgress(done, total);
    }
    await dev.sync();
    return { mode, bytes: total, partitions: ranges.partitions };
  } catch (err) {
    if (err instanceof AgentError) throw err;
    throw new AgentError('AGENT_ERASE_FAILED', `erasing ${dev.path}: ${describe(err)}`, { cause: err });
  }
}

/** The byte ranges a quick erase zeroes, merged, inside the disk. */
export async function quickRanges(dev: BlockDevice): Promise<[number, number][] & { partitions: number }> {
  let partitions: Partition[] = [];
  let sectorSize = dev.sectorSize;
  try {
    const table = await readPartitionTable(dev);
    if (table.kind !== 'none') partitions = table.partitions;
    sectorSize = table.sectorSize;
  } catch {
    // A damaged table: its partitions cannot be found, the disk's ends are zeroed all the same.
  }
  const raw: [number, number][] = [[0, MIB], [dev.size - MIB, MIB]];
  let counted = 0;
  for (const p of partitions) {
    if (p.type === 'ee') continue; // the protective MBR entry spans the disk
    const start = p.firstLba * sectorSize;
    const end = (p.lastLba + 1) * sectorSize;
    if (start >= dev.size || end <= start) continue;
    counted++;
    raw.push([start, MIB], [end - MIB, MIB]);
  }
  // Clamp to the disk, then merge overlaps (a partition under 2 MiB is zeroed whole).
  const clamped = raw
    .map(([s, l]): [number, number] => [Math.max(0, s), Math.min(dev.size, s + l)])
    .filter(([s, e]) => e > s)
    .sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const [s, e] of clamped) {
    const last = merged[merged.length - 1];
    if (last !== undefined && s <= last[1]) last[1] = Math.max(last[1], e);
    else merged.push([s, e]);
  }
  return Object.assign(merged.map(([s, e]): [number, number] => [s, e - s]), { partitions: counted });
}
