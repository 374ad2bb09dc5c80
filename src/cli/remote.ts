// `metalbox <resource> <verb>` over the REST API: what operators and their scripts run from a laptop (after
// `metalbox login`) or on the appliance. Human tables by default, `--json` for scripts (the API's JSON as it
// came). Exit codes (api-client.ts EXIT): 0 ok, 1 failure (server error, unreachable), 2 usage, 3 not
// authenticated or not allowed, 4 not found, 5 conflict (taken, or a lifecycle transition the state forbids),
// 6 other refusals (bad input).
import { createInterface } from 'node:readline';
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Config } from '../config/schema.ts';
import { MetalboxError } from '../lib/errors.ts';
import {
  apiRequest, EXIT, exitCodeOf, fetchCertificate, loginFile, normalizeFingerprint, readLogin, resolveTarget, writeLogin,
  type ApiAnswer, type Target,
} from './api-client.ts';
import type { CliIo } from './commands.ts';
import { rm } from 'node:fs/promises';

/**
 * `images` and `users` also exist as local commands (the appliance's own store or control socket); they go over
 * the API when a remote metalbox is named: --url, METALBOX_URL, or a saved login.
 */
export function wantsRemote(argv: string[], env: NodeJS.ProcessEnv): boolean {
  if (argv[0] !== 'images' && argv[0] !== 'users') return false;
  if (argv.some((a) => a === '--url' || a.startsWith('--url='))) return true;
  if (env.METALBOX_URL) return true;
  return existsSync(loginFile(env));
}

/** Commands that always go over the API. */
export const REMOTE_COMMANDS = ['login', 'logout', 'machines', 'events', 'tokens', 'leases', 'subnets', 'dns', 'bmcs', 'completion'] as const;

const MACHINE_ACTIONS = ['commission', 'allocate', 'deploy', 'release', 'rescue', 'exit-rescue', 'abort', 'mark-broken', 'mark-fixed'] as const;

