// The DNS server's policy without sockets: the zones (layers, serial), the records made from leases and
// machines, the authoritative answers (NXDOMAIN vs NODATA, empty non-terminals, wildcards, CNAME chains,
// delegations, glue), who may recurse or transfer, and the forwarder (retries, failover, bounded failure,
// TTL-respecting cache) against fake upstream sockets.
import t from 'tap';
import { CLASS, decodeDns, encodeDns, OPCODE, RCODE, TYPE, type DnsMessage, type DnsRecord, type SoaData } from '../../src/protocols/dns/index.ts';
import { handleQuery, type Decision, type QueryContext } from '../../src/services/dns/answer.ts';
import { AutoRecords } from '../../src/services/dns/auto.ts';
import { cacheTtl, Forwarder, forwardedReply, type ForwardSocket } from '../../src/services/dns/forwarder.ts';
import { ptrName, Zone } from '../../src/services/dns/zone.ts';
import { MANUAL_RECORDS } from '../helpers/dns-records.ts';

const DOMAIN = 'rack.internal';
const REVERSE = '0.77.10.in-addr.arpa';

function query(name: string, type: number, over: Partial<DnsMessage> = {}): DnsMessage {
  return {
    id: 7, qr: false, opcode: 0, aa: false, tc: false, rd: true, ra: false, z: false, ad: false, cd: false, rcode: 0,
    questions: [{ name, type, class: CLASS.IN }], answers: [], authorities: [], additionals: [], ...over,
  };
}

function setup(clock = { now: Date.parse('2030-01-01T00:00:00Z') }) {
  const zone = new Zone({ forward: DOMAIN, reverse: [REVERSE], ttl: 60, now: () => clock.now });
  const machines = new Map<string, string>();
  const auto = new AutoRecords(zone, DOMAIN, (mac) => machines.get(mac), () => clock.now);
  const ctx: QueryContext = { zone, transport: 'udp', recursion: true, transferAllowed: false };
  const ask = (name: string, type: number, over: Partial<DnsMessage> = {}, c: Partial<QueryContext> = {}): Decision => handleQuery(query(name, type, over), { ...ctx, ...c });
  const reply = (name: string, type: number, over: Partial<DnsMessage> = {}, c: Partial<QueryContext> = {}): DnsMessage => {
    const d = ask(name, type, over, c);
    if (d.kind !== 'reply') throw new Error(`expected a reply, got ${d.kind}`);
    // Through the wire, as a client sees it.
    return decodeDns(encodeDns(d.reply));
  };
  const lease = (ip: string, mac: string, hostname?: string, state = 'bound', seconds = 3600) =>
    auto.lease({ ip, mac, state, expiresAt: new Date(clock.now + seconds * 1000).toISOString(), ...(hostname ? { hostname } : {}) });
  return { zone, auto, machines, ask, reply, lease, clock };
}

const data = (m: DnsMessage) => m.answers.map((a) => a.data);
const MANUAL = MANUAL_RECORDS;

