// Authentication and authorization of the whole app, through buildApp + app.inject on the memory store:
// every registered route refuses a caller without credentials (but the PUBLIC_ROUTES, which answer), the
// role matrix over every route, CSRF, the startup guards, the audit trail, and no secret in any answer or log.
import t from 'tap';
import Fastify, { type FastifyBaseLogger } from 'fastify';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { buildApp } from '../../src/api/app.ts';
import { PUBLIC_ROUTES, SESSION_COOKIE, authPlugin, isPublicRoute, routeTable, type Access } from '../../src/api/auth.ts';
import { registerErrorHandling } from '../../src/api/errors.ts';
import { createAuthCore } from '../../src/core/auth.ts';
import { EventLog } from '../../src/core/events.ts';
import { auditAs, type Role } from '../../src/core/users.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import { TEST_SCRYPT, authFixture } from '../helpers/auth-fixture.ts';

/** A concrete URL for a route pattern (parameters get plausible, harmless values). */
function concrete(url: string): string {
  return url
    .replace(':user', 'nobody')
    .replace(':id', 'tok_AAAAAAAAAAAAAAAA')
    .replace(/:[A-Za-z]+/g, 'x')
    .replace(/\*$/, 'x');
}

/** How many method+path routes fastify itself has (its printRoutes tree), to check the auth table misses none. */
function fastifyRouteCount(tree: string): number {
  let n = 0;
  for (const m of tree.matchAll(/\(([A-Z, ]+)\)/g)) n += m[1]!.split(',').length;
  return n;
}

const RANK: Record<Access, number> = { public: 0, viewer: 1, operator: 2, admin: 3 };

t.test('every registered route without credentials is 401, except PUBLIC_ROUTES, which answer', async (t) => {
  const f = await authFixture(t);
  const table = routeTable(f.app);
  t.equal(table.length, fastifyRouteCount(f.app.printRoutes({ commonPrefix: false })), 'the auth table holds every route fastify has');
  t.ok(table.length >= 20, `${table.length} routes`);

  const publicSeen = new Set<string>();
  for (const r of table) {
    const url = concrete(r.url);
    const res = await f.call(r.method as 'GET', url);
    if (isPublicRoute(r.method, r.url)) {
      t.equal(r.access, 'public', `${r.method} ${r.url} is public`);
      t.not(res.statusCode, 401, `${r.method} ${url} answers without credentials (${res.statusCode})`);
      t.not(res.statusCode, 403, `${r.method} ${url} is not forbidden`);
      for (const p of PUBLIC_ROUTES) if (isPublicRoute(r.method, r.url) && (p.url === r.url || (p.url.endsWith('/*') && r.url.startsWith(p.url.slice(0, -1))))) publicSeen.add(p.url);
      continue;
    }
    t.not(r.access, 'public', `${r.method} ${r.url} is not public`);
    t.equal(res.statusCode, 401, `${r.method} ${url} without credentials`);
    if (r.method !== 'HEAD') {
      t.equal(res.json().code, 'AUTH_REQUIRED', `${r.method} ${url} code`);
      t.equal(res.headers['www-authenticate'], 'Bearer realm="metalbox"', 'RFC 6750 §3 challenge');
    }
    const bad = await f.call(r.method as 'GET', url, { token: 'mbx_' + 'A'.repeat(43) });
    t.equal(bad.statusCode, 401, `${r.method} ${url} with an unknown token`);
    if (r.method !== 'HEAD') t.equal(bad.json().code, 'AUTH_INVALID');
    const badCookie = await f.call(r.method as 'GET', url, { cookie: `${SESSION_COOKIE}=${'B'.repeat(43)}` });
    t.equal(badCookie.statusCode, 401, `${r.method} ${url} with an unknown session`);
  }
  t.same([...publicSeen].sort(), PUBLIC_ROUTES.map((p) => p.url).sort(), 'every PUBLIC_ROUTES entry names a registered route');
  // The exceptions, spelled out: anything else public is a mistake to catch here.
  t.same(table.filter((r) => r.access === 'public' && !r.url.startsWith('/boot/')).map((r) => `${r.method} ${r.url}`).sort(),
    ['GET /healthz', 'GET /metrics', 'GET /readyz', 'HEAD /healthz', 'HEAD /metrics', 'HEAD /readyz', 'POST /api/v1/login']);
  t.ok(table.some((r) => r.url.startsWith('/boot/') && r.access === 'public'), 'the boot routes are public');
});

