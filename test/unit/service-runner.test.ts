import t from 'tap';
import { Writable } from 'node:stream';
import { ServiceRunner, type Service } from '../../src/services/service.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';

const quiet = () => createLogger('fatal', new Writable({ write(_c, _e, cb) { cb(); } }));

function fake(name: string, log: string[], opts: { failStart?: boolean; stopMs?: number } = {}): Service {
  return {
    name,
    async start(signal) {
      t.type(signal, AbortSignal);
      if (opts.failStart) throw new Error(`${name} cannot bind`);
      log.push(`start ${name}`);
    },
    async stop() {
      if (opts.stopMs) await new Promise((r) => setTimeout(r, opts.stopMs));
      log.push(`stop ${name}`);
    },
  };
}

t.test('starts in order, stops in reverse', async (t) => {
  const log: string[] = [];
  const metrics = createMetrics({ processMetrics: false });
  const r = new ServiceRunner([fake('a', log), fake('b', log), fake('c', log)], { logger: quiet(), metrics, stopTimeoutMs: 1000 });
  await r.start();
  t.same(r.status(), { phase: 'running', services: { a: 'running', b: 'running', c: 'running' } });
  t.match(await metrics.registry.metrics(), /metalbox_service_up\{service="b"\} 1/);
  await r.stop();
  t.same(log, ['start a', 'start b', 'start c', 'stop c', 'stop b', 'stop a']);
  t.equal(r.status().phase, 'stopped');
  t.match(await metrics.registry.metrics(), /metalbox_service_up\{service="b"\} 0/);
});

t.test('a failed start stops what already started and rethrows with the service name', async (t) => {
  const log: string[] = [];
  const r = new ServiceRunner([fake('a', log), fake('b', log, { failStart: true }), fake('c', log)], { logger: quiet(), metrics: createMetrics({ processMetrics: false }), stopTimeoutMs: 1000 });
  await t.rejects(r.start(), { code: 'SERVICE_START_FAILED', message: /service b failed to start: b cannot bind/ });
  t.same(log, ['start a', 'stop a']);
  t.equal(r.status().services.b, 'failed');
  t.equal(r.status().services.c, 'idle');
});

t.test('a fatal error stops everything and is kept', async (t) => {
  const log: string[] = [];
  const told: string[] = [];
  const r = new ServiceRunner([fake('a', log), fake('b', log)], { logger: quiet(), metrics: createMetrics({ processMetrics: false }), stopTimeoutMs: 1000, onFatal: (s) => told.push(s) });
  await r.start();
  const boom = new Error('socket died');
  r.fatal('b', boom);
  t.same(told, ['b'], 'the owner is told');
  await r.stop();
  t.equal(r.error, boom);
  t.same(log, ['start a', 'start b', 'stop b', 'stop a']);
  t.equal(r.status().services.b, 'failed');
});

t.test('a service that hangs in stop() is abandoned at the deadline', async (t) => {
  const log: string[] = [];
  const r = new ServiceRunner([fake('a', log), fake('slow', log, { stopMs: 1500 })], { logger: quiet(), metrics: createMetrics({ processMetrics: false }), stopTimeoutMs: 200 });
  await r.start();
  const t0 = Date.now();
  await r.stop();
  t.ok(Date.now() - t0 < 1000, 'stop returned near the deadline');
  t.equal(r.status().services.slow, 'failed');
});