t.test('authoritative answers', async (t) => {
  const s = setup();
  s.zone.setManual(MANUAL);
  let r = s.reply('WEB.Rack.Internal', TYPE.A);
  t.equal(r.rcode, RCODE.NOERROR);
  t.ok(r.aa, 'authoritative');
  t.same(data(r), ['10.77.0.5'], 'names compare without case');
  t.equal(r.questions[0]!.name, 'WEB.Rack.Internal', 'the question comes back as asked');
  t.equal(r.answers[0]!.ttl, 300, 'the record\'s own TTL');
  t.same(data(s.reply('web.rack.internal', TYPE.AAAA)), ['2001:db8::5']);

  r = s.reply('web.rack.internal', TYPE.MX);
  t.equal(r.rcode, RCODE.NOERROR, 'NODATA is NOERROR');
  t.equal(r.answers.length, 0);
  t.equal(r.authorities[0]!.type, TYPE.SOA, 'with the SOA for negative caching');
  t.equal((r.authorities[0]!.data as SoaData).minimum, 60);

  r = s.reply('nope.rack.internal', TYPE.A);
  t.equal(r.rcode, RCODE.NXDOMAIN);
  t.equal(r.authorities[0]!.type, TYPE.SOA);

  r = s.reply('_tcp.rack.internal', TYPE.A);
  t.equal(r.rcode, RCODE.NOERROR, 'an empty non-terminal exists (RFC 8020): NODATA');
  t.equal(r.answers.length, 0);

  r = s.reply('chain.rack.internal', TYPE.A);
  t.same(r.answers.map((a) => [a.name, a.type]), [['chain.rack.internal', TYPE.CNAME], ['www.rack.internal', TYPE.CNAME], ['web.rack.internal', TYPE.A]], 'CNAMEs followed inside our zones');
  t.same(data(s.reply('www.rack.internal', TYPE.CNAME)), ['web.rack.internal'], 'a CNAME asked for is the answer');
  r = s.reply('away.rack.internal', TYPE.A);
  t.same(r.answers.map((a) => a.type), [TYPE.CNAME], 'a target outside our zones is left to the client');
  r = s.reply('loop1.rack.internal', TYPE.A);
  t.equal(r.answers.length, 2, 'a CNAME loop stops');

  r = s.reply('x.apps.rack.internal', TYPE.A);
  t.same(r.answers.map((a) => [a.name, a.data]), [['x.apps.rack.internal', '10.77.0.6']], 'a wildcard answers with the name asked (RFC 4592)');
  t.equal(s.reply('x.apps.rack.internal', TYPE.TXT).rcode, RCODE.NOERROR, 'the wildcard exists: NODATA for another type');
  t.equal(s.reply('y.x.apps.rack.internal', TYPE.A).answers.length, 1, 'deeper names too');

  r = s.reply('host.lab.rack.internal', TYPE.A);
  t.notOk(r.aa, 'a referral is not authoritative');
  t.same(r.authorities.map((a) => a.data), ['ns1.lab.rack.internal']);
  t.same(r.additionals.map((a) => a.data), ['10.77.0.7'], 'with glue');

  r = s.reply('_ldap._tcp.rack.internal', TYPE.SRV);
  t.same(r.additionals.map((a) => a.data).sort(), ['10.77.0.5', '2001:db8::5'], 'SRV target addresses as additional data');
  t.same(data(s.reply('rack.internal', TYPE.MX)), [{ preference: 10, exchange: 'web.rack.internal' }]);
  r = s.reply('rack.internal', TYPE.NS);
  t.same(data(r), ['ns.rack.internal'], 'our own NS at every apex');
  t.same(data(s.reply(REVERSE, TYPE.SOA)).map((d) => (d as SoaData).mname), ['ns.rack.internal']);
  t.ok(s.reply('rack.internal', TYPE.ANY).answers.length >= 4, 'ANY gives every RRset');
});

