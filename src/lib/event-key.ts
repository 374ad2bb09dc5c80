// Event keys are the caller-facing event ids: an ISO-8601 UTC time (fixed width, so text order is time order)
// and a per-millisecond sequence number, e.g. `2024-11-23T00:39:00.123Z-000001`.

const SEQ_WIDTH = 6;

export function eventKey(now: Date, seq: number): string {
  if (!Number.isInteger(seq) || seq < 0 || seq >= 10 ** SEQ_WIDTH) throw new RangeError(`eventKey: seq out of range: ${seq}`);
  return `${now.toISOString()}-${String(seq).padStart(SEQ_WIDTH, '0')}`;
}

/**
 * A source of strictly increasing event keys. Seed it with the newest stored event key so ids stay unique and
 * ordered across restarts; if the clock steps back, keys keep counting on from the last one issued.
 */
export function createEventKeys(last?: string): (now?: Date) => string {
  let lastMs = -Infinity;
  let seq = 0;
  if (last !== undefined) {
    const m = /^(.{24})-(\d+)$/.exec(last);
    if (!m || Number.isNaN(Date.parse(m[1]!))) throw new TypeError(`createEventKeys: not an event key: ${last}`);
    lastMs = Date.parse(m[1]!);
    seq = Number(m[2]);
  }
  return (now = new Date()) => {
    const ms = now.getTime();
    if (ms > lastMs) {
      lastMs = ms;
      seq = 0;
    } else if (++seq >= 10 ** SEQ_WIDTH) {
      lastMs++; // a million events in one millisecond: borrow the next millisecond
      seq = 0;
    }
    return eventKey(new Date(lastMs), seq);
  };
}
