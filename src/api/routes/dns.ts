// DNS records added by hand (src/core/dns-records.ts has the rules; the DNS server serves them).
//
//   GET    /api/v1/dns/zones          viewer    the zones records may live in
//   GET    /api/v1/dns/records        viewer    filter by name, type, zone; sorted by name, type, value; paged
//   GET    /api/v1/dns/records/:id    viewer
//   POST   /api/v1/dns/records        operator  {name, type, value | priority/weight/port/target, ttl?} -> 201
//   PATCH  /api/v1/dns/records/:id    operator  fields to change (ttl: null clears it) -> 200
//   DELETE /api/v1/dns/records/:id    operator  -> 204
//
// Refusals: 400 VALIDATION_FAILED naming the field (body.value: an A record holds an IPv4 address ...);
// 409 STORE_CONFLICT for a duplicate or a CNAME clash.
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { DEFAULT_LIMIT, DNS_RECORD_ID_PATTERN, DNS_TYPES, DnsRecords, MAX_LIMIT, MAX_TTL, MAX_TXT_BYTES } from '../../core/dns-records.ts';
import { MetalboxError } from '../../lib/errors.ts';
import { ErrorSchema } from '../schemas.ts';
import { actorOf, validatorCompiler } from './machines.ts';
import { inRequest, type ResourcesApiDeps } from './resources.ts';

const U16 = (description: string) => Type.Integer({ minimum: 0, maximum: 65535, description });

export const DnsRecordSchema = Type.Object({
  id: Type.String(),
  name: Type.String({ description: 'absolute, lower case, no trailing dot' }),
  type: Type.Enum([...DNS_TYPES]),
  value: Type.String({ description: 'presentation form: address, name, text; MX "priority target", SRV "priority weight port target"' }),
  ttl: Type.Optional(Type.Integer({ description: 'seconds; absent: the DNS server\'s default' })),
  priority: Type.Optional(Type.Integer()),
  weight: Type.Optional(Type.Integer()),
  port: Type.Optional(Type.Integer()),
  target: Type.Optional(Type.String()),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});

const FIELDS = {
  value: Type.String({ minLength: 1, maxLength: MAX_TXT_BYTES, description: 'A: IPv4; AAAA: IPv6; CNAME, NS: a domain name; TXT: the text (MX and SRV use the fields below)' }),
  ttl: Type.Integer({ minimum: 0, maximum: MAX_TTL, description: 'seconds (RFC 2181 §8); one TTL per name and type (§5.2)' }),
  priority: U16('MX preference, SRV priority: lower first'),
  weight: U16('SRV: share among equal priorities'),
  port: U16('SRV: the service\'s port'),
  target: Type.String({ minLength: 1, maxLength: 254, description: 'MX exchange, SRV target host ("." for SRV: no such service)' }),
};

const CreateBody = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 254, description: 'fully qualified, in the configured domain or a subnet\'s reverse zone' }),
  type: Type.Enum([...DNS_TYPES]),
  value: Type.Optional(FIELDS.value),
  ttl: Type.Optional(FIELDS.ttl),
  priority: Type.Optional(FIELDS.priority),
  weight: Type.Optional(FIELDS.weight),
  port: Type.Optional(FIELDS.port),
  target: Type.Optional(FIELDS.target),
}, { additionalProperties: false });

const PatchBody = Type.Object({
  name: Type.Optional(CreateBody.properties.name),
  type: Type.Optional(CreateBody.properties.type),
  value: Type.Optional(FIELDS.value),
  ttl: Type.Optional(Type.Union([FIELDS.ttl, Type.Null()], { description: 'null: back to the server default (for the whole RRset)' })),
  priority: Type.Optional(FIELDS.priority),
  weight: Type.Optional(FIELDS.weight),
  port: Type.Optional(FIELDS.port),
  target: Type.Optional(FIELDS.target),
}, { additionalProperties: false, minProperties: 1 });

const IdParams = Type.Object({ id: Type.String({ pattern: DNS_RECORD_ID_PATTERN }) }, { additionalProperties: false });

const ListQuery = Type.Object({
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 254, description: 'exactly this name' })),
  type: Type.Optional(Type.Enum([...DNS_TYPES])),
  zone: Type.Optional(Type.String({ minLength: 1, maxLength: 254, description: 'names at or under this one' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_LIMIT, description: `page size, default ${DEFAULT_LIMIT}` })),
  cursor: Type.Optional(Type.String({ maxLength: 2048, pattern: '^[A-Za-z0-9_-]*$', description: 'the previous page\'s next' })),
}, { additionalProperties: false });

const body = () => 'body';

export function dnsRoutes(deps: ResourcesApiDeps): FastifyPluginAsync {
  const records = new DnsRecords({ store: deps.store, events: deps.events, domain: deps.config.domain, subnets: deps.config.subnets, ...(deps.now ? { now: deps.now } : {}) });
  const errors = { 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };
  const notFound = (id: string) => new MetalboxError('NOT_FOUND', `no DNS record ${id}`);

  return async (fastify) => {
    fastify.setValidatorCompiler(validatorCompiler);
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

    app.get('/api/v1/dns/zones', {
      config: { access: 'viewer' },
      schema: {
        summary: 'The zones DNS records may live in',
        response: { 200: Type.Object({ forward: Type.String({ description: 'the configured domain' }), reverse: Type.Array(Type.String(), { description: 'in-addr.arpa zones of the configured subnets' }) }) },
      },
    }, async () => records.zones);

    app.get('/api/v1/dns/records', {
      config: { access: 'viewer' },
      schema: {
        summary: 'DNS records added by hand',
        querystring: ListQuery,
        response: { 200: Type.Object({ items: Type.Array(DnsRecordSchema), total: Type.Integer(), next: Type.Union([Type.String(), Type.Null()]) }), 400: ErrorSchema },
      },
    }, async (req) => records.list(req.query));

    app.get('/api/v1/dns/records/:id', {
      config: { access: 'viewer' },
      schema: { summary: 'One DNS record', params: IdParams, response: { 200: DnsRecordSchema, 404: ErrorSchema } },
    }, async (req) => (await records.get(req.params.id)) ?? Promise.reject(notFound(req.params.id)));

    app.post('/api/v1/dns/records', {
      config: { access: 'operator' },
      schema: { summary: 'Add a DNS record', body: CreateBody, response: { 201: DnsRecordSchema, ...errors } },
    }, async (req, reply) => {
      const r = await inRequest(body, () => records.create(req.body, actorOf(req)));
      return reply.code(201).send(r);
    });

    app.patch('/api/v1/dns/records/:id', {
      config: { access: 'operator' },
      schema: { summary: 'Change a DNS record', params: IdParams, body: PatchBody, response: { 200: DnsRecordSchema, ...errors } },
    }, async (req) => inRequest(body, () => records.update(req.params.id, req.body, actorOf(req))));

    app.delete('/api/v1/dns/records/:id', {
      config: { access: 'operator' },
      schema: { summary: 'Delete a DNS record', params: IdParams, response: { 204: Type.Null(), 404: ErrorSchema } },
    }, async (req, reply) => {
      if (!(await records.remove(req.params.id, actorOf(req)))) throw notFound(req.params.id);
      return reply.code(204).send(null);
    });
  };
}
