// A stable text dump of a DNS message for golden files and logs, in zone-file presentation (RFC 1035 §5.1)
// close to what dig prints.
import { className, OPCODE_NAMES, rcodeName, TYPE, typeName } from './constants.ts';
import type { DnsMessage, DnsRecord, MxData, SoaData, SrvData } from './message.ts';

function fqdn(name: string): string {
  return `${name}.`.replace(/^\.$/, '.');
}

function quoted(b: Buffer): string {
  let s = '"';
  for (const c of b) {
    if (c === 0x22 || c === 0x5c) s += `\\${String.fromCharCode(c)}`;
    else if (c >= 0x20 && c < 0x7f) s += String.fromCharCode(c);
    else s += `\\${String(c).padStart(3, '0')}`;
  }
  return `${s}"`;
}

export function formatRdata(r: DnsRecord): string {
  const d = r.data;
  switch (r.type) {
    case TYPE.A: case TYPE.AAAA: return String(d);
    case TYPE.NS: case TYPE.CNAME: case TYPE.PTR: return fqdn(d as string);
    case TYPE.MX: { const m = d as MxData; return `${m.preference} ${fqdn(m.exchange)}`; }
    case TYPE.SRV: { const s = d as SrvData; return `${s.priority} ${s.weight} ${s.port} ${fqdn(s.target)}`; }
    case TYPE.SOA: { const s = d as SoaData; return `${fqdn(s.mname)} ${fqdn(s.rname)} ${s.serial} ${s.refresh} ${s.retry} ${s.expire} ${s.minimum}`; }
    case TYPE.TXT: return (d as Buffer[]).map(quoted).join(' ');
    default: {
      // RFC 3597 §5: \# length hex
      const b = d as Buffer;
      return `\\# ${b.length}${b.length > 0 ? ` ${b.toString('hex')}` : ''}`;
    }
  }
}

export function formatRecord(r: DnsRecord): string {
  return `${fqdn(r.name)}\t${r.ttl}\t${className(r.class)}\t${typeName(r.type)}\t${formatRdata(r)}`;
}

export function formatDns(m: DnsMessage): string {
  const flags = (['qr', 'aa', 'tc', 'rd', 'ra', 'z', 'ad', 'cd'] as const).filter((f) => m[f]);
  const lines = [
    `;; id ${m.id} opcode ${OPCODE_NAMES[m.opcode] ?? m.opcode} rcode ${rcodeName(m.rcode)} flags ${flags.join(' ') || '-'}`,
    `;; counts question ${m.questions.length} answer ${m.answers.length} authority ${m.authorities.length} additional ${m.additionals.length + (m.edns ? 1 : 0)}`,
  ];
  if (m.edns) {
    const e = m.edns;
    lines.push(`;; EDNS version ${e.version} udp ${e.udpSize} do ${e.dnssecOk ? 1 : 0} flags 0x${e.flags.toString(16).padStart(4, '0')}`);
    for (const o of e.options) lines.push(`;;   option ${o.code} ${o.data.toString('hex') || '-'}`);
  }
  lines.push(';; QUESTION');
  for (const q of m.questions) lines.push(`${fqdn(q.name)}\t${className(q.class)}\t${typeName(q.type)}`);
  const section = (title: string, list: DnsRecord[]) => {
    if (list.length === 0) return;
    lines.push(`;; ${title}`);
    for (const r of list) lines.push(formatRecord(r));
  };
  section('ANSWER', m.answers);
  section('AUTHORITY', m.authorities);
  section('ADDITIONAL', m.additionals);
  return `${lines.join('\n')}\n`;
}
