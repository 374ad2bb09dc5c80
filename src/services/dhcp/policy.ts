// Per-packet DHCP policy: a decoded request and its context in, a decision out. No sockets, no store:
// the server (server.ts) persists what a decision asks to persist and only then sends the reply.
// RFC 2131 §4.3 is the reference for every branch below.
import { encodeOptionMap, MESSAGE_TYPE, type DhcpOptions, type DhcpPacket, type MessageType } from '../../protocols/dhcp/index.ts';
import type { LeasePool, PoolClient } from '../../core/lease-pool.ts';
import type { Cidr } from '../../lib/ipv4.ts';
import { formatIPv4, parseIPv4 } from '../../lib/ipv4.ts';
import type { SubnetConfig } from '../../config/schema.ts';
import type { LeaseRecord } from '../../store/types.ts';
import type { BootDecider, BootRequest } from './boot.ts';

export interface SubnetRuntime {
  config: SubnetConfig;
  cidr: Cidr;
  pool: LeasePool;
  /** The subnet's fixed options, encoded once per server address and lease/no-lease (see subnetOptions). */
  encoded?: Map<string, ReadonlyMap<number, Buffer>>;
}

export interface PolicyContext {
  now: number;
  subnet: SubnetRuntime;
  /** Our address as this client sees it: option 54, siaddr (next-server). */
  serverIp: string;
  domain: string;
  offerSeconds: number;
  declineSeconds: number;
  /** DNS and NTP servers handed out when the subnet names none (metalbox itself), or none. */
  defaultDns: string[];
  defaultNtp: string[];
  boot: BootDecider;
}

export type LeaseChange = { kind: 'bound' | 'released' | 'declined'; record: LeaseRecord };

export type Decision =
  | { kind: 'drop'; reason: DropReason }
  | { kind: 'reply'; reply: DhcpPacket; persist?: { records: LeaseRecord[]; changes: LeaseChange[]; undo: () => void } }
  /** Nothing to send, but state to persist (RELEASE, DECLINE). */
  | { kind: 'persist'; persist: { records: LeaseRecord[]; changes: LeaseChange[]; undo: () => void } };

export type DropReason =
  | 'no-message-type' | 'unsupported-message' | 'other-server' | 'pool-exhausted' | 'not-our-lease'
  | 'proxy-not-pxe' | 'bad-request';

const BROADCAST_FLAG = 0x8000;

/** The client's identity for leases: option 61 when sent, else the hardware address (RFC 2131 §4.2). */
export function poolClient(req: DhcpPacket, mac: string): PoolClient {
  const clientId = req.options.clientId && req.options.clientId.length > 0 ? req.options.clientId.toString('hex') : undefined;
  const c: PoolClient = { key: clientId ? `id:${clientId}` : `mac:${mac}`, mac };
  if (clientId) c.clientId = clientId;
  const hn = req.options.hostname;
  if (hn && /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/.test(hn)) c.hostname = hn.toLowerCase();
  return c;
}

/** Full DHCP: addresses and boot information. */
export function handleDhcp(req: DhcpPacket, mac: string, ctx: PolicyContext): Decision {
  const type = req.options.messageType;
  if (type === undefined) return { kind: 'drop', reason: 'no-message-type' };
  const client = poolClient(req, mac);
  const { pool } = ctx.subnet;
  const serverId = req.options.serverId;

  switch (type) {
    case MESSAGE_TYPE.DISCOVER: {
      const requested = req.options.requestedIp ? parseIPv4(req.options.requestedIp) : undefined;
      const ip = pool.pick(client, requested, ctx.now);
      if (ip === undefined) return { kind: 'drop', reason: 'pool-exhausted' };
      pool.offer(ip, client, ctx.now + ctx.offerSeconds * 1000);
      return { kind: 'reply', reply: build(req, mac, MESSAGE_TYPE.OFFER, formatIPv4(ip), ctx) };
    }
    case MESSAGE_TYPE.REQUEST: {
      const ciaddr = req.ciaddr !== '0.0.0.0' ? parseIPv4(req.ciaddr) : undefined;
      const requested = req.options.requestedIp ? parseIPv4(req.options.requestedIp) : undefined;
      if (serverId !== undefined) {
        // SELECTING: the client chose a server. Not us: forget our offer and stay silent.
        const offered = pool.current(client, ctx.now);
        if (serverId !== ctx.serverIp) {
          if (offered && offered.state === 'offered') pool.dropOffer(offered.ip, client);
          return { kind: 'drop', reason: 'other-server' };
        }
        const want = requested ?? ciaddr;
        if (want === undefined || !pool.available(want, client, ctx.now)) return nak(req, ctx, 'requested address is not available');
        return ack(req, mac, want, client, ctx);
      }
      // INIT-REBOOT (option 50, no ciaddr) or RENEWING/REBINDING (ciaddr, no option 50).
      const want = ciaddr ?? requested;
      if (want === undefined) return { kind: 'drop', reason: 'bad-request' };
      if (!pool.available(want, client, ctx.now)) {
        // Outside this subnet (the client moved), or someone else's: tell it to start over.
        return nak(req, ctx, 'address not valid for this client on this network');
      }
      return ack(req, mac, want, client, ctx);
    }
    case MESSAGE_TYPE.RELEASE: {
      if (serverId !== undefined && serverId !== ctx.serverIp) return { kind: 'drop', reason: 'other-server' };
      const ip = parseIPv4(req.ciaddr);
      const done = ip === undefined ? undefined : pool.release(ip, client, ctx.now);
      if (!done) return { kind: 'drop', reason: 'not-our-lease' };
      return { kind: 'persist', persist: { ...done, changes: done.records.map((record) => ({ kind: 'released' as const, record })) } };
    }
    case MESSAGE_TYPE.DECLINE: {
      if (serverId !== undefined && serverId !== ctx.serverIp) return { kind: 'drop', reason: 'other-server' };
      const ip = req.options.requestedIp ? parseIPv4(req.options.requestedIp) : undefined;
      const done = ip === undefined ? undefined : pool.decline(ip, client, ctx.now + ctx.declineSeconds * 1000);
      if (!done) return { kind: 'drop', reason: 'not-our-lease' };
      return { kind: 'persist', persist: { ...done, changes: done.records.map((record) => ({ kind: 'declined' as const, record })) } };
    }
    case MESSAGE_TYPE.INFORM:
      // The client has an address (configured by hand): configuration only, no lease (§4.3.5).
      return { kind: 'reply', reply: build(req, mac, MESSAGE_TYPE.ACK, '0.0.0.0', ctx, { noLease: true }) };
    default:
      return { kind: 'drop', reason: 'unsupported-message' };
  }
}

