// `metalbox bmc add|list|show|edit|remove|test|power|bootdev|probe|confirm`: BMCs and power control from the
// appliance's shell, through the BMC service. Like every command that touches the store, it goes through the
// running metalbox's control socket when one runs (that process owns the BMC sessions, the caps and the
// poller), and otherwise builds a BmcService on the store opened here (no poller) and closes it after.
//
// Passwords never come from argv (visible to every user in ps and /proc): from --password-file FILE (`-` is
// standard input, prompted without echo on a terminal), from METALBOX_BMC_PASSWORD, or from a prompt when
// `add` needs one and standard input is a terminal.
import { readFile, stat } from 'node:fs/promises';
import type { Config } from '../config/schema.ts';
import { MetalboxError } from '../lib/errors.ts';
import { createLogger } from '../lib/logger.ts';
import { createMetrics } from '../lib/metrics.ts';
import type { Store } from '../store/types.ts';
import { EventLog } from '../core/events.ts';
import { callControl, type ControlHandler } from '../services/control.ts';
import { BmcService, secretBoxLoader, type AddResult, type PowerResult, type TestResult } from '../services/bmc/service.ts';
import type { BmcInput, BmcPatch, BmcView } from '../services/bmc/records.ts';
import { secretKeyPath } from '../bmc/secrets.ts';
import { POWER_ACTIONS, type BootDeviceRequest, type PowerAction } from '../bmc/types.ts';
import type { ProbeResult } from '../bmc/drivers.ts';
import type { CliIo } from './commands.ts';
import { cliActor, readHidden } from './terminal.ts';

/** parseArgs options of `metalbox bmc` (main spreads them into its own). */
export const BMC_OPTIONS = {
  id: { type: 'string' },
  machine: { type: 'string' },
  driver: { type: 'string' },
  address: { type: 'string' },
  port: { type: 'string' },
  user: { type: 'string' },
  'password-file': { type: 'string' },
  // Only to refuse it with a useful message: a password in argv shows in ps.
  password: { type: 'string' },
  'kg-file': { type: 'string' },
  'cipher-suite': { type: 'string' },
  'tls-fingerprint': { type: 'string' },
  'system-id': { type: 'string' },
  interface: { type: 'string' },
  persistent: { type: 'boolean' },
  efi: { type: 'boolean' },
  json: { type: 'boolean' },
} as const;

export type BmcFlags = {
  [K in keyof typeof BMC_OPTIONS]?: (typeof BMC_OPTIONS)[K]['type'] extends 'boolean' ? boolean : string;
} & {
  /** METALBOX_BMC_PASSWORD, read by main. */
  passwordEnv?: string;
};

/** The flags of `metalbox bmc` in parseArgs' values (main passes them through untouched). */
export function pickBmcFlags(values: Record<string, unknown>, passwordEnv: string | undefined): BmcFlags {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(BMC_OPTIONS)) if (values[k] !== undefined) out[k] = values[k];
  if (passwordEnv !== undefined) out.passwordEnv = passwordEnv;
  return out as BmcFlags;
}

export const BMC_USAGE = `usage: metalbox bmc list | show REF
       metalbox bmc add --driver ipmi|redfish|wol|manual --address ADDR [--machine ID] [--id ID] [--port N]
                        [--user NAME] [--password-file FILE|-] [--kg-file FILE] [--cipher-suite 3|17]
                        [--tls-fingerprint SHA256] [--system-id ID] [--interface IF]
       metalbox bmc edit REF [the same options; an empty value clears one]
       metalbox bmc remove REF | test REF | power REF on|off|soft-off|cycle|reset|status
       metalbox bmc bootdev REF pxe|disk [--persistent] [--efi] | confirm REF on|off
       metalbox bmc probe REF | probe --driver redfish --address ADDR [--port N]
  REF is a BMC id or a machine id; the password comes from --password-file, METALBOX_BMC_PASSWORD or a prompt`;

type Ops = Pick<BmcService, 'list' | 'get' | 'add' | 'edit' | 'remove' | 'test' | 'power' | 'powerStatus' | 'setBootDevice' | 'confirm' | 'probe'>;

