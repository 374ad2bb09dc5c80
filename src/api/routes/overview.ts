// GET /api/v1/overview (viewer): what the console's dashboard shows in one request: machines by state and
// by tag, each rack service's phase with its key figures, and the newest events.
//
// The figures are read from the process's Prometheus registry (the same numbers /metrics exposes), so the
// dashboard and a scraper never disagree and no service grows a second set of counters. A service that is
// not part of this process (no provisioning interface, or turned off in the config) is `off`.
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { STATES } from '../../core/lifecycle.ts';
import type { MachineRegistry } from '../../core/machines.ts';
import type { Metrics } from '../../lib/metrics.ts';
import type { RunnerStatus } from '../../services/service.ts';
import type { Store } from '../../store/types.ts';
import { validatorCompiler } from './machines.ts';

export interface OverviewDeps {
  registry: MachineRegistry;
  store: Store;
  metrics: Metrics;
  readiness: () => RunnerStatus;
}

/** The rack services the dashboard shows, in its order: id (the runner's service name), label, figures. */
export const OVERVIEW_SERVICES = [
  { id: 'dhcp', runner: 'dhcp', label: 'DHCP' },
  { id: 'tftp', runner: 'tftp', label: 'TFTP' },
  { id: 'http-boot', runner: 'http', label: 'HTTP boot' },
  { id: 'dns', runner: 'dns', label: 'DNS' },
  { id: 'ntp', runner: 'ntp', label: 'NTP' },
  { id: 'bmc', runner: 'bmc', label: 'BMC poller' },
] as const;

/** A figure: a metric summed over its labels (optionally only the samples `where` accepts). */
interface FigureSpec { label: string; metric: string; where?: (labels: Record<string, string | number>) => boolean }

const FIGURES: Record<(typeof OVERVIEW_SERVICES)[number]['id'], FigureSpec[]> = {
  dhcp: [
    { label: 'requests', metric: 'metalbox_dhcp_requests_total' },
    { label: 'replies', metric: 'metalbox_dhcp_replies_total' },
    { label: 'pool exhausted', metric: 'metalbox_dhcp_pool_exhausted_total' },
    { label: 'dropped', metric: 'metalbox_dhcp_dropped_total' },
  ],
  tftp: [
    { label: 'transfers active', metric: 'metalbox_tftp_transfers_active' },
    { label: 'transfers completed', metric: 'metalbox_tftp_transfers_completed_total' },
    { label: 'transfers failed', metric: 'metalbox_tftp_transfers_failed_total' },
    { label: 'bytes sent', metric: 'metalbox_tftp_bytes_sent_total' },
  ],
  'http-boot': [
    { label: 'boot requests', metric: 'metalbox_http_requests_total', where: (l) => String(l.route ?? '').startsWith('/boot/') },
    { label: 'boot errors', metric: 'metalbox_http_requests_total', where: (l) => String(l.route ?? '').startsWith('/boot/') && Number(l.status) >= 400 },
  ],
  dns: [
    { label: 'queries', metric: 'metalbox_dns_messages_received_total' },
    { label: 'answers', metric: 'metalbox_dns_answers_total' },
    { label: 'records', metric: 'metalbox_dns_records' },
    { label: 'forwarded', metric: 'metalbox_dns_upstream_total' },
  ],
  ntp: [
    { label: 'synchronised', metric: 'metalbox_ntp_synchronised' },
    { label: 'stratum', metric: 'metalbox_ntp_stratum' },
    { label: 'requests', metric: 'metalbox_ntp_requests_total' },
  ],
  bmc: [
    { label: 'BMCs', metric: 'metalbox_bmc_count' },
    { label: 'unreachable', metric: 'metalbox_bmc_unreachable' },
    { label: 'polls', metric: 'metalbox_bmc_polls_total' },
    { label: 'failures', metric: 'metalbox_bmc_failures_total' },
  ],
};

const TOP_TAGS = 50;
const EVENTS_DEFAULT = 20;

const OverviewSchema = Type.Object({
  machines: Type.Object({
    total: Type.Integer(),
    byState: Type.Record(Type.String(), Type.Integer(), { description: 'every lifecycle state, in lifecycle order, with its count (0 included)' }),
    tags: Type.Array(Type.Object({ tag: Type.String(), count: Type.Integer() }), { description: `the ${TOP_TAGS} most used tags, most used first` }),
  }),
  services: Type.Array(Type.Object({
    id: Type.String(),
    label: Type.String(),
    state: Type.String({ description: 'the service\'s phase (running, starting, failed, ...), or off when this process does not run it' }),
    figures: Type.Array(Type.Object({
      label: Type.String(),
      value: Type.Union([Type.Number(), Type.Null()], { description: 'null when the service has not published it' }),
    })),
  })),
  events: Type.Array(Type.Object({
    id: Type.String(), at: Type.String(), type: Type.String(), actor: Type.String(), subject: Type.Optional(Type.String()),
  }), { description: 'the newest events of every kind, newest first' }),
});

const OverviewQuery = Type.Object({
  events: Type.Optional(Type.Integer({ minimum: 0, maximum: 200, description: `how many recent events, default ${EVENTS_DEFAULT}` })),
}, { additionalProperties: false });

/** Sums a metric's samples (those `where` accepts); null when the registry has no such metric. */
async function figure(metrics: Metrics, spec: FigureSpec): Promise<number | null> {
  const metric = metrics.registry.getSingleMetric(spec.metric);
  if (!metric) return null;
  const data = await metric.get();
  let sum = 0;
  for (const v of data.values) if (!spec.where || spec.where(v.labels as Record<string, string | number>)) sum += v.value;
  return sum;
}

export function overviewRoutes(deps: OverviewDeps): FastifyPluginAsync {
  return async (fastify) => {
    fastify.setValidatorCompiler(validatorCompiler);
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
    app.get('/api/v1/overview', {
      config: { access: 'viewer' },
      schema: {
        summary: 'Dashboard: machines by state and tag, each rack service with its key figures, the newest events',
        querystring: OverviewQuery,
        response: { 200: OverviewSchema },
      },
    }, async (req) => {
      const { registry } = deps;
      const byState: Record<string, number> = {};
      for (const s of STATES) byState[s] = registry.withState(s)?.size ?? 0;
      // Tags: one walk over the registry (10,000 machines: about a millisecond); the console asks every few seconds at most.
      const tagCounts = new Map<string, number>();
      const view = registry.view('hostname');
      for (let i = 0; i < view.length; i++) for (const t of view.at(i).tags) tagCounts.set(t, (tagCounts.get(t) ?? 0) + 1);
      const tags = [...tagCounts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, TOP_TAGS).map(([tag, count]) => ({ tag, count }));

      const phases = deps.readiness().services;
      const services = await Promise.all(OVERVIEW_SERVICES.map(async (s) => ({
        id: s.id,
        label: s.label,
        state: phases[s.runner] ?? 'off',
        figures: await Promise.all(FIGURES[s.id].map(async (f) => ({ label: f.label, value: await figure(deps.metrics, f) }))),
      })));

      const events = [];
      const limit = req.query.events ?? EVENTS_DEFAULT;
      if (limit > 0) {
        for await (const [, e] of deps.store.events.entries({ reverse: true, limit })) {
          events.push({ id: e.id, at: e.at, type: e.type, actor: e.actor, ...(e.subject !== undefined ? { subject: e.subject } : {}) });
        }
      }
      return { machines: { total: registry.size, byState, tags }, services, events };
    });
  };
}
