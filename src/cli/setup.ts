// `metalbox setup`: the appliance's first-boot questions (and, run again, the way to change the answers).
//
// Works on a 115200-baud serial console: plain line prompts under 80 columns, no colour, no cursor movement;
// a password is read without echo when the input is a terminal. Every answer is checked at once against the
// config schema itself (src/config/load.ts: the message names the config key) and asked again on error.
// `--non-interactive` takes the same answers from flags, for automation.
//
// What it does with the answers, in order: writes the config atomically (temp file, fsync, rename, fsync of the
// directory); gives the provisioning interface its address (a systemd-networkd file kept on the state partition);
// creates or updates the admin user; registers the ephemeral environment shipped in the image; turns SSH on or
// off; makes (or reads) the HTTPS certificate; starts metalbox.service under systemd; prints the console URL
// and the certificate's SHA-256 fingerprint.
import { execFile } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { parseArgs, promisify } from 'node:util';
import { parseDocument, stringify } from 'yaml';
import { parseConfig, type ConfigProblem } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { MetalboxError, isMetalboxError } from '../lib/errors.ts';
import { cidrContains, formatIPv4, parseCidr, parseIPv4, parseRange } from '../lib/ipv4.ts';
import { checkPassword, checkUsername } from '../core/users.ts';
import type { CliIo } from './commands.ts';

const run = promisify(execFile);

/** Where things live on the appliance (image/appliance). Tests point them elsewhere. */
export interface SetupPaths {
  config: string;
  stateDir: string;
  /** The provisioning interface's networkd file, kept (on the state partition: metalbox-network.service copies it). */
  networkDir: string;
  /** Where systemd-networkd reads it from now. */
  runtimeNetworkDir: string;
  /** SSH switch, host keys and authorized keys (on the state partition: /etc/metalbox is a link into it). */
  sshDir: string;
  /** The ephemeral environment shipped in the image (vmlinuz, initrd.img), registered as "ephemeral". */
  ephemeralDir: string;
}

export const APPLIANCE_PATHS: SetupPaths = {
  config: '/etc/metalbox/metalbox.yaml',
  stateDir: '/var/lib/metalbox',
  networkDir: '/etc/metalbox/network',
  runtimeNetworkDir: '/run/systemd/network',
  sshDir: '/etc/metalbox/ssh',
  ephemeralDir: '/usr/lib/metalbox/ephemeral',
};

/** A network interface as the wizard shows it. */
export interface Nic { name: string; mac: string; up: boolean; addresses: string[]; defaultRoute: boolean }

/** The answers; everything else in the config is kept as it was (or left at its default). */
export interface Answers {
  interface: string;
  /** This appliance's address on the provisioning network, a.b.c.d/len. */
  address: string;
  gateway: string;
  dhcpRange: string;
  domain: string;
  dns: string[];
  ntp: string[];
  adminUser: string;
  /** Undefined: keep the admin's current password (only when the user exists). */
  adminPassword?: string;
  /** An OpenSSH public key line: SSH on with it; '' off; undefined: leave as it is. */
  sshKey?: string;
}

type Question = keyof Omit<Answers, 'adminPassword' | 'sshKey'>;

/** The config keys each answer writes: a problem under one of them is that answer's. */
const KEYS: Record<Question, RegExp> = {
  interface: /^interfaces/,
  address: /^subnets\[0\]\.cidr|^subnets\[0\]$|^http\.listen/,
  gateway: /^subnets\[0\]\.gateway/,
  dhcpRange: /^subnets\[0\]\.(dynamicRanges|excludedRanges)/,
  domain: /^domain/,
  dns: /^dns\.forwarders/,
  ntp: /^ntp\.upstream/,
  adminUser: /^$/,
};

// --- the config -------------------------------------------------------------------------------------------

/** The subnet of an address with its prefix ("10.77.0.1/24" -> "10.77.0.0/24"); undefined when not a.b.c.d/len. */
export function subnetOf(address: string): string | undefined {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(address.trim());
  if (!m) return undefined;
  const ip = parseIPv4(m[1]!);
  const prefix = Number(m[2]);
  if (ip === undefined || prefix < 8 || prefix > 30) return undefined;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return `${formatIPv4((ip & mask) >>> 0)}/${prefix}`;
}

/** A default pool: the upper half of the subnet (x.x.x.100-x.x.x.199 in a /24), never the appliance's address. */
export function defaultRange(address: string): string {
  const cidr = parseCidr(subnetOf(address) ?? '');
  if (!cidr) return '';
  const size = cidr.broadcast - cidr.network + 1;
  const start = size >= 256 ? cidr.network + 100 : cidr.network + Math.floor(size / 2);
  const end = size >= 256 ? cidr.network + 199 : cidr.broadcast - 1;
  return `${formatIPv4(start)}-${formatIPv4(end)}`;
}

