// DHCP reservations added at run time (the API), beside the config file's. The config's stay read-only
// (they change with the file); these live in the store and the DHCP service applies them live.
//
// Storage: ONE setting, `dhcp.reservations` (RESERVATIONS_SETTING), whose value maps each subnet's CIDR (as
// configured) to its list: { "10.77.0.0/24": [{ mac, ip, hostname?, createdAt, createdBy }] }. A setting
// rather than a collection of its own: no store format change, it travels in backups like every setting,
// and the list is small (a reservation is typed in by a person). Writes run one at a time (read, check,
// write the setting and its event in one batch), so two requests cannot reserve one address twice.
// The settings API refuses to write this key: only this module does, with its checks.
//
// The DHCP service learns of changes through `onChange(cidr, list)` (main wires it to
// DhcpService.setReservations) and reads `all()` when it starts.
import { MetalboxError } from '../lib/errors.ts';
import { cidrContains, formatIPv4, parseCidr, parseIPv4, parseRange, type Cidr } from '../lib/ipv4.ts';
import { parseMac } from '../lib/mac.ts';
import type { SettingValue, Store } from '../store/types.ts';
import type { EventLog, NewEvent } from './events.ts';
import type { AuditInput } from './users.ts';

export const RESERVATIONS_SETTING = 'dhcp.reservations';
/** RFC 1123 §2.1 label, as the config loader checks reservation host names. */
const HOSTNAME = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;
/** Per subnet; a DHCP server's reservations are typed in, not bulk-loaded. */
export const MAX_RESERVATIONS_PER_SUBNET = 4096;

/** What a subnet looks like to this module (the config's SubnetConfig fits). */
export interface SubnetPlan {
  cidr: string;
  dynamicRanges: readonly string[];
  excludedRanges: readonly string[];
  reservations: readonly { mac: string; ip: string; hostname?: string }[];
  proxyDhcp: boolean;
}

export interface Reservation { mac: string; ip: string; hostname?: string }
/** Who changes a reservation; `audit` makes the event the request's audit record (src/api/auth.ts req.auditEvent). */
export interface ReservationActor { actor: string; audit?: (input: AuditInput) => NewEvent }
export interface StoredReservation extends Reservation {
  createdAt: string;
  createdBy: string;
  /**
   * Why the DHCP service does not apply it, when the config changed under it since it was added (its MAC or
   * address is now reserved in the config file, or the address left the subnet or went into an excluded range).
   */
  inactive?: string;
}

export interface ReservationBookDeps {
  store: Store;
  events: EventLog;
  subnets: readonly SubnetPlan[];
  /** Told after each durable change, with the subnet's full stored list (main: DhcpService.setReservations). */
  onChange?: (cidr: string, list: readonly Reservation[]) => void;
  now?: () => number;
}

/** Finds a configured subnet by its CIDR in any spelling of the same network (`10.77.0.0/24`, `10.77.0.0-24`). */
export function findSubnet<S extends { cidr: string }>(subnets: readonly S[], text: string): S | undefined {
  const wanted = parseCidr(text.replace(/-(\d{1,2})$/, '/$1'));
  if (!wanted) return undefined;
  return subnets.find((s) => {
    const c = parseCidr(s.cidr);
    return c !== undefined && c.network === wanted.network && c.prefix === wanted.prefix;
  });
}

/** VALIDATION_FAILED naming the field (the API prefixes the request part: body.ip). */
function invalid(field: string, message: string): MetalboxError {
  return new MetalboxError('VALIDATION_FAILED', `${field}: ${message}`, { details: { field } });
}

export class ReservationBook {
  private tail: Promise<unknown> = Promise.resolve();
  private readonly now: () => number;

  constructor(private readonly deps: ReservationBookDeps) {
    this.now = deps.now ?? Date.now;
  }

  subnet(cidr: string): SubnetPlan | undefined {
    return findSubnet(this.deps.subnets, cidr);
  }

  /**
   * What the DHCP service applies: every subnet's stored reservations that still fit the config, keyed by the
   * CIDR as configured (subnets no longer configured are left out).
   */
  async all(): Promise<Map<string, StoredReservation[]>> {
    return this.serialized(async () => {
      const raw = await this.read();
      const out = new Map<string, StoredReservation[]>();
      for (const s of this.deps.subnets) out.set(s.cidr, withStatus(s, raw[s.cidr] ?? []).filter((r) => r.inactive === undefined));
      return out;
    });
  }

