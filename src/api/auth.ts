// Authentication, authorization and audit for every HTTP route.
//
// HOW TO DECLARE A ROUTE
//
//   app.post('/api/v1/machines/:id/deploy', {
//     config: { access: 'operator' },          // 'viewer' | 'operator' | 'admin' (| 'public', see below)
//     schema: { params: ..., body: ..., response: { 200: ... } },
//   }, async (req) => {
//     const user = requireUser(req);           // AuthUser {id, username, role, via, tokenId}; req.user is set on
//                                              // every non-public route before the handler runs
//     await store.write([change, events.op(req.auditEvent({ type: 'machine.deploy', subject: id, data: { image } }))]);
//     ...
//   });
//
// - `access` is the least role that may call the route: viewer < operator < admin. A route that declares
//   nothing is 'admin' (closed by default).
// - 'public' is allowed only for the routes listed in PUBLIC_ROUTES below; declaring it anywhere else fails
//   at startup, so no route is opened by accident. Add to that list deliberately (the route enumeration
//   test in test/unit/api-auth.test.ts checks every registered route against it).
// - Audit: every successful state-changing request (not GET/HEAD/OPTIONS) is an event. The precise way is the
//   one above: `req.auditEvent({type, subject, data})` fills in the actor (the user name) and the client
//   address and marks the request audited; put `events.op(thatEvent)` in the same store batch as the change,
//   so the change and its audit record are durable together or not at all. A request that succeeds without
//   having called `req.auditEvent` gets a generic event `api.request` (route, method, status, address) written
//   before the response leaves, so nothing goes unrecorded; `config: { audit: false }` opts out (only for
//   routes that change nothing, e.g. a POST that is really a query); `config: { audit: 'machine.power' }` names
//   the generic event's type instead. Core code takes an `Audit` function (src/core/users.ts): pass
//   `(e) => req.auditEvent(e)`; the CLI passes `auditAs('cli:root')`.
// - Cookie-authenticated state-changing requests need the session's CSRF token in `X-CSRF-Token`; bearer
//   token requests need none. Routes do nothing for this.
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import type { NewEvent } from '../core/events.ts';
import type { AuthCore } from '../core/auth.ts';
import { Sessions } from '../core/sessions.ts';
import { roleAtLeast, type AuditInput, type Role } from '../core/users.ts';
import { MetalboxError, isMetalboxError } from '../lib/errors.ts';

/** The least role a route admits; 'public' needs no credentials (PUBLIC_ROUTES only). */
export type Access = 'public' | Role;
export type { AuditInput, Role };

/** Who is calling, on every authenticated request. */
export interface AuthUser {
  id: string;
  username: string;
  /** The effective role: an API token's role is capped at its owner's. */
  role: Role;
  via: 'token' | 'session';
  /** The id of the API token or session that authenticated the request. */
  tokenId: string;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Least role that may call this route (default 'admin'). See the top of src/api/auth.ts. */
    access?: Access;
    /**
     * The generic audit event of a state-changing request whose handler did not call `req.auditEvent`: a string
     * is its type (default 'api.request'); `false` means the route changes nothing (no event).
     */
    audit?: false | string;
  }
  interface FastifyRequest {
    /** The caller; `undefined` only on public routes called without credentials. */
    user: AuthUser | undefined;
    /** The audit event for this request's state change (actor and address filled in); marks the request audited. */
    auditEvent(input: AuditInput): NewEvent;
  }
}

/**
 * The routes anyone may call without credentials: THE list (the auth hook and the tests both read it).
 * `url` is the route as registered; `/boot/*` covers every route under /boot/. HEAD goes with GET.
 */
export const PUBLIC_ROUTES: readonly { method: 'GET' | 'POST' | '*'; url: string; why: string }[] = [
  { method: 'GET', url: '/healthz', why: 'liveness, for systemd and load balancers' },
  { method: 'GET', url: '/readyz', why: 'readiness, for load balancers' },
  { method: 'GET', url: '/metrics', why: 'Prometheus scrapers; no secrets in it' },
  { method: 'POST', url: '/api/v1/login', why: 'where credentials are exchanged for a session' },
  { method: '*', url: '/boot/*', why: 'firmware and iPXE cannot authenticate; the boot agent uses per-boot tokens (src/core/boot-tokens.ts)' },
];

export function isPublicRoute(method: string, url: string): boolean {
  const m = method === 'HEAD' ? 'GET' : method;
  return PUBLIC_ROUTES.some((r) => (r.method === '*' || r.method === m)
    && (r.url.endsWith('/*') ? url.startsWith(r.url.slice(0, -1)) : url === r.url));
}

