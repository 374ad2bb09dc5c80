// /api/v1/machines: list (filter, sort, cursor paging, field selection), get, create (from a MAC or for a
// BMC), update (host name, tags), delete, lifecycle actions, power and boot device.
//
// Every route declares JSON Schema (TypeBox) for params, query, body and response. Validation here uses
// TypeBox's compiler rather than fastify's default ajv setup: unknown fields are refused (400 naming them)
// instead of silently dropped, and values are never coerced except query/params strings to their types.
// A request without a body is validated as `{}`. List parameters take `a,b` or repeat the key (`?state=Ready&state=New`).
import type { FastifyPluginAsync, FastifyRequest, FastifySchemaCompiler, FastifySchemaValidationError, preValidationHookHandler } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Type, { type Static, type TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { isMetalboxError, MetalboxError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Store } from '../../store/types.ts';
import type { BootDeviceRequest, PowerAction, PowerState } from '../../bmc/types.ts';
import { POWER_ACTIONS } from '../../bmc/types.ts';
import { actionsFrom, MAX_REASON_LENGTH, STATES, USER_ACTIONS } from '../../core/lifecycle.ts';
import { checkMac, HOSTNAME_INPUT_PATTERN, MAX_TAGS, TAG_PATTERN, UUID_PATTERN } from '../../core/machine-fields.ts';
import { DEFAULT_LIMIT, MAX_LIMIT, SORT_FIELDS } from '../../core/machine-list.ts';
import type { ActorContext, Machine, MachineRegistry } from '../../core/machines.ts';
import { ErrorSchema } from '../schemas.ts';

/**
 * Power and boot-device control of a machine, by machine id (the BMC service behind it; main wires it).
 * Errors are the BMC service's (BMC_NOT_FOUND when the machine has no BMC, BMC_TIMEOUT, ...).
 */
export interface MachinePowerControl {
  powerAction(machineId: string, action: PowerAction, actor: string): Promise<{ result: 'done' | 'noop' | 'requested'; message: string; before?: PowerState; performed?: PowerAction }>;
  powerStatus(machineId: string, actor: string): Promise<{ state: PowerState }>;
  setBootDevice(machineId: string, request: BootDeviceRequest, actor: string): Promise<{ result: 'done' | 'requested'; message: string }>;
  /** Registers the BMC of a machine being created (create for a BMC); its errors fail the create. */
  enroll?(machineId: string, bmc: BmcEnrollment, actor: string): Promise<{ bmc: string }>;
  /** Removes a machine's BMC: after a create that failed once its BMC was enrolled, and after a delete. */
  unenroll?(machineId: string, actor: string): Promise<void>;
}

export interface MachinesApiDeps {
  registry: MachineRegistry;
  store: Store;
  logger: Logger;
  bmc?: MachinePowerControl;
  /** SSE heartbeat (default 15 s) and per-client queue limit (default 1 MiB): tests shrink them. */
  streamHeartbeatMs?: number;
  streamMaxQueueBytes?: number;
}

// -----------------------------------------------------------------------------------------------------------
// Validation shared by the machine and event routes

/**
 * TypeBox validation. An absent body counts as `{}` (POST /actions/x with no body at all is fine). Query and
 * params are converted by `flatConverter` (string -> integer, boolean, one-element array), not TypeBox's
 * generic Value.Convert, which cost 12% of a list request's CPU (it re-evaluates enum types on every call).
 */
export const validatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const validator = Compile(schema);
  const convert = httpPart === 'body' ? (v: unknown) => (v === undefined || v === null ? {} : v) : flatConverter(schema);
  return (value: unknown) => {
    const v = convert(value);
    return validator.Check(v) ? { value: v } : { error: validator.Errors(v) as unknown as FastifySchemaValidationError[] };
  };
};

/** Query strings and path params are flat objects of strings (arrays when repeated): convert by each property's type. */
function flatConverter(schema: TSchema): (value: unknown) => unknown {
  const props = (schema as { properties?: Record<string, { type?: unknown }> }).properties ?? {};
  const kinds = new Map(Object.entries(props).map(([k, p]) => [k, typeof p.type === 'string' ? p.type : undefined]));
  return (value) => {
    if (typeof value !== 'object' || value === null) return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const kind = kinds.get(k);
      if (kind === 'array') out[k] = Array.isArray(v) ? v : [v];
      else if (Array.isArray(v) && kind !== undefined) out[k] = v; // repeated where one is expected: the schema refuses it
      else if ((kind === 'integer' || kind === 'number') && typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v)) out[k] = Number(v);
      else if (kind === 'boolean' && (v === 'true' || v === 'false')) out[k] = v === 'true';
      else out[k] = v;
    }
    return out;
  };
}

