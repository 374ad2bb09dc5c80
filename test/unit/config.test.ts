import t from 'tap';
import { readFileSync } from 'node:fs';
import { parseConfig, defaultConfig } from '../../src/config/load.ts';
import { ConfigSchema, phaseTimeoutsMs } from '../../src/config/schema.ts';
import { PHASE_TIMEOUTS_MS } from '../../src/core/lifecycle.ts';
import { isMetalboxError } from '../../src/lib/errors.ts';

const opts = { source: 'test.yaml', defaultStateDir: '/var/lib/mbx-test' };

const FULL = `
stateDir: /var/lib/metalbox
domain: rack.internal
http: { listen: "0.0.0.0:5240" }
interfaces: [eth1]
subnets:
  - cidr: 10.77.0.0/24
    gateway: 10.77.0.1
    dynamicRanges: ["10.77.0.100-10.77.0.199"]
    dnsServers: [10.77.0.1]
    ntpServers: [10.77.0.1]
    leaseSeconds: 3600
dhcp: { enabled: true, port: 67 }
tftp: { enabled: true, port: 69 }
dns:  { enabled: true, port: 53, forwarders: [] }
ntp:  { enabled: true, port: 123, upstream: [] }
`;

t.test('the example from the issue is valid as written', async (t) => {
  const c = parseConfig(FULL, opts);
  t.equal(c.stateDir, '/var/lib/metalbox');
  t.equal(c.subnets[0]?.leaseSeconds, 3600);
  t.same(c.interfaces, ['eth1']);
  t.ok(Object.isFrozen(c.subnets[0]), 'config is deeply frozen');
});

t.test('embedded default: state dir from the caller, console on 127.0.0.1:5240, no interfaces', async (t) => {
  const c = defaultConfig('/tmp/x');
  t.equal(c.stateDir, '/tmp/x');
  t.equal(c.http.listen, '127.0.0.1:5240');
  t.same(c.interfaces, []);
  t.equal(c.logLevel, 'info');
  t.equal(c.dhcp.port, 67);
});

t.test('lifecycle: the timeouts default to the lifecycle table; createBmcUser on, autoCommission off', async (t) => {
  const c = defaultConfig('/tmp/x');
  t.same(c.lifecycle, { commissionTimeoutSeconds: 1800, deployTimeoutSeconds: 3600, releaseTimeoutSeconds: 1800, createBmcUser: true, autoCommission: false });
  t.same(phaseTimeoutsMs(c.lifecycle), PHASE_TIMEOUTS_MS, 'the schema defaults are src/core/lifecycle.ts PHASE_TIMEOUTS_MS');
  const set = parseConfig('lifecycle:\n  commissionTimeoutSeconds: 60\n  deployTimeoutSeconds: 604800\n  releaseTimeoutSeconds: 7200\n  createBmcUser: false\n  autoCommission: true\n', opts);
  t.same(phaseTimeoutsMs(set.lifecycle), { Commissioning: 60_000, Deploying: 604_800_000, Releasing: 7_200_000 }, 'the bounds are accepted, in ms for the registry');
  t.equal(set.lifecycle.createBmcUser, false);
  t.equal(set.lifecycle.autoCommission, true);
  t.equal(parseConfig('lifecycle: { autoCommission: true }\n', opts).lifecycle.deployTimeoutSeconds, 3600, 'a partial section keeps the other defaults');
});

