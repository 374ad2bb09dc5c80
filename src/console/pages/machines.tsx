// Machines: the list, fast at 10,000+ machines.
//
// - The server filters, sorts and pages (GET /api/v1/machines, keyset cursors); the list asks only for the
//   fields it shows. Pages are a prefix: rows [0, loaded) are known, and scrolling further fetches the next
//   pages (a jump to the end fetches the pages in between: 500 rows each, 20 requests at 10,000).
// - Virtual scrolling: a spacer of total × row height keeps the scroll bar true; only the rows in view (plus
//   a few) exist in the DOM, absolutely placed.
// - Live: machine events from the stream update a loaded row in place; creations and deletions reload the
//   loaded pages (debounced), keeping the scroll position.
// - Keyboard: the rows form a roving tab stop: arrows, Page Up/Down, Home/End move; Enter opens; Space selects.
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from 'preact/hooks';
import { ApiError, get, post, qs } from '../api.tsx';
import { useLiveEvents } from '../live.tsx';
import { Link, navigate, useLocation } from '../router.tsx';
import { Notice, StateBadge, when } from '../ui.tsx';

export const STATES = ['New', 'Commissioning', 'Ready', 'Allocated', 'Deploying', 'Deployed', 'Releasing', 'Rescue', 'Broken',
  'FailedCommissioning', 'FailedDeployment', 'FailedReleasing'] as const;
const ROW_H = 36;
const PAGE = 500;
const OVERSCAN = 8;
const FIELDS = ['hostname', 'state', 'tags', 'macs', 'updatedAt'];

interface Row { id: string; hostname: string; state: string; tags: string[]; macs: string[]; updatedAt: string }
interface Page { items: Row[]; total: number; next: string | null }

interface Query { state: string[]; tag: string[]; hostname: string; sort: string; order: string }

