import t from 'tap';
import { decodeDhcp, encodeDhcp, MESSAGE_TYPE, type DhcpOptions, type DhcpPacket } from '../../src/protocols/dhcp/index.ts';
import { handleDhcp, handleProxy, type Decision, type PolicyContext } from '../../src/services/dhcp/policy.ts';
import { defaultBoot } from '../../src/services/dhcp/boot.ts';
import { LeasePool } from '../../src/core/lease-pool.ts';
import { parseCidr, parseIPv4, parseRange } from '../../src/lib/ipv4.ts';
import { parseConfig } from '../../src/config/load.ts';

const T0 = Date.parse('2026-01-01T00:00:00Z');
const MAC = '52:54:00:12:34:56';

function ctx(over: Partial<PolicyContext> = {}): PolicyContext {
  const config = parseConfig(`
interfaces: [p0]
http: { listen: "0.0.0.0:5240" }
subnets:
  - cidr: 10.77.0.0/24
    gateway: 10.77.0.1
    dynamicRanges: ["10.77.0.100-10.77.0.101"]
    reservations: [{ mac: "52:54:00:00:00:99", ip: 10.77.0.9, hostname: reserved-one }]
    mtu: 9000
`, { source: 't', defaultStateDir: '/tmp/x' });
  const s = config.subnets[0]!;
  const pool = new LeasePool({
    id: s.cidr, cidr: parseCidr(s.cidr)!, ranges: s.dynamicRanges.map((r) => parseRange(r)!), excluded: [],
    reservations: new Map([['52:54:00:00:00:99', { ip: parseIPv4('10.77.0.9')!, hostname: 'reserved-one' }]]),
  });
  return {
    now: T0, subnet: { config: s, cidr: parseCidr(s.cidr)!, pool }, serverIp: '10.77.0.1', domain: 'rack.internal',
    offerSeconds: 30, declineSeconds: 600, defaultDns: ['10.77.0.1'], defaultNtp: ['10.77.0.1'],
    boot: defaultBoot({ bios: 'undionly.kpxe', uefi: 'snponly.efi', httpBoot: 'ipxe.efi' }, 5240),
    ...over,
  };
}

function packet(type: number, options: Partial<DhcpOptions> = {}, header: Partial<DhcpPacket> = {}, mac = MAC): DhcpPacket {
  const chaddr = Buffer.alloc(16);
  Buffer.from(mac.replace(/:/g, ''), 'hex').copy(chaddr);
  return {
    op: 1, htype: 1, hlen: 6, hops: 0, xid: 0x1234, secs: 0, flags: 0,
    ciaddr: '0.0.0.0', yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr: '0.0.0.0', chaddr, sname: '', file: '',
    ...header,
    options: { messageType: type as DhcpOptions['messageType'], other: new Map(), ...options },
  };
}

/** The reply as the client sees it: encoded and decoded again (the policy hands some options pre-encoded). */
function reply(d: Decision): DhcpPacket {
  if (d.kind !== 'reply') throw new Error(`expected a reply, got ${JSON.stringify(d)}`);
  return decodeDhcp(encodeDhcp(d.reply, { maxSize: 1500 }));
}

t.test('DISCOVER -> OFFER with the subnet options; REQUEST -> ACK with a lease to persist', async (t) => {
  const c = ctx();
  const offer = reply(handleDhcp(packet(MESSAGE_TYPE.DISCOVER), MAC, c));
  t.equal(offer.op, 2);
  t.equal(offer.yiaddr, '10.77.0.100');
  t.match(offer.options, {
    messageType: MESSAGE_TYPE.OFFER, serverId: '10.77.0.1', leaseTime: 3600, renewalTime: 1800, rebindingTime: 3150,
    subnetMask: '255.255.255.0', routers: ['10.77.0.1'], dnsServers: ['10.77.0.1'], ntpServers: ['10.77.0.1'],
    domainName: 'rack.internal', domainSearch: ['rack.internal'], mtu: 9000, broadcastAddress: '10.77.0.255',
  });
  t.equal(offer.options.bootfile, undefined, 'a non-PXE client gets no boot file');

  const d = handleDhcp(packet(MESSAGE_TYPE.REQUEST, { serverId: '10.77.0.1', requestedIp: '10.77.0.100' }), MAC, c);
  const ack = reply(d);
  t.equal(ack.options.messageType, MESSAGE_TYPE.ACK);
  t.equal(ack.yiaddr, '10.77.0.100');
  t.ok(d.kind === 'reply' && d.persist, 'the ACK waits for a lease write');
  if (d.kind === 'reply' && d.persist) {
    t.match(d.persist.records, [{ ip: '10.77.0.100', mac: MAC, state: 'bound', expiresAt: new Date(T0 + 3600_000).toISOString() }]);
    t.match(d.persist.changes, [{ kind: 'bound' }]);
  }
  // Renewal: unicast with ciaddr; persisted (new expiry) but not an event.
  const renew = handleDhcp(packet(MESSAGE_TYPE.REQUEST, {}, { ciaddr: '10.77.0.100' }), MAC, { ...c, now: T0 + 1000 });
  t.equal(reply(renew).yiaddr, '10.77.0.100');
  t.equal(reply(renew).ciaddr, '10.77.0.100');
  t.ok(renew.kind === 'reply' && renew.persist && renew.persist.changes.length === 0, 'renewal is not an event');
});

