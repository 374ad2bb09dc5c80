// Acknowledged durable writes per second of the LevelDB store: group commit against one sync per write, at
// the same concurrency, back to back in one run; then one sync per write with a single writer. Each write is a
// machine and its lease (records plus five index entries), as the DHCP path will do. Not a timed test.
//
//   node --import tsx test/bench/store.ts [--seconds N] [--concurrency C]
import { mkdtemp, rm, statfs } from 'node:fs/promises';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openLevelStore } from '../../src/store/level-store.ts';
import type { WriteOp } from '../../src/store/types.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '3' }, concurrency: { type: 'string', default: '32' } } });
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);
if (!(seconds > 0) || !Number.isInteger(concurrency) || concurrency < 1) throw new TypeError('usage: store.ts [--seconds N] [--concurrency C]');

const TMPFS_MAGIC = 0x01021994;

/** A scratch dir on a real disk: fsync on tmpfs costs nothing and would make the comparison meaningless. */
async function scratchRoot(): Promise<string> {
  if ((await statfs(tmpdir())).type !== TMPFS_MAGIC) return tmpdir();
  const dir = new URL('../../.cache/bench', import.meta.url).pathname;
  mkdirSync(dir, { recursive: true });
  return dir;
}

function ops(i: number): WriteOp[] {
  const hex = (i % 0xffffff).toString(16).padStart(6, '0');
  const mac = `02:00:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
  const now = new Date().toISOString();
  const ip = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  return [
    { type: 'put', collection: 'machines', key: `m${i}`, value: { id: `m${i}`, hostname: `node-${i}`, uuid: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, macs: [mac], state: 'new', tags: [], createdAt: now, updatedAt: now } },
    { type: 'put', collection: 'leases', key: ip, value: { ip, mac, subnet: '10.0.0.0/8', expiresAt: now, state: 'bound' } },
  ];
}

interface Result { label: string; writes: number; syncs: number; maxGroup: number; perSecond: number; p50: number; p99: number }

async function run(label: string, root: string, groupCommit: boolean, writers: number): Promise<Result> {
  const dir = await mkdtemp(join(root, 'metalbox-bench-'));
  const store = await openLevelStore(dir, { groupCommit });
  const latencies: number[] = [];
  let next = 0;
  const end = performance.now() + seconds * 1000;
  const start = performance.now();
  await Promise.all(Array.from({ length: writers }, async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      await store.write(ops(next++));
      latencies.push(performance.now() - t0);
    }
  }));
  const elapsed = (performance.now() - start) / 1000;
  const stats = store.stats();
  await store.close();
  await rm(dir, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  const pct = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0;
  return { label, writes: stats.writes, syncs: stats.syncs, maxGroup: stats.maxGroup, perSecond: stats.writes / elapsed, p50: pct(0.5), p99: pct(0.99) };
}

const root = await scratchRoot();
console.log(`store bench: ${seconds}s per run, scratch dir under ${root} (filesystem type 0x${(await statfs(root)).type.toString(16)})`);
const results = [
  await run(`group commit, concurrency ${concurrency}`, root, true, concurrency),
  await run(`sync per write, concurrency ${concurrency}`, root, false, concurrency),
  await run('sync per write, concurrency 1', root, false, 1),
];
const pad = (s: string | number, n: number): string => String(s).padStart(n);
console.log(`${'mode'.padEnd(36)}${pad('acked writes/s', 16)}${pad('writes', 9)}${pad('syncs', 9)}${pad('writes/sync', 13)}${pad('maxGroup', 10)}${pad('p50 ms', 9)}${pad('p99 ms', 9)}`);
for (const r of results) {
  console.log(`${r.label.padEnd(36)}${pad(r.perSecond.toFixed(0), 16)}${pad(r.writes, 9)}${pad(r.syncs, 9)}${pad((r.writes / r.syncs).toFixed(1), 13)}${pad(r.maxGroup, 10)}${pad(r.p50.toFixed(2), 9)}${pad(r.p99.toFixed(2), 9)}`);
}
console.log(`group commit / sync per write at concurrency ${concurrency}: ${(results[0]!.perSecond / results[1]!.perSecond).toFixed(2)}x`);
