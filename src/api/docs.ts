// GET /api/docs: the browsable API reference. One self-contained page served by the binary: its style and
// script are inline (no CDN, no external font, nothing fetched but /api/openapi.json, same-origin, with the
// session cookie). A Content-Security-Policy admits exactly this page's script and style (by their sha-256)
// and connections to this origin only.
//
// The page groups operations by tag and shows, for each: method, path, the role it needs
// (x-metalbox-access), summary, parameters, request body and responses with their schemas as trees, and
// a search box that filters on paths, summaries, field names and descriptions. Everything from the document
// is put on the page as text (textContent), never as HTML.
import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';

const STYLE = `
:root { color-scheme: light dark; --bg: #fff; --fg: #1b1f24; --muted: #5c6570; --line: #d8dde3; --panel: #f5f7f9; --accent: #0b5cad;
  --get: #1f7a3a; --post: #0b5cad; --put: #8a5a00; --patch: #7a3fa0; --delete: #b3261e; }
@media (prefers-color-scheme: dark) { :root { --bg: #15181c; --fg: #e4e7eb; --muted: #9aa4ae; --line: #2d333a; --panel: #1d2126; --accent: #6cb0f5;
  --get: #5cc97a; --post: #6cb0f5; --put: #e0b050; --patch: #c792ea; --delete: #f2837b; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
header { position: sticky; top: 0; z-index: 2; display: flex; gap: 12px; align-items: center; flex-wrap: wrap; padding: 10px 16px; background: var(--panel); border-bottom: 1px solid var(--line); }
header h1 { font-size: 17px; margin: 0; }
#version { color: var(--muted); }
#q { flex: 1; min-width: 220px; padding: 6px 10px; border: 1px solid var(--line); border-radius: 6px; background: var(--bg); color: var(--fg); font: inherit; }
#role { padding: 6px; border: 1px solid var(--line); border-radius: 6px; background: var(--bg); color: var(--fg); font: inherit; }
#count { color: var(--muted); }
#layout { display: flex; align-items: flex-start; }
nav { position: sticky; top: 56px; width: 210px; flex: none; max-height: calc(100vh - 56px); overflow: auto; padding: 12px 8px 12px 16px; }
nav a { display: flex; justify-content: space-between; padding: 3px 6px; border-radius: 4px; color: var(--fg); text-decoration: none; }
nav a:hover { background: var(--panel); }
nav a .n { color: var(--muted); }
main { flex: 1; min-width: 0; padding: 8px 16px 48px; }
section > h2 { font-size: 16px; margin: 18px 0 2px; text-transform: capitalize; }
section > p.tagdesc { margin: 0 0 8px; color: var(--muted); }
details.op { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; background: var(--bg); }
details.op > summary { display: flex; gap: 10px; align-items: baseline; padding: 6px 10px; cursor: pointer; list-style: none; }
details.op > summary::-webkit-details-marker { display: none; }
details.op[open] > summary { border-bottom: 1px solid var(--line); background: var(--panel); }
.method { font: 700 12px ui-monospace, SFMono-Regular, Menlo, monospace; min-width: 54px; }
.m-get { color: var(--get); } .m-post { color: var(--post); } .m-put { color: var(--put); } .m-patch { color: var(--patch); } .m-delete { color: var(--delete); }
.path { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; word-break: break-all; }
.access { font-size: 11px; padding: 1px 7px; border-radius: 9px; border: 1px solid var(--line); color: var(--muted); white-space: nowrap; }
.a-admin { border-color: var(--delete); color: var(--delete); } .a-operator { border-color: var(--put); color: var(--put); }
.a-viewer { border-color: var(--get); color: var(--get); } .a-public { border-style: dashed; }
.summary { color: var(--muted); }
.body { padding: 8px 14px 12px; }
.body h4 { margin: 12px 0 4px; font-size: 13px; }
table { border-collapse: collapse; width: 100%; }
td, th { text-align: left; vertical-align: top; padding: 4px 8px; border-bottom: 1px solid var(--line); }
th { font-weight: 600; color: var(--muted); font-size: 12px; }
code, .mono { font: 12.5px ui-monospace, SFMono-Regular, Menlo, monospace; }
ul.tree { list-style: none; margin: 2px 0; padding-left: 16px; border-left: 1px dotted var(--line); }
ul.tree > li { margin: 2px 0; }
.type { color: var(--accent); font: 12.5px ui-monospace, SFMono-Regular, Menlo, monospace; }
.req { color: var(--delete); font-size: 11px; }
.muted, .c { color: var(--muted); }
.c { font-size: 12px; }
.resp { margin: 6px 0; }
.code { font-weight: 700; margin-right: 6px; }
#status { color: var(--muted); }
#status.error { color: var(--delete); }
[hidden] { display: none !important; }
@media (max-width: 760px) { nav { display: none; } }
`;

