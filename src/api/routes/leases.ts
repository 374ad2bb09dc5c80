// DHCP leases as the store holds them (the `leases` collection, written by the DHCP service before each ACK).
//
//   GET /api/v1/leases        viewer  filter by subnet, MAC, state, expired; in address order, paged
//   GET /api/v1/leases/:ip    viewer
//
// A lease record keeps its last state (offered, bound, released, declined) after its time is up: `expired`
// says whether expiresAt has passed, so "who holds an address now" is state=bound&expired=false.
// ?mac= uses the store's lease-by-MAC index, which names the lease the MAC holds or last held (one lease);
// the MAC's history is in its events (lease.*).
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { findSubnet } from '../../core/reservations.ts';
import { MetalboxError } from '../../lib/errors.ts';
import { parseIPv4 } from '../../lib/ipv4.ts';
import { parseMac } from '../../lib/mac.ts';
import type { LeaseRecord } from '../../store/types.ts';
import { ErrorSchema } from '../schemas.ts';
import { commaLists, validatorCompiler } from './machines.ts';
import type { ResourcesApiDeps } from './resources.ts';
import { CIDR_PARAM } from './subnets.ts';

const STATES = ['offered', 'bound', 'released', 'declined'] as const;
const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1000;
const IPV4 = '^\\d{1,3}(\\.\\d{1,3}){3}$';

export const LeaseSchema = Type.Object({
  ip: Type.String(),
  mac: Type.String(),
  subnet: Type.String(),
  state: Type.Enum([...STATES], { description: 'the last state written; see expired' }),
  expiresAt: Type.String({ description: 'ISO 8601; for released leases, when they were released' }),
  expired: Type.Boolean({ description: 'expiresAt has passed: the address is free again (unless re-leased)' }),
  hostname: Type.Optional(Type.String()),
  clientId: Type.Optional(Type.String()),
  machineId: Type.Optional(Type.String({ description: 'the machine with this MAC, when one is known' })),
});

const ListQuery = Type.Object({
  subnet: Type.Optional(CIDR_PARAM),
  mac: Type.Optional(Type.String({ maxLength: 32, description: 'the lease this MAC holds or last held' })),
  state: Type.Optional(Type.Array(Type.Enum([...STATES]), { maxItems: STATES.length, description: 'any of these states; a,b or repeated' })),
  expired: Type.Optional(Type.Boolean({ description: 'true: only leases whose time is up; false: only current ones' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_LIMIT, description: `page size, default ${DEFAULT_LIMIT}` })),
  cursor: Type.Optional(Type.String({ pattern: IPV4, description: 'the previous page\'s next' })),
}, { additionalProperties: false });

export function leaseRoutes(deps: ResourcesApiDeps): FastifyPluginAsync {
  const now = deps.now ?? Date.now;
  const view = async (l: LeaseRecord, at: number) => {
    const machine = await deps.store.machines.getBy('mac', l.mac);
    return {
      ip: l.ip, mac: l.mac, subnet: l.subnet, state: l.state, expiresAt: l.expiresAt,
      expired: l.state === 'released' || Date.parse(l.expiresAt) <= at,
      ...(l.hostname !== undefined ? { hostname: l.hostname } : {}),
      ...(l.clientId !== undefined ? { clientId: l.clientId } : {}),
      ...(machine ? { machineId: machine.id } : {}),
    };
  };

  return async (fastify) => {
    fastify.setValidatorCompiler(validatorCompiler);
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

    app.get('/api/v1/leases', {
      config: { access: 'viewer' },
      preValidation: commaLists(['state']),
      schema: {
        summary: 'DHCP leases, in address order',
        querystring: ListQuery,
        response: {
          200: Type.Object({
            items: Type.Array(LeaseSchema),
            total: Type.Integer({ description: 'leases matching the filter, all pages' }),
            next: Type.Union([Type.String(), Type.Null()], { description: 'cursor of the next page; null on the last' }),
          }),
          400: ErrorSchema,
        },
      },
    }, async (req) => {
      const q = req.query;
      const at = now();
      let subnet: string | undefined;
      if (q.subnet !== undefined) {
        const s = findSubnet(deps.config.subnets, q.subnet);
        // A subnet no longer configured may still have leases in the store: match its text as written.
        subnet = s?.cidr ?? q.subnet.replace(/-(\d{1,2})$/, '/$1');
      }
      let mac: string | undefined;
      if (q.mac !== undefined) {
        mac = parseMac(q.mac);
        if (mac === undefined) throw new MetalboxError('VALIDATION_FAILED', 'querystring.mac: must be a MAC address like aa:bb:cc:dd:ee:ff');
      }
      const after = q.cursor !== undefined ? parseIPv4(q.cursor) : undefined;
      if (q.cursor !== undefined && after === undefined) throw new MetalboxError('VALIDATION_FAILED', 'querystring.cursor: must be the next of a previous page');
      const keep = (l: LeaseRecord) => (subnet === undefined || l.subnet === subnet)
        && (q.state === undefined || q.state.length === 0 || (q.state as readonly string[]).includes(l.state))
        && (q.expired === undefined || (l.state === 'released' || Date.parse(l.expiresAt) <= at) === q.expired);
      let matching: { n: number; l: LeaseRecord }[] = [];
      if (mac !== undefined) {
        const l = await deps.store.leases.getBy('mac', mac);
        if (l && keep(l)) matching.push({ n: parseIPv4(l.ip) ?? 0, l });
      } else {
        // Address order, not the store's text order (10.0.0.9 before 10.0.0.10): one scan, then a sort.
        for await (const [, l] of deps.store.leases.entries()) if (keep(l)) matching.push({ n: parseIPv4(l.ip) ?? 0, l });
        matching.sort((a, b) => a.n - b.n);
      }
      const total = matching.length;
      if (after !== undefined) matching = matching.filter((m) => m.n > after);
      const limit = q.limit ?? DEFAULT_LIMIT;
      const page = matching.slice(0, limit);
      return {
        items: await Promise.all(page.map((m) => view(m.l, at))),
        total,
        next: matching.length > limit ? page[page.length - 1]!.l.ip : null,
      };
    });

    app.get('/api/v1/leases/:ip', {
      config: { access: 'viewer' },
      schema: { summary: 'The lease of one address', params: Type.Object({ ip: Type.String({ pattern: IPV4 }) }, { additionalProperties: false }), response: { 200: LeaseSchema, 404: ErrorSchema } },
    }, async (req) => {
      const l = parseIPv4(req.params.ip) !== undefined ? await deps.store.leases.get(req.params.ip) : undefined;
      if (!l) throw new MetalboxError('NOT_FOUND', `no lease of ${req.params.ip}`);
      return view(l, now());
    });
  };
}
