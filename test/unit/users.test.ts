// Users in the core: scrypt hashing (format, limits, cost measured, the event loop left free, the thread pool
// not flooded), user name and password rules, the last-admin rule under concurrency, audit events in the
// same batch as the change, credentials deleted with their user, the failure limiter's bounds.
import t from 'tap';
import { performance } from 'node:perf_hooks';
import { createAuthCore, FailureLimiter } from '../../src/core/auth.ts';
import { EventLog } from '../../src/core/events.ts';
import { DEFAULT_SCRYPT, PasswordHasher, auditAs, lesserRole, roleAtLeast, type Role } from '../../src/core/users.ts';
import { isMetalboxError } from '../../src/lib/errors.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord, Store, WriteOp } from '../../src/store/types.ts';
import { TEST_SCRYPT } from '../helpers/auth-fixture.ts';

function setup(now?: () => number) {
  const store = createMemoryStore();
  const events = new EventLog(store);
  const core = createAuthCore({ store, events, ...(now ? { now } : {}) }, { hasher: { params: TEST_SCRYPT } });
  return { store, events, core };
}

async function allEvents(store: Store): Promise<EventRecord[]> {
  const out: EventRecord[] = [];
  for await (const [, e] of store.events.entries()) out.push(e);
  return out;
}

t.test('roles are ordered viewer < operator < admin', async (t) => {
  const order: Role[] = ['viewer', 'operator', 'admin'];
  for (const [i, a] of order.entries()) {
    for (const [j, b] of order.entries()) {
      t.equal(roleAtLeast(a, b), i >= j, `${a} >= ${b}`);
      t.equal(lesserRole(a, b), order[Math.min(i, j)]);
    }
  }
});

t.test('scrypt hashes: PHC string, random salt, verify, NFC, malformed and out-of-limit hashes never match', async (t) => {
  const h = new PasswordHasher({ params: TEST_SCRYPT });
  const a = await h.hash('correct horse battery');
  const b = await h.hash('correct horse battery');
  t.match(a, /^\$scrypt\$ln=10,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
  t.not(a, b, 'a fresh salt each time');
  t.equal(await h.verify('correct horse battery', a), true);
  t.equal(await h.verify('correct horse batterY', a), false);
  t.equal(await h.verify('', a), false);
  // The same password typed with a composed or a decomposed é.
  const composed = await h.hash('caf\u00e9-passphrase');
  t.equal(await h.verify('cafe\u0301-passphrase', composed), true, 'NFC before hashing');
  const [, , , salt, key] = a.split('$');
  for (const bad of ['', 'plain', `$scrypt$ln=40,r=8,p=1$${salt}$${key}`, `$scrypt$ln=20,r=32,p=16$${salt}$${key}`, `$scrypt$ln=9,r=8,p=1$${salt}$${key}`,
    `$scrypt$ln=10,r=8,p=1$${salt}$${key!.slice(1)}`, `$argon2id$v=19$m=65536,t=3,p=4$${salt}$${key}`, a.replace(key!, 'A'.repeat(43))]) {
    const t0 = performance.now();
    t.equal(await h.verify('correct horse battery', bad), false, `never matches ${bad.slice(0, 30)}...`);
    t.ok(performance.now() - t0 < 1000, 'and costs no more than a normal check');
  }
  t.equal(h.outdated(a), false);
  t.equal(new PasswordHasher().outdated(a), true, 'a hash under other parameters is outdated');
  t.throws(() => new PasswordHasher({ params: { ln: 25, r: 8, p: 1 } }), TypeError);
});

t.test('the default cost, measured; hashing leaves the event loop free', async (t) => {
  const h = new PasswordHasher();
  t.same(h.params, DEFAULT_SCRYPT);
  const stored = await h.hash('measure this password');
  // A timer every 5 ms must keep firing while scrypt runs on the thread pool. Hashing on the
  // main thread would let it fire at most once between two verifies (5 times in all), whatever
  // the machine's load; counting the ticks proves the point without a timing bound that a busy
  // CI machine (a GC pause, another process) can break.
  let maxGap = 0;
  let ticks = 0;
  let last = performance.now();
  const timer = setInterval(() => { const n = performance.now(); ticks++; maxGap = Math.max(maxGap, n - last); last = n; }, 5);
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    t.equal(await h.verify('measure this password', stored), true);
    times.push(performance.now() - t0);
  }
  clearInterval(timer);
  times.sort((x, y) => x - y);
  const median = times[2]!;
  t.comment(`scrypt ln=15 r=8 p=1 verify: median ${median.toFixed(1)} ms (min ${times[0]!.toFixed(1)}, max ${times[4]!.toFixed(1)}); longest event-loop gap ${maxGap.toFixed(1)} ms`);
  t.ok(median > 20, `costly enough to slow guessing (${median.toFixed(1)} ms)`);
  t.ok(median < 1500, `cheap enough for a login (${median.toFixed(1)} ms)`);
  t.ok(ticks >= 20, `the event loop kept running (${ticks} timer ticks during 5 hashes, longest gap ${maxGap.toFixed(1)} ms)`);
});

