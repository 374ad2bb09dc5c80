// DNS: decodeDns on a message (header, questions, the three record sections with name compression, every
// typed RDATA, unknown types, the OPT record), plus the server's path for a query that decodes: handleQuery
// against a zone with every record type, and the reply encoded as the server sends it (512 octets without
// EDNS, truncated as RFC 2181 §9 says). The DNS service has no parser of its own before decodeDns.
//
// Invariants (test/unit/dns-codec.test.ts): decode throws only DNS_* MetalboxErrors with an offset inside the
// input; a decoded message re-encodes and decodes to an equal message, names compared without ASCII case (the
// encoder compresses case-insensitively, RFC 4343 §4.1, so a name may come back with the case of the earlier
// name it points to) — unless the re-encoding had to truncate (expanded pointers past 65535 octets), when it
// must still decode; formatDns accepts it; handleQuery never throws and its reply encodes within the size the
// server gives it and decodes again.
import type * as DnsCodec from '../../../src/protocols/dns/index.ts';
import type * as DnsAnswer from '../../../src/services/dns/answer.ts';
import type * as DnsZone from '../../../src/services/dns/zone.ts';
import type { MetalboxError } from '../../../src/lib/errors.ts';
import type { DnsMessage, DnsRecord } from '../../../src/protocols/dns/index.ts';
import type { ManualRecord } from '../../../src/services/dns/zone.ts';
import { MANUAL_RECORDS } from '../../helpers/dns-records.ts';
import { loadInstrumented, reexport } from '../coverage.ts';
import type { FuzzTarget } from '../engine.ts';
import { codecTarget, decodeOrRefuse, expectEqual, InvariantError, words } from './common.ts';

type Dns = typeof DnsCodec
  & Pick<typeof DnsAnswer, 'handleQuery'>
  & Pick<typeof DnsZone, 'Zone'>
  & { MetalboxError: typeof MetalboxError };

// The answer tests' records, plus a PTR in the reverse zone.
const MANUAL: ManualRecord[] = [...MANUAL_RECORDS, { name: '5.0.77.10.in-addr.arpa', type: 'PTR', value: 'web.rack.internal' }];

/** The message with every domain name in lower case (what "equal" means for names, RFC 4343). */
function foldNames(m: DnsMessage): DnsMessage {
  const lc = (s: string): string => s.toLowerCase();
  const record = (r: DnsRecord): DnsRecord => {
    const d = r.data;
    let data = d;
    if (typeof d === 'string' && (r.type === 2 || r.type === 5 || r.type === 12)) data = lc(d);
    else if (r.type === 15 && typeof d === 'object' && 'exchange' in d) data = { ...d, exchange: lc(d.exchange) };
    else if (r.type === 33 && typeof d === 'object' && 'target' in d) data = { ...d, target: lc(d.target) };
    else if (r.type === 6 && typeof d === 'object' && 'mname' in d) data = { ...d, mname: lc(d.mname), rname: lc(d.rname) };
    return { ...r, name: lc(r.name), data };
  };
  return {
    ...m,
    questions: m.questions.map((q) => ({ ...q, name: lc(q.name) })),
    answers: m.answers.map(record),
    authorities: m.authorities.map(record),
    additionals: m.additionals.map(record),
  };
}

