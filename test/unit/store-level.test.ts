// What only the LevelDB store has: files, a lock, damage detection, schema migration, backup and restore.
// The behaviour both stores share is in store-contract.test.ts.
import t from 'tap';
import { ClassicLevel } from 'classic-level';
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { isMetalboxError, type ErrorCode } from '../../src/lib/errors.ts';
import { backupStore, readBackup, restoreBackup } from '../../src/store/backup.ts';
import { createEventKeys, eventKey } from '../../src/lib/event-key.ts';
import { checkLog, crc32c } from '../../src/store/leveldb-check.ts';
import { openLevelStore, PID_FILE, type LevelStoreOptions } from '../../src/store/level-store.ts';
import type { MachineRecord } from '../../src/store/types.ts';
import { checkCrashState, crashOps } from '../helpers/store-writer.ts';

interface Test { teardown(fn: () => unknown): void }

const repo = new URL('../..', import.meta.url).pathname;
const writer = join(repo, 'test/helpers/store-writer.ts');
const now = '2024-11-23T00:00:00.000Z';
const machine = (i: number, over: Partial<MachineRecord> = {}): MachineRecord =>
  ({ id: `m${i}`, hostname: `node-${i}`, macs: [`02:00:00:00:00:${(i & 255).toString(16).padStart(2, '0')}`], state: 'new', tags: [], createdAt: now, updatedAt: now, ...over });

async function scratch(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'metalbox-level-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A store with `n` machines, one write each, closed again. */
async function seed(dir: string, n = 50, options?: LevelStoreOptions): Promise<void> {
  const s = await openLevelStore(dir, options);
  for (let i = 0; i < n; i++) await s.machines.put(`m${i}`, machine(i));
  await s.close();
}

async function openError(dir: string, options?: LevelStoreOptions): Promise<Error & { code?: ErrorCode }> {
  try {
    const s = await openLevelStore(dir, options);
    await s.close();
  } catch (err) {
    return err as Error & { code?: ErrorCode };
  }
  throw new Error('the store opened');
}

/** Raw access to the LevelDB under a closed store. */
async function raw<T>(dir: string, fn: (db: ClassicLevel<string, string>) => Promise<T>): Promise<T> {
  const db = new ClassicLevel<string, string>(join(dir, 'db'), { createIfMissing: false });
  await db.open();
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

/** The store's table files, after a reopen has turned its log into one. */
async function tables(dir: string): Promise<string[]> {
  const s = await openLevelStore(dir);
  await s.close();
  const found = await dbFiles(dir, /\.ldb$/);
  if (found.length === 0) throw new Error('no table file to damage');
  return found;
}

const dbFiles = async (dir: string, re: RegExp): Promise<string[]> => (await readdir(join(dir, 'db'))).filter((f) => re.test(f)).map((f) => join(dir, 'db', f));

/** Runs the store-writer helper in hold mode; resolves once it holds the store (or says why not). */
function holdInChild(dir: string, prefix: string[] = []): Promise<{ line: string; pid: number; release(): Promise<void> }> {
  const [cmd, ...args] = [...prefix, process.execPath, '--import', 'tsx', writer, dir, '--hold'];
  const child = spawn(cmd!, args, { cwd: repo, stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
      if (out.includes('\n')) resolve({ line: out.trim(), pid: child.pid!, release: async () => { child.stdin.end(); await exited; } });
    });
    child.on('error', reject);
    void exited.then(() => reject(new Error(`child exited before answering: ${out}`)));
  });
}

t.test('records and indexes persist across reopen; the state dir is private; the pid file names the holder', async (t) => {
  const dir = join(await scratch(t), 'state');
  const s = await openLevelStore(dir);
  t.equal((await stat(dir)).mode & 0o777, 0o700);
  t.equal((await readFile(join(dir, PID_FILE), 'utf8')).trim(), String(process.pid));
  await s.write([
    { type: 'put', collection: 'machines', key: 'm1', value: machine(1, { uuid: 'u-1' }) },
    { type: 'put', collection: 'leases', key: '10.0.0.1', value: { ip: '10.0.0.1', mac: machine(1).macs[0]!, subnet: 's', expiresAt: now, state: 'bound' } },
    { type: 'put', collection: 'settings', key: 'site.name', value: 'rack' },
  ]);
  await s.close();
  await t.rejects(stat(join(dir, PID_FILE)), { code: 'ENOENT' }, 'pid file removed on close');

  const again = await openLevelStore(dir);
  t.teardown(() => again.close());
  t.equal((await again.machines.getBy('uuid', 'U-1'))?.id, 'm1');
  t.equal((await again.machines.getBy('hostname', 'node-1'))?.id, 'm1');
  t.equal((await again.leases.getBy('mac', machine(1).macs[0]!))?.ip, '10.0.0.1');
  t.equal(await again.settings.get('site.name'), 'rack');
  t.same(again.stats(), { syncs: 0, writes: 0, maxGroup: 0 });
});

