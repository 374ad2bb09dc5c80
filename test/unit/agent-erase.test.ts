// Erase modes on a file-backed disk, checked by util-linux blkid and wipefs (what installers and udev look at).
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { openBlockDevice } from '../../src/agent/block-device.ts';
import { eraseDisk, quickRanges } from '../../src/agent/erase.ts';

const MIB = 1 << 20;
const P1 = 2048 * 512; // swap, 16 MiB
const P2 = 34816 * 512; // ext4, to the end
const MARK = Buffer.from('metalbox data that a quick erase leaves alone '.repeat(100));

function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', ...(input !== undefined ? { input } : {}), stdio: ['pipe', 'pipe', 'pipe'] });
}

/** blkid's probe of a region: the TYPE it finds, or undefined (exit 2: nothing). */
function probe(file: string, offset: number): string | undefined {
  const r = spawnSync('blkid', ['-p', '-O', String(offset), '-o', 'value', '-s', 'TYPE', file], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function pwrite(file: string, pos: number, data: Buffer): void {
  const fd = openSync(file, 'r+');
  try { writeSync(fd, data, 0, data.length, pos); } finally { closeSync(fd); }
}

function pread(file: string, pos: number, len: number): Buffer {
  const fd = openSync(file, 'r');
  try { const b = Buffer.alloc(len); readSync(fd, b, 0, len, pos); return b; } finally { closeSync(fd); }
}

/** 64 MiB: GPT, a swap partition and an ext4 partition, and data in the middle of the ext4 one. */
function makeDisk(dir: string): string {
  const disk = path.join(dir, 'disk');
  writeFileSync(disk, '');
  truncateSync(disk, 64 * MIB);
  sh('sfdisk', ['-q', disk], 'label: gpt\nsize=16MiB, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\ntype=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n');
  const swap = path.join(dir, 'swap');
  writeFileSync(swap, '');
  truncateSync(swap, 16 * MIB);
  sh('mkswap', ['-q', swap]);
  pwrite(disk, P1, readFileSync(swap).subarray(0, 64 << 10));
  sh('mkfs.ext4', ['-q', '-F', '-E', `offset=${P2}`, disk, '40M']);
  pwrite(disk, P2 + 20 * MIB, MARK);
  return disk;
}

t.test('quick: no signature is left for blkid or wipefs; data between them stays', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-erase-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const disk = makeDisk(dir);
  t.equal(probe(disk, P1), 'swap', 'swap before');
  t.equal(probe(disk, P2), 'ext4', 'ext4 before');
  t.match(sh('wipefs', ['-n', disk]), /gpt[\s\S]*PMBR/, 'GPT and PMBR before');

  const dev = await openBlockDevice(disk);
  t.teardown(() => dev.close());
  const progress: number[] = [];
  const r = await eraseDisk(dev, 'quick', (done) => progress.push(done));
  t.equal(r.partitions, 2);
  t.ok(r.bytes <= 6 * MIB, `${r.bytes} bytes zeroed`);
  t.same(progress, [...progress].sort((a, b) => a - b), 'progress only grows');
  t.equal(progress.at(-1), r.bytes);

  t.equal(probe(disk, P1), undefined, 'no swap signature');
  t.equal(probe(disk, P2), undefined, 'no ext4 superblock');
  t.equal(sh('wipefs', ['-n', disk]).trim(), '', 'wipefs finds nothing on the disk');
  t.not(spawnSync('sfdisk', ['--json', disk]).status, 0, 'sfdisk finds no partition table');
  t.ok(pread(disk, P2 + 20 * MIB, MARK.length).equals(MARK), 'data in the middle is still there');
  t.ok(pread(disk, 0, MIB).every((b) => b === 0) && pread(disk, 63 * MIB, MIB).every((b) => b === 0), 'first and last MiB zero');
});

t.test('quick ranges: the disk ends and each partition\'s ends, merged and clamped', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-erase-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const disk = makeDisk(dir);
  const dev = await openBlockDevice(disk);
  t.teardown(() => dev.close());
  // [0,1M) disk head + [1M,2M) swap head merge; swap tail [16M,17M) and ext4 head [17M,18M) merge;
  // the ext4 tail (sfdisk ends the partition at 63 MiB, aligned) and the disk's last MiB merge too.
  const p2 = (JSON.parse(sh('sfdisk', ['--json', disk])) as { partitiontable: { partitions: { start: number; size: number }[] } }).partitiontable.partitions[1]!;
  const p2End = (p2.start + p2.size) * 512;
  t.equal(p2End, 63 * MIB);
  t.same([...(await quickRanges(dev))], [[0, 2 * MIB], [16 * MIB, 2 * MIB], [p2End - MIB, 64 * MIB - (p2End - MIB)]]);
  // A damaged table: only the disk's ends.
  pwrite(disk, 0, Buffer.alloc(2 * MIB));
  pwrite(disk, 63 * MIB, Buffer.alloc(MIB));
  const ranges = await quickRanges(dev);
  t.same([...ranges], [[0, MIB], [63 * MIB, MIB]]);
  t.equal(ranges.partitions, 0);
});

t.test('full: every byte zero, progress to the end; none: nothing touched', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-erase-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const disk = makeDisk(dir);
  const before = readFileSync(disk);
  const dev = await openBlockDevice(disk);
  t.teardown(() => dev.close());
  t.same(await eraseDisk(dev, 'none'), { mode: 'none', bytes: 0, partitions: 0 });
  t.ok(readFileSync(disk).equals(before), 'none changes nothing');

  let last = 0;
  let calls = 0;
  const r = await eraseDisk(dev, 'full', (done, total) => { t.ok(done >= last && total === 64 * MIB); last = done; calls++; });
  t.equal(r.bytes, 64 * MIB);
  t.equal(last, 64 * MIB);
  t.ok(calls >= 16, `${calls} progress calls`);
  const after = readFileSync(disk);
  t.equal(after.length, 64 * MIB, 'the disk keeps its size');
  t.ok(after.every((b) => b === 0), 'all zero');
});