function seeds(d: Dns): Buffer[] {
  const base = { id: 0x1234, qr: true, opcode: 0, aa: true, tc: false, rd: true, ra: false, z: false, ad: false, cd: false, rcode: 0, answers: [], authorities: [], additionals: [] };
  const rr = (name: string, type: number, data: DnsRecord['data']): DnsRecord => ({ name, type, class: 1, ttl: 60, data });
  const q = (name: string, type: number): DnsMessage => ({ ...base, qr: false, aa: false, questions: [{ name, type, class: 1 }] });
  const messages: DnsMessage[] = [
    {
      ...base,
      questions: [{ name: 'host.rack.internal', type: 1, class: 1 }],
      answers: [
        rr('host.rack.internal', 1, '10.77.0.5'), rr('host.rack.internal', 28, '2001:db8::5'), rr('www.rack.internal', 5, 'host.rack.internal'),
        rr('5.0.77.10.in-addr.arpa', 12, 'host.rack.internal'), rr('rack.internal', 15, { preference: 10, exchange: 'mail.rack.internal' }),
        rr('txt.rack.internal', 16, [Buffer.from('v=spf1 -all'), Buffer.alloc(0)]), rr('_ldap._tcp.rack.internal', 33, { priority: 0, weight: 5, port: 389, target: 'ldap.rack.internal' }),
        rr('lab.rack.internal', 2, 'ns1.lab.rack.internal'), rr('host.rack.internal', 99, Buffer.from('unknown type data')),
        rr('odd\\.label.rack.internal', 1, '10.0.0.1'),
      ],
      authorities: [rr('rack.internal', 6, { mname: 'ns.rack.internal', rname: 'hostmaster.rack.internal', serial: 4_000_000_000, refresh: 3600, retry: 600, expire: 1_209_600, minimum: 60 })],
      additionals: [rr('ns.rack.internal', 1, '10.77.0.1')],
      edns: { udpSize: 1232, version: 0, dnssecOk: true, flags: 0, options: [{ code: 10, data: Buffer.from('0123456789abcdef', 'hex') }] },
    },
    q('web.rack.internal', 1), q('WWW.Rack.Internal', 1), q('x.apps.rack.internal', 1), q('rack.internal', 252), q('_ldap._tcp.rack.internal', 33),
    q('loop1.rack.internal', 1), q('5.0.77.10.in-addr.arpa', 12), q('deep.lab.rack.internal', 1), q('rack.internal', 255), q('example.org', 1),
    { ...q('web.rack.internal', 28), edns: { udpSize: 4096, version: 0, dnssecOk: false, flags: 0, options: [] } },
    { ...q('web.rack.internal', 1), edns: { udpSize: 512, version: 1, dnssecOk: false, flags: 0, options: [] } },
  ];
  return messages.map((m) => d.encodeDns(m));
}

const DICTIONARY = words(
  [0xc0, 0x0c], [0xc0, 0x00], [0xc0], [0x40], [0x80], [0], [0, 1, 0, 1], [0, 0x1c, 0, 1], [0, 0x29, 0x10, 0], [0, 0x29], [0, 6, 0, 1], [0, 0x0f, 0, 1],
  [0, 0x21, 0, 1], [0, 0x10, 0, 1], [0, 0xfc, 0, 1], [0, 0xff, 0, 1], [0, 0x0c, 0, 1], [0, 5, 0, 1], [0, 2, 0, 1], [0, 4],
  [3, 0x77, 0x77, 0x77], [4, 0x72, 0x61, 0x63, 0x6b, 8, ...Buffer.from('internal'), 0], [63], [1, 0x2a], [7, ...Buffer.from('in-addr'), 4, ...Buffer.from('arpa'), 0],
  [0x81, 0x80], [0x01, 0x00], [0x02, 0x00],
);

export async function createTarget(): Promise<FuzzTarget> {
  const inst = await loadInstrumented<Dns>('dns', reexport('*', 'src/protocols/dns/index.ts')
    + reexport('{ handleQuery }', 'src/services/dns/answer.ts')
    + reexport('{ Zone }', 'src/services/dns/zone.ts')
    + reexport('{ MetalboxError }', 'src/lib/errors.ts'));
  const d = inst.module;
  const zone = new d.Zone({ forward: 'rack.internal', reverse: ['0.77.10.in-addr.arpa'], ttl: 60, now: () => Date.parse('2030-01-01T00:00:00Z') });
  zone.setManual(MANUAL);
  return codecTarget('dns', inst, {
    seeds: seeds(d),
    dictionary: DICTIONARY,
    maxLen: 2048,
    run(input) {
      const m = decodeOrRefuse(() => d.decodeDns(input), d.MetalboxError, /^DNS_/, input.length, 'decodeDns');
      if (m === undefined) return;
      d.formatDns(m);
      const again = d.decodeDns(d.encodeDns(m));
      if (again.tc === m.tc) expectEqual(foldNames(again), foldNames(m), 'decodeDns(encodeDns(m)), names without case');

      for (const transport of ['udp', 'tcp'] as const) {
        const decision = d.handleQuery(m, { zone, transport, recursion: true, transferAllowed: true });
        if (decision.kind !== 'reply' && decision.kind !== 'transfer') continue;
        // As the server sends it: UDP within the client's EDNS size (512 without EDNS), TCP within 65535.
        const maxSize = transport === 'tcp' ? 0xffff : Math.max(512, Math.min(m.edns?.udpSize ?? 512, 1232));
        const wire = d.encodeDns(decision.reply, { maxSize });
        if (wire.length > maxSize) throw new InvariantError(`a ${transport} reply of ${wire.length} octets exceeds ${maxSize}`);
        d.decodeDns(wire);
      }
    },
  });
}
