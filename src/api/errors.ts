// One place maps error codes to HTTP status and shapes the body {statusCode, code, error, message}.
// 5xx are logged at error with the cause; 4xx at info (they are the client's problem, not ours).
import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ERROR_CODES, MetalboxError, type ErrorCode } from '../lib/errors.ts';

export interface ErrorBody { statusCode: number; code: ErrorCode | 'REQUEST_INVALID' | 'RATE_LIMITED'; error: string; message: string }

/**
 * 429 RATE_LIMITED: a client address over api.rateLimit or api.bootRateLimit (src/api/rate-limit.ts). Made here
 * rather than thrown: the limiter answers before any route runs, and a flood must not cost an exception each.
 * An HTTP-only code like REQUEST_INVALID (listed in the README's table beside it).
 */
export function rateLimitedBody(message: string): ErrorBody {
  return body(429, 'RATE_LIMITED', message);
}

export function errorBody(err: unknown): ErrorBody {
  if (err instanceof MetalboxError) return body(ERROR_CODES[err.code].status, err.code, err.message);
  const fe = err as Partial<FastifyError>;
  if (fe.validation) return body(400, 'VALIDATION_FAILED', validationMessage(fe.validationContext, fe.validation) ?? fe.message ?? 'invalid request');
  // Fastify's own client errors (bad JSON, body too large, wrong content type) keep their status.
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return body(fe.statusCode, 'REQUEST_INVALID', fe.message ?? 'invalid request');
  }
  return body(500, 'INTERNAL', 'internal error; see the metalbox log');
}

interface SchemaError { instancePath?: string; keyword?: string; message?: string; params?: Record<string, unknown> }

/**
 * "<part>.<field>: <problem>" from the first useful schema error (ajv's or TypeBox's, same shape), e.g.
 * `body.tags[1]: must match pattern ...`, `body.hostnme: is not a known field`, `querystring.state[0]: must be one of
 * New, Ready`. Never includes the value (it may be a password).
 */
export function validationMessage(context: string | undefined, errors: readonly SchemaError[]): string | undefined {
  // Wrappers ("must match a schema in anyOf", TypeBox's "schema is false" beside additionalProperties) say less than what they wrap.
  const useful = errors.filter((e) => e.keyword !== 'anyOf' && e.keyword !== 'oneOf' && e.keyword !== 'boolean');
  const e = useful[0] ?? errors[0];
  if (!e) return undefined;
  const p = e.params ?? {};
  let path = (e.instancePath ?? '').split('/').slice(1).map((seg) => seg.replace(/~1/g, '/').replace(/~0/g, '~'));
  let problem = e.message ?? 'is invalid';
  const first = (v: unknown): string | undefined => (Array.isArray(v) ? (v[0] as string | undefined) : typeof v === 'string' ? v : undefined);
  if (e.keyword === 'required') {
    const name = first(p.missingProperty) ?? first(p.requiredProperties);
    if (name !== undefined) { path = [...path, name]; problem = 'is required'; }
  } else if (e.keyword === 'additionalProperties') {
    const name = first(p.additionalProperty) ?? first(p.additionalProperties);
    if (name !== undefined) { path = [...path, name]; problem = 'is not a known field'; }
  } else if (e.keyword === 'enum' && Array.isArray(p.allowedValues)) {
    problem = `must be one of ${p.allowedValues.map(String).join(', ')}`;
  }
  const field = path.reduce((out, seg) => (/^\d+$/.test(seg) ? `${out}[${seg}]` : `${out}.${seg}`), context ?? 'request');
  return `${field}: ${problem}`;
}

function body(statusCode: number, code: ErrorBody['code'], message: string): ErrorBody {
  return { statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message };
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: unknown, req: FastifyRequest, reply: FastifyReply) => {
    const out = errorBody(err);
    if (out.statusCode >= 500) req.log.error({ err }, 'request failed');
    else req.log.info({ code: out.code, msg: out.message }, 'request refused');
    void reply.code(out.statusCode).send(out);
  });
  app.setNotFoundHandler((req: FastifyRequest, reply: FastifyReply) => {
    void reply.code(404).send(body(404, 'NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`));
  });
}
