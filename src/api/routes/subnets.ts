// Provisioning subnets (from the config file) with the DHCP pool's usage, and their reservations.
//
//   GET    /api/v1/subnets                               viewer  every subnet, with pool usage while DHCP runs
//   GET    /api/v1/subnets/:cidr                         viewer
//   GET    /api/v1/subnets/:cidr/reservations            viewer  the config's (read-only) and the API's
//   POST   /api/v1/subnets/:cidr/reservations            admin   {mac, ip, hostname?} -> 201; DHCP applies it at once
//   DELETE /api/v1/subnets/:cidr/reservations/:mac       admin   an API reservation (config ones change with the file)
//
// `:cidr` is the subnet with its slash URL-encoded (10.77.0.0%2F24) or written as a dash (10.77.0.0-24).
// Subnets themselves change with the config file (their ranges size the pools the DHCP service builds at start).
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { SubnetConfig } from '../../config/schema.ts';
import { findSubnet, type StoredReservation } from '../../core/reservations.ts';
import { MetalboxError } from '../../lib/errors.ts';
import { parseMac } from '../../lib/mac.ts';
import { ErrorSchema } from '../schemas.ts';
import { actorOf, validatorCompiler } from './machines.ts';
import { inRequest, type ResourcesApiDeps } from './resources.ts';

export const CIDR_PARAM = Type.String({ pattern: '^\\d{1,3}(\\.\\d{1,3}){3}[/-]\\d{1,2}$', description: 'the subnet: 10.77.0.0%2F24 (slash URL-encoded) or 10.77.0.0-24' });
const SubnetParams = Type.Object({ cidr: CIDR_PARAM }, { additionalProperties: false });
const MAC_TEXT = '^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$|^[0-9A-Fa-f]{4}\\.[0-9A-Fa-f]{4}\\.[0-9A-Fa-f]{4}$';

const UsageSchema = Type.Object({
  size: Type.Integer({ description: 'addresses in the dynamic ranges, less excluded and reserved ones' }),
  bound: Type.Integer(),
  offered: Type.Integer(),
  declined: Type.Integer({ description: 'quarantined after a DHCPDECLINE (dhcp.declineSeconds)' }),
  free: Type.Integer(),
  reserved: Type.Integer({ description: 'reservations in force (config and API)' }),
  utilization: Type.Number({ description: '(size - free) / size, 0 when the pool is empty' }),
});

export const SubnetSchema = Type.Object({
  cidr: Type.String(),
  gateway: Type.Optional(Type.String()),
  dynamicRanges: Type.Array(Type.String(), { description: '"first-last", inclusive' }),
  excludedRanges: Type.Array(Type.String()),
  proxyDhcp: Type.Boolean({ description: 'another DHCP server owns the addresses; metalbox answers PXE clients only' }),
  options: Type.Object({
    leaseSeconds: Type.Integer(),
    dnsServers: Type.Array(Type.String(), { description: 'empty: metalbox itself' }),
    ntpServers: Type.Array(Type.String(), { description: 'empty: metalbox itself' }),
    domainSearch: Type.Array(Type.String(), { description: 'empty: the domain' }),
    mtu: Type.Optional(Type.Integer()),
  }),
  reservations: Type.Object({ config: Type.Integer(), api: Type.Integer() }),
  usage: Type.Union([UsageSchema, Type.Null()], { description: 'null while the DHCP service does not serve this subnet' }),
});

const ReservationSchema = Type.Object({
  mac: Type.String(),
  ip: Type.String(),
  hostname: Type.Optional(Type.String()),
  source: Type.Enum(['config', 'api'], { description: 'config: read-only, from the config file; api: added here' }),
  createdAt: Type.Optional(Type.String()),
  createdBy: Type.Optional(Type.String()),
  inactive: Type.Optional(Type.String({ description: 'api reservations the config file now contradicts: why the DHCP service does not apply it (delete it)' })),
});

const ReservationBody = Type.Object({
  mac: Type.String({ maxLength: 32, description: 'the client\'s MAC: aa:bb:cc:dd:ee:ff' }),
  ip: Type.String({ maxLength: 15, description: 'inside the subnet, not excluded, not reserved or leased to another MAC' }),
  hostname: Type.Optional(Type.String({ maxLength: 63, description: 'handed out as option 12; an RFC 1123 label' })),
}, { additionalProperties: false });