/** Control handlers for `bmc`, given the server's BMC service. The actor comes from the CLI (the socket is root's only). */
export function bmcControlHandlers(service: Ops): Record<string, ControlHandler> {
  const actor = (req: Record<string, unknown>) => (typeof req.actor === 'string' && req.actor.length <= 100 ? req.actor : 'cli');
  const ref = (req: Record<string, unknown>) => {
    if (typeof req.ref !== 'string' || req.ref === '') throw new MetalboxError('CLI_USAGE', 'a BMC id or machine id is needed');
    return req.ref;
  };
  return {
    'bmc.list': async () => service.list(),
    'bmc.show': async (req) => (await service.get(ref(req))) ?? notFound(ref(req)),
    'bmc.add': async (req, ctx) => service.add(inputOf(req.input), actor(req), ctx.signal),
    'bmc.edit': async (req, ctx) => service.edit(ref(req), inputOf(req.patch) as BmcPatch, actor(req), ctx.signal),
    'bmc.remove': async (req, ctx) => service.remove(ref(req), actor(req), ctx.signal),
    'bmc.test': async (req, ctx) => service.test(ref(req), actor(req), ctx.signal),
    'bmc.power': async (req, ctx) => (req.action === 'status'
      ? service.powerStatus(ref(req), actor(req), ctx.signal)
      : service.power(ref(req), req.action as PowerAction, actor(req), ctx.signal)),
    'bmc.bootdev': async (req, ctx) => service.setBootDevice(ref(req), req.request as BootDeviceRequest, actor(req), ctx.signal),
    'bmc.confirm': async (req, ctx) => service.confirm(ref(req), req.state as 'on' | 'off', actor(req), ctx.signal),
    'bmc.probe': async (req, ctx) => {
      const e = (req.endpoint ?? {}) as Record<string, unknown>;
      if (typeof e.driver !== 'string' || typeof e.address !== 'string') throw new MetalboxError('CLI_USAGE', 'probe needs a driver and an address');
      return service.probe({ driver: e.driver, address: e.address, ...(typeof e.port === 'number' ? { port: e.port } : {}) }, ctx.signal);
    },
  };
}

/** Only the known fields of an add/edit request, so nothing else reaches the record. */
function inputOf(value: unknown): BmcInput {
  if (typeof value !== 'object' || value === null) throw new MetalboxError('CLI_USAGE', 'a BMC definition is needed');
  const v = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of ['id', 'machineId', 'driver', 'address', 'port', 'username', 'password', 'cipherSuite', 'kg', 'tlsFingerprint', 'systemId', 'wolInterface']) {
    if (v[k] !== undefined) out[k] = v[k];
  }
  return out as unknown as BmcInput;
}

function notFound(ref: string): never {
  throw new MetalboxError('BMC_NOT_FOUND', `no BMC has id or machine ${JSON.stringify(ref)}`);
}