/**
 * The config document: `existing` (the parsed YAML of the current file, kept as it is but for what the answers
 * own) with the answers in it. `ephemeral` names the boot image to use when one is shipped.
 */
export function configObject(a: Partial<Answers>, existing: Record<string, unknown>, stateDir: string, ephemeral?: string): Record<string, unknown> {
  const out: Record<string, unknown> = { ...existing };
  out.stateDir ??= stateDir;
  if (a.domain !== undefined) out.domain = a.domain;
  const obj = (k: string): Record<string, unknown> => (typeof out[k] === 'object' && out[k] !== null && !Array.isArray(out[k]) ? { ...(out[k] as Record<string, unknown>) } : {});
  // Console and API on every address (management and provisioning); HTTP boot must reach the provisioning side.
  out.http = { ...obj('http'), listen: obj('http').listen && !String(obj('http').listen).startsWith('127.') ? obj('http').listen : '0.0.0.0:5240' };
  out.https = { ...obj('https'), listen: obj('https').listen && !String(obj('https').listen).startsWith('127.') ? obj('https').listen : '0.0.0.0:5443' };
  if (a.interface !== undefined) out.interfaces = [a.interface];
  const cidr = a.address === undefined ? undefined : subnetOf(a.address) ?? a.address;
  if (cidr !== undefined || a.dhcpRange !== undefined || a.gateway !== undefined) {
    const subnets = Array.isArray(out.subnets) ? [...(out.subnets as Record<string, unknown>[])] : [];
    const first: Record<string, unknown> = { ...(subnets[0] ?? {}) };
    if (cidr !== undefined) {
      // A new subnet drops what belonged to the old one (reservations, exclusions would be outside it).
      if (first.cidr !== undefined && first.cidr !== cidr) for (const k of Object.keys(first)) delete first[k];
      first.cidr = cidr;
    }
    if (a.gateway !== undefined) { if (a.gateway === '') delete first.gateway; else first.gateway = a.gateway; }
    if (a.dhcpRange !== undefined) first.dynamicRanges = a.dhcpRange === '' ? [] : [a.dhcpRange];
    subnets[0] = first;
    out.subnets = subnets;
  }
  if (a.dns !== undefined) out.dns = { ...obj('dns'), forwarders: a.dns };
  if (a.ntp !== undefined) out.ntp = { ...obj('ntp'), upstream: a.ntp };
  if (ephemeral !== undefined) out.boot = { ...obj('boot'), ephemeralImage: ephemeral };
  return out;
}

/** Problems of the answers given so far, each with its config key path; the whole config is checked by the schema. */
export function checkAnswers(a: Partial<Answers>, existing: Record<string, unknown>, stateDir: string, nics?: Nic[]): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  if (a.interface !== undefined && nics !== undefined && !nics.some((n) => n.name === a.interface)) {
    problems.push({ path: 'interfaces[0]', message: `"${a.interface}" is not an interface of this machine (${nics.map((n) => n.name).join(', ') || 'none found'})` });
  }
  if (a.address !== undefined) {
    const cidr = subnetOf(a.address);
    if (cidr === undefined) problems.push({ path: 'subnets[0].cidr', message: `"${a.address}" is not this appliance's address as a.b.c.d/len (prefix 8-30)` });
    else {
      const ip = parseIPv4(a.address.split('/')[0]!)!;
      const c = parseCidr(cidr)!;
      if (ip === c.network || ip === c.broadcast) problems.push({ path: 'subnets[0].cidr', message: `${a.address} is the network or broadcast address of ${cidr}` });
      const range = a.dhcpRange ? parseRange(a.dhcpRange) : undefined;
      if (range && ip >= range.start && ip <= range.end) problems.push({ path: 'subnets[0].dynamicRanges[0]', message: `${a.dhcpRange} includes this appliance's address ${formatIPv4(ip)}` });
      if (a.gateway && parseIPv4(a.gateway) === ip) problems.push({ path: 'subnets[0].gateway', message: `${a.gateway} is this appliance's own address (it does not route)` });
      if (a.gateway && parseIPv4(a.gateway) !== undefined && !cidrContains(c, parseIPv4(a.gateway)!)) problems.push({ path: 'subnets[0].gateway', message: `${a.gateway} is outside ${cidr}` });
    }
  }
  if (a.adminUser !== undefined) {
    try { checkUsername(a.adminUser); } catch (err) { problems.push({ path: 'admin', message: (err as Error).message }); }
  }
  try {
    parseConfig(stringify(configObject(a, existing, stateDir)), { source: 'setup', defaultStateDir: stateDir });
  } catch (err) {
    if (!isMetalboxError(err, 'CONFIG_INVALID')) throw err;
    const listed = (err.details as { problems?: ConfigProblem[] } | undefined)?.problems ?? [{ path: '(config)', message: err.message }];
    for (const p of listed) {
      if (problems.some((q) => q.path === p.path)) continue;
      // The schema's own words for a pattern are the regular expression: say what it means.
      const message = p.path === 'domain' && p.message.startsWith('must match pattern') ? `"${a.domain}" is not a domain name (labels of a-z, 0-9 and -, dot-separated)` : p.message;
      problems.push({ path: p.path, message });
    }
  }
  return problems;
}

