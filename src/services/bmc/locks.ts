// The two limits on BMC work: one operation at a time per BMC (a BMC serves few sessions, and two commands
// racing on one chassis give undefined results), and a global cap on sessions at once. Both queue FIFO with
// a bounded queue: past it, BMC_BUSY at once rather than an unbounded pile of waiting work.
import { MetalboxError } from '../../lib/errors.ts';

export type Release = () => void;

interface Waiter { grant: (release: Release) => void; fail: (err: unknown) => void }

export class Semaphore {
  private active = 0;
  private peakActive = 0;
  private readonly queue: Waiter[] = [];

  constructor(readonly limit: number, readonly maxQueue: number, private readonly what: string) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`Semaphore limit must be >= 1, got ${limit}`);
  }

  get running(): number { return this.active; }
  get waiting(): number { return this.queue.length; }
  /** Most holders at once since creation (tests check the cap held). */
  get peak(): number { return this.peakActive; }
  get idle(): boolean { return this.active === 0 && this.queue.length === 0; }

  /** A slot now, or undefined when none is free or others are already waiting (they keep their turn). */
  tryAcquire(): Release | undefined {
    if (this.active >= this.limit || this.queue.length > 0) return undefined;
    return this.take();
  }

  /**
   * Resolves with a release function once a slot is free. BMC_BUSY at once when `maxQueue` callers already
   * wait; BMC_TIMEOUT when `signal` aborts while waiting (the caller gave up or metalbox is stopping).
   */
  acquire(signal?: AbortSignal): Promise<Release> {
    const now = this.tryAcquire();
    if (now) return Promise.resolve(now);
    if (signal?.aborted) return Promise.reject(cancelled(this.what));
    if (this.queue.length >= this.maxQueue) {
      return Promise.reject(new MetalboxError('BMC_BUSY', `${this.queue.length} operations already wait for ${this.what}; try again later`, { details: { waiting: this.queue.length } }));
    }
    return new Promise<Release>((resolve, reject) => {
      const onAbort = () => {
        const at = this.queue.indexOf(waiter);
        if (at >= 0) this.queue.splice(at, 1);
        reject(cancelled(this.what));
      };
      const waiter: Waiter = {
        grant: (release) => { signal?.removeEventListener('abort', onAbort); resolve(release); },
        fail: reject,
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(waiter);
    });
  }

  private take(): Release {
    this.active++;
    this.peakActive = Math.max(this.peakActive, this.active);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active--;
      const next = this.queue.shift();
      if (next) next.grant(this.take());
    };
  }
}

/** One Semaphore(1) per key, dropped when idle so the map holds only busy keys. */
export class KeyedMutex {
  private readonly locks = new Map<string, Semaphore>();

  constructor(private readonly maxQueue: number, private readonly what: (key: string) => string) {}

  busy(key: string): boolean {
    return this.locks.has(key);
  }

  tryAcquire(key: string): Release | undefined {
    const lock = this.lockFor(key);
    const release = lock.tryAcquire();
    if (!release) return undefined;
    return this.wrap(key, lock, release);
  }

  async acquire(key: string, signal?: AbortSignal): Promise<Release> {
    const lock = this.lockFor(key);
    try {
      return this.wrap(key, lock, await lock.acquire(signal));
    } catch (err) {
      if (lock.idle) this.locks.delete(key);
      throw err;
    }
  }

  get size(): number { return this.locks.size; }

  private lockFor(key: string): Semaphore {
    let lock = this.locks.get(key);
    if (!lock) this.locks.set(key, (lock = new Semaphore(1, this.maxQueue, this.what(key))));
    return lock;
  }

  private wrap(key: string, lock: Semaphore, release: Release): Release {
    return () => {
      release();
      if (lock.idle && this.locks.get(key) === lock) this.locks.delete(key);
    };
  }
}

function cancelled(what: string): MetalboxError {
  return new MetalboxError('BMC_TIMEOUT', `cancelled while waiting for ${what}`);
}
