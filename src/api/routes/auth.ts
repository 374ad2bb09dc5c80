// Login, logout, "who am I" and the caller's own password.
//
//   POST /api/v1/login             public   {username, password} -> session cookie + {user, csrfToken, ...}
//   POST /api/v1/logout            viewer   ends the session of the cookie
//   GET  /api/v1/session           viewer   who is calling, how, and the session's CSRF token
//   POST /api/v1/session/password  viewer   {currentPassword, newPassword}: ends the user's other sessions
//
// Failed logins are limited per client address and per user name (src/core/auth.ts FailureLimiter): after 5
// in a minute the next answer is 429 AUTH_RATE_LIMITED with Retry-After, before any password is hashed. The
// same per-user limit covers wrong current passwords, so a stolen session cannot guess the password either.
import Type from 'typebox';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { AuthCore } from '../../core/auth.ts';
import { Sessions } from '../../core/sessions.ts';
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, ROLES } from '../../core/users.ts';
import { MetalboxError, isMetalboxError } from '../../lib/errors.ts';
import { clearSessionCookie, requireUser, sessionCookieOf, setSessionCookie } from '../auth.ts';

const UserBrief = Type.Object({
  id: Type.String(),
  username: Type.String(),
  role: Type.Enum(ROLES),
});

const LoginBody = Type.Object({
  // Not the username pattern: a malformed name is just a failed login (same answer, same cost).
  username: Type.String({ minLength: 1, maxLength: 100 }),
  password: Type.String({ minLength: 1, maxLength: PASSWORD_MAX_LENGTH }),
}, { additionalProperties: false });

const SessionAnswer = Type.Object({
  user: UserBrief,
  via: Type.Enum(['session', 'token']),
  csrfToken: Type.Optional(Type.String({ description: 'send it in X-CSRF-Token with every POST/PUT/PATCH/DELETE made with the session cookie' })),
  expiresAt: Type.Optional(Type.String({ description: 'the session ends then at the latest' })),
  idleExpiresAt: Type.Optional(Type.String({ description: 'the session ends then unless a request comes first' })),
});

const PasswordBody = Type.Object({
  currentPassword: Type.String({ minLength: 1, maxLength: PASSWORD_MAX_LENGTH }),
  newPassword: Type.String({ minLength: PASSWORD_MIN_LENGTH, maxLength: PASSWORD_MAX_LENGTH }),
}, { additionalProperties: false });

/** Answers that carry a secret (a CSRF token, an API token) must not be kept by caches (RFC 9111 §5.2.2.5). */
export function noStore(reply: FastifyReply): void {
  void reply.header('cache-control', 'no-store');
}

export function authRoutes(core: AuthCore): FastifyPluginAsync {
  return async (fastify) => {
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

    app.post('/api/v1/login', {
      config: { access: 'public' },
      schema: { body: LoginBody, response: { 200: SessionAnswer } },
    }, async (req, reply) => {
      const { username, password } = req.body;
      const address = req.ip;
      const userKey = username.toLowerCase();
      const wait = Math.max(core.failuresByAddress.retryAfter(address), core.failuresByUser.retryAfter(userKey));
      if (wait > 0) throw rateLimited(wait);
      const user = await core.users.authenticate(username, password);
      if (!user) {
        core.failuresByAddress.fail(address);
        core.failuresByUser.fail(userKey);
        // A name that is no user may be a password typed in the wrong field: only known names reach the log.
        const known = await core.users.find(userKey);
        req.log.info({ address, ...(known ? { username: known.username } : { unknownUser: true }) }, 'login failed');
        throw new MetalboxError('AUTH_INVALID', 'wrong user name or password');
      }
      core.failuresByUser.clear(userKey);
      req.user = { id: user.id, username: user.username, role: user.role, via: 'session', tokenId: '' };
      const ua = req.headers['user-agent'];
      const { cookie, identity } = await core.sessions.create(user, { address, userAgent: typeof ua === 'string' ? ua : undefined }, (e) => req.auditEvent(e), sessionCookieOf(req));
      req.user.tokenId = identity.record.sessionId;
      setSessionCookie(reply, cookie, core.sessions.maxMs / 1000);
      noStore(reply);
      req.log.info({ username: user.username, address, session: identity.record.sessionId }, 'login');
      return {
        user: { id: user.id, username: user.username, role: user.role }, via: 'session' as const,
        csrfToken: identity.csrfToken, expiresAt: identity.record.expiresAt, idleExpiresAt: identity.idleExpiresAt,
      };
    });

    app.post('/api/v1/logout', {
      // With a bearer token there is no session to end: the generic event records the call.
      config: { access: 'viewer', audit: 'auth.logout' },
      schema: {},
    }, async (req, reply) => {
      const user = requireUser(req);
      const cookie = sessionCookieOf(req);
      if (user.via === 'session' && cookie !== undefined) {
        await core.sessions.end(cookie, (e) => req.auditEvent(e), user.username);
        clearSessionCookie(reply);
      }
      return reply.code(204).send();
    });

    app.get('/api/v1/session', {
      config: { access: 'viewer' },
      schema: { response: { 200: SessionAnswer } },
    }, async (req, reply) => {
      const user = requireUser(req);
      const brief = { id: user.id, username: user.username, role: user.role };
      if (user.via === 'token') return { user: brief, via: 'token' as const };
      const cookie = sessionCookieOf(req);
      const session = cookie === undefined ? undefined : await core.sessions.verify(cookie);
      if (!session) throw new MetalboxError('AUTH_INVALID', 'the session has ended; log in again');
      noStore(reply);
      return { user: brief, via: 'session' as const, csrfToken: session.csrfToken, expiresAt: session.record.expiresAt, idleExpiresAt: session.idleExpiresAt };
    });

    app.post('/api/v1/session/password', {
      config: { access: 'viewer' },
      schema: { body: PasswordBody },
    }, async (req, reply) => {
      const user = requireUser(req);
      const key = user.username;
      const wait = core.failuresByUser.retryAfter(key);
      if (wait > 0) throw rateLimited(wait);
      const cookie = user.via === 'session' ? sessionCookieOf(req) : undefined;
      try {
        await core.users.changePassword(user.id, req.body.currentPassword, req.body.newPassword, (e) => req.auditEvent(e), cookie === undefined ? undefined : Sessions.keyOf(cookie));
      } catch (err) {
        if (isMetalboxError(err, 'USER_PASSWORD_WRONG')) core.failuresByUser.fail(key);
        throw err;
      }
      return reply.code(204).send();
    });
  };
}

function rateLimited(seconds: number): MetalboxError {
  return new MetalboxError('AUTH_RATE_LIMITED', `too many failed attempts; try again in ${seconds} s`, { details: { retryAfterSeconds: seconds } });
}
