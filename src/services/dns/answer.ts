// Per-query policy: a decoded query and what the server knows in, a decision out (reply, forward, zone
// transfer, drop). No sockets, no clock: the service (server.ts) carries the decision out.
//
// The authoritative lookup is RFC 1034 §4.3.2 for the zones of zone.ts: delegations below an apex give a
// referral, CNAMEs are followed inside our zones (RFC 1034 §3.6.2, at most MAX_CHAIN links), wildcards
// (RFC 4592) answer for names that do not exist below an existing closest encloser, and a name that does not
// exist is NXDOMAIN while a name that exists without the type asked is NODATA (NOERROR, empty answer), both
// with the zone's SOA in the authority section for negative caching (RFC 2308 §3).
import { CLASS, OPCODE, RCODE, TYPE, type DnsMessage, type DnsQuestion, type DnsRecord, type MxData, type SrvData } from '../../protocols/dns/index.ts';
import type { Zone } from './zone.ts';

/** Our UDP payload size in EDNS answers: the DNS flag day 2020 value, below every common path MTU. */
export const SERVER_UDP_PAYLOAD = 1232;
const MAX_CHAIN = 8;

export interface QueryContext {
  zone: Zone;
  transport: 'udp' | 'tcp';
  /** The client may use the forwarders: it is inside our subnets or on loopback (no open resolver). */
  recursion: boolean;
  /** The client is a configured secondary (AXFR/IXFR allowed). */
  transferAllowed: boolean;
}

export type DropReason = 'response' | 'no-question';

export type Decision =
  | { kind: 'reply'; reply: DnsMessage; outcome: Outcome }
  | { kind: 'forward'; question: DnsQuestion }
  | { kind: 'transfer'; apex: string; reply: DnsMessage }
  | { kind: 'drop'; reason: DropReason };

/** What an answer was, for the metrics. */
export type Outcome = 'answer' | 'nodata' | 'nxdomain' | 'referral' | 'refused' | 'formerr' | 'notimp' | 'badvers';

/** The reply skeleton: our flags, the client's question and EDNS answered with ours (RFC 6891 §6.1.1). */
export function replyTo(q: DnsMessage, rcode: number, ctx: { recursion: boolean }): DnsMessage {
  const r: DnsMessage = {
    id: q.id, qr: true, opcode: q.opcode, aa: false, tc: false, rd: q.rd, ra: ctx.recursion, z: false, ad: false, cd: q.cd,
    rcode, questions: q.questions, answers: [], authorities: [], additionals: [],
  };
  if (q.edns) r.edns = { udpSize: SERVER_UDP_PAYLOAD, version: 0, dnssecOk: q.edns.dnssecOk, flags: 0, options: [] };
  return r;
}

export function handleQuery(q: DnsMessage, ctx: QueryContext): Decision {
  // Never answer a response: two servers would bounce an error back and forth forever.
  if (q.qr) return { kind: 'drop', reason: 'response' };
  if (q.edns && q.edns.version > 0) {
    // RFC 6891 §6.1.3: BADVERS, with our highest version (0).
    return { kind: 'reply', reply: replyTo(q, RCODE.BADVERS, ctx), outcome: 'badvers' };
  }
  if (q.opcode !== OPCODE.QUERY) return { kind: 'reply', reply: replyTo(q, RCODE.NOTIMP, ctx), outcome: 'notimp' };
  if (q.questions.length !== 1) {
    if (q.questions.length === 0 && !q.edns) return { kind: 'drop', reason: 'no-question' };
    return { kind: 'reply', reply: replyTo(q, RCODE.FORMERR, ctx), outcome: 'formerr' };
  }
  const question = q.questions[0]!;
  if (question.type === TYPE.OPT) return { kind: 'reply', reply: replyTo(q, RCODE.FORMERR, ctx), outcome: 'formerr' };
  if (question.class !== CLASS.IN) return refuse(q, ctx);
  const name = question.name.toLowerCase();
  const { zone } = ctx;
  // The SOA's serial moves when it is read after a change (zone.ts).
  if (question.type === TYPE.SOA || question.type === TYPE.ANY) zone.serial();

  if (question.type === TYPE.AXFR || question.type === TYPE.IXFR) {
    // RFC 5936 §4.2: zone transfers over TCP only, and only to the secondaries we were told of.
    const apex = zone.zoneOf(name);
    if (ctx.transport !== 'tcp' || !ctx.transferAllowed || apex !== name) return refuse(q, ctx);
    const r = replyTo(q, RCODE.NOERROR, ctx);
    r.aa = true;
    return { kind: 'transfer', apex, reply: r };
  }

  // The common case first: a name we hold, with the type asked, and no delegation anywhere.
  const node = zone.get(name);
  if (node !== undefined && !zone.hasCuts) {
    const set = node.get(question.type);
    if (set !== undefined) {
      const r = replyTo(q, RCODE.NOERROR, ctx);
      r.aa = true;
      r.answers = set.records;
      if (question.type === TYPE.MX || question.type === TYPE.SRV || question.type === TYPE.NS) r.additionals = glue(zone, set.records);
      return { kind: 'reply', reply: r, outcome: 'answer' };
    }
  }
  const apex = zone.zoneOf(name);
  if (apex === undefined) {
    if (ctx.recursion && q.rd) return { kind: 'forward', question };
    return refuse(q, ctx);
  }
  return authoritative(q, question, name, apex, ctx);
}

