// Finding the deployed image's root file system, mounting it, and writing the cloud-init seed into it.
//
// On a real disk the kernel is asked to re-read the partition table (BLKRRPART via `blockdev --rereadpt`) and
// devtmpfs then has /dev/vda2, /dev/nvme0n1p2, ...; a regular file standing in for a disk (tests), or a disk
// whose partitions the kernel does not show (a kernel without the GPT/MBR parsers), is reached through a loop
// device at the partition's offset. Mounting needs the file system's module in the ephemeral kernel (ext4:
// ext4, jbd2, mbcache, crc16, crc32c_generic), the fallback the loop module.

import { mkdir, open, realpath, rmdir } from 'node:fs/promises';
import path from 'node:path';
import type { BlockDevice } from './block-device.ts';
import { AgentError } from './errors.ts';
import { GPT_TYPE, type PartitionTable } from './partition-table.ts';
import { firstLine, type Run } from './run.ts';
import { SEED_DIR, type NoCloudSeed } from './seed.ts';
import { exists, list, readAttr, type Roots } from './sysfs.ts';

export type FsType = 'ext4' | 'xfs' | 'btrfs';

export interface RootCandidate {
  /** Partition number; undefined for a file system on the whole disk. */
  number: number | undefined;
  offset: number;
  size: number;
  fsType: FsType;
}

/** The file system whose signature starts a region (ext2/3/4 magic 0xEF53 at 1080, xfs "XFSB" at 0, btrfs "_BHRfS_M" at 64 KiB + 64). */
export function probeFs(head: Buffer): FsType | undefined {
  if (head.length >= 1082 && head.readUInt16LE(1080) === 0xef53) return 'ext4';
  if (head.length >= 4 && head.subarray(0, 4).toString('latin1') === 'XFSB') return 'xfs';
  if (head.length >= 0x10048 && head.subarray(0x10040, 0x10048).toString('latin1') === '_BHRfS_M') return 'btrfs';
  return undefined;
}

const PROBE_BYTES = 0x10048;

/**
 * Partitions that may hold the root file system, best first: a GPT "Linux root (x86-64)" partition, then Linux
 * data partitions (GPT Linux filesystem, MBR 0x83), largest first, then any other partition with a file system
 * the agent can mount (never the ESP or BIOS boot partition). With no partition table, the whole disk.
 */
export async function rootCandidates(dev: BlockDevice, table: PartitionTable): Promise<RootCandidate[]> {
  const probe = async (offset: number, size: number) => probeFs(await dev.read(offset, Math.min(PROBE_BYTES, size)));
  if (table.kind === 'none') {
    const fsType = await probe(0, dev.size);
    return fsType === undefined ? [] : [{ number: undefined, offset: 0, size: dev.size, fsType }];
  }
  const ss = table.sectorSize;
  const ranked: (RootCandidate & { rank: number })[] = [];
  for (const p of table.partitions) {
    if (p.type === GPT_TYPE.efiSystem || p.type === GPT_TYPE.biosBoot || p.type === 'ee' || p.type === '05' || p.type === '0f' || p.type === '85') continue;
    const offset = p.firstLba * ss;
    const size = (p.lastLba - p.firstLba + 1) * ss;
    if (offset + size > dev.size || size <= 0) continue;
    const fsType = await probe(offset, size);
    if (fsType === undefined) continue;
    const rank = p.type === GPT_TYPE.linuxRootX86_64 ? 0 : p.type === GPT_TYPE.linuxFilesystem || p.type === '83' ? 1 : 2;
    ranked.push({ number: p.number, offset, size, fsType, rank });
  }
  ranked.sort((a, b) => a.rank - b.rank || b.size - a.size);
  return ranked.map(({ rank: _rank, ...c }) => c);
}

export interface SeedWriter {
  run: Run;
  roots: Roots;
  /** Where to mount (created and removed). */
  mountDir: string;
  /** modprobe the file system's module first (in the ephemeral environment, where nothing autoloads). */
  loadModules: boolean;
  log: (line: string) => void;
}

