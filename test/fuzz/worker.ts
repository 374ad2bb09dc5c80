// A fuzzing campaign in a worker thread (runner.ts starts it): builds the target named in workerData, runs the
// engine, and reports progress, findings and the result to the parent. Before each input it bumps an exec
// counter and copies the input into shared memory, so that the parent's watchdog can end a worker stuck in one
// input (a hang: synchronous code cannot be interrupted from inside) and still say which input it was.
import { parentPort, workerData } from 'node:worker_threads';
import { Fuzzer, type FuzzTarget } from './engine.ts';
import type { WorkerMessage, WorkerSpec } from './runner.ts';

const spec = workerData as WorkerSpec;
const post = (m: WorkerMessage): void => parentPort!.postMessage(m);

const mod = (await import(spec.module)) as Record<string, (() => Promise<FuzzTarget>) | undefined>;
const factory = mod[spec.factory ?? 'createTarget'];
if (factory === undefined) throw new Error(`fuzz: ${spec.module} has no export ${spec.factory ?? 'createTarget'}`);
const target = await factory();

const heart = new Int32Array(spec.heartbeat, 0, 2);
const bytes = new Uint8Array(spec.heartbeat, 8);
post({ type: 'ready', counters: target.counters.length, seeds: target.seeds.length });

const fuzzer = new Fuzzer(target, {
  ...spec.options,
  beforeExec: (input) => {
    const n = Math.min(input.length, bytes.length);
    bytes.set(input.subarray(0, n));
    heart[1] = n;
    Atomics.add(heart, 0, 1);
  },
  onProgress: (stats) => post({ type: 'progress', stats }),
  onFinding: (finding) => post({ type: 'finding', finding }),
});
const result = fuzzer.run();
if (spec.uncovered) result.uncovered = fuzzer.uncovered();
if (spec.merge) result.inputs = Fuzzer.merge(target, result.inputs);
post({ type: 'done', result });