/** Splits `a,b` in the named query keys into arrays (repeated keys are arrays already). */
export function commaLists(keys: readonly string[]): preValidationHookHandler {
  return async (req: FastifyRequest) => {
    const q = req.query as Record<string, unknown> | undefined;
    if (!q) return;
    for (const k of keys) {
      const v = q[k];
      if (typeof v === 'string') q[k] = v === '' ? [] : v.split(',');
      else if (Array.isArray(v)) q[k] = v.flatMap((x) => (typeof x === 'string' ? x.split(',') : [x]));
    }
  };
}

/** The caller as the actor of events; with auth (src/api/auth.ts) the event is its audit record too. */
export function actorOf(req: FastifyRequest): ActorContext {
  const actor = req.user?.username ?? 'api';
  return typeof req.auditEvent === 'function' ? { actor, audit: (e) => req.auditEvent(e) } : { actor };
}

// -----------------------------------------------------------------------------------------------------------
// Schemas

/** id, MAC or host name. */
export const MachineRef = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9:._-]*$', description: 'machine id, MAC or host name' });
export const MachineParams = Type.Object({ id: MachineRef }, { additionalProperties: false });
const StateSchema = Type.Enum([...STATES]);
const Iso = Type.String({ description: 'ISO 8601 UTC time' });

const MACHINE_PROPS = {
  id: Type.String({ description: '8 characters, Crockford base32, lower case' }),
  hostname: Type.String({ description: 'RFC 1123 label, lower case' }),
  uuid: Type.Optional(Type.String({ description: 'SMBIOS system UUID, lower case' })),
  macs: Type.Array(Type.String(), { description: 'boot/provisioning MACs, aa:bb:cc:dd:ee:ff' }),
  state: Type.String({ description: 'lifecycle state (README: lifecycle)' }),
  tags: Type.Array(Type.String()),
  createdAt: Iso,
  updatedAt: Iso,
  stateChangedAt: Type.Optional(Iso),
  stateReason: Type.Optional(Type.String({ description: 'why it is in this state: a failure, a timeout, an operator\'s reason' })),
  phaseDeadline: Type.Optional(Type.String({ description: 'Commissioning, Deploying, Releasing: when the phase times out' })),
  rescueReturn: Type.Optional(Type.String({ description: 'Rescue: the state exit-rescue returns to' })),
  commissionedAt: Type.Optional(Iso),
  inventory: Type.Optional(Type.Unknown({ description: 'hardware facts the agent reported (cpu, memoryBytes, firmware, dmi, disks, nics, bmc, reportedAt)' })),
  deployment: Type.Optional(Type.Unknown({ description: 'the last deploy request (image, disk, sshKeys, requestedAt) and its progress (writtenAt, phonedHomeAt, hostKeys)' })),
  rescue: Type.Optional(Type.Unknown({ description: 'the last rescue request (sshKeys, requestedAt, requestedBy); without sshKeys a rescue boot takes the deployment\'s' })),
  actions: Type.Array(Type.String(), { description: 'operator actions legal in this state' }),
};
export const MachineSchema = Type.Object(MACHINE_PROPS);
/** A list row: only the selected fields (`fields=`), id always. */
const MachineRowSchema = Type.Object({
  id: MACHINE_PROPS.id,
  ...Object.fromEntries(Object.entries(MACHINE_PROPS).filter(([k]) => k !== 'id').map(([k, s]) => [k, Type.Optional(s)])),
});
export const FIELDS = Object.keys(MACHINE_PROPS) as (keyof typeof MACHINE_PROPS)[];

