// The host's wall clock, read with sub-microsecond resolution. metalbox reads it and never sets it.
//
// Node has no high-resolution wall clock: Date.now() has whole milliseconds, performance.now() is fine
// but monotonic (CLOCK_MONOTONIC through libuv). So we pin the two together once, at an edge of Date.now()
// (spin until its millisecond changes: the realtime clock is then within a loop iteration, well under a
// microsecond, of an integer millisecond), and from then on read performance.now() plus that offset.
// CLOCK_MONOTONIC is slewed with CLOCK_REALTIME (adjtimex frequency and offset corrections apply to both),
// so the offset holds until someone steps the wall clock: a check each second compares the two again and
// re-pins on a step.
//
// The check is cheap (no spin); a re-pin spins for a millisecond or two (more on a machine so busy that the
// thread is preempted mid-spin: an edge is trusted only when it was seen without interruption).
import { performance } from 'node:perf_hooks';
import { ntpFromUnix, type NtpTimestamp } from '../../protocols/ntp/index.ts';

export interface WallClock {
  /** The wall clock now as an NTP timestamp. */
  now(): NtpTimestamp;
  /** log2 of the clock's precision in seconds (RFC 5905 §7.3: the time to read it, or its tick, whichever is larger). */
  readonly precision: number;
}

/** How far (ms) the pinned clock may stray from Date.now() before we call it a step and re-pin. */
const STEP_TOLERANCE_MS = 0.5;
/** Two clock reads further apart than this (ms) were interrupted: their pairing is not trusted. */
const READ_GAP_MS = 0.02;
/** Millisecond edges tried at most when pinning (each costs up to a millisecond of spinning). */
const PIN_ATTEMPTS = 20;

export class HostClock implements WallClock {
  /** Unix seconds (integer) and the milliseconds to add to performance.now() on top of them. */
  private baseSeconds = 0;
  private baseMs = 0;
  private timer: NodeJS.Timeout | undefined;
  readonly precision: number;
  /** Times the wall clock was found stepped (tests, logs). */
  steps = 0;

  constructor(private readonly onStep?: (ms: number) => void) {
    this.pin();
    this.precision = measurePrecision(() => this.now());
  }

  /** Starts the once-a-second step check (unreferenced: it keeps nothing alive). */
  watch(): void {
    this.timer ??= setInterval(() => this.check(), 1000).unref();
  }

  unwatch(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  now(): NtpTimestamp {
    const ms = performance.now() + this.baseMs;
    const s = Math.floor(ms / 1000);
    return ntpFromUnix(this.baseSeconds + s, (ms - s * 1000) / 1000);
  }

  /** Unix time in ms with the pinned resolution (for logs and the API). */
  unixMs(): number {
    return this.baseSeconds * 1000 + performance.now() + this.baseMs;
  }

  /**
   * Compares the pinned clock with Date.now(): Date.now() truncates, so the pinned value should be at most
   * one millisecond ahead. Returns the difference (ms) and re-pins when it is outside that. A comparison whose
   * two reads were more than READ_GAP_MS apart (the thread was preempted between them) is retried, so a busy
   * machine is not taken for a stepped clock.
   */
  check(): number {
    let ahead = 0;
    for (let attempt = 0; attempt < 5; attempt++) {
      const p0 = performance.now();
      const date = Date.now();
      const p1 = performance.now();
      if (p1 - p0 > READ_GAP_MS && attempt < 4) continue;
      ahead = this.baseSeconds * 1000 + (p0 + p1) / 2 + this.baseMs - date;
      break;
    }
    if (ahead < -STEP_TOLERANCE_MS || ahead > 1 + STEP_TOLERANCE_MS) {
      this.pin();
      this.steps++;
      this.onStep?.(ahead);
    }
    return ahead;
  }

  private pin(): void {
    // The edge lies between the last two Date.now() calls. Each call is bracketed by performance.now() reads,
    // so the edge is inside [the read before the previous call, the read after this one]: its middle is the
    // estimate, half its width the error. Accept an edge only when that bracket is tight (nothing preempted
    // us in it); after PIN_ATTEMPTS edges take the tightest seen.
    let best: { date: number; edge: number; gap: number } | undefined;
    for (let attempt = 0; attempt < PIN_ATTEMPTS; attempt++) {
      let lastBefore = performance.now();
      const start = Date.now();
      let before: number;
      let date: number;
      let after: number;
      for (;;) {
        before = performance.now();
        date = Date.now();
        after = performance.now();
        if (date !== start) break;
        lastBefore = before;
      }
      const gap = after - lastBefore;
      if (!best || gap < best.gap) best = { date, edge: (lastBefore + after) / 2, gap };
      if (gap <= READ_GAP_MS) break;
    }
    this.baseSeconds = Math.floor(best!.date / 1000);
    this.baseMs = (best!.date - this.baseSeconds * 1000) - best!.edge;
  }
}

/**
 * RFC 5905 §7.3 precision: log2 (rounded up) of the smallest non-zero step between successive reads of the
 * clock, so it covers both the clock's resolution and the time a read takes.
 */
export function measurePrecision(now: () => NtpTimestamp, reads = 200): number {
  let smallest = Infinity;
  let last = now();
  for (let i = 0; i < reads; i++) {
    const t = now();
    const step = (t.seconds - last.seconds) * 4_294_967_296 + (t.fraction - last.fraction);
    if (step > 0 && step < smallest) smallest = step;
    last = t;
  }
  if (!Number.isFinite(smallest)) return -20;
  const precision = Math.ceil(Math.log2(smallest / 4_294_967_296));
  return Math.max(-32, Math.min(-1, precision));
}
