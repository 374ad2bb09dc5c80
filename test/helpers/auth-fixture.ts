// The whole app (buildApp with auth and HTTP boot) on the memory store, a clock the test moves, users of
// every role, and helpers to log in, make tokens and call routes as someone. Every response and log line
// is kept, so a test can check that no secret ever left.
import type { Test } from 'tap';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { buildApp, type AppDeps } from '../../src/api/app.ts';
import { createAuthCore, type AuthCore, type AuthOptions } from '../../src/core/auth.ts';
import { EventLog } from '../../src/core/events.ts';
import { auditAs, type Role } from '../../src/core/users.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { AssetStore, IpxeBinaries } from '../../src/store/assets.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord, Store } from '../../src/store/types.ts';

/** Cheap scrypt for tests (ln=10: about 3 ms); the production cost is measured in users.test.ts. */
export const TEST_SCRYPT = { ln: 10, r: 8, p: 1 };

export type As = { cookie: string; csrf?: string } | { token: string } | undefined;

export interface AuthFixture {
  app: Awaited<ReturnType<typeof buildApp>>;
  core: AuthCore;
  store: Store;
  events: EventLog;
  clock: { now: number };
  logs: string[];
  /** Every response body and header set seen through `call` (to look for leaked secrets). */
  responses: string[];
  passwordOf(name: string): string;
  addUser(name: string, role: Role): Promise<string>;
  login(name: string, password?: string, remoteAddress?: string): Promise<{ cookie: string; csrf: string; res: LightMyRequestResponse }>;
  tokenFor(name: string, body?: Record<string, unknown>): Promise<{ token: string; id: string }>;
  call(method: InjectOptions['method'], url: string, as?: As, payload?: unknown, extra?: Partial<InjectOptions>): Promise<LightMyRequestResponse>;
  eventsOf(type?: string): Promise<EventRecord[]>;
}

/** The app with every optional part (HTTP boot, machines) unless told otherwise, so route tests see every route. */
export async function authFixture(t: Test, options: { auth?: AuthOptions; boot?: boolean; machines?: boolean; deps?: Partial<AppDeps> } = {}): Promise<AuthFixture> {
  const store = createMemoryStore();
  const events = new EventLog(store);
  const clock = { now: Date.now() };
  const now = () => clock.now;
  const core = createAuthCore({ store, events, now }, { hasher: { params: TEST_SCRYPT }, ...options.auth });
  const logs: string[] = [];
  const logger = createLogger('trace', new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } }));
  let boot: AppDeps['boot'];
  if (options.boot !== false) {
    const dir = mkdtempSync(join(tmpdir(), 'mbx-auth-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    mkdirSync(join(dir, 'ipxe'));
    const assets = new AssetStore(join(dir, 'assets'), store);
    await assets.open();
    boot = { store, events, assets, ipxe: new IpxeBinaries(join(dir, 'ipxe')), logger, ephemeralImage: undefined, tokenTtlMs: 3600_000 };
  }
  let machines: AppDeps['machines'];
  if (options.machines !== false) {
    const registry = await MachineRegistry.open({ store, events, logger });
    machines = { registry, store, logger, streamHeartbeatMs: 60_000 };
  }
  const app = await buildApp({
    logger, metrics: createMetrics({ processMetrics: false }), version: '9.9.9', instanceId: () => 'inst-1',
    readiness: () => ({ phase: 'running', services: {} }),
    auth: core,
    ...(boot ? { boot } : {}),
    ...(machines ? { machines } : {}),
    ...options.deps,
  });
  t.teardown(() => app.close());
  const responses: string[] = [];
  const passwordOf = (name: string) => `${name}-Pa55word-long-enough`;

  const call: AuthFixture['call'] = async (method, url, as, payload, extra = {}) => {
    const headers: Record<string, string> = {};
    if (as && 'token' in as) headers.authorization = `Bearer ${as.token}`;
    if (as && 'cookie' in as) {
      headers.cookie = as.cookie;
      if (as.csrf !== undefined) headers['x-csrf-token'] = as.csrf;
    }
    const res = await app.inject({
      method, url, headers: { ...headers, ...(extra.headers as Record<string, string> | undefined) },
      ...(payload !== undefined ? { payload: payload as Record<string, unknown> } : {}),
      ...(extra.remoteAddress ? { remoteAddress: extra.remoteAddress } : {}),
      // A never-ending answer (an event stream): headers only, then hang up.
      ...(extra.payloadAsStream ? { payloadAsStream: true } : {}),
    });
    if (extra.payloadAsStream) res.stream().destroy();
    else responses.push(`${url} ${JSON.stringify(res.headers)} ${res.body}`);
    return res;
  };

  const login: AuthFixture['login'] = async (name, password = passwordOf(name), remoteAddress) => {
    const res = await call('POST', '/api/v1/login', undefined, { username: name, password }, remoteAddress ? { remoteAddress } : {});
    const setCookie = String(res.headers['set-cookie'] ?? '');
    return { cookie: setCookie.split(';')[0] ?? '', csrf: res.statusCode === 200 ? (res.json() as { csrfToken: string }).csrfToken : '', res };
  };

  return {
    app, core, store, events, clock, logs, responses, passwordOf, call, login,
    async addUser(name, role) {
      const u = await core.users.create({ username: name, role, password: passwordOf(name) }, auditAs('test'));
      return u.id;
    },
    async tokenFor(name, body = {}) {
      const s = await login(name);
      const res = await call('POST', '/api/v1/tokens', s, { name: `${name}'s token`, ...body });
      if (res.statusCode !== 201) throw new Error(`token for ${name}: ${res.statusCode} ${res.body}`);
      const j = res.json() as { token: string; id: string };
      return { token: j.token, id: j.id };
    },
    async eventsOf(type) {
      const out: EventRecord[] = [];
      for await (const [, e] of store.events.entries()) if (type === undefined || e.type === type) out.push(e);
      return out;
    },
  };
}