const OPTIONS = {
  url: { type: 'string' },
  token: { type: 'string' },
  fingerprint: { type: 'string' },
  json: { type: 'boolean' },
  config: { type: 'string', short: 'c' },
  user: { type: 'string' },
  'password-file': { type: 'string' },
  name: { type: 'string' },
  role: { type: 'string' },
  'expires-days': { type: 'string' },
  state: { type: 'string' },
  tag: { type: 'string', multiple: true },
  mac: { type: 'string' },
  hostname: { type: 'string' },
  sort: { type: 'string' },
  order: { type: 'string' },
  limit: { type: 'string' },
  cursor: { type: 'string' },
  fields: { type: 'string' },
  all: { type: 'boolean' },
  reason: { type: 'string' },
  image: { type: 'string' },
  disk: { type: 'string' },
  'ssh-key-file': { type: 'string', multiple: true },
  erase: { type: 'string' },
  persistent: { type: 'boolean' },
  efi: { type: 'boolean' },
  machine: { type: 'string' },
  subnet: { type: 'string' },
  follow: { type: 'boolean', short: 'f' },
  yes: { type: 'boolean', short: 'y' },
  type: { type: 'string' },
  value: { type: 'string' },
  ttl: { type: 'string' },
  priority: { type: 'string' },
  weight: { type: 'string' },
  port: { type: 'string' },
  target: { type: 'string' },
  zone: { type: 'string' },
  kernel: { type: 'string' },
  initrd: { type: 'string' },
  rootfs: { type: 'string' },
  cmdline: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const REMOTE_USAGE = `metalbox login --url https://HOST:5443 --user NAME [--password-file FILE|-] [--fingerprint SHA256] [--yes]
metalbox logout
metalbox machines list [--state S] [--tag T] [--mac M] [--hostname H] [--sort F] [--order asc|desc] [--limit N] [--all]
metalbox machines show ID | create --mac MAC [--hostname H] [--tag T] | update ID [--hostname H] [--tag T] | delete ID
metalbox machines ${MACHINE_ACTIONS.join('|')} ID [--reason TEXT]
    deploy: [--image NAME] [--disk auto|/dev/X|SERIAL] [--ssh-key-file FILE ...]; rescue: [--ssh-key-file FILE ...];
    release: [--erase none|quick|full]
metalbox machines power ID on|off|soft-off|cycle|reset|status | bootdev ID pxe|disk [--persistent] [--efi]
metalbox machines events ID | timeline ID
metalbox events [--follow]                           the live event stream (state changes, leases, BMC actions)
metalbox tokens list | create --name N [--role R] [--expires-days D] | revoke ID
metalbox leases list [--subnet CIDR] [--mac M] | subnets list | bmcs list
metalbox dns list [--name N] [--type T] [--zone Z] [--limit N] [--all] | zones | show ID | remove ID
metalbox dns add NAME A|AAAA|CNAME|NS|TXT VALUE [--ttl S] | add NAME MX --priority P --target HOST [--ttl S]
    | add NAME SRV --priority P --weight W --port N --target HOST|. [--ttl S]
metalbox dns edit ID [--name N] [--type T] [--value V] [--ttl S|none] [--priority P] [--weight W] [--port N] [--target HOST]
metalbox images list | add NAME --kernel URL --initrd URL [--rootfs URL] [--cmdline ARGS] | remove NAME   (with --url or a login)
metalbox users list | create NAME --role R [--password-file FILE|-] | delete NAME                      (with --url or a login)
metalbox completion bash                             a bash completion script (source it, or put it in /etc/bash_completion.d)
  common: --url URL --token TOKEN --fingerprint SHA256 (else METALBOX_URL, METALBOX_TOKEN, METALBOX_FINGERPRINT,
  else the file metalbox login wrote), --json for the API's JSON
`;

type Values = ReturnType<typeof parse>['values'];

function parse(argv: string[]) {
  return parseArgs({ args: argv, allowPositionals: true, strict: true, options: OPTIONS });
}

/** Runs one API command; returns the exit code. `localConfig` is the config when the CLI runs on the appliance. */
export async function runRemote(argv: string[], env: NodeJS.ProcessEnv, io: CliIo, loadLocal: (file?: string) => Config | undefined, stdinIsTty = process.stdin.isTTY === true): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (err) {
    io.err(`metalbox: CLI_USAGE: ${(err as Error).message}\n`);
    return EXIT.usage;
  }
  const { values: v, positionals } = parsed;
  const [command, verb, ...rest] = positionals;
  if (v.help) { io.out(REMOTE_USAGE); return EXIT.ok; }
  try {
    if (command === 'completion') return completion(verb, io);
    if (command === 'login') return await login(v, env, io, stdinIsTty);
    const target = resolveTarget({ url: v.url, token: v.token, fingerprint: v.fingerprint }, env, loadLocal(v.config));
    if (command === 'logout') return await logout(target, env, io);
    if (!target.token) throw new MetalboxError('CLI_USAGE', 'no API token: run metalbox login, or give --token (or METALBOX_TOKEN)');
    const call = (method: string, path: string, body?: unknown) => apiRequest(target, method, path, body === undefined ? {} : { body });
    switch (command) {
      case 'machines': return await machines(call, verb, rest, v, io);
      case 'events': return await events(target, v, io);
      case 'tokens': return await tokens(call, verb, rest, v, io);
      case 'leases': return show(await call('GET', `/api/v1/leases${query({ subnet: v.subnet, mac: v.mac, limit: v.limit })}`), v, io, LEASE_COLUMNS);
      case 'subnets': return show(await call('GET', '/api/v1/subnets'), v, io, SUBNET_COLUMNS);
      case 'dns': return await dns(call, verb, rest, v, io);
      case 'bmcs': return show(await call('GET', '/api/v1/bmcs'), v, io, BMC_COLUMNS);
      case 'images': return await images(call, verb, rest, v, io);
      case 'users': return await users(call, verb, rest, v, env, io);
      default: throw new MetalboxError('CLI_USAGE', `unknown command "${command}"`);
    }
  } catch (err) {
    if (!(err instanceof MetalboxError)) throw err;
    io.err(`metalbox: ${err.code}: ${err.message}\n`);
    return err.code === 'CLI_USAGE' ? EXIT.usage : err.code === 'TLS_UNUSABLE' ? EXIT.auth : EXIT.failure;
  }
}

type Call = (method: string, path: string, body?: unknown) => Promise<ApiAnswer>;