/** A message folded to 78 columns, continuation lines indented (80x24 terminals). */
export function wrap(text: string, width = 78): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > width) { lines.push(line); line = `    ${word}`; } else line = line === '' ? word : `${line} ${word}`;
  }
  if (line.trim() !== '' || lines.length === 0) lines.push(line);
  return lines.map((l) => `${l}\n`).join('');
}

function problemsFor(q: Question, problems: ConfigProblem[]): ConfigProblem[] {
  if (q === 'adminUser') return problems.filter((p) => p.path === 'admin');
  return problems.filter((p) => KEYS[q].test(p.path));
}

/** Writes `text` to `file` so that a crash leaves the old file or the new one: temp, fsync, rename, fsync dir. */
export function writeFileAtomic(file: string, text: string, mode = 0o600): void {
  const dir = dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const tmp = join(dir, `.${file.slice(dir.length + 1)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', mode);
  try {
    writeFileSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  const dfd = openSync(dir, 'r');
  try { fsyncSync(dfd); } finally { closeSync(dfd); }
}

/** The current config file as a plain object ({} when there is none). A file that is not YAML is an error. */
export function readExisting(file: string): Record<string, unknown> {
  if (!existsSync(file)) return {};
  const doc = parseDocument(readFileSync(file, 'utf8'));
  if (doc.errors.length > 0) throw new MetalboxError('CONFIG_UNREADABLE', `${file}: not valid YAML: ${doc.errors[0]!.message.split('\n')[0]}`);
  const raw: unknown = doc.toJS();
  return typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? raw as Record<string, unknown> : {};
}

/** The answers an existing config gives (the defaults of a second run). */
export function answersFrom(existing: Record<string, unknown>, addresses: Record<string, string[]>): Partial<Answers> {
  const out: Partial<Answers> = {};
  const ifaces = existing.interfaces;
  if (Array.isArray(ifaces) && typeof ifaces[0] === 'string') out.interface = ifaces[0];
  const subnet = Array.isArray(existing.subnets) ? existing.subnets[0] as Record<string, unknown> | undefined : undefined;
  if (subnet && typeof subnet.cidr === 'string') {
    const cidr = parseCidr(subnet.cidr);
    // The address the interface has in that subnet (what setup gave it), else the first host.
    const own = out.interface !== undefined ? (addresses[out.interface] ?? []).find((a) => cidr && subnetOf(a) === subnet.cidr) : undefined;
    if (own) out.address = own;
    else if (cidr) out.address = `${formatIPv4(cidr.network + 1)}/${cidr.prefix}`;
    if (Array.isArray(subnet.dynamicRanges) && typeof subnet.dynamicRanges[0] === 'string') out.dhcpRange = subnet.dynamicRanges[0];
    out.gateway = typeof subnet.gateway === 'string' ? subnet.gateway : '';
  }
  if (typeof existing.domain === 'string') out.domain = existing.domain;
  const dns = (existing.dns as { forwarders?: unknown } | undefined)?.forwarders;
  if (Array.isArray(dns)) out.dns = dns.map(String);
  const ntp = (existing.ntp as { upstream?: unknown } | undefined)?.upstream;
  if (Array.isArray(ntp)) out.ntp = ntp.map(String);
  return out;
}

// --- the wizard --------------------------------------------------------------------------------------------

/** Lines from a stream: `\n`, `\r` and `\r\n` end a line (a serial terminal in raw mode sends `\r`). */
export class LineReader {
  private buf = '';
  private ended = false;
  private waiting: (() => void) | undefined;

  constructor(private readonly input: Readable) {
    input.setEncoding('utf8');
    input.on('data', (chunk: string) => { this.buf += chunk; this.wake(); });
    input.on('end', () => { this.ended = true; this.wake(); });
    input.on('error', () => { this.ended = true; this.wake(); });
  }

  private wake(): void { const w = this.waiting; this.waiting = undefined; w?.(); }

  /** The next line without its end, or undefined at the end of the input. `hidden`: Backspace edits (raw mode). */
  async line(hidden = false): Promise<string | undefined> {
    for (;;) {
      const i = this.buf.search(/[\r\n]/);
      if (i >= 0) {
        let text = this.buf.slice(0, i);
        // CRLF counts once when it arrives together; a lone CR (a terminal's Enter in raw mode) ends the line
        // at once: waiting for a LF that may never come would hang the next question.
        this.buf = this.buf.slice(this.buf.startsWith('\r\n', i) ? i + 2 : i + 1);
        if (hidden) {
          let out = '';
          for (const ch of text) {
            if (ch === '\u007f' || ch === '\b') out = out.slice(0, -1);
            else if (ch === '\u0003') throw new MetalboxError('CLI_USAGE', 'setup cancelled');
            else out += ch;
          }
          text = out;
        }
        return text;
      }
      if (this.ended) {
        if (this.buf.length === 0) return undefined;
        const text = this.buf;
        this.buf = '';
        return text;
      }
      await new Promise<void>((resolve) => { this.waiting = resolve; });
    }
  }
}

export interface WizardIo {
  input: Readable;
  output: Writable;
}

export interface WizardContext {
  nics: Nic[];
  existing: Record<string, unknown>;
  stateDir: string;
  /** Current values (a second run) and suggestions. */
  defaults: Partial<Answers>;
  /** The admin user exists already: an empty password keeps the current one. */
  adminExists: (username: string) => Promise<boolean>;
  /** SSH is on now (a second run): an empty answer keeps it. */
  sshOn: boolean;
}

/** Asks every question on `io`; returns the checked answers. Throws CLI_USAGE at the end of the input. */
export async function runWizard(io: WizardIo, ctx: WizardContext): Promise<Answers> {
  const reader = new LineReader(io.input);
  const say = (text: string) => { io.output.write(text.replace(/\n/g, '\r\n')); };
  const tty = (io.input as { isTTY?: boolean }).isTTY === true && typeof (io.input as { setRawMode?: unknown }).setRawMode === 'function';
  const ask = async (prompt: string, def: string | undefined, hidden = false): Promise<string> => {
    let line: string | undefined;
    if (hidden && tty) {
      // Echo off before the prompt shows: what is typed right after it must not be echoed.
      const stdin = io.input as unknown as { setRawMode(on: boolean): void };
      stdin.setRawMode(true);
      say(`${prompt}: `);
      try { line = await reader.line(true); } finally { stdin.setRawMode(false); say('\n'); }
    } else {
      say(`${prompt}${def !== undefined && def !== '' ? ` [${def}]` : ''}: `);
      line = await reader.line(hidden);
    }
    if (line === undefined) throw new MetalboxError('CLI_USAGE', 'setup cancelled: the input ended before every question was answered');
    const answer = line.trim();
    return answer === '' && def !== undefined ? def : answer;
  };
  const answers: Partial<Answers> = {};
  const list = (text: string): string[] => text.split(/[\s,]+/).filter((s) => s !== '' && s !== 'none' && s !== '-');
  /** Asks until the answer (parsed by `take`) leaves no problem under this question's keys. */
  const until = async (q: Question, prompt: string, def: string | undefined, take: (text: string) => void): Promise<void> => {
    for (;;) {
      take(await ask(prompt, def));
      const problems = problemsFor(q, checkAnswers(answers, ctx.existing, ctx.stateDir, ctx.nics));
      if (problems.length === 0) return;
      for (const p of problems) say(wrap(`  ! ${p.path}: ${p.message}`));
    }
  };

  say('\nmetalbox setup: the provisioning network, DNS, NTP and the admin.\n');
  say('Press Enter to take the value in [brackets].\n\n');
  say('Network interfaces:\n');
  ctx.nics.forEach((n, i) => {
    const what = n.defaultRoute ? '  default route' : '';
    say(`  ${String(i + 1).padStart(2)}) ${n.name.padEnd(15)} ${n.mac} ${n.up ? 'up  ' : 'down'} ${(n.addresses.join(' ') || '-').slice(0, 18)}${what}\n`);
  });
  const suggested = ctx.defaults.interface ?? ctx.nics.find((n) => !n.defaultRoute)?.name ?? ctx.nics[0]?.name;
  await until('interface', 'Provisioning interface (number or name)', suggested, (t) => {
    const n = /^\d+$/.test(t) ? ctx.nics[Number(t) - 1]?.name : undefined;
    answers.interface = n ?? t;
  });
  await until('address', "This appliance's address on it (a.b.c.d/len)", ctx.defaults.address ?? '10.77.0.1/24', (t) => { answers.address = t; });
  const rangeDefault = ctx.defaults.dhcpRange && ctx.defaults.address === answers.address ? ctx.defaults.dhcpRange : defaultRange(answers.address!);
  await until('dhcpRange', 'DHCP range (first-last)', rangeDefault, (t) => { answers.dhcpRange = t === 'none' ? '' : t; });
  await until('gateway', 'Gateway handed to machines (none: no route)', ctx.defaults.gateway || 'none', (t) => { answers.gateway = t === 'none' || t === '-' ? '' : t; });
  await until('domain', 'DNS domain of the rack', ctx.defaults.domain ?? 'rack.internal', (t) => { answers.domain = t; });
  await until('dns', 'Upstream DNS servers (IPv4, comma-separated; none)', ctx.defaults.dns?.join(',') || 'none', (t) => { answers.dns = list(t); });
  await until('ntp', 'Upstream NTP servers (comma-separated; none)', ctx.defaults.ntp?.join(',') || 'none', (t) => { answers.ntp = list(t); });
  await until('adminUser', 'Admin user name', ctx.defaults.adminUser ?? 'admin', (t) => { answers.adminUser = t; });

  const keep = await ctx.adminExists(answers.adminUser!);
  for (;;) {
    const pw = await ask(`Password for ${answers.adminUser} (12+ characters${keep ? '; empty: keep' : ''})`, undefined, true);
    if (pw === '' && keep) break;
    try { checkPassword(pw); } catch (err) { say(wrap(`  ! ${(err as Error).message}`)); continue; }
    const again = await ask('The same password again', undefined, true);
    if (again !== pw) { say('  ! the two passwords differ\n'); continue; }
    answers.adminPassword = pw;
    break;
  }
  for (;;) {
    const key = await ask(`SSH public key for root (one line; ${ctx.sshOn ? 'empty: keep, off: turn SSH off' : 'empty: SSH stays off'})`, undefined);
    if (key === '') { if (!ctx.sshOn) answers.sshKey = ''; break; }
    if (key === 'off') { answers.sshKey = ''; break; }
    if (/^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( .*)?$/.test(key)) { answers.sshKey = key; break; }
    say('  ! not an OpenSSH public key line (ssh-ed25519 AAAA... comment)\n');
  }
  return answers as Answers;
}

// --- applying the answers ----------------------------------------------------------------------------------

/** What setup does to the machine, beside writing the config (tests replace it). */
export interface SetupActions {
  /** Whether the user exists already (its password may then be kept). */
  hasUser(stateDir: string, username: string): Promise<boolean>;
  /** Gives the interface its address (systemd-networkd); resolves once the address is there. */
  network(iface: string, address: string): Promise<void>;
  /** Creates the admin, or sets its password (undefined: leave it). */
  admin(username: string, password: string | undefined, config: Config): Promise<'created' | 'updated' | 'kept'>;
  /** Registers the shipped ephemeral environment as `name` (nothing when it is registered already). */
  ephemeral(name: string, config: Config): Promise<void>;
  /** SSH on with this key, or off (''). */
  ssh(key: string): Promise<void>;
  /** The HTTPS certificate's fingerprint (made now when there is none). */
  fingerprint(config: Config): Promise<string>;
  /** (Re)starts metalbox.service. */
  start(): Promise<void>;
}

export interface ApplyResult { config: Config; fingerprint: string; urls: string[]; admin: 'created' | 'updated' | 'kept' }

export const EPHEMERAL_IMAGE = 'ephemeral';

export async function applySetup(answers: Answers, ctx: { paths: SetupPaths; existing: Record<string, unknown>; actions: SetupActions; log: (line: string) => void; hasEphemeral: boolean; start: boolean; addresses?: () => string[] }): Promise<ApplyResult> {
  const problems = checkAnswers(answers, ctx.existing, ctx.paths.stateDir);
  if (problems.length > 0) {
    throw new MetalboxError('CONFIG_INVALID', `setup:\n${problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')}`, { details: { problems } });
  }
  const ephemeral = ctx.hasEphemeral ? EPHEMERAL_IMAGE : undefined;
  const doc = configObject(answers, ctx.existing, ctx.paths.stateDir, ephemeral);
  const text = `# metalbox appliance config, written by metalbox setup (run it again to change the answers).\n# Reference: every key is in the README's Configuration table.\n${stringify(doc)}`;
  const config = parseConfig(text, { source: ctx.paths.config, defaultStateDir: ctx.paths.stateDir });
  writeFileAtomic(ctx.paths.config, text, 0o600);
  ctx.log(`config written: ${ctx.paths.config}`);
  await ctx.actions.network(answers.interface, answers.address);
  ctx.log(`${answers.interface}: ${answers.address}`);
  const admin = await ctx.actions.admin(answers.adminUser, answers.adminPassword, config);
  ctx.log(`admin ${answers.adminUser}: ${admin}`);
  if (ephemeral) await ctx.actions.ephemeral(ephemeral, config);
  if (answers.sshKey !== undefined) {
    await ctx.actions.ssh(answers.sshKey);
    ctx.log(answers.sshKey === '' ? 'SSH: off' : 'SSH: on (root, with the key given)');
  }
  const fingerprint = await ctx.actions.fingerprint(config);
  if (ctx.start) await ctx.actions.start();
  const own = answers.address.split('/')[0]!;
  const others = (ctx.addresses?.() ?? []).filter((a) => a !== own && !a.startsWith('127.'));
  const port = config.https.listen.split(':').pop();
  const urls = [own, ...others].map((a) => `https://${a}:${port}/`);
  return { config, fingerprint, urls, admin };
}

