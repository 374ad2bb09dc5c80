// Health, readiness, metrics and version. /healthz, /readyz and /metrics are for systemd, load
// balancers and scrapers, carry no secrets and are public (src/api/auth.ts PUBLIC_ROUTES);
// /api/v1/version tells clients what they talk to, and only logged-in ones (it names the exact build).
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { AppDeps } from '../app.ts';

export const VersionSchema = Type.Object({
  name: Type.Literal('metalbox'),
  version: Type.String(),
  node: Type.String(),
  instanceId: Type.Union([Type.String(), Type.Null()], { description: 'made at the first start of this state dir; stable across restarts' }),
});

const ReadySchema = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('not-ready')]),
  phase: Type.String(),
  services: Type.Record(Type.String(), Type.String()),
});

export function systemRoutes(deps: AppDeps): FastifyPluginAsync {
  return async (fastify) => {
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

    app.get('/healthz', {
      config: { access: 'public' },
      schema: { response: { 200: Type.Object({ status: Type.Literal('ok') }) } },
    }, async () => ({ status: 'ok' as const }));

    app.get('/readyz', {
      config: { access: 'public' },
      schema: { response: { 200: ReadySchema, 503: ReadySchema } },
    }, async (_req, reply) => {
      const r = deps.readiness();
      const ready = r.phase === 'running';
      return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not-ready', phase: r.phase, services: r.services });
    });

    app.get('/metrics', { config: { access: 'public' } }, async (_req, reply) => {
      const text = await deps.metrics.registry.metrics();
      return reply.type(deps.metrics.registry.contentType).send(text);
    });

    // Without auth deps (unit tests of the public routes) there is nobody who could call it.
    if (!deps.auth) return;
    app.get('/api/v1/version', {
      config: { access: 'viewer' },
      schema: { response: { 200: VersionSchema } },
    }, async () => ({
      name: 'metalbox' as const,
      version: deps.version,
      node: process.versions.node,
      instanceId: deps.instanceId() ?? null,
    }));
  };
}