  /** A subnet's stored reservations, those the config now contradicts marked `inactive` with the reason. */
  async list(cidr: string): Promise<StoredReservation[]> {
    const s = this.mustSubnet(cidr);
    return withStatus(s, (await this.read())[s.cidr] ?? []);
  }

  /**
   * Adds a reservation: the MAC gets `ip` (and `hostname`) from the next DHCP exchange on. VALIDATION_FAILED
   * (field named) for a bad MAC, address or host name; STORE_CONFLICT when the MAC or the address is
   * reserved already (here or in the config) or the address is leased to another MAC now.
   */
  async add(cidr: string, input: { mac: unknown; ip: unknown; hostname?: unknown }, by: ReservationActor): Promise<StoredReservation> {
    const s = this.mustSubnet(cidr);
    if (s.proxyDhcp) throw invalid('cidr', `${s.cidr} is served as proxyDHCP: another server owns its addresses, so metalbox reserves none`);
    const net = parseCidr(s.cidr)!;
    const mac = typeof input.mac === 'string' ? parseMac(input.mac) : undefined;
    if (mac === undefined) throw invalid('mac', 'must be a MAC address like aa:bb:cc:dd:ee:ff');
    // IEEE 802 §8.2: the I/G bit marks a group address, which no NIC has.
    if (parseInt(mac.slice(0, 2), 16) & 1) throw invalid('mac', 'is a multicast/broadcast address, not a NIC');
    const ipNum = typeof input.ip === 'string' ? parseIPv4(input.ip) : undefined;
    if (ipNum === undefined) throw invalid('ip', 'must be an IPv4 address like 10.0.0.5');
    checkAddress(s, net, ipNum);
    let hostname: string | undefined;
    if (input.hostname !== undefined) {
      if (typeof input.hostname !== 'string' || !HOSTNAME.test(input.hostname)) throw invalid('hostname', 'must be an RFC 1123 label: 1-63 letters, digits or hyphens, not starting or ending with a hyphen');
      hostname = input.hostname.toLowerCase();
    }
    const ip = formatIPv4(ipNum);
    return this.serialized(async () => {
      const all = await this.read();
      const list = all[s.cidr] ?? [];
      for (const r of [...s.reservations.map((c) => ({ ...c, mac: parseMac(c.mac) ?? c.mac, from: 'the config file' })), ...list.map((r) => ({ ...r, from: 'the API' }))]) {
        if (r.mac === mac) throw new MetalboxError('STORE_CONFLICT', `${mac} already has a reservation in ${s.cidr} (${r.ip}, from ${r.from}); delete it first`, { details: { field: 'mac' } });
        if (parseIPv4(r.ip) === ipNum) throw new MetalboxError('STORE_CONFLICT', `${ip} is already reserved for ${r.mac} (from ${r.from})`, { details: { field: 'ip' } });
      }
      if (list.length >= MAX_RESERVATIONS_PER_SUBNET) throw invalid('mac', `${s.cidr} has ${MAX_RESERVATIONS_PER_SUBNET} reservations, the most it takes`);
      const lease = await this.deps.store.leases.get(ip);
      if (lease && lease.mac !== mac && (lease.state === 'bound' || lease.state === 'offered') && Date.parse(lease.expiresAt) > this.now()) {
        throw new MetalboxError('STORE_CONFLICT', `${ip} is leased to ${lease.mac} until ${lease.expiresAt}; reserve another address or wait for that lease to end`, { details: { field: 'ip' } });
      }
      const created: StoredReservation = { mac, ip, ...(hostname !== undefined ? { hostname } : {}), createdAt: new Date(this.now()).toISOString(), createdBy: by.actor };
      const next = { ...all, [s.cidr]: [...list, created] };
      await this.write(next, eventOf(by, { type: 'dhcp.reservation.added', subject: mac, data: { subnet: s.cidr, mac, ip, ...(hostname !== undefined ? { hostname } : {}) } }));
      this.deps.onChange?.(s.cidr, withStatus(s, next[s.cidr]!).filter((r) => r.inactive === undefined));
      return created;
    });
  }