// No template literals inside (this is one), no external URL anywhere.
const SCRIPT = String.raw`
(function () {
  'use strict';
  var main = document.getElementById('main');
  var nav = document.getElementById('nav');
  var q = document.getElementById('q');
  var role = document.getElementById('role');
  var count = document.getElementById('count');
  var statusEl = document.getElementById('status');
  var METHODS = ['get', 'post', 'put', 'patch', 'delete'];
  var ops = [];
  var sections = [];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]);
    return parent;
  }
  function resolve(doc, s) {
    var hops = 0;
    while (s && typeof s.$ref === 'string' && hops++ < 20) {
      var t = doc;
      s.$ref.replace(/^#\//, '').split('/').forEach(function (p) { t = t ? t[p.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined; });
      s = t;
    }
    return s || {};
  }
  function short(v) {
    var t = JSON.stringify(v);
    return t === undefined ? String(v) : t;
  }
  function typeText(doc, s) {
    s = resolve(doc, s);
    var t;
    if (s.enum) t = (s.enum.length === 1 ? '= ' : 'one of ') + s.enum.map(short).join(', ');
    else if (s.type === 'array') t = 'array of ' + typeText(doc, s.items || {});
    else if (s.type === 'object' && !s.properties && s.additionalProperties && typeof s.additionalProperties === 'object') t = 'map of ' + typeText(doc, s.additionalProperties);
    else if (s.type) t = s.type + (s.format ? ' (' + s.format + ')' : '');
    else if (s.anyOf || s.oneOf) t = (s.anyOf || s.oneOf).map(function (x) { return typeText(doc, x); }).join(' | ');
    else t = 'any';
    if (s.nullable) t += ' | null';
    return t;
  }
  function constraints(s) {
    var c = [];
    if (s.pattern) c.push('pattern ' + s.pattern);
    if (s.minLength !== undefined) c.push('min length ' + s.minLength);
    if (s.maxLength !== undefined) c.push('max length ' + s.maxLength);
    if (s.minimum !== undefined) c.push((s.exclusiveMinimum ? '> ' : '\u2265 ') + s.minimum);
    if (s.maximum !== undefined) c.push((s.exclusiveMaximum ? '< ' : '\u2264 ') + s.maximum);
    if (s.minItems !== undefined) c.push('min items ' + s.minItems);
    if (s.maxItems !== undefined) c.push('max items ' + s.maxItems);
    if (s.minProperties !== undefined) c.push('at least ' + s.minProperties + ' field(s)');
    if (s.additionalProperties === false) c.push('no other fields');
    if (s['default'] !== undefined) c.push('default ' + short(s['default']));
    if (s.writeOnly) c.push('write-only');
    if (s.readOnly) c.push('read-only');
    return c;
  }
  function children(doc, s) {
    s = resolve(doc, s);
    if (s.type === 'array') return children(doc, s.items || {});
    if (s.properties) return s;
    if (s.type === 'object' && s.additionalProperties && typeof s.additionalProperties === 'object') return children(doc, s.additionalProperties);
    if ((s.anyOf || s.oneOf) && (s.anyOf || s.oneOf).some(function (x) { return children(doc, x); })) return s;
    return null;
  }
  function tree(doc, s, depth) {
    s = resolve(doc, s);
    var ul = el('ul', 'tree');
    if (depth > 8) return add(ul, el('li', 'muted', '\u2026'));
    if (s.properties) {
      var required = s.required || [];
      Object.keys(s.properties).forEach(function (name) {
        var p = resolve(doc, s.properties[name]);
        var li = el('li');
        add(li, el('code', null, name), document.createTextNode(' '), el('span', 'type', typeText(doc, p)));
        if (required.indexOf(name) >= 0) add(li, document.createTextNode(' '), el('span', 'req', 'required'));
        var c = constraints(p);
        if (c.length) add(li, document.createTextNode(' '), el('span', 'c', '(' + c.join('; ') + ')'));
        if (p.description) add(li, el('div', 'muted', p.description));
        var sub = children(doc, p);
        if (sub) li.appendChild(tree(doc, sub, depth + 1));
        ul.appendChild(li);
      });
    } else if (s.anyOf || s.oneOf) {
      (s.anyOf || s.oneOf).forEach(function (alt, i) {
        var li = el('li');
        add(li, el('span', 'muted', (i === 0 ? 'either ' : 'or ')), el('span', 'type', typeText(doc, alt)));
        var sub = children(doc, alt);
        if (sub) li.appendChild(tree(doc, sub, depth + 1));
        ul.appendChild(li);
      });
    }
    return ul;
  }
  function schemaBlock(doc, s) {
    s = resolve(doc, s);
    var div = el('div');
    var line = add(el('div'), el('span', 'type', typeText(doc, s)));
    var c = constraints(s);
    if (c.length) add(line, document.createTextNode(' '), el('span', 'c', '(' + c.join('; ') + ')'));
    div.appendChild(line);
    if (s.description) div.appendChild(el('div', 'muted', s.description));
    var sub = children(doc, s);
    if (sub) div.appendChild(tree(doc, sub, 0));
    return div;
  }
  function words(doc, s, out, depth) {
    s = resolve(doc, s);
    if (depth > 8 || !s) return;
    if (s.description) out.push(s.description);
    if (s.properties) Object.keys(s.properties).forEach(function (k) { out.push(k); words(doc, s.properties[k], out, depth + 1); });
    if (s.items) words(doc, s.items, out, depth + 1);
    (s.anyOf || s.oneOf || []).forEach(function (x) { words(doc, x, out, depth + 1); });
    if (s.additionalProperties && typeof s.additionalProperties === 'object') words(doc, s.additionalProperties, out, depth + 1);
  }
  function jsonSchemaOf(content) {
    if (!content) return null;
    var k = Object.keys(content)[0];
    return k ? { type: k, schema: content[k].schema } : null;
  }
  function operation(doc, path, method, op, tag) {
    var access = op['x-metalbox-access'] || 'admin';
    var d = el('details', 'op');
    if (op.operationId) d.id = op.operationId;
    var sum = el('summary');
    add(sum, el('span', 'method m-' + method, method.toUpperCase()), el('span', 'path', path), el('span', 'access a-' + access, access), el('span', 'summary', op.summary || ''));
    d.appendChild(sum);
    var body = el('div', 'body');
    if (op.description) body.appendChild(el('p', null, op.description));
    body.appendChild(el('p', 'muted', access === 'public' ? 'No credentials needed.' : 'Needs the ' + access + ' role or above (viewer < operator < admin): a bearer API token or the session cookie (with X-CSRF-Token on changes).'));
    var search = [method, path, tag, op.summary || '', op.description || '', access];
    var params = (op.parameters || []).map(function (p) { return resolve(doc, p); });
    if (params.length) {
      body.appendChild(el('h4', null, 'Parameters'));
      var table = el('table');
      add(table, add(el('tr'), el('th', null, 'name'), el('th', null, 'in'), el('th', null, 'type'), el('th', null, 'description')));
      params.forEach(function (p) {
        search.push(p.name, p.description || '');
        var s = resolve(doc, p.schema || {});
        var c = constraints(s);
        var desc = el('td');
        add(desc, p.description ? el('div', null, p.description) : null, c.length ? el('div', 'c', c.join('; ')) : null);
        add(table, add(el('tr'), add(el('td'), el('code', null, p.name), p.required ? el('span', 'req', ' required') : null), el('td', 'muted', p['in']), el('td', 'type', typeText(doc, s)), desc));
      });
      body.appendChild(table);
    }
    if (op.requestBody) {
      var rb = resolve(doc, op.requestBody);
      var js = jsonSchemaOf(rb.content);
      body.appendChild(el('h4', null, 'Request body' + (js ? ' (' + js.type + ')' : '') + (rb.required ? '' : ', optional')));
      if (js && js.schema) { body.appendChild(schemaBlock(doc, js.schema)); words(doc, js.schema, search, 0); }
    }
    body.appendChild(el('h4', null, 'Responses'));
    Object.keys(op.responses || {}).forEach(function (code) {
      var r = resolve(doc, op.responses[code]);
      var div = el('div', 'resp');
      add(div, el('span', 'code mono', code), el('span', null, r.description || ''));
      var js = jsonSchemaOf(r.content);
      if (js && js.schema) div.appendChild(schemaBlock(doc, js.schema));
      else if (js) div.appendChild(el('div', 'c', js.type));
      if (js && js.schema && code.charAt(0) === '2') words(doc, js.schema, search, 0);
      body.appendChild(div);
    });
    d.appendChild(body);
    ops.push({ el: d, text: search.join(' ').toLowerCase(), access: access, tag: tag });
    return d;
  }
  function build(doc) {
    document.getElementById('version').textContent = (doc.info && doc.info.version) ? 'v' + doc.info.version : '';
    document.title = (doc.info && doc.info.title ? doc.info.title : 'API') + ' reference';
    var byTag = {};
    var tagList = (doc.tags || []).map(function (t) { return t.name; });
    Object.keys(doc.paths || {}).forEach(function (path) {
      METHODS.forEach(function (m) {
        var op = doc.paths[path][m];
        if (!op) return;
        var tag = (op.tags && op.tags[0]) || 'other';
        if (tagList.indexOf(tag) < 0) tagList.push(tag);
        (byTag[tag] = byTag[tag] || []).push([path, m, op]);
      });
    });
    main.textContent = '';
    nav.textContent = '';
    tagList.forEach(function (tag) {
      var list = byTag[tag];
      if (!list) return;
      var sec = el('section');
      sec.id = 'tag-' + tag;
      sec.appendChild(el('h2', null, tag));
      var info = (doc.tags || []).filter(function (t) { return t.name === tag; })[0];
      if (info && info.description) sec.appendChild(el('p', 'tagdesc', info.description));
      list.forEach(function (x) { sec.appendChild(operation(doc, x[0], x[1], x[2], tag)); });
      main.appendChild(sec);
      var a = el('a');
      a.href = '#tag-' + tag;
      var n = el('span', 'n', String(list.length));
      add(a, el('span', null, tag), n);
      nav.appendChild(a);
      sections.push({ tag: tag, el: sec, link: a, n: n });
    });
    filter();
    if (location.hash.length > 1) {
      var target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
      if (target) { if (target.tagName === 'DETAILS') target.open = true; target.scrollIntoView(); }
    }
  }
  function filter() {
    var tokens = q.value.toLowerCase().split(/\s+/).filter(Boolean);
    var r = role.value;
    var shown = 0;
    var perTag = {};
    ops.forEach(function (o) {
      var ok = (!r || o.access === r) && tokens.every(function (t) { return o.text.indexOf(t) >= 0; });
      o.el.hidden = !ok;
      if (ok) { shown++; perTag[o.tag] = (perTag[o.tag] || 0) + 1; }
    });
    sections.forEach(function (s) {
      var n = perTag[s.tag] || 0;
      s.el.hidden = n === 0;
      s.link.hidden = n === 0;
      s.n.textContent = String(n);
    });
    count.textContent = shown + ' of ' + ops.length + ' operations';
  }
  q.addEventListener('input', filter);
  role.addEventListener('change', filter);
  document.addEventListener('keydown', function (e) {
    if (e.key === '/' && document.activeElement !== q) { e.preventDefault(); q.focus(); }
  });
  fetch('/api/openapi.json', { credentials: 'same-origin', headers: { accept: 'application/json' } })
    .then(function (res) {
      return res.json().then(function (body) { return { ok: res.ok, status: res.status, body: body }; }, function () { return { ok: false, status: res.status, body: null }; });
    })
    .then(function (r) {
      if (r.ok) { build(r.body); return; }
      var why = r.body && r.body.code ? r.body.code + ': ' + r.body.message : 'HTTP ' + r.status;
      statusEl.className = 'error';
      statusEl.textContent = 'The API document could not be loaded (' + why + ').' + (r.status === 401 ? ' Log in to the console first.' : '');
    }, function (err) {
      statusEl.className = 'error';
      statusEl.textContent = 'The API document could not be loaded: ' + err;
    });
})();
`;

