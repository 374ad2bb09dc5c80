// Prometheus metrics. One registry per process, made by main and handed to every service, so tests
// can build their own and nothing leaks between them through prom-client's global registry.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

export type { Registry };

export interface Metrics {
  readonly registry: Registry;
  /** 1 while a service is started, 0 otherwise; label `service`. */
  readonly serviceUp: Gauge<'service'>;
  /** HTTP requests answered, by route pattern, method and status. */
  readonly httpRequests: Counter<'route' | 'method' | 'status'>;
}

export function createMetrics(options: { processMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.processMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'metalbox_' });
  return {
    registry,
    serviceUp: new Gauge({ name: 'metalbox_service_up', help: 'Whether a service is started (1) or not (0)', labelNames: ['service'], registers: [registry] }),
    httpRequests: new Counter({ name: 'metalbox_http_requests_total', help: 'HTTP requests answered', labelNames: ['route', 'method', 'status'], registers: [registry] }),
  };
}

/** Exposes the store's group-commit figures, read at scrape time. */
export function observeStore(
  metrics: Metrics,
  stats: () => { syncs: number; writes: number; maxGroup: number },
  health?: () => { writable: boolean; freeBytes: number; refused: number; recoveries: number },
): void {
  const counter = (name: string, help: string, pick: () => number) =>
    new Counter({
      name, help, registers: [metrics.registry],
      collect() { this.reset(); this.inc(pick()); },
    });
  const gauge = (name: string, help: string, pick: () => number) =>
    new Gauge({ name, help, registers: [metrics.registry], collect() { this.set(pick()); } });
  counter('metalbox_store_syncs_total', 'Durable (fsync) batches written by the store', () => stats().syncs);
  counter('metalbox_store_writes_total', 'Store writes acknowledged', () => stats().writes);
  gauge('metalbox_store_max_group', 'Most writes that have shared one sync', () => stats().maxGroup);
  if (!health) return;
  gauge('metalbox_store_writable', '1 while the store accepts writes; 0 under the free-space reserve (store.reserveMiB) or after a failed write until LevelDB is reopened', () => (health().writable ? 1 : 0));
  gauge('metalbox_store_free_bytes', 'Free bytes of the state file system at the last measurement, less what was written since', () => health().freeBytes);
  counter('metalbox_store_refused_writes_total', 'Writes the store refused (disk under the reserve, or after a failed write)', () => health().refused);
  counter('metalbox_store_recoveries_total', 'Times the store reopened LevelDB after a failed write', () => health().recoveries);
}