export async function runBmc(positionals: string[], flags: BmcFlags, config: Config, io: CliIo, controlPath: string): Promise<number> {
  const [sub, ref, arg, ...extra] = positionals;
  if (extra.length > 0) throw usage('too many arguments');
  if (flags.password !== undefined) {
    throw new MetalboxError('CLI_USAGE', '--password would show the password to every user (ps, /proc); use --password-file FILE (or - for standard input) or METALBOX_BMC_PASSWORD');
  }
  const actor = cliActor();
  // An operation may wait for its BMC, then read the state and act, each within bmc.timeoutSeconds.
  const timeoutMs = (config.bmc.timeoutSeconds * 5 + 30) * 1000;

  /** Runs `op` through the server if it runs, else on a BmcService over the store opened here. */
  const viaServerOrStore = async <T>(request: Record<string, unknown> & { op: string }, direct: (ops: Ops) => Promise<T>): Promise<T> => {
    const answer = await callControl(controlPath, { ...request, actor }, timeoutMs);
    if (answer !== undefined) return answer as T;
    const { openLevelStore } = await import('../store/level-store.ts');
    const store = await openLevelStore(config.stateDir);
    const service = await localService(store, config);
    try {
      return await direct(service);
    } finally {
      await service.stop();
      await store.close();
    }
  };
  const needRef = (what: string): string => {
    if (ref === undefined || ref === '') throw usage(`bmc ${what} needs a BMC id or machine id`);
    return ref;
  };
  const noArg = () => { if (arg !== undefined) throw usage('too many arguments'); };
  const onlyFlags = (allowed: (keyof BmcFlags)[]) => {
    for (const k of Object.keys(flags) as (keyof BmcFlags)[]) {
      if (k !== 'passwordEnv' && flags[k] !== undefined && !allowed.includes(k)) throw usage(`--${k} does not go with bmc ${sub}`);
    }
  };
  const DEFINITION: (keyof BmcFlags)[] = ['id', 'machine', 'driver', 'address', 'port', 'user', 'password-file', 'kg-file', 'cipher-suite', 'tls-fingerprint', 'system-id', 'interface', 'json'];

  switch (sub) {
    case 'help':
      io.out(`${BMC_USAGE}\n`);
      return 0;
    case 'list': {
      if (ref !== undefined) throw usage('bmc list takes no arguments');
      onlyFlags(['json']);
      const list = await viaServerOrStore({ op: 'bmc.list' }, (ops) => ops.list());
      io.out(flags.json ? `${JSON.stringify(list, null, 2)}\n` : formatList(list));
      return 0;
    }
    case 'show': {
      const r = needRef('show');
      noArg();
      onlyFlags(['json']);
      const view = await viaServerOrStore({ op: 'bmc.show', ref: r }, async (ops) => (await ops.get(r)) ?? notFound(r));
      io.out(flags.json ? `${JSON.stringify(view, null, 2)}\n` : formatShow(view));
      return 0;
    }
    case 'add': {
      if (ref !== undefined) throw usage('bmc add takes options only (--id ID to choose the id)');
      onlyFlags(DEFINITION);
      if (flags.driver === undefined) throw usage('bmc add needs --driver');
      if (flags.address === undefined && flags.driver !== 'manual') throw usage('bmc add needs --address (the MAC for wol)');
      const input = (await definitionFromFlags(flags, io, true)) as BmcInput;
      if (input.password === undefined && (input.driver === 'ipmi' || input.driver === 'redfish')) {
        const typed = await promptPassword(io, `password for ${input.username ?? 'the BMC user'} at ${input.address}: `);
        if (typed !== undefined) input.password = typed;
      }
      const added = await viaServerOrStore<AddResult>({ op: 'bmc.add', input }, (ops) => ops.add(input, actor));
      const b = added.bmc;
      io.out(`BMC ${b.id} added (${describe(b)})\n`);
      if (added.pinnedOnFirstUse) {
        io.out(`pinned the TLS certificate it presents now (trust on first use): ${added.pinnedOnFirstUse}\n`);
        io.out('  compare it with the certificate shown on the BMC itself; if they differ, remove this BMC\n');
      }
      return 0;
    }
    case 'edit': {
      const r = needRef('edit');
      noArg();
      onlyFlags(DEFINITION.filter((f) => f !== 'id'));
      const patch = await definitionFromFlags(flags, io, false);
      if (Object.keys(patch).length === 0) throw usage('bmc edit needs something to change');
      const view = await viaServerOrStore<BmcView>({ op: 'bmc.edit', ref: r, patch }, (ops) => ops.edit(r, patch as BmcPatch, actor));
      io.out(`BMC ${view.id} edited (${describe(view)})\n`);
      return 0;
    }
    case 'remove': {
      const r = needRef('remove');
      noArg();
      onlyFlags([]);
      const view = await viaServerOrStore<BmcView>({ op: 'bmc.remove', ref: r }, (ops) => ops.remove(r, actor));
      io.out(`BMC ${view.id} removed\n`);
      return 0;
    }
    case 'test': {
      const r = needRef('test');
      noArg();
      onlyFlags(['json']);
      const result = await viaServerOrStore<TestResult>({ op: 'bmc.test', ref: r }, (ops) => ops.test(r, actor));
      if (flags.json) { io.out(`${JSON.stringify(result, null, 2)}\n`); return 0; }
      io.out(`BMC ${result.bmc}: ok in ${result.ms} ms, power ${result.powerState}\n`);
      for (const [k, v] of Object.entries(result.info)) if (v !== undefined && v !== '') io.out(`  ${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}\n`);
      return 0;
    }
    case 'power': {
      const r = needRef('power');
      if (arg !== 'status' && !(POWER_ACTIONS as readonly string[]).includes(arg ?? '')) throw usage(`bmc power REF needs one of ${POWER_ACTIONS.join(', ')}, status`);
      onlyFlags(['json']);
      if (arg === 'status') {
        const s = await viaServerOrStore<{ state: string }>({ op: 'bmc.power', ref: r, action: 'status' }, (ops) => ops.powerStatus(r, actor));
        io.out(flags.json ? `${JSON.stringify(s)}\n` : `${s.state}\n`);
        return 0;
      }
      const action = arg as PowerAction;
      const result = await viaServerOrStore<PowerResult>({ op: 'bmc.power', ref: r, action }, (ops) => ops.power(r, action, actor));
      if (flags.json) { io.out(`${JSON.stringify(result)}\n`); return 0; }
      const what = result.result === 'noop' ? 'nothing to do' : result.result;
      io.out(`BMC ${result.bmc}: power ${action}: ${what}: ${result.message} (was ${result.before}, ${result.ms} ms)\n`);
      return 0;
    }
    case 'bootdev': {
      const r = needRef('bootdev');
      if (arg !== 'pxe' && arg !== 'disk') throw usage('bmc bootdev REF needs pxe or disk');
      onlyFlags(['persistent', 'efi', 'json']);
      const request: BootDeviceRequest = { device: arg, persistent: flags.persistent === true, efi: flags.efi === true };
      const result = await viaServerOrStore<{ bmc: string; result: string; message: string }>({ op: 'bmc.bootdev', ref: r, request }, (ops) => ops.setBootDevice(r, request, actor));
      io.out(flags.json ? `${JSON.stringify(result)}\n` : `BMC ${result.bmc}: boot device: ${result.result}: ${result.message}\n`);
      return 0;
    }
    case 'confirm': {
      const r = needRef('confirm');
      if (arg !== 'on' && arg !== 'off') throw usage('bmc confirm REF needs on or off (what the machine is now)');
      onlyFlags([]);
      const state = arg;
      const view = await viaServerOrStore<BmcView>({ op: 'bmc.confirm', ref: r, state }, (ops) => ops.confirm(r, state, actor));
      io.out(`BMC ${view.id}: the operator confirmed power ${view.powerState}\n`);
      return 0;
    }
    case 'probe': {
      noArg();
      onlyFlags(['driver', 'address', 'port', 'json']);
      let endpoint: { driver: string; address: string; port?: number };
      if (ref !== undefined) {
        if (flags.driver !== undefined || flags.address !== undefined) throw usage('bmc probe takes a REF or --driver and --address, not both');
        const view = await viaServerOrStore<BmcView>({ op: 'bmc.show', ref }, async (ops) => (await ops.get(ref)) ?? notFound(ref));
        endpoint = { driver: view.driver, address: view.address, ...(view.port !== undefined ? { port: view.port } : {}) };
      } else {
        if (flags.driver === undefined || flags.address === undefined) throw usage('bmc probe needs --driver and --address (or a REF)');
        endpoint = { driver: flags.driver, address: flags.address, ...(flags.port !== undefined ? { port: parsePort(flags.port) } : {}) };
      }
      const result = await viaServerOrStore<ProbeResult>({ op: 'bmc.probe', endpoint }, (ops) => ops.probe(endpoint));
      if (flags.json) { io.out(`${JSON.stringify(result, null, 2)}\n`); return 0; }
      io.out(`${endpoint.driver} at ${endpoint.address}${endpoint.port !== undefined ? `:${endpoint.port}` : ''}\n`);
      if (result.tlsFingerprint) io.out(`  TLS certificate SHA-256: ${result.tlsFingerprint}\n  (pin it: metalbox bmc add ... --tls-fingerprint ${result.tlsFingerprint})\n`);
      for (const [k, v] of Object.entries({ ...result.details, ...result.info })) io.out(`  ${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}\n`);
      return 0;
    }
    default:
      throw usage(sub === undefined ? 'bmc needs a subcommand' : `unknown subcommand "${sub}"`);
  }
}