// --- the real machine --------------------------------------------------------------------------------------

/**
 * NICs: systeminformation's list (addresses, the default route) completed from /sys/class/net, because
 * systeminformation starts from os.networkInterfaces(), which leaves out a NIC without an address: exactly the
 * provisioning NIC before setup. Ethernet (type 1) devices backed by hardware (a `device` link), not loopback.
 */
export async function detectNics(sysNet = '/sys/class/net'): Promise<Nic[]> {
  const si = await import('systeminformation');
  const [list, dflt] = await Promise.all([si.networkInterfaces(), si.networkInterfaceDefault().catch(() => '')]);
  const arr = Array.isArray(list) ? list : [list];
  const own = networkInterfaces();
  const read = (name: string, file: string): string => { try { return readFileSync(join(sysNet, name, file), 'utf8').trim(); } catch { return ''; } };
  const names = new Set(arr.filter((n) => !n.internal && n.iface !== 'lo' && n.mac && n.mac !== '00:00:00:00:00:00').map((n) => n.iface));
  let entries: string[] = [];
  try { entries = readdirSync(sysNet); } catch { /* no sysfs: what systeminformation found */ }
  for (const name of entries) if (name !== 'lo' && read(name, 'type') === '1' && existsSync(join(sysNet, name, 'device'))) names.add(name);
  return [...names].map((name) => {
    const n = arr.find((x) => x.iface === name);
    return {
      name,
      mac: n?.mac || read(name, 'address'),
      up: (n?.operstate || read(name, 'operstate')) === 'up',
      addresses: (own[name] ?? []).filter((a) => a.family === 'IPv4').map((a) => a.cidr ?? a.address),
      defaultRoute: name === dflt,
    };
  }).sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
}

