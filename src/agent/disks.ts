// Disks as the kernel lists them in /sys/block, and the choice of the disk a task names.

import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from './errors.ts';
import { exists, int, list, readAttr, readBytes, type Roots } from './sysfs.ts';

export interface DiskInfo {
  name: string;
  path: string;
  sizeBytes: number;
  logicalSectorSize: number;
  model?: string;
  serial?: string;
  rotational: boolean;
  removable: boolean;
  /** Partition names (sda1, nvme0n1p2) the kernel currently knows. */
  partitions: string[];
  /** Mounted, used as swap, or held by device-mapper/md: never written to by 'auto'. */
  inUse: boolean;
}

/**
 * Real disks: /sys/block entries backed by a device (`device` link), which leaves out loop, ram, zram, dm and md
 * devices; optical drives (SCSI type 5) and empty media (size 0) are left out too.
 */
export async function listDisks(roots: Roots): Promise<DiskInfo[]> {
  const busy = await busyDevices(roots);
  const disks: DiskInfo[] = [];
  for (const name of await list(path.join(roots.sys, 'block'))) {
    const dir = path.join(roots.sys, 'block', name);
    if (!(await exists(path.join(dir, 'device')))) continue;
    if ((await readAttr(path.join(dir, 'device', 'type'))) === '5') continue;
    // /sys/block/X/size counts 512-byte units whatever the logical block size (include/linux/blkdev.h).
    const sectors = int(await readAttr(path.join(dir, 'size'))) ?? 0;
    if (sectors === 0) continue;
    const partitions: string[] = [];
    for (const child of await list(dir)) {
      if (await exists(path.join(dir, child, 'partition'))) partitions.push(child);
    }
    const holders = async (n: string) => (await list(path.join(n === name ? dir : path.join(dir, n), 'holders'))).length > 0;
    let inUse = busy.has(name) || (await holders(name));
    for (const p of partitions) if (busy.has(p) || (await holders(p))) inUse = true;
    const model = await readAttr(path.join(dir, 'device', 'model'));
    const serial = await diskSerial(dir);
    disks.push({
      name,
      path: path.join(roots.dev, name),
      sizeBytes: sectors * 512,
      logicalSectorSize: int(await readAttr(path.join(dir, 'queue', 'logical_block_size'))) ?? 512,
      ...(model !== undefined ? { model } : {}),
      ...(serial !== undefined ? { serial } : {}),
      rotational: (await readAttr(path.join(dir, 'queue', 'rotational'))) === '1',
      removable: (await readAttr(path.join(dir, 'removable'))) === '1',
      partitions,
      inUse,
    });
  }
  return disks;
}

/** virtio-blk: `serial`; NVMe: the controller's `device/serial`; SCSI/SATA: VPD page 0x80 (SPC-4 §7.8.16). */
async function diskSerial(dir: string): Promise<string | undefined> {
  const direct = (await readAttr(path.join(dir, 'serial'))) ?? (await readAttr(path.join(dir, 'device', 'serial')));
  if (direct !== undefined) return direct;
  const vpd = await readBytes(path.join(dir, 'device', 'vpd_pg80'));
  if (vpd === undefined || vpd.length < 4 || vpd[1] !== 0x80) return undefined;
  const len = Math.min(vpd.readUInt16BE(2), vpd.length - 4);
  const serial = vpd.subarray(4, 4 + len).toString('latin1').replace(/\0/g, '').trim();
  return serial === '' ? undefined : serial;
}

/** Kernel names of block devices that are mounted or used as swap. */
async function busyDevices(roots: Roots): Promise<Set<string>> {
  const names = new Set<string>();
  const sources: string[] = [];
  for (const file of ['mounts', 'swaps']) {
    const text = (await readAttr(path.join(roots.proc, file))) ?? '';
    for (const line of text.split('\n')) {
      const source = line.split(/\s+/)[0];
      if (source?.startsWith('/dev/')) sources.push(source);
    }
  }
  for (const source of sources) {
    // /dev/disk/by-uuid/... and /dev/root are links (where udev runs); the kernel name is what the link points to.
    names.add(path.basename(source));
    try {
      names.add(path.basename(await realpath(source)));
    } catch {
      // gone or not a link
    }
  }
  return names;
}

/**
 * The disk a deploy task names: a device path (/dev/vda, or a link to one), a serial number, or 'auto' (the
 * first non-removable disk in natural name order with nothing on it in use).
 */
export async function resolveDisk(spec: string, disks: readonly DiskInfo[]): Promise<DiskInfo> {
  if (spec === 'auto') {
    const disk = disks.find((d) => !d.removable && !d.inUse);
    if (!disk) {
      throw new AgentError('AGENT_DISK_NOT_FOUND', `no disk for "auto": ${disks.length === 0 ? 'the kernel sees no disk (is its driver in the ephemeral image?)' : disks.map((d) => `${d.name}${d.removable ? ' removable' : ''}${d.inUse ? ' in use' : ''}`).join(', ')}`);
    }
    return disk;
  }
  if (spec.startsWith('/')) {
    let name = path.basename(spec);
    try {
      name = path.basename(await realpath(spec));
    } catch {
      // not present as a file: match by name
    }
    const disk = disks.find((d) => d.name === name || d.path === spec);
    if (!disk) throw new AgentError('AGENT_DISK_NOT_FOUND', `no disk ${spec} (disks: ${disks.map((d) => d.name).join(', ') || 'none'})`);
    if (disk.inUse) throw new AgentError('AGENT_DISK_NOT_FOUND', `disk ${spec} is in use (mounted, swap, or held by dm/md)`);
    return disk;
  }
  const matches = disks.filter((d) => d.serial !== undefined && d.serial === spec.trim());
  if (matches.length !== 1) {
    throw new AgentError('AGENT_DISK_NOT_FOUND', matches.length === 0 ? `no disk has serial "${spec}"` : `${matches.length} disks have serial "${spec}"`);
  }
  const disk = matches[0] as DiskInfo;
  if (disk.inUse) throw new AgentError('AGENT_DISK_NOT_FOUND', `disk with serial "${spec}" (${disk.name}) is in use`);
  return disk;
}
