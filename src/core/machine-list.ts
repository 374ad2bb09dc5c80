// The in-memory listing of machines: sorted views kept up to date on every write, keyset paging, filters and
// counts. 100,000 machines must page in well under a millisecond, so nothing here sorts or scans everything
// per request unless a filter leaves no better choice (a host name substring) - and then once per change.
//
// Paging is by cursor (keyset), not offset: a cursor names the last row of a page by its sort key and id, so
// the next page starts right after it by a binary search (O(log n), whatever the page number), and rows
// created or deleted meanwhile neither repeat nor skip rows on later pages. An offset costs O(offset) per
// request and shifts under concurrent writes.
import { MetalboxError } from '../lib/errors.ts';
import { STATES } from './lifecycle.ts';
import type { Machine } from './machines.ts';

export const SORT_FIELDS = ['hostname', 'state', 'createdAt', 'updatedAt'] as const;
export type SortField = (typeof SORT_FIELDS)[number];
export type SortOrder = 'asc' | 'desc';

export interface ListFilter {
  /** Any of these states. */
  state?: readonly string[];
  /** Every one of these tags. */
  tags?: readonly string[];
  /** This MAC (canonical form). */
  mac?: string;
  /** Host name contains this (lower case). */
  hostname?: string;
  /** Host name starts with this (lower case). */
  hostnamePrefix?: string;
}

export interface ListQuery extends ListFilter {
  sort?: SortField;
  order?: SortOrder;
  /** 1..MAX_LIMIT, default DEFAULT_LIMIT. */
  limit?: number;
  /** From a previous page's `next`. */
  cursor?: string;
}

export interface ListPage {
  items: Machine[];
  /** Machines matching the filter, over all pages. */
  total: number;
  /** Cursor of the next page; null on the last page. */
  next: string | null;
}

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 1000;

/** Sort keys: [primary, secondary]; ties broken by id, so the order is total and a cursor is exact. */
type Key = readonly [string | number, string];
const STATE_RANK = new Map<string, number>(STATES.map((s, i) => [s, i]));
/** State order is the lifecycle's (New, Commissioning, Ready, ...), not the alphabet; then host name. */
const KEYS: Readonly<Record<SortField, (m: Machine) => Key>> = {
  hostname: (m) => [m.hostname, ''],
  state: (m) => [STATE_RANK.get(m.state) ?? STATES.length, m.hostname],
  createdAt: (m) => [m.createdAt, ''],
  updatedAt: (m) => [m.updatedAt, ''],
};

function compare(a: Key, aid: string, b: Key, bid: string): number {
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  if (a[1] !== b[1]) return a[1] < b[1] ? -1 : 1;
  return aid < bid ? -1 : aid > bid ? 1 : 0;
}

/** Machines in one sort order, as an array kept sorted by binary insertion (a memmove of pointers per change). */
export class SortedView {
  private rows: Machine[] = [];
  constructor(readonly field: SortField) {}

  get length(): number { return this.rows.length; }
  at(i: number): Machine { return this.rows[i]!; }
  keyOf(m: Machine): Key { return KEYS[this.field](m); }

  /** Replaces the contents (at load): one sort with precomputed keys. */
  load(machines: Iterable<Machine>): void {
    const decorated = [...machines].map((m) => ({ m, k: this.keyOf(m) }));
    decorated.sort((x, y) => compare(x.k, x.m.id, y.k, y.m.id));
    this.rows = decorated.map((d) => d.m);
  }