function refuse(q: DnsMessage, ctx: QueryContext): Decision {
  return { kind: 'reply', reply: replyTo(q, RCODE.REFUSED, ctx), outcome: 'refused' };
}

function authoritative(q: DnsMessage, question: DnsQuestion, qname: string, qapex: string, ctx: QueryContext): Decision {
  const { zone } = ctx;
  const r = replyTo(q, RCODE.NOERROR, ctx);
  r.aa = true;
  const answers: DnsRecord[] = [];
  const seen = new Set<string>();
  let name = qname;
  let apex = qapex;
  let owner = question.name;
  for (let hop = 0; hop < MAX_CHAIN; hop++) {
    seen.add(name);
    const cut = zone.cutOf(name, apex);
    if (cut !== undefined && !(cut === name && question.type === TYPE.DS)) {
      // RFC 1034 §4.3.2 3b: a referral; not authoritative for what lies below the cut.
      const ns = zone.get(cut)!.get(TYPE.NS)!.records;
      r.answers = answers;
      r.aa = answers.length > 0;
      r.authorities = ns;
      r.additionals = glue(zone, ns);
      return { kind: 'reply', reply: r, outcome: answers.length > 0 ? 'answer' : 'referral' };
    }
    let node = zone.get(name);
    let synthesized = false;
    if (node === undefined && !zone.exists(name)) {
      // RFC 4592 §3.3.1: the closest encloser's wildcard, if it has one.
      let encloser = name;
      while (encloser !== apex && !zone.exists(encloser)) encloser = encloser.slice(encloser.indexOf('.') + 1);
      node = encloser !== name ? zone.get(`*.${encloser}`) : undefined;
      if (node === undefined) {
        // RFC 6604 §3: the rcode speaks of the last name of the chain.
        r.rcode = RCODE.NXDOMAIN;
        r.answers = answers;
        r.authorities = [zone.soa(apex)];
        return { kind: 'reply', reply: r, outcome: 'nxdomain' };
      }
      synthesized = true;
    }
    const own = (records: readonly DnsRecord[]): DnsRecord[] => (synthesized ? records.map((x) => ({ ...x, name: owner })) : [...records]);
    if (node !== undefined) {
      if (question.type === TYPE.ANY) {
        // RFC 8482 allows less; our RRsets are few and small.
        for (const set of node.values()) answers.push(...own(set.records));
        r.answers = answers;
        return { kind: 'reply', reply: r, outcome: 'answer' };
      }
      const set = node.get(question.type);
      if (set !== undefined) {
        answers.push(...own(set.records));
        r.answers = answers;
        if (question.type === TYPE.MX || question.type === TYPE.SRV || question.type === TYPE.NS) r.additionals = glue(zone, set.records);
        return { kind: 'reply', reply: r, outcome: 'answer' };
      }
      const cname = node.get(TYPE.CNAME);
      if (cname !== undefined && question.type !== TYPE.CNAME) {
        answers.push(...own(cname.records));
        const target = (cname.records[0]!.data as string).toLowerCase();
        const targetApex = zone.zoneOf(target);
        // Outside our zones, or a loop: the client's resolver takes it from here (RFC 1034 §4.3.2 3a).
        if (targetApex === undefined || seen.has(target)) {
          r.answers = answers;
          return { kind: 'reply', reply: r, outcome: 'answer' };
        }
        name = target;
        owner = target;
        apex = targetApex;
        continue;
      }
    }
    // NODATA (RFC 2308 §2.2): the name exists, the type does not.
    r.answers = answers;
    r.authorities = [zone.soa(apex)];
    return { kind: 'reply', reply: r, outcome: answers.length > 0 ? 'answer' : 'nodata' };
  }
  r.answers = answers;
  return { kind: 'reply', reply: r, outcome: 'answer' };
}

/** A and AAAA records of the hosts NS, MX and SRV records name, when they are ours (RFC 1035 §3.3.9, RFC 2782). */
function glue(zone: Zone, records: readonly DnsRecord[]): DnsRecord[] {
  const out: DnsRecord[] = [];
  const seen = new Set<string>();
  for (const rec of records) {
    const target = (rec.type === TYPE.MX ? (rec.data as MxData).exchange : rec.type === TYPE.SRV ? (rec.data as SrvData).target : rec.data as string).toLowerCase();
    if (seen.has(target)) continue;
    seen.add(target);
    const node = zone.get(target);
    if (!node) continue;
    for (const t of [TYPE.A, TYPE.AAAA]) { const set = node.get(t); if (set) out.push(...set.records); }
  }
  return out;
}
