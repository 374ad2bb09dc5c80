// The driver table: driver name -> how to make one, and what the service may expect of it. The BMC service
// builds drivers only through this table (tests hand it fakes), so policy never depends on a protocol.
import { MetalboxError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import { createIpmiDriver, ipmiPing, IPMI_PORT } from './ipmi/index.ts';
import { createManualDriver, type ManualRequest } from './manual.ts';
import { createRedfishDriver, probeRedfish } from './redfish/index.ts';
import type { BmcDriver, BmcEndpoint, BmcInfo, PowerState } from './types.ts';
import { createWolDriver, WOL_DEFAULT_PORT } from './wol.ts';

export const DRIVER_NAMES = ['ipmi', 'redfish', 'wol', 'manual'] as const;
export type DriverName = (typeof DRIVER_NAMES)[number];

/** What the service hands a factory besides the endpoint. */
export interface DriverContext {
  /** Longest time one operation may take, retransmissions included (config bmc.timeoutSeconds). */
  timeoutMs: number;
  /** Wake-on-LAN: the interfaces magic packets leave by. */
  wolInterfaces: readonly string[];
  /** Manual: the state the operator last confirmed. */
  confirmed?: PowerState;
  /** Manual: told of each request made to the operator. */
  onManualRequest?: (request: ManualRequest) => void;
  /** For driver debug lines (never with secrets). */
  logger?: Logger;
}

/** What `probe` learns about a BMC before it is enrolled (no credentials needed). */
export interface ProbeResult {
  /** Redfish: SHA-256 fingerprint of the certificate the BMC presents ("AB:CD:..."), to pin on first use. */
  tlsFingerprint?: string;
  /** Anything else worth showing the operator (certificate subject and validity, service version, ...). */
  details?: Record<string, unknown>;
  info?: BmcInfo;
}

export interface DriverSpec {
  create(endpoint: BmcEndpoint, ctx: DriverContext): BmcDriver;
  /** Reading its power state tells something (not Wake-on-LAN, not manual): the poller reads it. */
  readonly pollable: boolean;
  /** Takes a username and password. */
  readonly credentials: boolean;
  readonly defaultPort?: number;
  /** Looks at a BMC without credentials (Redfish: its certificate, for trust on first use). */
  probe?(endpoint: BmcEndpoint, ctx: DriverContext, signal?: AbortSignal): Promise<ProbeResult>;
}

export type DriverTable = Readonly<Record<string, DriverSpec>>;

/** The drivers this build has. */
export function builtinDrivers(): DriverTable {
  return {
    ipmi: {
      // The driver's own deadline a little inside the service's, so its more precise error wins the race.
      create: (endpoint, ctx) => createIpmiDriver(endpoint, { deadlineMs: innerDeadline(ctx.timeoutMs), ...(ctx.logger ? { logger: ctx.logger } : {}) }),
      pollable: true, credentials: true, defaultPort: IPMI_PORT,
      async probe(endpoint, ctx, signal) {
        // RMCP presence ping (ASF 2.0 §3.2.4.3): is an IPMI BMC there? No credentials, no session.
        const pong = await ipmiPing(endpoint.address, { ...(endpoint.port !== undefined ? { port: endpoint.port } : {}), timeoutMs: Math.min(1000, ctx.timeoutMs), ...(signal ? { signal } : {}) });
        if (pong === undefined) throw new MetalboxError('BMC_UNREACHABLE', `no RMCP presence pong from ${endpoint.address}:${endpoint.port ?? IPMI_PORT}`);
        return { details: { ipmi: pong.ipmi, asfVersion: pong.asfVersion, securityExtensions: pong.securityExtensions, iana: pong.iana, rttMs: Math.round(pong.rttMs * 10) / 10 } };
      },
    },
    redfish: {
      create: (endpoint, ctx) => createRedfishDriver(endpoint, {
        // Per HTTP exchange; a call makes several (session, system, action) within the service's deadline.
        timeoutMs: Math.max(1000, Math.min(10_000, Math.floor(ctx.timeoutMs / 2))),
        cycleOffTimeoutMs: ctx.timeoutMs,
        ...(ctx.logger ? { logger: ctx.logger } : {}),
      }),
      pollable: true, credentials: true, defaultPort: 443,
      async probe(endpoint, ctx, signal) {
        const p = await probeRedfish(endpoint.address, endpoint.port ?? 443, { timeoutMs: innerDeadline(ctx.timeoutMs), ...(signal ? { signal } : {}), ...(ctx.logger ? { logger: ctx.logger } : {}) });
        const c = p.certificate;
        return {
          tlsFingerprint: c.fingerprint,
          details: {
            subject: c.subject, issuer: c.issuer, validFrom: c.validFrom, validTo: c.validTo, selfSigned: c.selfSigned, trustedByCa: c.trustedByCa,
            ...(c.subjectAltName ? { subjectAltName: c.subjectAltName } : {}),
            ...Object.fromEntries(Object.entries(p.service).filter(([, v]) => v !== undefined)),
          },
        };
      },
    },
    wol: {
      create: (endpoint, ctx) => createWolDriver(endpoint, { interfaces: ctx.wolInterfaces }),
      pollable: false, credentials: false, defaultPort: WOL_DEFAULT_PORT,
    },
    manual: {
      create: (endpoint, ctx) => createManualDriver(endpoint, {
        ...(ctx.confirmed !== undefined ? { confirmed: ctx.confirmed } : {}),
        ...(ctx.onManualRequest ? { onRequest: ctx.onManualRequest } : {}),
      }),
      pollable: false, credentials: false,
    },
  };
}

/** A driver's own deadline: the service's less a second (at least a second), so the driver reports first. */
function innerDeadline(ms: number): number {
  return Math.max(1000, ms - 1000);
}