t.test('REQUEST for another server: silent, and our offer is withdrawn', async (t) => {
  const c = ctx();
  reply(handleDhcp(packet(MESSAGE_TYPE.DISCOVER), MAC, c));
  t.match(handleDhcp(packet(MESSAGE_TYPE.REQUEST, { serverId: '10.77.0.254', requestedIp: '10.77.0.100' }), MAC, c), { kind: 'drop', reason: 'other-server' });
  t.equal(c.subnet.pool.holder(parseIPv4('10.77.0.100')!), undefined);
});

t.test('NAK: requested address not available, INIT-REBOOT on the wrong subnet; via a relay it is broadcast', async (t) => {
  const c = ctx();
  handleDhcp(packet(MESSAGE_TYPE.REQUEST, { requestedIp: '10.77.0.100' }, {}, '52:54:00:00:00:01'), '52:54:00:00:00:01', c);
  const taken = reply(handleDhcp(packet(MESSAGE_TYPE.REQUEST, { requestedIp: '10.77.0.100' }), MAC, c));
  t.equal(taken.options.messageType, MESSAGE_TYPE.NAK);
  t.equal(taken.yiaddr, '0.0.0.0');
  t.equal(taken.options.leaseTime, undefined, 'a NAK carries no lease options');
  const moved = reply(handleDhcp(packet(MESSAGE_TYPE.REQUEST, { requestedIp: '192.168.5.5', relayAgent: { circuitId: Buffer.from('port7'), other: [] } }, { giaddr: '10.77.0.2' }), MAC, c));
  t.equal(moved.options.messageType, MESSAGE_TYPE.NAK);
  t.equal(moved.flags & 0x8000, 0x8000, 'broadcast bit set for a NAK through a relay');
  t.same(moved.options.relayAgent?.circuitId, Buffer.from('port7'), 'option 82 echoed');
});

t.test('full pool: no offer; RELEASE and DECLINE persist; INFORM answers without a lease', async (t) => {
  const c = ctx();
  for (const m of ['52:54:00:00:00:01', '52:54:00:00:00:02']) reply(handleDhcp(packet(MESSAGE_TYPE.DISCOVER, {}, {}, m), m, c));
  t.match(handleDhcp(packet(MESSAGE_TYPE.DISCOVER), MAC, c), { kind: 'drop', reason: 'pool-exhausted' });

  const m1 = '52:54:00:00:00:01';
  reply(handleDhcp(packet(MESSAGE_TYPE.REQUEST, { serverId: '10.77.0.1', requestedIp: '10.77.0.100' }, {}, m1), m1, c));
  const rel = handleDhcp(packet(MESSAGE_TYPE.RELEASE, { serverId: '10.77.0.1' }, { ciaddr: '10.77.0.100' }, m1), m1, c);
  t.match(rel, { kind: 'persist', persist: { records: [{ ip: '10.77.0.100', state: 'released' }], changes: [{ kind: 'released' }] } });
  t.match(handleDhcp(packet(MESSAGE_TYPE.RELEASE, { serverId: '10.77.0.1' }, { ciaddr: '10.77.0.100' }, m1), m1, c), { kind: 'drop', reason: 'not-our-lease' }, 'a second RELEASE changes nothing');

  const dec = handleDhcp(packet(MESSAGE_TYPE.DECLINE, { serverId: '10.77.0.1', requestedIp: '10.77.0.101' }, {}, '52:54:00:00:00:02'), '52:54:00:00:00:02', c);
  t.match(dec, { kind: 'persist', persist: { records: [{ ip: '10.77.0.101', state: 'declined' }] } });

  const inf = reply(handleDhcp(packet(MESSAGE_TYPE.INFORM, {}, { ciaddr: '10.77.0.33' }), MAC, c));
  t.equal(inf.options.messageType, MESSAGE_TYPE.ACK);
  t.equal(inf.yiaddr, '0.0.0.0');
  t.equal(inf.ciaddr, '10.77.0.33');
  t.equal(inf.options.leaseTime, undefined);
  t.same(inf.options.routers, ['10.77.0.1']);
});