const ListQuery = Type.Object({
  state: Type.Optional(Type.Array(StateSchema, { maxItems: STATES.length, description: 'any of these states; a,b or repeated' })),
  tag: Type.Optional(Type.Array(Type.String({ pattern: TAG_PATTERN }), { maxItems: MAX_TAGS, description: 'every one of these tags' })),
  mac: Type.Optional(Type.String({ maxLength: 32, description: 'this MAC (any usual form)' })),
  hostname: Type.Optional(Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9-]+$', description: 'host name contains this' })),
  hostnamePrefix: Type.Optional(Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9-]+$', description: 'host name starts with this' })),
  sort: Type.Optional(Type.Enum([...SORT_FIELDS], { description: 'default hostname; state sorts in lifecycle order, then by host name' })),
  order: Type.Optional(Type.Enum(['asc', 'desc'])),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_LIMIT, description: `page size, default ${DEFAULT_LIMIT}` })),
  cursor: Type.Optional(Type.String({ maxLength: 1024, description: 'the previous page\'s next' })),
  fields: Type.Optional(Type.Array(Type.Enum([...FIELDS]), { maxItems: FIELDS.length, description: 'fields of each row (id always)' })),
}, { additionalProperties: false });

const ListResponse = Type.Object({
  items: Type.Array(MachineRowSchema),
  total: Type.Integer({ description: 'machines matching the filter, all pages' }),
  next: Type.Union([Type.String(), Type.Null()], { description: 'cursor of the next page; null on the last' }),
});

export const BmcEnrollmentSchema = Type.Object({
  driver: Type.Enum(['ipmi', 'redfish', 'wol', 'manual']),
  address: Type.String({ minLength: 1, maxLength: 253, description: 'host or IPv4 (ipmi, redfish); the MAC (wol); a location (manual)' }),
  port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
  username: Type.Optional(Type.String({ maxLength: 64 })),
  password: Type.Optional(Type.String({ maxLength: 256, description: 'write-only; stored sealed' })),
  cipherSuite: Type.Optional(Type.Integer({ minimum: 0, maximum: 255 })),
  kg: Type.Optional(Type.String({ maxLength: 40, pattern: '^[0-9a-fA-F]*$', description: 'write-only; stored sealed' })),
  tlsFingerprint: Type.Optional(Type.String({ maxLength: 128 })),
  systemId: Type.Optional(Type.String({ maxLength: 128 })),
  wolInterface: Type.Optional(Type.String({ maxLength: 15 })),
}, { additionalProperties: false });
export type BmcEnrollment = {
  driver: 'ipmi' | 'redfish' | 'wol' | 'manual'; address: string; port?: number; username?: string; password?: string;
  cipherSuite?: number; kg?: string; tlsFingerprint?: string; systemId?: string; wolInterface?: string;
};

const Hostname = Type.String({ pattern: HOSTNAME_INPUT_PATTERN, maxLength: 63, description: 'RFC 1123 label (stored lower case)' });
const Tags = Type.Array(Type.String({ pattern: TAG_PATTERN }), { maxItems: MAX_TAGS, description: 'each [a-z0-9_-]{1,64}; duplicates dropped' });

const CreateBody = Type.Object({
  mac: Type.Optional(Type.String({ maxLength: 32, description: 'the boot MAC; give mac, bmc, or both' })),
  hostname: Type.Optional(Hostname),
  uuid: Type.Optional(Type.String({ pattern: UUID_PATTERN })),
  tags: Type.Optional(Tags),
  bmc: Type.Optional(BmcEnrollmentSchema),
}, { additionalProperties: false });

