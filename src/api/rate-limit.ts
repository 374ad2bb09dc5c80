// Per-client-address rate limits of the HTTP app (api.rateLimit, api.bootRateLimit): a token bucket per address
// (src/lib/rate-limit.ts) checked in the first onRequest hook, before authentication or any route's work, so a
// flood costs one Map lookup per request. Over the limit: 429 RATE_LIMITED with Retry-After (seconds until the
// bucket has a token again).
//
// Two limits, by path:
// - /api/...: the API and its docs. Keyed by the client address, also for authenticated callers: the address is
//   known before any credential is checked, and checking credentials (a password hash) is the costly part.
// - /boot/...: firmware, iPXE and the agent. A separate, generous bucket: a 500-machine boot storm is 500
//   addresses each fetching a script, a kernel, an initrd and a root file system and posting inventory, and
//   must never be limited into failure; the limit is there for one runaway client.
// Everything else (the console's files, /healthz, /readyz, /metrics) is not limited: monitoring must see a
// server under a flood, and the console's files are static. Nor is loopback (this host's own tools, benchmarks):
// it cannot come from the network.
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge } from 'prom-client';
import Value from 'typebox/value';
import { ConfigSchema, type Config } from '../config/schema.ts';
import { isLoopbackAddress } from '../lib/ipv4.ts';
import { limitedLogger } from '../lib/log-limit.ts';
import type { Logger } from '../lib/logger.ts';
import type { Metrics } from '../lib/metrics.ts';
import { RateLimiter } from '../lib/rate-limit.ts';
import { rateLimitedBody } from './errors.ts';

export type HttpRateLimits = Config['api'];

/** The schema's defaults of api.* (used when the app is built without a config: tests, tools). */
export function defaultHttpRateLimits(): HttpRateLimits {
  return Value.Default(ConfigSchema.properties.api, {}) as HttpRateLimits;
}

export interface HttpRateLimitDeps {
  limits: HttpRateLimits;
  logger: Logger;
  metrics: Metrics;
  /** Milliseconds, any monotonic origin (tests); default performance.now. */
  now?: () => number;
}

type Scope = 'api' | 'boot';

/** Adds the limits to `app` (the root instance: the hook must run for every route, before the auth plugin's). */
export function registerRateLimits(app: FastifyInstance, deps: HttpRateLimitDeps): void {
  const limiters: Record<Scope, RateLimiter<string>> = {
    api: new RateLimiter<string>(deps.limits.rateLimit),
    boot: new RateLimiter<string>(deps.limits.bootRateLimit),
  };
  if (!limiters.api.enabled && !limiters.boot.enabled) return;
  const now = deps.now ?? (() => performance.now());
  const log = limitedLogger(deps.logger);
  const counts: Record<Scope, number> = { api: 0, boot: 0 };
  const registers = [deps.metrics.registry];
  // Registered once per registry: buildApp may run more than once per process (tests), each with its own metrics.
  if (deps.metrics.registry.getSingleMetric('metalbox_http_rate_limited_total') === undefined) {
    new Counter({ name: 'metalbox_http_rate_limited_total', help: 'HTTP requests refused with 429 RATE_LIMITED, by limit (api: /api/..., boot: /boot/...)', labelNames: ['scope'], registers,
      collect() { for (const s of ['api', 'boot'] as const) { if (counts[s] > 0) this.inc({ scope: s }, counts[s]); counts[s] = 0; } } });
    new Gauge({ name: 'metalbox_http_rate_limited_clients', help: 'Client addresses an HTTP rate limiter tracks, by limit', labelNames: ['scope'], registers,
      collect() { for (const s of ['api', 'boot'] as const) this.set({ scope: s }, limiters[s].size); } });
  }
  // Callback style: no promise per request for the common case (allowed, or not limited at all).
  app.addHook('onRequest', (req, reply, done) => {
    const url = req.url;
    const scope: Scope | undefined = url.startsWith('/api/') ? 'api' : url.startsWith('/boot/') ? 'boot' : undefined;
    if (scope === undefined) return done();
    const limiter = limiters[scope];
    const key = req.ip;
    if (!limiter.enabled || isLoopbackAddress(key)) return done();
    const t = now() / 1000;
    if (limiter.allow(key, t)) return done();
    counts[scope]++;
    const after = Math.max(1, Math.ceil(limiter.retryAfter(key, t)));
    log('info', `rate-limited:${scope}`, { client: key, scope, clients: limiter.size }, 'HTTP client over its rate limit: 429');
    // Answered here: done() is not called, so nothing after this hook (authentication, the route) runs.
    void reply.code(429).header('retry-after', String(after)).send(rateLimitedBody(`too many requests from this address; try again in ${after} s`));
  });
}
