// Settings: free-form JSON values under dotted keys (the store's `settings` collection), the same ones
// `metalbox settings` reads and writes.
//
//   GET    /api/v1/settings         viewer  every setting
//   GET    /api/v1/settings/:key    viewer
//   PUT    /api/v1/settings/:key    admin   {value: any JSON} -> 200
//   DELETE /api/v1/settings/:key    admin   -> 204
//
// Keys: dotted words, at most 200 characters, as the CLI checks them (src/cli/commands.ts checkKey). Two
// kinds of keys are not writable here: `system.*` (metalbox's own: the instance id, when the state dir was
// made) and keys another API owns with its own checks (dhcp.reservations: /api/v1/subnets/{cidr}/reservations).
// Settings metalbox reads have their value checked (KNOWN_SETTINGS).
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { RESERVATIONS_SETTING } from '../../core/reservations.ts';
import { MetalboxError } from '../../lib/errors.ts';
import { IMAGE_NAME } from '../../store/assets.ts';
import type { SettingValue } from '../../store/types.ts';
import { EPHEMERAL_IMAGE_SETTING } from '../../services/boot-http/routes.ts';
import { DEFAULT_DEPLOY_IMAGE_SETTING } from '../../services/boot-http/agent-routes.ts';
import { ErrorSchema } from '../schemas.ts';
import { actorOf, validatorCompiler } from './machines.ts';
import type { ResourcesApiDeps } from './resources.ts';

/** The CLI's rule (src/cli/commands.ts SETTING_KEY), plus its 200-character cap. */
export const SETTING_KEY_PATTERN = '^[a-z][a-zA-Z0-9_-]*(\\.[a-zA-Z0-9_-]+)*$';
const MAX_KEY = 200;
/** Largest value, as JSON (a setting is configuration, not data). */
const MAX_VALUE_BYTES = 64 * 1024;

/** Keys written only by metalbox itself, or through another API that checks them. */
const OWNED: readonly { test: (key: string) => boolean; why: string }[] = [
  { test: (k) => k === 'system' || k.startsWith('system.'), why: 'system.* settings are metalbox\'s own (instance id, creation time) and read-only' },
  { test: (k) => k === RESERVATIONS_SETTING, why: `${RESERVATIONS_SETTING} is written through /api/v1/subnets/{cidr}/reservations, which checks each reservation` },
];

/** Settings metalbox reads, with what their value must be (null removes nothing: use DELETE). */
const KNOWN_SETTINGS: Record<string, { check: (v: SettingValue) => boolean; what: string }> = {
  [EPHEMERAL_IMAGE_SETTING]: { check: (v) => typeof v === 'string' && IMAGE_NAME.test(v), what: 'the name of a boot image (1-63 of a-z 0-9 . _ -): what enlisting, commissioning and rescued machines boot' },
  [DEFAULT_DEPLOY_IMAGE_SETTING]: { check: (v) => typeof v === 'string' && IMAGE_NAME.test(v), what: 'the image a deploy request without {image} writes (a registered image whose rootfs is a disk image)' },
};

const KeyParams = Type.Object({ key: Type.String({ pattern: SETTING_KEY_PATTERN, maxLength: MAX_KEY, description: 'dotted words, e.g. site.name' }) }, { additionalProperties: false });
const Setting = Type.Object({ key: Type.String(), value: Type.Unknown({ description: 'any JSON value' }) });

function invalid(field: string, message: string): MetalboxError {
  return new MetalboxError('VALIDATION_FAILED', `${field}: ${message}`, { details: { field } });
}

export function settingRoutes(deps: ResourcesApiDeps): FastifyPluginAsync {
  const { store, events } = deps;
  return async (fastify) => {
    fastify.setValidatorCompiler(validatorCompiler);
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

    app.get('/api/v1/settings', {
      config: { access: 'viewer' },
      schema: { summary: 'Every setting', response: { 200: Type.Object({ items: Type.Array(Setting) }) } },
    }, async () => {
      const items: { key: string; value: SettingValue }[] = [];
      for await (const [key, value] of store.settings.entries()) items.push({ key, value });
      return { items };
    });

    app.get('/api/v1/settings/:key', {
      config: { access: 'viewer' },
      schema: { summary: 'One setting', params: KeyParams, response: { 200: Setting, 400: ErrorSchema, 404: ErrorSchema } },
    }, async (req) => {
      const value = await store.settings.get(req.params.key);
      if (value === undefined) throw new MetalboxError('NOT_FOUND', `no setting ${req.params.key}`);
      return { key: req.params.key, value };
    });

    app.put('/api/v1/settings/:key', {
      config: { access: 'admin' },
      schema: {
        summary: 'Set a setting',
        params: KeyParams,
        body: Type.Object({ value: Type.Unknown({ description: 'any JSON value (null included)' }) }, { additionalProperties: false }),
        response: { 200: Setting, 400: ErrorSchema },
      },
    }, async (req) => {
      const { key } = req.params;
      const owned = OWNED.find((o) => o.test(key));
      if (owned) throw invalid('params.key', owned.why);
      if (!('value' in (req.body as object))) throw invalid('body.value', 'is required');
      const value = req.body.value as SettingValue;
      if (Buffer.byteLength(JSON.stringify(value)) > MAX_VALUE_BYTES) throw invalid('body.value', `is larger than ${MAX_VALUE_BYTES} bytes as JSON`);
      const known = KNOWN_SETTINGS[key];
      if (known && !known.check(value)) throw invalid('body.value', `${key} must be ${known.what}`);
      const before = await store.settings.get(key);
      await store.write([
        { type: 'put', collection: 'settings', key, value },
        events.op(eventOf(req, { type: 'setting.changed', subject: key, data: { key, ...(before === undefined ? { created: true } : {}) } })),
      ]);
      return { key, value };
    });

    app.delete('/api/v1/settings/:key', {
      config: { access: 'admin' },
      schema: { summary: 'Remove a setting (back to the default)', params: KeyParams, response: { 204: Type.Null(), 400: ErrorSchema, 404: ErrorSchema } },
    }, async (req, reply) => {
      const { key } = req.params;
      const owned = OWNED.find((o) => o.test(key));
      if (owned) throw invalid('params.key', owned.why);
      if ((await store.settings.get(key)) === undefined) throw new MetalboxError('NOT_FOUND', `no setting ${key}`);
      await store.write([
        { type: 'del', collection: 'settings', key },
        events.op(eventOf(req, { type: 'setting.removed', subject: key, data: { key } })),
      ]);
      return reply.code(204).send(null);
    });
  };
}

function eventOf(req: Parameters<typeof actorOf>[0], input: { type: string; subject: string; data: Record<string, unknown> }) {
  const { actor, audit } = actorOf(req);
  return audit ? audit(input) : { ...input, actor };
}
