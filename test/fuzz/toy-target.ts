// Targets over test/fuzz/toy.ts for the engine's own test: the same bundling and instrumentation as the codec
// targets, so the test checks the whole path from counters to corpus.
import { loadInstrumented, reexport } from './coverage.ts';
import type { FuzzTarget } from './engine.ts';
import type * as ToyCode from './toy.ts';

type Toy = typeof ToyCode;

async function toy(name: string, seeds: Buffer[], run: (t: Toy, input: Buffer) => void): Promise<FuzzTarget> {
  const inst = await loadInstrumented<Toy>(`toy-${name}`, reexport('{ magic, spin, slow }', 'test/fuzz/toy.ts'));
  return { name, counters: inst.counters, layout: inst, seeds, dictionary: [], maxLen: 64, run: (input) => run(inst.module, input) };
}

export function createMagicTarget(): Promise<FuzzTarget> {
  return toy('magic', [Buffer.from('AAAAAAAA')], (t, input) => void t.magic(input));
}

export function createHangTarget(): Promise<FuzzTarget> {
  return toy('hang', [Buffer.from('a'), Buffer.from('H!')], (t, input) => void t.spin(input));
}

export function createSlowTarget(): Promise<FuzzTarget> {
  return toy('slow', [Buffer.from('a'), Buffer.from('Slow')], (t, input) => void t.slow(input, 80));
}
