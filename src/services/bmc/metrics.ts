// Prometheus metrics of the BMC service, on the process registry (src/lib/metrics.ts).
import { Counter, Gauge, Histogram } from 'prom-client';
import type { Metrics } from '../../lib/metrics.ts';

export interface BmcMetrics {
  polls: Counter<'result'>;
  failures: Counter<'op' | 'code'>;
  actions: Counter<'action' | 'result'>;
  duration: Histogram<'op'>;
}

export function createBmcMetrics(metrics: Metrics, live: () => { active: number; waiting: number; bmcs: number; unreachable: number }): BmcMetrics {
  const registers = [metrics.registry];
  new Gauge({ name: 'metalbox_bmc_sessions_active', help: 'BMC operations running now (capped by bmc.maxSessions)', registers, collect() { this.set(live().active); } });
  new Gauge({ name: 'metalbox_bmc_sessions_waiting', help: 'BMC operations waiting for a session slot', registers, collect() { this.set(live().waiting); } });
  new Gauge({ name: 'metalbox_bmc_count', help: 'BMCs registered', registers, collect() { this.set(live().bmcs); } });
  new Gauge({ name: 'metalbox_bmc_unreachable', help: 'BMCs marked unreachable (bmc.unreachableAfter consecutive failures)', registers, collect() { this.set(live().unreachable); } });
  return {
    polls: new Counter({ name: 'metalbox_bmc_polls_total', help: 'Power state polls, by result (ok, failed)', labelNames: ['result'], registers }),
    failures: new Counter({ name: 'metalbox_bmc_failures_total', help: 'Failed BMC operations, by operation and error code', labelNames: ['op', 'code'], registers }),
    actions: new Counter({ name: 'metalbox_bmc_actions_total', help: 'Power and boot device requests, by action and result (done, noop, requested, failed)', labelNames: ['action', 'result'], registers }),
    duration: new Histogram({
      name: 'metalbox_bmc_operation_seconds', help: 'Time a BMC operation held its session, by operation', labelNames: ['op'], registers,
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    }),
  };
}
