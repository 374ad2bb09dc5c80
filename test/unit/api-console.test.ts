// The console route (src/api/routes/console.ts) on the whole app: what it serves, with which headers, and
// that it serves nothing else (every other path keeps its JSON 404, and no route or public path is added).
import t from 'tap';
import { createHash } from 'node:crypto';
import { CONSOLE_CSP, consoleFileFor, type ConsoleAssets, type ConsoleSource } from '../../src/api/routes/console.ts';
import { PUBLIC_ROUTES, routeTable } from '../../src/api/auth.ts';
import { authFixture } from '../helpers/auth-fixture.ts';

function fakeConsole(): { source: ConsoleSource; calls: () => number } {
  let calls = 0;
  const file = (body: string, type: string, immutable: boolean) => ({
    body: Buffer.from(body), type, immutable, etag: `"${createHash('sha256').update(body).digest('hex').slice(0, 32)}"`,
  });
  const assets: ConsoleAssets = {
    files: new Map([
      ['index.html', file('<!doctype html><title>metalbox</title>', 'text/html; charset=utf-8', false)],
      ['main-ABC123.js', file('console.log(1)', 'text/javascript; charset=utf-8', true)],
      ['main-DEF456.css', file('body{}', 'text/css; charset=utf-8', true)],
    ]),
  };
  return { source: async () => { calls++; return assets; }, calls: () => calls };
}

t.test('consoleFileFor: the asset set and the console pages only', async (t) => {
  t.same(consoleFileFor('/'), { file: 'index.html', page: true });
  t.same(consoleFileFor('/machines'), { file: 'index.html', page: true });
  t.same(consoleFileFor('/machines/ab12cd34'), { file: 'index.html', page: true });
  t.same(consoleFileFor('/console-assets/main-ABC123.js'), { file: 'main-ABC123.js', page: false });
  for (const p of ['/nope', '/api/v1/nope', '/boot/x', '/dashboard/x', '/console-assets/../manifest.json', '/console-assets/manifest.json', '/console-assets/a/b.js', '/machines/a/b']) {
    t.equal(consoleFileFor(p), undefined, p);
  }
});

t.test('served: index.html with the CSP and no-cache for pages; hashed files cached for a year; nothing else', async (t) => {
  const fake = fakeConsole();
  const f = await authFixture(t, { deps: { console: fake.source } });
  for (const path of ['/', '/login', '/machines', '/machines/ab12cd34', '/settings']) {
    const res = await f.app.inject(path);
    t.equal(res.statusCode, 200, path);
    t.match(res.headers['content-type'], /^text\/html/);
    t.equal(res.headers['cache-control'], 'no-cache');
    t.equal(res.headers['content-security-policy'], CONSOLE_CSP);
    t.equal(res.headers['x-frame-options'], 'DENY');
    t.equal(res.headers['x-content-type-options'], 'nosniff');
    t.match(res.body, /<title>metalbox/);
  }
  t.notMatch(CONSOLE_CSP, /unsafe/, 'no unsafe-inline or unsafe-eval');
  const js = await f.app.inject('/console-assets/main-ABC123.js');
  t.equal(js.statusCode, 200);
  t.equal(js.headers['cache-control'], 'public, max-age=31536000, immutable');
  t.match(js.headers['content-type'], /^text\/javascript/);
  t.equal(js.body, 'console.log(1)');
  const again = await f.app.inject({ url: '/console-assets/main-ABC123.js', headers: { 'if-none-match': String(js.headers.etag) } });
  t.equal(again.statusCode, 304, 'a matching ETag: not modified');
  const head = await f.app.inject({ method: 'HEAD', url: '/console-assets/main-DEF456.css' });
  t.equal(head.statusCode, 200);
  t.equal(head.body, '', 'HEAD: no body');

  // Not in the set, not a console path, not GET: the app's JSON 404, never a page.
  for (const [method, url] of [['GET', '/console-assets/index.html'], ['GET', '/console-assets/main-XYZ.js'], ['GET', '/nope'], ['GET', '/api/v1/nope'],
    ['GET', '/console-assets/manifest.json'], ['POST', '/'], ['DELETE', '/machines'], ['GET', '/index.html/x']] as const) {
    const res = await f.app.inject({ method, url });
    t.equal(res.statusCode, 404, `${method} ${url}`);
    t.equal(res.json().code, 'NOT_FOUND');
  }
  // API routes are untouched: the console never answers for a registered route.
  t.equal((await f.app.inject('/api/v1/session')).statusCode, 401, 'an API route still needs credentials');
  t.notOk(routeTable(f.app).some((r) => r.url === '/' || r.url.startsWith('/console-assets')), 'no route is added');
  t.notOk(PUBLIC_ROUTES.some((r) => r.url.startsWith('/console')), 'nor a public one');
});

t.test('the source is loaded at the first console request, not at build; console: false serves none', async (t) => {
  const fake = fakeConsole();
  const f = await authFixture(t, { deps: { console: fake.source } });
  t.equal(fake.calls(), 0, 'building the app does not load the console');
  await f.app.inject('/api/v1/version');
  await f.app.inject('/nope');
  t.equal(fake.calls(), 0, 'nor does any other request');
  await f.app.inject('/');
  t.equal(fake.calls(), 1);
  const none = await authFixture(t, { deps: { console: false } });
  t.equal((await none.app.inject('/')).statusCode, 404);
});

t.test('a console that cannot be loaded is a 404 and an error in the log, not a crash', async (t) => {
  const f = await authFixture(t, { deps: { console: async () => { throw new Error('boom'); } } });
  t.equal((await f.app.inject('/')).statusCode, 404);
  t.ok(f.logs.some((l) => l.includes('the console could not be loaded')));
});