const notFound = (cidr: string) => new MetalboxError('NOT_FOUND', `no configured subnet ${cidr.replace(/-(\d{1,2})$/, '/$1')}`);

export function subnetRoutes(deps: ResourcesApiDeps): FastifyPluginAsync {
  const subnets = deps.config.subnets;
  const now = deps.now ?? Date.now;

  const stored = async (s: SubnetConfig): Promise<StoredReservation[]> => (deps.reservations ? deps.reservations.list(s.cidr) : []);

  const view = async (s: SubnetConfig) => {
    const pool = deps.dhcp?.pools().get(s.cidr);
    const st = pool?.stats(now());
    return {
      cidr: s.cidr,
      ...(s.gateway !== undefined ? { gateway: s.gateway } : {}),
      dynamicRanges: s.dynamicRanges,
      excludedRanges: s.excludedRanges,
      proxyDhcp: s.proxyDhcp,
      options: {
        leaseSeconds: s.leaseSeconds, dnsServers: s.dnsServers, ntpServers: s.ntpServers, domainSearch: s.domainSearch,
        ...(s.mtu !== undefined ? { mtu: s.mtu } : {}),
      },
      reservations: { config: s.reservations.length, api: (await stored(s)).length },
      usage: st ? { ...st, utilization: st.size > 0 ? (st.size - st.free) / st.size : 0 } : null,
    };
  };

  return async (fastify) => {
    fastify.setValidatorCompiler(validatorCompiler);
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

    app.get('/api/v1/subnets', {
      config: { access: 'viewer' },
      schema: { summary: 'Provisioning subnets with DHCP pool usage', response: { 200: Type.Object({ items: Type.Array(SubnetSchema) }) } },
    }, async () => ({ items: await Promise.all(subnets.map(view)) }));

    app.get('/api/v1/subnets/:cidr', {
      config: { access: 'viewer' },
      schema: { summary: 'One subnet', params: SubnetParams, response: { 200: SubnetSchema, 404: ErrorSchema } },
    }, async (req) => {
      const s = findSubnet(subnets, req.params.cidr);
      if (!s) throw notFound(req.params.cidr);
      return view(s);
    });

    app.get('/api/v1/subnets/:cidr/reservations', {
      config: { access: 'viewer' },
      schema: { summary: 'A subnet\'s reservations: the config file\'s and the API\'s', params: SubnetParams, response: { 200: Type.Object({ items: Type.Array(ReservationSchema) }), 404: ErrorSchema } },
    }, async (req) => {
      const s = findSubnet(subnets, req.params.cidr);
      if (!s) throw notFound(req.params.cidr);
      const items = [
        ...s.reservations.map((r) => ({ mac: parseMac(r.mac) ?? r.mac, ip: r.ip, ...(r.hostname !== undefined ? { hostname: r.hostname } : {}), source: 'config' as const })),
        ...(await stored(s)).map((r) => ({ ...r, source: 'api' as const })),
      ];
      return { items };
    });

    const book = deps.reservations;
    if (!book) return;

    app.post('/api/v1/subnets/:cidr/reservations', {
      config: { access: 'admin' },
      schema: {
        summary: 'Reserve an address for a MAC (the DHCP service applies it at once)',
        params: SubnetParams, body: ReservationBody,
        response: { 201: ReservationSchema, 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema },
      },
    }, async (req, reply) => {
      const r = await inRequest((f) => (f === 'cidr' ? 'params' : 'body'), () => book.add(req.params.cidr, req.body, actorOf(req)));
      return reply.code(201).send({ ...r, source: 'api' as const });
    });

    app.delete('/api/v1/subnets/:cidr/reservations/:mac', {
      config: { access: 'admin' },
      schema: {
        summary: 'Remove an API reservation',
        params: Type.Object({ cidr: CIDR_PARAM, mac: Type.String({ pattern: MAC_TEXT, description: 'aa:bb:cc:dd:ee:ff' }) }, { additionalProperties: false }),
        response: { 204: Type.Null(), 400: ErrorSchema, 404: ErrorSchema },
      },
    }, async (req, reply) => {
      const gone = await inRequest(() => 'params', () => book.remove(req.params.cidr, req.params.mac, actorOf(req)));
      if (!gone) throw new MetalboxError('NOT_FOUND', `${req.params.mac} has no API reservation in ${req.params.cidr.replace(/-(\d{1,2})$/, '/$1')}`);
      return reply.code(204).send(null);
    });
  };
}