  /** Removes a stored reservation; `undefined` when the MAC has none stored in that subnet. Config ones cannot be removed here. */
  async remove(cidr: string, macText: string, by: ReservationActor): Promise<StoredReservation | undefined> {
    const s = this.mustSubnet(cidr);
    const mac = parseMac(macText);
    if (mac === undefined) throw invalid('mac', 'must be a MAC address like aa:bb:cc:dd:ee:ff');
    if (s.reservations.some((r) => parseMac(r.mac) === mac)) {
      throw invalid('mac', `the reservation of ${mac} in ${s.cidr} comes from the config file (subnets[].reservations); change it there`);
    }
    return this.serialized(async () => {
      const all = await this.read();
      const list = all[s.cidr] ?? [];
      const gone = list.find((r) => r.mac === mac);
      if (!gone) return undefined;
      const rest = list.filter((r) => r.mac !== mac);
      const next: Record<string, StoredReservation[]> = { ...all, [s.cidr]: rest };
      if (rest.length === 0) delete next[s.cidr];
      await this.write(next, eventOf(by, { type: 'dhcp.reservation.removed', subject: mac, data: { subnet: s.cidr, mac, ip: gone.ip } }));
      this.deps.onChange?.(s.cidr, withStatus(s, rest).filter((r) => r.inactive === undefined));
      return gone;
    });
  }

  private mustSubnet(cidr: string): SubnetPlan {
    const s = this.subnet(cidr);
    if (!s) throw new MetalboxError('NOT_FOUND', `no configured subnet ${cidr}`);
    return s;
  }

  /** The stored map; anything malformed in it (a hand-edited setting) is skipped, never trusted. */
  private async read(): Promise<Record<string, StoredReservation[]>> {
    const value = await this.deps.store.settings.get(RESERVATIONS_SETTING);
    const out: Record<string, StoredReservation[]> = {};
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return out;
    for (const [cidr, list] of Object.entries(value)) {
      if (!Array.isArray(list)) continue;
      out[cidr] = list.flatMap((r) => {
        if (typeof r !== 'object' || r === null || Array.isArray(r)) return [];
        const mac = typeof r.mac === 'string' ? parseMac(r.mac) : undefined;
        const ip = typeof r.ip === 'string' && parseIPv4(r.ip) !== undefined ? r.ip : undefined;
        if (mac === undefined || ip === undefined) return [];
        return [{
          mac, ip,
          ...(typeof r.hostname === 'string' && HOSTNAME.test(r.hostname) ? { hostname: r.hostname } : {}),
          createdAt: typeof r.createdAt === 'string' ? r.createdAt : '',
          createdBy: typeof r.createdBy === 'string' ? r.createdBy : '',
        }];
      });
    }
    return out;
  }

  private async write(next: Record<string, StoredReservation[]>, event: NewEvent): Promise<void> {
    await this.deps.store.write([
      { type: 'put', collection: 'settings', key: RESERVATIONS_SETTING, value: next as unknown as SettingValue },
      this.deps.events.op(event),
    ]);
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}

/** Marks the stored reservations the config (as it is now) contradicts; the config wins. */
function withStatus(s: SubnetPlan, list: readonly StoredReservation[]): StoredReservation[] {
  const net = parseCidr(s.cidr);
  const configMacs = new Set(s.reservations.map((r) => parseMac(r.mac)));
  const configIps = new Set(s.reservations.map((r) => parseIPv4(r.ip)));
  return list.map((r) => {
    const { inactive: _old, ...rest } = r;
    let why: string | undefined;
    if (configMacs.has(r.mac)) why = `the config file reserves an address for ${r.mac} in ${s.cidr}`;
    else if (configIps.has(parseIPv4(r.ip))) why = `the config file reserves ${r.ip} for another MAC`;
    else if (net) {
      try { checkAddress(s, net, parseIPv4(r.ip)!); } catch (err) { why = (err as Error).message.replace(/^ip: /, ''); }
    }
    return why === undefined ? rest : { ...rest, inactive: why };
  });
}

/** Inside the subnet, not its network or broadcast address, not in an excluded range (as the config loader checks). */
function checkAddress(s: SubnetPlan, net: Cidr, ip: number): void {
  if (!cidrContains(net, ip)) throw invalid('ip', `${formatIPv4(ip)} is outside ${s.cidr}`);
  if (net.prefix < 31 && (ip === net.network || ip === net.broadcast)) throw invalid('ip', `${formatIPv4(ip)} is the network or broadcast address of ${s.cidr}`);
  for (const text of s.excludedRanges) {
    const r = parseRange(text);
    if (r && ip >= r.start && ip <= r.end) throw invalid('ip', `${formatIPv4(ip)} is in the excluded range ${text}`);
  }
}

function eventOf(by: ReservationActor, input: AuditInput): NewEvent {
  return by.audit ? by.audit(input) : { ...input, actor: by.actor };
}