const NETWORK_FILE = '10-metalbox-provisioning.network';

function underSystemd(): boolean { return existsSync('/run/systemd/system'); }

async function waitForAddress(iface: string, address: string, timeoutMs: number): Promise<boolean> {
  const ip = address.split('/')[0];
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if ((networkInterfaces()[iface] ?? []).some((a) => a.address === ip)) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

export function machineActions(paths: SetupPaths, io: CliIo, opts: { network: boolean; start: boolean }): SetupActions {
  return {
    async hasUser(stateDir, username) {
      const { callControl } = await import('../services/control.ts');
      const list = await callControl(join(stateDir, 'control.sock'), { op: 'users.list', actor: 'cli:setup' }).catch(() => undefined) as { username: string }[] | undefined;
      if (list !== undefined) return list.some((u) => u.username === username);
      if (!existsSync(join(stateDir, 'db'))) return false;
      const { openLevelStore } = await import('../store/level-store.ts');
      const store = await openLevelStore(stateDir);
      try { return (await store.users.getBy('username', username)) !== undefined; } finally { await store.close(); }
    },
    async network(iface, address) {
      if (!opts.network) return;
      // systemd-networkd's format on Debian and Ubuntu alike (netplan renders to networkd there; its files,
      // 10-netplan-*, sort after ours, so this one claims the interface).
      const text = [
        '# metalbox setup: the provisioning interface (a static address; metalbox serves DHCP on it)',
        '[Match]', `Name=${iface}`, '', '[Link]', 'RequiredForOnline=no', '',
        '[Network]', `Address=${address}`, 'LinkLocalAddressing=no', 'IPv6AcceptRA=no', 'ConfigureWithoutCarrier=yes', '',
      ].join('\n');
      writeFileAtomic(join(paths.networkDir, NETWORK_FILE), text, 0o644);
      if (underSystemd()) {
        writeFileAtomic(join(paths.runtimeNetworkDir, NETWORK_FILE), text, 0o644);
        await run('networkctl', ['reload']);
        await run('networkctl', ['reconfigure', iface]).catch(() => undefined);
      }
      if (underSystemd() && !await waitForAddress(iface, address, 20_000)) io.err(`metalbox setup: ${iface} does not have ${address} yet; check networkctl status ${iface}\n`);
    },
    async admin(username, password, config) {
      const { EventLog } = await import('../core/events.ts');
      const { createAuthCore } = await import('../core/auth.ts');
      const { auditAs } = await import('../core/users.ts');
      const { callControl } = await import('../services/control.ts');
      const controlPath = join(config.stateDir, 'control.sock');
      const actor = 'cli:setup';
      // Through the running metalbox (it holds the store), else on the store opened here.
      const list = await callControl(controlPath, { op: 'users.list', actor }) as { username: string }[] | undefined;
      if (list !== undefined) {
        const exists = list.some((u) => u.username === username);
        if (password === undefined) return 'kept';
        await callControl(controlPath, exists ? { op: 'users.passwd', ref: username, password, actor } : { op: 'users.create', username, role: 'admin', password, actor });
        return exists ? 'updated' : 'created';
      }
      const { openLevelStore } = await import('../store/level-store.ts');
      const store = await openLevelStore(config.stateDir);
      try {
        const events = new EventLog(store);
        await events.init();
        const core = createAuthCore({ store, events });
        const exists = (await core.users.get(username)) !== undefined;
        if (password === undefined) return 'kept';
        const audit = auditAs(actor, { via: 'cli', address: 'local' });
        if (exists) await core.users.update(username, { password, role: 'admin' }, audit);
        else await core.users.create({ username, role: 'admin', password }, audit);
        return exists ? 'updated' : 'created';
      } finally {
        await store.close();
      }
    },
    async ephemeral(name, config) {
      const { runCommand } = await import('./commands.ts');
      const quiet: CliIo = { out: () => undefined, err: () => undefined };
      try {
        await runCommand({ command: 'images', positionals: ['add', name], config, io: quiet, defaultStateDir: config.stateDir,
          flags: { kernel: join(paths.ephemeralDir, 'vmlinuz'), initrd: join(paths.ephemeralDir, 'initrd.img') } });
        io.out(`boot image "${name}" registered from ${paths.ephemeralDir}\n`);
      } catch (err) {
        if (!isMetalboxError(err, 'IMAGE_EXISTS')) throw err;
      }
    },
    async ssh(key) {
      mkdirSync(paths.sshDir, { recursive: true, mode: 0o700 });
      const enabled = join(paths.sshDir, 'enabled');
      if (key === '') {
        rmSync(enabled, { force: true });
        if (underSystemd()) await run('systemctl', ['--no-block', 'stop', 'ssh.service']).catch(() => undefined);
        return;
      }
      writeFileAtomic(join(paths.sshDir, 'authorized_keys_root'), `${key}\n`, 0o600);
      writeFileAtomic(enabled, 'metalbox setup turned SSH on; remove this file (or run setup again, answer off) to turn it off\n', 0o644);
      if (underSystemd()) await run('systemctl', ['--no-block', 'restart', 'ssh.service']).catch(() => undefined);
    },
    async fingerprint(config) {
      const { loadTls } = await import('../services/tls-files.ts');
      mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
      return (await loadTls(config)).fingerprint;
    },
    async start() {
      if (!opts.start || !underSystemd()) return;
      // --no-block: at first boot this runs inside metalbox-firstboot.service, which metalbox.service is ordered after.
      await run('systemctl', ['enable', 'metalbox.service']).catch(() => undefined);
      await run('systemctl', ['--no-block', 'restart', 'metalbox.service']);
    },
  };
}

export const SETUP_USAGE = `usage: metalbox setup [--config FILE]                       ask on this terminal (first boot: the serial console)
       metalbox setup --non-interactive --interface IF --address A.B.C.D/LEN [--dhcp-range FIRST-LAST]
             [--gateway IP|none] [--domain NAME] [--dns IP,...|none] [--ntp HOST,...|none] [--admin-user NAME]
             [--admin-password-file FILE|-] [--ssh-key "ssh-ed25519 AAAA..."|off] [--no-start] [--no-network]
  the admin password comes from --admin-password-file or METALBOX_PASSWORD (never argv); a second run edits
  the current config, its values the defaults; --no-start leaves metalbox.service alone, --no-network the NIC`;

const SETUP_OPTIONS = {
  config: { type: 'string', short: 'c' },
  'non-interactive': { type: 'boolean' },
  interface: { type: 'string' },
  address: { type: 'string' },
  'dhcp-range': { type: 'string' },
  gateway: { type: 'string' },
  domain: { type: 'string' },
  dns: { type: 'string' },
  ntp: { type: 'string' },
  'admin-user': { type: 'string' },
  'admin-password-file': { type: 'string' },
  'ssh-key': { type: 'string' },
  'no-start': { type: 'boolean' },
  'no-network': { type: 'boolean' },
  console: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export interface SetupEnv {
  io: CliIo;
  env: NodeJS.ProcessEnv;
  stdin: Readable;
  stdout: Writable;
  paths?: Partial<SetupPaths>;
  actions?: SetupActions;
  nics?: () => Promise<Nic[]>;
}

/** `metalbox setup ...`; returns the exit code. */
export async function runSetup(argv: string[], s: SetupEnv): Promise<number> {
  let values: ReturnType<typeof parseArgs<{ args: string[]; options: typeof SETUP_OPTIONS; allowPositionals: false; strict: true }>>['values'];
  try {
    values = parseArgs({ args: argv, options: SETUP_OPTIONS, allowPositionals: false, strict: true }).values;
  } catch (err) {
    throw new MetalboxError('CLI_USAGE', `${(err as Error).message}\n${SETUP_USAGE}`);
  }
  if (values.help) { s.io.out(`${SETUP_USAGE}\n`); return 0; }
  const paths: SetupPaths = { ...APPLIANCE_PATHS, ...(s.env.METALBOX_STATE_DIR ? { stateDir: s.env.METALBOX_STATE_DIR } : {}), ...s.paths };
  if (values.config !== undefined) paths.config = values.config;
  const existing = readExisting(paths.config);
  if (typeof existing.stateDir === 'string') paths.stateDir = existing.stateDir;
  const nics = await (s.nics ?? detectNics)();
  const addresses: Record<string, string[]> = Object.fromEntries(nics.map((n) => [n.name, n.addresses]));
  const defaults = answersFrom(existing, addresses);
  const actions = s.actions ?? machineActions(paths, s.io, { network: !values['no-network'], start: !values['no-start'] });
  const sshOn = existsSync(join(paths.sshDir, 'enabled'));
  const hasEphemeral = existsSync(join(paths.ephemeralDir, 'vmlinuz')) && existsSync(join(paths.ephemeralDir, 'initrd.img'));

  let answers: Answers;
  if (values.console) {
    // The first-boot console: nothing else is on it; say what this is before the questions.
    s.stdout.write('\r\n\r\nmetalbox appliance: first-boot setup on this console (run metalbox setup again later to change it).\r\n');
  }
  if (values['non-interactive']) {
    const list = (t: string | undefined, d: string[] | undefined) => (t === undefined ? d ?? [] : t === 'none' || t === '' ? [] : t.split(',').map((x) => x.trim()).filter(Boolean));
    const iface = values.interface ?? defaults.interface;
    const address = values.address ?? defaults.address;
    if (iface === undefined || address === undefined) throw new MetalboxError('CLI_USAGE', `--non-interactive needs --interface and --address (no config to take them from)\n${SETUP_USAGE}`);
    let password: string | undefined = s.env.METALBOX_PASSWORD;
    const file = values['admin-password-file'];
    if (file !== undefined) password = (file === '-' ? await readAll(s.stdin) : readFileSync(file, 'utf8')).replace(/\r?\n$/, '');
    answers = {
      interface: iface,
      address,
      dhcpRange: values['dhcp-range'] ?? (defaults.dhcpRange && defaults.address === address ? defaults.dhcpRange : defaultRange(address)),
      gateway: values.gateway === undefined ? defaults.gateway ?? '' : values.gateway === 'none' ? '' : values.gateway,
      domain: values.domain ?? defaults.domain ?? 'rack.internal',
      dns: list(values.dns, defaults.dns),
      ntp: list(values.ntp, defaults.ntp),
      adminUser: values['admin-user'] ?? 'admin',
      ...(password !== undefined ? { adminPassword: checkPassword(password, 'admin password') } : {}),
      ...(values['ssh-key'] !== undefined ? { sshKey: values['ssh-key'] === 'off' ? '' : values['ssh-key'] } : {}),
    };
    if (answers.adminPassword === undefined && !(await actions.hasUser(paths.stateDir, answers.adminUser))) {
      throw new MetalboxError('CLI_USAGE', `the admin ${answers.adminUser} does not exist yet: give its password with --admin-password-file or METALBOX_PASSWORD`);
    }
    const problems = checkAnswers(answers, existing, paths.stateDir, nics);
    if (problems.length > 0) throw new MetalboxError('CONFIG_INVALID', `setup:\n${problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')}`, { details: { problems } });
  } else {
    if (nics.length === 0) throw new MetalboxError('CLI_USAGE', 'setup found no network interface to serve on');
    const adminExists = (username: string): Promise<boolean> => actions.hasUser(paths.stateDir, username);
    answers = await runWizard({ input: s.stdin, output: s.stdout }, { nics, existing, stateDir: paths.stateDir, defaults, adminExists, sshOn });
    if (answers.adminPassword === undefined && !(await adminExists(answers.adminUser))) throw new MetalboxError('CLI_USAGE', 'an admin password is needed');
  }
  const say = (line: string) => s.stdout.write(`${line}\r\n`);
  const result = await applySetup(answers, {
    paths, existing, actions, log: say, hasEphemeral, start: !values['no-start'],
    addresses: () => Object.values(networkInterfaces()).flatMap((l) => (l ?? []).filter((a) => a.family === 'IPv4').map((a) => a.address)),
  });
  say('');
  say('metalbox is set up.');
  for (const u of result.urls) say(`  console: ${u}`);
  say(`  TLS certificate SHA-256 fingerprint:`);
  say(`    ${result.fingerprint}`);
  say(`  log in as ${answers.adminUser}; run metalbox setup again to change these answers.`);
  say('METALBOX-SETUP-DONE');
  return 0;
}

async function readAll(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(String(c)));
  return Buffer.concat(chunks).toString('utf8');
}
