// BMCs over the BMC service (src/services/bmc/service.ts): the same operations as `metalbox bmc`.
//
//   GET    /api/v1/bmcs                viewer    every BMC (never a secret: hasPassword/hasKg only)
//   GET    /api/v1/bmcs/:id            viewer    by BMC id or machine id
//   POST   /api/v1/bmcs                admin     {driver, address, ...credentials} -> 201 (Redfish: pins the certificate)
//   PATCH  /api/v1/bmcs/:id            admin     fields to change; null clears an optional one
//   DELETE /api/v1/bmcs/:id            admin     -> 204
//   POST   /api/v1/bmcs/:id/test       operator  log in, read power state and identity
//   GET    /api/v1/bmcs/:id/power      viewer    read the power state now
//   POST   /api/v1/bmcs/:id/power      operator  {action: on|off|soft-off|cycle|reset}
//   POST   /api/v1/bmcs/:id/bootdev    operator  {device: pxe|disk, persistent?, efi?}
//   POST   /api/v1/bmcs/:id/confirm    operator  manual BMCs: {state: on|off}, what the operator did
//   GET    /api/v1/bmcs/:id/probe      operator  look at a registered BMC without credentials
//   POST   /api/v1/bmcs/probe          admin     {driver, address, port?}: look before enrolling (any address: admin)
//
// Passwords and Kg are accepted in request bodies and never leave: the service stores them sealed and its
// views carry none; the response schemas list what may leave. The service writes an event for every
// definition change and action, with the caller as actor.
//
// Field checks that depend on the driver are made here, before the service's own, so a refusal names the
// body field (400 VALIDATION_FAILED body.kg: ...). DRIVER_FIELDS mirrors src/services/bmc/records.ts FIELDS
// (test/unit/api-resources-bmcs.test.ts adds a BMC of every driver with every field this table allows).
import { isIP } from 'node:net';
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { POWER_ACTIONS } from '../../bmc/types.ts';
import { MetalboxError } from '../../lib/errors.ts';
import { parseMac } from '../../lib/mac.ts';
import { IPMI_CIPHER_SUITES, normalizeFingerprint, type BmcInput, type BmcPatch, type BmcView } from '../../services/bmc/records.ts';
import { ErrorSchema } from '../schemas.ts';
import { actorOf, validatorCompiler } from './machines.ts';
import type { BmcApi } from './resources.ts';

export const BMC_DRIVERS = ['ipmi', 'redfish', 'wol', 'manual'] as const;
const DRIVER_FIELDS: Record<(typeof BMC_DRIVERS)[number], readonly string[]> = {
  ipmi: ['port', 'username', 'password', 'cipherSuite', 'kg'],
  redfish: ['port', 'username', 'password', 'tlsFingerprint', 'systemId'],
  wol: ['port', 'wolInterface'],
  manual: [],
};
const OPTIONAL_FIELDS = ['port', 'username', 'password', 'cipherSuite', 'kg', 'tlsFingerprint', 'systemId', 'wolInterface'] as const;
const NEEDS_CREDENTIALS = new Set(['ipmi', 'redfish']);
const HOSTNAME = /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;
/** IPMI v2.0 §22.28 (user name: 16 bytes), §22.30 (IPMI 2.0 password: 20 bytes). */
const IPMI_MAX_USER = 16;
const IPMI_MAX_PASSWORD = 20;

