// GET /api/openapi.json and GET /api/docs: every registered route is in the document with its access level;
// the document has the OpenAPI 3.0 shape (every schema uses only 3.0 keywords, every $ref resolves, path
// templates match their parameters); the reference page is self-contained (no external URL, CSP hashes that
// match its inline script and style) and its script renders the document (run here against a small DOM).
import t from 'tap';
import { Script, createContext } from 'node:vm';
import { createHash } from 'node:crypto';
import Type from 'typebox';
import { routeTable } from '../../src/api/auth.ts';
import { DOCS_CSP, DOCS_HTML } from '../../src/api/docs.ts';
import { OAS30_SCHEMA_KEYWORDS, buildOpenApi, openApiPath, toOpenApi30 } from '../../src/api/openapi.ts';
import { resourcesFixture } from '../helpers/resources-app.ts';

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Problems of one Schema Object against OpenAPI 3.0.3 §4.7.24, recursively. */
function schemaProblems(s: unknown, where: string, doc: Json, out: string[]): void {
  if (!isObject(s)) { out.push(`${where}: not an object`); return; }
  if ('$ref' in s) {
    if (Object.keys(s).length !== 1) out.push(`${where}: $ref with siblings`);
    if (resolve(doc, s.$ref as string) === undefined) out.push(`${where}: $ref ${String(s.$ref)} does not resolve`);
    return;
  }
  for (const k of Object.keys(s)) if (!OAS30_SCHEMA_KEYWORDS.has(k) && !k.startsWith('x-')) out.push(`${where}: keyword ${k} is not OpenAPI 3.0`);
  if ('type' in s && !['string', 'number', 'integer', 'boolean', 'array', 'object'].includes(s.type as string)) out.push(`${where}: type ${JSON.stringify(s.type)}`);
  if (s.type === 'array' && !('items' in s)) out.push(`${where}: array without items`);
  if ('required' in s && (!Array.isArray(s.required) || s.required.length === 0 || s.required.some((r) => typeof r !== 'string'))) out.push(`${where}: required must be a non-empty list of names`);
  if ('enum' in s && (!Array.isArray(s.enum) || s.enum.length === 0)) out.push(`${where}: empty enum`);
  for (const k of ['nullable', 'exclusiveMinimum', 'exclusiveMaximum', 'readOnly', 'writeOnly', 'uniqueItems', 'deprecated'] as const) {
    if (k in s && typeof s[k] !== 'boolean') out.push(`${where}: ${k} must be a boolean`);
  }
  if (isObject(s.properties)) for (const [k, v] of Object.entries(s.properties)) schemaProblems(v, `${where}.properties.${k}`, doc, out);
  else if ('properties' in s) out.push(`${where}: properties must be an object`);
  if ('items' in s) schemaProblems(s.items, `${where}.items`, doc, out);
  if (isObject(s.additionalProperties)) schemaProblems(s.additionalProperties, `${where}.additionalProperties`, doc, out);
  else if ('additionalProperties' in s && typeof s.additionalProperties !== 'boolean') out.push(`${where}: additionalProperties`);
  for (const k of ['anyOf', 'oneOf', 'allOf'] as const) {
    if (k in s) (Array.isArray(s[k]) ? s[k] as unknown[] : []).forEach((x, i) => schemaProblems(x, `${where}.${k}[${i}]`, doc, out));
  }
  if ('not' in s) schemaProblems(s.not, `${where}.not`, doc, out);
}

