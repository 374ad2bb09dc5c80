// Boot-timeline events written in batches: a TFTP read or an HTTP boot fetch each end as one event, and in a boot
// storm one durable write (an fsync on the libuv pool) per event held up the file reads and lease writes around it.
// The events are queued and written together at most every `flushMs`; the queue is bounded, and beyond it (a
// request flood) events are counted as dropped instead of queued without end. These are records of what happened,
// not answers anyone waits on: a machine's lease, token or state change is written before its answer leaves.
import type { EventLog, NewEvent } from './events.ts';

export interface EventBatcherOptions {
  events: EventLog;
  /** Events written in one batch at most this often, ms. */
  flushMs: number;
  /** Events waiting (queued or being written) at most; more are dropped and counted. */
  maxPending: number;
  /** Told of events not recorded: over maxPending, or their batch failed (with the error). */
  onDropped: (count: number, err?: unknown) => void;
}

export class EventBatcher {
  private queue: NewEvent[] = [];
  /** Events accepted and not yet written or dropped (includes those whose subject is still being looked up). */
  private pending = 0;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;

  constructor(private readonly opts: EventBatcherOptions) {}

  /** Events accepted and not yet written. */
  get size(): number {
    return this.pending;
  }

  /**
   * Queues an event. Its subject may still be a lookup (a lease read): the event joins the queue when it
   * settles, and a failed lookup drops it (counted).
   */
  add(event: NewEvent | Promise<NewEvent>): void {
    if (this.pending >= this.opts.maxPending) {
      this.opts.onDropped(1);
      return;
    }
    this.pending++;
    if (!(event instanceof Promise)) {
      this.push(event);
      return;
    }
    event.then((e) => this.push(e), (err: unknown) => {
      this.pending--;
      this.opts.onDropped(1, err);
    });
  }

  /** Writes what is queued now and waits for it (and for a write already under way). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.queue.splice(0);
    if (batch.length === 0) return;
    this.flushing = this.opts.events.append(...batch).catch((err: unknown) => this.opts.onDropped(batch.length, err)).finally(() => {
      this.pending -= batch.length;
      this.flushing = undefined;
      if (this.queue.length > 0) this.soon();
    });
    await this.flushing;
  }

  /** For a stop: writes everything accepted, waiting up to `ms` (wall clock) for subjects still being looked up. */
  async drain(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.pending > 0 && Date.now() < deadline) {
      await this.flush();
      if (this.pending > 0) await new Promise((r) => setTimeout(r, 20));
    }
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private push(event: NewEvent): void {
    this.queue.push(event);
    this.soon();
  }

  private soon(): void {
    if (this.timer !== undefined || this.flushing !== undefined) return;
    this.timer = setTimeout(() => { this.timer = undefined; void this.flush(); }, this.opts.flushMs);
  }
}