const Iso = Type.String({ description: 'ISO 8601 UTC time' });
export const BmcViewSchema = Type.Object({
  id: Type.String(),
  machineId: Type.Optional(Type.String()),
  driver: Type.String(),
  address: Type.String(),
  port: Type.Optional(Type.Integer()),
  username: Type.Optional(Type.String()),
  hasPassword: Type.Boolean({ description: 'a password is stored (sealed); it is never shown' }),
  hasKg: Type.Boolean(),
  cipherSuite: Type.Optional(Type.Integer()),
  tlsFingerprint: Type.Optional(Type.String({ description: 'Redfish: the pinned certificate, SHA-256' })),
  systemId: Type.Optional(Type.String()),
  wolInterface: Type.Optional(Type.String()),
  powerState: Type.Enum(['on', 'off', 'unknown']),
  lastPolledAt: Type.Optional(Iso),
  lastChangedAt: Type.Optional(Iso),
  lastError: Type.Optional(Type.Object({ code: Type.String(), message: Type.String(), at: Iso })),
  failures: Type.Integer({ description: 'consecutive failed operations' }),
  unreachable: Type.Boolean({ description: 'failures reached bmc.unreachableAfter: polled slowly until it answers' }),
  pending: Type.Array(Type.Object({ request: Type.String(), actor: Type.String(), at: Iso }), { description: 'manual BMCs: requests the operator has not confirmed' }),
  createdAt: Iso,
  updatedAt: Iso,
});

const INPUT = {
  machineId: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$', description: 'the machine it powers (one BMC per machine)' }),
  address: Type.String({ minLength: 1, maxLength: 253, description: 'IPv4 or host name (ipmi, redfish); the machine\'s MAC (wol); where it is (manual)' }),
  port: Type.Integer({ minimum: 1, maximum: 65535 }),
  username: Type.String({ minLength: 1, maxLength: 256 }),
  password: Type.String({ minLength: 1, maxLength: 1024, writeOnly: true, description: 'write-only: stored sealed, never returned' }),
  cipherSuite: Type.Enum([...IPMI_CIPHER_SUITES], { description: 'IPMI: 3 (HMAC-SHA1, AES-128) or 17 (HMAC-SHA256, AES-128)' }),
  kg: Type.String({ pattern: '^([0-9a-fA-F]{2}){1,20}$', writeOnly: true, description: 'IPMI BMC key, 1-20 bytes in hex; write-only' }),
  tlsFingerprint: Type.String({ maxLength: 128, description: 'Redfish: SHA-256 of the certificate to pin (with or without colons); default: the one presented at enrolment' }),
  systemId: Type.String({ pattern: '^[A-Za-z0-9._~-]{1,128}$', description: 'Redfish: the ComputerSystem; default the first' }),
  wolInterface: Type.String({ pattern: '^[^/\\s]{1,15}$', description: 'Wake-on-LAN: the interface the packet leaves by' }),
};

const CreateBody = Type.Object({
  id: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,62}$', description: 'default: the machine id, else bmc-XXXXXXXX' })),
  machineId: Type.Optional(INPUT.machineId),
  driver: Type.Enum([...BMC_DRIVERS]),
  address: INPUT.address,
  port: Type.Optional(INPUT.port),
  username: Type.Optional(INPUT.username),
  password: Type.Optional(INPUT.password),
  cipherSuite: Type.Optional(INPUT.cipherSuite),
  kg: Type.Optional(INPUT.kg),
  tlsFingerprint: Type.Optional(INPUT.tlsFingerprint),
  systemId: Type.Optional(INPUT.systemId),
  wolInterface: Type.Optional(INPUT.wolInterface),
}, { additionalProperties: false });

const orNull = <T extends (typeof INPUT)[keyof typeof INPUT]>(s: T) => Type.Optional(Type.Union([s, Type.Null()]));
const PatchBody = Type.Object({
  driver: Type.Optional(Type.Enum([...BMC_DRIVERS])),
  address: Type.Optional(INPUT.address),
  machineId: orNull(INPUT.machineId),
  port: orNull(INPUT.port),
  username: orNull(INPUT.username),
  password: orNull(INPUT.password),
  cipherSuite: orNull(INPUT.cipherSuite),
  kg: orNull(INPUT.kg),
  tlsFingerprint: orNull(INPUT.tlsFingerprint),
  systemId: orNull(INPUT.systemId),
  wolInterface: orNull(INPUT.wolInterface),
}, { additionalProperties: false, minProperties: 1 });

