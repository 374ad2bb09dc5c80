// The resource API beside machines and users: subnets and reservations, leases, DNS records, BMCs, boot
// images (and their download jobs), settings and the service status. buildApp registers it when given
// `resources` (main wires the services it has; a part whose service is absent is simply not registered).
//
// Who may do what (src/api/auth.ts): viewers read everything here; operators act on machines' surroundings
// (DNS records, BMC power, boot device, test, probe); admins change how the appliance itself behaves (DHCP
// reservations, BMC definitions and their credentials, boot images, settings).
import type { FastifyPluginAsync } from 'fastify';
import type { Config } from '../../config/schema.ts';
import type { EventLog } from '../../core/events.ts';
import type { PoolStats } from '../../core/lease-pool.ts';
import type { ReservationBook } from '../../core/reservations.ts';
import { MetalboxError, isMetalboxError } from '../../lib/errors.ts';
import type { Store } from '../../store/types.ts';
import type { AssetStore } from '../../store/assets.ts';
import type { BmcService } from '../../services/bmc/service.ts';
import type { RunnerStatus } from '../../services/service.ts';
import { subnetRoutes } from './subnets.ts';
import { leaseRoutes } from './leases.ts';
import { dnsRoutes } from './dns.ts';
import { bmcRoutes } from './bmcs.ts';
import { imageRoutes } from './images.ts';
import { settingRoutes } from './settings.ts';
import { statusRoutes } from './status.ts';

/** The DHCP service as the API sees it (src/services/dhcp/server.ts DhcpService): pool usage per subnet CIDR. */
export interface DhcpPools {
  pools(): ReadonlyMap<string, { stats(now: number): PoolStats }>;
}

/** The BMC service's operations the API uses (src/services/bmc/service.ts BmcService). */
export type BmcApi = Pick<BmcService, 'list' | 'get' | 'add' | 'edit' | 'remove' | 'test' | 'power' | 'powerStatus' | 'setBootDevice' | 'confirm' | 'probe' | 'summary'>;

export interface ResourcesApiDeps {
  store: Store;
  /** The process's one event log. */
  events: EventLog;
  /** domain and subnets (subnets, reservations, DNS zones); boot (images: size cap, ephemeral image, iPXE dir). */
  config: Pick<Config, 'domain' | 'subnets' | 'boot'>;
  /** The DHCP service when it runs: pool usage in GET /api/v1/subnets. */
  dhcp?: DhcpPools;
  /**
   * Reservations kept in the store (src/core/reservations.ts), applied live by the DHCP service. Without it
   * the config's reservations are listed and none can be added.
   */
  reservations?: ReservationBook;
  /** /api/v1/bmcs (and the BMC summary in the status). */
  bmc?: BmcApi;
  /** /api/v1/images and /api/v1/jobs. */
  assets?: AssetStore;
  /** What GET /api/v1/status says about the HTTPS listener (its certificate's SHA-256 fingerprint). */
  https?: () => { fingerprint?: string; certificate?: string; validTo?: string } | undefined;
  now?: () => number;
}

/** What the status route needs from buildApp's own deps. */
export interface StatusBase {
  version: string;
  instanceId: () => string | undefined;
  readiness: () => RunnerStatus;
}

export function resourceRoutes(deps: ResourcesApiDeps, base: StatusBase): FastifyPluginAsync {
  return async (app) => {
    await app.register(subnetRoutes(deps));
    await app.register(leaseRoutes(deps));
    await app.register(dnsRoutes(deps));
    if (deps.bmc) await app.register(bmcRoutes(deps.bmc));
    if (deps.assets) await app.register(imageRoutes({ ...deps, assets: deps.assets }));
    await app.register(settingRoutes(deps));
    await app.register(statusRoutes(deps, base));
  };
}

/**
 * Core checks throw VALIDATION_FAILED as "field: problem" with details.field; the API names the request part
 * too ("body.ip: ..."), as schema refusals do. `part` says where each field came from.
 */
export async function inRequest<T>(part: (field: string) => string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isMetalboxError(err, 'VALIDATION_FAILED') && typeof err.details?.field === 'string') {
      throw new MetalboxError('VALIDATION_FAILED', `${part(err.details.field)}.${err.message}`, { details: err.details });
    }
    throw err;
  }
}
