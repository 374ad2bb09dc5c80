// Credentials through the API: API tokens (shown once, revoked, expired, capped at the owner's role),
// sessions (idle and absolute ends, per-user cap, password changes), the login rate limit, the last-admin
// rule, and a bad-input case answering 400 with the field named for every write route of auth, users, tokens.
import t from 'tap';
import { authFixture } from '../helpers/auth-fixture.ts';
import { routeTable } from '../../src/api/auth.ts';

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

t.test('API tokens: shown once, stored hashed, listed without the secret, revoked and expired ones refused', async (t) => {
  const f = await authFixture(t);
  await f.addUser('root', 'admin');
  await f.addUser('olga', 'operator');
  const s = await f.login('olga');
  const res = await f.call('POST', '/api/v1/tokens', s, { name: 'ci runner' });
  t.equal(res.statusCode, 201);
  t.equal(res.headers['cache-control'], 'no-store');
  const made = res.json();
  t.match(made, { token: /^mbx_[A-Za-z0-9_-]{43}$/, id: /^tok_[A-Za-z0-9_-]{16}$/, name: 'ci runner', username: 'olga', role: 'operator', lastUsedAt: null, expired: false });
  t.equal(Date.parse(made.expiresAt) - f.clock.now, 90 * DAY, 'default lifetime 90 days');
  const as = { token: made.token as string };

  const list = await f.call('GET', '/api/v1/tokens', s);
  t.equal(list.json().tokens.length, 1);
  t.notOk('token' in list.json().tokens[0], 'a list never has the secret');
  t.notOk(list.body.includes(made.token.slice(4)));
  for await (const [key, rec] of f.store.tokens.entries()) {
    t.notOk(key.includes(made.token) || JSON.stringify(rec).includes(made.token), 'only the hash is stored');
  }

  t.equal((await f.call('GET', '/api/v1/session', as)).json().user.username, 'olga', 'the token works');
  t.equal((await f.call('GET', '/api/v1/session', { token: made.token.toLowerCase() })).statusCode, 401, 'a near miss does not');
  t.equal((await f.call('GET', '/api/v1/session', undefined, undefined, { headers: { authorization: `bearer ${made.token}` } })).statusCode, 200, 'the scheme is case-insensitive (RFC 9110 §11.1)');
  const basic = await f.call('GET', '/api/v1/session', undefined, undefined, { headers: { authorization: 'Basic b2xnYTpwdw==' } });
  t.equal(basic.statusCode, 401);
  t.equal(basic.json().code, 'AUTH_INVALID');

  // lastUsedAt: at most one write a minute per token.
  const writes = () => f.store.stats().writes;
  const rec = async () => (await f.core.tokens.list()).find((x) => x.id === made.id)!;
  t.ok((await rec()).lastUsedAt, 'the first use is recorded');
  const before = writes();
  for (let i = 0; i < 5; i++) await f.call('GET', '/api/v1/version', as);
  t.equal(writes(), before, 'five uses in the same minute write nothing');
  f.clock.now += MINUTE + 1000;
  await f.call('GET', '/api/v1/version', as);
  t.equal(writes(), before + 1, 'a minute later, one write');
  t.equal((await rec()).lastUsedAt, new Date(f.clock.now).toISOString());

  // Revoked: 401 AUTH_INVALID at once, with the RFC 6750 error.
  const other = await f.call('POST', '/api/v1/tokens', s, { name: 'second' });
  const revoke = await f.call('DELETE', `/api/v1/tokens/${made.id}`, s);
  t.equal(revoke.statusCode, 204);
  const revoked = await f.call('GET', '/api/v1/version', as);
  t.equal(revoked.statusCode, 401);
  t.equal(revoked.json().code, 'AUTH_INVALID');
  t.equal(revoked.headers['www-authenticate'], 'Bearer realm="metalbox", error="invalid_token"');
  t.equal((await f.call('DELETE', `/api/v1/tokens/${made.id}`, s)).statusCode, 404, 'revoking twice');

  // Expired: refused the millisecond it expires; listed as expired until pruned 30 days later.
  const second = { token: other.json().token as string };
  t.equal((await f.call('GET', '/api/v1/version', second)).statusCode, 200);
  f.clock.now = Date.parse(other.json().expiresAt);
  const expired = await f.call('GET', '/api/v1/version', second);
  t.equal(expired.statusCode, 401);
  t.equal(expired.json().code, 'AUTH_INVALID');
  const s2 = await f.login('olga');
  t.match((await f.call('GET', '/api/v1/tokens', s2)).json().tokens, [{ name: 'second', expired: true }]);
  t.equal(await f.core.tokens.prune(), 0);
  f.clock.now += 30 * DAY + 1;
  t.equal(await f.core.tokens.prune(), 1);
});

