// GPT/MBR growth on file-backed disks, checked by util-linux sfdisk and gdisk's sgdisk (the real peers).
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { openBlockDevice, type BlockDevice } from '../../src/agent/block-device.ts';
import { isAgentError } from '../../src/agent/errors.ts';
import { decodeGptHeader, encodeChs, growLastPartition, readPartitionTable, GPT_TYPE } from '../../src/agent/partition-table.ts';

const MIB = 1 << 20;

/** A sparse file of `size` bytes (made or resized). */
function sized(file: string, size: number): void {
  writeFileSync(file, '', { flag: 'a' });
  truncateSync(file, size);
}

function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', ...(input !== undefined ? { input } : {}), stdio: ['pipe', 'pipe', 'pipe'] });
}

interface SfdiskTable {
  partitiontable: { label: string; firstlba?: number; lastlba?: number; sectorsize?: number; partitions: { start: number; size: number; type: string }[] };
}

const sfdiskJson = (file: string): SfdiskTable => JSON.parse(sh('sfdisk', ['--json', file])) as SfdiskTable;

function readAt(file: string, pos: number, len: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(len);
    readSync(fd, b, 0, len, pos);
    return b;
  } finally {
    closeSync(fd);
  }
}

/** The same device seen with another logical sector size (what a 4Kn disk reports). */
function withSectorSize(dev: BlockDevice, sectorSize: number): BlockDevice {
  return Object.create(dev, { sectorSize: { value: sectorSize } }) as BlockDevice;
}

const GPT_SCRIPT = [
  'label: gpt',
  `size=1MiB, type=${GPT_TYPE.biosBoot}`,
  `size=8MiB, type=${GPT_TYPE.efiSystem}`,
  `type=${GPT_TYPE.linuxRootX86_64}, name="root"`,
].join('\n');

t.test('GPT: the image grows to the whole disk; sgdisk and sfdisk find a valid table', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-gpt-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const disk = path.join(dir, 'disk');
  sized(disk, 64 * MIB);
  sh('sfdisk', ['-q', disk], GPT_SCRIPT);
  const before = sfdiskJson(disk).partitiontable;
  t.equal(before.lastlba, 64 * 2048 - 34);
  // The image lands on a larger disk: the backup GPT is now in the middle.
  sized(disk, 256 * MIB);
  t.match(sh('sgdisk', ['-v', disk]), /Problem|problem|corrupt|mismatch|backup/i, 'sgdisk sees the misplaced backup before');

  const dev = await openBlockDevice(disk);
  t.teardown(() => dev.close());
  const r = await growLastPartition(dev);
  const lastLba = 256 * 2048 - 1;
  t.same(r, { kind: 'gpt', partition: 3, oldLastLba: 20480 + 108544 - 1, newLastLba: lastLba - 33 });

  t.match(sh('sgdisk', ['-v', disk]), /No problems found/, 'sgdisk -v');
  const after = sfdiskJson(disk).partitiontable;
  t.equal(after.lastlba, lastLba - 33, 'LastUsableLBA at the end of the disk');
  t.same(after.partitions.map((p) => [p.start, p.size]), [[2048, 2048], [4096, 16384], [20480, lastLba - 33 - 20480 + 1]]);
  t.equal(after.partitions[2]?.type, GPT_TYPE.linuxRootX86_64.toUpperCase());

  const backup = decodeGptHeader(readAt(disk, lastLba * 512, 512));
  t.equal(backup.myLba, lastLba, 'backup header at the last LBA');
  t.equal(backup.alternateLba, 1);
  t.equal(backup.entriesLba, lastLba - 32);
  t.ok(readAt(disk, (64 * 2048 - 1) * 512, 512).every((b) => b === 0), 'the old backup header is zeroed');
  const pmbr = readAt(disk, 0, 512);
  t.equal(pmbr[446 + 4], 0xee);
  t.equal(pmbr.readUInt32LE(446 + 12), lastLba, 'protective MBR covers the disk');

  const again = await growLastPartition(dev);
  t.equal(again.partition, undefined, 'a second run grows nothing');
  t.match(again.skipped, /already ends/);
  t.match(sh('sgdisk', ['-v', disk]), /No problems found/);
});

