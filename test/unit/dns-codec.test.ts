// The DNS codec (src/protocols/dns): round trips of every type it knows and of unknown ones, name compression
// on write, escapes in names, truncation (RFC 2181 §9), zone-transfer framing, a table of hostile messages each
// expecting its stable error code, and a fuzz pass.
import t from 'tap';
import { isMetalboxError } from '../../src/lib/errors.ts';
import {
  CLASS, decodeDns, encodeDns, encodeTransfer, formatDns, formatIPv6, isTruncated, parseIPv6, readName, RCODE, TYPE, txtStrings,
  type DnsMessage, type DnsRecord,
} from '../../src/protocols/dns/index.ts';

function message(over: Partial<DnsMessage> = {}): DnsMessage {
  return {
    id: 0x1234, qr: true, opcode: 0, aa: true, tc: false, rd: true, ra: false, z: false, ad: false, cd: false, rcode: 0,
    questions: [{ name: 'host.rack.internal', type: TYPE.A, class: CLASS.IN }], answers: [], authorities: [], additionals: [],
    ...over,
  };
}

const rr = (name: string, type: number, data: DnsRecord['data'], ttl = 60): DnsRecord => ({ name, type, class: CLASS.IN, ttl, data });

t.test('every type round-trips', async (t) => {
  const m = message({
    answers: [
      rr('host.rack.internal', TYPE.A, '10.77.0.5'),
      rr('host.rack.internal', TYPE.AAAA, '2001:db8::5'),
      rr('www.rack.internal', TYPE.CNAME, 'host.rack.internal'),
      rr('5.0.77.10.in-addr.arpa', TYPE.PTR, 'host.rack.internal'),
      rr('rack.internal', TYPE.MX, { preference: 10, exchange: 'mail.rack.internal' }),
      rr('txt.rack.internal', TYPE.TXT, [Buffer.from('v=spf1 -all'), Buffer.alloc(0), Buffer.from([0, 0xff, 0x22])]),
      rr('_ldap._tcp.rack.internal', TYPE.SRV, { priority: 0, weight: 5, port: 389, target: 'ldap.rack.internal' }),
      rr('lab.rack.internal', TYPE.NS, 'ns1.lab.rack.internal'),
      rr('host.rack.internal', 99, Buffer.from('unknown type data')),
    ],
    authorities: [rr('rack.internal', TYPE.SOA, { mname: 'ns.rack.internal', rname: 'hostmaster.rack.internal', serial: 4_000_000_000, refresh: 3600, retry: 600, expire: 1_209_600, minimum: 60 })],
    additionals: [rr('ns.rack.internal', TYPE.A, '10.77.0.1')],
    edns: { udpSize: 1232, version: 0, dnssecOk: true, flags: 0, options: [{ code: 10, data: Buffer.from('0123456789abcdef', 'hex') }] },
  });
  const wire = encodeDns(m);
  t.same(decodeDns(wire), m);
  t.match(formatDns(m), /_ldap\._tcp\.rack\.internal\.\t60\tIN\tSRV\t0 5 389 ldap\.rack\.internal\./);
  t.match(formatDns(m), /TYPE99\t\\# 17 /, 'unknown types print as RFC 3597 \\#');
  t.match(formatDns(m), /"\\000\\255\\""/, 'TXT bytes escaped');
});

t.test('the full rcode travels with EDNS; BADVERS without an OPT is a caller bug', async (t) => {
  const m = message({ rcode: RCODE.BADVERS, edns: { udpSize: 512, version: 0, dnssecOk: false, flags: 0, options: [] } });
  const wire = encodeDns(m);
  t.equal(wire[3]! & 0xf, 0, 'header holds the low 4 bits');
  t.equal(decodeDns(wire).rcode, RCODE.BADVERS);
  t.throws(() => encodeDns({ ...m, edns: undefined }), TypeError);
});

t.test('names are compressed on write, case-insensitively, and SRV targets are not', async (t) => {
  const plain = message({ answers: [rr('HOST.rack.internal', TYPE.A, '10.77.0.5')] });
  const wire = encodeDns(plain);
  // header 12 + question (20 + 4) + answer owner pointer (2) + 10 + 4
  t.equal(wire.length, 12 + 24 + 2 + 10 + 4);
  t.equal(wire.readUInt16BE(36), 0xc00c, 'the answer owner points at the question');
  const srv = message({ questions: [{ name: '_x._tcp.rack.internal', type: TYPE.SRV, class: CLASS.IN }], answers: [rr('_x._tcp.rack.internal', TYPE.SRV, { priority: 1, weight: 2, port: 3, target: 'rack.internal' })] });
  const s = encodeDns(srv);
  t.ok(s.subarray(s.length - 15).equals(Buffer.from('\x04rack\x08internal\x00', 'latin1')), 'SRV target written in full (RFC 2782)');
  const mx = message({ answers: [rr('host.rack.internal', TYPE.MX, { preference: 1, exchange: 'rack.internal' })] });
  const x = encodeDns(mx);
  t.equal(x.readUInt16BE(x.length - 2) & 0xc000, 0xc000, 'MX exchange compressed');
  t.same(decodeDns(x).answers[0]!.data, { preference: 1, exchange: 'rack.internal' });
});

t.test('names with dots, backslashes and odd bytes inside labels survive as escapes', async (t) => {
  const raw = Buffer.from([3, 0x61, 0x2e, 0x62, 4, 0x20, 0x5c, 0xff, 0x41, 0]);
  const { name, next } = readName(raw, 0);
  t.equal(name, 'a\\.b.\\032\\\\\\255A');
  t.equal(next, raw.length);
  const m = message({ questions: [{ name, type: TYPE.A, class: CLASS.IN }], answers: [rr(name, TYPE.A, '10.0.0.1')] });
  const again = decodeDns(encodeDns(m));
  t.equal(again.questions[0]!.name, name);
  t.equal(again.answers[0]!.name, name);
  t.throws(() => encodeDns(message({ questions: [{ name: 'a..b', type: 1, class: 1 }] })), TypeError, 'an empty label is a caller bug');
  t.throws(() => encodeDns(message({ questions: [{ name: `${'a'.repeat(64)}.b`, type: 1, class: 1 }] })), TypeError, 'a 64-octet label');
  t.throws(() => encodeDns(message({ questions: [{ name: Array(64).fill('abc').join('.'), type: 1, class: 1 }] })), TypeError, 'a name over 255 octets');
});

t.test('IPv6 text: RFC 5952 on output, every common form on input', async (t) => {
  t.equal(formatIPv6(parseIPv6('2001:DB8:0:0:1:0:0:1')!), '2001:db8::1:0:0:1', 'the first of two equal zero runs');
  t.equal(formatIPv6(parseIPv6('::')!), '::');
  t.equal(formatIPv6(parseIPv6('::ffff:10.0.0.1')!), '::ffff:a00:1');
  t.equal(formatIPv6(parseIPv6('2001:db8:0:1:1:1:1:1')!), '2001:db8:0:1:1:1:1:1', 'a single zero group is not ::');
  for (const bad of ['1::2::3', '12345::', '1:2:3:4:5:6:7', 'g::1', '1.2.3.4', '::1.2.3.256']) t.equal(parseIPv6(bad), undefined, bad);
});

t.test('truncation: whole RRsets or TC, OPT always kept, additional cut silently', async (t) => {
  const many = Array.from({ length: 60 }, (_, i) => rr('big.rack.internal', TYPE.A, `10.77.0.${i + 1}`));
  const q = { questions: [{ name: 'big.rack.internal', type: TYPE.A, class: CLASS.IN }] };
  const full = encodeDns(message({ ...q, answers: many }));
  t.ok(full.length > 512 && !isTruncated(full), `untruncated: ${full.length} octets`);
  const cut = encodeDns(message({ ...q, answers: many }), { maxSize: 512 });
  t.ok(isTruncated(cut), 'TC set');
  t.ok(cut.length <= 512);
  t.equal(decodeDns(cut).answers.length, 0, 'a partial RRset is never sent');
  const withOpt = encodeDns(message({ ...q, answers: many, edns: { udpSize: 1232, version: 0, dnssecOk: false, flags: 0, options: [] } }), { maxSize: 512 });
  t.ok(isTruncated(withOpt) && decodeDns(withOpt).edns !== undefined, 'the OPT record survives truncation');
  const two = encodeDns(message({ ...q, answers: [rr('big.rack.internal', TYPE.A, '10.0.0.1'), ...Array.from({ length: 40 }, (_, i) => rr('other.rack.internal', TYPE.A, `10.1.0.${i}`))] }), { maxSize: 512 });
  t.equal(decodeDns(two).answers.length, 1, 'the RRsets that fit are kept');
  const extra = encodeDns(message({ ...q, answers: [many[0]!], additionals: many }), { maxSize: 512 });
  t.notOk(isTruncated(extra), 'no TC for the additional section (RFC 2181 §9)');
  t.equal(decodeDns(extra).answers.length, 1);
  t.equal(decodeDns(extra).additionals.length, 0);
});

t.test('zone transfer framing: messages of at most maxSize, question in the first only', async (t) => {
  const head = message({ questions: [{ name: 'rack.internal', type: TYPE.AXFR, class: CLASS.IN }] });
  const soa = rr('rack.internal', TYPE.SOA, { mname: 'ns.rack.internal', rname: 'hostmaster.rack.internal', serial: 7, refresh: 1, retry: 1, expire: 1, minimum: 1 });
  const records = [soa, ...Array.from({ length: 500 }, (_, i) => rr(`h${i}.rack.internal`, TYPE.A, '10.0.0.1')), soa];
  const parts = encodeTransfer(head, records, 2048);
  t.ok(parts.length > 3, `${parts.length} messages`);
  t.ok(parts.every((p) => p.length <= 2048));
  const decoded = parts.map(decodeDns);
  t.equal(decoded[0]!.questions.length, 1);
  t.ok(decoded.slice(1).every((m) => m.questions.length === 0));
  t.equal(decoded.reduce((n, m) => n + m.answers.length, 0), records.length, 'every record once');
  t.same(decoded[decoded.length - 1]!.answers.at(-1), soa, 'ends with the SOA');
});

// A query header: id 0xabcd, RD, and the four counts.
function header(qd: number, an = 0, ns = 0, ar = 0, flags = 0x0100): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(0xabcd, 0); b.writeUInt16BE(flags, 2);
  b.writeUInt16BE(qd, 4); b.writeUInt16BE(an, 6); b.writeUInt16BE(ns, 8); b.writeUInt16BE(ar, 10);
  return b;
}
const q = (name: number[]) => Buffer.from([...name, 0, 1, 0, 1]);
const NAME = [4, 0x68, 0x6f, 0x73, 0x74, 0]; // "host"
const rrBytes = (type: number, rdata: number[], owner = [0xc0, 12]) => Buffer.from([...owner, type >> 8, type & 0xff, 0, 1, 0, 0, 0, 60, rdata.length >> 8, rdata.length & 0xff, ...rdata]);
const opt = (owner = [0], rdata: number[] = []) => Buffer.from([...owner, 0, 41, 4, 0xd0, 0, 0, 0, 0, rdata.length >> 8, rdata.length & 0xff, ...rdata]);

const HOSTILE: [string, Buffer, string][] = [
  ['shorter than the header', Buffer.alloc(11), 'DNS_TRUNCATED'],
  ['a question count with no question', header(1), 'DNS_TRUNCATED'],
  ['65535 questions, one present', Buffer.concat([header(65535), q(NAME)]), 'DNS_TRUNCATED'],
  ['question without type and class', Buffer.concat([header(1), Buffer.from(NAME)]), 'DNS_TRUNCATED'],
  ['label runs past the end', Buffer.concat([header(1), Buffer.from([10, 0x61, 0x62])]), 'DNS_TRUNCATED'],
  ['name without its terminating zero', Buffer.concat([header(1), Buffer.from([1, 0x61])]), 'DNS_TRUNCATED'],
  ['pointer to itself', Buffer.concat([header(1), q([0xc0, 12])]), 'DNS_BAD_POINTER'],
  ['pointer forward', Buffer.concat([header(1), q([0xc0, 14])]), 'DNS_BAD_POINTER'],
  ['pointer past the end', Buffer.concat([header(1), q([0xff, 0xff])]), 'DNS_BAD_POINTER'],
  // The question's name goes on at the answer's owner (20), which points back at the question (12).
  ['two pointers in a loop', Buffer.concat([header(1, 1), q([1, 0x61, 0xc0, 20]), rrBytes(1, [1, 2, 3, 4])]), 'DNS_BAD_POINTER'],
  ['pointer into its own label run', Buffer.concat([header(1), q([1, 0x61, 0xc0, 12])]), 'DNS_BAD_POINTER'],
  ['pointer cut short', Buffer.concat([header(1), Buffer.from([0xc0])]), 'DNS_TRUNCATED'],
  ['extended label type 0x40', Buffer.concat([header(1), q([0x41, 0x61])]), 'DNS_BAD_LABEL'],
  ['label type 0x80', Buffer.concat([header(1), q([0x81, 0x61])]), 'DNS_BAD_LABEL'],
  ['name over 255 octets', Buffer.concat([header(1), q([...Array(5).fill([63, ...Array(63).fill(0x61)]).flat()])]), 'DNS_NAME_TOO_LONG'],
  ['name over 255 octets through pointers', Buffer.concat([header(1, 1), q([63, ...Array(63).fill(0x61), 63, ...Array(63).fill(0x62), 63, ...Array(63).fill(0x63), 0]), rrBytes(1, [1, 2, 3, 4], [63, ...Array(63).fill(0x64), 0xc0, 12])]), 'DNS_NAME_TOO_LONG'],
  ['answer count with no answer', Buffer.concat([header(1, 1), q(NAME)]), 'DNS_TRUNCATED'],
  ['record header cut', Buffer.concat([header(1, 1), q(NAME), Buffer.from([0xc0, 12, 0, 1, 0, 1, 0])]), 'DNS_TRUNCATED'],
  ['RDLENGTH past the end', Buffer.concat([header(1, 1), q(NAME), rrBytes(1, [1, 2, 3, 4]).subarray(0, 14)]), 'DNS_TRUNCATED'],
  ['A of 5 octets', Buffer.concat([header(1, 1), q(NAME), rrBytes(1, [1, 2, 3, 4, 5])]), 'DNS_BAD_RDATA'],
  ['AAAA of 4 octets', Buffer.concat([header(1, 1), q(NAME), rrBytes(28, [1, 2, 3, 4])]), 'DNS_BAD_RDATA'],
  ['CNAME with bytes after the name', Buffer.concat([header(1, 1), q(NAME), rrBytes(5, [0xc0, 12, 9])]), 'DNS_BAD_RDATA'],
  ['CNAME name runs past the RDATA', Buffer.concat([header(1, 1), q(NAME), rrBytes(5, [4, 0x61, 0x62]), Buffer.from([0x63, 0x64, 0])]), 'DNS_TRUNCATED'],
  ['MX shorter than its preference', Buffer.concat([header(1, 1), q(NAME), rrBytes(15, [0])]), 'DNS_BAD_RDATA'],
  ['SRV without a target', Buffer.concat([header(1, 1), q(NAME), rrBytes(33, [0, 1, 0, 2, 0, 3])]), 'DNS_TRUNCATED'],
  ['SOA without its numbers', Buffer.concat([header(1, 1), q(NAME), rrBytes(6, [0xc0, 12, 0xc0, 12, 0, 0, 0, 1])]), 'DNS_BAD_RDATA'],
  ['TXT string past the RDATA', Buffer.concat([header(1, 1), q(NAME), rrBytes(16, [5, 0x61, 0x62])]), 'DNS_BAD_RDATA'],
  ['two OPT records', Buffer.concat([header(1, 0, 0, 2), q(NAME), opt(), opt()]), 'DNS_BAD_OPT'],
  ['OPT in the answer section', Buffer.concat([header(1, 1), q(NAME), opt()]), 'DNS_BAD_OPT'],
  ['OPT not owned by the root', Buffer.concat([header(1, 0, 0, 1), q(NAME), opt([0xc0, 12])]), 'DNS_BAD_OPT'],
  ['EDNS option past the RDATA', Buffer.concat([header(1, 0, 0, 1), q(NAME), opt([0], [0, 10, 0, 8, 1, 2])]), 'DNS_BAD_OPT'],
  ['EDNS option header cut', Buffer.concat([header(1, 0, 0, 1), q(NAME), opt([0], [0, 10])]), 'DNS_BAD_OPT'],
  ['octets after the last record', Buffer.concat([header(1), q(NAME), Buffer.from([0])]), 'DNS_TRAILING_DATA'],
  ['counts smaller than the records', Buffer.concat([header(1, 0), q(NAME), rrBytes(1, [1, 2, 3, 4])]), 'DNS_TRAILING_DATA'],
];

t.test('hostile messages: each fails with its stable code and the offset', async (t) => {
  for (const [what, bytes, code] of HOSTILE) {
    try {
      decodeDns(bytes);
      t.fail(`${what}: decoded`);
    } catch (err) {
      t.ok(isMetalboxError(err) && err.code === code, `${what}: ${isMetalboxError(err) ? err.code : String(err)} (want ${code})`);
      t.type(isMetalboxError(err) ? err.details?.offset : undefined, 'number', `${what}: the offset is recorded`);
    }
  }
  // The good twin of the loop case decodes: pointers backwards are fine, however many.
  const chain = decodeDns(Buffer.concat([header(1, 2), q(NAME), rrBytes(5, [1, 0x61, 0xc0, 12]), rrBytes(5, [1, 0x62, 0xc0, 34])]));
  t.same(chain.answers.map((a) => a.data), ['a.host', 'b.a.host']);
});

t.test('fuzz: mutated and cut messages decode or fail with a DNS_ code; what decodes round-trips', async (t) => {
  const seeds = [
    encodeDns(message({ answers: [rr('host.rack.internal', TYPE.A, '10.0.0.1'), rr('host.rack.internal', TYPE.MX, { preference: 1, exchange: 'mx.rack.internal' })], edns: { udpSize: 1232, version: 0, dnssecOk: false, flags: 0, options: [{ code: 10, data: Buffer.alloc(8, 1) }] } })),
    encodeDns(message({ authorities: [rr('rack.internal', TYPE.SOA, { mname: 'ns.rack.internal', rname: 'h.rack.internal', serial: 1, refresh: 2, retry: 3, expire: 4, minimum: 5 })], answers: [rr('t.rack.internal', TYPE.TXT, txtStrings('x'.repeat(300)))] })),
    encodeDns(message({ answers: [rr('_s._tcp.rack.internal', TYPE.SRV, { priority: 1, weight: 2, port: 3, target: 'host.rack.internal' }), rr('h.rack.internal', TYPE.AAAA, '::1'), rr('p.rack.internal', TYPE.PTR, 'host.rack.internal')] })),
  ];
  let seed = 12345;
  const rand = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  let decoded = 0;
  let failed = 0;
  const foreign: string[] = [];
  for (let i = 0; i < 20_000; i++) {
    const base = seeds[i % seeds.length]!;
    let b = Buffer.from(base);
    const kind = rand(3);
    if (kind === 0) for (let k = 0; k <= rand(4); k++) b[rand(b.length)] = rand(256);
    else if (kind === 1) b = b.subarray(0, rand(b.length));
    else { b[rand(b.length)] = 0xc0; b[rand(b.length)] = rand(256); }
    let m: DnsMessage;
    try {
      m = decodeDns(b);
    } catch (err) {
      failed++;
      if (!isMetalboxError(err) || !err.code.startsWith('DNS_')) foreign.push(`${b.toString('hex')}: ${String(err)}`);
      continue;
    }
    decoded++;
    try {
      const again = decodeDns(encodeDns(m));
      if (JSON.stringify(again) !== JSON.stringify(m)) foreign.push(`${b.toString('hex')}: round trip differs`);
    } catch (err) {
      foreign.push(`${b.toString('hex')}: re-encode: ${String(err)}`);
    }
  }
  t.same(foreign.slice(0, 5), [], 'no other error, and every decoded message round-trips');
  t.ok(decoded > 1000 && failed > 1000, `both outcomes exercised (${decoded} decoded, ${failed} refused)`);
});
