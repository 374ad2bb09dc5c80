// buildApp(deps) makes the whole HTTP app without listen(): the HTTP service listens, tests use
// app.inject(). Everything is a plugin; routes declare JSON Schema (TypeBox) for validation,
// serialization and types.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from '../lib/logger.ts';
import type { Metrics } from '../lib/metrics.ts';
import type { RunnerStatus } from '../services/service.ts';
import { registerErrorHandling } from './errors.ts';
import { systemRoutes } from './routes/system.ts';
import { bootHttp, type BootHttpDeps } from '../services/boot-http/routes.ts';

export interface AppDeps {
  logger: Logger;
  metrics: Metrics;
  version: string;
  /** The instance id of this state dir, once the store has one. */
  instanceId: () => string | undefined;
  readiness: () => RunnerStatus;
  /** HTTP boot (/boot/...): registered when given. */
  boot?: BootHttpDeps;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // Our onResponse hook logs requests (debug) and counts them; fastify's own per-request lines are off.
    logController: new LogController({ disableRequestLogging: true }),
    // Closing must not wait for idle keep-alive browser connections (stop within 10 s).
    forceCloseConnections: true,
    bodyLimit: 1024 * 1024,
    return503OnClosing: true,
  }).withTypeProvider<TypeBoxTypeProvider>();

  registerErrorHandling(app);
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    deps.metrics.httpRequests.inc({ route, method: req.method, status: String(reply.statusCode) });
    if (reply.statusCode >= 500) req.log.warn({ method: req.method, url: req.url, status: reply.statusCode }, 'request answered with a server error');
    else req.log.debug({ method: req.method, url: req.url, status: reply.statusCode, ms: reply.elapsedTime }, 'request');
  });
  await app.register(systemRoutes(deps));
  if (deps.boot) await app.register(bootHttp(deps.boot));
  await app.ready();
  return app;
}
