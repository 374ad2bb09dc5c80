// A metalbox DNS server as its own process, wired as main.ts wires it (DNS beside DHCP, the machine registry
// and the DNS records of the API), for the integration tests and the benchmark:
//
//   node --import tsx test/helpers/dns-server.ts CONFIG.yaml [SEED.json]
//
// The store is in memory. SEED.json (optional) holds {"leases": [LeaseRecord...], "machines": [{mac, hostname}],
// "records": [DnsRecordInput...]} written before the services start. The process prints one JSON line
// {"ready": true, ...} when every service is up, then takes commands on stdin, one JSON object per line, and
// answers each with one JSON line on stdout:
//
//   {"op":"record","input":{name,type,value,...}}   add a DNS record as the API does -> {"ok":true,"record":...}
//   {"op":"delete","id":ID}                         delete one -> {"ok":true}
//   {"op":"machine","mac":M,"hostname":H}           create a machine -> {"ok":true,"id":...}
//   {"op":"rename","id":ID,"hostname":H}            change its host name -> {"ok":true}
//   {"op":"metrics"}                                -> {"ok":true,"text":"...prometheus text..."}
//   {"op":"serial"}                                 -> {"ok":true,"serial":N}
//
// SIGTERM stops the services in reverse order and exits 0.
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { createInterface } from 'node:readline';
import { loadConfigFile } from '../../src/config/load.ts';
import { DnsRecords, type DnsRecordInput } from '../../src/core/dns-records.ts';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { createLogger, type LogLevel } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { defaultBoot } from '../../src/services/dhcp/boot.ts';
import { DhcpService } from '../../src/services/dhcp/server.ts';
import { DnsService } from '../../src/services/dns/server.ts';
import type { Service } from '../../src/services/service.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { LeaseRecord } from '../../src/store/types.ts';

interface Seed {
  leases?: LeaseRecord[];
  machines?: { mac: string; hostname: string }[];
  records?: DnsRecordInput[];
}

const [configFile, seedFile] = process.argv.slice(2);
if (!configFile) throw new Error('usage: dns-server.ts CONFIG.yaml [SEED.json]');
const config = loadConfigFile(configFile, '/tmp/metalbox-dns-test');
const logger = createLogger((process.env.MBX_LOG_LEVEL ?? config.logLevel) as LogLevel, process.stderr);
const store = createMemoryStore();
const events = new EventLog(store);
await events.init();
const metrics = createMetrics();
const registry = await MachineRegistry.open({ store, events });
const records = new DnsRecords({ store, events, domain: config.domain, subnets: config.subnets });
const actor = { actor: 'test' };

if (seedFile) {
  const seed = JSON.parse(readFileSync(seedFile, 'utf8')) as Seed;
  const leases = seed.leases ?? [];
  for (let i = 0; i < leases.length; i += 1000) await store.write(leases.slice(i, i + 1000).map((l) => ({ type: 'put' as const, collection: 'leases' as const, key: l.ip, value: l })));
  for (const m of seed.machines ?? []) await registry.create({ mac: m.mac, hostname: m.hostname }, actor);
  for (const r of seed.records ?? []) await records.create(r, actor);
}

// main.ts: the DNS service exists before DHCP, which tells it of every lease change it made durable.
// MBX_DNS_PACKET_CACHE=0 turns the packet cache off (the benchmark measures both).
const packetCacheEntries = process.env.MBX_DNS_PACKET_CACHE === undefined ? undefined : Number(process.env.MBX_DNS_PACKET_CACHE);
const dns = new DnsService({
  config, store, metrics, machines: registry, logger: logger.child({ svc: 'dns' }), interfaceAddresses: () => networkInterfaces(),
  ...(packetCacheEntries !== undefined ? { packetCacheEntries } : {}),
});
const services: Service[] = [registry];
if (config.interfaces.length > 0 && config.dhcp.enabled) {
  services.push(new DhcpService({
    config, store, events, metrics, logger: logger.child({ svc: 'dhcp' }), boot: defaultBoot(config.dhcp.bootFiles, 5240),
    interfaceAddresses: () => networkInterfaces(), onLeaseChange: (c) => dns.leaseChanged(c),
  }));
}
if (config.interfaces.length > 0 && config.dns.enabled) services.push(dns);
const abort = new AbortController();
for (const s of services) await s.start(abort.signal);
const say = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
say({ ready: true, pid: process.pid, records: dns.zoneData?.size() });

let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  abort.abort();
  void (async () => {
    for (const s of [...services].reverse()) await s.stop();
    process.exit(0);
  })();
});

createInterface({ input: process.stdin }).on('line', (line) => {
  void (async () => {
    try {
      const cmd = JSON.parse(line) as { op: string; input?: DnsRecordInput; id?: string; mac?: string; hostname?: string };
      switch (cmd.op) {
        case 'record': say({ ok: true, record: await records.create(cmd.input!, actor) }); break;
        case 'delete': await records.remove(cmd.id!, actor); say({ ok: true }); break;
        case 'machine': say({ ok: true, id: (await registry.create({ mac: cmd.mac!, hostname: cmd.hostname! }, actor)).id }); break;
        case 'rename': await registry.update(cmd.id!, { hostname: cmd.hostname! }, actor); say({ ok: true }); break;
        case 'metrics': say({ ok: true, text: await metrics.registry.metrics() }); break;
        case 'serial': say({ ok: true, serial: dns.zoneData.serial() }); break;
        default: say({ ok: false, error: `unknown op ${cmd.op}` });
      }
    } catch (err) {
      say({ ok: false, error: (err as Error).message, code: (err as { code?: string }).code });
    }
  })();
});
