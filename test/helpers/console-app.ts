// A whole metalbox app for the console's browser test: the LevelDB store in a temp state dir seeded with N
// machines, users, the real BMC service (a manual BMC for the machines the test drives), DHCP pools for two
// subnets (the dashboard's pool chart), the asset store, and the app served over HTTPS and HTTP on 127.0.0.1
// by the real HttpService with a self-signed certificate, as `metalbox serve` does. The console is the one
// buildApp serves by default: dist/console, built on demand from src/console.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildApp } from '../../src/api/app.ts';
import { bmcPowerControl } from '../../src/api/bmc-power.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createAuthCore } from '../../src/core/auth.ts';
import { EventLog } from '../../src/core/events.ts';
import type { State } from '../../src/core/lifecycle.ts';
import type { LeasePool } from '../../src/core/lease-pool.ts';
import { newMachineId } from '../../src/core/machine-fields.ts';
import { MachineRegistry, type Machine } from '../../src/core/machines.ts';
import { auditAs } from '../../src/core/users.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { BmcService, secretBoxLoader } from '../../src/services/bmc/service.ts';
import { HttpService } from '../../src/services/http.ts';
import { loadTls } from '../../src/services/tls-files.ts';
import { AssetStore } from '../../src/store/assets.ts';
import { openLevelStore } from '../../src/store/level-store.ts';
import type { Store, WriteOp } from '../../src/store/types.ts';
import { TEST_SCRYPT } from './auth-fixture.ts';
import { poolFor } from './resources-app.ts';

export const ADMIN = { username: 'admin', password: 'console-test-password' };

export interface ConsoleApp {
  /** https://127.0.0.1:PORT */
  url: string;
  store: Store;
  registry: MachineRegistry;
  bmc: BmcService;
  /** The boot asset store (images added through the console land here). */
  assets: AssetStore;
  /** Machines made for the test to drive, by role: `live` (New), `deploy` (Ready), `power` (Ready, manual BMC). */
  targets: Record<'live' | 'deploy' | 'power', Machine>;
  stop(): Promise<void>;
}

const CONFIG = (stateDir: string) => `
stateDir: ${stateDir}
domain: rack.internal
http: { listen: "127.0.0.1:0" }
https: { listen: "127.0.0.1:0" }
boot: { ipxeDir: ${stateDir}/ipxe }
subnets:
  - cidr: 10.77.0.0/24
    gateway: 10.77.0.1
    dynamicRanges: [10.77.0.100-10.77.0.199]
  - cidr: 10.78.0.0/24
    dynamicRanges: [10.78.0.10-10.78.0.29]
bmc: { pollSeconds: 0, timeoutSeconds: 5 }
`;

/** A plausible fleet: racks of 40, a state mix, a few tags each. Deterministic. */
function machineAt(i: number): Machine {
  const rack = Math.floor(i / 40);
  const hex = (n: number) => n.toString(16).padStart(2, '0');
  const mix: State[] = ['Deployed', 'Deployed', 'Deployed', 'Ready', 'Ready', 'Allocated', 'New', 'Deploying', 'Commissioning', 'Broken', 'FailedDeployment', 'Rescue'];
  const state = mix[i % mix.length]!;
  const at = new Date(Date.UTC(2025, 0, 1) + i * 60_000).toISOString();
  return {
    id: newMachineId(),
    hostname: `r${String(rack).padStart(4, '0')}-n${String(i % 40).padStart(2, '0')}`,
    macs: [`52:54:${hex(i >> 24 & 255)}:${hex(i >> 16 & 255)}:${hex(i >> 8 & 255)}:${hex(i & 255)}`],
    state,
    tags: [`rack-${String(rack % 100).padStart(2, '0')}`, `zone-${'abc'[rack % 3]}`, ...(i % 10 === 0 ? ['gpu'] : [])],
    createdAt: at, updatedAt: at, stateChangedAt: at,
    ...(state === 'New' || state === 'Commissioning' ? {} : { commissionedAt: at }),
  } as Machine;
}

export async function startConsoleApp(options: { machines: number }): Promise<ConsoleApp> {
  const stateDir = mkdtempSync(join(tmpdir(), 'mbx-console-'));
  mkdirSync(join(stateDir, 'ipxe'));
  const config = parseConfig(CONFIG(stateDir), { source: 'console-test', defaultStateDir: stateDir });
  const store = await openLevelStore(stateDir);
  const fleet = options.machines - 3;
  for (let i = 0; i < fleet; i += 2000) {
    const ops: WriteOp[] = [];
    for (let j = i; j < Math.min(fleet, i + 2000); j++) {
      const m = machineAt(j);
      ops.push({ type: 'put', collection: 'machines', key: m.id, value: m });
    }
    await store.write(ops);
  }
  const logger = createLogger('warn');
  const events = new EventLog(store);
  await events.init();
  const metrics = createMetrics({ processMetrics: false });
  const auth = createAuthCore({ store, events }, { hasher: { params: TEST_SCRYPT } });
  await auth.users.create({ username: ADMIN.username, role: 'admin', password: ADMIN.password }, auditAs('test'));
  const registry = await MachineRegistry.open({ store, events, logger });
  const bmc = new BmcService({ store, events, metrics, config, secrets: secretBoxLoader(store, stateDir), logger });
  await bmc.start(new AbortController().signal);
  const ctx = { actor: 'test' };
  const make = async (hostname: string, mac: string, to: readonly string[]) => {
    let m = await registry.create({ mac, hostname, tags: ['console-test'] }, ctx);
    for (const action of to) m = (await registry.act(m.id, action, ctx)).machine;
    return m;
  };
  // commission then commission-done: Ready, as a commissioned machine is.
  const targets = {
    live: await make('aaa-live', '52:54:ff:00:00:01', []),
    deploy: await make('aaa-deploy', '52:54:ff:00:00:02', ['commission', 'commission-done']),
    power: await make('aaa-power', '52:54:ff:00:00:03', ['commission', 'commission-done']),
  };
  await bmc.add({ driver: 'manual', address: 'rack 1, slot 3', machineId: targets.power.id }, 'test');
  const pools = new Map<string, LeasePool>();
  for (const s of config.subnets) pools.set(s.cidr, poolFor(s));
  const assets = new AssetStore(join(stateDir, 'assets'), store);
  await assets.open();
  const power = bmcPowerControl(bmc);

  const tls = await loadTls(config);
  const services: Record<string, 'running'> = { http: 'running', bmc: 'running', machines: 'running' };
  const app = await buildApp({
    logger, metrics, version: 'console-test', instanceId: () => 'console-test', auth,
    readiness: () => ({ phase: 'running', services }),
    machines: { registry, store, logger, bmc: power },
    resources: { store, events, config, bmc, assets, dhcp: { pools: () => pools }, https: () => ({ fingerprint: tls.fingerprint }) },
  });
  const web = new HttpService(app, { host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: 0, cert: tls.cert, key: tls.key });
  await web.start();
  const url = `https://127.0.0.1:${web.httpsAddress()!.port}`;
  return {
    url, store, registry, bmc, assets, targets,
    async stop() {
      await web.stop();
      await bmc.stop();
      await store.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}
