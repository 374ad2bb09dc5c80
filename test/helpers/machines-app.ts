// The app with the machines API, users and tokens, on any store: for test/unit/api-machines*.test.ts and
// test/bench/api.ts. Passwords are hashed with cheap scrypt parameters (ln=10): tests, not production.
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/api/app.ts';
import type { MachinePowerControl } from '../../src/api/routes/machines.ts';
import { createAuthCore } from '../../src/core/auth.ts';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { auditAs, type Role } from '../../src/core/users.ts';
import { createLogger, type LogLevel } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import type { Store } from '../../src/store/types.ts';

export interface MachinesApp {
  app: FastifyInstance;
  registry: MachineRegistry;
  events: EventLog;
  store: Store;
  /** Bearer tokens by role: `headers.operator` is `{ authorization: 'Bearer ...' }`. */
  headers: Record<Role, { authorization: string }>;
  logLines: string[];
}

export async function machinesApp(store: Store, options: {
  bmc?: MachinePowerControl; now?: () => number; streamHeartbeatMs?: number; streamMaxQueueBytes?: number; logLevel?: LogLevel;
} = {}): Promise<MachinesApp> {
  const logLines: string[] = [];
  const sink = new Writable({ write(chunk, _enc, cb) { logLines.push(String(chunk)); cb(); } });
  const logger = createLogger(options.logLevel ?? 'info', sink);
  const events = new EventLog(store, options.now);
  await events.init();
  const auth = createAuthCore({ store, events, ...(options.now ? { now: options.now } : {}) }, { hasher: { params: { ln: 10, r: 8, p: 1 } } });
  const headers = {} as Record<Role, { authorization: string }>;
  for (const role of ['viewer', 'operator', 'admin'] as const) {
    const username = `${role}-user`;
    if (!(await auth.users.find(username))) await auth.users.create({ username, role, password: 'correct horse battery' }, auditAs('test'));
    const owner = (await auth.users.find(username))!;
    const { token } = await auth.tokens.create(owner, { name: `${role} token` }, auditAs('test'));
    headers[role] = { authorization: `Bearer ${token}` };
  }
  const registry = await MachineRegistry.open({ store, events, logger, ...(options.now ? { now: options.now } : {}) });
  const app = await buildApp({
    logger, metrics: createMetrics({ processMetrics: false }), version: 'test', instanceId: () => 'test',
    readiness: () => ({ phase: 'running', services: {} }),
    auth,
    machines: {
      registry, store, logger,
      ...(options.bmc ? { bmc: options.bmc } : {}),
      ...(options.streamHeartbeatMs !== undefined ? { streamHeartbeatMs: options.streamHeartbeatMs } : {}),
      ...(options.streamMaxQueueBytes !== undefined ? { streamMaxQueueBytes: options.streamMaxQueueBytes } : {}),
    },
  });
  return { app, registry, events, store, headers, logLines };
}
