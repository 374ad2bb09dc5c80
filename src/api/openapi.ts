// The OpenAPI 3.0 document of the app, generated from the routes as they are registered (an onRoute hook
// records each route's method, URL, JSON Schema and access level), served at GET /api/openapi.json, and the
// browsable reference at GET /api/docs (src/api/docs.ts). Both need a logged-in user (viewer).
//
// Why not @fastify/swagger: it is one more dependency in the single binary for what is ~250 lines here, and
// its OpenAPI 3.0 output would still need the conversion below for TypeBox 1.x schemas.
//
// OpenAPI 3.0's Schema Object is a subset of JSON Schema with its own `nullable` (OpenAPI 3.0.3 §4.7.24);
// the route schemas are JSON Schema 2020-12 as TypeBox writes it, so `toOpenApi30` converts: `const` ->
// one-value `enum`, `{type: 'null'}` branches -> `nullable: true`, `patternProperties` -> `additionalProperties`,
// numeric `exclusiveMinimum` -> `minimum` + `exclusiveMinimum: true`, and drops keywords 3.0 does not have.
import { STATUS_CODES } from 'node:http';
import type { FastifyInstance, FastifyPluginAsync, RouteOptions } from 'fastify';
import type { Access } from './auth.ts';
import { SESSION_COOKIE } from './auth.ts';
import { ErrorSchema } from './schemas.ts';
import { docsRoute } from './docs.ts';

declare module 'fastify' {
  interface FastifySchema {
    /** One line for the API reference. */
    summary?: string;
    description?: string;
    /** Reference sections; default: the first path segment after /api/v1/. */
    tags?: readonly string[];
    /** Content types of answers that have no response schema (HTML, text). */
    produces?: readonly string[];
    /** Left out of the OpenAPI document. */
    hide?: boolean;
  }
}

/** A registered route as the document needs it. */
export interface DocumentedRoute {
  method: string;
  url: string;
  access: Access;
  schema: Record<string, unknown>;
}

export interface OpenApiInfo { title: string; version: string; description?: string }

type Json = Record<string, unknown>;

/** Keywords of the OpenAPI 3.0 Schema Object (OpenAPI 3.0.3 §4.7.24); `x-` extensions besides. */
export const OAS30_SCHEMA_KEYWORDS = new Set([
  'title', 'multipleOf', 'maximum', 'exclusiveMaximum', 'minimum', 'exclusiveMinimum', 'maxLength', 'minLength', 'pattern',
  'maxItems', 'minItems', 'uniqueItems', 'maxProperties', 'minProperties', 'required', 'enum', 'type', 'allOf', 'oneOf',
  'anyOf', 'not', 'items', 'properties', 'additionalProperties', 'description', 'format', 'default', 'nullable',
  'discriminator', 'readOnly', 'writeOnly', 'xml', 'externalDocs', 'example', 'deprecated',
]);
const OAS30_TYPES = new Set(['string', 'number', 'integer', 'boolean', 'array', 'object']);

const TAG_DESCRIPTIONS: Record<string, string> = {
  auth: 'Log in and out, the session, the caller\'s own password',
  users: 'Users and their roles (admin)',
  tokens: 'API tokens for scripts',
  machines: 'Machines: list, create, lifecycle actions, power, boot device, events',
  events: 'Live stream of machine changes (Server-Sent Events)',
  subnets: 'Provisioning subnets, DHCP pool usage, reservations',
  leases: 'DHCP leases',
  dns: 'DNS records added by hand',
  bmcs: 'BMCs: definitions, power, boot device, probes',
  images: 'Boot images (kernel, initrd, root filesystem)',
  jobs: 'Long operations (image downloads)',
  settings: 'Settings',
  status: 'Service status',
  system: 'Version, health, readiness, metrics',
  reference: 'This document and its browsable form',
};

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function jsonType(values: readonly unknown[]): string | undefined {
  if (values.length === 0) return undefined;
  if (values.every((v) => typeof v === 'string')) return 'string';
  if (values.every((v) => typeof v === 'boolean')) return 'boolean';
  if (values.every((v) => typeof v === 'number')) return values.every((v) => Number.isInteger(v)) ? 'integer' : 'number';
  return undefined;
}

const isNullSchema = (s: Json) => s.nullable === true && Array.isArray(s.enum) && s.enum.length === 1 && s.enum[0] === null && s.type === undefined;