t.test('reservation: the address and host name', async (t) => {
  const c = ctx();
  const m = '52:54:00:00:00:99';
  const offer = reply(handleDhcp(packet(MESSAGE_TYPE.DISCOVER, {}, {}, m), m, c));
  t.equal(offer.yiaddr, '10.77.0.9');
  t.equal(offer.options.hostname, 'reserved-one');
});

t.test('boot file by client type (RFC 4578 option 93, vendor class, iPXE user class)', async (t) => {
  const cases: [string, Partial<DhcpOptions>, string | undefined, string | undefined][] = [
    ['BIOS PXE', { vendorClass: 'PXEClient:Arch:00000:UNDI:002001', clientArch: [0] }, 'undionly.kpxe', undefined],
    ['UEFI x64 PXE', { vendorClass: 'PXEClient:Arch:00007:UNDI:003016', clientArch: [7] }, 'snponly.efi', undefined],
    ['UEFI BC PXE', { vendorClass: 'PXEClient:Arch:00009:UNDI:003016', clientArch: [9] }, 'snponly.efi', undefined],
    ['UEFI HTTP boot', { vendorClass: 'HTTPClient:Arch:00016:UNDI:003001', clientArch: [16] }, 'http://10.77.0.1:5240/boot/ipxe.efi', 'HTTPClient'],
    ['iPXE by user class', { vendorClass: 'PXEClient:Arch:00000', clientArch: [0], userClass: ['iPXE'] }, 'http://10.77.0.1:5240/boot/52-54-00-12-34-56.ipxe', undefined],
    ['iPXE by option 175', { vendorClass: 'PXEClient:Arch:00007', clientArch: [7], ipxe: Buffer.from([0xb1, 1, 1]) }, 'http://10.77.0.1:5240/boot/52-54-00-12-34-56.ipxe', undefined],
    ['ARM64 UEFI: nothing to boot', { vendorClass: 'PXEClient:Arch:00011', clientArch: [11] }, undefined, undefined],
  ];
  for (const [name, options, file, vc] of cases) {
    const offer = reply(handleDhcp(packet(MESSAGE_TYPE.DISCOVER, options), MAC, ctx()));
    t.equal(offer.options.bootfile, file, name);
    if (file && !file.startsWith('http')) {
      t.equal(offer.file, file, `${name}: BOOTP file field`);
      t.equal(offer.siaddr, '10.77.0.1', `${name}: next-server`);
      t.equal(offer.options.tftpServer, '10.77.0.1');
    }
    t.equal(offer.options.vendorClass, vc, `${name}: vendor class in the reply`);
  }
});

t.test('proxyDHCP: boot information only, to PXE clients only', async (t) => {
  const c = ctx();
  const pxe = { vendorClass: 'PXEClient:Arch:00000:UNDI:002001', clientArch: [0] };
  const offer = reply(handleProxy(packet(MESSAGE_TYPE.DISCOVER, pxe), MAC, c, false));
  t.equal(offer.yiaddr, '0.0.0.0', 'no address');
  t.equal(offer.options.leaseTime, undefined);
  t.equal(offer.options.routers, undefined);
  t.equal(offer.options.vendorClass, 'PXEClient');
  t.same(offer.options.vendorSpecific, Buffer.from([6, 1, 8, 255]), 'PXE discovery control: use the file given');
  t.equal(offer.file, 'undionly.kpxe');
  t.match(handleProxy(packet(MESSAGE_TYPE.DISCOVER), MAC, c, false), { kind: 'drop', reason: 'proxy-not-pxe' });
  const ack = reply(handleProxy(packet(MESSAGE_TYPE.REQUEST, pxe, { ciaddr: '10.77.0.150' }), MAC, c, true));
  t.equal(ack.options.messageType, MESSAGE_TYPE.ACK);
  t.equal(ack.options.bootfile, 'undionly.kpxe');
  t.equal(ack.yiaddr, '0.0.0.0');
});
