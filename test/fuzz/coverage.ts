// Coverage for the fuzzer: the code under test is bundled into one ES module with esbuild, instrumented with
// istanbul-lib-instrument (a counter per statement, per branch arm — if/else, switch cases, ?:, && || ??,
// default values — and per function), loaded from a data: URL, and its counters are then moved into one flat
// Uint32Array that the engine reads and clears after every input. The instrumented code does
// `cov().s[i]++` / `cov().b[i][arm]++` / `cov().f[i]++` on the object it registered, so replacing those
// objects' fields with views of one typed array keeps every increment and makes reading them a tight loop.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { createInstrumenter } from 'istanbul-lib-instrument';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface Instrumented<T> {
  /** The bundle's exports. */
  module: T;
  /** Every counter: statements, then branch arms, then functions. */
  counters: Uint32Array;
  statements: number;
  branchArms: number;
  functions: number;
  /** Size of the bundle before instrumentation. */
  bundleBytes: number;
  /** The counters after the module's own initialisation (top-level statements run once, at import). */
  initial: Uint32Array;
  /** Where statement counter `i` is: the source file (from esbuild's markers) and the bundle's text of its line. */
  describeStatement(i: number): string;
}

interface IstanbulFileCoverage {
  statementMap: Record<string, { start: { line: number; column: number } }>;
  s: Record<string, number>;
  b: Record<string, number[]>;
  f: Record<string, number>;
}

let loads = 0;

/**
 * Bundles `entry` (TypeScript source; relative imports resolve from the repository root), instruments the
 * bundle and imports it. Everything the entry pulls in from src/ is instrumented; node: built-ins stay
 * outside the bundle.
 */
export async function loadInstrumented<T>(name: string, entry: string): Promise<Instrumented<T>> {
  const result = await build({
    stdin: { contents: entry, resolveDir: ROOT, loader: 'ts', sourcefile: `fuzz-${name}-entry.ts` },
    absWorkingDir: ROOT,
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    logLevel: 'silent',
  });
  const code = result.outputFiles[0]!.text;
  const variable = `__metalboxFuzz_${name.replace(/\W/g, '_')}_${loads++}`;
  const file = path.join(ROOT, `fuzz-${name}.bundle.mjs`);
  const instrumented = createInstrumenter({ coverageVariable: variable, esModules: true, compact: true, produceSourceMap: false }).instrumentSync(code, file);
  const module = (await import(`data:text/javascript;base64,${Buffer.from(instrumented).toString('base64')}`)) as T;

  const registry = (globalThis as Record<string, unknown>)[variable] as Record<string, IstanbulFileCoverage> | undefined;
  const data = registry?.[file];
  if (data === undefined) throw new Error(`fuzz: no coverage registered for ${name}`);
  const registryCounts = { s: { ...data.s }, b: Object.fromEntries(Object.entries(data.b).map(([key, v]) => [key, [...v]])), f: { ...data.f } };
  const statementKeys = Object.keys(data.s);
  const branchKeys = Object.keys(data.b);
  const functionKeys = Object.keys(data.f);
  const branchArms = branchKeys.reduce((n, k) => n + data.b[k]!.length, 0);
  const counters = new Uint32Array(statementKeys.length + branchArms + functionKeys.length);
  // Indices in istanbul's maps are 0..n-1 in order; the typed views keep those indices.
  data.s = counters.subarray(0, statementKeys.length) as unknown as Record<string, number>;
  let at = statementKeys.length;
  const b: Record<string, number[]> = {};
  for (const k of branchKeys) {
    const n = data.b[k]!.length;
    b[k] = counters.subarray(at, at + n) as unknown as number[];
    at += n;
  }
  data.b = b;
  data.f = counters.subarray(at, at + functionKeys.length) as unknown as Record<string, number>;
  // Module initialisation ran before the swap: the istanbul counts of that run are the initial coverage.
  const initial = new Uint32Array(counters.length);
  let k = 0;
  for (const key of statementKeys) initial[k++] = (registryCounts.s[key] ?? 0);
  for (const key of branchKeys) for (const n of registryCounts.b[key]!) initial[k++] = n;
  for (const key of functionKeys) initial[k++] = (registryCounts.f[key] ?? 0);

  // esbuild starts each module's code with a "// path/of/file.ts" line.
  const lines = code.split('\n');
  const fileOf: string[] = [];
  let current = '(bundle)';
  for (const line of lines) {
    const marker = /^\/\/ ((?:src|test)\/\S+\.ts)$/.exec(line);
    if (marker) current = marker[1]!;
    fileOf.push(current);
  }
  const statementMap = data.statementMap;
  const describeStatement = (i: number): string => {
    const line = statementMap[String(i)]?.start.line ?? 0;
    return `${fileOf[line - 1] ?? '?'}: ${(lines[line - 1] ?? '').trim().slice(0, 140)}`;
  };
  return { module, counters, statements: statementKeys.length, branchArms, functions: functionKeys.length, bundleBytes: code.length, initial, describeStatement };
}

/** An import line for a file of the repository, by path from its root (for `loadInstrumented` entries). */
export function reexport(names: string, file: string): string {
  return `export ${names} from ${JSON.stringify(`./${file}`)};\n`;
}