function resolve(doc: Json, ref: string): unknown {
  if (!ref.startsWith('#/')) return undefined;
  return ref.slice(2).split('/').reduce<unknown>((node, p) => (isObject(node) ? node[p.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined), doc);
}

const OPERATION_KEYS = new Set(['tags', 'summary', 'description', 'externalDocs', 'operationId', 'parameters', 'requestBody', 'responses', 'callbacks', 'deprecated', 'security', 'servers']);

t.test('the document: every route with its access level, in OpenAPI 3.0 shape', async (t) => {
  const f = await resourcesFixture(t);
  t.equal((await f.call('GET', '/api/openapi.json', undefined)).statusCode, 401, 'not public');
  const res = await f.call('GET', '/api/openapi.json', f.as.viewer);
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /^application\/json/);
  const doc = res.json() as Json;
  t.equal(doc.openapi, '3.0.3');
  t.match(doc.info, { title: 'metalbox API', version: '9.9.9' });
  t.ok(isObject(doc.paths) && isObject(doc.components));
  for (const k of Object.keys(doc)) t.ok(['openapi', 'info', 'servers', 'paths', 'components', 'security', 'tags', 'externalDocs'].includes(k) || k.startsWith('x-'), `top-level ${k}`);
  const components = doc.components as Json;
  t.match(components.securitySchemes, { bearer: { type: 'http', scheme: 'bearer' }, session: { type: 'apiKey', in: 'cookie', name: '__Host-mbx_session' } });
  t.same(doc.security, [{ bearer: [] }, { session: [] }]);
  t.match((components.schemas as Json).Error, { type: 'object', required: ['statusCode', 'code', 'error', 'message'] });

  const paths = doc.paths as Record<string, Record<string, Json>>;
  const table = routeTable(f.app).filter((r) => r.method !== 'HEAD');
  t.ok(table.length >= 70, `${table.length} routes`);
  let apiRoutes = 0;
  for (const r of table) {
    const { path } = openApiPath(r.url);
    const op = paths[path]?.[r.method.toLowerCase()];
    if (r.url.startsWith('/api/')) apiRoutes++;
    if (!t.ok(op, `${r.method} ${r.url} is in the document as ${path}`) || !op) continue;
    t.equal(op['x-metalbox-access'], r.access, `${r.method} ${r.url}: access ${r.access}`);
  }
  const operations = Object.entries(paths).flatMap(([p, ops]) => Object.entries(ops).map(([m, op]) => ({ path: p, method: m, op })));
  t.equal(operations.length, table.length, 'nothing in the document that is not a route');
  t.ok(apiRoutes >= 70, `${apiRoutes} /api routes`);

  const problems: string[] = [];
  const ids = new Set<string>();
  for (const { path, method, op } of operations) {
    const where = `${method.toUpperCase()} ${path}`;
    for (const k of Object.keys(op)) if (!OPERATION_KEYS.has(k) && !k.startsWith('x-')) problems.push(`${where}: operation key ${k}`);
    const id = op.operationId as string;
    if (ids.has(id)) problems.push(`${where}: operationId ${id} twice`);
    ids.add(id);
    const params = (op.parameters ?? []) as Json[];
    const templ = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    const inPath = params.filter((p) => p.in === 'path').map((p) => p.name);
    if (JSON.stringify([...templ].sort()) !== JSON.stringify([...inPath].sort())) problems.push(`${where}: path parameters ${JSON.stringify(inPath)} vs template ${JSON.stringify(templ)}`);
    for (const p of params) {
      if (!['path', 'query', 'header', 'cookie'].includes(p.in as string)) problems.push(`${where}: parameter in ${String(p.in)}`);
      if (p.in === 'path' && p.required !== true) problems.push(`${where}: path parameter ${String(p.name)} not required`);
      schemaProblems(p.schema, `${where} parameter ${String(p.name)}`, doc, problems);
    }
    if (op.requestBody) {
      const content = (op.requestBody as Json).content as Record<string, Json>;
      schemaProblems(content['application/json']?.schema, `${where} body`, doc, problems);
    }
    const responses = op.responses as Record<string, Json>;
    if (!Object.keys(responses).some((c) => c.startsWith('2'))) problems.push(`${where}: no 2xx response`);
    if (op['x-metalbox-access'] !== 'public' && !(responses['401'] && responses['403'])) problems.push(`${where}: no 401/403`);
    if (op['x-metalbox-access'] === 'public' && JSON.stringify(op.security) !== '[]') problems.push(`${where}: public without security: []`);
    for (const [code, r] of Object.entries(responses)) {
      if (!/^([1-5]\d\d|[1-5]XX|default)$/.test(code)) problems.push(`${where}: response code ${code}`);
      const resolved = (r.$ref ? resolve(doc, r.$ref as string) : r) as Json | undefined;
      if (!resolved) { problems.push(`${where} ${code}: $ref ${String(r.$ref)} does not resolve`); continue; }
      if (typeof resolved.description !== 'string') problems.push(`${where} ${code}: no description`);
      for (const [type, media] of Object.entries((resolved.content ?? {}) as Record<string, Json>)) if (media.schema) schemaProblems(media.schema, `${where} ${code} ${type}`, doc, problems);
      if (code.startsWith('4') && resolved.content) t.same(((resolved.content as Json)['application/json'] as Json).schema, { $ref: '#/components/schemas/Error' }, `${where} ${code}: the error schema`);
    }
  }
  for (const [name, s] of Object.entries(components.schemas as Json)) schemaProblems(s, `components.schemas.${name}`, doc, problems);
  t.same(problems, [], 'no OpenAPI 3.0 problems');
  // The checker itself finds what it looks for.
  const planted: string[] = [];
  schemaProblems({ type: 'object', required: [], properties: { a: { const: 1 }, b: { type: 'null' }, c: { type: 'array' }, d: { $ref: '#/nowhere' } }, patternProperties: {} }, 'planted', doc, planted);
  t.equal(planted.length, 6, `the checker catches planted problems: ${planted.join('; ')}`);

  // Spot checks: a path parameter, a query list, a write-only secret, an access level.
  const power = paths['/api/v1/bmcs/{id}/power']!.post!;
  t.match(power, { 'x-metalbox-access': 'operator', tags: ['bmcs'], parameters: [{ name: 'id', in: 'path', required: true }] });
  t.match(((power.requestBody as Json).content as Json)['application/json'], { schema: { type: 'object', required: ['action'], properties: { action: { type: 'string', enum: ['on', 'off', 'soft-off', 'cycle', 'reset'] } } } });
  const bmcBody = (((paths['/api/v1/bmcs']!.post!.requestBody as Json).content as Json)['application/json'] as Json).schema as Json;
  t.match((bmcBody.properties as Json).password, { type: 'string', writeOnly: true });
  t.notOk('password' in (((((paths['/api/v1/bmcs/{id}']!.get!.responses as Json)['200'] as Json).content as Json)['application/json'] as Json).schema as { properties: Json }).properties, 'no password in a BMC view');
  t.match(paths['/api/v1/leases']!.get!.parameters, [{ name: 'subnet', in: 'query' }, { name: 'mac' }, { name: 'state', style: 'form', explode: true, schema: { type: 'array', items: { type: 'string', enum: ['offered', 'bound', 'released', 'declined'] } } }]);
  t.match(paths['/api/v1/users']!.get, { 'x-metalbox-access': 'admin' });
  t.match(paths['/api/v1/login']!.post, { 'x-metalbox-access': 'public', security: [] });
  t.match(paths['/api/docs']!.get, { 'x-metalbox-access': 'viewer', responses: { 200: { content: { 'text/html': {} } } } });
  t.match(paths['/api/v1/dns/records/{id}']!.patch, { requestBody: { content: { 'application/json': { schema: { properties: { ttl: { type: 'integer', nullable: true } } } } } } }, 'a nullable field');
});

