// The DHCP work queue: REQUEST-class messages before DISCOVERs, bounded queues that shed the oldest, and
// DISCOVERs that waited too long dropped when they come up; plus the codec's peekMessageType it relies on.
import t from 'tap';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { decodeDhcp, peekMessageType } from '../../src/protocols/dhcp/index.ts';
import { isUrgent, WorkQueue, type ShedReason } from '../../src/services/dhcp/work-queue.ts';
import { ROOT } from '../helpers/process.ts';

t.test('urgent items come first, in arrival order; DISCOVERs keep theirs', async (t) => {
  const shed: ShedReason[] = [];
  const q = new WorkQueue<string>((r) => shed.push(r));
  q.push('d1', false, 0);
  q.push('r1', true, 0);
  q.push('d2', false, 0);
  q.push('r2', true, 0);
  t.equal(q.length, 4);
  const order: string[] = [];
  for (let x = q.next(0); x !== undefined; x = q.next(0)) order.push(x);
  t.same(order, ['r1', 'r2', 'd1', 'd2']);
  t.same(shed, []);
  t.equal(q.length, 0);
});

t.test('full queues shed their oldest entry and say which', async (t) => {
  const shed: ShedReason[] = [];
  const q = new WorkQueue<number>((r) => shed.push(r), { maxUrgent: 3, maxDiscovers: 2, maxDiscoverAgeMs: 1000 });
  for (let i = 0; i < 5; i++) q.push(i, true, 0);
  for (let i = 10; i < 15; i++) q.push(i, false, 0);
  t.same(shed, ['overload-request', 'overload-request', 'overload-discover', 'overload-discover', 'overload-discover']);
  const got: number[] = [];
  for (let x = q.next(0); x !== undefined; x = q.next(0)) got.push(x);
  t.same(got, [2, 3, 4, 13, 14], 'the newest of each kind remain');
});

t.test('a DISCOVER older than the limit is dropped when it comes up; urgent ones never age out', async (t) => {
  const shed: ShedReason[] = [];
  const q = new WorkQueue<string>((r) => shed.push(r), { maxUrgent: 10, maxDiscovers: 10, maxDiscoverAgeMs: 2000 });
  q.push('old', false, 0);
  q.push('request', true, 0);
  q.push('fresh', false, 1500);
  t.equal(q.next(3000), 'request');
  t.equal(q.next(3000), 'fresh', 'the stale one is skipped');
  t.same(shed, ['overload-stale']);
  t.equal(q.next(3000), undefined);
});

t.test('many items through the queue: nothing lost, order kept, memory compacted', async (t) => {
  const q = new WorkQueue<number>(() => t.fail('nothing should be shed'), { maxUrgent: 1e6, maxDiscovers: 1e6, maxDiscoverAgeMs: 1e9 });
  let expect = 0;
  let wrong = 0;
  for (let round = 0; round < 20; round++) {
    for (let i = 0; i < 5000; i++) q.push(round * 5000 + i, false, 0);
    for (let i = 0; i < 5000; i++) if (q.next(0) !== expect++) wrong++;
  }
  t.equal(wrong, 0, 'every item came out in order');
  t.equal(q.length, 0);
  t.equal(expect, 100_000);
});

t.test('isUrgent: REQUEST, RELEASE, DECLINE, INFORM', async (t) => {
  t.same([1, 2, 3, 4, 5, 6, 7, 8, undefined].map(isUrgent), [false, false, true, true, false, false, true, true, false]);
});

t.test('peekMessageType agrees with the full decode on every golden capture', async (t) => {
  const dir = join(ROOT, 'test/golden/dhcp');
  const files = readdirSync(dir).filter((f) => f.endsWith('.bin'));
  t.ok(files.length >= 8);
  for (const f of files) {
    const buf = readFileSync(join(dir, f));
    t.equal(peekMessageType(buf), decodeDhcp(buf).options.messageType, f);
  }
});

t.test('peekMessageType on hostile input: undefined, never a throw or a read past the end', async (t) => {
  const golden = readFileSync(join(ROOT, 'test/golden/dhcp/udhcpc-discover.bin'));
  t.equal(peekMessageType(golden), 1);
  t.equal(peekMessageType(Buffer.alloc(0)), undefined, 'empty');
  t.equal(peekMessageType(golden.subarray(0, 239)), undefined, 'shorter than header + cookie');
  const noCookie = Buffer.from(golden);
  noCookie.writeUInt32BE(0, 236);
  t.equal(peekMessageType(noCookie), undefined, 'no cookie');
  const header = golden.subarray(0, 240);
  const withOptions = (...bytes: number[]) => Buffer.concat([header, Buffer.from(bytes)]);
  t.equal(peekMessageType(withOptions(53, 1, 3, 255)), 3);
  t.equal(peekMessageType(withOptions(0, 0, 53, 1, 8)), 8, 'after pads, no End');
  t.equal(peekMessageType(withOptions(53, 1)), undefined, 'value missing');
  t.equal(peekMessageType(withOptions(53, 2, 1, 1, 255)), undefined, 'wrong length');
  t.equal(peekMessageType(withOptions(12, 200, 53, 1, 1)), undefined, 'an option running past the end hides the rest');
  t.equal(peekMessageType(withOptions(255, 53, 1, 1)), undefined, 'after End');
  t.equal(peekMessageType(withOptions(12)), undefined, 'a code without its length');
  // Random tails: only ever a number 0-255 or undefined.
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  for (let i = 0; i < 20_000; i++) {
    const tail = Buffer.from(Array.from({ length: Math.floor(rand() * 40) }, () => Math.floor(rand() * 256)));
    const v = peekMessageType(Buffer.concat([header, tail]));
    if (v !== undefined && !(Number.isInteger(v) && v >= 0 && v <= 255)) t.fail(`bad result ${v}`);
  }
});