t.test('role matrix over every route: below the route\'s level is 403, at or above it is let through', async (t) => {
  const f = await authFixture(t);
  const roles: Role[] = ['viewer', 'operator', 'admin'];
  for (const role of roles) await f.addUser(`a-${role}`, role);
  // A second admin, so nothing the admin does here can hit the last-admin rule by accident.
  await f.addUser('spare', 'admin');
  for (const role of roles) {
    for (const r of routeTable(f.app)) {
      if (r.access === 'public') continue;
      // Logging out ends the session: give that request a session of its own.
      const s = await f.login(`a-${role}`);
      const stream = r.url.endsWith('/stream');
      const res = await f.call(r.method as 'GET', concrete(r.url), s, r.method === 'GET' || r.method === 'HEAD' ? undefined : {}, stream ? { payloadAsStream: true } : {});
      if (stream && r.method !== 'HEAD' && RANK[role] >= RANK[r.access]) { t.equal(res.statusCode, 200, `${role} -> ${r.url} streams`); continue; }
      if (RANK[role] < RANK[r.access]) {
        t.equal(res.statusCode, 403, `${role} -> ${r.method} ${r.url} (${r.access}) is forbidden`);
        if (r.method !== 'HEAD') t.equal(res.json().code, 'AUTH_FORBIDDEN');
      } else {
        t.notOk([401, 403].includes(res.statusCode), `${role} -> ${r.method} ${r.url} (${r.access}) passes auth (${res.statusCode} ${(res.body ?? "").slice(0, 120)})`);
      }
    }
  }
  // The same through bearer tokens, for what the issue names: a viewer cannot act, an operator cannot manage users.
  const viewer = await f.tokenFor('a-viewer');
  const operator = await f.tokenFor('a-operator');
  const admin = await f.tokenFor('a-admin');
  const newUser = { username: 'newbie', role: 'viewer', password: 'long-enough-password' };
  for (const [as, status] of [[viewer, 403], [operator, 403], [admin, 201]] as const) {
    t.equal((await f.call('POST', '/api/v1/users', as, newUser)).statusCode, status, 'create a user');
  }
  for (const as of [viewer, operator]) {
    t.equal((await f.call('GET', '/api/v1/users', as)).statusCode, 403);
    t.equal((await f.call('PATCH', '/api/v1/users/newbie', as, { role: 'admin' })).statusCode, 403);
    t.equal((await f.call('DELETE', '/api/v1/users/newbie', as)).statusCode, 403);
  }
  t.equal((await f.call('GET', '/api/v1/version', viewer)).statusCode, 200, 'a viewer reads');
  t.same((await f.call('GET', '/api/v1/version', viewer)).json(), { name: 'metalbox', version: '9.9.9', node: process.versions.node, instanceId: 'inst-1' });
  // An admin's token made with the viewer role acts as a viewer.
  const capped = await f.tokenFor('a-admin', { role: 'viewer' });
  t.equal((await f.call('GET', '/api/v1/users', capped)).statusCode, 403, 'a viewer-role token of an admin cannot manage users');
});

