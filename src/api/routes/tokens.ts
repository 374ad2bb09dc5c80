// API tokens (any logged-in user, for themselves; an admin sees and revokes everyone's).
//
//   GET    /api/v1/tokens        the caller's tokens (an admin: all), never the secret
//   POST   /api/v1/tokens        {name, role?, expiresInDays?} -> 201 {token, ...}: the ONLY time the secret is shown
//   DELETE /api/v1/tokens/:id    revoke
//
// Tokens are made from a login session only: a leaked token must not be able to mint others that would
// outlive its own revocation.
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { AuthCore } from '../../core/auth.ts';
import { TOKEN_ID_PATTERN, TOKEN_NAME_PATTERN } from '../../core/api-tokens.ts';
import { ROLES, type StoredUser } from '../../core/users.ts';
import { MetalboxError } from '../../lib/errors.ts';
import { requireUser } from '../auth.ts';
import { noStore } from './auth.ts';

const TokenFields = {
  id: Type.String({ description: 'public id, tok_...' }),
  name: Type.String(),
  userId: Type.String(),
  username: Type.String(),
  role: Type.Enum(ROLES),
  createdAt: Type.String(),
  expiresAt: Type.String(),
  lastUsedAt: Type.Union([Type.String(), Type.Null()], { description: 'to the minute' }),
  expired: Type.Boolean(),
};
export const TokenSchema = Type.Object(TokenFields);
const CreatedSchema = Type.Object({ token: Type.String({ description: 'the secret: shown this once, stored only as its sha-256' }), ...TokenFields });

export function tokenRoutes(core: AuthCore): FastifyPluginAsync {
  return async (fastify) => {
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
    const CreateBody = Type.Object({
      name: Type.String({ pattern: TOKEN_NAME_PATTERN, description: 'what the token is for (1-100 characters)' }),
      role: Type.Optional(Type.Enum(ROLES, { description: 'default: the owner\'s role; never more' })),
      expiresInDays: Type.Optional(Type.Integer({ minimum: 1, maximum: core.tokens.maxDays, description: `default ${core.tokens.defaultDays}` })),
    }, { additionalProperties: false });

    app.get('/api/v1/tokens', {
      config: { access: 'viewer' },
      schema: { response: { 200: Type.Object({ tokens: Type.Array(TokenSchema) }) } },
    }, async (req) => {
      const user = requireUser(req);
      return { tokens: await core.tokens.list(user.role === 'admin' ? undefined : user.id) };
    });

    app.post('/api/v1/tokens', {
      config: { access: 'viewer' },
      schema: { body: CreateBody, response: { 201: CreatedSchema } },
    }, async (req, reply) => {
      const user = requireUser(req);
      if (user.via !== 'session') throw new MetalboxError('AUTH_FORBIDDEN', 'API tokens are made from a login session, not with another token');
      const owner = (await core.users.find(user.id)) as StoredUser | undefined;
      if (!owner) throw new MetalboxError('AUTH_INVALID', 'the user no longer exists');
      const { token, view } = await core.tokens.create(owner, req.body, (e) => req.auditEvent(e));
      noStore(reply);
      return reply.code(201).send({ token, ...view });
    });

    app.delete('/api/v1/tokens/:id', {
      config: { access: 'viewer' },
      schema: { params: Type.Object({ id: Type.String({ pattern: TOKEN_ID_PATTERN }) }) },
    }, async (req, reply) => {
      const user = requireUser(req);
      await core.tokens.revoke(req.params.id, { userId: user.id, role: user.role }, (e) => req.auditEvent(e));
      return reply.code(204).send();
    });
  };
}
