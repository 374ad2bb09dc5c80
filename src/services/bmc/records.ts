// BMC definitions: what an operator (CLI, later the API) may give, checked and normalised into a BmcRecord,
// and the view of a record that leaves the service: never a secret, not even sealed.
import { isIP } from 'node:net';
import { MetalboxError } from '../../lib/errors.ts';
import { parseMac } from '../../lib/mac.ts';
import type { BmcRecord } from '../../store/types.ts';
import type { DriverTable } from '../../bmc/drivers.ts';
import type { BmcEndpoint, PowerState } from '../../bmc/types.ts';

/** What `add` takes: a driver's endpoint (secrets in clear here; they leave sealed) and where it belongs. */
export type BmcInput = BmcEndpoint & {
  /** Default: the machine id when given and free, else `bmc-` and 8 hex digits. */
  id?: string;
  machineId?: string;
  /** Wake-on-LAN: interface the packet leaves by. */
  wolInterface?: string;
};

/** What `edit` takes: a field left out is unchanged; `null` clears an optional field. */
export type BmcPatch = {
  [K in Exclude<keyof BmcInput, 'id' | 'driver' | 'address'>]?: BmcInput[K] | null;
} & { driver?: string; address?: string };

/** A BMC as the CLI and the API show it. */
export interface BmcView {
  id: string;
  machineId?: string;
  driver: string;
  address: string;
  port?: number;
  username?: string;
  hasPassword: boolean;
  hasKg: boolean;
  cipherSuite?: number;
  tlsFingerprint?: string;
  systemId?: string;
  wolInterface?: string;
  powerState: PowerState;
  lastPolledAt?: string;
  lastChangedAt?: string;
  lastError?: { code: string; message: string; at: string };
  failures: number;
  unreachable: boolean;
  pending: { request: string; actor: string; at: string }[];
  createdAt: string;
  updatedAt: string;
}

const ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const MACHINE_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const HOSTNAME = /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;
const SYSTEM_ID = /^[A-Za-z0-9._~-]{1,128}$/;
const IFNAME = /^[^/\s]{1,15}$/;
const FINGERPRINT = /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/;
/** IPMI v2.0 §22.28 (Set User Name): 16 bytes; §22.30 (Set User Password): 20 bytes for IPMI 2.0. */
const IPMI_MAX_USER = 16;
const IPMI_MAX_PASSWORD = 20;
/** IPMI v2.0 §22.25 (Set Channel Security Keys): Kg is up to 20 bytes. */
const KG_HEX = /^([0-9a-fA-F]{2}){1,20}$/;
/** Cipher suites with integrity and confidentiality (IPMI v2.0 §22.15.2 Table 22-20): 3 (SHA1, AES-128), 17 (SHA256, AES-128). */
export const IPMI_CIPHER_SUITES = [3, 17] as const;

export function checkBmcId(id: unknown): string {
  if (typeof id !== 'string' || !ID.test(id)) throw invalid(`BMC id ${JSON.stringify(id)} must be 1-63 of a-z 0-9 . _ - starting with a letter or digit`);
  return id;
}

/** Canonical "AB:CD:..." form of a SHA-256 fingerprint given with or without colons, any case. */
export function normalizeFingerprint(text: string): string | undefined {
  const hex = text.trim().replace(/:/g, '').toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex)) return undefined;
  const out = hex.match(/../g)!.join(':');
  return FINGERPRINT.test(out) ? out : undefined;
}

/** Fields each driver takes (beyond driver, address, machineId). */
const FIELDS: Record<string, readonly string[]> = {
  ipmi: ['port', 'username', 'password', 'cipherSuite', 'kg'],
  redfish: ['port', 'username', 'password', 'tlsFingerprint', 'systemId'],
  wol: ['port', 'wolInterface'],
  manual: [],
};
const OPTIONAL = ['machineId', 'port', 'username', 'password', 'cipherSuite', 'kg', 'tlsFingerprint', 'systemId', 'wolInterface'] as const;

export interface Prepared {
  /** The record without sealed secrets (the caller seals `password`/`kg` with the record id). */
  record: BmcRecord;
  /** Clear secrets to seal: a string sets, null clears, undefined keeps what the record had. */
  password?: string | null;
  kg?: string | null;
  /** Names of the fields that changed (for the event; values of secrets never). */
  changed: string[];
}

/**
 * Checks an add (`previous` undefined) or an edit and returns the record to store. BMC_INVALID names the
 * field and what is wrong; the message never quotes a password or Kg.
 */