t.test('API tokens: role capped at the owner\'s, now and later; only from a session; own or admin to revoke', async (t) => {
  const f = await authFixture(t);
  await f.addUser('root', 'admin');
  await f.addUser('olga', 'operator');
  await f.addUser('vic', 'viewer');
  const s = await f.login('olga');
  const tooMuch = await f.call('POST', '/api/v1/tokens', s, { name: 'x', role: 'admin' });
  t.equal(tooMuch.statusCode, 403);
  t.equal(tooMuch.json().code, 'AUTH_FORBIDDEN');
  const lesser = await f.call('POST', '/api/v1/tokens', s, { name: 'read only', role: 'viewer', expiresInDays: 7 });
  t.match(lesser.json(), { role: 'viewer' });
  t.equal(Date.parse(lesser.json().expiresAt) - f.clock.now, 7 * DAY);
  const op = await f.tokenFor('olga');
  t.equal((await f.call('POST', '/api/v1/tokens', op, { name: 'minted' })).json().code, 'AUTH_FORBIDDEN', 'a token cannot make tokens');

  // Demote the owner: the token acts with the owner's new role at once.
  const root = await f.tokenFor('root');
  t.equal((await f.call('PATCH', '/api/v1/users/olga', root, { role: 'viewer' })).statusCode, 200);
  t.equal((await f.call('GET', '/api/v1/session', op)).json().user.role, 'viewer', 'capped at the owner\'s current role');

  // Someone else's token: invisible to a non-admin, revocable by an admin.
  const vic = await f.login('vic');
  t.equal((await f.call('GET', '/api/v1/tokens', vic)).json().tokens.length, 0, 'vic sees none of olga\'s');
  t.equal((await f.call('DELETE', `/api/v1/tokens/${op.id}`, vic)).statusCode, 404);
  t.ok((await f.call('GET', '/api/v1/tokens', root)).json().tokens.length >= 3, 'an admin sees everyone\'s');
  t.equal((await f.call('DELETE', `/api/v1/tokens/${op.id}`, root)).statusCode, 204);
  t.equal((await f.call('GET', '/api/v1/session', op)).statusCode, 401);

  // Deleting the owner deletes their tokens and sessions in the same batch.
  const left = { token: lesser.json().token as string };
  t.equal((await f.call('GET', '/api/v1/session', left)).statusCode, 200);
  t.equal((await f.call('DELETE', '/api/v1/users/olga', root)).statusCode, 204);
  t.equal((await f.call('GET', '/api/v1/session', left)).statusCode, 401, 'the token of a deleted user');
  t.equal((await f.call('GET', '/api/v1/session', { cookie: s.cookie })).statusCode, 401, 'the session of a deleted user');
  const e = (await f.eventsOf('user.deleted'))[0];
  t.ok(Number(e?.data?.credentialsRevoked) >= 3, `credentials revoked: ${String(e?.data?.credentialsRevoked)}`);
});

t.test('sessions: idle end, absolute end, per-user cap, logins replace the presented session', async (t) => {
  const f = await authFixture(t, { auth: { sessions: { idleSeconds: 1800, maxSeconds: 4 * 3600, perUser: 3 } } });
  await f.addUser('root', 'admin');
  const s = await f.login('root');
  t.equal((await f.call('GET', '/api/v1/session', s)).statusCode, 200);
  // Activity keeps it alive past the idle time...
  for (let i = 0; i < 6; i++) {
    f.clock.now += 20 * MINUTE;
    t.equal((await f.call('GET', '/api/v1/version', { cookie: s.cookie })).statusCode, 200, `active at +${(i + 1) * 20} min`);
  }
  // ...but not past the absolute end.
  f.clock.now = Date.parse((await f.call('GET', '/api/v1/session', s)).json().expiresAt);
  const over = await f.call('GET', '/api/v1/version', { cookie: s.cookie });
  t.equal(over.statusCode, 401, 'absolute end');
  t.match(String(over.headers['set-cookie']), /Max-Age=0/);

  const idle = await f.login('root');
  f.clock.now += 30 * MINUTE;
  t.equal((await f.call('GET', '/api/v1/version', { cookie: idle.cookie })).statusCode, 401, 'idle for 30 minutes');

  const sessions = [];
  for (let i = 0; i < 4; i++) {
    sessions.push(await f.login('root'));
    f.clock.now += 1000;
  }
  const ok = await Promise.all(sessions.map(async (x) => (await f.call('GET', '/api/v1/version', { cookie: x.cookie })).statusCode));
  t.same(ok, [401, 200, 200, 200], 'a 4th login ends the oldest of 3');

  // Logging in again with a live cookie ends that session (no pile of forgotten sessions).
  const last = sessions[3]!;
  const again = await f.call('POST', '/api/v1/login', { cookie: last.cookie }, { username: 'root', password: f.passwordOf('root') });
  t.equal(again.statusCode, 200);
  t.equal((await f.call('GET', '/api/v1/version', { cookie: last.cookie })).statusCode, 401);
  t.equal(await f.core.sessions.prune(), 0, 'ended sessions are deleted, not left to prune');
});

