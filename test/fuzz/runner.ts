// Runs a campaign in a worker thread with a watchdog: if the worker's exec counter stops moving for `hangMs`
// while it fuzzes, one input never returned; the worker is terminated (that interrupts even `while (true)`)
// and the input it was running, read from shared memory, is reported as a hang.
import { Worker } from 'node:worker_threads';
import type { CampaignResult, Finding, FuzzOptions, FuzzStats } from './engine.ts';

export type CampaignOptions = Omit<FuzzOptions, 'onProgress' | 'beforeExec' | 'onFinding'>;

export interface WorkerSpec {
  /** URL of the module that builds the target. */
  module: string;
  /** Its export to call (default createTarget). */
  factory?: string;
  options: CampaignOptions;
  /** Shared: exec counter, length of the current input, then its bytes. */
  heartbeat: SharedArrayBuffer;
  /** Reduce the final corpus to the inputs that add coverage (for writing it back). */
  merge?: boolean;
  /** Report the statements never reached. */
  uncovered?: boolean;
}

export type WorkerMessage =
  | { type: 'ready'; counters: number; seeds: number }
  | { type: 'progress'; stats: FuzzStats }
  | { type: 'finding'; finding: Finding }
  | { type: 'done'; result: CampaignResult };

export interface RunHooks {
  onReady?: (info: { counters: number; seeds: number; ms: number }) => void;
  onProgress?: (s: FuzzStats) => void;
  onFinding?: (f: Finding) => void;
}

export interface RunOptions extends CampaignOptions {
  module: string;
  factory?: string;
  /** No exec for this long while fuzzing: a hang (default 5 s). */
  hangMs?: number;
  /** Longest input kept for a hang report (default 64 KiB). */
  maxInput?: number;
  merge?: boolean;
  uncovered?: boolean;
}

const WORKER = new URL('./worker-boot.mjs', import.meta.url);

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

export function runInWorker(opts: RunOptions, hooks: RunHooks = {}): Promise<CampaignResult> {
  const { module, factory, hangMs = 5000, maxInput = 65536, merge, uncovered, ...options } = opts;
  const heartbeat = new SharedArrayBuffer(8 + maxInput);
  const heart = new Int32Array(heartbeat, 0, 2);
  const spec: WorkerSpec = { module, options, heartbeat, ...(factory === undefined ? {} : { factory }), ...(merge === undefined ? {} : { merge }), ...(uncovered === undefined ? {} : { uncovered }) };
  const started = performance.now();
  const worker = new Worker(WORKER, { workerData: spec });
  return new Promise<CampaignResult>((resolve, reject) => {
    let last: FuzzStats | undefined;
    const findings: Finding[] = [];
    let settled = false;
    let lastExecs = -1;
    let lastMove = performance.now();
    let armed = false;
    const finish = (f: () => void): void => {
      if (settled) return;
      settled = true;
      clearInterval(watchdog);
      f();
    };
    const watchdog = setInterval(() => {
      if (!armed) return;
      const execs = Atomics.load(heart, 0);
      const now = performance.now();
      if (execs !== lastExecs) {
        lastExecs = execs;
        lastMove = now;
        return;
      }
      if (now - lastMove < hangMs) return;
      const input = Buffer.from(new Uint8Array(heartbeat, 8, heart[1]!));
      const hang: Finding = {
        kind: 'hang',
        signature: 'hang',
        message: `one input ran for over ${hangMs} ms without returning`,
        input: input.toString('hex'),
        minimized: input.toString('hex'),
        ms: now - lastMove,
      };
      findings.push(hang);
      hooks.onFinding?.(hang);
      void worker.terminate();
      const base: FuzzStats = last ?? { target: module, execs, seconds: (now - started) / 1000, execsPerSecond: 0, corpus: 0, features: 0, covered: 0, counters: 0, findings: 0 };
      finish(() => resolve({ ...base, execs, findings: findings.length, found: findings, inputs: [] }));
    }, 100);
    worker.on('message', (m: WorkerMessage) => {
      switch (m.type) {
        case 'ready':
          armed = true;
          lastMove = performance.now();
          hooks.onReady?.({ counters: m.counters, seeds: m.seeds, ms: performance.now() - started });
          break;
        case 'progress':
          last = m.stats;
          hooks.onProgress?.(m.stats);
          break;
        case 'finding':
          findings.push(m.finding);
          hooks.onFinding?.(m.finding);
          break;
        case 'done':
          finish(() => resolve({ ...m.result, inputs: m.result.inputs.map(toBuffer) }));
          void worker.terminate();
          break;
      }
    });
    worker.on('error', (err) => finish(() => reject(err)));
    worker.on('exit', (code) => finish(() => reject(new Error(`fuzz worker exited with code ${code} before it reported`))));
  });
}

/** Coverage as text: statements, branch arms and functions of the instrumented bundle reached. */
function coverageText(s: FuzzStats): string {
  const c = s.coverage;
  const part = (name: string, [k, n]: [number, number]) => `${name} ${k}/${n} (${((100 * k) / Math.max(1, n)).toFixed(1)}%)`;
  return c === undefined ? `covered ${s.covered}/${s.counters}` : [part('statements', c.statements), part('branch arms', c.branchArms), part('functions', c.functions)].join(', ');
}

/** One line per campaign: execs, rate, corpus, features, coverage, findings. */
export function summary(r: CampaignResult): string {
  return `${r.target}: ${r.execs} execs in ${r.seconds.toFixed(1)} s (${r.execsPerSecond} exec/s), corpus ${r.corpus}, features ${r.features}, ${coverageText(r)}, findings ${r.findings}`;
}