function query(params: Record<string, string | string[] | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, val] of Object.entries(params)) {
    if (val === undefined) continue;
    q.set(k, Array.isArray(val) ? val.join(',') : val);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

function need(value: string | undefined, what: string): string {
  if (value === undefined || value === '') throw new MetalboxError('CLI_USAGE', `missing ${what} (metalbox --help)`);
  return value;
}

async function machines(call: Call, verb: string | undefined, rest: string[], v: Values, io: CliIo): Promise<number> {
  const id = () => encodeURIComponent(need(rest[0], 'the machine id'));
  switch (verb) {
    case 'list': case undefined: {
      const base = { state: v.state, tag: v.tag, mac: v.mac, hostname: v.hostname, sort: v.sort, order: v.order, limit: v.limit, fields: v.fields };
      if (!v.all) return show(await call('GET', `/api/v1/machines${query({ ...base, cursor: v.cursor })}`), v, io, MACHINE_COLUMNS, 'items');
      // --all: follow the cursor through every page.
      const items: unknown[] = [];
      let cursor: string | undefined;
      for (;;) {
        const page = await call('GET', `/api/v1/machines${query({ ...base, cursor })}`);
        if (page.status !== 200) return show(page, v, io);
        const body = page.body as { items: unknown[]; next: string | null };
        items.push(...body.items);
        if (!body.next) break;
        cursor = body.next;
      }
      return show({ status: 200, headers: {}, body: { items, total: items.length, next: null } }, v, io, MACHINE_COLUMNS, 'items');
    }
    case 'show': return show(await call('GET', `/api/v1/machines/${id()}`), v, io, undefined);
    case 'create': return show(await call('POST', '/api/v1/machines', { mac: need(v.mac, '--mac'), ...(v.hostname ? { hostname: v.hostname } : {}), ...(v.tag ? { tags: v.tag } : {}) }), v, io);
    case 'update': return show(await call('PATCH', `/api/v1/machines/${id()}`, { ...(v.hostname ? { hostname: v.hostname } : {}), ...(v.tag ? { tags: v.tag } : {}) }), v, io);
    case 'delete': return show(await call('DELETE', `/api/v1/machines/${id()}`), v, io);
    case 'power': {
      const action = need(rest[1], 'the power action (on, off, soft-off, cycle, reset, status)');
      if (action === 'status') return show(await call('GET', `/api/v1/machines/${id()}/power`), v, io);
      return show(await call('POST', `/api/v1/machines/${id()}/power`, { action }), v, io);
    }
    case 'bootdev': return show(await call('PUT', `/api/v1/machines/${id()}/boot-device`, { device: need(rest[1], 'pxe or disk'), ...(v.persistent ? { persistent: true } : {}), ...(v.efi ? { efi: true } : {}) }), v, io);
    case 'events': return show(await call('GET', `/api/v1/machines/${id()}/events`), v, io, EVENT_COLUMNS, 'items');
    case 'timeline': return show(await call('GET', `/api/v1/machines/${id()}/timeline`), v, io, EVENT_COLUMNS, 'items');
    default:
      if ((MACHINE_ACTIONS as readonly string[]).includes(verb)) {
        return show(await call('POST', `/api/v1/machines/${id()}/actions/${verb}`, actionBody(verb, v)), v, io);
      }
      throw new MetalboxError('CLI_USAGE', `machines ${verb}: unknown verb`);
  }
}

/** An integer option of the dns commands (priority, weight, port, ttl); undefined when not given. */
function intOption(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,10}$/.test(value)) throw new MetalboxError('CLI_USAGE', `--${flag} takes a whole number, not "${value}"`);
  return Number(value);
}

/** The record fields the dns add/edit flags give (the API checks them and names what is wrong). */
function dnsFields(v: Values): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of ['priority', 'weight', 'port'] as const) {
    const n = intOption(v[f], f);
    if (n !== undefined) out[f] = n;
  }
  if (v.target !== undefined) out.target = v.target;
  if (v.ttl !== undefined) out.ttl = v.ttl === 'none' ? null : intOption(v.ttl, 'ttl');
  return out;
}

