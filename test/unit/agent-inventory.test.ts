// Inventory from a fake sysfs/procfs tree laid out as the kernel does, and once from this machine's own.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { listDisks, resolveDisk } from '../../src/agent/disks.ts';
import { collectInventory, systeminformation, type SystemInfoSource } from '../../src/agent/inventory.ts';
import { REAL_ROOTS, type Roots } from '../../src/agent/sysfs.ts';

function put(root: string, rel: string, content: string | Buffer): void {
  const file = path.join(root, rel);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, content);
}

const fakeSi: SystemInfoSource = {
  cpu: async () => ({ manufacturer: 'Intel', brand: 'Xeon® Gold 6338', cores: 99, physicalCores: 99, processors: 9 }),
  mem: async () => ({ total: 123 }),
};

/** Two sockets x 2 cores x 2 threads, one thread offline; 2 GiB online; four disks, two NICs, DMI, UEFI, a BMC. */
function fakeMachine(): Roots {
  const root = mkdtempSync(path.join(tmpdir(), 'agent-sys-'));
  const sys = path.join(root, 'sys');
  const cpu = 'devices/system/cpu';
  for (let n = 0; n < 8; n++) {
    put(sys, `${cpu}/cpu${n}/topology/physical_package_id`, `${n >> 2}\n`);
    put(sys, `${cpu}/cpu${n}/topology/core_id`, `${(n >> 1) & 1}\n`);
    if (n > 0) put(sys, `${cpu}/cpu${n}/online`, n === 7 ? '0\n' : '1\n');
  }
  put(sys, `${cpu}/cpufreq/policy0/x`, ''); // not a cpuN directory
  put(sys, 'devices/system/memory/block_size_bytes', '8000000\n');
  for (let n = 0; n < 17; n++) put(sys, `devices/system/memory/memory${n}/state`, n === 16 ? 'offline\n' : 'online\n');

  const disk = (name: string, sectors: number, attrs: Record<string, string | Buffer>) => {
    put(sys, `block/${name}/size`, `${sectors}\n`);
    put(sys, `block/${name}/queue/logical_block_size`, '512\n');
    for (const [k, v] of Object.entries(attrs)) put(sys, `block/${name}/${k}`, v);
  };
  // SPC-4 VPD page 0x80: peripheral byte, page code, length, serial (space padded).
  const vpd = Buffer.concat([Buffer.from([0, 0x80, 0, 12]), Buffer.from('  QM00001   ')]);
  disk('sda', 2 * 2 ** 21, { 'device/model': 'QEMU HARDDISK\n', 'device/vpd_pg80': vpd, removable: '0\n', 'queue/rotational': '1\n', 'sda1/partition': '1\n', 'sda1/holders/.keep': '' });
  disk('vdb', 2 ** 21, { serial: 'VIRTIO-B\n', 'device/x': '', removable: '0\n', 'queue/rotational': '0\n' });
  disk('nvme0n1', 4 * 2 ** 21, { 'device/serial': 'S4EWNX0R123456  \n', 'device/model': 'Samsung SSD 980 PRO 1TB\n', removable: '0\n', 'queue/rotational': '0\n' });
  disk('sdb', 2 ** 20, { 'device/model': 'USB DISK\n', removable: '1\n', 'queue/rotational': '0\n' });
  disk('sr0', 2 ** 20, { 'device/type': '5\n', removable: '1\n' });
  disk('mmcblk0', 0, { 'device/x': '' });
  disk('loop0', 2 ** 20, {});
  mkdirSync(path.join(sys, 'block/sda/holders'), { recursive: true });

  const nic = (name: string, attrs: Record<string, string>, driver?: string) => {
    for (const [k, v] of Object.entries(attrs)) put(sys, `class/net/${name}/${k}`, v);
    if (driver !== undefined) {
      mkdirSync(path.join(sys, `class/net/${name}/device`), { recursive: true });
      symlinkSync(`../../../bus/pci/drivers/${driver}`, path.join(sys, `class/net/${name}/device/driver`));
    }
  };
  nic('eth0', { type: '1\n', address: '52:54:00:AA:BB:01\n', carrier: '1\n', speed: '1000\n' }, 'e1000e');
  nic('eth1', { type: '1\n', address: '52:54:00:aa:bb:02\n', speed: '-1\n' }, 'ixgbe');
  nic('br0', { type: '1\n', address: '52:54:00:aa:bb:03\n', carrier: '1\n' });
  nic('lo', { type: '772\n', address: '00:00:00:00:00:00\n' });
  nic('ib0', { type: '32\n', address: '80:00:00:48\n' }, 'mlx5_core');

  put(sys, 'class/dmi/id/sys_vendor', 'LabCorp\n');
  put(sys, 'class/dmi/id/product_name', 'PXE-Node\n');
  put(sys, 'class/dmi/id/product_serial', 'To Be Filled By O.E.M.\n');
  put(sys, 'class/dmi/id/product_uuid', '8B3C6A52-2F0E-4C7B-9D55-0A1B2C3D4E5F\n');
  put(sys, 'class/dmi/id/bios_version', '1.16.2-debian-1.16.2-1\n');
  mkdirSync(path.join(sys, 'firmware/efi'), { recursive: true });

  put(root, 'proc/mounts', 'rootfs / rootfs rw 0 0\n/dev/sdb1 /media ext4 rw 0 0\nproc /proc proc rw 0 0\n');
  put(root, 'proc/swaps', 'Filename\tType\tSize\tUsed\tPriority\n');
  put(root, 'dev/ipmi0', '');
  return { sys, proc: path.join(root, 'proc'), dev: path.join(root, 'dev') };
}

