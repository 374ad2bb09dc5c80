// Long operations started by a request and followed by polling (POST -> 202 {job}, GET /api/v1/jobs/:id):
// today the download of a boot image. Jobs live in memory: a restart ends running ones (what they were
// doing is all-or-nothing, see src/store/assets.ts) and forgets finished ones. Finished jobs are kept for
// an hour, at most MAX_FINISHED of them.
import { randomBytes } from 'node:crypto';
import { isMetalboxError } from '../lib/errors.ts';

export const JOB_ID_PATTERN = '^job_[0-9a-f]{16}$';
const MAX_FINISHED = 200;
const KEEP_FINISHED_MS = 60 * 60 * 1000;

export type JobState = 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobProgressPart { bytes: number; total: number | null; done: boolean }

export interface JobView {
  id: string;
  kind: string;
  /** What the job is about (an image name). */
  subject: string;
  actor: string;
  state: JobState;
  createdAt: string;
  finishedAt?: string;
  /** Bytes so far over every part, and the sum of the known totals (null while any part's is unknown). */
  progress: { bytes: number; total: number | null; parts: Record<string, JobProgressPart> };
  result?: Record<string, unknown>;
  /** A failure's stable code and message (README: error codes). */
  error?: { code: string; message: string };
}

export interface JobHandle {
  readonly signal: AbortSignal;
  /** Progress of one part (a file): bytes so far and the total when known. */
  progress(part: string, p: JobProgressPart): void;
}

interface Job { view: JobView; abort: AbortController; finishedAt?: number }

export class Jobs {
  private readonly jobs = new Map<string, Job>();
  private readonly now: () => number;

  constructor(options: { now?: () => number } = {}) {
    this.now = options.now ?? Date.now;
  }

  /**
   * Starts `run` now; its result (or error code) lands in the job. Never throws: failures are the job's.
   * `parts` names what progress will be reported on, so the total stays unknown until every part's is known.
   */
  start(kind: string, subject: string, actor: string, run: (job: JobHandle) => Promise<Record<string, unknown>>, parts: readonly string[] = []): JobView {
    this.prune();
    const id = `job_${randomBytes(8).toString('hex')}`;
    const abort = new AbortController();
    const view: JobView = {
      id, kind, subject, actor, state: 'running', createdAt: this.iso(),
      progress: { bytes: 0, total: null, parts: Object.fromEntries(parts.map((p) => [p, { bytes: 0, total: null, done: false }])) },
    };
    const job: Job = { view, abort };
    this.jobs.set(id, job);
    const handle: JobHandle = {
      signal: abort.signal,
      progress: (part, p) => {
        view.progress.parts[part] = { bytes: p.bytes, total: p.total, done: p.done };
        const parts = Object.values(view.progress.parts);
        view.progress.bytes = parts.reduce((n, x) => n + x.bytes, 0);
        view.progress.total = parts.every((x) => x.total !== null) ? parts.reduce((n, x) => n + (x.total ?? 0), 0) : null;
      },
    };
    void Promise.resolve().then(() => run(handle)).then(
      (result) => this.finish(job, 'succeeded', { result }),
      (err: unknown) => this.finish(job, abort.signal.aborted ? 'cancelled' : 'failed', {
        error: isMetalboxError(err) ? { code: err.code, message: err.message } : { code: 'INTERNAL', message: 'internal error; see the metalbox log' },
      }),
    );
    return this.snapshot(job);
  }

  get(id: string): JobView | undefined {
    this.prune();
    const job = this.jobs.get(id);
    return job && this.snapshot(job);
  }

  /** Newest first. */
  list(): JobView[] {
    this.prune();
    return [...this.jobs.values()].map((j) => this.snapshot(j)).reverse();
  }

  /** Whether a job of this kind and subject is running (a second download of one image name is refused). */
  running(kind: string, subject: string): boolean {
    for (const j of this.jobs.values()) if (j.view.kind === kind && j.view.subject === subject && j.view.state === 'running') return true;
    return false;
  }

  /** Asks a running job to stop; it ends as cancelled. `undefined`: no such job. */
  cancel(id: string): JobView | undefined {
    const job = this.jobs.get(id);
    if (!job) return undefined;
    if (job.view.state === 'running') job.abort.abort();
    return this.snapshot(job);
  }

  /** Stops every running job (the app is closing). */
  cancelAll(): void {
    for (const j of this.jobs.values()) if (j.view.state === 'running') j.abort.abort();
  }

  private finish(job: Job, state: JobState, end: { result?: Record<string, unknown>; error?: { code: string; message: string } }): void {
    job.view.state = state;
    job.finishedAt = this.now();
    job.view.finishedAt = this.iso();
    if (end.result) job.view.result = end.result;
    if (end.error) job.view.error = end.error;
  }

  private prune(): void {
    const finished = [...this.jobs.values()].filter((j) => j.finishedAt !== undefined);
    const cutoff = this.now() - KEEP_FINISHED_MS;
    finished.forEach((j, i) => {
      if (j.finishedAt! < cutoff || finished.length - i > MAX_FINISHED) this.jobs.delete(j.view.id);
    });
  }

  private snapshot(job: Job): JobView {
    return structuredClone(job.view);
  }

  private iso(): string {
    return new Date(this.now()).toISOString();
  }
}