t.test('who may recurse or transfer, and what is refused or malformed', async (t) => {
  const s = setup();
  t.same(s.ask('example.org', TYPE.A), { kind: 'forward', question: { name: 'example.org', type: TYPE.A, class: CLASS.IN } });
  t.equal(s.reply('example.org', TYPE.A, {}, { recursion: false }).rcode, RCODE.REFUSED, 'outside our subnets: no open resolver');
  t.notOk(s.reply('example.org', TYPE.A, {}, { recursion: false }).ra, 'and no RA');
  t.equal(s.reply('example.org', TYPE.A, { rd: false }).rcode, RCODE.REFUSED, 'no recursion asked: not ours');
  t.equal(s.reply('rack.internal', TYPE.AXFR).rcode, RCODE.REFUSED, 'AXFR over UDP');
  t.equal(s.reply('rack.internal', TYPE.AXFR, {}, { transport: 'tcp' }).rcode, RCODE.REFUSED, 'AXFR from a stranger');
  t.match(s.ask('rack.internal', TYPE.AXFR, {}, { transport: 'tcp', transferAllowed: true }), { kind: 'transfer', apex: 'rack.internal' });
  t.equal(s.reply('web.rack.internal', TYPE.AXFR, {}, { transport: 'tcp', transferAllowed: true }).rcode, RCODE.REFUSED, 'only a zone apex transfers');
  t.equal(s.reply('version.bind', TYPE.TXT, { questions: [{ name: 'version.bind', type: TYPE.TXT, class: CLASS.CH }] }).rcode, RCODE.REFUSED, 'CHAOS class');
  t.equal(s.reply('rack.internal', TYPE.SOA, { opcode: OPCODE.NOTIFY }).rcode, RCODE.NOTIMP);
  t.equal(s.reply('rack.internal', TYPE.SOA, { questions: [{ name: 'a', type: 1, class: 1 }, { name: 'b', type: 1, class: 1 }] }).rcode, RCODE.FORMERR);
  const badvers = s.reply('rack.internal', TYPE.SOA, { edns: { udpSize: 4096, version: 1, dnssecOk: false, flags: 0, options: [] } });
  t.equal(badvers.rcode, RCODE.BADVERS, 'EDNS version 1: BADVERS (RFC 6891 §6.1.3)');
  t.equal(badvers.edns?.version, 0);
  t.same(s.ask('rack.internal', TYPE.SOA, { qr: true }), { kind: 'drop', reason: 'response' }, 'responses are never answered');
  const edns = s.reply('rack.internal', TYPE.SOA, { edns: { udpSize: 4096, version: 0, dnssecOk: true, flags: 0, options: [] } });
  t.same(edns.edns, { udpSize: 1232, version: 0, dnssecOk: true, flags: 0, options: [] }, 'our payload size; DO echoed (RFC 3225)');
});

t.test('layers: own, then manual, then automatic; the serial grows with every change', async (t) => {
  const s = setup();
  const serial0 = s.zone.serial();
  t.equal(s.zone.serial(), serial0, 'no change, no new serial');
  s.lease('10.77.0.100', '52:54:00:00:00:01', 'web');
  const serial1 = s.zone.serial();
  t.ok(serial1 > serial0, 'a lease moves the serial');
  t.same(data(s.reply('web.rack.internal', TYPE.A)), ['10.77.0.100']);
  s.zone.setManual([{ name: 'web.rack.internal', type: 'A', value: '10.77.0.5' }]);
  t.same(data(s.reply('web.rack.internal', TYPE.A)), ['10.77.0.5'], 'a record added by hand replaces the automatic one');
  t.ok(s.zone.serial() > serial1);
  s.zone.setManual([{ name: 'web.rack.internal', type: 'CNAME', value: 'other.rack.internal' }]);
  t.same(s.reply('web.rack.internal', TYPE.A).answers.map((a) => a.type), [TYPE.CNAME], 'a CNAME by hand stands alone');
  s.zone.setManual([]);
  t.same(data(s.reply('web.rack.internal', TYPE.A)), ['10.77.0.100'], 'and the automatic record is back');
  const before = s.zone.serial();
  s.zone.setManual([]);
  t.equal(s.zone.serial(), before, 'the same records again: no change');
  s.zone.setManual([{ name: 'ns.rack.internal', type: 'TXT', value: 'x' }]);
  s.zone.setNameserverAddresses(['10.77.0.1']);
  t.same(data(s.reply('ns.rack.internal', TYPE.A)), ['10.77.0.1'], 'our own name server address');
  s.zone.restoreSerial(s.zone.serial() + 1000);
  t.ok(s.zone.serial() > before + 1000, 'never below a serial saved before a restart');
  const axfr = s.zone.transfer(DOMAIN);
  t.equal(axfr[0]!.type, TYPE.SOA);
  t.equal(axfr.at(-1)!.type, TYPE.SOA);
  t.ok(axfr.some((r) => r.name === 'web.rack.internal'), 'the transfer holds the automatic records');
  t.notOk(axfr.some((r) => r.name.endsWith('in-addr.arpa')), 'and only the zone asked for');
});