export function prepareRecord(drivers: DriverTable, input: BmcInput | (BmcPatch & { id: string }), previous: BmcRecord | undefined, now: string): Prepared {
  const driver = input.driver ?? previous?.driver;
  if (driver === undefined || !Object.hasOwn(drivers, driver) || !Object.hasOwn(FIELDS, driver)) {
    throw invalid(`unknown driver ${JSON.stringify(driver)}; one of ${Object.keys(FIELDS).filter((d) => Object.hasOwn(drivers, d)).join(', ')}`);
  }
  const allowed = new Set(FIELDS[driver]);
  const given = input as Record<string, unknown>;
  // Fields given explicitly must suit the driver; fields carried over from another driver are dropped.
  for (const f of OPTIONAL) {
    if (f !== 'machineId' && given[f] !== undefined && given[f] !== null && !allowed.has(f)) throw invalid(`--${flagName(f)} does not apply to the ${driver} driver`);
  }
  const pick = <K extends (typeof OPTIONAL)[number]>(f: K): unknown => {
    if (f !== 'machineId' && !allowed.has(f)) return undefined;
    if (given[f] === null) return undefined;
    if (given[f] !== undefined) return given[f];
    return f === 'password' || f === 'kg' ? undefined : previous?.[f];
  };

  const id = checkBmcId(input.id ?? previous?.id);
  const record: BmcRecord = { id, driver, address: '', createdAt: previous?.createdAt ?? now, updatedAt: now };
  // Keep what the service tracks about the BMC itself.
  for (const k of ['lastPowerState', 'lastPolledAt', 'lastChangedAt', 'lastError', 'failures', 'pending'] as const) {
    if (previous?.[k] !== undefined) (record as Record<string, unknown>)[k] = previous[k];
  }

  const machineId = pick('machineId');
  if (machineId !== undefined) {
    if (typeof machineId !== 'string' || !MACHINE_ID.test(machineId)) throw invalid(`machine id ${JSON.stringify(machineId)} is not a machine id`);
    record.machineId = machineId;
  }

  const address = input.address ?? previous?.address ?? '';
  if (typeof address !== 'string') throw invalid('address must be text');
  if (driver === 'wol') {
    const mac = parseMac(address);
    if (mac === undefined) throw invalid(`Wake-on-LAN needs the machine's MAC as its address (aa:bb:cc:dd:ee:ff), got ${JSON.stringify(address)}`);
    record.address = mac;
  } else if (driver === 'manual') {
    if (address.length > 200 || /[\x00-\x1f\x7f]/.test(address)) throw invalid('a manual BMC address (where the machine is) is at most 200 printable characters');
    record.address = address;
  } else {
    if (!(isIP(address) === 4 || isIP(address) === 6 || HOSTNAME.test(address))) throw invalid(`address ${JSON.stringify(address)} is not an IPv4 address or a host name`);
    record.address = address.toLowerCase();
  }

  const port = pick('port');
  if (port !== undefined) {
    if (!Number.isInteger(port) || (port as number) < 1 || (port as number) > 65535) throw invalid(`port ${JSON.stringify(port)} must be 1-65535`);
    record.port = port as number;
  }
  const username = pick('username');
  if (username !== undefined) {
    if (typeof username !== 'string' || username.length === 0 || /[\x00-\x1f\x7f]/.test(username)) throw invalid('username must be non-empty printable text');
    if (driver === 'ipmi' && Buffer.byteLength(username) > IPMI_MAX_USER) throw invalid(`an IPMI user name is at most ${IPMI_MAX_USER} bytes (IPMI v2.0 §22.28)`);
    if (Buffer.byteLength(username) > 256) throw invalid('username is at most 256 bytes');
    record.username = username;
  }
  const cipherSuite = pick('cipherSuite');
  if (cipherSuite !== undefined) {
    if (!(IPMI_CIPHER_SUITES as readonly unknown[]).includes(cipherSuite)) throw invalid(`cipher suite ${JSON.stringify(cipherSuite)} is not supported; use 3 (HMAC-SHA1, AES-128) or 17 (HMAC-SHA256, AES-128)`);
    record.cipherSuite = cipherSuite as number;
  }
  const tls = pick('tlsFingerprint');
  if (tls !== undefined) {
    const fp = typeof tls === 'string' ? normalizeFingerprint(tls) : undefined;
    if (fp === undefined) throw invalid('the TLS fingerprint must be a SHA-256 fingerprint: 32 hex bytes, with or without colons');
    record.tlsFingerprint = fp;
  }
  const systemId = pick('systemId');
  if (systemId !== undefined) {
    if (typeof systemId !== 'string' || !SYSTEM_ID.test(systemId)) throw invalid(`Redfish system id ${JSON.stringify(systemId)} must be 1-128 of A-Z a-z 0-9 . _ ~ -`);
    record.systemId = systemId;
  }
  const wolInterface = pick('wolInterface');
  if (wolInterface !== undefined) {
    if (typeof wolInterface !== 'string' || !IFNAME.test(wolInterface)) throw invalid(`interface ${JSON.stringify(wolInterface)} is not an interface name`);
    record.wolInterface = wolInterface;
  }

  // Secrets: checked here, sealed by the caller. Carried over sealed when not given.
  let password: string | null | undefined;
  if (given.password !== undefined) {
    const p = given.password;
    if (p === null || p === '') password = null;
    else if (typeof p !== 'string' || p.includes('\0')) throw invalid('the password must be text without NUL');
    else if (driver === 'ipmi' && Buffer.byteLength(p) > IPMI_MAX_PASSWORD) throw invalid(`an IPMI 2.0 password is at most ${IPMI_MAX_PASSWORD} bytes (IPMI v2.0 §22.30); this one is ${Buffer.byteLength(p)}`);
    else if (Buffer.byteLength(p) > 1024) throw invalid('the password is longer than 1024 bytes');
    else password = p;
  } else if (allowed.has('password') && previous?.passwordSealed !== undefined) {
    // Kept across a change between IPMI and Redfish too: usually the same BMC account.
    record.passwordSealed = previous.passwordSealed;
  }
  let kg: string | null | undefined;
  if (given.kg !== undefined) {
    const k = given.kg;
    if (k === null || k === '') kg = null;
    else if (typeof k !== 'string' || !KG_HEX.test(k)) throw invalid('Kg must be 1-20 bytes in hex (IPMI v2.0 §22.25)');
    else kg = k.toLowerCase();
  } else if (allowed.has('kg') && previous?.kgSealed !== undefined) {
    record.kgSealed = previous.kgSealed;
  }

  const needsCredentials = drivers[driver]!.credentials;
  if (needsCredentials && record.username === undefined) throw invalid(`the ${driver} driver needs a username (--user)`);
  if (needsCredentials && (password === null || (password === undefined && record.passwordSealed === undefined))) {
    throw invalid(`the ${driver} driver needs a password (--password-file FILE, or METALBOX_BMC_PASSWORD)`);
  }

  const changed: string[] = [];
  if (previous) {
    for (const f of ['driver', 'address', ...OPTIONAL.filter((f) => f !== 'password' && f !== 'kg')] as const) {
      if (JSON.stringify(previous[f]) !== JSON.stringify(record[f])) changed.push(f);
    }
    if (password !== undefined || (previous.passwordSealed !== undefined) !== (record.passwordSealed !== undefined)) changed.push('password');
    if (kg !== undefined || (previous.kgSealed !== undefined) !== (record.kgSealed !== undefined)) changed.push('kg');
  }
  return { record, ...(password !== undefined ? { password } : {}), ...(kg !== undefined ? { kg } : {}), changed };
}