const RefParams = Type.Object({ id: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$', description: 'BMC id or machine id' }) }, { additionalProperties: false });
const InfoSchema = Type.Object({
  manufacturer: Type.Optional(Type.String()), model: Type.Optional(Type.String()), firmwareVersion: Type.Optional(Type.String()),
  protocolVersion: Type.Optional(Type.String()), systemUuid: Type.Optional(Type.String()),
}, { additionalProperties: true });
const ProbeSchema = Type.Object({
  tlsFingerprint: Type.Optional(Type.String({ description: 'Redfish: the certificate presented now; compare it with the one the BMC shows' })),
  details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  info: Type.Optional(InfoSchema),
});

const errors = { 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 429: ErrorSchema, 502: ErrorSchema, 504: ErrorSchema };

function invalid(field: string, message: string): MetalboxError {
  return new MetalboxError('VALIDATION_FAILED', `body.${field}: ${message}`, { details: { field } });
}

/**
 * The driver-dependent checks, on what the BMC will look like after the request (`previous` for an edit):
 * fields the driver does not take, the address form, credentials the driver needs, IPMI's length limits.
 */
function checkForDriver(body: Record<string, unknown>, previous: BmcView | undefined): void {
  const driver = (body.driver ?? previous?.driver) as (typeof BMC_DRIVERS)[number];
  const allowed = DRIVER_FIELDS[driver] ?? [];
  for (const f of OPTIONAL_FIELDS) {
    if (body[f] !== undefined && body[f] !== null && !allowed.includes(f)) throw invalid(f, `does not apply to the ${driver} driver (it takes ${allowed.length > 0 ? allowed.join(', ') : 'only an address'})`);
  }
  const address = (body.address ?? previous?.address) as string | undefined;
  if (address === undefined) throw invalid('address', `the ${driver} driver needs an address`);
  if (driver === 'wol' && parseMac(address) === undefined) throw invalid('address', 'Wake-on-LAN needs the machine\'s MAC as its address (aa:bb:cc:dd:ee:ff)');
  if ((driver === 'ipmi' || driver === 'redfish') && !(isIP(address) !== 0 || HOSTNAME.test(address))) throw invalid('address', 'must be an IP address or a host name');
  if (driver === 'manual' && (address.length > 200 || /[\x00-\x1f\x7f]/.test(address))) throw invalid('address', 'a manual BMC\'s address (where the machine is) is at most 200 printable characters');
  if (typeof body.tlsFingerprint === 'string' && normalizeFingerprint(body.tlsFingerprint) === undefined) throw invalid('tlsFingerprint', 'must be a SHA-256 fingerprint: 32 hex bytes, with or without colons');
  if (driver === 'ipmi' && typeof body.username === 'string' && Buffer.byteLength(body.username) > IPMI_MAX_USER) throw invalid('username', `an IPMI user name is at most ${IPMI_MAX_USER} bytes (IPMI v2.0 §22.28)`);
  if (driver === 'ipmi' && typeof body.password === 'string' && Buffer.byteLength(body.password) > IPMI_MAX_PASSWORD) throw invalid('password', `an IPMI 2.0 password is at most ${IPMI_MAX_PASSWORD} bytes (IPMI v2.0 §22.30)`);
  if (typeof body.username === 'string' && /[\x00-\x1f\x7f]/.test(body.username)) throw invalid('username', 'must be printable text');
  if (typeof body.password === 'string' && body.password.includes('\0')) throw invalid('password', 'must be text without NUL');
  if (NEEDS_CREDENTIALS.has(driver)) {
    const username = body.username === null ? undefined : body.username ?? previous?.username;
    if (username === undefined) throw invalid('username', `the ${driver} driver needs a username`);
    const hasPassword = body.password === null ? false : body.password !== undefined || previous?.hasPassword === true;
    if (!hasPassword) throw invalid('password', `the ${driver} driver needs a password`);
  }
}

export function bmcRoutes(bmc: BmcApi): FastifyPluginAsync {
  const notFound = (ref: string) => new MetalboxError('BMC_NOT_FOUND', `no BMC has id or machine ${JSON.stringify(ref)}`);
  const actor = (req: Parameters<typeof actorOf>[0]) => actorOf(req).actor;

  return async (fastify) => {
    fastify.setValidatorCompiler(validatorCompiler);
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

    app.get('/api/v1/bmcs', {
      config: { access: 'viewer' },
      schema: { summary: 'Every BMC', response: { 200: Type.Object({ items: Type.Array(BmcViewSchema) }) } },
    }, async () => ({ items: await bmc.list() }));

    app.get('/api/v1/bmcs/:id', {
      config: { access: 'viewer' },
      schema: { summary: 'One BMC, by BMC id or machine id', params: RefParams, response: { 200: BmcViewSchema, 404: ErrorSchema } },
    }, async (req) => (await bmc.get(req.params.id)) ?? Promise.reject(notFound(req.params.id)));

    app.post('/api/v1/bmcs', {
      config: { access: 'admin' },
      schema: {
        summary: 'Register a BMC',
        body: CreateBody,
        response: { 201: Type.Object({ bmc: BmcViewSchema, pinnedOnFirstUse: Type.Optional(Type.String({ description: 'Redfish without tlsFingerprint: the certificate pinned now; check it' })) }), ...errors },
      },
    }, async (req, reply) => {
      checkForDriver(req.body, undefined);
      if (req.body.id !== undefined && (await bmc.get(req.body.id))?.id === req.body.id) {
        throw new MetalboxError('STORE_CONFLICT', `a BMC with id ${req.body.id} exists; change it or choose another id`, { details: { field: 'id' } });
      }
      if (req.body.machineId !== undefined) {
        const holder = (await bmc.list()).find((b) => b.machineId === req.body.machineId);
        if (holder) throw new MetalboxError('STORE_CONFLICT', `machine ${req.body.machineId} already has BMC ${holder.id}; a machine has one BMC`, { details: { field: 'machineId' } });
      }
      const result = await bmc.add(req.body as BmcInput, actor(req));
      return reply.code(201).send(result);
    });

    app.patch('/api/v1/bmcs/:id', {
      config: { access: 'admin' },
      schema: { summary: 'Change a BMC (null clears an optional field)', params: RefParams, body: PatchBody, response: { 200: BmcViewSchema, ...errors } },
    }, async (req) => {
      const previous = await bmc.get(req.params.id);
      if (!previous) throw notFound(req.params.id);
      checkForDriver(req.body, previous);
      const m = req.body.machineId;
      if (typeof m === 'string' && m !== previous.machineId) {
        const holder = (await bmc.list()).find((b) => b.machineId === m && b.id !== previous.id);
        if (holder) throw new MetalboxError('STORE_CONFLICT', `machine ${m} already has BMC ${holder.id}; a machine has one BMC`, { details: { field: 'machineId' } });
      }
      return bmc.edit(previous.id, req.body as BmcPatch, actor(req));
    });

    app.delete('/api/v1/bmcs/:id', {
      config: { access: 'admin' },
      schema: { summary: 'Remove a BMC', params: RefParams, response: { 204: Type.Null(), 404: ErrorSchema, 429: ErrorSchema } },
    }, async (req, reply) => {
      await bmc.remove(req.params.id, actor(req));
      return reply.code(204).send(null);
    });

    app.post('/api/v1/bmcs/:id/test', {
      config: { access: 'operator' },
      schema: {
        summary: 'Log in, read the power state and what the BMC says about itself',
        params: RefParams,
        response: { 200: Type.Object({ bmc: Type.String(), powerState: Type.Enum(['on', 'off', 'unknown']), info: InfoSchema, ms: Type.Integer() }), ...errors },
      },
    }, async (req) => bmc.test(req.params.id, actor(req)));

    app.get('/api/v1/bmcs/:id/power', {
      config: { access: 'viewer' },
      schema: {
        summary: 'Read the power state now',
        params: RefParams,
        response: { 200: Type.Object({ bmc: Type.String(), state: Type.Enum(['on', 'off', 'unknown']), ms: Type.Integer() }), ...errors },
      },
    }, async (req) => bmc.powerStatus(req.params.id, actor(req)));

    app.post('/api/v1/bmcs/:id/power', {
      config: { access: 'operator' },
      schema: {
        summary: 'A power action (on while on does nothing)',
        params: RefParams,
        body: Type.Object({ action: Type.Enum([...POWER_ACTIONS]) }, { additionalProperties: false }),
        response: {
          200: Type.Object({
            bmc: Type.String(), machineId: Type.Optional(Type.String()), action: Type.String(),
            result: Type.Enum(['done', 'noop', 'requested'], { description: 'noop: already so; requested: a manual BMC\'s operator was asked' }),
            before: Type.Enum(['on', 'off', 'unknown']), performed: Type.Optional(Type.String()), message: Type.String(), ms: Type.Integer(),
          }),
          ...errors,
        },
      },
    }, async (req) => bmc.power(req.params.id, req.body.action, actor(req)));

    app.post('/api/v1/bmcs/:id/bootdev', {
      config: { access: 'operator' },
      schema: {
        summary: 'Set the next boot device',
        params: RefParams,
        body: Type.Object({
          device: Type.Enum(['pxe', 'disk']),
          persistent: Type.Optional(Type.Boolean({ description: 'every boot; default the next only' })),
          efi: Type.Optional(Type.Boolean({ description: 'a UEFI boot' })),
        }, { additionalProperties: false }),
        response: { 200: Type.Object({ bmc: Type.String(), result: Type.Enum(['done', 'requested']), message: Type.String(), ms: Type.Integer() }), ...errors },
      },
    }, async (req) => bmc.setBootDevice(req.params.id, { device: req.body.device, persistent: req.body.persistent === true, efi: req.body.efi === true }, actor(req)));

    app.post('/api/v1/bmcs/:id/confirm', {
      config: { access: 'operator' },
      schema: {
        summary: 'Manual BMCs: the power state the operator has set',
        params: RefParams,
        body: Type.Object({ state: Type.Enum(['on', 'off']) }, { additionalProperties: false }),
        response: { 200: BmcViewSchema, ...errors, 422: ErrorSchema },
      },
    }, async (req) => bmc.confirm(req.params.id, req.body.state, actor(req)));

    app.get('/api/v1/bmcs/:id/probe', {
      config: { access: 'operator' },
      schema: { summary: 'Look at a registered BMC without credentials (Redfish: its certificate now)', params: RefParams, response: { 200: ProbeSchema, ...errors, 422: ErrorSchema } },
    }, async (req) => {
      const b = await bmc.get(req.params.id);
      if (!b) throw notFound(req.params.id);
      return bmc.probe({ driver: b.driver, address: b.address, ...(b.port !== undefined ? { port: b.port } : {}) });
    });

    app.post('/api/v1/bmcs/probe', {
      config: { access: 'admin', audit: 'bmc.probe' },
      schema: {
        summary: 'Look at a BMC before enrolling it (no credentials sent)',
        body: Type.Object({ driver: Type.Enum([...BMC_DRIVERS]), address: INPUT.address, port: Type.Optional(INPUT.port) }, { additionalProperties: false }),
        response: { 200: ProbeSchema, ...errors, 422: ErrorSchema },
      },
    }, async (req) => {
      const { driver, address } = req.body;
      if ((driver === 'ipmi' || driver === 'redfish') && !(isIP(address) !== 0 || HOSTNAME.test(address))) throw invalid('address', 'must be an IP address or a host name');
      return bmc.probe({ driver, address, ...(req.body.port !== undefined ? { port: req.body.port } : {}) });
    });
  };
}
