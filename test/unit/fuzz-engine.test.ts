// The fuzzer's engine (test/fuzz/engine.ts) is really coverage-guided: on a toy with an eight-byte nested
// magic condition it reaches the innermost branch within an exec budget in which the same mutator without
// coverage feedback (a blind fuzzer) stays at the first bytes. Also: a seed gives the same run, crashes are
// minimised, slow inputs are findings, and the worker's watchdog reports an input that never returns.
import t from 'tap';
import { Fuzzer, Mutator, Rng } from '../fuzz/engine.ts';
import { runInWorker } from '../fuzz/runner.ts';
import { createMagicTarget } from '../fuzz/toy-target.ts';

const TOY = new URL('../fuzz/toy-target.ts', import.meta.url).href;
const BUDGET = 1_000_000;

t.test('coverage guidance reaches a nested magic condition that blind mutation does not', async (t) => {
  const target = await createMagicTarget();
  t.ok(target.counters.length > 10, `the toy is instrumented (${target.counters.length} counters)`);

  const guided = new Fuzzer(target, { seed: 7, runs: BUDGET, maxFindings: 1 }).run();
  t.equal(guided.findings, 1, `guided: the magic input is found (${guided.execs} execs, corpus ${guided.corpus})`);
  t.equal(guided.found[0]?.kind, 'crash');
  t.equal(guided.found[0]?.minimized, Buffer.from('MBX\xf0\x0dzz!', 'latin1').toString('hex'), 'minimised to the eight magic bytes');
  t.ok(guided.corpus >= 9, 'one corpus entry per step of the ladder at least');

  const blind = new Fuzzer(target, { seed: 7, runs: BUDGET, guided: false, maxFindings: 1 }).run();
  t.equal(blind.findings, 0, `blind: not found in ${blind.execs} execs`);
  t.equal(blind.corpus, 1, 'blind: the corpus never grows');
  t.ok(guided.covered > blind.covered, `guided covers more counters (${guided.covered} > ${blind.covered})`);
});

t.test('a seed gives the same run', async (t) => {
  const target = await createMagicTarget();
  const a = new Fuzzer(target, { seed: 3, runs: 20_000 }).run();
  const b = new Fuzzer(target, { seed: 3, runs: 20_000 }).run();
  t.same(a.inputs.map((x) => x.toString('hex')), b.inputs.map((x) => x.toString('hex')), 'same corpus');
  t.equal(a.features, b.features, 'same features');

  const r1 = new Rng(42);
  const r2 = new Rng(42);
  const m1 = new Mutator(r1, [Buffer.from('dict')], 16);
  const m2 = new Mutator(r2, [Buffer.from('dict')], 16);
  const base = Buffer.from('0123456789abcdef');
  for (let i = 0; i < 2000; i++) {
    const x = m1.mutate(base, () => base);
    const y = m2.mutate(base, () => base);
    if (!x.equals(y)) {
      t.fail(`mutation ${i} differs`);
      return;
    }
    if (x.length > 16) {
      t.fail(`mutation ${i} is longer than maxLen`);
      return;
    }
  }
  t.pass('the mutator is deterministic and respects maxLen');
});

t.test('merge keeps the smallest inputs with the same coverage', async (t) => {
  const target = await createMagicTarget();
  const r = new Fuzzer(target, { seed: 5, runs: 30_000 }).run();
  const merged = Fuzzer.merge(target, [...r.inputs, ...r.inputs]);
  t.ok(merged.length > 0 && merged.length <= r.inputs.length, `${merged.length} of ${r.inputs.length} kept`);
  const again = new Fuzzer({ ...target, seeds: merged }, { seed: 1, runs: 0 }).run();
  t.equal(again.covered, r.covered, 'the merged corpus covers what the whole one did');
});

t.test('slow inputs and hangs are findings (in a worker, with its watchdog)', async (t) => {
  const slow = await runInWorker({ module: TOY, factory: 'createSlowTarget', seed: 1, runs: 2000, slowMs: 40, maxFindings: 1 });
  t.equal(slow.found[0]?.kind, 'slow', 'an input over the per-input limit');
  t.equal(slow.found[0]?.input.slice(0, 2), '53', 'the slow input starts with "S"');

  const started = performance.now();
  const hang = await runInWorker({ module: TOY, factory: 'createHangTarget', seed: 1, seconds: 30, hangMs: 1000 });
  t.equal(hang.found.length, 1);
  t.equal(hang.found[0]?.kind, 'hang', 'the watchdog ended the worker');
  t.equal(hang.found[0]?.input, Buffer.from('H!').toString('hex'), 'and names the input');
  t.ok(performance.now() - started < 20_000, 'well before the campaign\'s own budget');
});
