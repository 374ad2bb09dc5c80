// One place maps error codes to HTTP status and shapes the body {statusCode, code, error, message}.
// 5xx are logged at error with the cause; 4xx at info (they are the client's problem, not ours).
import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ERROR_CODES, MetalboxError, type ErrorCode } from '../lib/errors.ts';

export interface ErrorBody { statusCode: number; code: ErrorCode | 'REQUEST_INVALID'; error: string; message: string }

export function errorBody(err: unknown): ErrorBody {
  if (err instanceof MetalboxError) return body(ERROR_CODES[err.code].status, err.code, err.message);
  const fe = err as Partial<FastifyError>;
  if (fe.validation) return body(400, 'VALIDATION_FAILED', fe.message ?? 'invalid request');
  // Fastify's own client errors (bad JSON, body too large, wrong content type) keep their status.
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return body(fe.statusCode, 'REQUEST_INVALID', fe.message ?? 'invalid request');
  }
  return body(500, 'INTERNAL', 'internal error; see the metalbox log');
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