t.test('CSRF: state changes with the session cookie need the session\'s X-CSRF-Token; bearer tokens need none', async (t) => {
  const f = await authFixture(t);
  await f.addUser('root', 'admin');
  const s = await f.login('root');
  const body = { username: 'alice', role: 'viewer', password: 'alice-password-long' };
  const noHeader = await f.call('POST', '/api/v1/users', { cookie: s.cookie }, body);
  t.equal(noHeader.statusCode, 403);
  t.equal(noHeader.json().code, 'CSRF_INVALID');
  const wrong = await f.call('POST', '/api/v1/users', { cookie: s.cookie, csrf: 'A'.repeat(43) }, body);
  t.equal(wrong.json().code, 'CSRF_INVALID', 'a wrong token');
  const other = await f.login('root');
  t.equal((await f.call('POST', '/api/v1/users', { cookie: s.cookie, csrf: other.csrf }, body)).json().code, 'CSRF_INVALID', 'another session\'s token');
  for (const method of ['PATCH', 'DELETE'] as const) {
    t.equal((await f.call(method, '/api/v1/users/root', { cookie: s.cookie }, method === 'PATCH' ? { role: 'admin' } : undefined)).json().code, 'CSRF_INVALID', method);
  }
  t.equal(await f.core.users.get('alice'), undefined, 'nothing was created');
  const ok = await f.call('POST', '/api/v1/users', s, body);
  t.equal(ok.statusCode, 201, 'with the token from the login answer');
  t.equal((await f.call('GET', '/api/v1/users', { cookie: s.cookie })).statusCode, 200, 'reads need no CSRF token');
  const session = (await f.call('GET', '/api/v1/session', { cookie: s.cookie })).json();
  t.equal(session.csrfToken, s.csrf, 'GET /api/v1/session hands out the same token');
  t.equal(session.via, 'session');
  const bearer = await f.tokenFor('root');
  t.equal((await f.call('POST', '/api/v1/users', bearer, { ...body, username: 'bob' })).statusCode, 201, 'a bearer request needs no CSRF token');
  t.notOk('csrfToken' in (await f.call('GET', '/api/v1/session', bearer)).json(), 'no CSRF token for a bearer caller');
  // With both, the bearer token is what counts (a browser never adds one by itself).
  t.equal((await f.call('POST', '/api/v1/users', { token: bearer.token }, { ...body, username: 'carol' }, { headers: { cookie: s.cookie } })).statusCode, 201);
});

t.test('the session cookie: __Host- prefix, HttpOnly, Secure, SameSite=Strict, Path=/; logout clears it', async (t) => {
  const f = await authFixture(t);
  await f.addUser('root', 'admin');
  const s = await f.login('root');
  const set = String(s.res.headers['set-cookie']);
  t.match(set, new RegExp(`^${SESSION_COOKIE}=[A-Za-z0-9_-]{43}; Path=/; Max-Age=43200; HttpOnly; Secure; SameSite=Strict$`));
  t.notMatch(set, /Domain=/i, 'host-only');
  t.equal(s.res.headers['cache-control'], 'no-store');
  t.match(s.res.json(), { user: { username: 'root', role: 'admin' }, via: 'session', csrfToken: /^[A-Za-z0-9_-]{43}$/ });
  const out = await f.call('POST', '/api/v1/logout', s);
  t.equal(out.statusCode, 204);
  t.match(String(out.headers['set-cookie']), new RegExp(`^${SESSION_COOKIE}=; Path=/; Max-Age=0`));
  const after = await f.call('GET', '/api/v1/session', { cookie: s.cookie });
  t.equal(after.statusCode, 401, 'the session is gone');
  t.equal(after.json().code, 'AUTH_INVALID');
  t.match(String(after.headers['set-cookie']), /Max-Age=0/, 'a dead cookie is cleared');
  t.equal((await f.eventsOf('auth.logout')).length, 1);
});

t.test('audit: every state change names who, what, when and from where', async (t) => {
  const f = await authFixture(t);
  await f.addUser('root', 'admin');
  const s = await f.login('root', undefined, '10.9.8.7');
  const before = Date.now();
  await f.call('POST', '/api/v1/users', s, { username: 'alice', role: 'viewer', password: 'alice-password-long' }, { remoteAddress: '10.9.8.7' });
  await f.call('PATCH', '/api/v1/users/alice', s, { role: 'operator' }, { remoteAddress: '10.9.8.7' });
  const tok = await f.call('POST', '/api/v1/tokens', s, { name: 'ci' }, { remoteAddress: '10.9.8.7' });
  await f.call('DELETE', `/api/v1/tokens/${tok.json().id}`, s, undefined, { remoteAddress: '10.9.8.7' });
  await f.call('DELETE', '/api/v1/users/alice', s, undefined, { remoteAddress: '10.9.8.7' });
  await f.call('POST', '/api/v1/session/password', s, { currentPassword: f.passwordOf('root'), newPassword: 'a-brand-new-password' }, { remoteAddress: '10.9.8.7' });
  await f.call('POST', '/api/v1/logout', s, undefined, { remoteAddress: '10.9.8.7' });
  const events = (await f.eventsOf()).filter((e) => e.actor !== 'test');
  t.same(events.map((e) => e.type), ['auth.login', 'user.created', 'user.updated', 'token.created', 'token.revoked', 'user.deleted', 'user.password-changed', 'auth.logout']);
  for (const e of events) {
    t.equal(e.actor, 'root', `${e.type}: who`);
    t.equal(e.data?.address, '10.9.8.7', `${e.type}: from where`);
    t.ok(Date.parse(e.at) >= before - 5000, `${e.type}: when`);
    t.ok(e.subject, `${e.type}: about what`);
  }
  t.match(events[2], { subject: 'alice', data: { role: { from: 'viewer', to: 'operator' } } });
  t.equal((await f.eventsOf('api.request')).length, 0, 'routes that audit themselves get no generic event');
});