t.test('inventory from a fake sysfs', async (t) => {
  const roots = fakeMachine();
  t.teardown(() => rmSync(path.dirname(roots.sys), { recursive: true, force: true }));
  const inv = await collectInventory(roots, fakeSi);
  t.same(inv.cpu, { model: 'Intel Xeon® Gold 6338', cores: 4, threads: 7, sockets: 2 });
  t.equal(inv.memoryBytes, 16 * 128 * 2 ** 20, 'online memory blocks, not MemTotal');
  t.equal(inv.firmware, 'uefi');
  t.same(inv.dmi, { vendor: 'LabCorp', product: 'PXE-Node', uuid: '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f', biosVersion: '1.16.2-debian-1.16.2-1' }, 'placeholder serial dropped');
  t.same(inv.disks, [
    { name: 'nvme0n1', path: path.join(roots.dev, 'nvme0n1'), sizeBytes: 4 * 2 ** 30, model: 'Samsung SSD 980 PRO 1TB', serial: 'S4EWNX0R123456', rotational: false, removable: false },
    { name: 'sda', path: path.join(roots.dev, 'sda'), sizeBytes: 2 * 2 ** 30, model: 'QEMU HARDDISK', serial: 'QM00001', rotational: true, removable: false },
    { name: 'sdb', path: path.join(roots.dev, 'sdb'), sizeBytes: 2 ** 29, model: 'USB DISK', rotational: false, removable: true },
    { name: 'vdb', path: path.join(roots.dev, 'vdb'), sizeBytes: 2 ** 30, serial: 'VIRTIO-B', rotational: false, removable: false },
  ]);
  t.same(inv.nics, [
    { name: 'eth0', mac: '52:54:00:aa:bb:01', link: true, speedMbps: 1000, driver: 'e1000e' },
    { name: 'eth1', mac: '52:54:00:aa:bb:02', link: false, driver: 'ixgbe' },
  ]);
  t.same(inv.bmc, { present: true });
  t.same(JSON.parse(JSON.stringify(inv)), inv, 'plain JSON');
});

t.test('disks in use and the choice of a deploy target', async (t) => {
  const roots = fakeMachine();
  t.teardown(() => rmSync(path.dirname(roots.sys), { recursive: true, force: true }));
  // sda: a partition held by dm/md (holders); sdb: a mounted partition (it has none in sysfs: the name counts).
  writeFileSync(path.join(roots.proc, 'mounts'), `/dev/nvme0n1 /mnt ext4 rw 0 0\n`);
  let disks = await listDisks(roots);
  t.same(disks.map((d) => [d.name, d.inUse, d.partitions]), [['nvme0n1', true, []], ['sda', true, ['sda1']], ['sdb', false, []], ['vdb', false, []]]);
  t.equal((await resolveDisk('auto', disks)).name, 'vdb', 'auto: first non-removable disk not in use');
  t.equal((await resolveDisk('VIRTIO-B', disks)).name, 'vdb', 'by serial');
  t.equal((await resolveDisk(path.join(roots.dev, 'vdb'), disks)).name, 'vdb', 'by path');
  t.equal((await resolveDisk('/dev/vdb', disks)).name, 'vdb', 'by kernel name');
  await t.rejects(resolveDisk('/dev/sda', disks), { code: 'AGENT_DISK_NOT_FOUND', message: /in use/ });
  await t.rejects(resolveDisk('QM00001', disks), { code: 'AGENT_DISK_NOT_FOUND', message: /in use/ });
  await t.rejects(resolveDisk('NOPE', disks), { code: 'AGENT_DISK_NOT_FOUND', message: /no disk has serial/ });
  await t.rejects(resolveDisk('/dev/sdz', disks), { code: 'AGENT_DISK_NOT_FOUND', message: /no disk \/dev\/sdz/ });
  writeFileSync(path.join(roots.proc, 'swaps'), `Filename Type\n/dev/vdb partition 1 0 -2\n`);
  disks = await listDisks(roots);
  await t.rejects(resolveDisk('auto', disks), { code: 'AGENT_DISK_NOT_FOUND', message: /nvme0n1 in use, sda in use, sdb removable, vdb in use/ });
  await t.rejects(resolveDisk('auto', []), { message: /sees no disk/ });
});

t.test('this machine: systeminformation and sysfs agree with the kernel', async (t) => {
  const t0 = performance.now();
  const inv = await collectInventory(REAL_ROOTS, await systeminformation());
  t.comment(`inventory of this machine in ${Math.round(performance.now() - t0)} ms`);
  t.equal(inv.cpu.threads, os.cpus().length);
  t.ok(inv.cpu.cores >= 1 && inv.cpu.cores <= inv.cpu.threads && inv.cpu.sockets >= 1 && inv.cpu.sockets <= inv.cpu.cores);
  t.not(inv.cpu.model, 'unknown');
  const memTotal = Number(/MemTotal:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]) * 1024;
  t.ok(inv.memoryBytes >= memTotal && inv.memoryBytes < memTotal * 1.25, `${inv.memoryBytes} vs MemTotal ${memTotal}`);
  for (const nic of inv.nics) t.match(nic.mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  for (const disk of inv.disks) t.ok(disk.sizeBytes > 0 && !/^(loop|ram|zram|dm-|md)/.test(disk.name), disk.name);
});