/** A JSON Schema (as TypeBox writes it) as an OpenAPI 3.0 Schema Object. Pure; never throws on odd input. */
export function toOpenApi30(schema: unknown, depth = 0): Json {
  if (schema === true || schema === undefined || !isObject(schema) || depth > 64) return schema === false ? { not: {} } : {};
  const src = schema;
  if (src.type === 'null') return { nullable: true, enum: [null], ...(typeof src.description === 'string' ? { description: src.description } : {}) };
  const out: Json = {};
  for (const [k, v] of Object.entries(src)) {
    switch (k) {
      case 'properties':
        if (isObject(v)) out.properties = Object.fromEntries(Object.entries(v).map(([p, s]) => [p, toOpenApi30(s, depth + 1)]));
        break;
      case 'items':
        out.items = Array.isArray(v) ? { anyOf: v.map((s) => toOpenApi30(s, depth + 1)) } : toOpenApi30(v, depth + 1);
        break;
      case 'additionalProperties':
        out.additionalProperties = typeof v === 'boolean' ? v : toOpenApi30(v, depth + 1);
        break;
      case 'patternProperties': {
        // Type.Record: {"^.*$": S} is "any key, value S", which 3.0 says with additionalProperties.
        const values = isObject(v) ? Object.values(v) : [];
        if (values.length === 1 && src.additionalProperties === undefined) out.additionalProperties = toOpenApi30(values[0], depth + 1);
        break;
      }
      case 'anyOf': case 'oneOf': case 'allOf':
        if (Array.isArray(v)) out[k] = v.map((s) => toOpenApi30(s, depth + 1));
        break;
      case 'not':
        out.not = toOpenApi30(v, depth + 1);
        break;
      case 'const':
        out.enum = [v];
        break;
      case 'type':
        if (Array.isArray(v)) {
          const types = v.filter((t) => t !== 'null');
          if (types.length === 1) out.type = types[0];
          if (v.includes('null')) out.nullable = true;
        } else {
          out.type = v;
        }
        break;
      case 'exclusiveMinimum': case 'exclusiveMaximum':
        if (typeof v === 'number') { out[k === 'exclusiveMinimum' ? 'minimum' : 'maximum'] = v; out[k] = true; } else if (typeof v === 'boolean') out[k] = v;
        break;
      case 'examples':
        if (Array.isArray(v) && v.length > 0) out.example = v[0];
        break;
      case 'required':
        if (Array.isArray(v) && v.length > 0) out.required = v;
        break;
      default:
        if (OAS30_SCHEMA_KEYWORDS.has(k) || k.startsWith('x-')) out[k] = v;
    }
  }
  if (Array.isArray(out.enum) && out.type === undefined) {
    const t = jsonType(out.enum);
    if (t) out.type = t;
  }
  for (const k of ['anyOf', 'oneOf'] as const) {
    const branches = out[k] as Json[] | undefined;
    if (!branches) continue;
    const nullable = branches.some(isNullSchema);
    const rest = branches.filter((b) => !isNullSchema(b));
    // A union of literals of one type (TypeBox Union([Literal('a'), Literal('b')])) is an enum.
    const literal = rest.length > 0 && rest.every((b) => Array.isArray(b.enum) && b.enum.length === 1 && Object.keys(b).every((x) => x === 'enum' || x === 'type'))
      ? jsonType(rest.map((b) => (b.enum as unknown[])[0])) : undefined;
    if (literal) {
      delete out[k];
      Object.assign(out, { type: literal, enum: rest.map((b) => (b.enum as unknown[])[0]) }, nullable ? { nullable: true } : {});
    } else if (nullable && rest.length === 1) {
      delete out[k];
      Object.assign(out, { ...rest[0], ...out, nullable: true });
    } else if (nullable) {
      out[k] = rest.map((b) => ({ ...b, nullable: true }));
    }
  }
  if (out.type === 'array' && out.items === undefined) out.items = {};
  if (typeof out.type === 'string' && !OAS30_TYPES.has(out.type)) delete out.type;
  return out;
}

/** `/api/v1/bmcs/:id/power` -> `/api/v1/bmcs/{id}/power`; a trailing `*` -> `{wildcard}`; regex constraints dropped. */
export function openApiPath(url: string): { path: string; params: string[] } {
  const params: string[] = [];
  const path = url.split('/').map((seg) => {
    if (seg === '*') { params.push('wildcard'); return '{wildcard}'; }
    return seg.replace(/:([A-Za-z0-9_]+)(\([^)]*\))?/g, (_m, name: string) => { params.push(name); return `{${name}}`; });
  }).join('/');
  return { path, params };
}

function tagOf(route: DocumentedRoute): string {
  const given = route.schema.tags;
  if (Array.isArray(given) && typeof given[0] === 'string') return given[0];
  const m = /^\/api\/v1\/([^/]+)/.exec(route.url);
  if (!m) return route.url.startsWith('/api/') ? 'reference' : 'system';
  const seg = m[1]!;
  if (['login', 'logout', 'session'].includes(seg)) return 'auth';
  if (seg === 'version') return 'system';
  return seg;
}

