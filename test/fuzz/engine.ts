// A small coverage-guided fuzzer in the style of libFuzzer, for the protocol codecs (test/fuzz/README.md).
//
// A target is a function over one input plus the coverage counters of the code it calls (coverage.ts). After
// each input the engine turns every non-zero counter into a feature — the counter's index and its hit count
// bucketed as libFuzzer does (1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+) — and keeps the input in the corpus when
// it shows a feature never seen before. New inputs come from corpus entries through stacked mutations: bit and
// byte flips, interesting values, arithmetic on 1/2/4-byte integers of either byte order, erasing, inserting,
// duplicating and copying ranges, splicing two entries, and the target's dictionary. Everything is driven by
// one seeded PRNG, so a seed gives the same sequence of inputs; only where a time-bounded run stops varies.
//
// A finding is an input for which the target throws (the target decides what is allowed and throws for the
// rest: a foreign error, a broken round trip) or that runs longer than the per-input limit. Crashes are
// minimised (shortest input that still fails the same way) before they are reported. An input that never
// returns cannot be caught here: runner.ts runs campaigns in a worker and reports it as a hang.

export interface CoverageLayout {
  statements: number;
  branchArms: number;
  functions: number;
  /** Counters moved by the code's own initialisation (counted as covered in reports, never as features). */
  initial?: Uint32Array;
  /** Where statement counter `i` is in the source, for reports of what was never reached. */
  describeStatement?: (i: number) => string;
}

export interface FuzzTarget {
  name: string;
  /** The counters `run` moves (cleared by the engine after each input). */
  counters: Uint32Array;
  layout?: CoverageLayout;
  /** Starting inputs (golden captures, hostile-table rows, the checked-in corpus). */
  seeds: Buffer[];
  /** Tokens the mutator inserts or writes over the input: magic numbers, option codes, names. */
  dictionary: Buffer[];
  /** Longest input the mutator makes. */
  maxLen: number;
  /** One input. Returns when the code under test behaved; throws (anything) for a finding. */
  run(input: Buffer): void;
}

export interface FuzzOptions {
  seed: number;
  /** Wall-clock budget of the mutation phase. */
  seconds?: number;
  /** Exec budget of the mutation phase (both may be given; the first reached stops it). */
  runs?: number;
  /** false: a blind mutational fuzzer (the corpus never grows), for comparison. */
  guided?: boolean;
  /** Per-input time limit: an input slower than this (best of three) is a finding. */
  slowMs?: number;
  /** Stop after this many distinct findings. */
  maxFindings?: number;
  /** Execs spent minimising each crash. */
  minimizeRuns?: number;
  /** Called about every `progressMs` with the running stats. */
  onProgress?: (s: FuzzStats) => void;
  progressMs?: number;
  /** Called before each exec with the input (the worker copies it where its watchdog can read it). */
  beforeExec?: (input: Buffer) => void;
  /** Called with each finding as it is made. */
  onFinding?: (f: Finding) => void;
}

export type FindingKind = 'crash' | 'slow' | 'hang';

export interface Finding {
  kind: FindingKind;
  /** What makes two findings the same bug: the error's name and message with numbers blanked. */
  signature: string;
  message: string;
  /** First lines of the stack, when there is one. */
  stack?: string;
  /** As found, hex. */
  input: string;
  /** Minimised (same signature), hex. */
  minimized: string;
  ms?: number;
}

export interface FuzzStats {
  target: string;
  execs: number;
  seconds: number;
  execsPerSecond: number;
  corpus: number;
  /** Distinct (counter, bucket) pairs seen. */
  features: number;
  /** Counters ever non-zero, of all. */
  covered: number;
  counters: number;
  /** Covered counters by kind, when the target gave its layout. */
  coverage?: { statements: [number, number]; branchArms: [number, number]; functions: [number, number] };
  findings: number;
}

export interface CampaignResult extends FuzzStats {
  findings: number;
  found: Finding[];
  /** The corpus at the end (seeds that added coverage, then what the campaign found). */
  inputs: Buffer[];
  /** Statements never reached (file and bundle line), when asked for. */
  uncovered?: string[];
}

// ---- randomness -------------------------------------------------------------------------------------------

/** sfc32: small, fast, 128-bit state, good enough for mutation choices. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.next();
  }

  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** 0..n-1 (n >= 1). */
  below(n: number): number {
    return n <= 1 ? 0 : this.next() % n;
  }

  chance(p: number): boolean {
    return this.next() / 4294967296 < p;
  }
}

