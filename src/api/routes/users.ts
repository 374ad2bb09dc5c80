// User management (admin only). A user is named in the URL by id or by user name.
//
//   GET    /api/v1/users             every user
//   POST   /api/v1/users             {username, role, password} -> 201
//   GET    /api/v1/users/:user
//   PATCH  /api/v1/users/:user       {role?, password?}: a new role, or a password reset (ends their sessions)
//   DELETE /api/v1/users/:user       with their API tokens and sessions; never the last admin
//
// Answers never carry a password hash: the response schemas list what may leave.
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { AuthCore } from '../../core/auth.ts';
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, ROLES, USERNAME_PATTERN } from '../../core/users.ts';
import { MetalboxError } from '../../lib/errors.ts';

export const UserSchema = Type.Object({
  id: Type.String(),
  username: Type.String(),
  role: Type.Enum(ROLES),
  createdAt: Type.String(),
  updatedAt: Type.String(),
  passwordChangedAt: Type.String(),
});

const Password = Type.String({ minLength: PASSWORD_MIN_LENGTH, maxLength: PASSWORD_MAX_LENGTH });

const CreateBody = Type.Object({
  username: Type.String({ pattern: USERNAME_PATTERN, description: 'a lower-case letter, then up to 31 lower-case letters, digits, ".", "_" or "-"' }),
  role: Type.Enum(ROLES),
  password: Password,
}, { additionalProperties: false });

const PatchBody = Type.Object({
  role: Type.Optional(Type.Enum(ROLES)),
  password: Type.Optional(Password),
}, { additionalProperties: false, minProperties: 1 });

const UserParams = Type.Object({
  user: Type.String({ pattern: '^[A-Za-z0-9._-]{1,100}$', description: 'user id or user name' }),
});

export function userRoutes(core: AuthCore): FastifyPluginAsync {
  return async (fastify) => {
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
    const config = { access: 'admin' as const };

    app.get('/api/v1/users', {
      config,
      schema: { response: { 200: Type.Object({ users: Type.Array(UserSchema) }) } },
    }, async () => ({ users: await core.users.list() }));

    app.post('/api/v1/users', {
      config,
      schema: { body: CreateBody, response: { 201: UserSchema } },
    }, async (req, reply) => {
      const user = await core.users.create(req.body, (e) => req.auditEvent(e));
      return reply.code(201).send(user);
    });

    app.get('/api/v1/users/:user', {
      config,
      schema: { params: UserParams, response: { 200: UserSchema } },
    }, async (req) => (await core.users.get(req.params.user)) ?? notFound(req.params.user));

    app.patch('/api/v1/users/:user', {
      config,
      schema: { params: UserParams, body: PatchBody, response: { 200: UserSchema } },
    }, async (req) => core.users.update(req.params.user, req.body, (e) => req.auditEvent(e)));

    app.delete('/api/v1/users/:user', {
      config,
      schema: { params: UserParams },
    }, async (req, reply) => {
      await core.users.delete(req.params.user, (e) => req.auditEvent(e));
      return reply.code(204).send();
    });
  };
}

function notFound(ref: string): never {
  throw new MetalboxError('NOT_FOUND', `no user ${JSON.stringify(ref)}`);
}
