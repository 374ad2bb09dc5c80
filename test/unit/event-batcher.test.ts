// EventBatcher (src/core/event-batcher.ts): boot-timeline events written together, bounded, drained at a stop.
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { EventBatcher } from '../../src/core/event-batcher.ts';
import { EventLog } from '../../src/core/events.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord, Store, WriteOp } from '../../src/store/types.ts';

/** A memory store that counts write calls and can be made to fail them. */
function countingStore(): { store: Store; writes: number[]; fail: { on: boolean } } {
  const inner = createMemoryStore();
  const writes: number[] = [];
  const fail = { on: false };
  const store = Object.create(inner) as Store;
  store.write = async (ops: WriteOp[]) => {
    if (fail.on) throw new Error('disk full');
    writes.push(ops.length);
    return inner.write(ops);
  };
  return { store, writes, fail };
}

async function all(store: Store): Promise<EventRecord[]> {
  const out: EventRecord[] = [];
  for await (const [, e] of store.events.entries()) out.push(e);
  return out;
}

t.test('events added within flushMs are written in one batch, in the order they were added', async (t) => {
  const { store, writes } = countingStore();
  const dropped: number[] = [];
  const b = new EventBatcher({ events: new EventLog(store), flushMs: 50, maxPending: 100, onDropped: (n) => dropped.push(n) });
  for (let i = 0; i < 10; i++) b.add({ type: 'boot.http', actor: 'http', subject: `m${i}` });
  t.equal(b.size, 10);
  t.same(writes, [], 'nothing written at once');
  await sleep(120);
  t.same(writes, [10], 'one write of ten events');
  t.same((await all(store)).map((e) => e.subject), ['m0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8', 'm9']);
  t.equal(b.size, 0);
  t.same(dropped, []);
});

t.test('an event whose subject is still a lookup joins when it settles; a failed lookup is counted', async (t) => {
  const { store } = countingStore();
  const dropped: { n: number; err: unknown }[] = [];
  const b = new EventBatcher({ events: new EventLog(store), flushMs: 10, maxPending: 100, onDropped: (n, err) => dropped.push({ n, err }) });
  b.add(sleep(30).then(() => ({ type: 'boot.tftp', actor: 'tftp', subject: 'late' })));
  b.add(Promise.reject(new Error('lease read failed')));
  b.add({ type: 'boot.tftp', actor: 'tftp', subject: 'now' });
  await b.drain(1000);
  t.same((await all(store)).map((e) => e.subject), ['now', 'late']);
  t.equal(dropped.length, 1);
  t.match(dropped[0], { n: 1, err: { message: 'lease read failed' } });
  t.equal(b.size, 0);
});

t.test('bounded: past maxPending events are dropped and counted, not queued', async (t) => {
  const { store } = countingStore();
  let dropped = 0;
  const b = new EventBatcher({ events: new EventLog(store), flushMs: 1000, maxPending: 5, onDropped: (n) => { dropped += n; } });
  for (let i = 0; i < 8; i++) b.add({ type: 'boot.http', actor: 'http', subject: `m${i}` });
  t.equal(b.size, 5);
  t.equal(dropped, 3);
  await b.drain(1000);
  t.equal((await all(store)).length, 5, 'drain writes what was accepted without waiting for the timer');
});

t.test('a failed write counts its batch with the error, and later events are written again', async (t) => {
  const { store, fail } = countingStore();
  const dropped: { n: number; err: unknown }[] = [];
  const b = new EventBatcher({ events: new EventLog(store), flushMs: 10, maxPending: 100, onDropped: (n, err) => dropped.push({ n, err }) });
  fail.on = true;
  b.add({ type: 'boot.http', actor: 'http', subject: 'a' });
  b.add({ type: 'boot.http', actor: 'http', subject: 'b' });
  await b.flush();
  t.match(dropped, [{ n: 2, err: { message: 'disk full' } }]);
  t.equal(b.size, 0);
  fail.on = false;
  b.add({ type: 'boot.http', actor: 'http', subject: 'c' });
  await b.drain(1000);
  t.same((await all(store)).map((e) => e.subject), ['c']);
});