// ---- features ---------------------------------------------------------------------------------------------

/** Hit count -> bucket bit, as libFuzzer buckets counters. */
const BUCKET = new Uint8Array(128);
for (let c = 1; c < 128; c++) BUCKET[c] = 1 << (c <= 3 ? c - 1 : c <= 7 ? 3 : c <= 15 ? 4 : c <= 31 ? 5 : 6);
const TOP_BUCKET = 1 << 7;

function bitCount(x: number): number {
  let n = 0;
  for (let v = x; v !== 0; v &= v - 1) n++;
  return n;
}

// ---- mutation ---------------------------------------------------------------------------------------------

const INTERESTING_8 = [0, 1, 2, 0x10, 0x20, 0x3f, 0x40, 0x7e, 0x7f, 0x80, 0x81, 0xc0, 0xfe, 0xff];
const INTERESTING_16 = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x200, 0x3fff, 0x4000, 0x7fff, 0x8000, 0xc000, 0xfffe, 0xffff];
const INTERESTING_32 = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

export class Mutator {
  constructor(private readonly rng: Rng, private readonly dictionary: readonly Buffer[], private readonly maxLen: number) {}

  /** A new input from `base` by 1-5 stacked mutations; `other` picks a corpus entry for splicing. */
  mutate(base: Buffer, other: () => Buffer): Buffer {
    let b: Buffer = Buffer.from(base);
    // 1 to 5 mutations, fewer more often (each extra one may undo what the first found).
    let depth = 1;
    while (depth < 5 && this.rng.chance(0.5)) depth++;
    for (let i = 0; i < depth; i++) b = this.once(b, other);
    return b.length > this.maxLen ? b.subarray(0, this.maxLen) : b;
  }

  private pos(b: Buffer): number {
    return this.rng.below(b.length);
  }