t.test('the generic audit event, per-route type, audit:false, and the startup guards', async (t) => {
  const store = createMemoryStore();
  const events = new EventLog(store);
  const core = createAuthCore({ store, events }, { hasher: { params: TEST_SCRYPT } });
  await core.users.create({ username: 'op', role: 'operator', password: 'operator-password' }, auditAs('test'));
  const logger = createLogger('silent');
  const make = async (routes: (app: ReturnType<typeof Fastify>) => void, withCore = true) => {
    const app = Fastify({ loggerInstance: logger as FastifyBaseLogger });
    registerErrorHandling(app);
    await app.register(authPlugin(withCore ? core : undefined));
    await app.register(async (child) => routes(child as unknown as ReturnType<typeof Fastify>));
    await app.ready();
    t.teardown(() => app.close());
    return app;
  };
  const app = await make((a) => {
    a.post('/x/act', { config: { access: 'operator' } }, async () => ({ done: true }));
    a.post('/x/typed', { config: { access: 'operator', audit: 'machine.power' } }, async () => ({ done: true }));
    a.post('/x/query', { config: { access: 'viewer', audit: false } }, async () => ({ rows: [] }));
    a.post('/x/fails', { config: { access: 'operator' } }, async () => { throw new Error('nope'); });
    a.get('/x/undeclared', async () => ({ secret: 'admins only' }));
  });
  const { token } = await core.tokens.create((await core.users.find('op'))!, { name: 't' }, auditAs('test'));
  const as = { authorization: `Bearer ${token}` };
  t.equal((await app.inject({ method: 'POST', url: '/x/act', headers: as, remoteAddress: '10.1.1.1' })).statusCode, 200);
  t.equal((await app.inject({ method: 'POST', url: '/x/typed', headers: as })).statusCode, 200);
  t.equal((await app.inject({ method: 'POST', url: '/x/query', headers: as })).statusCode, 200);
  t.equal((await app.inject({ method: 'POST', url: '/x/fails', headers: as })).statusCode, 500);
  const undeclared = await app.inject({ method: 'GET', url: '/x/undeclared', headers: as });
  t.equal(undeclared.statusCode, 403, 'a route that declares nothing is admin-only');
  t.equal(routeTable(app).find((r) => r.url === '/x/undeclared')?.access, 'admin');
  const audit: { type: string; actor: string; subject?: string; data?: Record<string, unknown> }[] = [];
  for await (const [, e] of store.events.entries()) if (e.actor !== 'test') audit.push(e);
  t.same(audit.map((e) => e.type), ['api.request', 'machine.power'], 'a success without its own event gets one; audit:false and failures none');
  t.match(audit[0], { actor: 'op', subject: '/x/act', data: { method: 'POST', route: '/x/act', status: 200, address: '10.1.1.1' } });

  await t.rejects(make((a) => { a.get('/x/open', { config: { access: 'public' } }, async () => ({})); }), /not in PUBLIC_ROUTES/, 'public off the list fails at startup');
  await t.rejects(make((a) => { a.get('/healthz', { config: { access: 'viewer' } }, async () => ({})); }), /in PUBLIC_ROUTES but declares/);
  await t.rejects(make((a) => { a.route({ method: ['GET', 'POST'], url: '/api/v1/login', handler: async () => ({}) }); }), /split the route/);
  await t.rejects(make((a) => { a.get('/x/read', { config: { access: 'viewer' } }, async () => ({})); }, false), /no auth deps/, 'without auth deps only public routes');
  await t.rejects(make((a) => { a.get('/x/odd', { config: { access: 'root' as never } }, async () => ({})); }), /config.access must be one of/);
  const bare = await make((a) => { a.get('/healthz', async () => ({ ok: true })); }, false);
  t.equal((await bare.inject('/healthz')).statusCode, 200, 'public routes work without auth deps');
});