function queryFrom(params: URLSearchParams): Query {
  const list = (k: string) => (params.get(k) ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  return { state: list('state'), tag: list('tag'), hostname: params.get('q') ?? '', sort: params.get('sort') ?? 'hostname', order: params.get('order') ?? 'asc' };
}
function urlOf(q: Query): string {
  return `/machines${qs({ state: q.state, tag: q.tag, q: q.hostname, sort: q.sort === 'hostname' ? undefined : q.sort, order: q.order === 'asc' ? undefined : q.order })}`;
}

/** The loaded prefix of the list for one query; `ensure(n)` fetches pages until n rows are known. */
class ListLoader {
  rows: Row[] = [];
  total: number | undefined;
  next: string | null | undefined;
  error: string | undefined;
  private inflight: Promise<void> | undefined;
  private generation = 0;
  index = new Map<string, number>();

  constructor(private q: Query, private readonly changed: () => void) {}

  reset(q: Query): void {
    this.q = q; this.rows = []; this.total = undefined; this.next = undefined; this.error = undefined; this.index.clear();
    this.generation++; this.inflight = undefined;
  }

  private url(cursor: string | null | undefined, limit: number): string {
    const hostname = /^[A-Za-z0-9-]+$/.test(this.q.hostname) ? this.q.hostname : undefined;
    return `/api/v1/machines${qs({ state: this.q.state, tag: this.q.tag, hostname, sort: this.q.sort, order: this.q.order, limit, fields: FIELDS, cursor: cursor ?? undefined })}`;
  }

  async ensure(n: number): Promise<void> {
    while (this.next !== null && this.rows.length < n) {
      if (!this.inflight) {
        const gen = this.generation;
        this.inflight = get<Page>(this.url(this.next, PAGE)).then((p) => {
          if (gen !== this.generation) return;
          for (const r of p.items) { this.index.set(r.id, this.rows.length); this.rows.push(r); }
          this.total = p.total; this.next = p.next; this.error = undefined;
          this.changed();
        }, (err: unknown) => {
          if (gen !== this.generation) return;
          this.error = err instanceof ApiError ? `${err.message} (${err.code})` : String(err);
          this.next = null;
          this.changed();
        }).finally(() => { if (gen === this.generation) this.inflight = undefined; });
      }
      const mine = this.inflight;
      await mine;
      if (this.inflight === mine) this.inflight = undefined;
      if (this.error) return;
    }
  }

  /** Reloads as many rows as are loaded now (after creations/deletions), in one request when it fits. */
  async refresh(): Promise<void> {
    const want = Math.max(PAGE, this.rows.length);
    const gen = ++this.generation;
    this.inflight = undefined;
    const rows: Row[] = [];
    let next: string | null = null;
    let total = 0;
    let cursor: string | null | undefined;
    do {
      const p = await get<Page>(this.url(cursor, 1000));
      if (gen !== this.generation) return;
      rows.push(...p.items); next = p.next; total = p.total; cursor = p.next;
    } while (next !== null && rows.length < want);
    this.rows = rows; this.next = next; this.total = total;
    this.index = new Map(rows.map((r, i) => [r.id, i]));
    this.changed();
  }

  patch(id: string, fields: Partial<Row>): boolean {
    const i = this.index.get(id);
    if (i === undefined) return false;
    this.rows[i] = { ...this.rows[i]!, ...fields };
    return true;
  }
}

type Bulk = 'commission' | 'deploy' | 'release' | 'power-on' | 'power-off' | 'power-cycle';
const BULK: [Bulk, string][] = [['commission', 'Commission'], ['deploy', 'Deploy'], ['release', 'Release'], ['power-on', 'Power on'], ['power-off', 'Power off'], ['power-cycle', 'Power cycle']];

export function MachinesPage({ role }: { role: string }) {
  const { query: params } = useLocation();
  const q = useMemo(() => queryFrom(params), [params.toString()]);
  const [, setTick] = useState(0);
  const rerender = useCallback(() => setTick((n) => n + 1), []);
  const loader = useRef<ListLoader | undefined>(undefined);
  loader.current ??= new ListLoader(q, rerender);
  const L = loader.current;
  const viewport = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [height, setHeight] = useState(600);
  const [focusIndex, setFocusIndex] = useState(0);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [bulkState, setBulkState] = useState<{ running: boolean; done: number; failed: { id: string; message: string }[]; total: number; action: string } | undefined>();
  const [tagText, setTagText] = useState(q.tag.join(', '));
  const [search, setSearch] = useState(q.hostname);
  const firstRowsMarked = useRef(false);
  const refreshTimer = useRef<number | undefined>(undefined);

  // A new query: start over at the top.
  const qKey = JSON.stringify(q);
  const lastKey = useRef(qKey);
  if (lastKey.current !== qKey) {
    lastKey.current = qKey;
    L.reset(q);
    firstRowsMarked.current = true; // only the first load of the page is "first render"
  }
  useEffect(() => {
    viewport.current?.scrollTo({ top: 0 });
    setScrollTop(0);
    setFocusIndex(0);
    setSelected(new Set());
  }, [qKey]);

  const first = Math.max(0, Math.floor(scrollTop / ROW_H) - OVERSCAN);
  const last = Math.min((L.total ?? PAGE) - 1, Math.ceil((scrollTop + height) / ROW_H) + OVERSCAN);
  useEffect(() => { void L.ensure(last + 1); }, [last, qKey]);

  useLayoutEffect(() => {
    const el = viewport.current;
    if (!el) return;
    const measure = () => setHeight(el.clientHeight);
    measure();
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  // The list's first render: marked for the browser test (and anyone profiling) once rows are in the DOM.
  useEffect(() => {
    if (!firstRowsMarked.current && L.rows.length > 0) {
      firstRowsMarked.current = true;
      requestAnimationFrame(() => performance.mark('mbx:machines:first-rows'));
    }
  });

  useLiveEvents((e) => {
    if (e === 'reset') { void L.refresh(); return; }
    if (e.type === 'machine.state' && e.subject && typeof e.data?.to === 'string') {
      if (L.patch(e.subject, { state: e.data.to, updatedAt: e.at })) rerender();
    } else if (e.type === 'machine.updated' && e.subject) {
      void get<Row>(`/api/v1/machines/${e.subject}`).then((m) => { if (L.patch(m.id, { hostname: m.hostname, tags: m.tags, macs: m.macs, updatedAt: m.updatedAt })) rerender(); }, () => {});
    } else if (e.type === 'machine.created' || e.type === 'machine.deleted') {
      window.clearTimeout(refreshTimer.current);
      refreshTimer.current = window.setTimeout(() => void L.refresh(), 1500);
    }
  });

  const setQuery = (patch: Partial<Query>) => navigate(urlOf({ ...q, ...patch }));
  const toggleState = (s: string) => setQuery({ state: q.state.includes(s) ? q.state.filter((x) => x !== s) : [...q.state, s] });

  const focusRow = (i: number) => {
    const total = L.total ?? 0;
    if (total === 0) return;
    const n = Math.max(0, Math.min(total - 1, i));
    setFocusIndex(n);
    const el = viewport.current!;
    const top = n * ROW_H;
    if (top < el.scrollTop + ROW_H) el.scrollTop = Math.max(0, top - ROW_H);
    else if (top + ROW_H > el.scrollTop + el.clientHeight) el.scrollTop = top + 2 * ROW_H - el.clientHeight;
    requestAnimationFrame(() => (el.querySelector(`[data-index="${n}"]`) as HTMLElement | null)?.focus());
  };
  const toggleSelect = (id: string) => setSelected((s) => { const c = new Set(s); if (c.has(id)) c.delete(id); else c.add(id); return c; });

  const onKey = (e: KeyboardEvent, i: number, row: Row | undefined) => {
    const page = Math.max(1, Math.floor(height / ROW_H) - 1);
    const moves: Record<string, number> = { ArrowDown: i + 1, ArrowUp: i - 1, PageDown: i + page, PageUp: i - page, Home: 0, End: (L.total ?? 1) - 1 };
    if (e.key in moves) { e.preventDefault(); focusRow(moves[e.key]!); } else if (e.key === 'Enter' && row) { e.preventDefault(); navigate(`/machines/${row.id}`); } else if (e.key === ' ' && row) { e.preventDefault(); toggleSelect(row.id); }
  };

  const runBulk = async (action: Bulk) => {
    const ids = [...selected];
    if (ids.length === 0) return;
    const label = BULK.find(([a]) => a === action)![1];
    if (!window.confirm(`${label} ${ids.length} machine${ids.length === 1 ? '' : 's'}?`)) return;
    const state = { running: true, done: 0, failed: [] as { id: string; message: string }[], total: ids.length, action: label };
    setBulkState({ ...state });
    let next = 0;
    const worker = async () => {
      while (next < ids.length) {
        const id = ids[next++]!;
        try {
          if (action.startsWith('power-')) await post(`/api/v1/machines/${id}/power`, { action: action.slice(6) });
          else await post(`/api/v1/machines/${id}/actions/${action}`, {});
        } catch (err) {
          state.failed.push({ id, message: err instanceof ApiError ? `${err.code}: ${err.message}` : String(err) });
        }
        state.done++;
        setBulkState({ ...state, failed: [...state.failed] });
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    setBulkState({ ...state, running: false, failed: [...state.failed] });
  };

  const total = L.total;
  const rows: preact.JSX.Element[] = [];
  if (total !== undefined) {
    for (let i = first; i <= last && i < total; i++) {
      const r = L.rows[i];
      const sel = r ? selected.has(r.id) : false;
      rows.push(
        // Keyed by index: a row's element (and the focus in it) stays with its row while the window scrolls.
        <div key={i} role="row" class={`vrow${sel ? ' selected' : ''}`} aria-rowindex={i + 2} aria-selected={sel} data-index={i} data-id={r?.id}
          tabIndex={i === focusIndex ? 0 : -1} style={{ transform: `translateY(${i * ROW_H}px)` }}
          onKeyDown={(e) => onKey(e, i, r)} onFocus={() => setFocusIndex(i)}
          onClick={(e) => { if (r && !(e.target as HTMLElement).closest('input,a')) navigate(`/machines/${r.id}`); }}>
          {r ? (
            <>
              <span role="gridcell" class="c-sel"><input type="checkbox" tabIndex={-1} checked={sel} aria-label={`Select ${r.hostname}`} onChange={() => toggleSelect(r.id)} /></span>
              <span role="gridcell" class="c-host"><Link href={`/machines/${r.id}`}>{r.hostname}</Link></span>
              <span role="gridcell" class="c-state"><StateBadge state={r.state} /></span>
              <span role="gridcell" class="c-tags">{r.tags.join(' ')}</span>
              <span role="gridcell" class="c-mac"><code>{r.macs[0] ?? ''}</code>{r.macs.length > 1 ? ` +${r.macs.length - 1}` : ''}</span>
              <span role="gridcell" class="c-upd">{when(r.updatedAt)}</span>
            </>
          ) : <span role="gridcell" class="c-loading">Loading…</span>}
        </div>,
      );
    }
  }

  const canAct = role !== 'viewer';
  const loadedAll = L.rows.length > 0 && L.rows.every((r) => selected.has(r.id));
  return (
    <section aria-labelledby="machines-title" class="machines">
      <div class="page-head">
        <h1 id="machines-title">Machines</h1>
        <span class="muted" role="status" aria-live="polite" data-testid="machine-count">{total === undefined ? 'Loading…' : `${total.toLocaleString()} machine${total === 1 ? '' : 's'}`}</span>
      </div>
      <form class="filters" role="search" aria-label="Filter machines" onSubmit={(e) => {
        e.preventDefault();
        setQuery({ hostname: search.trim(), tag: tagText.split(/[\s,]+/).map((t) => t.trim().toLowerCase()).filter(Boolean) });
      }}>
        <fieldset class="state-filter">
          <legend>State</legend>
          {STATES.map((s) => (
            <button type="button" class={`chip${q.state.includes(s) ? ' on' : ''}`} aria-pressed={q.state.includes(s)} onClick={() => toggleState(s)}>{s}</button>
          ))}
        </fieldset>
        <div class="filter-row">
          <label>Host name contains <input name="q" value={search} onInput={(e) => setSearch((e.currentTarget as HTMLInputElement).value)} /></label>
          <label>Tags (all of) <input name="tag" value={tagText} placeholder="gpu, rack-01" onInput={(e) => setTagText((e.currentTarget as HTMLInputElement).value)} /></label>
          <label>Sort by <select name="sort" value={q.sort} onChange={(e) => setQuery({ sort: (e.currentTarget as HTMLSelectElement).value })}>
            <option value="hostname">host name</option><option value="state">state</option><option value="createdAt">created</option><option value="updatedAt">updated</option>
          </select></label>
          <label>Order <select name="order" value={q.order} onChange={(e) => setQuery({ order: (e.currentTarget as HTMLSelectElement).value })}>
            <option value="asc">ascending</option><option value="desc">descending</option>
          </select></label>
          <button type="submit">Apply</button>
          {(q.state.length > 0 || q.tag.length > 0 || q.hostname) && <button type="button" class="ghost" onClick={() => { setSearch(''); setTagText(''); navigate('/machines'); }}>Clear filters</button>}
        </div>
      </form>
      {canAct && (
        <div class="bulk" role="toolbar" aria-label="Actions on selected machines">
          <span>{selected.size} selected</span>
          {BULK.map(([a, label]) => <button type="button" disabled={selected.size === 0 || bulkState?.running} onClick={() => void runBulk(a)}>{label}</button>)}
          {selected.size > 0 && <button type="button" class="ghost" onClick={() => setSelected(new Set())}>Clear selection</button>}
        </div>
      )}
      {bulkState && (
        <Notice kind={bulkState.failed.length > 0 ? 'error' : bulkState.running ? 'info' : 'ok'}>
          {bulkState.action}: {bulkState.done} of {bulkState.total} done{bulkState.failed.length > 0 ? `, ${bulkState.failed.length} refused` : ''}.
          {bulkState.failed.length > 0 && <ul>{bulkState.failed.slice(0, 10).map((f) => <li><Link href={`/machines/${f.id}`}>{f.id}</Link>: {f.message}</li>)}</ul>}
        </Notice>
      )}
      {L.error && <Notice kind="error">{L.error}</Notice>}
      <div class="vtable" role="grid" aria-label="Machines" aria-rowcount={(total ?? 0) + 1} aria-multiselectable="true">
        <div role="row" class="vrow vhead" aria-rowindex={1}>
          <span role="columnheader" class="c-sel"><input type="checkbox" aria-label="Select every loaded machine" checked={loadedAll} onChange={() => setSelected(loadedAll ? new Set() : new Set(L.rows.map((r) => r.id)))} /></span>
          <span role="columnheader" class="c-host">Host name</span>
          <span role="columnheader" class="c-state">State</span>
          <span role="columnheader" class="c-tags">Tags</span>
          <span role="columnheader" class="c-mac">MAC</span>
          <span role="columnheader" class="c-upd">Updated</span>
        </div>
        <div class="vviewport" ref={viewport} data-testid="machine-viewport" onScroll={(e) => {
          const top = (e.currentTarget as HTMLDivElement).scrollTop;
          requestAnimationFrame(() => setScrollTop(top));
        }}>
          <div class="vspacer" style={{ height: `${(total ?? 0) * ROW_H}px` }}>{rows}</div>
          {total === 0 && <p class="empty">No machine matches.</p>}
        </div>
      </div>
    </section>
  );
}
