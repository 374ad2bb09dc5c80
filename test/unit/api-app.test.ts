import t from 'tap';
import { Writable } from 'node:stream';
import type { FastifyBaseLogger } from 'fastify';
import { buildApp, type AppDeps } from '../../src/api/app.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { MetalboxError } from '../../src/lib/errors.ts';
import type { RunnerStatus } from '../../src/services/service.ts';
import { createAuthCore } from '../../src/core/auth.ts';
import { EventLog } from '../../src/core/events.ts';
import { auditAs } from '../../src/core/users.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';

function deps(over: Partial<AppDeps> = {}): AppDeps & { lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } });
  return {
    logger: createLogger('info', sink),
    metrics: createMetrics({ processMetrics: true }),
    version: '9.9.9',
    instanceId: () => 'inst-1',
    readiness: (): RunnerStatus => ({ phase: 'running', services: { http: 'running' } }),
    lines,
    ...over,
  };
}

t.test('GET /api/v1/version: for logged-in callers only', async (t) => {
  const store = createMemoryStore();
  const auth = createAuthCore({ store, events: new EventLog(store) }, { hasher: { params: { ln: 10, r: 8, p: 1 } } });
  await auth.users.create({ username: 'vic', role: 'viewer', password: 'viewer-password' }, auditAs('test'));
  const { token } = await auth.tokens.create((await auth.users.find('vic'))!, { name: 't' }, auditAs('test'));
  const app = await buildApp(deps({ auth }));
  t.teardown(() => app.close());
  t.equal((await app.inject({ method: 'GET', url: '/api/v1/version' })).statusCode, 401);
  const res = await app.inject({ method: 'GET', url: '/api/v1/version', headers: { authorization: `Bearer ${token}` } });
  t.equal(res.statusCode, 200);
  t.same(res.json(), { name: 'metalbox', version: '9.9.9', node: process.versions.node, instanceId: 'inst-1' });
  const bare = await buildApp(deps());
  t.teardown(() => bare.close());
  t.equal((await bare.inject('/api/v1/version')).statusCode, 404, 'not served without a user store');
});

t.test('healthz is 200; readyz follows the runner phase', async (t) => {
  let phase: RunnerStatus['phase'] = 'starting';
  const app = await buildApp(deps({ readiness: () => ({ phase, services: { http: phase === 'running' ? 'running' : 'starting' } }) }));
  t.teardown(() => app.close());
  t.equal((await app.inject('/healthz')).statusCode, 200);
  const notReady = await app.inject('/readyz');
  t.equal(notReady.statusCode, 503);
  t.equal(notReady.json().status, 'not-ready');
  phase = 'running';
  const ready = await app.inject('/readyz');
  t.equal(ready.statusCode, 200);
  t.same(ready.json(), { status: 'ready', phase: 'running', services: { http: 'running' } });
});

t.test('metrics: process metrics and per-route request counters in Prometheus text', async (t) => {
  const app = await buildApp(deps());
  t.teardown(() => app.close());
  await app.inject('/healthz');
  await app.inject('/nope');
  const res = await app.inject('/metrics');
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /text\/plain/);
  t.match(res.body, /metalbox_process_cpu_seconds_total/);
  t.match(res.body, /metalbox_http_requests_total\{route="\/healthz",method="GET",status="200"\} 1/);
  t.match(res.body, /metalbox_http_requests_total\{route="unmatched",method="GET",status="404"\} 1/);
});


t.test('error handler maps codes to status and hides internals', async (t) => {
  const d = deps();
  const Fastify = (await import('fastify')).default;
  const { registerErrorHandling } = await import('../../src/api/errors.ts');
  const app = Fastify({ loggerInstance: d.logger as FastifyBaseLogger });
  registerErrorHandling(app);
  app.get('/conflict', async () => { throw new MetalboxError('STORE_CONFLICT', 'hostname taken'); });
  app.get('/boom', async () => { throw new Error('secret internals'); });
  app.post('/typed', { schema: { body: { type: 'object', required: ['n'], properties: { n: { type: 'integer' } } } } }, async () => ({}));
  t.teardown(() => app.close());

  const conflict = await app.inject('/conflict');
  t.equal(conflict.statusCode, 409);
  t.same(conflict.json(), { statusCode: 409, code: 'STORE_CONFLICT', error: 'Conflict', message: 'hostname taken' });

  const boom = await app.inject('/boom');
  t.equal(boom.statusCode, 500);
  t.equal(boom.json().code, 'INTERNAL');
  t.notMatch(boom.body, /secret internals/, 'internals stay in the log');
  t.ok(d.lines.some((l) => l.includes('secret internals') && l.includes('"level":"error"')), '5xx logged at error');

  const bad = await app.inject({ method: 'POST', url: '/typed', payload: { n: 'x' } });
  t.equal(bad.statusCode, 400);
  t.equal(bad.json().code, 'VALIDATION_FAILED');

  const badJson = await app.inject({ method: 'POST', url: '/typed', headers: { 'content-type': 'application/json' }, payload: '{nope' });
  t.equal(badJson.statusCode, 400);
  t.equal(badJson.json().code, 'REQUEST_INVALID');

  const missing = await app.inject('/no/such/route');
  t.same(missing.json(), { statusCode: 404, code: 'NOT_FOUND', error: 'Not Found', message: 'no route GET /no/such/route' });
});

t.test('secrets are redacted from log lines', async (t) => {
  const d = deps();
  d.logger.info({ bmc: { address: '10.0.0.5', password: 'hunter2' }, token: 'abc' }, 'x');
  const line = d.lines.join('');
  t.notMatch(line, /hunter2/);
  t.notMatch(line, /"abc"/);
  t.match(line, /10\.0\.0\.5/);
});