t.test('records from leases and machines', async (t) => {
  const s = setup();
  s.lease('10.77.0.100', '52:54:00:00:00:01', 'Web-1');
  t.same(data(s.reply('web-1.rack.internal', TYPE.A)), ['10.77.0.100'], 'a lease names its address by the client\'s host name');
  t.same(data(s.reply(ptrName('10.77.0.100'), TYPE.PTR)), ['web-1.rack.internal'], 'and the PTR follows');
  s.lease('10.77.0.101', '52:54:00:00:00:02');
  t.equal(s.reply(ptrName('10.77.0.101'), TYPE.PTR).rcode, RCODE.NXDOMAIN, 'no host name, no records');

  s.machines.set('52:54:00:00:00:02', 'node-a');
  s.auto.macsChanged(['52:54:00:00:00:02']);
  t.same(data(s.reply('node-a.rack.internal', TYPE.A)), ['10.77.0.101'], 'a machine names its leases');
  s.lease('10.77.0.102', '52:54:00:00:00:03', 'node-a');
  t.same(data(s.reply('node-a.rack.internal', TYPE.A)), ['10.77.0.101'], 'a client cannot take a machine\'s name');
  t.equal(s.reply(ptrName('10.77.0.102'), TYPE.PTR).rcode, RCODE.NXDOMAIN);
  s.machines.set('52:54:00:00:00:03', 'node-a');
  s.auto.macsChanged(['52:54:00:00:00:03']);
  t.same(data(s.reply('node-a.rack.internal', TYPE.A)), ['10.77.0.101', '10.77.0.102'], 'a machine with two NICs has two addresses');
  s.machines.set('52:54:00:00:00:02', 'node-b');
  s.auto.macsChanged(['52:54:00:00:00:02']);
  t.same(data(s.reply('node-b.rack.internal', TYPE.A)), ['10.77.0.101'], 'a renamed machine');
  t.same(data(s.reply('node-a.rack.internal', TYPE.A)), ['10.77.0.102']);
  t.same(data(s.reply(ptrName('10.77.0.101'), TYPE.PTR)), ['node-b.rack.internal']);
  // One NIC, two DHCP clients (the ephemeral environment's lease is not released when the installed system, with
  // another client identifier, takes its own): the name follows the NIC's lease written last.
  s.lease('10.77.0.110', '52:54:00:00:00:02', undefined, 'bound', 7200);
  t.same(data(s.reply('node-b.rack.internal', TYPE.A)), ['10.77.0.110'], 'a NIC\'s newer lease replaces its older one');
  t.equal(s.reply(ptrName('10.77.0.101'), TYPE.PTR).rcode, RCODE.NXDOMAIN, 'the older address loses its PTR');
  t.same(data(s.reply(ptrName('10.77.0.110'), TYPE.PTR)), ['node-b.rack.internal']);
  s.lease('10.77.0.110', '52:54:00:00:00:02', undefined, 'released');
  t.same(data(s.reply('node-b.rack.internal', TYPE.A)), ['10.77.0.101'], 'released: the older lease names the NIC again');

  s.lease('10.77.0.103', '52:54:00:00:00:04', 'dup', 'bound', 600);
  s.lease('10.77.0.104', '52:54:00:00:00:05', 'dup', 'bound', 1200);
  t.same(data(s.reply('dup.rack.internal', TYPE.A)), ['10.77.0.104'], 'two clients, one name: the lease written last');
  s.lease('10.77.0.104', '52:54:00:00:00:05', 'dup', 'released');
  t.same(data(s.reply('dup.rack.internal', TYPE.A)), ['10.77.0.103'], 'a released lease goes');
  t.same(data(s.reply(ptrName('10.77.0.103'), TYPE.PTR)), ['dup.rack.internal']);

  s.lease('10.88.0.5', '52:54:00:00:00:06', 'far');
  t.same(data(s.reply('far.rack.internal', TYPE.A)), ['10.88.0.5'], 'outside the reverse zones: A only');
  t.equal(s.reply(ptrName('10.88.0.5'), TYPE.PTR, {}, { recursion: false }).rcode, RCODE.REFUSED, 'that PTR is not ours');

  t.equal(s.auto.expire(), 0, 'nothing due');
  s.clock.now += 700 * 1000;
  t.equal(s.auto.expire(), 1, 'the 600 s lease expired');
  t.equal(s.reply('dup.rack.internal', TYPE.A).rcode, RCODE.NXDOMAIN, 'and its name went with it');
  s.lease('10.77.0.110', '52:54:00:00:00:07', 'old', 'bound', -5);
  t.equal(s.reply('old.rack.internal', TYPE.A).rcode, RCODE.NXDOMAIN, 'an expired lease names nothing');
  t.equal(s.auto.count, 4, 'the live leases: three in 10.77.0.0/24, one in 10.88.0.0/24');
});

