// Load and validate the configuration once, at start, and fail fast: every problem is reported with
// the key path (`subnets[0].cidr`), the YAML line where it can be found, and the reason.
import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isMap, isSeq, type Document } from 'yaml';
import Value from 'typebox/value';
import { Compile } from 'typebox/compile';
import { ConfigSchema, type Config } from './schema.ts';
import { MetalboxError, errnoCode } from '../lib/errors.ts';
import { cidrContains, formatIPv4, parseCidr, parseIPv4, parseListen, parseRange } from '../lib/ipv4.ts';
import { parseMac } from '../lib/mac.ts';

export interface ConfigProblem { path: string; line?: number; message: string }

const validator = Compile(ConfigSchema);

export interface LoadOptions {
  /** Name used in messages (the file path, or "embedded default"). */
  source: string;
  /** stateDir to use when the document has none (main derives it from $METALBOX_STATE_DIR or ./.metalbox). */
  defaultStateDir: string;
}

/** Reads and validates a YAML config file. Throws CONFIG_UNREADABLE or CONFIG_INVALID. */
export function loadConfigFile(file: string, defaultStateDir: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new MetalboxError('CONFIG_UNREADABLE', `cannot read config ${file}: ${errnoCode(err) ?? String(err)}`, { cause: err, details: { file } });
  }
  return parseConfig(text, { source: file, defaultStateDir });
}

/** The embedded default: state in the default dir, console on 127.0.0.1:5240, network services idle. */
export function defaultConfig(defaultStateDir: string): Config {
  return parseConfig('', { source: 'embedded default', defaultStateDir });
}

export function parseConfig(text: string, options: LoadOptions): Config {
  const lines = new LineCounter();
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true, lineCounter: lines });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = lines.linePos(e.pos[0]).line;
    throw new MetalboxError('CONFIG_UNREADABLE', `${options.source}${line ? `:${line}` : ''}: not valid YAML: ${e.message.split('\n')[0]}`, { details: { source: options.source, line } });
  }
  const raw: unknown = doc.toJS() ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw invalid(options.source, [{ path: '(top level)', message: 'must be a mapping of keys to values' }]);
  }
  const input = { stateDir: options.defaultStateDir, ...(raw as Record<string, unknown>) };
  const withDefaults = Value.Default(ConfigSchema, Value.Clone(input));
  const problems = validator.Check(withDefaults) ? semanticProblems(withDefaults as Config) : schemaProblems(withDefaults);
  if (problems.length > 0) {
    for (const p of problems) p.line = lineOf(doc, lines, p.path);
    throw invalid(options.source, problems);
  }
  return deepFreeze(withDefaults as Config);
}

function invalid(source: string, problems: ConfigProblem[]): MetalboxError {
  const lines = problems.map((p) => `  ${p.path}${p.line ? ` (line ${p.line})` : ''}: ${p.message}`);
  return new MetalboxError('CONFIG_INVALID', `invalid config ${source}:\n${lines.join('\n')}`, { details: { source, problems } });
}

const HOSTNAME = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;
const DOMAIN = /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;

/** JSON pointer `/subnets/0/cidr` -> `subnets[0].cidr`. */
function keyPath(pointer: string): string {
  const parts = pointer.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let out = '';
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out ? `.${p}` : p;
  return out || '(top level)';
}

function schemaProblems(value: unknown): ConfigProblem[] {
  const byPath = new Map<string, ConfigProblem>();
  for (const e of validator.Errors(value)) {
    const path = keyPath(e.instancePath);
    // With additionalProperties:false the validator reports the unknown key itself ("schema is false")
    // and again on its parent; keep the precise one.
    if (e.keyword === 'additionalProperties') continue;
    if (e.keyword === 'boolean') { byPath.set(path, { path, message: 'unknown key' }); continue; }
    if (e.keyword === 'enum') {
      const values = (e.params as { allowedValues?: unknown[] }).allowedValues ?? [];
      byPath.set(path, { path, message: `must be one of: ${values.join(', ')}` });
      continue;
    }
    if (!byPath.has(path)) byPath.set(path, { path, message: e.message });
  }
  return [...byPath.values()];
}

