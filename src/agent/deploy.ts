// Deploy: stream the image onto the disk (download -> sha256 -> decompress -> disk), grow the last partition,
// write the cloud-init seed. The order is chosen so that a failure at any step leaves a disk firmware will not
// boot: the first MiB stays zero until the checksum has been verified.

import { randomUUID } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { openBlockDevice, type BlockDevice } from './block-device.ts';
import type { ApplianceClient } from './client.ts';
import { createDecompressor } from './decompress.ts';
import { DiskWriter, HEAD_BYTES } from './disk-writer.ts';
import { listDisks, resolveDisk } from './disks.ts';
import { AgentError, describe } from './errors.ts';
import { ImageSource } from './image-source.ts';
import { growLastPartition, readPartitionTable, type GrowResult } from './partition-table.ts';
import { writeSeed, type RootCandidate } from './rootfs.ts';
import type { Run } from './run.ts';
import { buildSeed } from './seed.ts';
import type { Roots } from './sysfs.ts';
import type { DeployTask } from './task.ts';

export interface DeployDeps {
  client: ApplianceClient;
  roots: Roots;
  run: Run;
  /** A disk path that overrides the task's choice (`metalbox agent --disk`). */
  diskOverride?: string;
  mountDir: string;
  loadModules: boolean;
  log: (line: string) => void;
  /** Wait between tries of a lost image download (default 1 s). */
  resumeDelayMs?: number;
}

export interface DeployReport {
  disk: string;
  imageBytes: number;
  compressedBytes: number;
  seconds: number;
  grow: GrowResult;
  root: RootCandidate;
}

const MIB = 1 << 20;

/** The disk to write: the override, else what the task names (path, serial or 'auto'). */
export async function targetDisk(spec: string, deps: Pick<DeployDeps, 'diskOverride' | 'roots'>): Promise<string> {
  if (deps.diskOverride !== undefined) return deps.diskOverride;
  return (await resolveDisk(spec, await listDisks(deps.roots))).path;
}

export async function deploy(task: DeployTask, deps: DeployDeps): Promise<DeployReport> {
  const dev = await openBlockDevice(await targetDisk(task.disk, deps), deps.roots.sys);
  try {
    return await deployTo(dev, task, deps);
  } finally {
    await dev.close();
  }
}

async function deployTo(dev: BlockDevice, task: DeployTask, deps: DeployDeps): Promise<DeployReport> {
  const { client, log } = deps;
  const url = new URL(task.imageUrl);
  log(`deploying ${url.origin}${url.pathname} (${task.compression}) to ${dev.path} (${mib(dev.size)} MiB)`);
  client.progress({ phase: 'deploy', done: 0, ...(task.size !== undefined ? { total: task.size } : {}), message: `writing the image to ${dev.path}` });
  // Nothing of the old system's tables may survive a deploy that stops halfway.
  await dev.zero(0, HEAD_BYTES);
  await dev.zero(dev.size - MIB, MIB);

  const started = performance.now();
  const source = new ImageSource({
    url: task.imageUrl,
    headers: client.authFor(task.imageUrl),
    ...(task.size !== undefined ? { expectedSize: task.size } : {}),
    ...(deps.resumeDelayMs !== undefined ? { resumeDelayMs: deps.resumeDelayMs } : {}),
    log,
  });
  const decompressor = createDecompressor(task.compression);
  const writer = new DiskWriter(dev);
  let decompressError: unknown;
  decompressor.once('error', (err) => { decompressError = err; });
  let lastLog = 0;
  const report = () => {
    const secs = (performance.now() - started) / 1000;
    const message = `${mib(writer.written)} MiB written (${(writer.written / MIB / Math.max(secs, 0.001)).toFixed(1)} MiB/s)`;
    client.progress({ phase: 'deploy', done: source.received, ...(source.total !== undefined ? { total: source.total } : {}), message });
    if (secs - lastLog >= 10) { lastLog = secs; log(`${message}, ${mib(source.received)}${source.total !== undefined ? ` of ${mib(source.total)}` : ''} MiB downloaded`); }
  };
  const timer = setInterval(report, 1000);
  try {
    await pipeline(source, decompressor, writer);
  } catch (err) {
    if (err instanceof AgentError) throw err;
    if (err === decompressError) throw new AgentError('AGENT_IMAGE_CORRUPT', `the image does not decompress as ${task.compression}: ${describe(err)}`, { cause: err });
    throw new AgentError('AGENT_DISK_IO', `writing the image: ${describe(err)}`, { cause: err });
  } finally {
    clearInterval(timer);
  }
  const digest = source.digest();
  if (digest !== task.sha256) {
    throw new AgentError('AGENT_IMAGE_CHECKSUM_MISMATCH', `the image's sha256 is ${digest}, registered ${task.sha256}; the disk was left unbootable`);
  }
  if (task.size !== undefined && source.received !== task.size) {
    throw new AgentError('AGENT_IMAGE_CHECKSUM_MISMATCH', `received ${source.received} bytes, registered ${task.size}`);
  }
  await writer.commitHead();
  const seconds = (performance.now() - started) / 1000;
  report();
  // The 100% report goes out before the next phase's replaces it.
  await client.settleProgress();
  log(`image written and verified: ${mib(writer.written)} MiB in ${seconds.toFixed(1)} s (${(writer.written / MIB / seconds).toFixed(1)} MiB/s), sha256 ok`);

  const grow = await growLastPartition(dev);
  log(grow.partition !== undefined
    ? `grew ${grow.kind} partition ${grow.partition} to the end of the disk (last sector ${grow.oldLastLba} -> ${grow.newLastLba})`
    : `partition table ${grow.kind}: nothing grown (${grow.skipped})`);
  const table = await readPartitionTable(dev);
  const seed = buildSeed(task, task.instanceId ?? `i-${randomUUID()}`);
  client.progress({ phase: 'seed', message: 'writing the cloud-init seed' });
  const root = await writeSeed(dev, table, seed, { run: deps.run, roots: deps.roots, mountDir: deps.mountDir, loadModules: deps.loadModules, log });
  await dev.sync();
  return { disk: dev.path, imageBytes: writer.written, compressedBytes: source.received, seconds, grow, root };
}

function mib(bytes: number): string {
  return (bytes / MIB).toFixed(bytes < 10 * MIB ? 1 : 0);
}