t.test('toOpenApi30: JSON Schema 2020-12 (TypeBox) to OpenAPI 3.0', async (t) => {
  t.same(toOpenApi30(Type.Literal('x')), { type: 'string', enum: ['x'] }, 'const');
  t.same(toOpenApi30(Type.Union([Type.String({ description: 'd' }), Type.Null()], { description: 'outer' })), { type: 'string', description: 'outer', nullable: true }, 'T | null');
  t.same(toOpenApi30(Type.Union([Type.Literal('a'), Type.Literal('b')])), { type: 'string', enum: ['a', 'b'] }, 'union of literals');
  t.same(toOpenApi30(Type.Union([Type.Literal(1), Type.Literal(2), Type.Null()])), { type: 'integer', enum: [1, 2], nullable: true });
  t.same(toOpenApi30(Type.Record(Type.String(), Type.Integer())), { type: 'object', additionalProperties: { type: 'integer' } }, 'record');
  t.same(toOpenApi30(Type.Integer({ exclusiveMinimum: 0 })), { type: 'integer', minimum: 0, exclusiveMinimum: true });
  t.same(toOpenApi30({ type: ['string', 'null'] }), { type: 'string', nullable: true });
  t.same(toOpenApi30({ type: 'object', required: [], properties: {}, $id: 'x', $schema: 'y', unevaluatedProperties: false }), { type: 'object', properties: {} }, 'dropped keywords');
  t.same(toOpenApi30(Type.Enum([3, 17])), { enum: [3, 17], type: 'integer' });
  t.same(toOpenApi30(Type.Array(Type.Union([Type.String(), Type.Integer(), Type.Null()]))), { type: 'array', items: { anyOf: [{ type: 'string', nullable: true }, { type: 'integer', nullable: true }] } });
  t.same(toOpenApi30(Type.Unknown()), {});
  t.same(openApiPath('/api/v1/subnets/:cidr/reservations/:mac'), { path: '/api/v1/subnets/{cidr}/reservations/{mac}', params: ['cidr', 'mac'] });
  t.same(openApiPath('/boot/*'), { path: '/boot/{wildcard}', params: ['wildcard'] });
  t.same(openApiPath('/x/:id(^\\d+)'), { path: '/x/{id}', params: ['id'] });
  const doc = buildOpenApi([{ method: 'GET', url: '/api/v1/x/:id', access: 'viewer', schema: { hide: true } }, { method: 'HEAD', url: '/api/v1/y', access: 'viewer', schema: {} }], { title: 'x', version: '1' });
  t.same(doc.paths, {}, 'hidden and HEAD routes are left out');
});