async function dns(call: Call, verb: string | undefined, rest: string[], v: Values, io: CliIo): Promise<number> {
  const id = () => encodeURIComponent(need(rest[0], 'the record id (metalbox dns list shows it)'));
  switch (verb) {
    case 'list': case undefined: {
      const base = { name: v.name, type: v.type?.toUpperCase(), zone: v.zone, limit: v.limit };
      if (!v.all) return show(await call('GET', `/api/v1/dns/records${query({ ...base, cursor: v.cursor })}`), v, io, DNS_COLUMNS, 'items');
      const items: unknown[] = [];
      let cursor: string | undefined;
      for (;;) {
        const page = await call('GET', `/api/v1/dns/records${query({ ...base, cursor })}`);
        if (page.status !== 200) return show(page, v, io);
        const body = page.body as { items: unknown[]; next: string | null };
        items.push(...body.items);
        if (!body.next) break;
        cursor = body.next;
      }
      return show({ status: 200, headers: {}, body: { items, total: items.length, next: null } }, v, io, DNS_COLUMNS, 'items');
    }
    case 'zones': return show(await call('GET', '/api/v1/dns/zones'), v, io);
    case 'show': return show(await call('GET', `/api/v1/dns/records/${id()}`), v, io);
    case 'remove': return show(await call('DELETE', `/api/v1/dns/records/${id()}`), v, io);
    case 'add': {
      const name = need(rest[0], 'the record name (fully qualified, in the domain or a reverse zone)');
      const type = need(rest[1] ?? v.type, 'the record type (A, AAAA, CNAME, NS, TXT, MX, SRV)').toUpperCase();
      const value = rest.length > 2 ? rest.slice(2).join(' ') : v.value;
      return show(await call('POST', '/api/v1/dns/records', { name, type, ...(value !== undefined ? { value } : {}), ...dnsFields(v) }), v, io);
    }
    case 'edit': {
      const patch: Record<string, unknown> = { ...dnsFields(v) };
      if (v.name !== undefined) patch.name = v.name;
      if (v.type !== undefined) patch.type = v.type.toUpperCase();
      if (v.value !== undefined) patch.value = v.value;
      if (Object.keys(patch).length === 0) throw new MetalboxError('CLI_USAGE', 'dns edit: nothing to change (--name, --type, --value, --ttl, --priority, --weight, --port, --target)');
      return show(await call('PATCH', `/api/v1/dns/records/${id()}`, patch), v, io);
    }
    default: throw new MetalboxError('CLI_USAGE', `dns ${verb}: unknown verb`);
  }
}

async function images(call: Call, verb: string | undefined, rest: string[], v: Values, io: CliIo): Promise<number> {
  switch (verb) {
    case 'list': case undefined: return show(await call('GET', '/api/v1/images'), v, io, IMAGE_COLUMNS, 'images');
    case 'remove': return show(await call('DELETE', `/api/v1/images/${encodeURIComponent(need(rest[0], 'the image name'))}`), v, io);
    case 'add': {
      // Over the API images come from URLs the appliance downloads (a job); local files: metalbox images add on the box.
      const body = { name: need(rest[0], 'the image name'), kernel: need(v.kernel, '--kernel URL'), initrd: need(v.initrd, '--initrd URL'), ...(v.rootfs ? { rootfs: v.rootfs } : {}), ...(v.cmdline ? { cmdline: v.cmdline } : {}) };
      const started = await call('POST', '/api/v1/images', body);
      if (started.status !== 202) return show(started, v, io);
      const job = (started.body as { id: string }).id;
      for (;;) {
        await new Promise((r) => setTimeout(r, 500));
        const state = await call('GET', `/api/v1/jobs/${encodeURIComponent(job)}`);
        const b = state.body as { state?: string; error?: { code: string; message: string } };
        if (state.status !== 200 || (b.state !== 'running' && b.state !== 'queued')) {
          if (b.error) { io.err(`metalbox: ${b.error.code}: ${b.error.message}\n`); return EXIT.failure; }
          return show(state, v, io);
        }
      }
    }
    default: throw new MetalboxError('CLI_USAGE', `images ${verb}: unknown verb`);
  }
}