/** What the schema cannot say: address syntax, containment and overlap. */
function semanticProblems(config: Config): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const add = (path: string, message: string) => problems.push({ path, message });

  const listen = parseListen(config.http.listen);
  if (!listen) add('http.listen', `"${config.http.listen}" is not host:port`);
  else if (config.interfaces.length > 0 && (listen.host.startsWith('127.') || listen.host === 'localhost' || listen.host === '::1')) {
    add('http.listen', `${config.http.listen} is loopback, but machines on the provisioning interfaces must reach HTTP boot: listen on 0.0.0.0 or a provisioning address`);
  }
  const https = parseListen(config.https.listen);
  if (!https) add('https.listen', `"${config.https.listen}" is not host:port`);
  else if (listen && https.port !== 0 && https.port === listen.port && (https.host === listen.host || https.host === '0.0.0.0' || listen.host === '0.0.0.0')) {
    add('https.listen', `${config.https.listen} is the port of http.listen`);
  }
  if ((config.https.certFile === undefined) !== (config.https.keyFile === undefined)) {
    add(config.https.certFile === undefined ? 'https.certFile' : 'https.keyFile', 'give https.certFile and https.keyFile together, or neither (a self-signed certificate is made)');
  }
  const seenIfaces = new Set<string>();
  config.interfaces.forEach((name, i) => {
    if (seenIfaces.has(name)) add(`interfaces[${i}]`, `"${name}" is listed twice`);
    seenIfaces.add(name);
  });

  const cidrs: { cidr: NonNullable<ReturnType<typeof parseCidr>>; at: string }[] = [];
  config.subnets.forEach((s, i) => {
    const at = `subnets[${i}]`;
    const cidr = parseCidr(s.cidr);
    if (!cidr) { add(`${at}.cidr`, `"${s.cidr}" is not a.b.c.d/len with the host bits zero`); return; }
    for (const other of cidrs) {
      if (cidrContains(other.cidr, cidr.network) || cidrContains(cidr, other.cidr.network)) {
        add(`${at}.cidr`, `overlaps ${other.at} (${formatIPv4(other.cidr.network)}/${other.cidr.prefix})`);
      }
    }
    cidrs.push({ cidr, at });
    const inside = (text: string, path: string) => {
      const ip = parseIPv4(text);
      if (ip === undefined) add(path, `"${text}" is not an IPv4 address`);
      else if (!cidrContains(cidr, ip)) add(path, `${text} is outside ${s.cidr}`);
      return ip;
    };
    if (s.gateway !== undefined) inside(s.gateway, `${at}.gateway`);
    const ranges: { start: number; end: number; j: number }[] = [];
    s.dynamicRanges.forEach((text, j) => {
      const path = `${at}.dynamicRanges[${j}]`;
      const r = parseRange(text);
      if (!r) { add(path, `"${text}" is not first-last with first <= last`); return; }
      if (!cidrContains(cidr, r.start) || !cidrContains(cidr, r.end)) { add(path, `${text} is not inside ${s.cidr}`); return; }
      if (cidr.prefix < 31 && (r.start === cidr.network || r.end === cidr.broadcast)) {
        add(path, `${text} includes the network or broadcast address`);
      }
      for (const o of ranges) if (r.start <= o.end && o.start <= r.end) add(path, `overlaps dynamicRanges[${o.j}]`);
      ranges.push({ ...r, j });
    });
    const excluded: { start: number; end: number }[] = [];
    s.excludedRanges.forEach((text, j) => {
      const path = `${at}.excludedRanges[${j}]`;
      const r = parseRange(text);
      if (!r) add(path, `"${text}" is not first-last with first <= last`);
      else if (!cidrContains(cidr, r.start) || !cidrContains(cidr, r.end)) add(path, `${text} is not inside ${s.cidr}`);
      else excluded.push(r);
    });
    const macs = new Map<string, number>();
    const ips = new Map<number, number>();
    s.reservations.forEach((r, j) => {
      const path = `${at}.reservations[${j}]`;
      const mac = parseMac(r.mac);
      if (mac === undefined) add(`${path}.mac`, `"${r.mac}" is not a MAC address like aa:bb:cc:dd:ee:ff`);
      else if (macs.has(mac)) add(`${path}.mac`, `${r.mac} is also reservations[${macs.get(mac)}]`);
      else macs.set(mac, j);
      const ip = inside(r.ip, `${path}.ip`);
      if (ip !== undefined && cidrContains(cidr, ip)) {
        if (ips.has(ip)) add(`${path}.ip`, `${r.ip} is also reservations[${ips.get(ip)}]`);
        else ips.set(ip, j);
        if (ip === cidr.network || ip === cidr.broadcast) add(`${path}.ip`, `${r.ip} is the network or broadcast address`);
        if (excluded.some((e) => ip >= e.start && ip <= e.end)) add(`${path}.ip`, `${r.ip} is in an excluded range`);
      }
      if (r.hostname !== undefined && !HOSTNAME.test(r.hostname)) add(`${path}.hostname`, `"${r.hostname}" is not a valid host name`);
    });
    s.domainSearch.forEach((d, j) => { if (!DOMAIN.test(d)) add(`${at}.domainSearch[${j}]`, `"${d}" is not a domain name`); });
    s.dnsServers.forEach((t, j) => { if (parseIPv4(t) === undefined) add(`${at}.dnsServers[${j}]`, `"${t}" is not an IPv4 address`); });
    s.ntpServers.forEach((t, j) => { if (parseIPv4(t) === undefined) add(`${at}.ntpServers[${j}]`, `"${t}" is not an IPv4 address`); });
  });
  config.dns.forwarders.forEach((t, j) => { if (parseIPv4(t) === undefined) add(`dns.forwarders[${j}]`, `"${t}" is not an IPv4 address`); });
  const enabledUdp = (['dhcp', 'tftp', 'dns', 'ntp'] as const).filter((k) => config[k].enabled);
  for (const [i, a] of enabledUdp.entries()) {
    for (const b of enabledUdp.slice(i + 1)) if (config[a].port === config[b].port) add(`${b}.port`, `${config[b].port} is also ${a}.port`);
  }
  return problems;
}

/** The YAML line of the deepest node that exists on the path (1-based), for messages. */
function lineOf(doc: Document, lines: LineCounter, path: string): number | undefined {
  const keys: (string | number)[] = [];
  for (const m of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) keys.push(m[2] !== undefined ? Number(m[2]) : m[1]!);
  let node: unknown = doc.contents;
  let line: number | undefined;
  const lc = (offset: number | undefined) => (offset === undefined ? undefined : lines.linePos(offset).line);
  for (const k of keys) {
    if (isMap(node)) {
      const pair = node.items.find((p) => (p.key as { value?: unknown } | null)?.value === k);
      if (!pair) break;
      line = lc((pair.key as { range?: [number, number, number] }).range?.[0]) ?? line;
      node = pair.value;
    } else if (isSeq(node) && typeof k === 'number') {
      const item = node.items[k] as { range?: [number, number, number] } | undefined;
      if (!item) break;
      line = lc(item.range?.[0]) ?? line;
      node = item;
    } else break;
  }
  return line;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
