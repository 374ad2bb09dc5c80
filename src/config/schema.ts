// The one configuration schema. Every key is documented here (description) and in the README's
// config reference; `test/unit/config.test.ts` checks the two agree. Unknown keys are errors
// (additionalProperties: false everywhere), so a typo never silently falls back to a default.
import Type, { type Static } from 'typebox';
import { LOG_LEVELS } from '../lib/logger.ts';

const strict = { additionalProperties: false } as const;
const Port = (def: number, description: string) => Type.Integer({ minimum: 1, maximum: 65535, default: def, description });
/** A phase's timeout: past it, the sweeper moves the machine to the phase's failed state. 1 min to 7 days. */
const PhaseTimeout = (def: number, phase: string, failed: string) =>
  Type.Integer({ minimum: 60, maximum: 604_800, default: def, description: `longest time in ${phase} before the machine becomes ${failed}` });

const Service = (port: number, what: string) =>
  Type.Object({
    enabled: Type.Boolean({ default: true, description: `serve ${what} on the provisioning interfaces` }),
    port: Port(port, `UDP port for ${what}`),
  }, strict);

/**
 * A per-client token bucket (src/lib/rate-limit.ts), as ntp.rateLimit has it: `perSecond` on average, `burst` at once,
 * `maxClients` tracked (bounded memory); perSecond 0 turns it off. `who` names the client key, `over` what happens beyond it.
 */
const RateLimit = (d: { perSecond: number; burst: number; maxClients: number }, who: string, unit: string, over: string) =>
  Type.Object({
    perSecond: Type.Number({ minimum: 0, maximum: 1_000_000, default: d.perSecond, description: `${unit} per second one ${who} may make on average; 0 turns rate limiting off` }),
    burst: Type.Integer({ minimum: 1, maximum: 1_000_000, default: d.burst, description: `${unit} a ${who} may make at once before the rate applies` }),
    maxClients: Type.Integer({ minimum: 16, maximum: 10_000_000, default: d.maxClients, description: `${who}s tracked at once (bounded memory); beyond it idle ones are forgotten first, then the oldest` }),
  }, { ...strict, default: {}, description: `per-${who} token bucket: ${over}` });

export const SubnetSchema = Type.Object({
  cidr: Type.String({ description: 'the subnet, a.b.c.d/len with host bits zero' }),
  gateway: Type.Optional(Type.String({ description: 'default route handed to machines (DHCP option 3); inside the subnet' })),
  dynamicRanges: Type.Array(Type.String(), { default: [], description: 'pools for unknown/enlisting machines, "first-last" inclusive, inside the subnet, not overlapping' }),
  dnsServers: Type.Array(Type.String(), { default: [], description: 'DNS servers handed out (option 6); empty means metalbox itself' }),
  ntpServers: Type.Array(Type.String(), { default: [], description: 'NTP servers handed out (option 42); empty means metalbox itself' }),
  leaseSeconds: Type.Integer({ minimum: 60, maximum: 31_536_000, default: 3600, description: 'lease time (option 51)' }),
  excludedRanges: Type.Array(Type.String(), { default: [], description: 'addresses inside dynamic ranges never handed out, "first-last" inclusive' }),
  reservations: Type.Array(Type.Object({
    mac: Type.String({ description: 'client MAC, aa:bb:cc:dd:ee:ff' }),
    ip: Type.String({ description: 'the address this client always gets; inside the subnet, outside other reservations' }),
    hostname: Type.Optional(Type.String({ description: 'hostname handed out (option 12)' })),
  }, strict), { default: [], description: 'static reservations: MAC -> address and hostname' }),
  domainSearch: Type.Array(Type.String(), { default: [], description: 'DNS search list (option 119); empty means the domain' }),
  mtu: Type.Optional(Type.Integer({ minimum: 576, maximum: 65535, description: 'interface MTU handed out (option 26)' })),
  proxyDhcp: Type.Boolean({ default: false, description: 'another DHCP server owns the addresses: answer PXE clients with boot information only (proxyDHCP, port 4011)' }),
}, strict);