t.test('password change: needs the current one, ends the other sessions, keeps this one; admin reset ends all', async (t) => {
  const f = await authFixture(t);
  await f.addUser('root', 'admin');
  await f.addUser('olga', 'operator');
  const a = await f.login('olga');
  const b = await f.login('olga');
  const wrong = await f.call('POST', '/api/v1/session/password', a, { currentPassword: 'not-the-password', newPassword: 'new-olga-password' });
  t.equal(wrong.statusCode, 403);
  t.equal(wrong.json().code, 'USER_PASSWORD_WRONG');
  const ok = await f.call('POST', '/api/v1/session/password', a, { currentPassword: f.passwordOf('olga'), newPassword: 'new-olga-password' });
  t.equal(ok.statusCode, 204);
  t.equal((await f.call('GET', '/api/v1/session', a)).statusCode, 200, 'this session stays');
  t.equal((await f.call('GET', '/api/v1/session', b)).statusCode, 401, 'the other one ended');
  t.equal((await f.login('olga')).res.statusCode, 401, 'the old password is gone');
  t.equal((await f.login('olga', 'new-olga-password')).res.statusCode, 200);

  const root = await f.login('root');
  t.equal((await f.call('PATCH', '/api/v1/users/olga', root, { password: 'reset-by-the-admin' })).statusCode, 200);
  t.equal((await f.call('GET', '/api/v1/session', a)).statusCode, 401, 'an admin reset ends every session');
  t.equal((await f.login('olga', 'reset-by-the-admin')).res.statusCode, 200);

  // Guessing the current password through a stolen session hits the same per-user limit as logins.
  const c = await f.login('olga', 'reset-by-the-admin');
  for (let i = 0; i < 5; i++) await f.call('POST', '/api/v1/session/password', c, { currentPassword: `guess-${i}`, newPassword: 'whatever-new-one' });
  const limited = await f.call('POST', '/api/v1/session/password', c, { currentPassword: 'reset-by-the-admin', newPassword: 'whatever-new-one' });
  t.equal(limited.statusCode, 429);
  t.ok(Number(limited.headers['retry-after']) > 0);
});

t.test('login rate limit: 5 failures a minute per address and per user name, then 429 with Retry-After', async (t) => {
  const f = await authFixture(t);
  await f.addUser('root', 'admin');
  await f.addUser('olga', 'operator');
  for (let i = 0; i < 5; i++) {
    const r = await f.login('root', 'wrong-guess', '10.0.0.1');
    t.equal(r.res.statusCode, 401, `failure ${i + 1}`);
    t.equal(r.res.json().code, 'AUTH_INVALID');
    f.clock.now += 1000;
  }
  const blocked = await f.login('root', undefined, '10.0.0.1');
  t.equal(blocked.res.statusCode, 429, 'the right password too, while blocked');
  t.equal(blocked.res.json().code, 'AUTH_RATE_LIMITED');
  t.equal(blocked.res.headers['retry-after'], '55', 'until the oldest failure (5 s ago) leaves the window');
  t.equal((await f.login('root', undefined, '10.0.0.2')).res.statusCode, 429, 'per user name: another address is blocked for root too');
  t.equal((await f.login('olga', undefined, '10.0.0.1')).res.statusCode, 429, 'per address: another user from that address too');
  t.equal((await f.login('olga', undefined, '10.0.0.3')).res.statusCode, 200, 'others are not affected');
  f.clock.now += 55_000;
  t.equal((await f.login('root', undefined, '10.0.0.1')).res.statusCode, 200, 'after Retry-After');
  // Spraying user names from one address.
  for (let i = 0; i < 5; i++) await f.login(`nobody${i}`, 'x', '10.0.0.9');
  t.equal((await f.login('root', undefined, '10.0.0.9')).res.statusCode, 429);
  t.ok(f.core.failuresByAddress.size <= 10_000 && f.core.failuresByUser.size <= 10_000);
});