t.test('at most `concurrency` hashes run and `queue` wait; beyond, AUTH_RATE_LIMITED at once', async (t) => {
  const h = new PasswordHasher({ params: { ln: 14, r: 8, p: 1 }, concurrency: 1, queue: 2 });
  const results = await Promise.allSettled([h.hash('one-password'), h.hash('two-password'), h.hash('three-password'), h.hash('four-password')]);
  t.same(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'rejected']);
  const err = (results[3] as PromiseRejectedResult).reason as unknown;
  t.ok(isMetalboxError(err, 'AUTH_RATE_LIMITED'));
  t.equal(await h.verify('one-password', (results[0] as PromiseFulfilledResult<string>).value), true, 'the slots are free again');
});

t.test('user rules: names, roles, passwords; USER_EXISTS case-insensitively', async (t) => {
  const { core } = setup();
  const ok = { username: 'root', role: 'admin' as const, password: 'twelve-chars' };
  const bad: [Record<string, unknown>, string][] = [
    [{ username: 'Root' }, 'username'], [{ username: '9lives' }, 'username'], [{ username: 'a'.repeat(33) }, 'username'], [{ username: 'a b' }, 'username'],
    [{ username: '' }, 'username'], [{ role: 'root' }, 'role'], [{ password: 'eleven-char' }, 'password'], [{ password: 'x'.repeat(1025) }, 'password'],
  ];
  for (const [over, field] of bad) {
    await t.rejects(core.users.create({ ...ok, ...over } as typeof ok, auditAs('t')), { code: 'USER_INVALID', details: { field } }, JSON.stringify(over).slice(0, 60));
  }
  const u = await core.users.create(ok, auditAs('t'));
  t.match(u, { username: 'root', role: 'admin', id: /^usr_/ });
  t.notOk('passwordHash' in u, 'a view has no hash');
  await t.rejects(core.users.create({ ...ok, role: 'viewer' }, auditAs('t')), { code: 'USER_EXISTS' });
  t.equal((await core.users.find('ROOT'))?.id, u.id, 'found case-insensitively (the index)');
  t.equal(await core.users.find(''), undefined);
  t.equal(await core.users.find('\ud800'), undefined, 'a malformed key is just not found');
  t.ok(await core.users.authenticate('Root', 'twelve-chars'), 'login names are case-insensitive');
  t.equal(await core.users.authenticate('root', 'twelve-charS'), undefined);
  t.equal(await core.users.authenticate('nobody', 'twelve-chars'), undefined);
  t.equal(await core.users.authenticate('not a name!', 'twelve-chars'), undefined);
});

t.test('unknown users cost a password check too (no timing oracle for user names)', async (t) => {
  const { core } = setup();
  await core.users.create({ username: 'root', role: 'admin', password: 'twelve-chars' }, auditAs('t'));
  let checks = 0;
  const verify = core.hasher.verify.bind(core.hasher);
  core.hasher.verify = async (p, s) => { checks++; return verify(p, s); };
  await core.users.authenticate('root', 'wrong-password');
  const known = checks;
  await core.users.authenticate('nobody', 'wrong-password');
  t.equal(checks - known, known, 'the same number of scrypt runs');
});

