// The event log: every state change and boot step, with actor and time, in the store's `events`
// collection under time-ordered keys. ONE key source per process: two generators could hand out the
// same key in the same millisecond and one event would overwrite the other.
import { createEventKeys } from '../lib/event-key.ts';
import type { EventRecord, Store, WriteOp } from '../store/types.ts';

export interface NewEvent {
  type: string;
  actor: string;
  /** What the event is about: a MAC, a machine id, a user. */
  subject?: string;
  data?: Record<string, unknown>;
}

export class EventLog {
  private nextKey: (now?: Date) => string = createEventKeys();

  constructor(private readonly store: Store, private readonly now: () => number = Date.now) {}

  /** Continues the key sequence after the newest stored event (call once at start). */
  async init(): Promise<void> {
    for await (const [key] of this.store.events.entries({ reverse: true, limit: 1 })) this.nextKey = createEventKeys(key);
  }

  /** The write op for an event, to put in the same atomic batch as the change it records. */
  op(event: NewEvent): WriteOp {
    const at = new Date(this.now());
    const id = this.nextKey(at);
    const value: EventRecord = { id, at: at.toISOString(), type: event.type, actor: event.actor };
    if (event.subject !== undefined) value.subject = event.subject;
    if (event.data !== undefined) value.data = event.data;
    return { type: 'put', collection: 'events', key: id, value };
  }

  /** Records events on their own (durable when the promise resolves). */
  async append(...events: NewEvent[]): Promise<void> {
    await this.store.write(events.map((e) => this.op(e)));
  }
}