  /** First index whose row sorts after (key, id) (`strict`) or at/after it. */
  bound(key: Key, id: string, strict: boolean): number {
    let lo = 0;
    let hi = this.rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const row = this.rows[mid]!;
      const c = compare(this.keyOf(row), row.id, key, id);
      if (c < 0 || (strict && c === 0)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Replaces `before` by `after` (either may be undefined: insert, delete). */
  update(before: Machine | undefined, after: Machine | undefined): void {
    if (before && after) {
      const kb = this.keyOf(before);
      const ka = this.keyOf(after);
      if (kb[0] === ka[0] && kb[1] === ka[1] && before.id === after.id) {
        const i = this.bound(kb, before.id, false);
        if (this.rows[i] === before) { this.rows[i] = after; return; }
      }
    }
    if (before) {
      const i = this.bound(this.keyOf(before), before.id, false);
      if (this.rows[i]?.id !== before.id) throw new Error(`sorted view ${this.field}: machine ${before.id} is missing`);
      this.rows.splice(i, 1);
    }
    if (after) this.rows.splice(this.bound(this.keyOf(after), after.id, false), 0, after);
  }
}

interface CursorState { sort: SortField; order: SortOrder; key: Key; id: string }

export function encodeCursor(c: CursorState): string {
  return Buffer.from(JSON.stringify([c.sort, c.order, c.key[0], c.key[1], c.id])).toString('base64url');
}

/** The cursor's position, or VALIDATION_FAILED naming `cursor` (not one of ours, or from another sort order). */
export function decodeCursor(text: string, sort: SortField, order: SortOrder): CursorState {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
  } catch {
    v = undefined;
  }
  const bad = (why: string) => new MetalboxError('VALIDATION_FAILED', `cursor: ${why}`, { details: { field: 'cursor' } });
  if (!Array.isArray(v) || v.length !== 5 || typeof v[4] !== 'string' || typeof v[3] !== 'string'
    || (typeof v[2] !== 'string' && typeof v[2] !== 'number')) throw bad('not a cursor from this API');
  if (v[0] !== sort || v[1] !== order) throw bad(`this cursor pages a listing sorted by ${String(v[0])} ${String(v[1])}, not ${sort} ${order}`);
  return { sort, order, key: [v[2], v[3]], id: v[4] };
}

/** What a listing needs from the registry's indexes. */
export interface ListSource {
  readonly size: number;
  view(field: SortField): SortedView;
  byMac(mac: string): Machine | undefined;
  /** Ids in a state / with a tag (live sets: do not modify). */
  withState(state: string): ReadonlySet<string> | undefined;
  withTag(tag: string): ReadonlySet<string> | undefined;
  get(id: string): Machine | undefined;
}

export function matcher(f: ListFilter): (m: Machine) => boolean {
  const states = f.state && f.state.length > 0 ? new Set(f.state) : undefined;
  const tags = f.tags ?? [];
  const { mac, hostname, hostnamePrefix } = f;
  return (m) => (states === undefined || states.has(m.state))
    && (tags.length === 0 || tags.every((t) => m.tags.includes(t)))
    && (mac === undefined || m.macs.includes(mac))
    && (hostname === undefined || m.hostname.includes(hostname))
    && (hostnamePrefix === undefined || m.hostname.startsWith(hostnamePrefix));
}

/**
 * The smallest set of ids the filter can be answered from, by the exact-match indexes (MAC, state, tag);
 * `undefined` when the filter has none (every machine is a candidate).
 */
function candidates(src: ListSource, f: ListFilter): Iterable<string> | undefined {
  if (f.mac !== undefined) {
    const m = src.byMac(f.mac);
    return m ? [m.id] : [];
  }
  let best: Iterable<string> | undefined;
  let bestSize = Infinity;
  if (f.state && f.state.length > 0) {
    const sets = f.state.map((s) => src.withState(s)).filter((s): s is ReadonlySet<string> => s !== undefined);
    const size = sets.reduce((n, s) => n + s.size, 0);
    if (size < bestSize) { bestSize = size; best = (function* () { for (const s of sets) yield* s; })(); }
  }
  for (const tag of f.tags ?? []) {
    const set = src.withTag(tag);
    if (!set) return [];
    if (set.size < bestSize) { bestSize = set.size; best = set; }
  }
  return best;
}

function candidateCount(src: ListSource, f: ListFilter): number {
  if (f.mac !== undefined) return src.byMac(f.mac) ? 1 : 0;
  let n = src.size;
  if (f.state && f.state.length > 0) n = Math.min(n, f.state.reduce((k, s) => k + (src.withState(s)?.size ?? 0), 0));
  for (const tag of f.tags ?? []) n = Math.min(n, src.withTag(tag)?.size ?? 0);
  return n;
}

/**
 * Counts per filter, kept exact across changes: a cached count is adjusted by every change (the registry calls
 * `update` with each before/after pair), so paging clients get their `total` in O(1) even while machines
 * change, and a write costs one predicate call per cached filter (at most MAX_CACHED).
 */
export class CountCache {
  static readonly MAX_CACHED = 256;
  private readonly entries = new Map<string, { match: (m: Machine) => boolean; n: number }>();