// A fake upstream: each socket records what it sent; `answer` delivers a reply as if from the server.
function fakeUpstream() {
  const sent: { data: Buffer; address: string; port: number; socket: number }[] = [];
  const receivers: ((d: Buffer, a: string, p: number) => void)[] = [];
  const open = (onMessage: (d: Buffer, a: string, p: number) => void): ForwardSocket => {
    const i = receivers.push(onMessage) - 1;
    return { send: (data, address, port) => { sent.push({ data, address, port, socket: i }); return true; }, close: () => undefined };
  };
  const answer = (i: number, edit: (q: DnsMessage) => Partial<DnsMessage>, from?: { address: string; port: number }) => {
    const s = sent[i]!;
    const q = decodeDns(s.data);
    receivers[s.socket]!(encodeDns({ ...q, qr: true, ra: true, ...edit(q) }), from?.address ?? s.address, from?.port ?? s.port);
  };
  return { sent, open, answer };
}

const A = (name: string, ip: string, ttl: number): DnsRecord => ({ name, type: TYPE.A, class: CLASS.IN, ttl, data: ip });

t.test('forwarder: answers, a TTL-respecting cache, one query per question, failover, bounded failure', async (t) => {
  const clock = { now: 1_000_000 };
  const up = fakeUpstream();
  const f = new Forwarder({ servers: [{ address: '10.99.0.2', port: 53 }, { address: '10.99.0.3', port: 53 }], open: up.open, now: () => clock.now, timeoutMs: 400, attemptMs: 150 });
  f.open();
  const question = { name: 'Www.Example.org', type: TYPE.A, class: CLASS.IN };
  const p1 = f.resolve(question);
  const p2 = f.resolve({ ...question, name: 'www.example.org' });
  t.equal(up.sent.length, 1, 'two clients, one upstream query');
  const q = decodeDns(up.sent[0]!.data);
  t.ok(q.rd && q.edns?.udpSize === 1232, 'recursion desired, EDNS');
  up.answer(0, () => ({ id: (q.id + 1) & 0xffff, answers: [A('www.example.org', '192.0.2.1', 120)] }));
  up.answer(0, (m) => ({ questions: [{ ...m.questions[0]!, name: 'evil.example' }] }));
  up.answer(0, () => ({ answers: [A('www.example.org', '192.0.2.66', 120)] }), { address: '10.99.0.9', port: 53 });
  t.equal(f.stats.badAnswers, 3, 'wrong id, wrong question, wrong server: ignored');
  up.answer(0, () => ({ answers: [A('www.example.org', '192.0.2.1', 120)] }));
  const [a1, a2] = await Promise.all([p1, p2]);
  t.equal(a1, a2);
  t.same(a1!.message.answers.map((a) => a.data), ['192.0.2.1']);

  clock.now += 30_000;
  const hit = f.cached(question);
  t.ok(hit, 'cached');
  const client = query('WWW.example.org', TYPE.A, { id: 99 });
  const r = forwardedReply(client, hit!, clock.now, 1232);
  t.equal(r.answers[0]!.ttl, 90, 'TTL less the 30 s it spent in the cache');
  t.ok(r.ra && !r.aa && r.id === 99 && r.questions[0]!.name === 'WWW.example.org');
  clock.now += 91_000;
  t.equal(f.cached(question), undefined, 'gone once its TTL is over');

  // SERVFAIL from the first server: the second is asked at once.
  const p3 = f.resolve({ name: 'b.example.org', type: TYPE.A, class: CLASS.IN });
  up.answer(up.sent.length - 1, () => ({ rcode: RCODE.SERVFAIL }));
  t.equal(up.sent.at(-1)!.address, '10.99.0.3', 'failover to the next server');
  up.answer(up.sent.length - 1, () => ({ rcode: RCODE.NXDOMAIN, authorities: [{ name: 'example.org', type: TYPE.SOA, class: CLASS.IN, ttl: 900, data: { mname: 'a', rname: 'b', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 300 } }] }));
  t.equal((await p3)!.message.rcode, RCODE.NXDOMAIN);

  // Nobody answers: undefined within the bound, after retransmissions to both servers.
  const real = new Forwarder({ servers: [{ address: '10.99.0.2', port: 53 }, { address: '10.99.0.3', port: 53 }], open: fakeUpstream().open, timeoutMs: 400, attemptMs: 150 });
  const up2 = fakeUpstream();
  const silent = new Forwarder({ servers: [{ address: '10.99.0.2', port: 53 }, { address: '10.99.0.3', port: 53 }], open: up2.open, timeoutMs: 400, attemptMs: 150 });
  silent.open();
  const t0 = Date.now();
  t.equal(await silent.resolve({ name: 'c.example.org', type: TYPE.A, class: CLASS.IN }), undefined);
  const took = Date.now() - t0;
  t.ok(took >= 350 && took < 1500, `gave up after ${took} ms`);
  t.same([...new Set(up2.sent.map((s) => s.address))].sort(), ['10.99.0.2', '10.99.0.3'], 'both servers were tried');
  t.ok(up2.sent.length >= 3, `${up2.sent.length} attempts`);
  t.equal(silent.stats.timeouts, 1);
  t.equal(await real.resolve(question), undefined, 'a forwarder that was never opened answers nothing');
  silent.close();
  f.close();
});

t.test('cache TTLs: smallest answer TTL; negative answers by the SOA (RFC 2308 §5); failures never', async (t) => {
  const m = query('x', TYPE.A, { qr: true });
  t.equal(cacheTtl({ ...m, answers: [A('x', '1.1.1.1', 300), A('x', '1.1.1.2', 30)] }), 30);
  const soa: DnsRecord = { name: 'x', type: TYPE.SOA, class: CLASS.IN, ttl: 600, data: { mname: 'a', rname: 'b', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 120 } };
  t.equal(cacheTtl({ ...m, rcode: RCODE.NXDOMAIN, authorities: [soa] }), 120);
  t.equal(cacheTtl({ ...m, rcode: RCODE.NXDOMAIN }), 0, 'without an SOA a negative answer is not cached');
  t.equal(cacheTtl({ ...m, answers: [], authorities: [soa] }), 120, 'NODATA');
  t.equal(cacheTtl({ ...m, rcode: RCODE.SERVFAIL }), 0);
  t.equal(cacheTtl({ ...m, answers: [A('x', '1.1.1.1', 999_999)] }), 86_400, 'capped at a day');
});