/** Each case: YAML, then the code and the substrings the message must hold (key path and reason). */
const BAD: [string, string, string, string[]][] = [
  ['unknown top-level key', 'stateDir: /x\nfoo: 1\n', 'CONFIG_INVALID', ['foo (line 2): unknown key']],
  ['unknown nested key', 'subnets:\n  - cidr: 10.0.0.0/24\n    bogus: 1\n', 'CONFIG_INVALID', ['subnets[0].bogus (line 3): unknown key']],
  ['wrong type', 'http: { listen: 5240 }\n', 'CONFIG_INVALID', ['http.listen', 'string']],
  ['port out of range', 'dhcp: { port: 70000 }\n', 'CONFIG_INVALID', ['dhcp.port', '65535']],
  ['bad enum', 'logLevel: loud\n', 'CONFIG_INVALID', ['logLevel (line 1): must be one of: fatal, error']],
  ['bad listen', 'http: { listen: "nowhere" }\n', 'CONFIG_INVALID', ['http.listen', 'not host:port']],
  ['host bits set', 'subnets:\n  - cidr: 10.0.0.1/24\n', 'CONFIG_INVALID', ['subnets[0].cidr (line 2)', 'host bits']],
  ['gateway outside', 'subnets:\n  - cidr: 10.0.0.0/24\n    gateway: 10.0.1.1\n', 'CONFIG_INVALID', ['subnets[0].gateway (line 3)', 'outside 10.0.0.0/24']],
  ['range reversed', 'subnets:\n  - cidr: 10.0.0.0/24\n    dynamicRanges: ["10.0.0.9-10.0.0.2"]\n', 'CONFIG_INVALID', ['subnets[0].dynamicRanges[0]', 'first <= last']],
  ['range outside', 'subnets:\n  - cidr: 10.0.0.0/24\n    dynamicRanges: ["10.0.0.9-10.0.1.2"]\n', 'CONFIG_INVALID', ['dynamicRanges[0]', 'not inside']],
  ['ranges overlap', 'subnets:\n  - cidr: 10.0.0.0/24\n    dynamicRanges: ["10.0.0.10-10.0.0.20", "10.0.0.20-10.0.0.30"]\n', 'CONFIG_INVALID', ['dynamicRanges[1]', 'overlaps dynamicRanges[0]']],
  ['subnets overlap', 'subnets:\n  - cidr: 10.0.0.0/16\n  - cidr: 10.0.5.0/24\n', 'CONFIG_INVALID', ['subnets[1].cidr', 'overlaps subnets[0]']],
  ['same port twice', 'dns: { port: 67 }\n', 'CONFIG_INVALID', ['dns.port', 'also dhcp.port']],
  ['interface twice', 'interfaces: [eth1, eth1]\n', 'CONFIG_INVALID', ['interfaces[1]', 'twice']],
  ['bad dns server', 'subnets:\n  - cidr: 10.0.0.0/24\n    dnsServers: [dns.example]\n', 'CONFIG_INVALID', ['subnets[0].dnsServers[0]', 'not an IPv4']],
  ['bad reservation mac', 'subnets:\n  - cidr: 10.0.0.0/24\n    reservations: [{ mac: "zz:00", ip: 10.0.0.5 }]\n', 'CONFIG_INVALID', ['subnets[0].reservations[0].mac', 'not a MAC']],
  ['reservation outside', 'subnets:\n  - cidr: 10.0.0.0/24\n    reservations: [{ mac: "52:54:00:00:00:01", ip: 10.0.1.5 }]\n', 'CONFIG_INVALID', ['subnets[0].reservations[0].ip', 'outside']],
  ['reservation twice', 'subnets:\n  - cidr: 10.0.0.0/24\n    reservations: [{ mac: "52:54:00:00:00:01", ip: 10.0.0.5 }, { mac: "52-54-00-00-00-01", ip: 10.0.0.6 }]\n', 'CONFIG_INVALID', ['subnets[0].reservations[1].mac', 'also reservations[0]']],
  ['reservation excluded', 'subnets:\n  - cidr: 10.0.0.0/24\n    excludedRanges: ["10.0.0.1-10.0.0.9"]\n    reservations: [{ mac: "52:54:00:00:00:01", ip: 10.0.0.5 }]\n', 'CONFIG_INVALID', ['reservations[0].ip', 'excluded']],
  ['bad hostname', 'subnets:\n  - cidr: 10.0.0.0/24\n    reservations: [{ mac: "52:54:00:00:00:01", ip: 10.0.0.5, hostname: "a_b" }]\n', 'CONFIG_INVALID', ['reservations[0].hostname', 'not a valid host name']],
  ['bad search domain', 'subnets:\n  - cidr: 10.0.0.0/24\n    domainSearch: ["-x-"]\n', 'CONFIG_INVALID', ['subnets[0].domainSearch[0]', 'not a domain']],
  ['loopback http with interfaces', 'interfaces: [eth1]\nhttp: { listen: "127.0.0.1:5240" }\n', 'CONFIG_INVALID', ['http.listen', 'loopback']],
  ['phase timeout too short', 'lifecycle: { commissionTimeoutSeconds: 59 }\n', 'CONFIG_INVALID', ['lifecycle.commissionTimeoutSeconds (line 1)', '>= 60']],
  ['phase timeout too long', 'lifecycle:\n  deployTimeoutSeconds: 604801\n', 'CONFIG_INVALID', ['lifecycle.deployTimeoutSeconds (line 2)', '<= 604800']],
  ['phase timeout not whole seconds', 'lifecycle: { releaseTimeoutSeconds: 90.5 }\n', 'CONFIG_INVALID', ['lifecycle.releaseTimeoutSeconds', 'integer']],
  ['phase timeout a string', 'lifecycle: { releaseTimeoutSeconds: "30m" }\n', 'CONFIG_INVALID', ['lifecycle.releaseTimeoutSeconds', 'integer']],
  ['createBmcUser not a boolean', 'lifecycle: { createBmcUser: "yes" }\n', 'CONFIG_INVALID', ['lifecycle.createBmcUser', 'boolean']],
  ['autoCommission not a boolean', 'lifecycle:\n  autoCommission: 1\n', 'CONFIG_INVALID', ['lifecycle.autoCommission (line 2)', 'boolean']],
  ['unknown lifecycle key', 'lifecycle:\n  commissionTimeout: 600\n', 'CONFIG_INVALID', ['lifecycle.commissionTimeout (line 2): unknown key']],
  ['not a mapping', '- a\n- b\n', 'CONFIG_INVALID', ['(top level)', 'mapping']],
  ['broken YAML', 'http: [\n', 'CONFIG_UNREADABLE', ['test.yaml', 'not valid YAML']],
  ['duplicate key', 'domain: a\ndomain: b\n', 'CONFIG_UNREADABLE', ['test.yaml:2', 'unique']],
];