t.test('last admin: neither deleted nor demoted; with a second admin both work', async (t) => {
  const f = await authFixture(t);
  await f.addUser('root', 'admin');
  const root = await f.tokenFor('root');
  const del = await f.call('DELETE', '/api/v1/users/root', root);
  t.equal(del.statusCode, 409);
  t.equal(del.json().code, 'USER_LAST_ADMIN');
  const demote = await f.call('PATCH', '/api/v1/users/root', root, { role: 'operator' });
  t.equal(demote.statusCode, 409);
  t.equal(demote.json().code, 'USER_LAST_ADMIN');
  t.equal((await f.call('POST', '/api/v1/users', root, { username: 'second', role: 'admin', password: f.passwordOf('second') })).statusCode, 201);
  t.equal((await f.call('PATCH', '/api/v1/users/root', root, { role: 'operator' })).statusCode, 200, 'demoted with another admin left');
  t.equal((await f.call('GET', '/api/v1/users', root)).statusCode, 403, 'root\'s token is an operator\'s now');
  const second = await f.tokenFor('second');
  t.equal((await f.call('DELETE', '/api/v1/users/second', second)).json().code, 'USER_LAST_ADMIN', 'second is the last admin now');
  t.equal((await f.call('DELETE', '/api/v1/users/root', second)).statusCode, 204);
  t.equal((await f.call('POST', '/api/v1/users', second, { username: 'second', role: 'viewer', password: 'another-password' })).json().code, 'USER_EXISTS');
  t.equal((await f.call('GET', '/api/v1/users/root', second)).statusCode, 404);
  t.match((await f.call('GET', '/api/v1/users/second', second)).json(), { username: 'second', role: 'admin' });
});

t.test('bad input: every write route of auth, users and tokens answers 400 naming the field', async (t) => {
  const f = await authFixture(t);
  await f.addUser('root', 'admin');
  const s = await f.login('root');
  const long = 'x'.repeat(1025);
  const cases: [string, string, unknown, RegExp][] = [
    ['POST', '/api/v1/login', { username: 'root' }, /password/],
    ['POST', '/api/v1/login', { username: '', password: 'x' }, /username/],
    ['POST', '/api/v1/login', { username: 'root', password: long }, /password/],
    ['POST', '/api/v1/users', { username: 'Bad Name', role: 'viewer', password: 'long-enough-pass' }, /username/],
    ['POST', '/api/v1/users', { role: 'viewer', password: 'long-enough-pass' }, /username/],
    ['POST', '/api/v1/users', { username: 'ok', role: 'god', password: 'long-enough-pass' }, /role/],
    ['POST', '/api/v1/users', { username: 'ok', role: 'viewer', password: 'short' }, /password/],
    ['PATCH', '/api/v1/users/root', { role: 'superuser' }, /role/],
    ['PATCH', '/api/v1/users/root', { password: 'short' }, /password/],
    ['PATCH', '/api/v1/users/root', {}, /body/],
    ['PATCH', '/api/v1/users/no%20such', { role: 'viewer' }, /user/],
    ['DELETE', '/api/v1/users/a%20b', undefined, /user/],
    ['POST', '/api/v1/session/password', { currentPassword: 'x' }, /newPassword/],
    ['POST', '/api/v1/session/password', { currentPassword: 'x', newPassword: 'short' }, /newPassword/],
    ['POST', '/api/v1/tokens', { name: '' }, /name/],
    ['POST', '/api/v1/tokens', { name: 'bad\u0007bell' }, /name/],
    ['POST', '/api/v1/tokens', { name: 'ok', expiresInDays: 366 }, /expiresInDays/],
    ['POST', '/api/v1/tokens', { name: 'ok', expiresInDays: 0 }, /expiresInDays/],
    ['POST', '/api/v1/tokens', { name: 'ok', role: 'root' }, /role/],
    ['DELETE', '/api/v1/tokens/not-a-token-id', undefined, /id/],
  ];
  const covered = new Set<string>();
  for (const [method, url, body, field] of cases) {
    const res = await f.call(method as 'POST', url, s, body);
    t.equal(res.statusCode, 400, `${method} ${url} ${JSON.stringify(body)}: 400`);
    t.match(res.json().message, field, `${method} ${url}: names ${field} (${res.json().message})`);
    t.equal(res.json().code, 'VALIDATION_FAILED');
    const route = routeTable(f.app).find((r) => r.method === method && new RegExp(`^${r.url.replace(/:[a-z]+/g, '[^/]+')}$`).test(url));
    if (route) covered.add(`${route.method} ${route.url}`);
  }
  // Logout takes no input: the only bad input is a body that is not JSON.
  const badJson = await f.app.inject({ method: 'POST', url: '/api/v1/logout', headers: { cookie: s.cookie, 'x-csrf-token': s.csrf, 'content-type': 'application/json' }, payload: '{nope' });
  t.equal(badJson.statusCode, 400);
  t.equal(badJson.json().code, 'REQUEST_INVALID');
  covered.add('POST /api/v1/logout');
  const writes = routeTable(f.app).filter((r) => !['GET', 'HEAD'].includes(r.method) && /^\/api\/v1\/(login|logout|session|users|tokens)/.test(r.url)).map((r) => `${r.method} ${r.url}`);
  t.same([...covered].sort(), writes.sort(), 'every write route of auth, users and tokens has a case');
  t.equal((await f.call('GET', '/api/v1/session', { cookie: s.cookie })).statusCode, 200, 'the bad JSON did not end the session');
});
