// The one configuration schema. Every key is documented here (description) and in the README's
// config reference; `test/unit/config.test.ts` checks the two agree. Unknown keys are errors
// (additionalProperties: false everywhere), so a typo never silently falls back to a default.
import Type, { type Static } from 'typebox';
import { LOG_LEVELS } from '../lib/logger.ts';

const strict = { additionalProperties: false } as const;
const Port = (def: number, description: string) => Type.Integer({ minimum: 1, maximum: 65535, default: def, description });

const Service = (port: number, what: string) =>
  Type.Object({
    enabled: Type.Boolean({ default: true, description: `serve ${what} on the provisioning interfaces` }),
    port: Port(port, `UDP port for ${what}`),
  }, strict);

export const SubnetSchema = Type.Object({
  cidr: Type.String({ description: 'the subnet, a.b.c.d/len with host bits zero' }),
  gateway: Type.Optional(Type.String({ description: 'default route handed to machines (DHCP option 3); inside the subnet' })),
  dynamicRanges: Type.Array(Type.String(), { default: [], description: 'pools for unknown/enlisting machines, "first-last" inclusive, inside the subnet, not overlapping' }),
  dnsServers: Type.Array(Type.String(), { default: [], description: 'DNS servers handed out (option 6); empty means metalbox itself' }),
  ntpServers: Type.Array(Type.String(), { default: [], description: 'NTP servers handed out (option 42); empty means metalbox itself' }),
  leaseSeconds: Type.Integer({ minimum: 60, maximum: 31_536_000, default: 3600, description: 'lease time (option 51)' }),
}, strict);

export const ConfigSchema = Type.Object({
  stateDir: Type.String({ minLength: 1, description: 'where the LevelDB store, the pid file and the control socket live' }),
  domain: Type.String({ default: 'rack.internal', pattern: '^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$', description: 'DNS domain of the rack' }),
  logLevel: Type.Enum([...LOG_LEVELS], { default: 'info', description: 'log level: fatal, error, warn, info, debug, trace, silent' }),
  http: Type.Object({
    listen: Type.String({ default: '127.0.0.1:5240', description: 'host:port of the console, API and HTTP boot' }),
  }, { ...strict, default: {} }),
  interfaces: Type.Array(Type.String({ minLength: 1, maxLength: 15, pattern: '^[^/\\s]+$' }), { default: [], description: 'provisioning interfaces; network services answer on these only, and stay idle while the list is empty' }),
  subnets: Type.Array(SubnetSchema, { default: [], description: 'provisioning subnets' }),
  dhcp: Type.Object({ ...Service(67, 'DHCP').properties }, { ...strict, default: {} }),
  tftp: Type.Object({ ...Service(69, 'TFTP').properties }, { ...strict, default: {} }),
  dns: Type.Object({
    ...Service(53, 'DNS').properties,
    forwarders: Type.Array(Type.String(), { default: [], description: 'upstream resolvers for names outside our zones' }),
  }, { ...strict, default: {} }),
  ntp: Type.Object({
    ...Service(123, 'NTP').properties,
    upstream: Type.Array(Type.String(), { default: [], description: 'upstream NTP servers metalbox takes its time from' }),
  }, { ...strict, default: {} }),
}, strict);

export type Config = Static<typeof ConfigSchema>;
export type SubnetConfig = Static<typeof SubnetSchema>;