t.test('resident collections (leases) plan from memory loaded at open, and agree with a store that reads the disk', async (t) => {
  const base = await scratch(t);
  const lease = (ip: string, mac: string) => ({ ip, mac, subnet: 's', expiresAt: now, state: 'bound' as const });
  const macA = machine(1).macs[0]!;
  const macB = machine(2).macs[0]!;
  for (const resident of [['leases'] as const, [] as const]) {
    const dir = join(base, resident.length ? 'resident' : 'disk');
    const s = await openLevelStore(dir, { resident });
    await s.leases.put('10.0.0.1', lease('10.0.0.1', macA));
    await s.leases.put('10.0.0.2', lease('10.0.0.2', macB));
    await s.close();
    // Planning after a reopen must know the durable records: the resident copy was loaded from disk.
    const again = await openLevelStore(dir, { resident });
    await again.write([{ type: 'put', collection: 'leases', key: '10.0.0.1', value: lease('10.0.0.1', macB) }]);
    t.equal(await again.leases.getBy('mac', macA), undefined, `${dir}: the entry of the MAC that lost its lease is gone`);
    t.equal((await again.leases.getBy('mac', macB))?.ip, '10.0.0.1', `${dir}: latest writer owns the entry`);
    // Many concurrent writes in one group, then a delete: the resident copy follows what became durable.
    await Promise.all(Array.from({ length: 200 }, (_, i) => again.leases.put(`10.0.1.${i}`, lease(`10.0.1.${i}`, macA))));
    await again.leases.del('10.0.1.199');
    t.equal((await again.leases.getBy('mac', macA))?.ip, undefined, `${dir}: the MAC's latest lease was deleted`);
    await again.leases.put('10.0.1.5', lease('10.0.1.5', macA));
    t.equal((await again.leases.getBy('mac', macA))?.ip, '10.0.1.5');
    t.equal(await again.leases.count(), 201);
    await again.close();
  }
  // The raw contents of both stores are the same.
  const dump = async (dir: string) => {
    const s = await openLevelStore(dir);
    const snap = s.rawSnapshot();
    const out: string[] = [];
    for await (const [k, v] of snap.entries()) if (!Buffer.from(k).toString().startsWith('!events!')) out.push(`${Buffer.from(k)}=${Buffer.from(v)}`);
    await snap.close();
    await s.close();
    return out;
  };
  t.same(await dump(join(base, 'resident')), await dump(join(base, 'disk')));
});

t.test('resident reads: get and getBy answer from memory with the durable view, as private copies; closed refuses', async (t) => {
  const s = await openLevelStore(await scratch(t), { resident: ['leases'] });
  const lease = { ip: '10.0.0.7', mac: machine(7).macs[0]!, subnet: 's', expiresAt: now, state: 'bound' as const };
  t.equal(await s.leases.get('10.0.0.7'), undefined);
  const pending = s.leases.put('10.0.0.7', lease);
  await pending;
  const got = await s.leases.get('10.0.0.7');
  t.same(got, lease);
  (got as { mac: string }).mac = 'changed';
  t.same(await s.leases.get('10.0.0.7'), lease, 'changing what get returned changes nothing stored');
  t.same(await s.leases.getBy('mac', lease.mac.toUpperCase()), lease);
  await s.leases.put('10.0.0.7', { ...lease, mac: machine(8).macs[0]! });
  t.equal(await s.leases.getBy('mac', lease.mac), undefined, 'the index follows the record');
  await s.close();
  await t.rejects(s.leases.get('10.0.0.7'), { code: 'STORE_CLOSED' });
  await t.rejects(s.leases.getBy('mac', lease.mac), { code: 'STORE_CLOSED' });
});

