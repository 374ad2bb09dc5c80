// buildApp(deps) makes the whole HTTP app without listen(): the HTTP service listens, tests use
// app.inject(). Everything is a plugin; routes declare JSON Schema (TypeBox) for validation,
// serialization and types.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from '../lib/logger.ts';
import type { Metrics } from '../lib/metrics.ts';
import type { RunnerStatus } from '../services/service.ts';
import { errorBody, registerErrorHandling } from './errors.ts';
import { authPlugin } from './auth.ts';
import { defaultHttpRateLimits, registerRateLimits, type HttpRateLimits } from './rate-limit.ts';
import { systemRoutes } from './routes/system.ts';
import { authRoutes } from './routes/auth.ts';
import { userRoutes } from './routes/users.ts';
import { tokenRoutes } from './routes/tokens.ts';
import { bootHttp, type BootHttpDeps } from '../services/boot-http/routes.ts';
import { machineRoutes, type MachinesApiDeps } from './routes/machines.ts';
import { eventRoutes } from './routes/events.ts';
import { resourceRoutes, type ResourcesApiDeps } from './routes/resources.ts';
import { ntpRoutes, type NtpStatusSource } from './routes/ntp.ts';
import { openApiPlugin } from './openapi.ts';
import { defaultConsoleSource, registerConsole, type ConsoleSource } from './routes/console.ts';
import { overviewRoutes } from './routes/overview.ts';
import type { AuthCore } from '../core/auth.ts';

export interface AppDeps {
  logger: Logger;
  metrics: Metrics;
  version: string;
  /** The instance id of this state dir, once the store has one. */
  instanceId: () => string | undefined;
  readiness: () => RunnerStatus;
  /** HTTP boot (/boot/...): registered when given. */
  boot?: BootHttpDeps;
  /**
   * Users, sessions and API tokens (src/core/auth.ts createAuthCore; one per process, shared with the control
   * socket). Without it only the public routes (src/api/auth.ts PUBLIC_ROUTES) are served, and registering
   * any other route fails.
   */
  auth?: AuthCore;
  /** Machines (/api/v1/machines...) and the machine event stream (/api/v1/events/stream): registered when given (needs `auth`). */
  machines?: MachinesApiDeps;
  /**
   * Subnets, leases, DNS records, BMCs, images and jobs, settings, status (src/api/routes/resources.ts):
   * registered when given (needs `auth`).
   */
  resources?: ResourcesApiDeps;
  /** The NTP service (GET /api/v1/ntp, viewer): registered when given (needs `auth`). */
  ntp?: NtpStatusSource;
  /**
   * The web console (src/api/routes/console.ts): by default the files embedded in the binary, or dist/console
   * built on demand when run from source (loaded at the first console request, not here); false: none.
   */
  console?: ConsoleSource | false;
  /** Per-client-address limits of /api/... and /boot/... (config `api`, src/api/rate-limit.ts); default: the schema's. */
  rateLimits?: HttpRateLimits;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // Our onResponse hook logs requests (debug) and counts them; fastify's own per-request lines are off.
    logController: new LogController({ disableRequestLogging: true }),
    // Closing must not wait for idle keep-alive browser connections (stop within 10 s).
    forceCloseConnections: true,
    bodyLimit: 1024 * 1024,
    // Setting keys run to 200 characters (src/api/routes/settings.ts); the router's default cap is 100.
    routerOptions: { maxParamLength: 256 },
    // Refusals made by the router itself (a malformed %-escape, an over-long parameter) get the same body
    // shape as every other error: {statusCode, code: REQUEST_INVALID, error, message}.
    frameworkErrors: (err, _req, reply) => { void (reply as FastifyReply).code(400).send(errorBody(err)); },
    return503OnClosing: true,
  }).withTypeProvider<TypeBoxTypeProvider>();

  registerErrorHandling(app);
  // Before everything else that hooks a request (the console, authentication): a flood costs one lookup each.
  registerRateLimits(app, { limits: deps.rateLimits ?? defaultHttpRateLimits(), logger: deps.logger, metrics: deps.metrics });
  // The console answers only GET/HEAD requests no route matched, for its own paths (see routes/console.ts).
  if (deps.console !== false) registerConsole(app, deps.console ?? defaultConsoleSource());
  // Callback style, like every hook a request passes: no promise per request.
  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    deps.metrics.httpRequests.inc({ route, method: req.method, status: String(reply.statusCode) });
    if (reply.statusCode >= 500) req.log.warn({ method: req.method, url: req.url, status: reply.statusCode }, 'request answered with a server error');
    else req.log.debug({ method: req.method, url: req.url, status: reply.statusCode, ms: reply.elapsedTime }, 'request');
    done();
  });
  // First: its onRoute hook must see every route (access levels, the public list).
  await app.register(authPlugin(deps.auth));
  // Second: its onRoute hook records every later route for /api/openapi.json (and /api/docs).
  if (deps.auth) await app.register(openApiPlugin({ title: 'metalbox API', version: deps.version }));
  await app.register(systemRoutes(deps));
  if (deps.auth) {
    await app.register(authRoutes(deps.auth));
    await app.register(userRoutes(deps.auth));
    await app.register(tokenRoutes(deps.auth));
  }
  if (deps.boot) await app.register(bootHttp(deps.boot));
  if (deps.machines) {
    await app.register(machineRoutes(deps.machines));
    await app.register(eventRoutes(deps.machines));
    await app.register(overviewRoutes({ registry: deps.machines.registry, store: deps.machines.store, metrics: deps.metrics, readiness: deps.readiness }));
  }
  if (deps.resources) await app.register(resourceRoutes(deps.resources, deps));
  if (deps.auth && deps.ntp) await app.register(ntpRoutes(deps.ntp));
  await app.ready();
  return app;
}