async function users(call: Call, verb: string | undefined, rest: string[], v: Values, env: NodeJS.ProcessEnv, io: CliIo): Promise<number> {
  switch (verb) {
    case 'list': case undefined: return show(await call('GET', '/api/v1/users'), v, io, USER_COLUMNS, 'users');
    case 'delete': return show(await call('DELETE', `/api/v1/users/${encodeURIComponent(need(rest[0], 'the user name'))}`), v, io);
    case 'create': {
      const password = v['password-file'] !== undefined ? readSecret(v['password-file']) : env.METALBOX_PASSWORD;
      if (!password) throw new MetalboxError('CLI_USAGE', 'the new user\'s password: --password-file FILE|- or METALBOX_PASSWORD');
      return show(await call('POST', '/api/v1/users', { username: need(rest[0], 'the user name'), role: need(v.role, '--role admin|operator|viewer'), password }), v, io);
    }
    default: throw new MetalboxError('CLI_USAGE', `users ${verb}: unknown verb`);
  }
}

async function tokens(call: Call, verb: string | undefined, rest: string[], v: Values, io: CliIo): Promise<number> {
  switch (verb) {
    case 'list': case undefined: return show(await call('GET', '/api/v1/tokens'), v, io, TOKEN_COLUMNS, 'tokens');
    case 'revoke': return show(await call('DELETE', `/api/v1/tokens/${encodeURIComponent(need(rest[0], 'the token id'))}`), v, io);
    case 'create':
      // Tokens are made from a login session (a token cannot mint tokens): metalbox login does that.
      throw new MetalboxError('CLI_USAGE', 'tokens are made at login: metalbox login --url URL --user NAME [--name N] [--role R] [--expires-days D]');
    default: throw new MetalboxError('CLI_USAGE', `tokens ${verb}: unknown verb`);
  }
}

async function events(target: Target, v: Values, io: CliIo): Promise<number> {
  if (!v.follow) throw new MetalboxError('CLI_USAGE', 'events needs --follow (per machine: metalbox machines events ID)');
  // Server-sent events: print each event as it comes, until interrupted.
  const { request } = await import('node:https');
  const { request: plain } = await import('node:http');
  const u = new URL('/api/v1/events/stream', target.url);
  return new Promise((resolve) => {
    const req = (u.protocol === 'https:' ? request : plain)(u, {
      headers: { accept: 'text/event-stream', authorization: `Bearer ${target.token}` },
      ...(target.fingerprint ? { rejectUnauthorized: false, checkServerIdentity: (_h: string, c: { fingerprint256: string }) => (c.fingerprint256 === target.fingerprint ? undefined : new Error(`certificate ${c.fingerprint256} is not the pinned one`)) } : {}),
    }, (res) => {
      if (res.statusCode !== 200) {
        io.err(`metalbox: the event stream answered ${res.statusCode}\n`);
        res.resume();
        resolve(exitCodeOf(res.statusCode ?? 500));
        return;
      }
      let buf = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        buf += d;
        for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = frame.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
          if (!data) continue;
          if (v.json) { io.out(`${data}\n`); continue; }
          try {
            const e = JSON.parse(data) as Record<string, unknown>;
            io.out(`${String(e.at ?? '')}  ${String(e.type ?? '')}  ${String(e.subject ?? '')}  ${String(e.actor ?? '')}  ${e.data ? JSON.stringify(e.data) : ''}\n`);
          } catch { io.out(`${data}\n`); }
        }
      }).on('end', () => resolve(EXIT.ok));
    });
    req.on('error', (err) => { io.err(`metalbox: CONTROL_UNAVAILABLE: ${err.message}\n`); resolve(EXIT.failure); });
    req.end();
  });
}