t.test('groupCommit: false syncs every write on its own', async (t) => {
  const s = await openLevelStore(await scratch(t), { groupCommit: false });
  t.teardown(() => s.close());
  await Promise.all(Array.from({ length: 50 }, (_, i) => s.machines.put(`m${i}`, machine(i))));
  t.same(s.stats(), { syncs: 50, writes: 50, maxGroup: 1 });
});

t.test('a second open of the state dir fails at once with STATE_DIR_LOCKED', async (t) => {
  const dir = await scratch(t);
  const s = await openLevelStore(dir);
  const t0 = performance.now();
  const err = await openError(dir);
  t.ok(performance.now() - t0 < 1000, 'fails at once');
  t.equal(err.code, 'STATE_DIR_LOCKED');
  t.match(err.message, dir);
  t.match(err.message, `(pid ${process.pid})`);
  t.equal((await readFile(join(dir, PID_FILE), 'utf8')).trim(), String(process.pid), 'the failed open left the pid file alone');
  await s.close();

  // Across processes, naming the holder's pid.
  const holder = await holdInChild(dir);
  t.equal(holder.line, 'ready');
  const other = await openError(dir);
  t.equal(other.code, 'STATE_DIR_LOCKED');
  t.match(other.message, `state directory ${dir} is in use by another metalbox (pid ${holder.pid})`);
  t.equal((isMetalboxError(other) && other.details?.pid), holder.pid);
  await holder.release();
  const after = await openLevelStore(dir);
  await after.close();
});

t.test('a state dir that cannot be used is STATE_DIR_UNUSABLE, naming the path and the reason', async (t) => {
  const base = await scratch(t);
  await chmod(base, 0o755);
  const dir = join(base, 'state');
  await mkdir(dir, { mode: 0o700 });
  await seed(dir, 1);
  await chmod(dir, 0o000);
  t.teardown(() => chmod(dir, 0o700));
  let code: unknown;
  let message: string;
  if (process.getuid?.() === 0) {
    // root ignores permissions: open as nobody.
    // `env -i`: tap's process tracking puts NODE_OPTIONS back into a child's environment, and nobody cannot
    // write tap's files.
    const child = await holdInChild(dir, ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'env', '-i', `PATH=${process.env.PATH}`]);
    await child.release();
    t.match(child.line, /^error /);
    ({ code, message } = JSON.parse(child.line.slice('error '.length)) as { code: unknown; message: string });
  } else {
    const err = await openError(dir);
    ({ code, message } = err);
  }
  t.equal(code, 'STATE_DIR_UNUSABLE');
  t.match(message, `state directory ${dir} is unusable: permission denied (EACCES)`);

  const file = join(base, 'a-file');
  await writeFile(file, 'x');
  const notDir = await openError(join(file, 'state'));
  t.equal(notDir.code, 'STATE_DIR_UNUSABLE');
  t.match(notDir.message, file);
});

t.test('damaged store files are STORE_CORRUPT, pointing at metalbox restore', async (t) => {
  const cases: [string, (dir: string) => Promise<void>][] = [
    ['CURRENT overwritten', async (dir) => writeFile(join(dir, 'db', 'CURRENT'), 'garbage')],
    ['CURRENT missing', async (dir) => rm(join(dir, 'db', 'CURRENT'))],
    ['MANIFEST overwritten', async (dir) => { for (const f of await dbFiles(dir, /^MANIFEST-/)) await writeFile(f, Buffer.alloc(300, 0x41)); }],
    ['write-ahead log overwritten', async (dir) => { for (const f of await dbFiles(dir, /\.log$/)) await writeFile(f, Buffer.alloc(5000, 0x41)); }],
    ['write-ahead log flipped mid-way', async (dir) => {
      const [f] = await dbFiles(dir, /\.log$/);
      const buf = await readFile(f!);
      buf[Math.floor(buf.length / 3)]! ^= 0x10;
      await writeFile(f!, buf);
    }],
    ['table file overwritten', async (dir) => { for (const f of await tables(dir)) await writeFile(f, Buffer.alloc(4000, 0x41)); }],
    ['table file truncated', async (dir) => { for (const f of await tables(dir)) await truncate(f, (await stat(f)).size - 10); }],
    ['table file missing', async (dir) => { for (const f of await tables(dir)) await rm(f); }],
  ];
  for (const [name, damage] of cases) {
    const dir = await scratch(t);
    await seed(dir);
    await damage(dir);
    const err = await openError(dir);
    t.equal(err.code, 'STORE_CORRUPT', name);
    t.match(err.message, `the store in ${join(dir, 'db')} is damaged`, `${name}: names the db`);
    t.match(err.message, '`metalbox restore FILE`', `${name}: suggests restore`);
    t.notOk((await readdir(dir)).includes(PID_FILE), `${name}: no pid file left behind`);
  }
});

