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
  /** Force how the page is found (tests and benchmarks; the result is the same): walk the sorted view, or sort the index's candidates. */
  path?: 'walk' | 'index';
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
  /** The machines in a state / with a tag (live sets: do not modify). */
  withState(state: string): ReadonlySet<Machine> | undefined;
  withTag(tag: string): ReadonlySet<Machine> | undefined;
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
function candidates(src: ListSource, f: ListFilter): Iterable<Machine> | undefined {
  if (f.mac !== undefined) {
    const m = src.byMac(f.mac);
    return m ? [m] : [];
  }
  let best: Iterable<Machine> | undefined;
  let bestSize = Infinity;
  if (f.state && f.state.length > 0) {
    const sets = f.state.map((s) => src.withState(s)).filter((s): s is ReadonlySet<Machine> => s !== undefined);
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
  const rows = candidates(src, f);
  let n = 0;
  if (rows === undefined) {
    const all = src.view('hostname');
    for (let i = 0; i < all.length; i++) if (match(all.at(i))) n++;
    return n;
  }
  for (const m of rows) if (match(m)) n++;
  return n;
}

/**
 * The exchange rate between the two paths, in walked rows per index candidate. Measured here, a candidate
 * costs 5-15 walked rows (both are memory-bound: a candidate is a cache miss or three, a walked row about
 * one), but a walk's guess is optimistic when matches cluster; with 3, `auto` stayed within 1.5x of the better
 * path on every query of test/bench/api.ts at 10,000 and 100,000 machines.
 */
const INDEX_ROW_COST = 3;

/**
 * One page. Two ways to find it, with the same result:
 * - walk: the sorted view from the cursor on, skipping rows the filter rejects, until the page is full;
 * - index: the machines an exact-match index (MAC, state, tag) names, filtered, keeping the best limit+1 by a
 *   bounded insertion (top-k), so the cost is ~c, not c log c.
 * A walk costs ~(limit+1) * range / c rows if the matches are spread evenly; they may cluster (a rack's tag in
 * host name order), so a walk that passes INDEX_ROW_COST * c rows without filling the page stops and the index
 * finishes the job: never much worse than the better of the two.
 */
export function listPage(src: ListSource, q: ListQuery, counts: CountCache): ListPage {
  const sort = q.sort ?? 'hostname';
  const order = q.order ?? 'asc';
  const dir = order === 'asc' ? 1 : -1;
  const limit = Math.min(Math.max(1, q.limit ?? DEFAULT_LIMIT), MAX_LIMIT);
  const cursor = q.cursor !== undefined ? decodeCursor(q.cursor, sort, order) : undefined;
  const match = matcher(q);
  const view = src.view(sort);

  // The rows the filter can match may be one contiguous range of this order: a host name prefix in the host
  // name order, the filtered states in the state order. A walk covers only that range.
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

  const walk = (budget: number): Machine[] | undefined => {
    const out: Machine[] = [];
    let i = dir > 0
      ? (cursor ? Math.max(lo, view.bound(cursor.key, cursor.id, true)) : lo)
      : (cursor ? Math.min(hi, view.bound(cursor.key, cursor.id, false)) - 1 : hi - 1);
    for (let seen = 0; i >= lo && i < hi; i += dir) {
      if (++seen > budget) return undefined;
      const m = view.at(i);
      if (!match(m)) continue;
      out.push(m);
      if (out.length > limit) break;
    }
    return out;
  };
  const fromIndex = (pool: Iterable<Machine>): Machine[] => {
    const best: { m: Machine; k: Key }[] = [];
    for (const m of pool) {
      if (!match(m)) continue;
      const k = view.keyOf(m);
      if (cursor && dir * compare(k, m.id, cursor.key, cursor.id) <= 0) continue;
      if (best.length > limit) {
        const worst = best[limit]!;
        if (dir * compare(k, m.id, worst.k, worst.m.id) >= 0) continue;
        best.pop();
      }
      let a = 0;
      let b = best.length;
      while (a < b) {
        const mid = (a + b) >>> 1;
        if (dir * compare(best[mid]!.k, best[mid]!.m.id, k, m.id) < 0) a = mid + 1;
        else b = mid;
      }
      best.splice(a, 0, { m, k });
    }
    return best.map((r) => r.m);
  };

  const c = candidateCount(src, q);
  const range = hi - lo;
  const pool = c < range || q.path === 'index' ? candidates(src, q) : undefined;
  let rows: Machine[];
  if (pool === undefined || q.path === 'walk') rows = walk(Infinity) ?? [];
  else {
    const walkGuess = ((limit + 1) * range) / Math.max(c, 1);
    rows = (q.path === undefined && walkGuess < INDEX_ROW_COST * c ? walk(INDEX_ROW_COST * c) : undefined) ?? fromIndex(pool);
  }
  const more = rows.length > limit;
  const items = more ? rows.slice(0, limit) : rows;
  const last = items[items.length - 1];
  return {
    items,
    total: counts.count(src, q),
    next: more && last ? encodeCursor({ sort, order, key: view.keyOf(last), id: last.id }) : null,
  };
}