/** The whole page. */
export const DOCS_HTML = '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
  + '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
  + '<link rel="icon" href="data:,">\n<title>metalbox API reference</title>\n'
  + `<style>${STYLE}</style>\n</head>\n<body>\n`
  + '<header><h1>metalbox API</h1><span id="version"></span>'
  + '<input id="q" type="search" placeholder="Search paths, fields, descriptions (press /)" aria-label="Search" autocomplete="off">'
  + '<select id="role" aria-label="Access level"><option value="">any role</option><option value="public">public</option>'
  + '<option value="viewer">viewer</option><option value="operator">operator</option><option value="admin">admin</option></select>'
  + '<span id="count"></span></header>\n'
  + '<div id="layout"><nav id="nav" aria-label="Sections"></nav><main id="main"><p id="status">Loading /api/openapi.json\u2026</p></main></div>\n'
  + `<script>${SCRIPT}</script>\n</body>\n</html>\n`;

const sha256 = (text: string) => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

/** Only this page's own script and style run; it may talk to this origin only (CSP Level 3 hash sources). */
export const DOCS_CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export function docsRoute(app: FastifyInstance): void {
  app.get('/api/docs', {
    config: { access: 'viewer' },
    schema: { summary: 'The browsable API reference (HTML)', tags: ['reference'], produces: ['text/html'] },
  }, async (_req, reply) => reply
    .type('text/html; charset=utf-8')
    .header('content-security-policy', DOCS_CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('cache-control', 'no-cache')
    .send(DOCS_HTML));
}