/**
 * proxyDHCP (PXE spec 2.1 §2.2.5): another server owns the addresses. We answer PXE clients only, with
 * an address-less OFFER (port 67) or ACK (port 4011) that carries the boot information.
 */
export function handleProxy(req: DhcpPacket, mac: string, ctx: PolicyContext, port4011: boolean): Decision {
  const type = req.options.messageType;
  const bootReq = bootRequest(req, mac);
  if (!bootReq.pxe && !bootReq.ipxe && !bootReq.httpClient) return { kind: 'drop', reason: 'proxy-not-pxe' };
  if (port4011) {
    if (type !== MESSAGE_TYPE.REQUEST && type !== MESSAGE_TYPE.INFORM) return { kind: 'drop', reason: 'unsupported-message' };
    return { kind: 'reply', reply: build(req, mac, MESSAGE_TYPE.ACK, '0.0.0.0', ctx, { noLease: true, proxy: true }) };
  }
  if (type === MESSAGE_TYPE.DISCOVER) {
    return { kind: 'reply', reply: build(req, mac, MESSAGE_TYPE.OFFER, '0.0.0.0', ctx, { noLease: true, proxy: true }) };
  }
  // iPXE in a proxyDHCP network asks again with REQUEST to port 67 for the proxy's boot information.
  if (type === MESSAGE_TYPE.REQUEST && req.options.serverId === ctx.serverIp) {
    return { kind: 'reply', reply: build(req, mac, MESSAGE_TYPE.ACK, '0.0.0.0', ctx, { noLease: true, proxy: true }) };
  }
  return { kind: 'drop', reason: 'unsupported-message' };
}

function ack(req: DhcpPacket, mac: string, ip: number, client: PoolClient, ctx: PolicyContext): Decision {
  const { pool } = ctx.subnet;
  const leaseMs = ctx.subnet.config.leaseSeconds * 1000;
  const before = pool.current(client, ctx.now);
  const bound = pool.bind(ip, client, ctx.now + leaseMs, ctx.now);
  const reply = build(req, mac, MESSAGE_TYPE.ACK, formatIPv4(ip), ctx);
  // Renewals persist the new expiry but are not events: only a change of binding is.
  const changes: LeaseChange[] = bound.records
    .filter((r) => r.state !== 'bound' || !before || before.state !== 'bound' || before.ip !== ip)
    .map((record) => ({ kind: record.state === 'bound' ? 'bound' as const : 'released' as const, record }));
  return { kind: 'reply', reply, persist: { records: bound.records, changes, undo: bound.undo } };
}

function nak(req: DhcpPacket, ctx: PolicyContext, message: string): Decision {
  const reply = base(req, MESSAGE_TYPE.NAK, '0.0.0.0');
  reply.siaddr = '0.0.0.0';
  // §4.3.2: a NAK carries only the message type, server id, message and relay info; broadcast via a relay.
  reply.options = { messageType: MESSAGE_TYPE.NAK, serverId: ctx.serverIp, other: new Map([[56, Buffer.from(message, 'latin1')]]) };
  if (req.options.relayAgent) reply.options.relayAgent = req.options.relayAgent;
  if (req.giaddr !== '0.0.0.0') reply.flags |= BROADCAST_FLAG;
  return { kind: 'reply', reply };
}

