// The records managed by hand that the DNS answer tests and the DNS fuzz target load into a zone for
// rack.internal: every type, a CNAME chain, a CNAME out of the zone and a CNAME loop, a wildcard and a delegation.
import type { ManualRecord } from '../../src/services/dns/zone.ts';

export const MANUAL_RECORDS: readonly ManualRecord[] = [
  { name: 'web.rack.internal', type: 'A', value: '10.77.0.5', ttl: 300 },
  { name: 'web.rack.internal', type: 'AAAA', value: '2001:db8::5' },
  { name: 'www.rack.internal', type: 'CNAME', value: 'web.rack.internal' },
  { name: 'chain.rack.internal', type: 'CNAME', value: 'www.rack.internal' },
  { name: 'away.rack.internal', type: 'CNAME', value: 'example.org' },
  { name: 'loop1.rack.internal', type: 'CNAME', value: 'loop2.rack.internal' },
  { name: 'loop2.rack.internal', type: 'CNAME', value: 'loop1.rack.internal' },
  { name: '_ldap._tcp.rack.internal', type: 'SRV', value: '0 5 389 web.rack.internal', priority: 0, weight: 5, port: 389, target: 'web.rack.internal' },
  { name: 'rack.internal', type: 'MX', value: '10 web.rack.internal', priority: 10, target: 'web.rack.internal' },
  { name: 'rack.internal', type: 'TXT', value: 'v=spf1 -all' },
  { name: '*.apps.rack.internal', type: 'A', value: '10.77.0.6' },
  { name: 'lab.rack.internal', type: 'NS', value: 'ns1.lab.rack.internal' },
  { name: 'ns1.lab.rack.internal', type: 'A', value: '10.77.0.7' },
];