  count(src: ListSource, f: ListFilter): number {
    const sig = JSON.stringify([f.state ?? [], f.tags ?? [], f.mac ?? '', f.hostname ?? '', f.hostnamePrefix ?? '']);
    const hit = this.entries.get(sig);
    if (hit) return hit.n;
    const n = countNow(src, f);
    if (this.entries.size >= CountCache.MAX_CACHED) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(sig, { match: matcher(f), n });
    return n;
  }

  update(before: Machine | undefined, after: Machine | undefined): void {
    for (const e of this.entries.values()) e.n += (after && e.match(after) ? 1 : 0) - (before && e.match(before) ? 1 : 0);
  }
}

function countNow(src: ListSource, f: ListFilter): number {
  const match = matcher(f);
  const onlyIndexed = f.hostname === undefined && f.hostnamePrefix === undefined && f.mac === undefined;
  if (onlyIndexed && (f.tags ?? []).length === 0) {
    if (!f.state || f.state.length === 0) return src.size;
    return f.state.reduce((k, s) => k + (src.withState(s)?.size ?? 0), 0);
  }
  const ids = candidates(src, f);
  let n = 0;
  if (ids === undefined) {
    const all = src.view('hostname');
    for (let i = 0; i < all.length; i++) if (match(all.at(i))) n++;
    return n;
  }
  for (const id of ids) {
    const m = src.get(id);
    if (m && match(m)) n++;
  }
  return n;
}

/** One page. Results do not depend on which path (sorted-view walk or candidate sort) answers it. */
export function listPage(src: ListSource, q: ListQuery, counts: CountCache): ListPage {
  const sort = q.sort ?? 'hostname';
  const order = q.order ?? 'asc';
  const limit = Math.min(Math.max(1, q.limit ?? DEFAULT_LIMIT), MAX_LIMIT);
  const cursor = q.cursor !== undefined ? decodeCursor(q.cursor, sort, order) : undefined;
  const match = matcher(q);
  const view = src.view(sort);
  const items: Machine[] = [];
  let more = false;

  // A selective index (few candidates) beats walking the sorted view past the rows the filter rejects:
  // sorting c candidates is ~c log c, the walk ~limit * n / c. They cross near c = sqrt(limit * n).
  const c = candidateCount(src, q);
  const ids = c * c <= limit * src.size ? candidates(src, q) : undefined;
  if (ids !== undefined) {
    const rows: { m: Machine; k: Key }[] = [];
    for (const id of ids) {
      const m = src.get(id);
      if (m && match(m)) rows.push({ m, k: view.keyOf(m) });
    }
    const dir = order === 'asc' ? 1 : -1;
    rows.sort((x, y) => dir * compare(x.k, x.m.id, y.k, y.m.id));
    for (const r of rows) {
      if (cursor && dir * compare(r.k, r.m.id, cursor.key, cursor.id) <= 0) continue;
      if (items.length === limit) { more = true; break; }
      items.push(r.m);
    }
  } else {
    // The rows the filter can match may be one contiguous range of this order: a host name prefix in the
    // host name order, the filtered states in the state order. Walk only that range.
    let lo = 0;
    let hi = view.length;
    if (sort === 'hostname' && q.hostnamePrefix !== undefined) {
      lo = view.bound([q.hostnamePrefix, ''], '', false);
      hi = view.bound([`${q.hostnamePrefix}\uffff`, ''], '', false);
    } else if (sort === 'state' && q.state && q.state.length > 0) {
      const ranks = q.state.map((st) => STATE_RANK.get(st) ?? STATES.length);
      lo = view.bound([Math.min(...ranks), ''], '', false);
      hi = view.bound([Math.max(...ranks) + 1, ''], '', false);
    }
    if (order === 'asc') {
      for (let i = cursor ? Math.max(lo, view.bound(cursor.key, cursor.id, true)) : lo; i < hi; i++) {
        const m = view.at(i);
        if (!match(m)) continue;
        if (items.length === limit) { more = true; break; }
        items.push(m);
      }
    } else {
      for (let i = cursor ? Math.min(hi, view.bound(cursor.key, cursor.id, false)) - 1 : hi - 1; i >= lo; i--) {
        const m = view.at(i);
        if (!match(m)) continue;
        if (items.length === limit) { more = true; break; }
        items.push(m);
      }
    }
  }
  const last = items[items.length - 1];
  return {
    items,
    total: counts.count(src, q),
    next: more && last ? encodeCursor({ sort, order, key: view.keyOf(last), id: last.id }) : null,
  };
}
