// The hardware inventory a commissioning (or enlisting) machine reports (.notes/agent-contract.md "Inventory").
// systeminformation gives the CPU's cleaned-up name and the memory fallback; everything else comes from sysfs,
// which the busybox environment always has (systeminformation shells out to lscpu, lsblk and dmidecode, which
// it does not). It runs once per boot, never on a hot path.

import path from 'node:path';
import { listDisks } from './disks.ts';
import { detectBmc, type BmcInfo } from './bmc.ts';
import { exists, int, linkName, list, readAttr, type Roots } from './sysfs.ts';

export interface Inventory {
  cpu: { model: string; cores: number; threads: number; sockets: number };
  memoryBytes: number;
  firmware: 'bios' | 'uefi';
  dmi: { vendor?: string; product?: string; serial?: string; uuid?: string; biosVersion?: string };
  disks: { name: string; path: string; sizeBytes: number; model?: string; serial?: string; rotational: boolean; removable: boolean }[];
  nics: { name: string; mac: string; link: boolean; speedMbps?: number; driver?: string }[];
  bmc?: BmcInfo;
}

/** What systeminformation answers that the inventory uses (an interface, so tests can do without it). */
export interface SystemInfoSource {
  cpu(): Promise<{ manufacturer: string; brand: string; cores: number; physicalCores: number; processors: number }>;
  mem(): Promise<{ total: number }>;
}

/** systeminformation, loaded on first use: its module graph is large and only the inventory needs it. */
export async function systeminformation(): Promise<SystemInfoSource> {
  const si = await import('systeminformation');
  return { cpu: () => si.cpu(), mem: () => si.mem() };
}

export async function collectInventory(roots: Roots, si: SystemInfoSource): Promise<Inventory> {
  const [cpu, memoryBytes, disks, nics, dmi, bmc] = await Promise.all([
    cpuInfo(roots, si), memory(roots, si), listDisks(roots), listNics(roots), dmiInfo(roots), detectBmc(roots),
  ]);
  return {
    cpu,
    memoryBytes,
    // The kernel creates /sys/firmware/efi only when booted by UEFI (Documentation/ABI/testing/sysfs-firmware-efi).
    firmware: (await exists(path.join(roots.sys, 'firmware', 'efi'))) ? 'uefi' : 'bios',
    dmi,
    disks: disks.map(({ name, path: p, sizeBytes, model, serial, rotational, removable }) => ({
      name, path: p, sizeBytes, ...(model !== undefined ? { model } : {}), ...(serial !== undefined ? { serial } : {}), rotational, removable,
    })),
    nics,
    ...(bmc.present ? { bmc } : {}),
  };
}

/**
 * Threads are the online logical CPUs; cores the distinct (package, core) pairs and sockets the distinct packages
 * of their topology (Documentation/ABI/stable/sysfs-devices-system-cpu). systeminformation's counts need lscpu.
 */
async function cpuInfo(roots: Roots, si: SystemInfoSource): Promise<Inventory['cpu']> {
  const info = await si.cpu();
  const cpuDir = path.join(roots.sys, 'devices', 'system', 'cpu');
  const packages = new Set<string>();
  const cores = new Set<string>();
  let threads = 0;
  for (const name of await list(cpuDir)) {
    if (!/^cpu\d+$/.test(name)) continue;
    // cpu0 usually has no `online` file (it cannot go offline): present means online.
    if ((await readAttr(path.join(cpuDir, name, 'online'))) === '0') continue;
    threads++;
    const pkg = (await readAttr(path.join(cpuDir, name, 'topology', 'physical_package_id'))) ?? '0';
    const core = (await readAttr(path.join(cpuDir, name, 'topology', 'core_id'))) ?? name;
    packages.add(pkg);
    cores.add(`${pkg}/${core}`);
  }
  const model = [info.manufacturer, info.brand].filter((s) => s !== '' && s !== 'unknown').join(' ');
  return {
    model: model === '' ? 'unknown' : model,
    cores: cores.size || info.physicalCores,
    threads: threads || info.cores,
    sockets: packages.size || info.processors,
  };
}

/**
 * Installed memory: online memory blocks times the block size (Documentation/admin-guide/mm/memory-hotplug.rst),
 * which counts what the firmware and kernel reserve; MemTotal (systeminformation) where that directory is missing.
 */
async function memory(roots: Roots, si: SystemInfoSource): Promise<number> {
  const dir = path.join(roots.sys, 'devices', 'system', 'memory');
  const blockSize = Number.parseInt((await readAttr(path.join(dir, 'block_size_bytes'))) ?? '', 16);
  if (Number.isSafeInteger(blockSize) && blockSize > 0) {
    let online = 0;
    for (const name of await list(dir)) {
      if (/^memory\d+$/.test(name) && (await readAttr(path.join(dir, name, 'state'))) === 'online') online++;
    }
    if (online > 0) return online * blockSize;
  }
  return (await si.mem()).total;
}

/** Ethernet NICs backed by a device (no bridges, veths, tunnels): MAC, carrier, speed in Mb/s and driver. */
async function listNics(roots: Roots): Promise<Inventory['nics']> {
  const nics: Inventory['nics'] = [];
  for (const name of await list(path.join(roots.sys, 'class', 'net'))) {
    const dir = path.join(roots.sys, 'class', 'net', name);
    if ((await readAttr(path.join(dir, 'type'))) !== '1') continue; // ARPHRD_ETHER (include/uapi/linux/if_arp.h)
    if (!(await exists(path.join(dir, 'device')))) continue;
    const mac = await readAttr(path.join(dir, 'address'));
    if (mac === undefined) continue;
    // `speed` is -1 or EINVAL without a link; `carrier` is EINVAL while the interface is down.
    const speed = int(await readAttr(path.join(dir, 'speed')));
    const driver = await linkName(path.join(dir, 'device', 'driver'));
    nics.push({
      name,
      mac: mac.toLowerCase(),
      link: (await readAttr(path.join(dir, 'carrier'))) === '1',
      ...(speed !== undefined && speed > 0 ? { speedMbps: speed } : {}),
      ...(driver !== undefined ? { driver } : {}),
    });
  }
  return nics;
}

/** SMBIOS system and BIOS strings as the kernel exports them (drivers/firmware/dmi-id.c); placeholders dropped. */
async function dmiInfo(roots: Roots): Promise<Inventory['dmi']> {
  const dir = path.join(roots.sys, 'class', 'dmi', 'id');
  const read = async (file: string) => {
    const v = await readAttr(path.join(dir, file));
    // QUIRK(firmware): vendors fill unset SMBIOS strings with placeholders; report them as unknown.
    return v === undefined || /^(to be filled by o\.e\.m\.|default string|not specified|none|system serial number|0+|n\/a)$/i.test(v) ? undefined : v;
  };
  const out: Inventory['dmi'] = {};
  const vendor = await read('sys_vendor');
  const product = await read('product_name');
  const serial = await read('product_serial');
  const uuid = (await read('product_uuid'))?.toLowerCase();
  const biosVersion = await read('bios_version');
  if (vendor !== undefined) out.vendor = vendor;
  if (product !== undefined) out.product = product;
  if (serial !== undefined) out.serial = serial;
  if (uuid !== undefined && !/^[0f-]+$/.test(uuid)) out.uuid = uuid;
  if (biosVersion !== undefined) out.biosVersion = biosVersion;
  return out;
}
