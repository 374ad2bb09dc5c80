// Work shedding for the DHCP service under overload (a rack powering on at once, a flood).
//
// Every datagram is read from the kernel at once and queued here by message type; the service handles
// REQUESTs (and RELEASE, DECLINE, INFORM, the PXE port's exchange) before DISCOVERs. A REQUEST completes an
// exchange whose OFFER was already paid for; a DISCOVER starts one the client retries anyway (RFC 2131 §4.1:
// after about 4 s, then 8 s ...). Without this the kernel's receive queue filled up and dropped REQUESTs and
// DISCOVERs alike: in a flood, half of the OFFERs sent led nowhere (measured, test/bench/dhcp.ts).
// Bounds: when a queue is full its oldest entry goes; a DISCOVER that waited longer than maxDiscoverAgeMs is
// dropped when it comes up (its client has retransmitted by then, and would not take an old OFFER anyway).
// While the DISCOVER queue is full the service also has its sockets drop new DISCOVERs before they reach JS
// (server.ts updateShedding), until the queue is down to half.
import { MESSAGE_TYPE } from '../../protocols/dhcp/index.ts';

export type ShedReason = 'overload-request' | 'overload-discover' | 'overload-stale';

export interface WorkQueueLimits {
  maxUrgent: number;
  maxDiscovers: number;
  maxDiscoverAgeMs: number;
}

export const DEFAULT_LIMITS: WorkQueueLimits = { maxUrgent: 8192, maxDiscovers: 2048, maxDiscoverAgeMs: 2000 };

/** A FIFO with O(1) push and shift (an array with a moving head, compacted as it drains). */
class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  get length(): number { return this.items.length - this.head; }
  push(item: T): void { this.items.push(item); }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) { this.items = this.items.slice(this.head); this.head = 0; }
    return item;
  }
  clear(): void { this.items = []; this.head = 0; }
}

/** Message types that finish or end an exchange: handled first. */
export function isUrgent(type: number | undefined): boolean {
  return type === MESSAGE_TYPE.REQUEST || type === MESSAGE_TYPE.RELEASE || type === MESSAGE_TYPE.DECLINE || type === MESSAGE_TYPE.INFORM;
}

export class WorkQueue<T> {
  private readonly urgent = new Fifo<T>();
  private readonly discovers = new Fifo<{ item: T; at: number }>();

  constructor(private readonly onShed: (reason: ShedReason) => void, readonly limits: WorkQueueLimits = DEFAULT_LIMITS) {}

  get length(): number { return this.urgent.length + this.discovers.length; }

  /** DISCOVERs (non-urgent items) waiting. */
  get discoverCount(): number { return this.discovers.length; }

  /** Queues `item` (`urgent`: see isUrgent; everything else waits behind). */
  push(item: T, urgent: boolean, now: number): void {
    if (urgent) {
      if (this.urgent.length >= this.limits.maxUrgent) { this.urgent.shift(); this.onShed('overload-request'); }
      this.urgent.push(item);
    } else {
      if (this.discovers.length >= this.limits.maxDiscovers) { this.discovers.shift(); this.onShed('overload-discover'); }
      this.discovers.push({ item, at: now });
    }
  }

  /** The next item to handle: urgent ones first, then DISCOVERs that are not too old. */
  next(now: number): T | undefined {
    const u = this.urgent.shift();
    if (u !== undefined) return u;
    for (let d = this.discovers.shift(); d !== undefined; d = this.discovers.shift()) {
      if (now - d.at <= this.limits.maxDiscoverAgeMs) return d.item;
      this.onShed('overload-stale');
    }
    return undefined;
  }

  clear(): void {
    this.urgent.clear();
    this.discovers.clear();
  }
}