/** Mounts the root file system of the written image and writes the NoCloud seed into it; returns what was used. */
export async function writeSeed(dev: BlockDevice, table: PartitionTable, seed: NoCloudSeed, w: SeedWriter): Promise<RootCandidate> {
  const candidates = await rootCandidates(dev, table);
  if (candidates.length === 0) {
    throw new AgentError('AGENT_ROOT_NOT_FOUND', `no partition of the image holds an ext4, xfs or btrfs file system (${table.kind}: ${table.kind === 'none' ? 'no partitions' : table.partitions.map((p) => `${p.number}:${p.type}`).join(', ')})`);
  }
  if (!dev.isFile) await rereadPartitions(dev, w);
  const tried: string[] = [];
  for (const c of candidates) {
    const where = c.number === undefined ? 'the whole disk' : `partition ${c.number}`;
    const node = await openPartition(dev, c, w);
    try {
      if (w.loadModules) await w.run('modprobe', [c.fsType]);
      await mkdir(w.mountDir, { recursive: true });
      const m = await w.run('mount', ['-t', c.fsType, node.device, w.mountDir]);
      if (m.code !== 0) { tried.push(`${where} (${c.fsType}): mount failed: ${firstLine(m)}`); continue; }
      try {
        if (!(await exists(path.join(w.mountDir, 'etc')))) { tried.push(`${where}: no /etc`); continue; }
        await writeFiles(path.join(w.mountDir, SEED_DIR), seed);
        w.log(`wrote the cloud-init seed to ${where} (${c.fsType}, ${node.device})`);
      } finally {
        const u = await w.run('umount', [w.mountDir]);
        if (u.code !== 0) throw new AgentError('AGENT_SEED_FAILED', `umount ${w.mountDir}: ${firstLine(u)}`);
      }
      return c;
    } catch (err) {
      if (err instanceof AgentError) throw err;
      throw new AgentError('AGENT_SEED_FAILED', `writing the seed to ${where}: ${(err as Error).message}`, { cause: err });
    } finally {
      await node.release();
      await rmdir(w.mountDir).catch(() => undefined);
    }
  }
  throw new AgentError('AGENT_ROOT_NOT_FOUND', `no root file system could be mounted: ${tried.join('; ')}`);
}

async function writeFiles(dir: string, seed: NoCloudSeed): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  for (const [name, content] of Object.entries(seed)) {
    // 0600: user-data carries the phone-home URL, whose path is a token.
    const fh = await open(path.join(dir, name), 'w', 0o600);
    try {
      await fh.writeFile(content);
      await fh.chmod(0o600);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
}

/** BLKRRPART: the kernel drops its view of the old partitions and reads the image's (grown) table. */
async function rereadPartitions(dev: BlockDevice, w: SeedWriter): Promise<void> {
  const r = await w.run('blockdev', ['--rereadpt', dev.path]);
  if (r.code !== 0) w.log(`blockdev --rereadpt ${dev.path}: ${firstLine(r)}`);
}

interface PartitionNode {
  device: string;
  release(): Promise<void>;
}

async function openPartition(dev: BlockDevice, c: RootCandidate, w: SeedWriter): Promise<PartitionNode> {
  if (!dev.isFile) {
    if (c.number === undefined) return { device: dev.path, release: async () => undefined };
    const node = await partitionNode(dev, c.number, w.roots);
    if (node !== undefined) return { device: node, release: async () => undefined };
    w.log(`the kernel shows no node for partition ${c.number} of ${dev.path}; using a loop device`);
  }
  // The loop driver at the partition's offset. `losetup -f` then `losetup -o OFS DEV FILE`: the syntax busybox
  // 1.35 and util-linux share (busybox has no --show or --sizelimit; the file system knows its own size).
  if (w.loadModules) await w.run('modprobe', ['loop']);
  let loop = '';
  let failure = '';
  for (let attempt = 0; attempt < 3 && loop === ''; attempt++) {
    const free = await w.run('losetup', ['-f']);
    const candidate = free.stdout.trim();
    if (free.code !== 0 || !candidate.startsWith('/dev/')) { failure = firstLine(free); break; }
    // Another process may take the same free device between the two calls: try the next one.
    const r = await w.run('losetup', ['-o', String(c.offset), candidate, dev.path]);
    if (r.code === 0) loop = candidate;
    else failure = firstLine(r);
  }
  if (loop === '') throw new AgentError('AGENT_SEED_FAILED', `no loop device for ${dev.path} at ${c.offset}: ${failure}`);
  return {
    device: loop,
    release: async () => {
      const d = await w.run('losetup', ['-d', loop]);
      if (d.code !== 0) w.log(`losetup -d ${loop}: ${firstLine(d)}`);
    },
  };
}

/** /dev/NAME of partition `number` of a disk, waited for up to 5 s after the re-read. */
async function partitionNode(dev: BlockDevice, number: number, roots: Roots): Promise<string | undefined> {
  const disk = path.basename(await realpath(dev.path));
  const dir = path.join(roots.sys, 'class', 'block', disk);
  for (let i = 0; i < 50; i++) {
    for (const child of await list(dir)) {
      if ((await readAttr(path.join(dir, child, 'partition'))) === String(number)) {
        const node = path.join(roots.dev, child);
        if (await exists(node)) return node;
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return undefined;
}