/** A BMC service over a store this process opened (no server runs): no poller, closed by the caller. */
async function localService(store: Store, config: Config): Promise<BmcService> {
  const events = new EventLog(store);
  await events.init();
  return new BmcService({
    store, events, config,
    secrets: secretBoxLoader(store, config.stateDir),
    logger: createLogger('silent'),
    metrics: createMetrics({ processMetrics: false }),
  });
}

/** The record fields the flags give; for edit, an empty value clears an optional field (null). */
async function definitionFromFlags(flags: BmcFlags, io: CliIo, adding: boolean): Promise<Partial<BmcInput> | BmcPatch> {
  const out: Record<string, unknown> = {};
  const text = (flag: keyof BmcFlags, field: string) => {
    const v = flags[flag];
    if (typeof v !== 'string') return;
    out[field] = v === '' && !adding ? null : v;
  };
  if (adding) text('id', 'id');
  text('machine', 'machineId');
  if (flags.driver !== undefined) out.driver = flags.driver;
  if (flags.address !== undefined) out.address = flags.address;
  else if (adding && flags.driver === 'manual') out.address = '';
  if (flags.port !== undefined) out.port = flags.port === '' && !adding ? null : parsePort(flags.port);
  text('user', 'username');
  if (flags['cipher-suite'] !== undefined) {
    const n = Number(flags['cipher-suite']);
    out.cipherSuite = flags['cipher-suite'] === '' && !adding ? null : Number.isInteger(n) ? n : flags['cipher-suite'];
  }
  text('tls-fingerprint', 'tlsFingerprint');
  text('system-id', 'systemId');
  text('interface', 'wolInterface');
  const password = await readSecretFlag(flags['password-file'], io, 'password');
  if (password !== undefined) out.password = password;
  else if (flags.passwordEnv !== undefined && flags.passwordEnv !== '') out.password = flags.passwordEnv;
  const kg = await readSecretFlag(flags['kg-file'], io, 'Kg (hex)');
  if (kg !== undefined) out.kg = kg === '' && !adding ? null : kg.trim();
  return out as Partial<BmcInput>;
}