/** A DOM just large enough for the reference page's script. */
class FakeNode {
  children: FakeNode[] = [];
  className = '';
  id = '';
  hidden = false;
  open = false;
  href = '';
  value = '';
  private text = '';
  listeners: Record<string, ((e: unknown) => void)[]> = {};
  constructor(readonly tagName: string, text = '') { this.text = text; }
  get textContent(): string { return this.text + this.children.map((c) => c.textContent).join(''); }
  set textContent(v: string) { this.text = v; this.children = []; }
  appendChild(c: FakeNode): FakeNode { this.children.push(c); return c; }
  addEventListener(type: string, fn: (e: unknown) => void): void { (this.listeners[type] ??= []).push(fn); }
  fire(type: string): void { for (const fn of this.listeners[type] ?? []) fn({ key: '', preventDefault() {} }); }
  scrollIntoView(): void {}
  all(): FakeNode[] { return [this, ...this.children.flatMap((c) => c.all())]; }
}

async function runPage(fetchAnswer: { ok: boolean; status: number; body: unknown }, hash = '') {
  const ids: Record<string, FakeNode> = {};
  for (const id of ['main', 'nav', 'q', 'role', 'count', 'status', 'version']) ids[id] = new FakeNode(id === 'q' ? 'INPUT' : 'DIV');
  ids.main!.appendChild(ids.status!);
  let fetched: { url: string; init: unknown } | undefined;
  const document = {
    title: '',
    activeElement: null,
    getElementById: (id: string) => ids[id] ?? ids.main!.all().find((n) => n.id === id) ?? null,
    createElement: (tag: string) => new FakeNode(tag.toUpperCase()),
    createTextNode: (text: string) => new FakeNode('#text', text),
    addEventListener: () => undefined,
  };
  const context = createContext({
    document, location: { hash },
    fetch: (url: string, init: unknown) => {
      fetched = { url, init };
      return Promise.resolve({ ok: fetchAnswer.ok, status: fetchAnswer.status, json: () => Promise.resolve(fetchAnswer.body) });
    },
  });
  const script = /<script>([\s\S]*)<\/script>/.exec(DOCS_HTML)![1]!;
  new Script(script).runInContext(context);
  await new Promise((r) => setTimeout(r, 20));
  return { ids, document, fetched };
}