/** A registered route and who may call it, as the auth hook resolved it. */
export interface RouteAccess { method: string; url: string; access: Access }

/** Host-only, Secure, HttpOnly, SameSite=Strict, Path=/ (the `__Host-` prefix makes browsers insist on that). */
export const SESSION_COOKIE = '__Host-mbx_session';
export const CSRF_HEADER = 'x-csrf-token';
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const ACCESS_LEVELS: readonly Access[] = ['public', 'viewer', 'operator', 'admin'];
const PRUNE_EVERY_MS = 60 * 60 * 1000;

const tables = new WeakMap<FastifyInstance, RouteAccess[]>();
/** Every route the app registered, with its access level (for the route enumeration test and /docs). */
export function routeTable(app: FastifyInstance): readonly RouteAccess[] {
  return tables.get(app) ?? [];
}

/** The value of the session cookie in a request, if any (the first one, if a client sends several). */
export function sessionCookieOf(req: FastifyRequest): string | undefined {
  const header = req.headers.cookie;
  if (typeof header !== 'string') return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function setSessionCookie(reply: FastifyReply, value: string, maxAgeSeconds: number): void {
  void reply.header('set-cookie', `${SESSION_COOKIE}=${value}; Path=/; Max-Age=${Math.floor(maxAgeSeconds)}; HttpOnly; Secure; SameSite=Strict`);
}

export function clearSessionCookie(reply: FastifyReply): void {
  void reply.header('set-cookie', `${SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict`);
}

/** The caller of an authenticated route (AUTH_REQUIRED if there is none, which the hook already prevents). */
export function requireUser(req: FastifyRequest): AuthUser {
  if (!req.user) throw new MetalboxError('AUTH_REQUIRED', 'log in or send Authorization: Bearer TOKEN');
  return req.user;
}

/**
 * The auth plugin: register it on the root instance before any route. Without `core`, only PUBLIC_ROUTES may
 * be registered (an app with no user store must not grow a route nobody could call, or everybody could).
 */
export function authPlugin(core: AuthCore | undefined): FastifyPluginAsync {
  const plugin: FastifyPluginAsync = async (app) => {
    const table: RouteAccess[] = [];
    tables.set(app, table);
    const audited = new WeakSet<FastifyRequest>();

    app.addHook('onRoute', (route: RouteOptions) => {
      const methods = (Array.isArray(route.method) ? route.method : [route.method]).map(String);
      const declared = route.config?.access;
      if (declared !== undefined && !ACCESS_LEVELS.includes(declared)) throw new TypeError(`${route.url}: config.access must be one of ${ACCESS_LEVELS.join(', ')}`);
      const listed = methods.map((m) => isPublicRoute(m, route.url));
      if (listed.some((l) => l !== listed[0])) throw new TypeError(`${methods.join('|')} ${route.url}: only some of its methods are in PUBLIC_ROUTES; split the route`);
      if (declared === 'public' && !listed[0]) {
        throw new TypeError(`${methods.join('|')} ${route.url} declares access 'public' but is not in PUBLIC_ROUTES (src/api/auth.ts); add it there if it must be public`);
      }
      if (listed[0] && declared !== undefined && declared !== 'public') {
        throw new TypeError(`${methods.join('|')} ${route.url} is in PUBLIC_ROUTES but declares access '${declared}'`);
      }
      const access: Access = listed[0] ? 'public' : declared ?? 'admin';
      if (!core && access !== 'public') {
        throw new TypeError(`${methods.join('|')} ${route.url} needs '${access}' access, but buildApp got no auth deps: only public routes can be served without a user store`);
      }
      route.config = { ...route.config, access };
      for (const method of methods) table.push({ method, url: route.url, access });
    });

    app.decorateRequest('user', undefined);
    app.decorateRequest('auditEvent', function auditEvent(this: FastifyRequest, input: AuditInput): NewEvent {
      audited.add(this);
      return {
        type: input.type,
        actor: this.user?.username ?? 'anonymous',
        ...(input.subject !== undefined ? { subject: input.subject } : {}),
        data: { ...input.data, address: this.ip },
      };
    });

    if (!core) return;

    // Callback style: a public route (every /boot request of a storm) costs a lookup and no promise.
    app.addHook('onRequest', (req, reply, done) => {
      if (req.is404) return done();
      const access = req.routeOptions.config.access ?? 'admin'; // a route that escaped onRoute is closed
      if (access === 'public') return done();
      authenticate(core, req, reply).then((user) => {
        req.user = user;
        if (!roleAtLeast(user.role, access)) {
          throw new MetalboxError('AUTH_FORBIDDEN', `this needs the ${access} role; ${user.username} acts as ${user.role}`);
        }
      }).then(() => done(), (err: unknown) => done(err as Error));
    });

    app.addHook('onError', async (req, reply, err) => {
      if (isMetalboxError(err, 'AUTH_RATE_LIMITED')) {
        const after = Number(err.details?.retryAfterSeconds);
        void reply.header('retry-after', String(Number.isFinite(after) && after > 0 ? Math.ceil(after) : 1));
      } else if (isMetalboxError(err, 'AUTH_REQUIRED')) {
        // RFC 6750 §3: a 401 names the scheme; error= only when credentials were sent.
        void reply.header('www-authenticate', 'Bearer realm="metalbox"');
      } else if (isMetalboxError(err, 'AUTH_INVALID') && typeof req.headers.authorization === 'string') {
        void reply.header('www-authenticate', 'Bearer realm="metalbox", error="invalid_token"');
      }
    });

    // The safety net of the audit trail (see the top of this file): written before the response leaves.
    // Callback style: what needs no audit event (reads, errors, public calls) passes with no promise.
    app.addHook('onSend', (req, reply, payload, done) => {
      const config = req.routeOptions.config;
      if (SAFE_METHODS.has(req.method) || req.is404 || reply.statusCode >= 400 || audited.has(req) || !req.user || config.audit === false) return done(null, payload);
      const event = req.auditEvent({
        type: typeof config.audit === 'string' ? config.audit : 'api.request',
        subject: req.routeOptions.url ?? req.url,
        data: { method: req.method, route: req.routeOptions.url, params: req.params, status: reply.statusCode },
      });
      core.events.append(event).catch((err: unknown) => {
        // The change is done and cannot be taken back; the log keeps what the event would have said.
        req.log.error({ err, event }, 'audit event could not be written');
      }).finally(() => done(null, payload));
    });

    let pruner: NodeJS.Timeout | undefined;
    const prune = async () => {
      try {
        const sessions = await core.sessions.prune();
        const tokens = await core.tokens.prune();
        if (sessions + tokens > 0) app.log.info({ sessions, tokens }, 'expired sessions and API tokens removed');
      } catch (err) {
        app.log.warn({ err }, 'pruning sessions and API tokens failed');
      }
    };
    app.addHook('onReady', async () => {
      void prune();
      pruner = setInterval(() => void prune(), PRUNE_EVERY_MS).unref();
    });
    app.addHook('onClose', async () => clearInterval(pruner));
  };
  // Like fastify-plugin: the hooks apply to the whole app, not to a child context.
  (plugin as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;
  return plugin;
}

/** Bearer token first (no CSRF: a browser never adds it by itself), else the session cookie (CSRF checked). */
async function authenticate(core: AuthCore, req: FastifyRequest, reply: FastifyReply): Promise<AuthUser> {
  const authorization = req.headers.authorization;
  if (typeof authorization === 'string') {
    // RFC 6750 §2.1; the scheme name is case-insensitive (RFC 9110 §11.1).
    const m = /^bearer +(\S+) *$/i.exec(authorization);
    if (!m) throw new MetalboxError('AUTH_INVALID', 'the Authorization header must be "Bearer TOKEN"');
    const id = await core.tokens.verify(m[1]!);
    if (!id) throw new MetalboxError('AUTH_INVALID', 'the API token is unknown, expired or revoked');
    return { id: id.user.id, username: id.user.username, role: id.role, via: 'token', tokenId: id.record.tokenId };
  }
  const cookie = sessionCookieOf(req);
  if (cookie === undefined) throw new MetalboxError('AUTH_REQUIRED', 'log in or send Authorization: Bearer TOKEN');
  const session = await core.sessions.verify(cookie);
  if (!session) {
    clearSessionCookie(reply);
    throw new MetalboxError('AUTH_INVALID', 'the session has ended; log in again');
  }
  if (!SAFE_METHODS.has(req.method) && !Sessions.csrfMatches(cookie, req.headers[CSRF_HEADER])) {
    throw new MetalboxError('CSRF_INVALID', `a state-changing request with the session cookie needs the session's ${CSRF_HEADER} header (from the login answer or GET /api/v1/session)`);
  }
  return { id: session.user.id, username: session.user.username, role: session.user.role, via: 'session', tokenId: session.record.sessionId };
}