t.test('a damaged block inside a table: found by verify at open, else by the read that meets it', async (t) => {
  const dir = await scratch(t);
  const s = await openLevelStore(dir);
  for (let i = 0; i < 200; i++) await s.write(crashOps(i));
  await s.close();
  for (const f of await tables(dir)) {
    const buf = await readFile(f);
    buf.fill(0x41, buf.length >> 2, (buf.length >> 2) + 100);
    await writeFile(f, buf);
  }
  const err = await openError(dir, { verify: true });
  t.equal(err.code, 'STORE_CORRUPT');
  t.match(err.message, /corrupted compressed block/);
  const lazy = await openLevelStore(dir);
  t.teardown(() => lazy.close());
  await t.rejects(backupStore(lazy, join(dir, 'x.mbk')), { code: 'STORE_CORRUPT' }, 'a backup reads everything: it fails rather than save damage');
  await t.rejects(stat(join(dir, 'x.mbk.tmp')), { code: 'ENOENT' }, 'and leaves no temporary file');
});

t.test('a torn write at the end of the log (power cut) is not damage', async (t) => {
  const dir = await scratch(t);
  await seed(dir, 20);
  const [log] = await dbFiles(dir, /\.log$/);
  const size = (await stat(log!)).size;
  await truncate(log!, size - 40); // cut into the last record
  const s = await openLevelStore(dir);
  t.teardown(() => s.close());
  t.equal(await s.machines.count(), 19, 'the last, torn write is gone; the others are there');
  t.equal((await s.machines.getBy('hostname', 'node-18'))?.id, 'm18');
});

