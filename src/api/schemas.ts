// Schemas shared by routes. Every route declares its response schema: fastify serializes with it
// (fast, and nothing undeclared leaks out) and the OpenAPI document is generated from it.
import Type from 'typebox';

export const ErrorSchema = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String({ description: 'stable error code (README: error codes)' }),
  error: Type.String(),
  message: Type.String(),
});
