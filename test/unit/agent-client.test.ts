// The agent API client against the fake appliance on loopback.
import { createServer } from 'node:net';
import t from 'tap';
import { ApplianceClient } from '../../src/agent/client.ts';
import { startFakeAppliance } from '../helpers/fake-appliance.ts';

t.test('token, retries on 5xx, no retry on 4xx', async (t) => {
  const fa = await startFakeAppliance();
  t.teardown(() => fa.close());
  const logs: string[] = [];
  const client = new ApplianceClient({ url: fa.url, token: fa.token, retryDelayMs: () => 10, log: (l) => logs.push(l) });
  fa.task = { mode: 'release', release: { erase: 'quick' } };
  fa.fail503 = 2;
  t.same(await client.task(), { mode: 'release', release: { erase: 'quick' } });
  t.equal(fa.requests.length, 3, 'two 503s, then the answer');
  t.ok(fa.requests.every((r) => r.authorization === `Bearer ${fa.token}`));
  t.equal(logs.length, 2);
  t.match(logs[0], /503 STORE_CLOSED: try later; retrying/);

  fa.fail503 = 10;
  await t.rejects(client.task(), { code: 'AGENT_APPLIANCE_REFUSED', message: /503/ }, 'gives up after the retries');
  t.equal(fa.requests.length, 3 + 6, 'five retries after the first try');
  fa.fail503 = 0;

  const bad = new ApplianceClient({ url: fa.url, token: 'wrong-token', retryDelayMs: () => 10, log: (l) => logs.push(l) });
  const before = fa.requests.length;
  await t.rejects(bad.task(), { code: 'AGENT_APPLIANCE_REFUSED', message: 'GET /boot/agent/v1/task: 401 BOOT_TOKEN_INVALID: per-boot token unknown or expired' });
  t.equal(fa.requests.length, before + 1, 'a 401 is not retried');
  t.ok(logs.every((l) => !l.includes(fa.token) && !l.includes('wrong-token')), 'no token in any log line');

  fa.task = { mode: 'deploy', deploy: { nonsense: true } };
  await t.rejects(client.task(), { code: 'AGENT_TASK_INVALID' });
});

t.test('an appliance that is not there: AGENT_APPLIANCE_UNREACHABLE after the retries', async (t) => {
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => resolve(p)); });
  });
  let tries = 0;
  const client = new ApplianceClient({ url: `http://127.0.0.1:${port}`, token: 'secret-token', retries: 2, retryDelayMs: () => { tries++; return 5; } });
  await t.rejects(client.done({ mode: 'commission', ok: true }), { code: 'AGENT_APPLIANCE_UNREACHABLE', message: /ECONNREFUSED/ });
  t.equal(tries, 2);
});

t.test('progress: at most one post per interval, the newest wins, done waits for it', async (t) => {
  const fa = await startFakeAppliance();
  t.teardown(() => fa.close());
  const client = new ApplianceClient({ url: fa.url, token: fa.token, progressIntervalMs: 200 });
  const t0 = performance.now();
  for (let i = 0; i <= 100; i++) {
    client.progress({ phase: 'deploy', done: i, total: 100 });
    await new Promise((r) => setTimeout(r, 5));
  }
  await client.done({ mode: 'deploy', ok: true });
  const elapsed = performance.now() - t0;
  const posted = fa.progress.map((p) => p.done);
  t.ok(posted.length >= 2 && posted.length <= Math.ceil(elapsed / 200) + 1, `${posted.length} posts in ${Math.round(elapsed)} ms`);
  t.same(posted, [...posted].sort((a, b) => (a ?? 0) - (b ?? 0)), 'in order');
  t.equal(posted.at(-1), 100, 'the last report is flushed before done');
  const paths = fa.requests.map((r) => r.path);
  t.equal(paths.at(-1), '/boot/agent/v1/done', 'done comes last');
  t.same(fa.done, [{ mode: 'deploy', ok: true }]);
});

t.test('a failing progress post never fails the work', async (t) => {
  const fa = await startFakeAppliance();
  t.teardown(() => fa.close());
  const logs: string[] = [];
  const client = new ApplianceClient({ url: fa.url, token: fa.token, progressIntervalMs: 10, log: (l) => logs.push(l) });
  fa.fail503 = 1;
  client.progress({ phase: 'x' });
  await client.flushProgress();
  await new Promise((r) => setTimeout(r, 30));
  t.equal(fa.progress.length, 0, 'dropped, not retried');
  t.match(logs[0], /progress report failed/);
  client.progress({ phase: 'y' });
  await client.flushProgress();
  t.same(fa.progress, [{ phase: 'y' }]);
});