function base(req: DhcpPacket, type: MessageType, yiaddr: string): DhcpPacket {
  return {
    op: 2, htype: req.htype, hlen: req.hlen, hops: 0, xid: req.xid, secs: 0, flags: req.flags,
    // RFC 2131 Table 3: an ACK echoes ciaddr (renewals, INFORM); OFFER and NAK carry 0.
    ciaddr: type === MESSAGE_TYPE.ACK ? req.ciaddr : '0.0.0.0',
    yiaddr, siaddr: '0.0.0.0', giaddr: req.giaddr, chaddr: req.chaddr, sname: '', file: '',
    options: { messageType: type, other: new Map() },
  };
}

/** What the boot decision needs to know about a client. */
export function bootRequest(req: DhcpPacket, mac: string): BootRequest {
  const vc = req.options.vendorClass ?? '';
  const arch = req.options.clientArch?.[0];
  return {
    mac,
    arch,
    pxe: vc.startsWith('PXEClient'),
    httpClient: vc.startsWith('HTTPClient'),
    // iPXE says who it is by user class "iPXE" (option 77) and by its encapsulated options (175).
    ipxe: (req.options.userClass?.includes('iPXE') ?? false) || req.options.ipxe !== undefined,
    uuid: req.options.clientUuid?.id,
  };
}

/**
 * What every reply on a subnet carries (RFC 2132 §3.3, 3.5, 3.8, 3.17, 5.3, 8.3, 9.2, 9.11, 9.12, RFC 3397):
 * mask, broadcast, router, DNS, NTP, domain, search list, MTU and, unless `withLease`, the lease times. They
 * depend only on the subnet, our address and the config, so they are encoded once and shared by every
 * reply as raw options: callers must not modify the map.
 */
function subnetOptions(ctx: PolicyContext, withLease: boolean): ReadonlyMap<number, Buffer> {
  const key = `${ctx.serverIp}|${withLease}|${ctx.domain}|${ctx.defaultDns.join(',')}|${ctx.defaultNtp.join(',')}`;
  const cache = (ctx.subnet.encoded ??= new Map());
  let map = cache.get(key);
  if (map === undefined) {
    const s = ctx.subnet.config;
    const o: Omit<DhcpOptions, 'other'> = {};
    if (withLease) {
      o.leaseTime = s.leaseSeconds;
      o.renewalTime = Math.floor(s.leaseSeconds / 2);
      o.rebindingTime = Math.floor(s.leaseSeconds * 7 / 8);
    }
    o.subnetMask = formatIPv4(ctx.subnet.cidr.mask);
    o.broadcastAddress = formatIPv4(ctx.subnet.cidr.broadcast);
    if (s.gateway) o.routers = [s.gateway];
    const dns = s.dnsServers.length > 0 ? s.dnsServers : ctx.defaultDns;
    if (dns.length > 0) o.dnsServers = [...dns];
    const ntp = s.ntpServers.length > 0 ? s.ntpServers : ctx.defaultNtp;
    if (ntp.length > 0) o.ntpServers = [...ntp];
    o.domainName = ctx.domain;
    o.domainSearch = s.domainSearch.length > 0 ? [...s.domainSearch] : [ctx.domain];
    if (s.mtu !== undefined) o.mtu = s.mtu;
    map = encodeOptionMap(o);
    // Bounded: one entry per address of ours on the subnet's interfaces (and the two lease modes).
    if (cache.size >= 64) cache.clear();
    cache.set(key, map);
  }
  return map;
}

function build(req: DhcpPacket, mac: string, type: MessageType, yiaddr: string, ctx: PolicyContext, mode: { noLease?: boolean; proxy?: boolean } = {}): DhcpPacket {
  const reply = base(req, type, yiaddr);
  const o: DhcpOptions = reply.options;
  o.serverId = ctx.serverIp;
  if (!mode.proxy) {
    o.other = subnetOptions(ctx, !mode.noLease) as Map<number, Buffer>;
    const reserved = ctx.subnet.pool.reservation(mac);
    if (reserved?.hostname) o.hostname = reserved.hostname;
  }
  const bootReq = bootRequest(req, mac);
  const choice = ctx.boot(bootReq, ctx.serverIp);
  if (choice) {
    // QUIRK(firmware): PXE ROMs read the boot file from the BOOTP `file` field and next-server from
    // siaddr; iPXE and UEFI HTTP boot read option 67. Fill both.
    reply.siaddr = ctx.serverIp;
    reply.file = choice.file.length < 128 ? choice.file : '';
    o.bootfile = choice.file;
    if (choice.tftp) o.tftpServer = ctx.serverIp;
    // UEFI HTTP boot only accepts an offer that says HTTPClient back (UEFI 2.x §24.7.2).
    if (choice.vendorClass) o.vendorClass = choice.vendorClass;
  }
  if (mode.proxy) {
    // PXE spec: a proxy offer identifies itself as PXEClient and tells the ROM to skip boot-server
    // discovery and use the file name given (PXE_DISCOVERY_CONTROL = 8, vendor option 43 sub-option 6).
    if (!o.vendorClass) o.vendorClass = bootReq.httpClient ? 'HTTPClient' : 'PXEClient';
    if (bootReq.pxe && !bootReq.ipxe) o.vendorSpecific = Buffer.from([6, 1, 8, 255]);
  }
  if (req.options.relayAgent) o.relayAgent = req.options.relayAgent;
  return reply;
}