async function login(v: Values, env: NodeJS.ProcessEnv, io: CliIo, stdinIsTty: boolean): Promise<number> {
  const url = need(v.url ?? (env.METALBOX_URL || undefined), '--url https://HOST:PORT');
  const username = need(v.user, '--user NAME');
  const target: Target = { url: new URL(url).origin, source: '--url' };
  if (target.url.startsWith('https:')) {
    const seen = await fetchCertificate(target.url);
    const given = v.fingerprint ?? (env.METALBOX_FINGERPRINT || undefined);
    if (given !== undefined) {
      if (normalizeFingerprint(given) !== seen.fingerprint) {
        io.err(`metalbox: TLS_UNUSABLE: ${target.url} presents certificate ${seen.fingerprint}, not ${normalizeFingerprint(given)}\n`);
        return EXIT.auth;
      }
    } else {
      // Trust on first use: show what the server presents; the operator compares it with `metalbox status` on the box.
      io.err(`${target.url} presents a certificate with SHA-256 fingerprint\n  ${seen.fingerprint}\n  (${seen.subject}, valid until ${seen.validTo})\n`);
      if (!v.yes) {
        if (!stdinIsTty) throw new MetalboxError('CLI_USAGE', 'not a terminal: give --fingerprint (from metalbox status on the appliance) or --yes to accept the one shown');
        if (!/^y(es)?$/i.test(await ask(io, 'Trust it? [y/N] '))) { io.err('not trusted; nothing saved\n'); return EXIT.auth; }
      }
    }
    target.fingerprint = seen.fingerprint;
  }
  const password = v['password-file'] !== undefined ? readSecret(v['password-file']) : env.METALBOX_PASSWORD ?? (stdinIsTty ? await ask(io, `password for ${username}: `) : undefined);
  if (!password) throw new MetalboxError('CLI_USAGE', 'no password: --password-file FILE|-, METALBOX_PASSWORD, or a terminal to ask on');
  const session = await apiRequest(target, 'POST', '/api/v1/login', { body: { username, password }, noToken: true });
  if (session.status !== 200) return fail(session, io);
  const cookie = String(session.headers['set-cookie']?.[0] ?? '').split(';')[0]!;
  const csrf = (session.body as { csrfToken?: string }).csrfToken ?? '';
  const made = await apiRequest(target, 'POST', '/api/v1/tokens', {
    noToken: true,
    headers: { cookie, 'x-csrf-token': csrf },
    body: { name: v.name ?? `cli@${(await import('node:os')).hostname()}`, ...(v.role ? { role: v.role } : {}), ...(v['expires-days'] ? { expiresInDays: Number(v['expires-days']) } : {}) },
  });
  await apiRequest(target, 'POST', '/api/v1/logout', { noToken: true, headers: { cookie, 'x-csrf-token': csrf } }).catch(() => undefined);
  if (made.status !== 200 && made.status !== 201) return fail(made, io);
  const body = made.body as { token: string; id?: string; role?: string; expiresAt?: string };
  const file = await writeLogin(env, { url: target.url, token: body.token, ...(body.id ? { tokenId: body.id } : {}), ...(target.fingerprint ? { fingerprint: target.fingerprint } : {}), user: username });
  io.err(`logged in to ${target.url} as ${username}${body.role ? ` (${body.role})` : ''}; token ${body.id ?? ''} saved in ${file}${body.expiresAt ? `, valid until ${body.expiresAt}` : ''}\n`);
  return EXIT.ok;
}

async function logout(target: Target, env: NodeJS.ProcessEnv, io: CliIo): Promise<number> {
  const saved = readLogin(env);
  if (!saved) { io.err('not logged in\n'); return EXIT.ok; }
  if (saved.tokenId) {
    const res = await apiRequest({ ...target, token: saved.token }, 'DELETE', `/api/v1/tokens/${encodeURIComponent(saved.tokenId)}`).catch(() => undefined);
    if (res && res.status >= 400 && res.status !== 401 && res.status !== 404) io.err(`metalbox: the server did not revoke the token (${res.status})\n`);
  }
  await rm(loginFile(env), { force: true });
  io.err(`logged out of ${saved.url}\n`);
  return EXIT.ok;
}

function readSecret(file: string): string {
  const text = readFileSync(file === '-' ? 0 : file, 'utf8');
  return text.replace(/\r?\n$/, '');
}

function ask(io: CliIo, prompt: string): Promise<string> {
  io.err(prompt);
  const rl = createInterface({ input: process.stdin, terminal: false });
  return new Promise((resolve) => rl.once('line', (line) => { rl.close(); resolve(line.trim()); }));
}

// --- output -------------------------------------------------------------------------------------------------

type Column = [header: string, pick: (row: Record<string, unknown>) => unknown];