t.test('changes and their audit events are one batch; a failed write leaves neither', async (t) => {
  const { store, core } = setup();
  const batches: WriteOp[][] = [];
  const write = store.write.bind(store);
  store.write = async (ops) => { batches.push(ops); return write(ops); };
  await core.users.create({ username: 'root', role: 'admin', password: 'twelve-chars' }, auditAs('cli:root', { address: 'local' }));
  await core.users.create({ username: 'olga', role: 'operator', password: 'twelve-chars' }, auditAs('cli:root'));
  await core.users.update('olga', { role: 'viewer' }, auditAs('cli:root'));
  await core.users.delete('olga', auditAs('cli:root'));
  t.same(batches.map((b) => b.map((op) => `${op.type} ${op.collection}`)), [
    ['put users', 'put events'], ['put users', 'put events'], ['put users', 'put events'], ['del users', 'put events'],
  ]);
  const events = await allEvents(store);
  t.same(events.map((e) => [e.type, e.actor, e.subject]), [
    ['user.created', 'cli:root', 'root'], ['user.created', 'cli:root', 'olga'], ['user.updated', 'cli:root', 'olga'], ['user.deleted', 'cli:root', 'olga'],
  ]);
  t.same(events[0]!.data, { role: 'admin', address: 'local' });
  t.notMatch(JSON.stringify(events), /twelve|scrypt/, 'no password or hash in events');

  store.write = async () => { throw new Error('disk full'); };
  await t.rejects(core.users.create({ username: 'vic', role: 'viewer', password: 'twelve-chars' }, auditAs('t')), /disk full/);
  store.write = write;
  t.equal(await core.users.find('vic'), undefined);
  t.equal((await allEvents(store)).length, 4);
});

t.test('the last admin: never deleted or demoted, also when two requests race', async (t) => {
  const { core } = setup();
  await core.users.create({ username: 'root', role: 'admin', password: 'twelve-chars' }, auditAs('t'));
  await t.rejects(core.users.delete('root', auditAs('t')), { code: 'USER_LAST_ADMIN' });
  await t.rejects(core.users.update('root', { role: 'viewer' }, auditAs('t')), { code: 'USER_LAST_ADMIN' });
  t.match(await core.users.update('root', { role: 'admin' }, auditAs('t')), { role: 'admin' }, 'keeping the role is fine');
  await core.users.create({ username: 'ada', role: 'admin', password: 'twelve-chars' }, auditAs('t'));
  for (let round = 0; round < 10; round++) {
    const results = await Promise.allSettled([
      core.users.update('root', { role: 'operator' }, auditAs('t')),
      round % 2 === 0 ? core.users.delete('ada', auditAs('t')) : core.users.update('ada', { role: 'viewer' }, auditAs('t')),
    ]);
    t.same(results.map((r) => r.status).sort(), ['fulfilled', 'rejected'], `round ${round}: exactly one wins`);
    const admins = (await core.users.list()).filter((u) => u.role === 'admin');
    t.equal(admins.length, 1, 'one admin is left');
    // Back to two admins for the next round.
    if (await core.users.find('ada')) await core.users.update('ada', { role: 'admin' }, auditAs('t'));
    else await core.users.create({ username: 'ada', role: 'admin', password: 'twelve-chars' }, auditAs('t'));
    await core.users.update('root', { role: 'admin' }, auditAs('t'));
  }
});

