// `metalbox agent` against the fake appliance on loopback, with a sparse file as the disk: commission, deploy
// (GPT + zstd, MBR + gzip, xz; a lost connection resumed; a bad checksum; a corrupt image), release, a bad token.
// The written disk is checked with sgdisk/sfdisk, the seed read back with debugfs and the file system with e2fsck.
// Needs root (loop devices and mount), as CI runs.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { runAgent, type AgentDeps } from '../../src/agent/index.ts';
import { startFakeAppliance, type FakeAppliance } from '../helpers/fake-appliance.ts';
import { runSource } from '../helpers/process.ts';

const MIB = 1 << 20;
const SECTOR = 512;

function sh(cmd: string, args: string[], input?: string | Buffer): string {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * MIB, ...(input !== undefined ? { input } : {}), stdio: ['pipe', 'pipe', 'pipe'] });
}

function sized(file: string, size: number): void {
  writeFileSync(file, '', { flag: 'a' });
  truncateSync(file, size);
}

function pread(file: string, pos: number, len: number): Buffer {
  const fd = openSync(file, 'r');
  try { const b = Buffer.alloc(len); readSync(fd, b, 0, len, pos); return b; } finally { closeSync(fd); }
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Image {
  raw: string;
  /** Byte offset and KiB size of the root file system inside the image. */
  rootOffset: number;
  rootKib: number;
}

/**
 * A 64 MiB cloud-image-like disk: GPT (BIOS boot, ESP, Linux root ext4) or MBR (one 0x83 ext4 partition),
 * the ext4 made straight into the image by mkfs.ext4 -d (no mount).
 */
function makeImage(dir: string, label: 'gpt' | 'mbr'): Image {
  const rootfs = path.join(dir, `rootfs-${label}`);
  mkdirSync(path.join(rootfs, 'etc'), { recursive: true });
  mkdirSync(path.join(rootfs, 'var/lib/cloud'), { recursive: true });
  writeFileSync(path.join(rootfs, 'etc/hostname'), 'template\n');
  writeFileSync(path.join(rootfs, 'etc/os-release'), 'ID=debian\nVERSION_ID="12"\n');
  const raw = path.join(dir, `image-${label}.raw`);
  sized(raw, 64 * MIB);
  const script = label === 'gpt'
    ? 'label: gpt\nsize=1MiB, type=21686148-6449-6E6F-744E-656564454649\nsize=8MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\ntype=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n'
    : 'label: dos\ntype=83, bootable\n';
  sh('sfdisk', ['-q', raw], script);
  const parts = (JSON.parse(sh('sfdisk', ['--json', raw])) as { partitiontable: { partitions: { start: number; size: number }[] } }).partitiontable.partitions;
  const root = parts[parts.length - 1]!;
  const rootKib = (root.size * SECTOR) / 1024;
  sh('mkfs.ext4', ['-q', '-F', '-d', rootfs, '-E', `offset=${root.start * SECTOR}`, raw, `${rootKib}k`]);
  return { raw, rootOffset: root.start * SECTOR, rootKib };
}

function compress(raw: string, how: 'zstd' | 'gzip' | 'xz'): Buffer {
  const args = { zstd: ['-c', '-q', '-3', raw], gzip: ['-c', '-1', raw], xz: ['-c', '-0', '-T1', raw] }[how];
  return execFileSync(how, args, { maxBuffer: 256 * MIB });
}

/** debugfs reading a file out of the root file system of the deployed disk (copied out: no mount needed). */
function readFromRoot(dir: string, disk: string, image: Image, file: string): { text: string; mode: string } {
  const part = path.join(dir, 'root.ext4');
  writeFileSync(part, pread(disk, image.rootOffset, image.rootKib * 1024));
  const text = sh('debugfs', ['-R', `cat ${file}`, part]);
  const mode = /Mode:\s+(\d+)/.exec(sh('debugfs', ['-R', `stat ${file}`, part]))?.[1] ?? '';
  const fsck = spawnSync('e2fsck', ['-f', '-n', part], { encoding: 'utf8' });
  if (fsck.status !== 0) throw new Error(`e2fsck: ${fsck.stdout}${fsck.stderr}`);
  return { text, mode };
}

function deployTask(fa: FakeAppliance, name: string, body: Buffer, compression: string, extra: Record<string, unknown> = {}) {
  return {
    mode: 'deploy',
    deploy: {
      imageUrl: `/images/${name}`, sha256: sha256(body), size: body.length, compression, disk: 'auto',
      hostname: 'node7.rack.internal', sshKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example'],
      phoneHomeUrl: `${fa.url}/boot/agent/v1/phone-home/ph-7f3a`, network: { mac: '52:54:00:12:34:56' }, instanceId: 'i-node7-1',
      ...extra,
    },
  };
}

const dir = mkdtempSync(path.join(tmpdir(), 'agent-run-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const gpt = makeImage(dir, 'gpt');
const mbr = makeImage(dir, 'mbr');

/** runAgent in this process, output collected, never powering anything off. */
async function agent(fa: FakeAppliance, disk: string | undefined, mode: string, deps: Partial<AgentDeps> = {}) {
  const envFile = path.join(dir, 'env');
  writeFileSync(envFile, `METALBOX_URL='${fa.url}'\nMETALBOX_TOKEN='${fa.token}'\nMETALBOX_MODE='${mode}'\nMETALBOX_MAC='52:54:00:12:34:56'\n`);
  let out = '';
  const powered: string[] = [];
  const code = await runAgent(['--env-file', envFile, ...(disk !== undefined ? ['--disk', disk] : [])], {}, { out: (s) => { out += s; }, err: (s) => { out += s; } }, {
    power: async (a) => { powered.push(a); }, retryDelayMs: () => 20, resumeDelayMs: 20, ...deps,
  });
  return { code, out, powered };
}

t.test('commission through `metalbox agent` (main.ts dispatch): inventory posted, done, no token printed', async (t) => {
  const fa = await startFakeAppliance();
  t.teardown(() => fa.close());
  fa.task = { mode: 'commission' };
  const envFile = path.join(dir, 'env-cli');
  writeFileSync(envFile, `METALBOX_URL='${fa.url}'\nMETALBOX_TOKEN='${fa.token}'\nMETALBOX_MODE='commission'\n`);
  const run = runSource(['agent', '--env-file', envFile, '--no-power']);
  const code = await run.exited;
  const output = run.stdout() + run.stderr();
  t.equal(code, 0, output);
  t.match(output, /METALBOX-AGENT-DONE mode=commission ok=true/);
  t.match(output, /leaving the machine up \(--no-power\) instead of: poweroff/);
  t.notOk(output.includes(fa.token), 'the token is never printed');
  t.equal(fa.inventories.length, 1);
  t.match(fa.inventories[0], { cpu: { cores: Number, threads: Number, sockets: Number }, memoryBytes: Number, firmware: /^(bios|uefi)$/, disks: Array, nics: Array, dmi: Object });
  t.same(fa.done, [{ mode: 'commission', ok: true }]);
  t.same(fa.requests.map((r) => `${r.method} ${r.path}`), ['GET /boot/agent/v1/task', 'POST /boot/agent/v1/inventory', 'POST /boot/agent/v1/done']);

  const usage = runSource(['agent', '--bogus']);
  t.equal(await usage.exited, 2);
  t.match(usage.stderr(), /AGENT_USAGE/);
});

t.test('deploy a GPT image (zstd) through the CLI: written, grown, seeded; then reboot', async (t) => {
  const fa = await startFakeAppliance();
  t.teardown(() => fa.close());
  const body = compress(gpt.raw, 'zstd');
  writeFileSync(path.join(dir, 'gpt.zst'), body);
  fa.images.set('gpt.zst', path.join(dir, 'gpt.zst'));
  fa.task = deployTask(fa, 'gpt.zst', body, 'zstd');
  const disk = path.join(dir, 'disk-gpt');
  sized(disk, 256 * MIB);
  writeFileSync(disk, Buffer.alloc(MIB, 0xaa), { flag: 'r+' }); // an old system's first MiB
  const envFile = path.join(dir, 'env-cli');
  writeFileSync(envFile, `METALBOX_URL='${fa.url}'\nMETALBOX_TOKEN='${fa.token}'\nMETALBOX_MODE='deploy'\n`);
  const run = runSource(['agent', '--env-file', envFile, '--disk', disk, '--no-power']);
  const code = await run.exited;
  const output = run.stdout() + run.stderr();
  t.equal(code, 0, output);
  t.match(output, /image written and verified: 64 MiB in [\d.]+ s \([\d.]+ MiB\/s\), sha256 ok/);
  t.match(output, /grew gpt partition 3 to the end of the disk/);
  t.match(output, /wrote the cloud-init seed to partition 3 \(ext4, \/dev\/loop\d+\)/);
  t.match(output, /leaving the machine up \(--no-power\) instead of: reboot/);
  t.notOk(output.includes(fa.token) || output.includes('ph-7f3a'), 'neither token printed');
  t.same(fa.done, [{ mode: 'deploy', ok: true }]);
  t.ok(fa.progress.some((p) => p.phase === 'deploy' && p.done === body.length && p.total === body.length), 'progress reached the whole image');
  const image = fa.requests.find((r) => r.path === '/images/gpt.zst');
  t.equal(image?.authorization, `Bearer ${fa.token}`, 'the appliance\'s own origin gets the token');

  t.match(sh('sgdisk', ['-v', disk]), /No problems found/);
  const table = (JSON.parse(sh('sfdisk', ['--json', disk])) as { partitiontable: { lastlba: number; partitions: { start: number; size: number }[] } }).partitiontable;
  t.equal(table.lastlba, 256 * 2048 - 34);
  t.equal(table.partitions[2]!.start + table.partitions[2]!.size - 1, 256 * 2048 - 34, 'root partition to the end');
  t.ok(pread(disk, MIB, 8 * MIB).equals(pread(gpt.raw, MIB, 8 * MIB)), 'BIOS boot and ESP partitions as in the image');

  const user = readFromRoot(dir, disk, gpt, '/var/lib/cloud/seed/nocloud/user-data');
  t.match(user.text, /^#cloud-config\n/);
  t.match(user.text, /hostname: "node7"/);
  t.match(user.text, /ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example/);
  t.match(user.text, new RegExp(`url: "${fa.url}/boot/agent/v1/phone-home/ph-7f3a"`));
  t.equal(user.mode, '0600');
  t.match(readFromRoot(dir, disk, gpt, '/var/lib/cloud/seed/nocloud/meta-data').text, /instance-id: "i-node7-1"/);
  t.match(readFromRoot(dir, disk, gpt, '/var/lib/cloud/seed/nocloud/network-config').text, /macaddress: "52:54:00:12:34:56"/);
  t.equal(readFromRoot(dir, disk, gpt, '/etc/hostname').text, 'template\n', 'the image\'s own files are intact');
  t.equal(sh('losetup', ['-j', disk]).trim(), '', 'no loop device left behind');
});

t.test('deploy an MBR image (gzip) and an xz one; a lost connection is resumed', async (t) => {
  const fa = await startFakeAppliance();
  t.teardown(() => fa.close());
  for (const how of ['gzip', 'xz'] as const) {
    const body = compress(mbr.raw, how);
    const file = path.join(dir, `mbr.${how}`);
    writeFileSync(file, body);
    fa.images.set(`mbr.${how}`, file);
    fa.task = deployTask(fa, `mbr.${how}`, body, how, { disk: 'ignored-by---disk', network: { mac: '52:54:00:12:34:56', address: '10.77.0.50/24', gateway: '10.77.0.1' } });
    fa.cutImageAfter = Math.floor(body.length / 2);
    const disk = path.join(dir, `disk-mbr-${how}`);
    sized(disk, 96 * MIB);
    const r = await agent(fa, disk, 'deploy');
    t.equal(r.code, 0, r.out);
    t.same(r.powered, ['reboot']);
    t.match(r.out, /trying again \(1\/5\)/, `${how}: the cut connection was picked up`);
    const ranges = fa.requests.filter((q) => q.path === `/images/mbr.${how}` && q.range !== undefined);
    t.same(ranges.map((q) => q.range), [`bytes=${Math.floor(body.length / 2)}-`], 'resumed with a Range request');
    t.match(r.out, /grew mbr partition 1 to the end of the disk/);
    const table = (JSON.parse(sh('sfdisk', ['--json', disk])) as { partitiontable: { partitions: { start: number; size: number }[] } }).partitiontable;
    t.equal(table.partitions[0]!.start + table.partitions[0]!.size, 96 * 2048);
    t.match(readFromRoot(dir, disk, mbr, '/var/lib/cloud/seed/nocloud/network-config').text, /addresses:\n\s+- "10\.77\.0\.50\/24"/);
  }
  t.same(fa.done, [{ mode: 'deploy', ok: true }, { mode: 'deploy', ok: true }]);
});

t.test('deploy failures are reported and leave no bootable disk', async (t) => {
  const fa = await startFakeAppliance();
  t.teardown(() => fa.close());
  const body = compress(gpt.raw, 'zstd');
  fa.images.set('gpt.zst', path.join(dir, 'gpt.zst'));
  writeFileSync(path.join(dir, 'gpt.zst'), body);
  const disk = path.join(dir, 'disk-fail');
  sized(disk, 128 * MIB);

  // The registered checksum is not the image's.
  fa.task = { ...deployTask(fa, 'gpt.zst', body, 'zstd') };
  (fa.task as { deploy: { sha256: string } }).deploy.sha256 = 'f'.repeat(64);
  let r = await agent(fa, disk, 'deploy');
  t.equal(r.code, 1);
  t.same(r.powered, [], 'no reboot after a failure');
  t.match(r.out, /METALBOX-AGENT-DONE mode=deploy ok=false code=AGENT_IMAGE_CHECKSUM_MISMATCH/);
  t.match(fa.done.at(-1), { mode: 'deploy', ok: false, error: { code: 'AGENT_IMAGE_CHECKSUM_MISMATCH', message: /sha256 is [0-9a-f]{64}, registered f{64}/ } });
  t.ok(pread(disk, 0, MIB).every((b) => b === 0), 'the first MiB (MBR, GPT) stays zero');
  const rootHead = pread(gpt.raw, gpt.rootOffset, MIB);
  t.ok(!rootHead.every((b) => b === 0) && pread(disk, gpt.rootOffset, MIB).equals(rootHead), 'while the rest was written');

  // Not zstd at all, with its own checksum registered.
  const junk = Buffer.alloc(3 * MIB, 'not a zstd frame ');
  writeFileSync(path.join(dir, 'junk'), junk);
  fa.images.set('junk', path.join(dir, 'junk'));
  fa.task = deployTask(fa, 'junk', junk, 'zstd');
  r = await agent(fa, disk, 'deploy');
  t.equal(r.code, 1);
  t.match(fa.done.at(-1), { ok: false, error: { code: 'AGENT_IMAGE_CORRUPT' } });

  // Larger than the disk.
  const small = path.join(dir, 'disk-small');
  sized(small, 32 * MIB);
  fa.task = deployTask(fa, 'gpt.zst', body, 'zstd');
  r = await agent(fa, small, 'deploy');
  t.match(fa.done.at(-1), { ok: false, error: { code: 'AGENT_IMAGE_TOO_LARGE' } });
  t.equal(r.code, 1);

  // The server cannot resume: the download fails.
  fa.task = deployTask(fa, 'gpt.zst', body, 'zstd');
  fa.cutImageAfter = 1000;
  fa.noRanges = true;
  r = await agent(fa, disk, 'deploy');
  t.match(fa.done.at(-1), { ok: false, error: { code: 'AGENT_IMAGE_FETCH_FAILED', message: /cannot resume at byte 1000 \(answered 200\)/ } });
  fa.noRanges = false;

  // A missing image.
  fa.task = deployTask(fa, 'nope', body, 'zstd');
  r = await agent(fa, disk, 'deploy');
  t.match(fa.done.at(-1), { ok: false, error: { code: 'AGENT_IMAGE_FETCH_FAILED', message: /HTTP 404/ } });
});

t.test('deploy onto a block device with busybox applets: BLKRRPART, the kernel\'s partition node, mount', async (t) => {
  const fa = await startFakeAppliance();
  t.teardown(() => fa.close());
  const body = compress(gpt.raw, 'gzip');
  writeFileSync(path.join(dir, 'gpt.gz'), body);
  fa.images.set('gpt.gz', path.join(dir, 'gpt.gz'));
  fa.task = deployTask(fa, 'gpt.gz', body, 'gzip');
  const backing = path.join(dir, 'disk-block');
  sized(backing, 160 * MIB);
  // A loop device with partition scanning behaves as a real disk: /dev/loopNpM appear after a re-read.
  const loop = sh('losetup', ['--find', '--show', '--partscan', backing]).trim();
  t.teardown(() => { spawnSync('losetup', ['-d', loop]); });
  const busybox = sh('sh', ['-c', 'command -v busybox']).trim();
  const calls: string[] = [];
  const { runProgram } = await import('../../src/agent/run.ts');
  const r = await agent(fa, loop, 'deploy', {
    run: (cmd, args, opts) => { calls.push(`${cmd} ${args.join(' ')}`); return runProgram(busybox, [cmd, ...args], opts); },
  });
  t.equal(r.code, 0, r.out);
  if (existsSync(`${loop}p3`)) {
    // A kernel with the GPT parser: its own partition node, no loop device.
    t.match(r.out, new RegExp(`wrote the cloud-init seed to partition 3 \\(ext4, ${loop}p3\\)`), 'the kernel\'s own partition node');
    t.same(calls.map((c) => c.split(' ')[0]), ['blockdev', 'mount', 'umount']);
  } else {
    // QUIRK(test host): this kernel shows no partitions of any disk (no partition table parsers): the agent
    // waits 5 s for the node, then reaches the partition through busybox losetup at its offset.
    t.match(r.out, /the kernel shows no node for partition 3 of \/dev\/loop\d+; using a loop device/);
    t.match(r.out, /wrote the cloud-init seed to partition 3 \(ext4, \/dev\/loop\d+\)/);
    const words = (c: string) => c.split(' ').slice(0, c.startsWith('losetup') || c.startsWith('blockdev') ? 2 : 1).join(' ');
    t.same(calls.map(words), ['blockdev --rereadpt', 'losetup -f', 'losetup -o', 'mount', 'umount', 'losetup -d']);
  }
  t.match(sh('sgdisk', ['-v', loop]), /No problems found/);
  t.match(readFromRoot(dir, backing, gpt, '/var/lib/cloud/seed/nocloud/meta-data').text, /local-hostname: "node7"/);
});

t.test('release: quick erase of the given disk, done, power off', async (t) => {
  const fa = await startFakeAppliance();
  t.teardown(() => fa.close());
  const disk = path.join(dir, 'disk-gpt');
  t.match(sh('wipefs', ['-n', disk]), /gpt/, 'the deployed disk has signatures');
  fa.task = { mode: 'release', release: { erase: 'quick' } };
  const r = await agent(fa, disk, 'release');
  t.equal(r.code, 0, r.out);
  t.same(r.powered, ['poweroff']);
  t.equal(sh('wipefs', ['-n', disk]).trim(), '', 'nothing left for wipefs');
  t.equal(spawnSync('blkid', ['-p', '-O', String(gpt.rootOffset), disk]).status, 2, 'no file system signature in the root partition');
  t.same(fa.done, [{ mode: 'release', ok: true }]);
  t.ok(fa.progress.some((p) => p.phase === 'erase'));
});

t.test('enlist, rescue, none, a bad token, hold', async (t) => {
  const fa = await startFakeAppliance();
  t.teardown(() => fa.close());
  const si = { systemInfo: async () => ({ cpu: async () => ({ manufacturer: 'X', brand: 'Y', cores: 1, physicalCores: 1, processors: 1 }), mem: async () => ({ total: 1 }) }) };
  let r = await agent(fa, undefined, 'enlist', si);
  t.equal(r.code, 0, r.out);
  t.same(fa.requests.map((q) => q.path), ['/boot/agent/v1/inventory', '/boot/agent/v1/done'], 'enlist asks for no task');
  t.same(fa.done, [{ mode: 'enlist', ok: true }]);
  t.same(r.powered, ['poweroff']);

  for (const mode of ['rescue', 'none']) {
    fa.task = { mode };
    r = await agent(fa, undefined, 'rescue');
    t.equal(r.code, 0);
    t.same(r.powered, [], `${mode}: the agent leaves the machine as it is`);
  }

  const count = fa.requests.length;
  fa.token = 'another-token';
  r = await agent({ ...fa, token: 'stale-token' } as FakeAppliance, undefined, 'commission');
  t.equal(r.code, 1);
  t.match(r.out, /AGENT_APPLIANCE_REFUSED: GET \/boot\/agent\/v1\/task: 401 BOOT_TOKEN_INVALID/);
  t.equal(fa.requests.length, count + 1, 'no retries and no done with a refused token');
  t.notOk(r.out.includes('stale-token'));
  fa.token = 'tok-3f9a8c1d5e7b2a64';

  fa.task = { mode: 'commission', bmcUser: { create: true } };
  writeFileSync(path.join(dir, 'env-hold'), `METALBOX_URL='${fa.url}'\nMETALBOX_TOKEN='${fa.token}'\nMETALBOX_HOLD='1'\n`);
  const powered: string[] = [];
  let out = '';
  const code = await runAgent(['--env-file', path.join(dir, 'env-hold')], {}, { out: (s) => { out += s; }, err: (s) => { out += s; } }, { ...si, power: async (a) => { powered.push(a); } });
  t.equal(code, 0, out);
  t.same(powered, [], 'metalbox.hold=1 keeps the machine up');
  t.match(out, /no in-band BMC \(\/dev\/ipmi0\) to create a user on/);
});

