// The whole app with the resource API (src/api/routes/resources.ts) on the memory store: two configured
// subnets, the DHCP pools the DHCP service would build for them (real LeasePools, with the store
// reservations applied live exactly as the DHCP service's setReservations does), the real BMC service
// (built-in drivers: the tests drive a Redfish simulator and manual BMCs), an asset store in a temp dir, and
// API tokens of every role. Built on its own (not test/helpers/auth-fixture.ts), since the resources need the
// store before the app is built.
import type { Test } from 'tap';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { buildApp } from '../../src/api/app.ts';
import { createAuthCore, type AuthCore } from '../../src/core/auth.ts';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord, Store } from '../../src/store/types.ts';
import { parseConfig } from '../../src/config/load.ts';
import type { Config, SubnetConfig } from '../../src/config/schema.ts';
import { LeasePool, type PoolReservations } from '../../src/core/lease-pool.ts';
import { ReservationBook, type Reservation } from '../../src/core/reservations.ts';
import { auditAs, type Role } from '../../src/core/users.ts';
import { parseCidr, parseIPv4, parseRange } from '../../src/lib/ipv4.ts';
import { parseMac } from '../../src/lib/mac.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { BmcService, secretBoxLoader } from '../../src/services/bmc/service.ts';
import { AssetStore } from '../../src/store/assets.ts';
import { TEST_SCRYPT } from './auth-fixture.ts';

export const configYaml = (stateDir: string) => `
domain: rack.internal
boot:
  ipxeDir: ${stateDir}/ipxe
  maxAssetBytes: 1048576
subnets:
  - cidr: 10.77.0.0/24
    gateway: 10.77.0.1
    dynamicRanges: [10.77.0.100-10.77.0.109]
    excludedRanges: [10.77.0.105-10.77.0.105]
    dnsServers: [10.77.0.2]
    reservations:
      - { mac: "52:54:00:00:00:01", ip: 10.77.0.10, hostname: cfg-node }
  - cidr: 10.88.0.0/24
    proxyDhcp: true
bmc:
  pollSeconds: 0
  timeoutSeconds: 5
`;

/** What the DHCP service does (src/services/dhcp/server.ts subnetEntry + the proposed setReservations): config reservations plus the store's. */
export function poolFor(s: SubnetConfig, extra: readonly Reservation[] = []): LeasePool {
  return new LeasePool({
    id: s.cidr, cidr: parseCidr(s.cidr)!,
    ranges: s.dynamicRanges.map((r) => parseRange(r)!), excluded: s.excludedRanges.map((r) => parseRange(r)!),
    reservations: reservationMap(s, extra),
  });
}

export function reservationMap(s: SubnetConfig, extra: readonly Reservation[]): PoolReservations {
  const map = new Map<string, { ip: number; hostname?: string }>();
  for (const r of [...s.reservations, ...extra]) map.set(parseMac(r.mac)!, { ip: parseIPv4(r.ip)!, ...(r.hostname ? { hostname: r.hostname } : {}) });
  return map;
}

export interface ResourcesFixture {
  app: FastifyInstance;
  store: Store;
  events: EventLog;
  core: AuthCore;
  clock: { now: number };
  config: Config;
  pools: Map<string, LeasePool>;
  book: ReservationBook;
  bmc: BmcService;
  assets: AssetStore;
  stateDir: string;
  /** Bearer tokens by role. */
  as: Record<Role, { authorization: string }>;
  /** Every response body seen through `call` (to look for leaked secrets). */
  responses: string[];
  call(method: InjectOptions['method'], url: string, as: { authorization: string } | undefined, payload?: unknown): Promise<LightMyRequestResponse>;
  eventsOf(type?: string): Promise<EventRecord[]>;
}

export async function resourcesFixture(t: Test, options: { dhcp?: boolean; bmc?: boolean; assets?: boolean; reservations?: boolean; machines?: boolean } = {}): Promise<ResourcesFixture> {
  const stateDir = mkdtempSync(join(tmpdir(), 'mbx-res-'));
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  mkdirSync(join(stateDir, 'ipxe'));
  const config = parseConfig(configYaml(stateDir), { source: 'test', defaultStateDir: stateDir });
  const store = createMemoryStore();
  const clock = { now: Date.now() };
  const now = () => clock.now;
  const events = new EventLog(store, now);
  await events.init();
  const core = createAuthCore({ store, events, now }, { hasher: { params: TEST_SCRYPT } });
  const logger = createLogger('silent');
  const pools = new Map<string, LeasePool>();
  const book = new ReservationBook({
    store, events, subnets: config.subnets, now,
    onChange: (cidr, list) => {
      const s = config.subnets.find((x) => x.cidr === cidr)!;
      pools.get(cidr)?.setReservations(reservationMap(s, list));
    },
  });
  // The pools exist before the app (main builds the DHCP service before buildApp) and hold the stored reservations.
  if (options.dhcp !== false) {
    const stored = await book.all();
    for (const s of config.subnets) if (!s.proxyDhcp) pools.set(s.cidr, poolFor(s, stored.get(s.cidr) ?? []));
  }
  let bmc: BmcService | undefined;
  if (options.bmc !== false) {
    bmc = new BmcService({ store, events, metrics: createMetrics({ processMetrics: false }), config, secrets: secretBoxLoader(store, stateDir), logger });
    await bmc.start(new AbortController().signal);
    t.teardown(() => bmc!.stop());
  }
  let assets: AssetStore | undefined;
  if (options.assets !== false) {
    assets = new AssetStore(join(stateDir, 'assets'), store);
    await assets.open();
  }
  // The machines API too (by default), so the route table and the OpenAPI document are the whole app's.
  const machines = options.machines === false ? undefined : { registry: await MachineRegistry.open({ store, events, logger }), store, logger, streamHeartbeatMs: 60_000 };
  const app = await buildApp({
    logger, metrics: createMetrics({ processMetrics: false }), version: '9.9.9', instanceId: () => 'inst-1',
    readiness: () => ({ phase: 'running', services: { http: 'running', dhcp: 'running' } }),
    auth: core,
    ...(machines ? { machines } : {}),
    resources: {
      store, events, config, now,
      ...(options.dhcp !== false ? { dhcp: { pools: () => pools } } : {}),
      ...(options.reservations !== false ? { reservations: book } : {}),
      ...(bmc ? { bmc } : {}),
      ...(assets ? { assets } : {}),
      https: () => ({ fingerprint: 'AB:CD', certificate: 'self-signed' }),
    },
  });
  t.teardown(() => app.close());
  const as = {} as Record<Role, { authorization: string }>;
  for (const role of ['viewer', 'operator', 'admin'] as const) {
    await core.users.create({ username: `a-${role}`, role, password: 'long-enough-password' }, auditAs('test'));
    const owner = (await core.users.find(`a-${role}`))!;
    const { token } = await core.tokens.create(owner, { name: `${role} token` }, auditAs('test'));
    as[role] = { authorization: `Bearer ${token}` };
  }
  const responses: string[] = [];
  return {
    app, store, events, core, clock, config, pools, book, bmc: bmc!, assets: assets!, stateDir, as, responses,
    async call(method, url, who, payload) {
      const res = await app.inject({ method, url, headers: who ?? {}, ...(payload !== undefined ? { payload: payload as Record<string, unknown> } : {}) });
      responses.push(`${method} ${url} ${res.statusCode} ${res.body}`);
      return res;
    },
    async eventsOf(type) {
      const out: EventRecord[] = [];
      for await (const [, e] of store.events.entries()) if (type === undefined || e.type === type) out.push(e);
      return out;
    },
  };
}