const MACHINE_COLUMNS: Column[] = [['ID', (r) => r.id], ['HOSTNAME', (r) => r.hostname], ['STATE', (r) => r.state], ['MACS', (r) => (r.macs as string[] | undefined)?.join(',')], ['TAGS', (r) => (r.tags as string[] | undefined)?.join(',')], ['UPDATED', (r) => r.updatedAt]];
const EVENT_COLUMNS: Column[] = [['AT', (r) => r.at], ['TYPE', (r) => r.type], ['ACTOR', (r) => r.actor], ['DATA', (r) => (r.data ? JSON.stringify(r.data) : '')]];
const TOKEN_COLUMNS: Column[] = [['ID', (r) => r.id], ['NAME', (r) => r.name], ['ROLE', (r) => r.role], ['OWNER', (r) => r.owner ?? r.username], ['EXPIRES', (r) => r.expiresAt], ['LAST USED', (r) => r.lastUsedAt]];
const LEASE_COLUMNS: Column[] = [['IP', (r) => r.ip], ['MAC', (r) => r.mac], ['STATE', (r) => r.state], ['HOSTNAME', (r) => r.hostname], ['SUBNET', (r) => r.subnet], ['EXPIRES', (r) => r.expiresAt]];
const SUBNET_COLUMNS: Column[] = [['CIDR', (r) => r.cidr], ['GATEWAY', (r) => r.gateway], ['RANGES', (r) => (r.dynamicRanges as string[] | undefined)?.join(',')], ['PROXY', (r) => r.proxyDhcp]];
const DNS_COLUMNS: Column[] = [['ID', (r) => r.id], ['NAME', (r) => r.name], ['TYPE', (r) => r.type], ['VALUE', (r) => r.value], ['TTL', (r) => r.ttl]];
const IMAGE_COLUMNS: Column[] = [['NAME', (r) => r.name], ['KERNEL', (r) => (r.kernel as { size?: number } | undefined)?.size], ['INITRD', (r) => (r.initrd as { size?: number } | undefined)?.size], ['ROOTFS', (r) => (r.rootfs as { size?: number } | undefined)?.size], ['ADDED', (r) => r.createdAt]];
const USER_COLUMNS: Column[] = [['NAME', (r) => r.username], ['ROLE', (r) => r.role], ['CREATED', (r) => r.createdAt], ['LAST LOGIN', (r) => r.lastLoginAt]];
const BMC_COLUMNS: Column[] = [['ID', (r) => r.id], ['MACHINE', (r) => r.machineId], ['DRIVER', (r) => r.driver], ['ADDRESS', (r) => r.address], ['POWER', (r) => r.lastPowerState], ['LAST ERROR', (r) => (r.lastError as { code?: string } | undefined)?.code]];

function fail(res: ApiAnswer, io: CliIo): number {
  const b = res.body as { code?: string; message?: string } | string;
  if (typeof b === 'object' && b !== null && b.code) io.err(`metalbox: ${b.code}: ${b.message ?? ''}\n`);
  else io.err(`metalbox: HTTP ${res.status}: ${typeof b === 'string' ? b.slice(0, 500) : JSON.stringify(b)}\n`);
  return exitCodeOf(res.status);
}

/** Prints an answer: JSON as it came with --json, else a table (rows from `listKey` or a top-level array) or key: value lines. */
function show(res: ApiAnswer, v: Values, io: CliIo, columns?: Column[], listKey?: string): number {
  if (res.status >= 400) return fail(res, io);
  if (v.json) { io.out(`${JSON.stringify(res.body, null, 2)}\n`); return EXIT.ok; }
  const body = res.body as Record<string, unknown> | unknown[] | string | undefined;
  const rows = Array.isArray(body) ? body : listKey && body && typeof body === 'object' ? (body as Record<string, unknown>)[listKey] : (body && typeof body === 'object' && Array.isArray((body as Record<string, unknown>).items) ? (body as Record<string, unknown>).items : undefined);
  if (columns && Array.isArray(rows)) {
    io.out(table(columns, rows as Record<string, unknown>[]));
    const total = !Array.isArray(body) && body && typeof body === 'object' ? (body as { total?: number; next?: string | null }) : undefined;
    if (total?.next) io.err(`(${rows.length} of ${total.total ?? '?'}; more with --cursor ${total.next} or --all)\n`);
    return EXIT.ok;
  }
  if (body === undefined || body === '') return EXIT.ok;
  if (typeof body !== 'object') { io.out(`${String(body)}\n`); return EXIT.ok; }
  for (const [k, val] of Object.entries(body)) io.out(`${k}: ${typeof val === 'object' && val !== null ? JSON.stringify(val) : String(val)}\n`);
  return EXIT.ok;
}