  private once(b: Buffer, other: () => Buffer): Buffer {
    const r = this.rng;
    if (b.length === 0) return Buffer.from([r.below(256)]);
    switch (r.below(16)) {
      case 0: { // flip a bit
        const at = this.pos(b);
        b[at] = b[at]! ^ (1 << r.below(8));
        return b;
      }
      case 1: // a random byte
        b[this.pos(b)] = r.below(256);
        return b;
      case 2: { // an interesting value, 1, 2 or 4 bytes, either order
        const width = [1, 2, 4][r.below(3)]!;
        if (b.length < width) return b;
        const at = r.below(b.length - width + 1);
        if (width === 1) b[at] = INTERESTING_8[r.below(INTERESTING_8.length)]!;
        else if (width === 2) {
          const v = INTERESTING_16[r.below(INTERESTING_16.length)]!;
          if (r.chance(0.5)) b.writeUInt16BE(v, at);
          else b.writeUInt16LE(v, at);
        } else {
          const v = INTERESTING_32[r.below(INTERESTING_32.length)]!;
          if (r.chance(0.5)) b.writeUInt32BE(v, at);
          else b.writeUInt32LE(v, at);
        }
        return b;
      }
      case 3: { // arithmetic on an integer (lengths, counts, offsets)
        const width = [1, 1, 2, 2, 4][r.below(5)]!;
        if (b.length < width) return b;
        const at = r.below(b.length - width + 1);
        const delta = (1 + r.below(35)) * (r.chance(0.5) ? 1 : -1);
        if (width === 1) b[at] = (b[at]! + delta) & 0xff;
        else if (width === 2) {
          const be = r.chance(0.5);
          const v = ((be ? b.readUInt16BE(at) : b.readUInt16LE(at)) + delta) & 0xffff;
          if (be) b.writeUInt16BE(v, at);
          else b.writeUInt16LE(v, at);
        } else {
          const be = r.chance(0.5);
          const v = ((be ? b.readUInt32BE(at) : b.readUInt32LE(at)) + delta) >>> 0;
          if (be) b.writeUInt32BE(v, at);
          else b.writeUInt32LE(v, at);
        }
        return b;
      }
      case 4: { // erase a range
        if (b.length < 2) return b;
        const n = 1 + r.below(Math.min(b.length - 1, r.chance(0.8) ? 8 : b.length));
        const at = r.below(b.length - n + 1);
        return Buffer.concat([b.subarray(0, at), b.subarray(at + n)]);
      }
      case 5: { // insert random bytes, or one byte repeated
        const n = 1 + r.below(r.chance(0.7) ? 8 : 128);
        const ins = r.chance(0.5) ? Buffer.alloc(n, r.below(256)) : Buffer.from(Array.from({ length: n }, () => r.below(256)));
        const at = r.below(b.length + 1);
        return Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
      }
      case 6: { // duplicate a range in place (repeated options, records, labels)
        const from = this.pos(b);
        const n = 1 + r.below(Math.min(b.length - from, 64));
        const slice = Buffer.from(b.subarray(from, from + n));
        const at = r.below(b.length + 1);
        return Buffer.concat([b.subarray(0, at), slice, b.subarray(at)]);
      }
      case 7: { // copy a range over another part of the input
        const from = this.pos(b);
        const n = 1 + r.below(Math.min(b.length - from, 64));
        const to = this.pos(b);
        Buffer.from(b.subarray(from, from + n)).copy(b, to);
        return b;
      }
      case 8: { // splice: a prefix of this input and a suffix of another
        const o = other();
        if (o.length === 0) return b;
        return Buffer.concat([b.subarray(0, r.below(b.length + 1)), o.subarray(r.below(o.length))]);
      }
      case 9: { // insert a piece of another input
        const o = other();
        if (o.length === 0) return b;
        const from = r.below(o.length);
        const piece = o.subarray(from, from + 1 + r.below(Math.min(o.length - from, 64)));
        const at = r.below(b.length + 1);
        return Buffer.concat([b.subarray(0, at), piece, b.subarray(at)]);
      }
      case 10:
      case 11: { // dictionary: insert or overwrite
        if (this.dictionary.length === 0) return b;
        const word = this.dictionary[r.below(this.dictionary.length)]!;
        const at = r.below(b.length + 1);
        if (r.chance(0.5)) return Buffer.concat([b.subarray(0, at), word, b.subarray(at)]);
        if (at + word.length <= b.length) word.copy(b, at);
        return b;
      }
      case 12: // cut the end
        return b.subarray(0, r.below(b.length + 1));
      case 13: { // shuffle a few bytes
        const at = this.pos(b);
        const n = Math.min(b.length - at, 2 + r.below(7));
        for (let i = n - 1; i > 0; i--) {
          const j = r.below(i + 1);
          const t = b[at + i]!;
          b[at + i] = b[at + j]!;
          b[at + j] = t;
        }
        return b;
      }
      case 14: { // set a byte to a neighbour's value +/- 1 (lengths that match what follows)
        const at = this.pos(b);
        b[at] = (b.length - at - 1 + (r.below(3) - 1)) & 0xff;
        return b;
      }
      default: { // the same random byte over a short run
        const at = this.pos(b);
        b.fill(r.below(256), at, Math.min(b.length, at + 1 + r.below(8)));
        return b;
      }
    }
  }
}

// ---- the engine -------------------------------------------------------------------------------------------

function signatureOf(err: unknown): string {
  const e = err as { name?: unknown; message?: unknown; code?: unknown };
  const name = typeof e?.name === 'string' ? e.name : typeof err;
  const code = typeof e?.code === 'string' ? ` ${e.code}` : '';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  // Numbers and hex dumps vary with the input; what is left names the failure.
  return `${name}${code}: ${message.replace(/\b0x[0-9a-f]+\b|[0-9a-f]{8,}|\d+/gi, 'N').slice(0, 200)}`;
}

function stackOf(err: unknown): string | undefined {
  const s = (err as { stack?: unknown })?.stack;
  if (typeof s !== 'string') return undefined;
  return s.split('\n').slice(0, 6).map((l) => (l.length > 200 ? `${l.slice(0, 200)}...` : l)).join('\n');
}

export class Fuzzer {
  readonly target: FuzzTarget;
  private readonly counters: Uint32Array;
  /** Per counter: the buckets seen so far, one bit each. */
  private readonly seen: Uint8Array;
  private readonly corpus: Buffer[] = [];
  /** Per corpus entry: how many features it added (its weight when picking what to mutate). */
  private readonly weights: number[] = [];
  private cumulative: number[] = [];
  private readonly rng: Rng;
  private readonly mutator: Mutator;
  private readonly opts: Required<Pick<FuzzOptions, 'guided' | 'slowMs' | 'maxFindings' | 'minimizeRuns' | 'progressMs'>> & FuzzOptions;
  execs = 0;
  features = 0;
  readonly findings: Finding[] = [];
  private readonly signatures = new Set<string>();
  private started = 0;