t.test('GPT: a damaged primary is read from the backup but never rewritten; a bad entry CRC is refused', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-gpt-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const disk = path.join(dir, 'disk');
  sized(disk, 32 * MIB);
  sh('sfdisk', ['-q', disk], GPT_SCRIPT);
  const dev = await openBlockDevice(disk);
  t.teardown(() => dev.close());
  await dev.write(512 + 16, Buffer.from([1, 2, 3, 4])); // primary header CRC
  const table = await readPartitionTable(dev);
  t.equal(table.kind, 'gpt');
  if (table.kind === 'gpt') {
    t.equal(table.header.myLba, 32 * 2048 - 1, 'from the backup');
    t.equal(table.partitions.length, 3);
  }
  await t.rejects(growLastPartition(dev), { code: 'AGENT_PARTITION_TABLE_INVALID', message: /primary GPT header is damaged/ });

  sh('sfdisk', ['-q', disk], GPT_SCRIPT); // a fresh table
  await dev.write(2 * 512, Buffer.from([0xff])); // first entry byte: the entry array CRC no longer matches
  await dev.zero((32 * 2048 - 1) * 512, 512); // and no backup
  await t.rejects(readPartitionTable(dev), { code: 'AGENT_PARTITION_TABLE_INVALID', message: /GPT unreadable: GPT entry array CRC mismatch/ });
});

t.test('MBR: the last primary partition grows to the end; an extended one is left alone', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-mbr-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const disk = path.join(dir, 'disk');
  sized(disk, 32 * MIB);
  sh('sfdisk', ['-q', disk], 'label: dos\nsize=4MiB, type=83, bootable\ntype=83\n');
  sized(disk, 100 * MIB);
  const dev = await openBlockDevice(disk);
  t.teardown(() => dev.close());
  const r = await growLastPartition(dev);
  t.same(r, { kind: 'mbr', partition: 2, oldLastLba: 32 * 2048 - 1, newLastLba: 100 * 2048 - 1 });
  const table = sfdiskJson(disk).partitiontable;
  t.equal(table.label, 'dos');
  t.same(table.partitions.map((p) => [p.start, p.size]), [[2048, 8192], [10240, 100 * 2048 - 10240]]);
  t.doesNotThrow(() => sh('sfdisk', ['--verify', disk]), 'sfdisk --verify');
  t.equal((await growLastPartition(dev)).partition, undefined, 'idempotent');

  const ext = path.join(dir, 'ext');
  sized(ext, 32 * MIB);
  sh('sfdisk', ['-q', ext], 'label: dos\nsize=4MiB, type=83\ntype=5\n');
  sized(ext, 64 * MIB);
  const dev2 = await openBlockDevice(ext);
  t.teardown(() => dev2.close());
  t.match(await growLastPartition(dev2), { kind: 'mbr', skipped: /extended/ });
});

t.test('no table: a bare file system image grows nothing', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-none-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const disk = path.join(dir, 'disk');
  sized(disk, 8 * MIB);
  const dev = await openBlockDevice(disk);
  t.teardown(() => dev.close());
  t.match(await growLastPartition(dev), { kind: 'none', skipped: /no partition table/ });
});

t.test('4 KiB sectors: grown on a 4Kn disk, checked on a 4 KiB loop device; a 512-byte image on it is refused', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-4k-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const disk = path.join(dir, 'disk');
  sized(disk, 64 * MIB);
  const loopOf = (file: string) => {
    const loop = sh('losetup', ['--find', '--show', '--sector-size', '4096', file]).trim();
    t.teardown(() => { try { sh('losetup', ['-d', loop]); } catch { /* gone */ } });
    return loop;
  };
  let loop = loopOf(disk);
  sh('sfdisk', ['-q', loop], GPT_SCRIPT);
  sh('losetup', ['-d', loop]);
  sized(disk, 128 * MIB);

  const plain = await openBlockDevice(disk);
  t.teardown(() => plain.close());
  await t.rejects(readPartitionTable(plain), { code: 'AGENT_PARTITION_TABLE_INVALID', message: /for 4096-byte sectors; this disk has 512-byte/ });

  const dev = withSectorSize(plain, 4096);
  const r = await growLastPartition(dev);
  const lastLba = (128 * MIB) / 4096 - 1;
  t.equal(r.partition, 3);
  t.equal(r.newLastLba, lastLba - 5, 'four 4 KiB sectors of entries and the header at the end');
  loop = loopOf(disk);
  t.match(sh('sgdisk', ['-v', loop]), /No problems found/);
  const table = sfdiskJson(loop).partitiontable;
  t.equal(table.sectorsize, 4096);
  t.equal(table.lastlba, lastLba - 5);
  t.equal(table.partitions[2]!.start + table.partitions[2]!.size - 1, lastLba - 5);
});

t.test('CHS encoding of MBR entries', async (t) => {
  t.same([...encodeChs(0)!], [0, 1, 0]);
  t.same([...encodeChs(2048)!], [32, 33, 0], 'the usual first partition start (sfdisk writes 20 21 00)');
  t.same([...encodeChs(1024 * 255 * 63 - 1)!], [254, 63 | 0xc0, 0xff], 'the last expressible sector');
  t.equal(encodeChs(1024 * 255 * 63), undefined);
  t.ok(isAgentError(new (await import('../../src/agent/errors.ts')).AgentError('AGENT_INTERNAL', 'x')));
});