t.test('log checker: crc32c and the torn-tail rules', async (t) => {
  t.equal(crc32c(Buffer.from('123456789')), 0xe3069283, 'the standard check value');
  const record = (type: number, payload: Buffer): Buffer => {
    const header = Buffer.alloc(7);
    const crc = crc32c(Buffer.concat([Buffer.from([type]), payload]));
    header.writeUInt32LE((((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0, 0);
    header.writeUInt16LE(payload.length, 4);
    header[6] = type;
    return Buffer.concat([header, payload]);
  };
  const a = record(1, Buffer.from('first batch'));
  const b = record(1, Buffer.from('second batch'));
  t.equal(checkLog(Buffer.concat([a, b]), true), undefined, 'sound');
  t.equal(checkLog(Buffer.concat([a, b.subarray(0, 10)]), true), undefined, 'torn tail in the newest log');
  t.match(checkLog(Buffer.concat([a, b.subarray(0, 10)]), false), /runs past the end/, 'torn tail in an older log is damage');
  const flippedTail = Buffer.concat([a, b]);
  flippedTail[flippedTail.length - 1] = 0;
  t.equal(checkLog(flippedTail, true), undefined, 'zeroed bytes in the last record: a torn tail');
  const flippedMiddle = Buffer.concat([a, b]);
  flippedMiddle[9] = 0;
  t.match(checkLog(flippedMiddle, true), /checksum mismatch at offset 0/, 'a later sound batch proves damage');
  t.match(checkLog(Buffer.alloc(100, 0x41), true), /unknown record type 65/);
  t.equal(checkLog(Buffer.alloc(100), true), undefined, 'zero fill');
});

t.test('migration at open: v1 -> v2 rewrites records and rebuilds indexes; STORE_TOO_NEW after', async (t) => {
  const dir = await scratch(t);
  // v1 machines kept their boot MAC in `bootMac`; v2 folds it into `macs` (an indexed field).
  const v1 = await openLevelStore(dir);
  await v1.machines.put('m1', machine(1, { macs: [], bootMac: '02:AA:00:00:00:01' }));
  await v1.machines.put('m2', machine(2, { macs: ['02:aa:00:00:00:09'], bootMac: '02:aa:00:00:00:02' }));
  await v1.settings.put('keep', 'me');
  await v1.close();

  const toV2 = {
    schemaVersions: { machines: 2 },
    migrations: {
      machines: {
        1: (d: unknown) => {
          const { bootMac, ...rest } = d as MachineRecord & { bootMac: string };
          return { ...rest, macs: [bootMac.toLowerCase(), ...rest.macs] };
        },
      },
    },
  };
  const v2 = await openLevelStore(dir, toV2);
  t.same((await v2.machines.get('m1'))?.macs, ['02:aa:00:00:00:01']);
  t.notOk('bootMac' in (await v2.machines.get('m1'))!);
  t.equal((await v2.machines.getBy('mac', '02:aa:00:00:00:01'))?.id, 'm1', 'the index knows the migrated field');
  t.equal((await v2.machines.getBy('mac', '02:aa:00:00:00:09'))?.id, 'm2');
  t.equal((await v2.machines.getBy('hostname', 'node-2'))?.id, 'm2');
  await v2.machines.put('m3', machine(3));
  await v2.close();

  const stored = await raw(dir, async (db) => ({
    versions: await Promise.all(['!machines!m1', '!machines!m3', '!settings!keep'].map(async (k) => (JSON.parse((await db.get(k))!) as { v: number }).v)),
    schema: await db.get('!meta!schema.machines'),
    reindex: await db.get('!meta!reindex.machines'),
  }));
  t.same(stored, { versions: [2, 2, 1], schema: '2', reindex: undefined }, 'envelopes and meta record the new version');

  const reopened = await openLevelStore(dir, toV2); // nothing left to migrate
  await reopened.close();
  const tooNew = await openError(dir);
  t.equal(tooNew.code, 'STORE_TOO_NEW', 'a metalbox that knows only v1 refuses a v2 store');
  t.match(tooNew.message, /machines at schema version 2, this metalbox knows 1/);
  await t.rejects(openLevelStore(dir, { schemaVersions: { machines: 3 }, migrations: toV2.migrations }), /no migration step for machines from schema version 2/);
  const s = await openLevelStore(dir, toV2);
  await s.close();
});

t.test('STORE_TOO_NEW for a newer store format', async (t) => {
  const dir = await scratch(t);
  await seed(dir, 1);
  await raw(dir, (db) => db.put('!meta!format', '99'));
  const err = await openError(dir);
  t.equal(err.code, 'STORE_TOO_NEW');
  t.match(err.message, /store format 99/);
});

t.test('an interrupted index rebuild is redone at the next open', async (t) => {
  const dir = await scratch(t);
  await seed(dir, 3);
  await raw(dir, async (db) => {
    await db.del('!idx.machines.hostname!node-1');
    await db.put('!meta!reindex.machines', 'true');
  });
  const s = await openLevelStore(dir);
  t.teardown(() => s.close());
  t.equal((await s.machines.getBy('hostname', 'node-1'))?.id, 'm1');
});

t.test('backup and restore round trip', async (t) => {
  const dir = await scratch(t);
  const s = await openLevelStore(join(dir, 'a'));
  for (let i = 0; i < 300; i++) await s.write(crashOps(i));
  await s.settings.put('site.name', 'rack-1');
  const file = join(dir, 'backup.mbk');
  const info = await backupStore(s, file);
  t.equal((await stat(file)).mode & 0o777, 0o600, 'backups hold password hashes: owner only');
  t.match(info, { file, format: 1, storeFormat: 1, records: Number });
  t.same(await readBackup(file), info);
  const original = s.rawSnapshot();
  const before: string[] = [];
  for await (const [k, v] of original.entries()) before.push(`${Buffer.from(k).toString()}=${Buffer.from(v).toString()}`);
  await original.close();
  await s.close();
  t.equal(info.records, before.length);

  t.same(await restoreBackup(file, join(dir, 'b')), info);
  const r = await openLevelStore(join(dir, 'b'));
  t.teardown(() => r.close());
  const after: string[] = [];
  const snap = r.rawSnapshot();
  for await (const [k, v] of snap.entries()) after.push(`${Buffer.from(k).toString()}=${Buffer.from(v).toString()}`);
  await snap.close();
  t.same(after, before, 'byte for byte');
  const state = await checkCrashState(r);
  t.same(state, { last: 299, problems: [] });
  t.equal(await r.settings.get('site.name'), 'rack-1');
});

t.test('a backup taken while writes are in flight is consistent and restorable', async (t) => {
  const dir = await scratch(t);
  const s = await openLevelStore(join(dir, 'live'));
  let next = 0;
  let stop = false;
  const acked = new Set<number>();
  const writers = Array.from({ length: 8 }, async () => {
    while (!stop) {
      const i = next++;
      await s.write(crashOps(i));
      acked.add(i);
    }
  });
  while (acked.size < 200) await new Promise((resolve) => setTimeout(resolve, 5));
  const ackedBefore = Math.max(...acked);
  const file = join(dir, 'live.mbk');
  const info = await backupStore(s, file);
  const ackedDuring = acked.size;
  while (acked.size < ackedDuring + 200) await new Promise((resolve) => setTimeout(resolve, 5));
  stop = true;
  await Promise.all(writers);
  await s.close();
  t.ok(ackedDuring > 200 || info.records > 0, `writes went on: ${acked.size} acknowledged in all`);

  await restoreBackup(file, join(dir, 'restored'));
  const r = await openLevelStore(join(dir, 'restored'));
  t.teardown(() => r.close());
  const state = await checkCrashState(r);
  t.same(state.problems, [], `the backup holds exactly writes 0..${state.last}, each complete with its index entries`);
  t.ok(state.last >= ackedBefore, 'everything acknowledged before the backup started is in it');
  t.ok(state.last < next - 1, 'and not what came after it');
});

t.test('damaged backups are BACKUP_INVALID and restore nothing', async (t) => {
  const dir = await scratch(t);
  const s = await openLevelStore(join(dir, 'src'));
  for (let i = 0; i < 100; i++) await s.write(crashOps(i));
  const file = join(dir, 'good.mbk');
  await backupStore(s, file);
  await s.close();
  const good = await readFile(file);
  const content = gunzipSync(good);

  const flip = (buf: Buffer, at: number): Buffer => { const b = Buffer.from(buf); b[at]! ^= 0x01; return b; };
  const digest = (body: Buffer): Buffer => Buffer.concat([body, createHash('sha256').update(body).digest()]);
  const header = (h: object): Buffer => { const j = Buffer.from(JSON.stringify(h)); const n = Buffer.alloc(4); n.writeUInt32BE(j.length); return Buffer.concat([Buffer.from('METALBOX-BACKUP\n'), n, j]); };
  const cases: [string, Buffer | undefined, RegExp][] = [
    ['truncated to half', good.subarray(0, good.length >> 1), /gzip|truncated/],
    ['last byte missing', good.subarray(0, good.length - 1), /gzip|truncated/],
    ['empty', Buffer.alloc(0), /truncated|gzip/],
    // Inflate may turn the flip into garbage that fails a bound or the digest before gzip's own CRC is reached.
    ['a bit flipped in the compressed data', flip(good, good.length >> 1), /gzip|checksum|bad (key|value) length|truncated/],
    ['not gzip', Buffer.from('hello, this is not a backup'), /gzip/],
    ['intact gzip, a bit flipped in a value', gzipSync(flip(content, content.length - 100)), /checksum does not match/],
    ['intact gzip, cut before the digest', gzipSync(content.subarray(0, content.length - 32)), /truncated|checksum/],
    ['intact gzip, data after the digest', gzipSync(Buffer.concat([content, Buffer.from('x')])), /data after the checksum/],
    ['wrong magic', gzipSync(Buffer.concat([Buffer.from('NOTMETALBOX-XXX\n'), content.subarray(16)])), /does not start with METALBOX-BACKUP/],
    ['unknown format', gzipSync(digest(header({ format: 2, storeFormat: 1, createdAt: now, records: 0 }))), /unknown backup format 2/],
    ['hostile key length', gzipSync(digest(Buffer.concat([header({ format: 1, storeFormat: 1, createdAt: now, records: 1 }), Buffer.from([0xff, 0xff, 0xff, 0xff])]))), /bad key length/],
    ['missing file', undefined, /cannot be read/],
  ];
  for (const [name, bytes, reason] of cases) {
    const bad = join(dir, `${name.replaceAll(' ', '-')}.mbk`);
    if (bytes) await writeFile(bad, bytes);
    const target = join(dir, `target-${name.replaceAll(' ', '-')}`);
    const err = await restoreBackup(bad, target).then(() => undefined, (e: unknown) => e as Error & { code?: string });
    t.equal(err?.code, 'BACKUP_INVALID', name);
    t.match(err?.message, reason, `${name}: ${err?.message}`);
    await t.rejects(stat(target), { code: 'ENOENT' }, `${name}: the target was not touched`);
  }

  const tooNew = join(dir, 'too-new.mbk');
  await writeFile(tooNew, gzipSync(digest(header({ format: 1, storeFormat: 99, createdAt: now, records: 0 }))));
  await t.rejects(restoreBackup(tooNew, join(dir, 'target-too-new')), { code: 'STORE_TOO_NEW' });
});

t.test('restore only loads into an empty state dir', async (t) => {
  const dir = await scratch(t);
  await seed(join(dir, 'src'), 5);
  const src = await openLevelStore(join(dir, 'src'));
  const file = join(dir, 'b.mbk');
  await backupStore(src, file);
  await src.close();

  await seed(join(dir, 'busy'), 1);
  const err = await restoreBackup(file, join(dir, 'busy')).then(() => undefined, (e: unknown) => e as Error & { code?: string });
  t.equal(err?.code, 'RESTORE_TARGET_NOT_EMPTY');
  t.match(err?.message, join(dir, 'busy', 'db'));
  const busy = await openLevelStore(join(dir, 'busy'));
  t.equal(await busy.machines.count(), 1, 'the target was left as it was');
  await t.rejects(restoreBackup(file, join(dir, 'busy')), { code: 'STATE_DIR_LOCKED' }, 'a running store keeps restore out');
  await busy.close();

  // A store that was opened but never written to holds only format markers: that counts as empty.
  await seed(join(dir, 'fresh'), 0);
  await restoreBackup(file, join(dir, 'fresh'));
  const fresh = await openLevelStore(join(dir, 'fresh'));
  t.teardown(() => fresh.close());
  t.equal(await fresh.machines.count(), 5);
});

t.test('a store left by an interrupted restore refuses to open', async (t) => {
  const dir = await scratch(t);
  await seed(dir, 2);
  await raw(dir, (db) => db.put('!meta!restoreIncomplete', 'true'));
  const err = await openError(dir);
  t.equal(err.code, 'STORE_CORRUPT');
  t.match(err.message, /a restore into it did not finish/);
});

t.test('event keys are time-ordered and unique', async (t) => {
  t.equal(eventKey(new Date(now), 7), '2024-11-23T00:00:00.000Z-000007');
  t.throws(() => eventKey(new Date(now), -1), RangeError);
  const next = createEventKeys();
  const at = new Date(now);
  const keys = [next(at), next(at), next(new Date(at.getTime() - 5000)), next(new Date(at.getTime() + 1))];
  t.same(keys, ['2024-11-23T00:00:00.000Z-000000', '2024-11-23T00:00:00.000Z-000001', '2024-11-23T00:00:00.000Z-000002', '2024-11-23T00:00:00.001Z-000000']);
  const resumed = createEventKeys(keys[3]);
  t.ok(resumed(at) > keys[3]!, 'seeded with the newest stored key, a restarted process with a slow clock keeps order');
  t.throws(() => createEventKeys('nonsense'), TypeError);
});

t.test('a backup that cannot be written is BACKUP_WRITE_FAILED and leaves no partial file', async (t) => {
  const dir = await scratch(t);
  await seed(dir, 5);
  const store = await openLevelStore(dir);
  t.teardown(() => store.close());
  const target = join(dir, 'no-such-dir', 'x.backup');
  await t.rejects(backupStore(store, target), { code: 'BACKUP_WRITE_FAILED', message: /no-such-dir.*ENOENT/ });
  await t.rejects(stat(`${target}.tmp`), { code: 'ENOENT' });
});