  constructor(target: FuzzTarget, options: FuzzOptions) {
    this.target = target;
    this.counters = target.counters;
    this.seen = new Uint8Array(target.counters.length);
    this.rng = new Rng(options.seed);
    this.mutator = new Mutator(this.rng, target.dictionary, target.maxLen);
    this.opts = { guided: true, slowMs: 100, maxFindings: 8, minimizeRuns: 4000, progressMs: 1000, ...options };
  }

  /** Runs one input; returns the error it threw (undefined when none), and the time it took. */
  private exec(input: Buffer): { error: unknown; failed: boolean; ms: number } {
    this.opts.beforeExec?.(input);
    this.counters.fill(0);
    this.execs++;
    const t0 = performance.now();
    try {
      this.target.run(input);
      return { error: undefined, failed: false, ms: performance.now() - t0 };
    } catch (error) {
      return { error, failed: true, ms: performance.now() - t0 };
    }
  }

  /** Folds the counters of the last exec into the seen set; returns how many features were new. */
  private collect(): number {
    const c = this.counters;
    const seen = this.seen;
    let fresh = 0;
    for (let i = 0; i < c.length; i++) {
      const n = c[i]!;
      if (n === 0) continue;
      const bit = n < 128 ? BUCKET[n]! : TOP_BUCKET;
      if ((seen[i]! & bit) === 0) {
        seen[i] = seen[i]! | bit;
        fresh++;
      }
    }
    this.features += fresh;
    return fresh;
  }

  private add(input: Buffer, weight: number): void {
    this.corpus.push(input);
    this.weights.push(weight);
    const last = this.cumulative.length === 0 ? 0 : this.cumulative[this.cumulative.length - 1]!;
    this.cumulative.push(last + weight);
  }

