// A child process for the store's crash and lock tests.
//
//   node --import tsx test/helpers/store-writer.ts DIR [--start N] [--concurrency C]
//     opens the store in DIR and writes forever, C writes in flight, write i = crashOps(i); prints `ack i`
//     on stdout only after write i resolved (stdout to a pipe is synchronous on Linux, so a printed ack was
//     handed to the kernel before the next line of JS ran).
//   node --import tsx test/helpers/store-writer.ts DIR --hold
//     opens the store, prints `ready`, and keeps it open until stdin ends.
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { isMetalboxError } from '../../src/lib/errors.ts';
import { openLevelStore } from '../../src/store/level-store.ts';
import type { LeaseRecord, MachineRecord, Store, WriteOp } from '../../src/store/types.ts';

const hex2 = (n: number): string => (n & 255).toString(16).padStart(2, '0');
export const crashMac = (i: number, nic = 0): string => `02:${hex2(nic)}:00:${hex2(i >> 16)}:${hex2(i >> 8)}:${hex2(i)}`;
export const crashIp = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
export const crashUuid = (i: number): string => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
/** Write `i` renames machine `i - RENAME_LAG` (and gives it a second MAC) when `i % RENAME_EVERY === 0`. */
export const RENAME_LAG = 8;
export const RENAME_EVERY = 4;
export const renamedBy = (i: number): number | undefined => (i >= RENAME_LAG && i % RENAME_EVERY === 0 ? i - RENAME_LAG : undefined);

export function crashMachine(i: number, renamed: boolean): MachineRecord {
  const at = '2024-11-23T00:00:00.000Z';
  return {
    id: `m${i}`, hostname: renamed ? `node-${i}-renamed` : `node-${i}`, uuid: crashUuid(i),
    macs: renamed ? [crashMac(i), crashMac(i, 1)] : [crashMac(i)], state: 'new', tags: [], createdAt: at, updatedAt: at,
  };
}

export function crashLease(i: number): LeaseRecord {
  return { ip: crashIp(i), mac: crashMac(i), subnet: '10.0.0.0/8', expiresAt: '2024-11-24T00:00:00.000Z', state: 'bound' };
}

export const crashEventKey = (i: number): string => `e${String(i).padStart(10, '0')}`;

/** Write `i`: a new machine, its lease, an event, and for some `i` an update of an earlier machine's indexed fields. */
export function crashOps(i: number): WriteOp[] {
  const ops: WriteOp[] = [
    { type: 'put', collection: 'machines', key: `m${i}`, value: crashMachine(i, false) },
    { type: 'put', collection: 'leases', key: crashIp(i), value: crashLease(i) },
    { type: 'put', collection: 'events', key: crashEventKey(i), value: { id: crashEventKey(i), at: '2024-11-23T00:00:00.000Z', type: 'machine.created', actor: 'crash-test', subject: `m${i}` } },
  ];
  const target = renamedBy(i);
  if (target !== undefined) ops.push({ type: 'put', collection: 'machines', key: `m${target}`, value: crashMachine(target, true) });
  return ops;
}

/**
 * Checks a store written by crashOps(0), crashOps(1), ...: the writes present must be exactly 0..last (they
 * become durable in call order), each complete (machine, lease, event, the rename it carries) with every index
 * entry right. Returns `last` (-1 for none) and what is wrong.
 */
export async function checkCrashState(store: Store): Promise<{ last: number; problems: string[] }> {
  const problems: string[] = [];
  let last = -1;
  for await (const [key] of store.machines.entries()) last = Math.max(last, Number(key.slice(1)));
  const expect = async (what: string, got: Promise<unknown>, want: unknown): Promise<void> => {
    const value = await got;
    if (JSON.stringify(value) !== JSON.stringify(want)) problems.push(`${what}: got ${JSON.stringify(value)}, want ${JSON.stringify(want)}`);
  };
  const idOf = async (p: Promise<{ id: string } | undefined>): Promise<string | undefined> => (await p)?.id;
  for (let i = 0; i <= last && problems.length < 20; i++) {
    const renamed = renamedBy(i + RENAME_LAG) === i && i + RENAME_LAG <= last;
    const m = crashMachine(i, renamed);
    await expect(`machine m${i}`, store.machines.get(m.id), m);
    await expect(`m${i} by hostname`, idOf(store.machines.getBy('hostname', m.hostname)), m.id);
    await expect(`m${i} by uuid`, idOf(store.machines.getBy('uuid', m.uuid!)), m.id);
    for (const mac of m.macs) await expect(`m${i} by mac ${mac}`, idOf(store.machines.getBy('mac', mac)), m.id);
    if (renamed) await expect(`m${i} by its old hostname`, store.machines.getBy('hostname', `node-${i}`), undefined);
    await expect(`lease ${crashIp(i)}`, store.leases.get(crashIp(i)), crashLease(i));
    await expect(`lease by mac ${crashMac(i)}`, store.leases.getBy('mac', crashMac(i)).then((l) => l?.ip), crashIp(i));
    await expect(`event ${i}`, store.events.get(crashEventKey(i)).then((e) => e?.subject), `m${i}`);
  }
  for (const c of ['machines', 'leases', 'events'] as const) await expect(`${c} count`, store.collection(c).count(), last + 1);
  return { last, problems };
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { start: { type: 'string', default: '0' }, concurrency: { type: 'string', default: '8' }, hold: { type: 'boolean', default: false } },
  });
  const [dir] = positionals;
  if (!dir) throw new TypeError('usage: store-writer.ts DIR [--start N] [--concurrency C] [--hold]');
  let store;
  try {
    store = await openLevelStore(dir);
  } catch (err) {
    // The parent reads this line to check the error a second opener gets.
    process.stdout.write(`error ${JSON.stringify({ code: isMetalboxError(err) ? err.code : undefined, message: (err as Error).message })}\n`);
    return;
  }
  if (values.hold) {
    process.stdout.write('ready\n');
    process.stdin.resume();
    await new Promise((resolve) => process.stdin.on('end', resolve));
    await store.close();
    return;
  }
  let next = Number(values.start);
  await Promise.all(Array.from({ length: Number(values.concurrency) }, async () => {
    for (;;) {
      const i = next++;
      await store.write(crashOps(i));
      process.stdout.write(`ack ${i}\n`);
    }
  }));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