const UpdateBody = Type.Object({ hostname: Type.Optional(Hostname), tags: Type.Optional(Tags) }, { additionalProperties: false, minProperties: 1 });
const Reason = Type.Optional(Type.String({ maxLength: MAX_REASON_LENGTH }));
const ActionBody = Type.Object({ reason: Reason }, { additionalProperties: false });
function sshKeysSchema(description: string) {
  return Type.Array(Type.String({ minLength: 1, maxLength: 8192, pattern: '^[^\\r\\n]+$' }), { maxItems: 64, description });
}
/** deploy: what to write (the agent API hands it to the machine; src/services/boot-http/agent-routes.ts). */
const DeployBody = Type.Object({
  reason: Reason,
  image: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,62}$', description: 'a registered image whose rootfs is the disk image; default the setting deploy.defaultImage' })),
  disk: Type.Optional(Type.String({ maxLength: 128, pattern: '^(auto|/dev/[A-Za-z0-9/_.:-]+|[A-Za-z0-9_.:-]+)$', description: "'auto' (default: the first non-removable disk), a device path, or a disk serial" })),
  sshKeys: Type.Optional(sshKeysSchema('authorized_keys lines for the default user')),
}, { additionalProperties: false });
/** rescue: who may log in to the rescue environment (root, SSH, public keys only; src/agent/rescue.ts). */
const RescueBody = Type.Object({
  reason: Reason,
  sshKeys: Type.Optional(sshKeysSchema('authorized_keys lines for root in the rescue environment; default the last deploy request\'s')),
}, { additionalProperties: false });
/** release: how to clean the disks. */
const ReleaseBody = Type.Object({
  reason: Reason,
  erase: Type.Optional(Type.Enum(['none', 'quick', 'full'], { description: 'quick (default): partition tables and signatures; full: every byte' })),
}, { additionalProperties: false });
const EffectSchema = Type.Object({
  kind: Type.String(), script: Type.Optional(Type.String()), device: Type.Optional(Type.String()), persistent: Type.Optional(Type.Boolean()),
  action: Type.Optional(Type.String()), ms: Type.Optional(Type.Integer()),
});
const ActionResponse = Type.Object({
  machine: MachineSchema,
  effects: Type.Array(EffectSchema, { description: 'what metalbox does to the machine next, in order' }),
  event: Type.String({ description: 'id of the machine.state event' }),
});
const PowerBody = Type.Object({ action: Type.Enum([...POWER_ACTIONS]) }, { additionalProperties: false });
const PowerResponse = Type.Object({
  result: Type.String({ description: 'done, noop (already so) or requested (manual BMC: an operator was asked)' }),
  message: Type.String(),
  before: Type.Optional(Type.String()),
  performed: Type.Optional(Type.String()),
});
const BootDeviceBody = Type.Object({
  device: Type.Enum(['pxe', 'disk']),
  persistent: Type.Optional(Type.Boolean({ description: 'for every boot; default the next boot only' })),
  efi: Type.Optional(Type.Boolean({ description: 'ask for a UEFI boot' })),
}, { additionalProperties: false });

const errors = { 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema } as const;

export function fullView(m: Machine): Machine & { actions: string[] } {
  return { ...m, actions: actionsFrom(m.state, USER_ACTIONS) };
}

/** The public fields of a list row, in schema order (JSON.stringify drops the undefined ones). */
function publicRow(m: Machine): Record<string, unknown> {
  return {
    id: m.id, hostname: m.hostname, uuid: m.uuid, macs: m.macs, state: m.state, tags: m.tags, createdAt: m.createdAt, updatedAt: m.updatedAt,
    stateChangedAt: m.stateChangedAt, stateReason: m.stateReason, phaseDeadline: m.phaseDeadline, rescueReturn: m.rescueReturn, commissionedAt: m.commissionedAt,
  };
}

/**
 * Row JSON by machine object (the registry replaces the object on every change, so an entry never goes stale).
 * Two generations of at most `cap` rows each: bounded memory (about 400 bytes a row), hot rows stay.
 */
export class RowCache {
  private current = new Map<Machine, string>();
  private previous = new Map<Machine, string>();
  constructor(private readonly cap = 10_000) {}

  json(m: Machine): string {
    let text = this.current.get(m);
    if (text !== undefined) return text;
    text = this.previous.get(m) ?? JSON.stringify(publicRow(m));
    if (this.current.size >= this.cap) {
      this.previous = this.current;
      this.current = new Map();
    }
    this.current.set(m, text);
    return text;
  }
}

function project(m: Machine, fields: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = { id: m.id };
  for (const f of fields) {
    if (f === 'actions') out.actions = actionsFrom(m.state, USER_ACTIONS);
    else if (m[f] !== undefined) out[f] = m[f];
  }
  return out;
}

// -----------------------------------------------------------------------------------------------------------
// Routes