t.test('buildApp without auth deps serves only the public routes', async (t) => {
  const lines: string[] = [];
  const app = await buildApp({
    logger: createLogger('info', new Writable({ write(c, _e, cb) { lines.push(String(c)); cb(); } })), metrics: createMetrics({ processMetrics: false }),
    version: '1', instanceId: () => 'i', readiness: () => ({ phase: 'running', services: {} }),
  });
  t.teardown(() => app.close());
  t.ok(routeTable(app).every((r) => r.access === 'public'));
  t.equal((await app.inject('/healthz')).statusCode, 200);
  t.equal((await app.inject('/api/v1/version')).statusCode, 404, 'version needs a user store');
});

t.test('no password, hash, token, cookie or CSRF token in any answer or log line', async (t) => {
  const f = await authFixture(t);
  await f.addUser('root', 'admin');
  const s = await f.login('root');
  const created = await f.call('POST', '/api/v1/users', s, { username: 'alice', role: 'operator', password: 'alice-secret-password' });
  t.equal(created.statusCode, 201);
  await f.call('PATCH', '/api/v1/users/alice', s, { password: 'alice-second-password' });
  await f.login('alice', 'wrong-password-typed');
  await f.login('alice-secret-password', 'oops-name-in-password-field');
  const a = await f.login('alice', 'alice-second-password');
  const tok = await f.call('POST', '/api/v1/tokens', a, { name: 'ci' });
  const token = tok.json().token as string;
  t.match(token, /^mbx_[A-Za-z0-9_-]{43}$/);
  await f.call('GET', '/api/v1/tokens', { token });
  await f.call('GET', '/api/v1/tokens', s);
  await f.call('GET', '/api/v1/users', s);
  await f.call('GET', '/api/v1/users/alice', s);
  await f.call('GET', '/api/v1/session', a);
  await f.call('POST', '/api/v1/session/password', a, { currentPassword: 'alice-second-password', newPassword: 'alice-third-password' });
  await f.call('POST', '/api/v1/session/password', a, { currentPassword: 'not-her-password', newPassword: 'alice-fourth-password' });

  const cookieValue = (c: string) => c.split('=')[1]!;
  const sha = (x: string) => createHash('sha256').update(x).digest('hex');
  const secrets = ['alice-secret-password', 'alice-second-password', 'alice-third-password', 'alice-fourth-password', 'not-her-password', 'wrong-password-typed',
    'oops-name-in-password-field', f.passwordOf('root'), cookieValue(s.cookie), cookieValue(a.cookie), s.csrf, a.csrf, token.slice(4), sha(token),
    sha(cookieValue(s.cookie)), '$scrypt$', 'passwordHash'];
  // The answers that exist to hand a secret over may carry exactly that one (the token once; the cookie in
  // Set-Cookie; the CSRF token in the login and session answers); nothing else may.
  const allowed = (r: string, secret: string) => (secret === token.slice(4) && r.startsWith('/api/v1/tokens ') && r.includes('"token":"mbx_'))
    || ((secret === cookieValue(s.cookie) || secret === cookieValue(a.cookie)) && r.startsWith('/api/v1/login '))
    || ((secret === s.csrf || secret === a.csrf) && (r.startsWith('/api/v1/login ') || r.startsWith('/api/v1/session ')));
  for (const r of f.responses) for (const secret of secrets) if (!allowed(r, secret)) t.notOk(r.includes(secret), `answer ${r.slice(0, 40)}... does not contain ${secret.slice(0, 6)}...`);
  const logs = f.logs.join('');
  t.ok(f.logs.length > 20, `${f.logs.length} log lines at trace`);
  for (const secret of secrets) t.notOk(logs.includes(secret), `no log line contains ${secret.slice(0, 6)}...`);
  t.match(logs, /"msg":"login failed"/);
  t.match(logs, /"unknownUser":true/, 'an unknown user name (maybe a password) is not logged');
  for await (const [key, rec] of f.store.tokens.entries()) t.notOk(JSON.stringify(rec).includes(token) || key.includes(token), 'the store holds no token');
});