  private pick(): Buffer {
    // A quarter of the time one of the newest entries: what was just found is where the next step usually is.
    if (this.corpus.length > 1 && this.rng.chance(0.25)) return this.corpus[this.corpus.length - 1 - this.rng.below(Math.min(8, this.corpus.length))]!;
    const total = this.cumulative[this.cumulative.length - 1]!;
    const x = this.rng.below(total);
    let lo = 0;
    let hi = this.cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.cumulative[mid]! > x) hi = mid;
      else lo = mid + 1;
    }
    return this.corpus[lo]!;
  }

  /** Runs an input and acts on the outcome: a finding, a new corpus entry, or nothing. */
  private test(input: Buffer, grow: boolean): void {
    const { error, failed, ms } = this.exec(input);
    if (failed) {
      this.collect();
      this.report('crash', error, input, ms);
      return;
    }
    const fresh = this.collect();
    if (ms > this.opts.slowMs) {
      // One slow run may be the machine (GC, another process): best of three decides.
      let best = ms;
      for (let i = 0; i < 2 && best > this.opts.slowMs; i++) best = Math.min(best, this.exec(input).ms);
      if (best > this.opts.slowMs) {
        this.report('slow', new Error(`input took ${best.toFixed(1)} ms (limit ${this.opts.slowMs} ms)`), input, best);
        return;
      }
    }
    if (fresh > 0 && grow) this.add(input, fresh);
  }

  private report(kind: FindingKind, error: unknown, input: Buffer, ms: number): void {
    const signature = kind === 'slow' ? 'slow input' : signatureOf(error);
    if (this.signatures.has(signature)) return;
    this.signatures.add(signature);
    const minimized = kind === 'crash' ? this.minimize(input, signature) : input;
    const message = (error as { message?: unknown })?.message;
    const finding: Finding = {
      kind,
      signature,
      message: typeof message === 'string' ? message : String(error),
      input: input.toString('hex'),
      minimized: minimized.toString('hex'),
      ms,
    };
    const stack = stackOf(error);
    if (stack !== undefined) finding.stack = stack;
    this.findings.push(finding);
    this.opts.onFinding?.(finding);
  }

  /** The shortest input found (removing ranges, halves first) that still fails with `signature`. */
  minimize(input: Buffer, signature: string): Buffer {
    let best = input;
    let budget = this.opts.minimizeRuns;
    const fails = (b: Buffer): boolean => {
      budget--;
      const { error, failed } = this.exec(b);
      return failed && signatureOf(error) === signature;
    };
    for (let chunk = Math.max(1, best.length >> 1); chunk >= 1 && budget > 0; chunk = chunk === 1 ? 0 : Math.max(1, chunk >> 1)) {
      for (let at = 0; at < best.length && budget > 0;) {
        const candidate = Buffer.concat([best.subarray(0, at), best.subarray(at + chunk)]);
        if (fails(candidate)) best = candidate;
        else at += chunk;
      }
    }
    return best;
  }

  /** Whether counter `i` was ever non-zero: in an exec, or when the code was loaded. */
  private reached(i: number): boolean {
    return this.seen[i] !== 0 || (this.target.layout?.initial?.[i] ?? 0) !== 0;
  }

  stats(): FuzzStats {
    const seconds = (performance.now() - this.started) / 1000;
    let covered = 0;
    for (let i = 0; i < this.seen.length; i++) if (this.reached(i)) covered++;
    const s: FuzzStats = {
      target: this.target.name,
      execs: this.execs,
      seconds,
      execsPerSecond: seconds > 0 ? Math.round(this.execs / seconds) : 0,
      corpus: this.corpus.length,
      features: this.features,
      covered,
      counters: this.seen.length,
      findings: this.findings.length,
    };
    const l = this.target.layout;
    if (l !== undefined) {
      const count = (from: number, n: number): [number, number] => {
        let k = 0;
        for (let i = from; i < from + n; i++) if (this.reached(i)) k++;
        return [k, n];
      };
      s.coverage = { statements: count(0, l.statements), branchArms: count(l.statements, l.branchArms), functions: count(l.statements + l.branchArms, l.functions) };
    }
    return s;
  }

  /** Seeds first (each kept if it adds coverage; all kept when blind), then mutations until a budget runs out. */
  run(): CampaignResult {
    this.started = performance.now();
    const guided = this.opts.guided;
    for (const seed of this.target.seeds) {
      const input = seed.length > this.target.maxLen ? seed.subarray(0, this.target.maxLen) : seed;
      this.test(input, true);
      if (!guided && !this.corpus.includes(input)) this.add(input, 1);
    }
    if (this.corpus.length === 0) this.add(Buffer.alloc(0), 1);
    const deadline = this.opts.seconds === undefined ? Infinity : this.started + this.opts.seconds * 1000;
    const runs = this.opts.runs ?? Infinity;
    const mutations = this.execs;
    let nextProgress = performance.now() + this.opts.progressMs;
    const other = (): Buffer => this.pick();
    while (this.execs - mutations < runs && this.findings.length < this.opts.maxFindings) {
      // The clock is read every 64 execs: performance.now() is cheap, not free.
      if ((this.execs & 63) === 0) {
        const now = performance.now();
        if (now >= deadline) break;
        if (now >= nextProgress) {
          nextProgress = now + this.opts.progressMs;
          this.opts.onProgress?.(this.stats());
        }
      }
      this.test(this.mutator.mutate(this.pick(), other), guided);
    }
    const s = this.stats();
    return { ...s, found: this.findings, inputs: [...this.corpus] };
  }

  /**
   * The smallest subset of `inputs` with the same coverage (shortest first; each kept when it adds a feature),
   * as libFuzzer's -merge: for writing the corpus back. Inputs that fail are left out.
   */
  static merge(target: FuzzTarget, inputs: readonly Buffer[]): Buffer[] {
    const f = new Fuzzer(target, { seed: 1 });
    const kept: Buffer[] = [];
    const unique = new Map<string, Buffer>();
    for (const b of inputs) unique.set(b.toString('hex'), b);
    for (const b of [...unique.values()].sort((x, y) => x.length - y.length || Buffer.compare(x, y))) {
      if (f.exec(b).failed) continue;
      if (f.collect() > 0) kept.push(b);
    }
    return kept;
  }

  /** The statements never reached, described by the target (empty without a layout). */
  uncovered(): string[] {
    const l = this.target.layout;
    if (l?.describeStatement === undefined) return [];
    const out: string[] = [];
    for (let i = 0; i < l.statements; i++) if (!this.reached(i)) out.push(l.describeStatement(i));
    return out;
  }

  /** Count of distinct features (counter, bucket) in the seen set: a check for `features`. */
  featureCount(): number {
    let n = 0;
    for (let i = 0; i < this.seen.length; i++) n += bitCount(this.seen[i]!);
    return n;
  }
}
