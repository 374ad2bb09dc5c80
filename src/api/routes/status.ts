// GET /api/v1/status (viewer): what `metalbox status` shows, for the console and scripts: version, uptime,
// each service's phase, store write figures, the HTTPS certificate's fingerprint, the BMC summary and DHCP
// pool totals. /readyz says only ready or not, to anyone; this says why, to users.
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { ResourcesApiDeps, StatusBase } from './resources.ts';

const StatusSchema = Type.Object({
  name: Type.Literal('metalbox'),
  version: Type.String(),
  node: Type.String(),
  instanceId: Type.Union([Type.String(), Type.Null()]),
  pid: Type.Integer(),
  startedAt: Type.String({ description: 'when this process started' }),
  uptimeSeconds: Type.Integer(),
  phase: Type.Enum(['starting', 'running', 'stopping', 'stopped']),
  services: Type.Record(Type.String(), Type.Enum(['idle', 'starting', 'running', 'stopping', 'stopped', 'failed'])),
  store: Type.Object({
    writes: Type.Integer({ description: 'write calls acknowledged (on disk) since start' }),
    syncs: Type.Integer({ description: 'fsyncs: writes share them (group commit)' }),
    maxGroup: Type.Integer({ description: 'most writes that shared one sync' }),
  }),
  https: Type.Optional(Type.Object({
    fingerprint: Type.Optional(Type.String({ description: 'SHA-256 of the certificate the console and API are served with: compare it with what the browser shows' })),
    certificate: Type.Optional(Type.String()),
    validTo: Type.Optional(Type.String()),
  })),
  bmc: Type.Optional(Type.Object({
    bmcs: Type.Integer(), sessionsActive: Type.Integer(), sessionsWaiting: Type.Integer(), sessionsPeak: Type.Integer(),
    unreachable: Type.Integer({ description: 'BMCs that stopped answering (polled slowly)' }),
  })),
  dhcp: Type.Optional(Type.Object({
    subnets: Type.Integer({ description: 'subnets the DHCP service serves' }),
    size: Type.Integer(), bound: Type.Integer(), offered: Type.Integer(), declined: Type.Integer(), free: Type.Integer(),
  })),
});

export function statusRoutes(deps: ResourcesApiDeps, base: StatusBase): FastifyPluginAsync {
  const now = deps.now ?? Date.now;
  return async (fastify) => {
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
    app.get('/api/v1/status', {
      config: { access: 'viewer' },
      schema: { summary: 'Version, uptime, services, store, HTTPS fingerprint, BMC and DHCP summaries', response: { 200: StatusSchema } },
    }, async () => {
      const r = base.readiness();
      const uptime = process.uptime();
      const https = deps.https?.();
      let dhcp;
      const pools = deps.dhcp?.pools();
      if (pools && pools.size > 0) {
        dhcp = { subnets: pools.size, size: 0, bound: 0, offered: 0, declined: 0, free: 0 };
        for (const p of pools.values()) {
          const s = p.stats(now());
          dhcp.size += s.size; dhcp.bound += s.bound; dhcp.offered += s.offered; dhcp.declined += s.declined; dhcp.free += s.free;
        }
      }
      const stats = deps.store.stats();
      return {
        name: 'metalbox' as const,
        version: base.version,
        node: process.versions.node,
        instanceId: base.instanceId() ?? null,
        pid: process.pid,
        startedAt: new Date(Date.now() - uptime * 1000).toISOString(),
        uptimeSeconds: Math.floor(uptime),
        phase: r.phase,
        services: r.services,
        store: { writes: stats.writes, syncs: stats.syncs, maxGroup: stats.maxGroup },
        ...(https ? { https } : {}),
        ...(deps.bmc ? { bmc: deps.bmc.summary() } : {}),
        ...(dhcp ? { dhcp } : {}),
      };
    });
  };
}