/** What connecting needs changed: another address, credentials or driver close the cached session. */
export const CONNECTION_FIELDS = ['driver', 'address', 'port', 'username', 'password', 'cipherSuite', 'kg', 'tlsFingerprint', 'systemId', 'wolInterface'];

/** The public view; `live` carries what the service knows but does not write on every poll. */
export function viewOf(r: BmcRecord, live: { lastPolledAt?: string; failures?: number; unreachableAfter: number }): BmcView {
  const failures = live.failures ?? r.failures ?? 0;
  const view: BmcView = {
    id: r.id, driver: r.driver, address: r.address,
    hasPassword: r.passwordSealed !== undefined, hasKg: r.kgSealed !== undefined,
    powerState: r.lastPowerState ?? 'unknown',
    failures, unreachable: failures >= live.unreachableAfter,
    pending: r.pending ?? [],
    createdAt: r.createdAt, updatedAt: r.updatedAt,
  };
  const copy = ['machineId', 'port', 'username', 'cipherSuite', 'tlsFingerprint', 'systemId', 'wolInterface', 'lastChangedAt', 'lastError'] as const;
  for (const k of copy) if (r[k] !== undefined) (view as unknown as Record<string, unknown>)[k] = r[k];
  const polled = live.lastPolledAt ?? r.lastPolledAt;
  if (polled !== undefined) view.lastPolledAt = polled;
  return view;
}

function flagName(field: string): string {
  return ({ username: 'user', password: 'password-file', kg: 'kg-file', cipherSuite: 'cipher-suite', tlsFingerprint: 'tls-fingerprint', systemId: 'system-id', wolInterface: 'interface', machineId: 'machine' } as Record<string, string>)[field] ?? field;
}

function invalid(message: string): MetalboxError {
  return new MetalboxError('BMC_INVALID', message);
}
