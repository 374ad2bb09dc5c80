// The store on a full disk (src/store/level-store.ts, "Disk space"): under the reserve it refuses writes before
// LevelDB sees them and takes them again when there is room; after a real ENOSPC in LevelDB's log it reopens
// LevelDB by itself once there is room. Real file systems: a tmpfs of a few MiB mounted for the test (root).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMetalboxError } from '../../src/lib/errors.ts';
import { openLevelStore, type StoreHealth } from '../../src/store/level-store.ts';
import type { LeaseRecord, MachineRecord } from '../../src/store/types.ts';

const now = '2026-11-23T00:00:00.000Z';
const machine = (i: number): MachineRecord =>
  ({ id: `m${i}`, hostname: `node-${i}`, macs: [`02:00:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`], state: 'new', tags: [], createdAt: now, updatedAt: now });
const lease = (i: number): LeaseRecord =>
  ({ ip: `10.0.${(i >> 8) & 255}.${i & 255}`, mac: machine(i).macs[0]!, subnet: 's', expiresAt: now, state: 'bound' });

/** A tmpfs of `mib` MiB, unmounted and removed at teardown. */
async function smallDisk(tt: { teardown(fn: () => unknown): void }, mib: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'metalbox-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${mib}m,mode=0700`, 'tmpfs', dir]);
  tt.teardown(async () => {
    execFileSync('umount', ['-l', dir]);
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Fills the file system holding `dir` with `file` until ENOSPC, leaving about `leave` bytes free. */
function fill(file: string, dir: string, leave = 0): void {
  const free = Number(execFileSync('stat', ['-f', '-c', '%a*%S', dir], { encoding: 'utf8' }).trim().split('*').map(Number).reduce((a, b) => a * b));
  const size = Math.max(0, free - leave);
  try {
    execFileSync('fallocate', ['-l', String(size), file]);
  } catch {
    execFileSync('dd', ['if=/dev/zero', `of=${file}`, 'bs=64k', `count=${Math.ceil(size / 65536)}`], { stdio: 'ignore' });
  }
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (err) {
    return isMetalboxError(err) ? err.code : (err as Error).message;
  }
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

t.test('under the reserve: writes refused with STORE_DISK_FULL before LevelDB, reads go on, writes resume with room', async (t) => {
  const disk = await smallDisk(t, 24);
  const health: StoreHealth[] = [];
  const store = await openLevelStore(join(disk, 'state'), { reserveBytes: 4 << 20, spaceCheckMs: 100, onHealth: (h) => health.push(h) });
  t.teardown(() => store.close());
  for (let i = 0; i < 20; i++) await store.write([{ type: 'put', collection: 'machines', key: `m${i}`, value: machine(i) }, { type: 'put', collection: 'leases', key: lease(i).ip, value: lease(i) }]);
  t.equal(store.health().writable, true);

  fill(join(disk, 'filler'), disk, 1 << 20); // 1 MiB left: under the 4 MiB reserve
  await store.measureSpace();
  t.match(store.health(), { writable: false, reason: 'disk-full', reserveBytes: 4 << 20 });
  t.ok(store.health().freeBytes < 4 << 20, 'free space reported under the reserve');
  const refused = await store.machines.put('m100', machine(100)).then(() => undefined, (err: unknown) => err);
  t.ok(isMetalboxError(refused) && refused.code === 'STORE_DISK_FULL', 'STORE_DISK_FULL');
  t.match((refused as Error).message, /under the 4\.0 MiB reserve: writes are refused until there is room/);
  t.equal(await code(store.leases.put(lease(100).ip, lease(100))), 'STORE_DISK_FULL', 'a lease is refused too');
  t.equal(store.health().refused, 2);
  t.same((await store.machines.get('m7'))?.hostname, 'node-7', 'reads from disk go on');
  t.same((await store.leases.get(lease(7).ip))?.mac, lease(7).mac, 'resident reads go on');
  t.equal(await store.machines.get('m100'), undefined, 'the refused write left nothing');
  t.match(health.at(-1), { writable: false, reason: 'disk-full' }, 'onHealth told');

  await rm(join(disk, 'filler'));
  await until('writes are accepted again (next space check)', () => store.health().writable);
  t.match(health.at(-1), { writable: true }, 'onHealth told of the room');
  await store.machines.put('m100', machine(100));
  t.equal((await store.machines.get('m100'))?.hostname, 'node-100');
  t.equal(store.health().recoveries, 0, 'LevelDB never failed: nothing to reopen');
});

t.test('a real ENOSPC in LevelDB: writes refused until there is room, then LevelDB reopened; nothing acknowledged is lost', async (t) => {
  const disk = await smallDisk(t, 8);
  const stateDir = join(disk, 'state');
  const health: StoreHealth[] = [];
  // No reserve: the write meets ENOSPC in LevelDB itself (a disk filled faster than measured).
  const store = await openLevelStore(stateDir, { reserveBytes: 0, recoverMs: 100, onHealth: (h) => health.push(h) });
  let closed = false;
  t.teardown(() => (closed ? undefined : store.close()));
  const acked: number[] = [];
  for (let i = 0; i < 50; i++) {
    await store.write([{ type: 'put', collection: 'machines', key: `m${i}`, value: machine(i) }, { type: 'put', collection: 'leases', key: lease(i).ip, value: lease(i) }]);
    acked.push(i);
  }
  fill(join(disk, 'filler'), disk);
  await writeFile(join(disk, 'filler2'), Buffer.alloc(64 << 10)).catch(() => undefined); // any block left
  const big = { ...machine(500), notes: 'x'.repeat(256 << 10) } as MachineRecord;
  t.equal(await code(store.machines.put('m500', big)), 'STORE_WRITE_FAILED', 'the write that met ENOSPC fails');
  t.match(store.health(), { writable: false, reason: 'write-failed' });
  t.match(store.health().error, /No space left on device/);
  t.equal(await code(store.machines.put('m501', machine(501))), 'STORE_WRITE_FAILED', 'later writes are refused (LevelDB refuses them until reopened)');
  t.equal((await store.machines.get('m3'))?.hostname, 'node-3', 'reads go on');
  t.equal((await store.leases.getBy('mac', lease(4).mac))?.ip, lease(4).ip, 'resident index reads go on');

  await new Promise((r) => setTimeout(r, 400));
  t.equal(store.health().recoveries, 0, 'no reopen while the disk is still full');
  await rm(join(disk, 'filler'));
  await rm(join(disk, 'filler2'), { force: true });
  await until('the store has reopened LevelDB', () => store.health().writable, 15_000);
  t.equal(store.health().recoveries, 1);
  t.match(health.at(-1), { writable: true, recoveries: 1 });
  // Reads while reopening and after: acknowledged records all there, resident maps reloaded.
  for (const i of acked) {
    t.equal((await store.machines.get(`m${i}`))?.hostname, `node-${i}`);
    t.equal((await store.leases.getBy('mac', lease(i).mac))?.ip, lease(i).ip);
  }
  t.equal(await code(store.machines.put('m501', machine(501))), 'resolved', 'writes work again without a restart');
  t.equal(await code(store.leases.put(lease(501).ip, lease(501))), 'resolved');
  await store.close();
  closed = true;

  const again = await openLevelStore(stateDir, { reserveBytes: 0 });
  t.teardown(() => again.close());
  for (const i of [...acked, 501]) t.equal((await again.machines.get(`m${i}`))?.hostname, `node-${i}`, `m${i} durable`);
  t.equal((await again.leases.get(lease(501).ip))?.mac, lease(501).mac);
});