export function table(columns: Column[], rows: Record<string, unknown>[]): string {
  const cells = rows.map((r) => columns.map(([, pick]) => { const x = pick(r); return x === undefined || x === null ? '-' : String(x); }));
  const widths = columns.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => `${c.map((x, i) => (i === c.length - 1 ? x : x.padEnd(widths[i]!))).join('  ')}\n`;
  return line(columns.map(([h]) => h)) + cells.map(line).join('');
}

// --- bash completion ---------------------------------------------------------------------------------------

function completion(shell: string | undefined, io: CliIo): number {
  if (shell !== 'bash') throw new MetalboxError('CLI_USAGE', 'usage: metalbox completion bash');
  const verbs: Record<string, string> = {
    machines: `list show create update delete power bootdev events timeline ${MACHINE_ACTIONS.join(' ')}`,
    tokens: 'list revoke', leases: 'list', subnets: 'list', dns: 'list zones show add edit remove', bmcs: 'list', completion: 'bash',
    bmc: 'add list show edit remove test power bootdev probe confirm', users: 'create list delete passwd',
    images: 'add list remove', settings: 'list get set', config: 'check default',
  };
  const commands = ['serve', 'version', 'status', 'backup', 'restore', 'settings', 'images', 'bmc', 'users', 'config', ...REMOTE_COMMANDS];
  io.out(`# bash completion for metalbox (metalbox completion bash > /etc/bash_completion.d/metalbox)
_metalbox() {
  local cur prev words cword
  _init_completion 2>/dev/null || { cur=\${COMP_WORDS[COMP_CWORD]}; prev=\${COMP_WORDS[COMP_CWORD-1]}; cword=$COMP_CWORD; words=("\${COMP_WORDS[@]}"); }
  if [ "$cword" -eq 1 ]; then COMPREPLY=($(compgen -W "${commands.join(' ')}" -- "$cur")); return; fi
  case "$prev" in
    --config|-c|--password-file|--kernel|--initrd|--rootfs) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --state) COMPREPLY=($(compgen -W "New Commissioning Ready Allocated Deploying Deployed Releasing Rescue Broken FailedCommissioning FailedDeployment FailedReleasing" -- "$cur")); return ;;
    power) COMPREPLY=($(compgen -W "on off soft-off cycle reset status" -- "$cur")); return ;;
  esac
  if [ "$cword" -eq 2 ]; then
    case "\${words[1]}" in
${Object.entries(verbs).map(([c, w]) => `      ${c}) COMPREPLY=($(compgen -W "${w}" -- "$cur")) ;;`).join('\n')}
    esac
    return
  fi
  COMPREPLY=($(compgen -W "--json --url --token --fingerprint --config --help" -- "$cur"))
}
complete -F _metalbox metalbox
`);
  return EXIT.ok;
}

/** The body of a machine action: its reason, and deploy's and release's own options (only with those verbs). */
function actionBody(verb: string, v: Values): Record<string, unknown> {
  const body: Record<string, unknown> = v.reason ? { reason: v.reason } : {};
  for (const [flag, value] of Object.entries({ image: v.image, disk: v.disk })) {
    if (value !== undefined && verb !== 'deploy') throw new MetalboxError('CLI_USAGE', `--${flag} goes with machines deploy`);
  }
  if (v['ssh-key-file'] !== undefined && verb !== 'deploy' && verb !== 'rescue') throw new MetalboxError('CLI_USAGE', '--ssh-key-file goes with machines deploy and rescue');
  if (v.erase !== undefined && verb !== 'release') throw new MetalboxError('CLI_USAGE', '--erase goes with machines release');
  if (v.image !== undefined) body.image = v.image;
  if (v.disk !== undefined) body.disk = v.disk;
  if (v['ssh-key-file'] !== undefined) {
    // authorized_keys lines: every non-empty line that is not a comment, from each file.
    body.sshKeys = v['ssh-key-file'].flatMap((f) => readFileSync(f, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')));
  }
  if (v.erase !== undefined) {
    if (!['none', 'quick', 'full'].includes(v.erase)) throw new MetalboxError('CLI_USAGE', '--erase must be none, quick or full');
    body.erase = v.erase;
  }
  return body;
}
