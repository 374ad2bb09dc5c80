// A stable, human-readable dump of a decoded message, one field per line, for golden files and logs.
// Options are listed ascending by code, by name with typed values; raw values are lower-case hex.
import { CLIENT_ARCH, MESSAGE_TYPE, OPTION } from './constants.ts';
import { decodeIpxeEncap } from './options.ts';
import { hwAddress } from './packet.ts';
import type { DhcpOptions, DhcpPacket } from './types.ts';

const OPTION_NAMES = new Map<number, string>(Object.entries(OPTION).map(([name, code]) => [code, name]));
const MESSAGE_NAMES = new Map<number, string>(Object.entries(MESSAGE_TYPE).map(([name, v]) => [v, name]));
const ARCH_NAMES = new Map<number, string>(Object.entries(CLIENT_ARCH).map(([name, v]) => [v, name]));

const hex = (b: Buffer): string => (b.length === 0 ? '(empty)' : b.toString('hex'));
const text = (s: string): string => JSON.stringify(s);
const optionName = (code: number): string => OPTION_NAMES.get(code) ?? `OPTION_${code}`;

function uuid(b: Buffer): string {
  if (b.length !== 16) return hex(b);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Each present option as [code, value lines]; the first line goes after the name. */
function optionLines(o: DhcpOptions): [number, string[]][] {
  const out: [number, string[]][] = [];
  const one = (code: number, v: string | undefined): void => {
    if (v !== undefined) out.push([code, [v]]);
  };
  one(OPTION.SUBNET_MASK, o.subnetMask);
  one(OPTION.ROUTER, o.routers?.join(', '));
  one(OPTION.DNS_SERVERS, o.dnsServers?.join(', '));
  one(OPTION.HOSTNAME, o.hostname === undefined ? undefined : text(o.hostname));
  one(OPTION.DOMAIN_NAME, o.domainName === undefined ? undefined : text(o.domainName));
  one(OPTION.INTERFACE_MTU, o.mtu?.toString());
  one(OPTION.BROADCAST, o.broadcastAddress);
  one(OPTION.NTP_SERVERS, o.ntpServers?.join(', '));
  one(OPTION.VENDOR_SPECIFIC, o.vendorSpecific && hex(o.vendorSpecific));
  one(OPTION.REQUESTED_IP, o.requestedIp);
  one(OPTION.LEASE_TIME, o.leaseTime?.toString());
  one(OPTION.MESSAGE_TYPE, o.messageType === undefined ? undefined : `${MESSAGE_NAMES.get(o.messageType) ?? '?'} (${o.messageType})`);
  one(OPTION.SERVER_ID, o.serverId);
  one(OPTION.PARAMETER_LIST, o.parameterList?.map((c) => (OPTION_NAMES.has(c) ? `${c} ${optionName(c)}` : `${c}`)).join(', '));
  one(OPTION.MAX_MESSAGE_SIZE, o.maxMessageSize?.toString());
  one(OPTION.RENEWAL_TIME, o.renewalTime?.toString());
  one(OPTION.REBINDING_TIME, o.rebindingTime?.toString());
  one(OPTION.VENDOR_CLASS, o.vendorClass === undefined ? undefined : text(o.vendorClass));
  one(OPTION.CLIENT_ID, o.clientId && hex(o.clientId));
  one(OPTION.TFTP_SERVER, o.tftpServer === undefined ? undefined : text(o.tftpServer));
  one(OPTION.BOOTFILE, o.bootfile === undefined ? undefined : text(o.bootfile));
  one(OPTION.USER_CLASS, o.userClass === undefined ? undefined : `${o.userClass.map(text).join(', ')}${o.userClassRaw ? ' (raw, no RFC 3004 length)' : ''}`);
  if (o.relayAgent !== undefined) {
    const r = o.relayAgent;
    const lines = [''];
    if (r.circuitId !== undefined) lines.push(`circuit-id ${hex(r.circuitId)}`);
    if (r.remoteId !== undefined) lines.push(`remote-id ${hex(r.remoteId)}`);
    for (const [code, v] of r.other) lines.push(`sub-option ${code} ${hex(v)}`);
    out.push([OPTION.RELAY_AGENT, lines]);
  }
  one(OPTION.CLIENT_ARCH, o.clientArch?.map((a) => `${a}${ARCH_NAMES.has(a) ? ` ${ARCH_NAMES.get(a)!}` : ''}`).join(', '));
  one(OPTION.CLIENT_NDI, o.clientNdi && `type ${o.clientNdi.type} version ${o.clientNdi.major}.${o.clientNdi.minor}`);
  one(OPTION.CLIENT_UUID, o.clientUuid && `type ${o.clientUuid.type} ${uuid(o.clientUuid.id)}`);
  one(OPTION.DOMAIN_SEARCH, o.domainSearch?.map(text).join(', '));
  one(OPTION.CLASSLESS_ROUTES, o.classlessRoutes?.map((r) => `${r.destination}/${r.prefix} via ${r.router}`).join(', '));
  if (o.ipxe !== undefined) {
    const lines = [hex(o.ipxe)];
    // Show the sub-options too when they parse (they are kept raw either way).
    let sub: Map<number, Buffer> | undefined;
    try {
      sub = decodeIpxeEncap(o.ipxe);
    } catch {
      sub = undefined;
    }
    if (sub !== undefined) for (const code of [...sub.keys()].sort((a, b) => a - b)) lines.push(`175.${code} ${hex(sub.get(code)!)}`);
    out.push([OPTION.IPXE_ENCAP, lines]);
  }
  for (const [code, v] of o.other) out.push([code, [hex(v)]]);
  return out.sort((a, b) => a[0] - b[0]);
}

/** The text dump: header fields, then `option <code> <NAME>: <value>` lines ascending by code. */
export function formatDhcp(p: DhcpPacket): string {
  const chaddrTail = p.chaddr.subarray(Math.min(p.hlen, p.chaddr.length));
  const lines = [
    `op: ${p.op} ${p.op === 1 ? 'BOOTREQUEST' : 'BOOTREPLY'}`,
    `htype: ${p.htype}`,
    `hlen: ${p.hlen}`,
    `hops: ${p.hops}`,
    `xid: 0x${p.xid.toString(16).padStart(8, '0')}`,
    `secs: ${p.secs}`,
    `flags: 0x${p.flags.toString(16).padStart(4, '0')}${p.flags & 0x8000 ? ' broadcast' : ''}`,
    `ciaddr: ${p.ciaddr}`,
    `yiaddr: ${p.yiaddr}`,
    `siaddr: ${p.siaddr}`,
    `giaddr: ${p.giaddr}`,
    `chaddr: ${hwAddress(p) || '(none)'}${chaddrTail.some((b) => b !== 0) ? ` + ${hex(chaddrTail)}` : ''}`,
    `sname: ${text(p.sname)}`,
    `file: ${text(p.file)}`,
  ];
  for (const [code, [first, ...more]] of optionLines(p.options)) {
    lines.push(`option ${code} ${optionName(code)}: ${first ?? ''}`.trimEnd());
    for (const m of more) lines.push(`  ${m}`);
  }
  return `${lines.join('\n')}\n`;
}
