// A machine's events, read from the event log. Events are keyed by time only (no index by subject), so this
// walks the log backwards from `before` and keeps what names the machine: its id (lifecycle, BMC events), its
// MACs (DHCP leases, HTTP boot) and its UUID (boot requests by UUID). The walk is bounded (`maxScan`): a busy
// log answers with fewer events and a `next` to continue from, never with an unbounded scan.
import type { EventRecord, Store } from '../store/types.ts';
import type { Machine } from './machines.ts';

export interface EventQuery {
  /** Newest first, at most this many. */
  limit: number;
  /** Only events older than this event id (the previous answer's `next`). */
  before?: string;
  /** Only events whose type is one of these or starts with one of these followed by '.' ('boot' matches 'boot.http'). */
  types?: readonly string[];
  /** Events looked at before giving up for this call (default 20,000). */
  maxScan?: number;
}

export interface EventPage {
  items: EventRecord[];
  /** Where to continue (pass as `before`); null when the log has nothing older. */
  next: string | null;
}

/** The events that belong to a machine's boot timeline: DHCP, HTTP boot, TFTP, BMC power and the lifecycle. */
export const TIMELINE_TYPES = ['lease', 'boot', 'tftp', 'bmc.power', 'bmc.bootdev', 'machine.state'] as const;

export function subjectsOf(m: Machine): Set<string> {
  const s = new Set<string>([m.id, ...m.macs]);
  if (m.uuid !== undefined) s.add(m.uuid);
  return s;
}

function typeMatcher(types: readonly string[] | undefined): (t: string) => boolean {
  if (!types || types.length === 0) return () => true;
  return (t) => types.some((p) => t === p || t.startsWith(`${p}.`));
}

export async function machineEvents(store: Store, subjects: ReadonlySet<string>, q: EventQuery): Promise<EventPage> {
  const items: EventRecord[] = [];
  const wanted = typeMatcher(q.types);
  const maxScan = q.maxScan ?? 20_000;
  let scanned = 0;
  for await (const [key, e] of store.events.entries({ reverse: true, ...(q.before !== undefined ? { lt: q.before } : {}) })) {
    if (e.subject !== undefined && subjects.has(e.subject) && wanted(e.type)) {
      items.push(e);
      if (items.length === q.limit) return { items, next: key };
    }
    if (++scanned >= maxScan) return { items, next: key };
  }
  return { items, next: null };
}