for (const [name, yaml, code, needles] of BAD) {
  t.test(`bad config: ${name}`, async (t) => {
    try {
      parseConfig(yaml, opts);
      t.fail('accepted');
    } catch (err) {
      t.ok(isMetalboxError(err), 'a MetalboxError');
      t.equal((err as { code: string }).code, code);
      for (const n of needles) t.match((err as Error).message, n);
    }
  });
}

t.test('every problem is reported at once, not just the first', async (t) => {
  try {
    parseConfig('logLevel: loud\nfoo: 1\ndhcp: { port: 0 }\n', opts);
    t.fail('accepted');
  } catch (err) {
    for (const n of ['logLevel', 'foo', 'dhcp.port']) t.match((err as Error).message, n);
  }
});

t.test('the README documents every config key of the schema', async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const keys: string[] = [];
  const walk = (schema: Record<string, unknown>, prefix: string) => {
    const props = (schema.properties ?? (schema.items as Record<string, unknown> | undefined)?.properties) as Record<string, Record<string, unknown>> | undefined;
    if (!props) return;
    for (const [k, v] of Object.entries(props)) {
      const path = prefix ? `${prefix}.${k}` : k;
      keys.push(path);
      walk(v, path);
    }
  };
  walk(ConfigSchema as unknown as Record<string, unknown>, '');
  t.ok(keys.length > 20);
  for (const k of keys) t.ok(readme.includes(`\`${k}\``), `README mentions \`${k}\``);
});

t.test('the README lists every error code', async (t) => {
  const { ERROR_CODES } = await import('../../src/lib/errors.ts');
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  for (const code of [...Object.keys(ERROR_CODES), 'REQUEST_INVALID']) t.ok(readme.includes(`| \`${code}\` |`), `README lists ${code}`);
});
