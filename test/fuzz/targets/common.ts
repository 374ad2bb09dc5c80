// What the codec targets share: their seed inputs from disk, the rule for which errors a decoder may throw,
// and the error that marks a broken invariant.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { inspect, isDeepStrictEqual } from 'node:util';
import { ROOT, type Instrumented } from '../coverage.ts';
import type { FuzzTarget } from '../engine.ts';

/** A broken invariant: the target throws it and the engine reports it as a crash. */
export class InvariantError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvariantError';
  }
}

/** The codec error class as the instrumented bundle has it (each bundle has its own copy of src/lib/errors.ts). */
export type ErrorClass = abstract new (...args: never[]) => Error & { code: string; details: Readonly<Record<string, unknown>> | undefined };

/**
 * The only thing a decoder may throw for bad input: the codec's MetalboxError with one of its codes and an
 * offset inside the input. Anything else is rethrown (the engine reports it).
 */
export function expectDecodeError(err: unknown, errorClass: ErrorClass, codes: RegExp, inputLength: number, what: string): void {
  if (!(err instanceof errorClass)) throw err;
  if (!codes.test(err.code)) throw new InvariantError(`${what} threw ${err.code}, not a ${codes.source} code: ${err.message}`);
  const offset = err.details?.offset;
  if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0 || offset > inputLength) {
    throw new InvariantError(`${what} threw ${err.code} with offset ${String(offset)} outside the ${inputLength}-byte input`);
  }
}

/**
 * `decode()`'s result, or undefined when it refused the input the allowed way (see expectDecodeError); anything
 * else it throws is a finding.
 */
export function decodeOrRefuse<T>(decode: () => T, errorClass: ErrorClass, codes: RegExp, inputLength: number, what: string): T | undefined {
  try {
    return decode();
  } catch (err) {
    expectDecodeError(err, errorClass, codes, inputLength, what);
    return undefined;
  }
}

/** What a codec target gives beside its name and instrumented bundle. */
export interface CodecTargetParts {
  /** The target's own seeds (hostile-table rows, hand-made packets). */
  seeds: Buffer[];
  /** false: the target makes its seeds of test/golden/<name>/*.bin itself (they are not inputs as they are). */
  golden?: boolean;
  dictionary: Buffer[];
  maxLen: number;
  run(input: Buffer): void;
}

/** A codec's FuzzTarget: its counters and layout from the bundle; its seeds, then the golden captures and the corpus. */
export function codecTarget(name: string, inst: Instrumented<unknown>, parts: CodecTargetParts): FuzzTarget {
  return {
    name,
    counters: inst.counters,
    layout: inst,
    seeds: [...(parts.golden === false ? [] : golden(name)), ...parts.seeds, ...corpus(name)],
    dictionary: parts.dictionary,
    maxLen: parts.maxLen,
    run: parts.run,
  };
}

/** Throws InvariantError unless the two values are deeply equal (Buffers by content). */
export function expectEqual(actual: unknown, expected: unknown, what: string): void {
  if (isDeepStrictEqual(actual, expected)) return;
  const show = (v: unknown) => inspect(v, { depth: 6, maxArrayLength: 20, maxStringLength: 120, breakLength: Infinity });
  throw new InvariantError(`${what}: ${show(actual)} !== ${show(expected)}`);
}

function filesIn(dir: string, ext?: string): Buffer[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => ext === undefined || n.endsWith(ext)).sort().map((n) => readFileSync(path.join(dir, n)));
}

/** The real-client captures of test/golden/<protocol>/*.bin. */
export function golden(protocol: string): Buffer[] {
  return filesIn(path.join(ROOT, 'test', 'golden', protocol), '.bin');
}

export const CORPUS_ROOT = path.join(ROOT, 'test', 'fuzz', 'corpus');

/** The checked-in corpus of a target (test/fuzz/corpus/<target>/). */
export function corpus(target: string): Buffer[] {
  return filesIn(path.join(CORPUS_ROOT, target));
}

/** Dictionary words from text and byte arrays. */
export function words(...items: (string | number[])[]): Buffer[] {
  return items.map((w) => (typeof w === 'string' ? Buffer.from(w, 'latin1') : Buffer.from(w)));
}