export const ConfigSchema = Type.Object({
  stateDir: Type.String({ minLength: 1, description: 'where the LevelDB store, the pid file and the control socket live' }),
  domain: Type.String({ default: 'rack.internal', pattern: '^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$', description: 'DNS domain of the rack' }),
  logLevel: Type.Enum([...LOG_LEVELS], { default: 'info', description: 'log level: fatal, error, warn, info, debug, trace, silent' }),
  http: Type.Object({
    listen: Type.String({ default: '127.0.0.1:5240', description: 'host:port of plain HTTP: boot files and scripts for firmware, /healthz, /readyz, /metrics; everything else redirects to HTTPS' }),
  }, { ...strict, default: {} }),
  api: Type.Object({
    rateLimit: RateLimit({ perSecond: 50, burst: 200, maxClients: 10_000 }, 'client address', '/api requests', 'beyond it 429 RATE_LIMITED with Retry-After'),
    bootRateLimit: RateLimit({ perSecond: 100, burst: 400, maxClients: 65_536 }, 'client address', '/boot requests (firmware, iPXE, the agent)', 'beyond it 429 RATE_LIMITED with Retry-After; generous, a booting machine fetches many files'),
  }, { ...strict, default: {}, description: 'limits of the HTTP API and HTTP boot; the console\'s files, /healthz, /readyz and /metrics are not limited' }),
  https: Type.Object({
    listen: Type.String({ default: '127.0.0.1:5443', description: 'host:port of the console and the API over HTTPS' }),
    certFile: Type.Optional(Type.String({ minLength: 1, description: 'PEM certificate (chain) to serve; default: a self-signed one made at first start in <stateDir>/tls' })),
    keyFile: Type.Optional(Type.String({ minLength: 1, description: "PEM private key of certFile (give both or neither)" })),
  }, { ...strict, default: {} }),
  interfaces: Type.Array(Type.String({ minLength: 1, maxLength: 15, pattern: '^[^/\\s]+$' }), { default: [], description: 'provisioning interfaces; network services answer on these only, and stay idle while the list is empty' }),
  subnets: Type.Array(SubnetSchema, { default: [], description: 'provisioning subnets' }),
  dhcp: Type.Object({
    ...Service(67, 'DHCP').properties,
    offerSeconds: Type.Integer({ minimum: 5, maximum: 600, default: 30, description: 'how long an offered address is held for the client' }),
    declineSeconds: Type.Integer({ minimum: 60, maximum: 604_800, default: 600, description: 'how long an address a client DECLINEd stays out of the pool' }),
    bootFiles: Type.Object({
      bios: Type.String({ default: 'undionly.kpxe', description: 'TFTP boot file for BIOS PXE (client arch 0)' }),
      uefi: Type.String({ default: 'snponly.efi', description: 'TFTP boot file for x64 UEFI PXE (client arch 7, 9)' }),
      httpBoot: Type.String({ default: 'ipxe.efi', description: 'file served by HTTP to UEFI HTTP boot clients (arch 16)' }),
    }, { ...strict, default: {} }),
    // Keyed by the client (option 61, else chaddr), never by source address: a relay carries a whole rack from one
    // address. Burst 16 covers a client's retransmissions plus a PXE DORA and iPXE's second one.
    rateLimit: RateLimit({ perSecond: 4, burst: 16, maxClients: 65_536 }, 'client', 'messages', 'keyed by the client identifier (option 61), else the hardware address, never the source address (a relay carries a whole rack); beyond it messages are dropped unanswered and counted'),
  }, { ...strict, default: {} }),
  tftp: Type.Object({
    ...Service(69, 'TFTP').properties,
    root: Type.Optional(Type.String({ minLength: 1, description: 'directory served by TFTP (default <stateDir>/tftp); nothing outside it is reachable' })),
    maxBlockSize: Type.Integer({ minimum: 512, maximum: 65464, default: 1468, description: 'largest blksize granted (RFC 2348); also capped by the interface MTU' }),
    maxWindowSize: Type.Integer({ minimum: 1, maximum: 256, default: 64, description: 'largest windowsize granted (RFC 7440)' }),
    timeoutSeconds: Type.Integer({ minimum: 1, maximum: 255, default: 1, description: 'first retransmission timeout when the client asks none (RFC 2349); doubles per retry' }),
    retries: Type.Integer({ minimum: 1, maximum: 20, default: 5, description: 'retransmissions of a block before a transfer is abandoned' }),
    maxTransfers: Type.Integer({ minimum: 1, maximum: 100_000, default: 1000, description: 'concurrent transfers in total' }),
    maxTransfersPerClient: Type.Integer({ minimum: 1, maximum: 1000, default: 4, description: 'concurrent transfers per client address' }),
    rateLimit: RateLimit({ perSecond: 5, burst: 20, maxClients: 65_536 }, 'client address', 'read/write requests', 'beyond it a client gets one ERROR a second ("rate limited"), other requests are dropped'),
  }, { ...strict, default: {} }),
  boot: Type.Object({
    ipxeDir: Type.String({ minLength: 1, default: '/usr/lib/ipxe', description: "where undionly.kpxe, ipxe.efi and snponly.efi come from (Debian's ipxe package)" }),
    assetsDir: Type.Optional(Type.String({ minLength: 1, description: 'boot image store: kernels, initrds, root filesystems (default <stateDir>/assets)' })),
    ephemeralImage: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,62}$', description: 'the registered boot image (metalbox images add) that enlisting, commissioning, deploying and rescued machines boot; the setting boot.ephemeralImage overrides it' })),
    tokenSeconds: Type.Integer({ minimum: 60, maximum: 604_800, default: 7200, description: 'lifetime of the per-boot token put on the kernel command line' }),
    maxAssetBytes: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, default: 34_359_738_368, description: 'largest boot image file (kernel, initrd, root filesystem) images add accepts' }),
  }, { ...strict, default: {} }),
  dns: Type.Object({
    ...Service(53, 'DNS').properties,
    forwarders: Type.Array(Type.String(), { default: [], description: 'upstream resolvers (IPv4, port 53) for names outside our zones, asked for clients in our subnets or on loopback only' }),
    ttl: Type.Integer({ minimum: 0, maximum: 86_400, default: 60, description: 'TTL of the records made from machines and leases and of records added without one; also the SOA minimum (negative caching)' }),
    secondaries: Type.Array(Type.String({ pattern: '^(25[0-5]|2[0-4]\\d|1?\\d?\\d)(\\.(25[0-5]|2[0-4]\\d|1?\\d?\\d)){3}(/(3[0-2]|[12]?\\d))?$' }), { default: [], description: 'addresses (a.b.c.d or a.b.c.d/len) allowed to transfer our zones (AXFR over TCP); everyone else is REFUSED' }),
    rateLimit: Type.Object({
      ...RateLimit({ perSecond: 100, burst: 200, maxClients: 65_536 }, 'client address', 'UDP queries', '').properties,
      slip: Type.Integer({ minimum: 0, maximum: 10, default: 2, description: 'every slip-th refused UDP query gets an empty truncated (TC) answer so a real client retries over TCP; 0 never, 1 always' }),
    }, { ...strict, default: {}, description: 'response rate limiting of UDP answers per client address (BIND RRL in spirit): over it queries are dropped, every slip-th answered truncated' }),
    maxTcpConnectionsPerClient: Type.Integer({ minimum: 1, maximum: 256, default: 16, description: 'DNS TCP connections one client address may hold open at once' }),
  }, { ...strict, default: {} }),
  ntp: Type.Object({
    ...Service(123, 'NTP').properties,
    upstream: Type.Array(Type.String({ pattern: '^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})(:[0-9]{1,5})?$' }), { default: [], maxItems: 16, description: 'upstream NTP servers metalbox takes its time from: IPv4 address or host name, optionally :port (default 123); metalbox serves stratum (theirs + 1) and never sets the host clock' }),
    localStratum: Type.Optional(Type.Integer({ minimum: 1, maximum: 15, description: 'while no upstream is usable, serve the local clock at this stratum instead of answering "unsynchronised" (leap 3, stratum 16); unset: never claim a time it cannot vouch for' })),
    pollSeconds: Type.Integer({ minimum: 8, maximum: 1024, default: 64, description: 'how often each upstream is queried (four quick queries at start); doubles per unanswered query or RATE kiss, up to 16 times' }),
    rateLimit: Type.Object({
      perSecond: Type.Number({ minimum: 0, maximum: 1_000_000, default: 8, description: 'requests per second one client address may make on average; 0 turns rate limiting off' }),
      burst: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 16, description: 'requests a client address may make at once before the rate applies' }),
      maxClients: Type.Integer({ minimum: 16, maximum: 10_000_000, default: 65_536, description: 'client addresses tracked at once (bounded memory); beyond it idle addresses are forgotten first' }),
    }, { ...strict, default: {}, description: 'per-address token bucket: a client over it gets one Kiss-o\'-Death RATE a second, and nothing else' }),
  }, { ...strict, default: {} }),
  bmc: Type.Object({
    pollSeconds: Type.Integer({ minimum: 0, maximum: 86_400, default: 60, description: "how often every BMC's power state is read (jittered); 0 turns the poller off" }),
    maxSessions: Type.Integer({ minimum: 1, maximum: 1024, default: 32, description: 'BMC sessions (polls and actions) running at once over all BMCs' }),
    timeoutSeconds: Type.Integer({ minimum: 1, maximum: 600, default: 20, description: 'longest one BMC operation may take, retransmissions included' }),
    unreachableAfter: Type.Integer({ minimum: 1, maximum: 1000, default: 5, description: 'consecutive failures after which a BMC is marked unreachable and polled only every unreachablePollSeconds' }),
    unreachablePollSeconds: Type.Integer({ minimum: 1, maximum: 86_400, default: 900, description: 'poll interval of an unreachable BMC (and the ceiling of the failure backoff)' }),
    wolInterface: Type.Optional(Type.String({ minLength: 1, maxLength: 15, pattern: '^[^/\\s]+$', description: 'interface Wake-on-LAN packets leave by (default: every provisioning interface)' })),
  }, { ...strict, default: {} }),
  // The defaults are src/core/lifecycle.ts PHASE_TIMEOUTS_MS (config does not import core: these are literals,
  // test/unit/config.test.ts checks they agree). A minute at least: a server's POST alone takes longer.
  lifecycle: Type.Object({
    commissionTimeoutSeconds: PhaseTimeout(1800, 'Commissioning', 'FailedCommissioning'),
    deployTimeoutSeconds: PhaseTimeout(3600, 'Deploying (until the installed system phones home)', 'FailedDeployment'),
    releaseTimeoutSeconds: PhaseTimeout(1800, 'Releasing (a full erase of large disks takes hours: raise it)', 'FailedReleasing'),
    createBmcUser: Type.Boolean({ default: true, description: "commissioning makes a metalbox user on a machine's in-band BMC when metalbox knows no BMC for it, and registers it" }),
    autoCommission: Type.Boolean({ default: false, description: 'commission a machine as soon as it has enlisted (New, from an enlisting network boot), as MAAS does' }),
  }, { ...strict, default: {} }),
  store: Type.Object({
    reserveMiB: Type.Integer({ minimum: 0, maximum: 1_048_576, default: 64, description: 'free space the state file system keeps: below it the store refuses writes (STORE_DISK_FULL; no new leases) until there is room again; 0 refuses nothing' }),
  }, { ...strict, default: {} }),
}, strict);

export type Config = Static<typeof ConfigSchema>;
export type SubnetConfig = Static<typeof SubnetSchema>;

/** The `lifecycle` section's phase timeouts in ms, keyed by phase state (MachineRegistry's `timeouts`). */
export function phaseTimeoutsMs(lifecycle: Config['lifecycle']): { Commissioning: number; Deploying: number; Releasing: number } {
  return {
    Commissioning: lifecycle.commissionTimeoutSeconds * 1000,
    Deploying: lifecycle.deployTimeoutSeconds * 1000,
    Releasing: lifecycle.releaseTimeoutSeconds * 1000,
  };
}