function parsePort(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 65535) throw new MetalboxError('BMC_INVALID', `port ${JSON.stringify(text)} must be 1-65535`);
  return n;
}

/** A secret from a file (`-`: standard input), with one trailing newline removed. Warns when others may read the file. */
async function readSecretFlag(file: string | undefined, io: CliIo, what: string): Promise<string | undefined> {
  if (file === undefined) return undefined;
  if (file === '-') {
    if (process.stdin.isTTY) return (await promptPassword(io, `${what}: `)) ?? '';
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return stripNewline(Buffer.concat(chunks).toString('utf8'));
  }
  try {
    const st = await stat(file);
    if ((st.mode & 0o044) !== 0) io.err(`warning: ${file} is readable by group or others (chmod 600 ${file})\n`);
    return stripNewline(await readFile(file, 'utf8'));
  } catch (err) {
    throw new MetalboxError('CLI_USAGE', `cannot read ${what} file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function stripNewline(s: string): string {
  return s.replace(/\r?\n$/, '');
}

/** Reads a line from the terminal without echo; undefined when standard input is not a terminal. */
async function promptPassword(io: CliIo, prompt: string): Promise<string | undefined> {
  return process.stdin.isTTY ? readHidden(io, prompt) : undefined;
}

function usage(why: string): MetalboxError {
  return new MetalboxError('CLI_USAGE', `${why}\n${BMC_USAGE}`);
}

function describe(b: BmcView): string {
  const where = b.driver === 'wol' ? `mac ${b.address}` : b.address === '' ? 'no location' : `${b.address}${b.port !== undefined ? `:${b.port}` : ''}`;
  const parts = [`${b.driver} ${where}`];
  if (b.machineId) parts.push(`machine ${b.machineId}`);
  if (b.username) parts.push(`user ${b.username}`);
  if (b.hasPassword) parts.push('password set');
  return parts.join(', ');
}

export function formatList(list: BmcView[]): string {
  if (list.length === 0) return 'no BMCs (metalbox bmc add --driver ipmi --address ADDR --user NAME --password-file FILE)\n';
  const rows = [['ID', 'MACHINE', 'DRIVER', 'ADDRESS', 'POWER', 'LAST READ', 'STATUS']];
  for (const b of list) {
    const status = b.pending.length > 0 ? `waiting for the operator: ${b.pending.map((p) => p.request).join('; ')}`
      : b.lastError ? `${b.unreachable ? 'unreachable: ' : ''}${b.lastError.code}` : 'ok';
    rows.push([b.id, b.machineId ?? '-', b.driver, b.address === '' ? '-' : `${b.address}${b.port !== undefined ? `:${b.port}` : ''}`, b.powerState, b.lastPolledAt ?? '-', status]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

export function formatShow(b: BmcView): string {
  const lines: [string, unknown][] = [
    ['id', b.id], ['machine', b.machineId], ['driver', b.driver], ['address', b.address || undefined], ['port', b.port],
    ['user', b.username], ['password', b.hasPassword ? 'set (sealed)' : undefined], ['kg', b.hasKg ? 'set (sealed)' : undefined],
    ['cipher suite', b.cipherSuite], ['tls fingerprint', b.tlsFingerprint], ['system id', b.systemId], ['interface', b.wolInterface],
    ['power', b.powerState], ['last read', b.lastPolledAt], ['last change', b.lastChangedAt],
    ['last error', b.lastError ? `${b.lastError.code}: ${b.lastError.message} (${b.lastError.at})` : undefined],
    ['failures', b.failures > 0 ? `${b.failures}${b.unreachable ? ' (unreachable: polled rarely)' : ''}` : undefined],
    ['created', b.createdAt], ['updated', b.updatedAt],
  ];
  let out = '';
  for (const [k, v] of lines) if (v !== undefined) out += `${k.padEnd(16)}${String(v)}\n`;
  for (const p of b.pending) out += `${'pending'.padEnd(16)}${p.request} (asked by ${p.actor} at ${p.at})\n`;
  return out;
}

/** The key file that seals the BMC secrets of this state dir (for `metalbox backup`'s note). */
export function secretKeyFileOf(config: Config): string {
  return secretKeyPath(config.stateDir);
}
