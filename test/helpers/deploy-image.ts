// The deployable test image (image/deploy-test/build.sh) for tests: built once per content hash and cached
// under .cache/deploy-test/<key>/ (the builder serialises builders of one key with flock, so tap's parallel
// files build it once), decompressed to a scratch raw disk, and a cloud-init NoCloud seed written into its
// root the way the agent does (mounted by a loop device at the root partition's offset; root only).
import { execFileSync } from 'node:child_process';
import { runBuilder } from './image-builder.ts';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, createReadStream, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { ROOT } from './process.ts';

export const DEPLOY_BUILDER = join(ROOT, 'image/deploy-test/build.sh');

export interface DeployImage {
  key: string;
  /** The compressed disk image (what `metalbox images add ... --rootfs` registers). */
  image: string;
  compression: 'gzip' | 'zstd' | 'xz' | 'none';
  rawBytes: number;
  /** The image's own kernel and initrd. */
  kernel: string;
  initrd: string;
  /** The build's manifest: versions, sizes, sha-256s, seconds per step. */
  manifest: Record<string, string>;
  /** What the builder said on stderr. */
  log: string;
  /** Wall time of this call (a cache hit: about a second). */
  seconds: number;
}

let building: Promise<DeployImage> | undefined;

/** Builds (or finds) the image. A cold build runs debootstrap from Debian's mirror: minutes. */
export function ensureDeployImage(): Promise<DeployImage> {
  building ??= build().catch((err: unknown) => { building = undefined; throw err; });
  return building;
}

async function build(): Promise<DeployImage> {
  const r = await runBuilder(DEPLOY_BUILDER, [], { timeoutMs: 1_200_000, required: ['key', 'image', 'compression', 'kernel', 'initrd'], manifestOf: 'image' });
  const { key, image, compression, kernel, initrd, raw_bytes: rawBytes } = r.out;
  return {
    key: key!, image: image!, compression: compression as DeployImage['compression'], rawBytes: Number(rawBytes), kernel: kernel!, initrd: initrd!,
    manifest: r.manifest, log: r.log, seconds: r.seconds,
  };
}

/** Decompresses the (gzip) image into `dest`, then makes the file `growBytes` larger (a bigger disk for growpart). */
export async function rawDisk(img: DeployImage, dest: string, growBytes = 0): Promise<void> {
  if (img.compression !== 'gzip') throw new Error(`rawDisk: ${img.compression} images are not handled here`);
  await pipeline(createReadStream(img.image), createGunzip(), createWriteStream(dest));
  if (growBytes > 0) execFileSync('truncate', ['-s', `+${growBytes}`, dest]);
}

export interface Partition { node: string; start: number; size: number; type: string; name?: string }

/** The disk's GPT, as sfdisk reads it (sectors of 512 bytes). */
export function partitions(disk: string): Partition[] {
  const table = JSON.parse(execFileSync('sfdisk', ['-J', disk], { encoding: 'utf8' })) as { partitiontable: { partitions: Partition[] } };
  return table.partitiontable.partitions;
}

/**
 * Writes files under /var/lib/cloud/seed/nocloud of the disk's root file system (the partition named
 * "root"), mounting it by a loop device at its offset. Root only.
 */
export function writeNoCloudSeed(disk: string, files: { [K in 'meta-data' | 'user-data' | 'network-config']?: string }): void {
  const root = partitions(disk).find((p) => p.name === 'root');
  if (!root) throw new Error(`${disk}: no partition named root`);
  const mnt = mkdtempSync(join(tmpdir(), 'mbx-seed-'));
  try {
    execFileSync('mount', ['-t', 'ext4', '-o', `loop,offset=${root.start * 512},sizelimit=${root.size * 512}`, disk, mnt]);
    try {
      const dir = join(mnt, 'var/lib/cloud/seed/nocloud');
      mkdirSync(dir, { recursive: true });
      for (const [name, text] of Object.entries(files)) if (text !== undefined) writeFileSync(join(dir, name), text, { mode: 0o600 });
    } finally {
      execFileSync('umount', [mnt]);
    }
  } finally {
    rmSync(mnt, { recursive: true, force: true });
  }
}