t.test('/api/docs: a self-contained page that renders the document', async (t) => {
  const f = await resourcesFixture(t, { bmc: false });
  t.equal((await f.call('GET', '/api/docs', undefined)).statusCode, 401, 'not public');
  const res = await f.call('GET', '/api/docs', f.as.viewer);
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /^text\/html/);
  t.equal(res.body, DOCS_HTML);
  t.ok(res.body.includes('/api/openapi.json'), 'it loads the document');
  t.notMatch(res.body, /https?:\/\//i, 'no absolute URL');
  t.notMatch(res.body, /(src|href)\s*=\s*["']?\/\//i, 'no protocol-relative URL');
  t.notMatch(res.body, /@import|url\(|@font-face/i, 'no external style or font');
  for (const m of res.body.matchAll(/\b(src|href|action)\s*=\s*"([^"]*)"/gi)) t.match(m[2], /^(data:|#)/, `${m[1]}="${m[2]}" stays on the page`);
  const csp = String(res.headers['content-security-policy']);
  t.equal(csp, DOCS_CSP);
  const hash = (text: string) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;
  const script = /<script>([\s\S]*)<\/script>/.exec(res.body)![1]!;
  const style = /<style>([\s\S]*)<\/style>/.exec(res.body)![1]!;
  t.ok(csp.includes(`script-src ${hash(script)}`), 'the CSP admits exactly the inline script');
  t.ok(csp.includes(`style-src ${hash(style)}`), 'and the inline style');
  t.match(csp, /default-src 'none'/);
  t.match(csp, /connect-src 'self'/);
  t.equal((res.body.match(/<script/g) ?? []).length, 1, 'one script, inline');
  t.equal(res.headers['x-content-type-options'], 'nosniff');

  // The script, run against the real document.
  const doc = (await f.call('GET', '/api/openapi.json', f.as.viewer)).json() as { paths: Record<string, Record<string, { operationId: string }>> };
  const total = Object.values(doc.paths).reduce((n, ops) => n + Object.keys(ops).length, 0);
  const page = await runPage({ ok: true, status: 200, body: doc }, '#postApiV1SubnetsCidrReservations');
  t.match(page.fetched, { url: '/api/openapi.json', init: { credentials: 'same-origin' } }, 'same origin, with the cookie');
  t.equal(page.ids.count!.textContent, `${total} of ${total} operations`);
  t.equal(page.ids.version!.textContent, 'v9.9.9');
  const main = page.ids.main!;
  const ops = main.all().filter((n) => n.tagName === 'DETAILS');
  t.equal(ops.length, total, 'one entry per operation');
  const sections = main.children.filter((n) => n.tagName === 'SECTION');
  t.ok(sections.length >= 10, `${sections.length} sections: ${sections.map((x) => x.id).join(' ')}`);
  t.ok(sections.some((s) => s.id === 'tag-subnets') && sections.some((s) => s.id === 'tag-machines'), 'grouped by tag');
  t.equal(page.ids.nav!.children.length, sections.length, 'a link per section');
  const reserve = ops.find((o) => o.id === 'postApiV1SubnetsCidrReservations')!;
  t.ok(reserve.open, 'the operation in the URL fragment is open');
  const text = reserve.textContent;
  for (const s of ['POST', '/api/v1/subnets/{cidr}/reservations', 'admin', 'Parameters', 'cidr', 'Request body', 'mac', 'hostname', 'Responses', '201', '409']) t.ok(text.includes(s), `shows ${s}`);
  // Search and the role filter hide what does not match.
  page.ids.q!.value = 'Reservations';
  page.ids.q!.fire('input');
  const visible = () => ops.filter((o) => !o.hidden).map((o) => o.id);
  const shown = visible();
  t.ok(shown.length >= 3 && shown.length < total / 4, `a few operations match (${shown.join(', ')})`);
  for (const id of ['deleteApiV1SubnetsCidrReservationsMac', 'getApiV1SubnetsCidrReservations', 'postApiV1SubnetsCidrReservations']) t.ok(shown.includes(id), `${id} matches`);
  t.ok(ops.filter((o) => !o.hidden).every((o) => o.textContent.toLowerCase().includes('reservations')), 'every match mentions it (field names count)');
  t.equal(page.ids.count!.textContent, `${shown.length} of ${total} operations`);
  t.ok(sections.filter((s) => !s.hidden).every((s) => s.id === 'tag-subnets'), 'empty sections hidden');
  page.ids.role!.value = 'admin';
  page.ids.role!.fire('change');
  t.same(visible().sort(), ['deleteApiV1SubnetsCidrReservationsMac', 'postApiV1SubnetsCidrReservations'], 'and only the admin ones');
  page.ids.q!.value = 'writeonly nomatch-xyz';
  page.ids.q!.fire('input');
  t.same(visible(), []);

  const denied = await runPage({ ok: false, status: 401, body: { code: 'AUTH_REQUIRED', message: 'log in' } });
  t.match(denied.ids.status!.textContent, /AUTH_REQUIRED: log in.*Log in/);
  t.equal(denied.ids.status!.className, 'error');
});