function operationId(method: string, path: string): string {
  const words = path.replace(/[{}]/g, '').split(/[^A-Za-z0-9]+/).filter(Boolean);
  return method.toLowerCase() + words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join('');
}

function parametersOf(route: DocumentedRoute, pathParams: readonly string[]): Json[] {
  const out: Json[] = [];
  const from = (schema: unknown, where: 'path' | 'query' | 'header') => {
    if (!isObject(schema) || !isObject(schema.properties)) return;
    const required = new Set(Array.isArray(schema.required) ? schema.required as string[] : []);
    for (const [name, s] of Object.entries(schema.properties)) {
      const converted = toOpenApi30(s);
      const { description, ...rest } = converted;
      out.push({
        name, in: where, required: where === 'path' || required.has(name),
        ...(typeof description === 'string' ? { description } : {}),
        schema: rest,
        // Lists take a,b or a repeated key (src/api/routes/machines.ts commaLists): form style says the latter.
        ...(where === 'query' && rest.type === 'array' ? { style: 'form', explode: true } : {}),
      });
    }
  };
  from(route.schema.params, 'path');
  for (const p of pathParams) if (!out.some((o) => o.in === 'path' && o.name === p)) out.push({ name: p, in: 'path', required: true, schema: { type: 'string' } });
  from(route.schema.querystring, 'query');
  from(route.schema.headers, 'header');
  return out;
}

function responsesOf(route: DocumentedRoute, hasParams: boolean, hasInput: boolean): Json {
  const out: Json = {};
  const declared = isObject(route.schema.response) ? route.schema.response : {};
  for (const [code, s] of Object.entries(declared)) {
    const status = Number(code);
    const description = STATUS_CODES[status] ?? code;
    if (status === 204 || (isObject(s) && s.type === 'null')) { out[code] = { description }; continue; }
    out[code] = status >= 400 && isErrorSchema(s)
      ? { $ref: `#/components/responses/${errorResponseName(status)}` }
      : { description, content: { 'application/json': { schema: toOpenApi30(s) } } };
  }
  if (!Object.keys(out).some((c) => c.startsWith('2'))) {
    const produces = Array.isArray(route.schema.produces) ? route.schema.produces as string[] : [];
    out['200'] = { description: 'OK', ...(produces.length > 0 ? { content: Object.fromEntries(produces.map((t) => [t, {}])) } : {}) };
  }
  const add = (status: number) => { if (out[String(status)] === undefined) out[String(status)] = { $ref: `#/components/responses/${errorResponseName(status)}` }; };
  if (hasInput) add(400);
  if (route.access !== 'public') { add(401); add(403); }
  if (hasParams) add(404);
  out['5XX'] = { $ref: '#/components/responses/ServerError' };
  return out;
}

const ERROR_JSON = JSON.stringify(ErrorSchema);
/** Routes declare ErrorSchema for their 4xx answers: those become references to the shared responses. */
function isErrorSchema(s: unknown): boolean {
  return JSON.stringify(s) === ERROR_JSON;
}

const ERROR_RESPONSES: Record<number, [string, string]> = {
  400: ['BadRequest', 'The request does not match the schema (VALIDATION_FAILED, the message names the field) or breaks a rule of the resource'],
  401: ['Unauthorized', 'No credentials (AUTH_REQUIRED), or wrong, expired or revoked ones (AUTH_INVALID)'],
  403: ['Forbidden', 'The caller\'s role is below the route\'s x-metalbox-access (AUTH_FORBIDDEN), or a cookie request lacks X-CSRF-Token (CSRF_INVALID)'],
  404: ['NotFound', 'No such record (NOT_FOUND, MACHINE_NOT_FOUND, BMC_NOT_FOUND, ...)'],
  409: ['Conflict', 'The change clashes with what exists (STORE_CONFLICT, IMAGE_EXISTS, USER_EXISTS, LIFECYCLE_INVALID_TRANSITION, ...)'],
  413: ['PayloadTooLarge', 'Too large'],
  422: ['Unprocessable', 'Understood but not possible here (BMC_UNSUPPORTED, ASSET_CHECKSUM_MISMATCH)'],
  429: ['TooManyRequests', 'Rate limited or busy (RATE_LIMITED and AUTH_RATE_LIMITED with Retry-After, BMC_BUSY)'],
  502: ['BadGateway', 'A BMC or a download source failed (BMC_*, ASSET_FETCH_FAILED)'],
  503: ['Unavailable', 'A service this needs is not running'],
  504: ['GatewayTimeout', 'A BMC did not answer in time (BMC_TIMEOUT)'],
};