t.test('deleting a user deletes their API tokens and sessions; others\' stay', async (t) => {
  const { store, core } = setup();
  await core.users.create({ username: 'root', role: 'admin', password: 'twelve-chars' }, auditAs('t'));
  await core.users.create({ username: 'olga', role: 'operator', password: 'twelve-chars' }, auditAs('t'));
  const olga = (await core.users.find('olga'))!;
  const root = (await core.users.find('root'))!;
  const ot = await core.tokens.create(olga, { name: 'a' }, auditAs('t'));
  const rt = await core.tokens.create(root, { name: 'b' }, auditAs('t'));
  const os = await core.sessions.create(olga, { address: '127.0.0.1' }, auditAs('t'));
  const rs = await core.sessions.create(root, { address: '127.0.0.1' }, auditAs('t'));
  await store.tokens.put('boot:x', { id: 'boot:x', kind: 'boot', hash: 'x', expiresAt: new Date(Date.now() + 1e6).toISOString() });
  await core.users.delete('olga', auditAs('t'));
  t.equal(await core.tokens.verify(ot.token), undefined);
  t.equal(await core.sessions.verify(os.cookie), undefined);
  t.ok(await core.tokens.verify(rt.token));
  t.ok(await core.sessions.verify(rs.cookie));
  t.ok(await store.tokens.get('boot:x'), 'boot tokens are not user credentials');
});

t.test('an outdated hash is replaced at the next good login', async (t) => {
  const { store, events } = setup();
  const weak = createAuthCore({ store, events }, { hasher: { params: TEST_SCRYPT } });
  await weak.users.create({ username: 'root', role: 'admin', password: 'twelve-chars' }, auditAs('t'));
  const stronger = createAuthCore({ store, events }, { hasher: { params: { ln: 11, r: 8, p: 1 } } });
  t.ok(await stronger.users.authenticate('root', 'twelve-chars'));
  t.match((await stronger.users.find('root'))!.passwordHash, /^\$scrypt\$ln=11,r=8,p=1\$/);
  t.ok(await stronger.users.authenticate('root', 'twelve-chars'), 'and still verifies');
  t.equal(await stronger.users.authenticate('root', 'wrong-password'), undefined);
});

t.test('failure limiter: a sliding window per key, bounded memory', async (t) => {
  let now = 1_000_000;
  const l = new FailureLimiter({ max: 3, windowSeconds: 10, maxKeys: 100, now: () => now });
  l.fail('a'); now += 1000; l.fail('a');
  t.equal(l.retryAfter('a'), 0);
  now += 1000; l.fail('a');
  t.equal(l.retryAfter('a'), 8);
  now += 8000;
  t.equal(l.retryAfter('a'), 0, 'the oldest left the window');
  l.fail('a');
  t.equal(l.retryAfter('a'), 1);
  l.clear('a');
  t.equal(l.retryAfter('a'), 0);
  for (let i = 0; i < 10_000; i++) l.fail(`k${i}`);
  t.equal(l.size, 100, 'at most maxKeys keys');
  for (let i = 0; i < 3; i++) l.fail('hot');
  t.ok(l.retryAfter('hot') > 0, 'the newest keys are kept');
  now += 11_000;
  t.equal(l.retryAfter('hot'), 0);
});

t.test('sessions and tokens: a touch never brings back a revoked credential', async (t) => {
  let now = Date.now();
  const { store, core } = setup(() => now);
  await core.users.create({ username: 'root', role: 'admin', password: 'twelve-chars' }, auditAs('t'));
  const root = (await core.users.find('root'))!;
  const tok = await core.tokens.create(root, { name: 'x' }, auditAs('t'));
  const ses = await core.sessions.create(root, { address: '::1' }, auditAs('t'));
  now += 61_000;
  // Verify (which touches) and revoke at the same time, many times over.
  for (let i = 0; i < 20; i++) {
    const { token } = await core.tokens.create(root, { name: `n${i}` }, auditAs('t'));
    const id = (await core.tokens.list()).find((v) => v.name === `n${i}`)!.id;
    now += 61_000;
    await Promise.all([core.tokens.verify(token), core.tokens.revoke(id, { userId: root.id, role: 'admin' }, auditAs('t'))]);
    t.equal(await core.tokens.verify(token), undefined, `token ${i} stays revoked`);
  }
  now += 61_000;
  await Promise.all([core.sessions.verify(ses.cookie), core.sessions.end(ses.cookie, auditAs('t'), 'root')]);
  t.equal(await core.sessions.verify(ses.cookie), undefined, 'the session stays ended');
  t.ok(await core.tokens.verify(tok.token));
  t.equal((await store.tokens.count()), 1);
});