export function machineRoutes(deps: MachinesApiDeps): FastifyPluginAsync {
  const { registry } = deps;
  const power = (): MachinePowerControl => {
    if (!deps.bmc) throw new MetalboxError('MACHINE_POWER_UNAVAILABLE', 'power control is not available: the BMC service is not running');
    return deps.bmc;
  };

  const rowCache = new RowCache();

  /** What deploy, release and rescue store on the machine with the transition (a new request replaces the last one whole). */
  const actionFields = async (action: string, body: Static<typeof DeployBody> & Static<typeof ReleaseBody> & Static<typeof RescueBody>, actor: string): Promise<Record<string, unknown> | undefined> => {
    const requestedAt = new Date().toISOString();
    if (action === 'release') return { release: { erase: body.erase ?? 'quick', requestedAt } };
    if (action === 'rescue') return { rescue: { ...(body.sshKeys !== undefined ? { sshKeys: body.sshKeys } : {}), requestedAt, requestedBy: actor } };
    if (action !== 'deploy') return undefined;
    if (body.image !== undefined) {
      const image = await deps.store.images.get(body.image);
      const files = (image as { files?: { rootfs?: unknown } } | undefined)?.files;
      if (!image) throw new MetalboxError('IMAGE_INVALID', `no image "${body.image}" is registered (metalbox images add ${body.image} ... --rootfs DISK_IMAGE)`);
      if (!files?.rootfs) throw new MetalboxError('IMAGE_INVALID', `image "${body.image}" has no disk image to deploy (its rootfs file)`);
    }
    return {
      deployment: {
        ...(body.image !== undefined ? { image: body.image } : {}), disk: body.disk ?? 'auto', sshKeys: body.sshKeys ?? [], requestedAt, requestedBy: actor,
      },
    };
  };

  return async (fastify) => {
    fastify.setValidatorCompiler(validatorCompiler);
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

    app.get('/api/v1/machines', {
      config: { access: 'viewer' },
      preValidation: commaLists(['state', 'tag', 'fields']),
      schema: { querystring: ListQuery, response: { 200: ListResponse, 400: ErrorSchema } },
    }, async (req, reply) => {
      const q = req.query;
      const mac = q.mac !== undefined ? inputField(() => checkMac(q.mac, 'querystring.mac')) : undefined;
      const page = registry.list({
        ...(q.state ? { state: q.state } : {}),
        ...(q.tag ? { tags: q.tag } : {}),
        ...(mac !== undefined ? { mac } : {}),
        ...(q.hostname !== undefined ? { hostname: q.hostname.toLowerCase() } : {}),
        ...(q.hostnamePrefix !== undefined ? { hostnamePrefix: q.hostnamePrefix.toLowerCase() } : {}),
        ...(q.sort ? { sort: q.sort } : {}),
        ...(q.order ? { order: q.order } : {}),
        ...(q.limit !== undefined ? { limit: q.limit } : {}),
        ...(q.cursor !== undefined ? { cursor: q.cursor } : {}),
      });
      const fields = q.fields && q.fields.length > 0 ? q.fields : undefined;
      // The page is assembled from each row's JSON, made once per machine version (rowJson): serializing 50
      // rows was the largest cost of a list request (80 of 180 µs), and a record does not change while the
      // same object is in the registry. ListResponse is still the contract; a test holds rows to it.
      const rows = fields ? page.items.map((m) => JSON.stringify(project(m, fields))) : page.items.map((m) => rowCache.json(m));
      const text = `{"items":[${rows.join(',')}],"total":${page.total},"next":${page.next === null ? 'null' : JSON.stringify(page.next)}}`;
      // Sent as is: fastify does not serialize a string payload whose content type is set.
      return reply.type('application/json; charset=utf-8').send(text as unknown as Static<typeof ListResponse>);
    });

    app.get('/api/v1/machines/:id', {
      config: { access: 'viewer' },
      schema: { params: MachineParams, response: { 200: MachineSchema, 400: ErrorSchema, 404: ErrorSchema } },
    }, async (req) => fullView(registry.resolve(req.params.id)));

    app.post('/api/v1/machines', {
      config: { access: 'operator' },
      schema: { body: CreateBody, response: { 201: MachineSchema, ...errors } },
    }, async (req, reply) => {
      const body = req.body;
      if (body.mac === undefined && body.bmc === undefined) {
        throw new MetalboxError('VALIDATION_FAILED', 'body.mac: give the machine\'s boot MAC, its BMC (body.bmc), or both');
      }
      if (body.mac !== undefined) inputField(() => checkMac(body.mac, 'body.mac'));
      const ctx = actorOf(req);
      let enrolled: string | undefined;
      const bmc = body.bmc;
      const control = bmc ? power() : undefined;
      if (bmc && !control?.enroll) throw new MetalboxError('MACHINE_POWER_UNAVAILABLE', 'machines cannot be created for a BMC here: the BMC service is not running');
      try {
        const m = await registry.create({
          ...(body.mac !== undefined ? { mac: body.mac } : {}),
          ...(body.hostname !== undefined ? { hostname: body.hostname } : {}),
          ...(body.uuid !== undefined ? { uuid: body.uuid } : {}),
          ...(body.tags !== undefined ? { tags: body.tags } : {}),
        }, ctx, {
          beforeWrite: bmc ? async (draft) => { await control!.enroll!(draft.id, bmc as BmcEnrollment, ctx.actor); enrolled = draft.id; } : undefined,
        });
        return reply.code(201).send(fullView(m));
      } catch (err) {
        if (enrolled !== undefined) {
          await control!.unenroll?.(enrolled, ctx.actor).catch((e: unknown) => req.log.error({ err: e, machine: enrolled }, 'could not remove the BMC of a machine that was not created'));
        }
        throw err;
      }
    });

    app.patch('/api/v1/machines/:id', {
      config: { access: 'operator' },
      schema: { params: MachineParams, body: UpdateBody, response: { 200: MachineSchema, ...errors } },
    }, async (req) => {
      const m = await registry.update(req.params.id, {
        ...(req.body.hostname !== undefined ? { hostname: req.body.hostname } : {}),
        ...(req.body.tags !== undefined ? { tags: req.body.tags } : {}),
      }, actorOf(req));
      return fullView(m);
    });

    app.delete('/api/v1/machines/:id', {
      config: { access: 'operator' },
      schema: { params: MachineParams, response: { 204: Type.Null(), ...errors } },
    }, async (req, reply) => {
      const ctx = actorOf(req);
      const m = await registry.remove(req.params.id, ctx);
      if (deps.bmc?.unenroll) {
        // The machine is gone either way; a BMC left behind is logged, and removable by the BMC CLI.
        await deps.bmc.unenroll(m.id, ctx.actor).catch((err: unknown) => req.log.warn({ err, machine: m.id }, 'machine deleted, but its BMC could not be removed'));
      }
      return reply.code(204).send(null);
    });

    for (const action of USER_ACTIONS) {
      app.post(`/api/v1/machines/:id/actions/${action}`, {
        config: { access: 'operator' },
        schema: { params: MachineParams, body: action === 'deploy' ? DeployBody : action === 'release' ? ReleaseBody : action === 'rescue' ? RescueBody : ActionBody, response: { 200: ActionResponse, ...errors } },
      }, async (req) => {
        const ctx = actorOf(req);
        const set = await actionFields(action, req.body as Static<typeof DeployBody> & Static<typeof ReleaseBody> & Static<typeof RescueBody>, ctx.actor);
        const r = await registry.act(req.params.id, action, { ...ctx, ...(req.body.reason !== undefined ? { reason: req.body.reason } : {}), ...(set ? { set } : {}) });
        return { machine: fullView(r.machine), effects: r.effects, event: r.event.id };
      });
    }

    app.get('/api/v1/machines/:id/power', {
      config: { access: 'viewer' },
      schema: { params: MachineParams, response: { 200: Type.Object({ state: Type.Enum(['on', 'off', 'unknown']) }), 400: ErrorSchema, 404: ErrorSchema } },
    }, async (req) => {
      const m = registry.resolve(req.params.id);
      const { state } = await power().powerStatus(m.id, actorOf(req).actor);
      return { state };
    });

    app.post('/api/v1/machines/:id/power', {
      config: { access: 'operator' },
      schema: { params: MachineParams, body: PowerBody, response: { 200: PowerResponse, ...errors } },
    }, async (req) => {
      const m = registry.resolve(req.params.id);
      return power().powerAction(m.id, req.body.action, actorOf(req).actor);
    });

    app.put('/api/v1/machines/:id/boot-device', {
      config: { access: 'operator' },
      schema: { params: MachineParams, body: BootDeviceBody, response: { 200: Type.Object({ result: Type.String(), message: Type.String() }), ...errors } },
    }, async (req) => {
      const m = registry.resolve(req.params.id);
      const r = await power().setBootDevice(m.id, { device: req.body.device, persistent: req.body.persistent === true, efi: req.body.efi === true }, actorOf(req).actor);
      return { result: r.result, message: r.message };
    });
  };
}

/** A core field check (MACHINE_INVALID, 400) on request input: the same refusal as a schema's, VALIDATION_FAILED. */
function inputField<T>(check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (isMetalboxError(err, 'MACHINE_INVALID')) throw new MetalboxError('VALIDATION_FAILED', err.message, { details: err.details });
    throw err;
  }
}
