// The fuzzer's command line:
//
//   npx tsx test/fuzz/run.ts <target|all> [--seconds N] [--seed S] [--runs N] [--slow-ms MS] [--hang-ms MS]
//                            [--merge] [--out DIR] [--uncovered]
//
// Runs each target (one at a time, each in a worker) and prints libFuzzer-style progress lines, then a summary:
// execs/s, corpus size, coverage (statements, branch arms, functions of the instrumented bundle) and findings.
// --merge rewrites test/fuzz/corpus/<target>/ with the smallest subset of the final corpus that keeps its
// coverage; --out DIR writes each finding's (minimised) input there; --uncovered lists the statements never reached. Exit status 1 when anything was found.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runInWorker, summary } from './runner.ts';
import { CORPUS_ROOT } from './targets/common.ts';
import { TARGET_NAMES, TARGETS, type TargetName } from './targets/index.ts';

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      seconds: { type: 'string', default: '30' },
      seed: { type: 'string', default: '1' },
      runs: { type: 'string' },
      'slow-ms': { type: 'string', default: '100' },
      'hang-ms': { type: 'string', default: '5000' },
      merge: { type: 'boolean', default: false },
      uncovered: { type: 'boolean', default: false },
      out: { type: 'string' },
    },
  });
  const which = positionals[0] ?? 'all';
  if (which !== 'all' && !(which in TARGETS)) throw new Error(`unknown target ${which}; one of: all, ${TARGET_NAMES.join(', ')}`);
  const names: TargetName[] = which === 'all' ? TARGET_NAMES : [which as TargetName];
  const seconds = Number(values.seconds);
  const seed = Number(values.seed);
  let found = 0;
  for (const name of names) {
    const result = await runInWorker({
      module: TARGETS[name],
      seed,
      seconds,
      ...(values.runs === undefined ? {} : { runs: Number(values.runs) }),
      slowMs: Number(values['slow-ms']),
      hangMs: Number(values['hang-ms']),
      merge: values.merge,
      uncovered: values.uncovered,
    }, {
      onReady: (i) => console.log(`${name}: ready in ${(i.ms / 1000).toFixed(1)} s: ${i.counters} counters, ${i.seeds} seeds, seed ${seed}`),
      onProgress: (s) => console.log(`${name}: #${s.execs} cov: ${s.covered} ft: ${s.features} corp: ${s.corpus} exec/s: ${s.execsPerSecond} findings: ${s.findings}`),
      onFinding: (f) => {
        console.log(`${name}: FINDING ${f.kind}: ${f.signature}\n  message: ${f.message}\n  input: ${f.input}\n  minimized: ${f.minimized}${f.stack ? `\n  ${f.stack.replace(/\n/g, '\n  ')}` : ''}`);
        if (values.out !== undefined) {
          mkdirSync(values.out, { recursive: true });
          const id = createHash('sha1').update(f.minimized).digest('hex').slice(0, 12);
          writeFileSync(path.join(values.out, `${name}-${f.kind}-${id}.bin`), Buffer.from(f.minimized, 'hex'));
        }
      },
    });
    console.log(summary(result));
    if (result.uncovered !== undefined) console.log(`${name}: statements never reached:\n  ${result.uncovered.join('\n  ')}`);
    found += result.findings;
    if (values.merge && result.findings === 0) {
      const dir = path.join(CORPUS_ROOT, name);
      mkdirSync(dir, { recursive: true });
      for (const f of readdirSync(dir)) rmSync(path.join(dir, f));
      let bytes = 0;
      for (const input of result.inputs) {
        writeFileSync(path.join(dir, `${createHash('sha1').update(input).digest('hex').slice(0, 16)}.bin`), input);
        bytes += input.length;
      }
      console.log(`${name}: corpus written: ${result.inputs.length} inputs, ${bytes} bytes in ${path.relative(process.cwd(), dir)}`);
    }
  }
  if (found > 0) process.exitCode = 1;
}

await main();