function errorResponseName(status: number): string {
  return ERROR_RESPONSES[status]?.[0] ?? `Error${status}`;
}

/** The OpenAPI 3.0 document for `routes` (HEAD routes and hidden ones left out). */
export function buildOpenApi(routes: readonly DocumentedRoute[], info: OpenApiInfo): Json {
  const paths: Record<string, Json> = {};
  const tags = new Set<string>();
  const usedErrors = new Set<number>([400, 401, 403, 404]);
  for (const route of routes) {
    if (route.method === 'HEAD' || route.schema.hide === true) continue;
    const { path, params } = openApiPath(route.url);
    const tag = tagOf(route);
    tags.add(tag);
    const parameters = parametersOf(route, params);
    const hasBody = route.schema.body !== undefined;
    const op: Json = {
      operationId: operationId(route.method, path),
      tags: [tag],
      ...(typeof route.schema.summary === 'string' ? { summary: route.schema.summary } : {}),
      ...(typeof route.schema.description === 'string' ? { description: route.schema.description } : {}),
      'x-metalbox-access': route.access,
      ...(route.access === 'public' ? { security: [] } : {}),
      ...(parameters.length > 0 ? { parameters } : {}),
    };
    if (hasBody) {
      const body = toOpenApi30(route.schema.body);
      op.requestBody = { required: Array.isArray(body.required) && body.required.length > 0, content: { 'application/json': { schema: body } } };
    }
    op.responses = responsesOf(route, params.length > 0, hasBody || parameters.some((p) => p.in !== 'path') || params.length > 0);
    for (const code of Object.keys(op.responses as Json)) if (/^\d+$/.test(code) && Number(code) >= 400) usedErrors.add(Number(code));
    (paths[path] ??= {})[route.method.toLowerCase()] = op;
  }
  const errorRef = { $ref: '#/components/schemas/Error' };
  const responses: Json = { ServerError: { description: 'An unexpected failure (INTERNAL; the log has the details) or a failing part (STORE_WRITE_FAILED, ...)', content: { 'application/json': { schema: errorRef } } } };
  for (const status of [...usedErrors].sort()) {
    const [name, description] = ERROR_RESPONSES[status] ?? [`Error${status}`, STATUS_CODES[status] ?? 'Error'];
    responses[name] = { description, content: { 'application/json': { schema: errorRef } } };
  }
  return {
    openapi: '3.0.3',
    info: { title: info.title, version: info.version, ...(info.description ? { description: info.description } : {}) },
    servers: [{ url: '/', description: 'this metalbox' }],
    tags: [...tags].sort().map((name) => ({ name, ...(TAG_DESCRIPTIONS[name] ? { description: TAG_DESCRIPTIONS[name] } : {}) })),
    paths: Object.fromEntries(Object.entries(paths).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    components: {
      schemas: { Error: toOpenApi30(ErrorSchema) },
      responses,
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'An API token (POST /api/v1/tokens): Authorization: Bearer mbx_...' },
        session: {
          type: 'apiKey', in: 'cookie', name: SESSION_COOKIE,
          description: 'The session cookie set by POST /api/v1/login. State-changing requests made with it also need the session\'s CSRF token in the X-CSRF-Token header.',
        },
      },
    },
    security: [{ bearer: [] }, { session: [] }],
  };
}

/**
 * Records every route registered after it (register it right after the auth plugin, whose onRoute hook
 * settles each route's access level first) and serves the document and the reference page.
 */
export function openApiPlugin(info: OpenApiInfo): FastifyPluginAsync {
  const plugin: FastifyPluginAsync = async (app: FastifyInstance) => {
    const routes: DocumentedRoute[] = [];
    app.addHook('onRoute', (route: RouteOptions) => {
      const methods = (Array.isArray(route.method) ? route.method : [route.method]).map(String);
      const access = (route.config?.access ?? 'admin') as Access;
      for (const method of methods) routes.push({ method, url: route.url, access, schema: (route.schema ?? {}) as Record<string, unknown> });
    });
    let document: string | undefined;

    app.get('/api/openapi.json', {
      config: { access: 'viewer' },
      schema: { summary: 'This API\'s OpenAPI 3.0 document', tags: ['reference'], produces: ['application/json'] },
    }, async (_req, reply) => {
      // Routes are fixed once the app is ready: build once.
      document ??= JSON.stringify(buildOpenApi(routes, info));
      return reply.type('application/json; charset=utf-8').header('cache-control', 'no-cache').send(document);
    });
    docsRoute(app);
  };
  (plugin as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;
  return plugin;
}
