// DHCP: decodeDhcp on a UDP payload (header, cookie, options with RFC 3396 joins, overload into file/sname,
// option 82 sub-options, 119 compression, 121 routes, 77 user class), plus the service's hot-path pre-parser
// peekMessageType and the encapsulated options (43, 175).
//
// Invariants (test/unit/dhcp-codec.test.ts): decode throws only DHCP_* MetalboxErrors with an offset inside
// the input; peekMessageType never throws, and when it names a type and the packet decodes, that is the
// decoded option 53; a decoded packet re-encodes (maxSize 65535: no overload needed), decodes to a deeply equal
// packet, and re-encodes to the same octets; hwAddress, clientKey and formatDhcp accept it; the sub-options of
// 43 and 175 decode (or fail with DHCP_BAD_OPTION) and survive encodeEncapsulated.
import type * as DhcpCodec from '../../../src/protocols/dhcp/index.ts';
import type { MetalboxError } from '../../../src/lib/errors.ts';
import type { DhcpOptions, DhcpPacket } from '../../../src/protocols/dhcp/index.ts';
import { loadInstrumented, reexport } from '../coverage.ts';
import type { FuzzTarget } from '../engine.ts';
import { codecTarget, decodeOrRefuse, expectEqual, InvariantError, words } from './common.ts';

type Dhcp = typeof DhcpCodec & { MetalboxError: typeof MetalboxError };

const COOKIE = [99, 130, 83, 99];

/** A raw BOOTREQUEST: header, cookie, then `options` verbatim; `file`/`sname` bytes when given. */
function raw(options: number[], extra: { file?: number[]; sname?: number[]; op?: number } = {}): Buffer {
  const head = Buffer.alloc(236);
  head[0] = extra.op ?? 1;
  head[1] = 1;
  head[2] = 6;
  Buffer.from('525400abcdef', 'hex').copy(head, 28);
  if (extra.sname) Buffer.from(extra.sname).copy(head, 44);
  if (extra.file) Buffer.from(extra.file).copy(head, 108);
  return Buffer.concat([head, Buffer.from([...COOKIE, ...options])]);
}

function packet(options: Partial<DhcpOptions>, header: Partial<DhcpPacket> = {}): DhcpPacket {
  return {
    op: 2, htype: 1, hlen: 6, hops: 0, xid: 0xdeadbeef, secs: 3, flags: 0x8000,
    ciaddr: '0.0.0.0', yiaddr: '10.0.0.50', siaddr: '10.0.0.1', giaddr: '10.0.5.1',
    chaddr: Buffer.from('525400abcdef00000000000000000000', 'hex'), sname: '', file: '',
    ...header,
    options: { other: new Map(), ...options },
  };
}

function seeds(d: Dhcp): Buffer[] {
  const rich: Partial<DhcpOptions> = {
    subnetMask: '255.255.255.0', routers: ['10.0.0.1'], dnsServers: ['10.0.0.53'], hostname: 'node-1', domainName: 'lab.example',
    mtu: 9000, broadcastAddress: '10.0.0.255', ntpServers: ['10.0.0.123'], vendorSpecific: d.encodeEncapsulated(new Map([[6, Buffer.from([8])], [9, Buffer.from('menu')]])),
    requestedIp: '10.0.0.50', leaseTime: 86400, messageType: 5, serverId: '10.0.0.1', parameterList: [1, 3, 6, 15, 66, 67, 119, 121, 175],
    maxMessageSize: 1500, renewalTime: 43200, rebindingTime: 75600, vendorClass: 'PXEClient:Arch:00007:UNDI:003000',
    clientId: Buffer.from('01525400abcdef', 'hex'), tftpServer: '10.0.0.1', bootfile: 'ipxe/snponly.efi', userClass: ['iPXE', 'metalbox'],
    relayAgent: { circuitId: Buffer.from('eth0:vlan7'), remoteId: Buffer.from('switch-3'), other: [[5, Buffer.from([10, 0, 0, 0])], [151, Buffer.from('vpn')]] },
    clientArch: [7, 16], clientNdi: { type: 1, major: 3, minor: 0 }, clientUuid: { type: 0, id: Buffer.alloc(16, 0x5a) },
    domainSearch: ['lab.example', 'rack1.lab.example', 'odd\\.label.lab.example'],
    classlessRoutes: [{ destination: '0.0.0.0', prefix: 0, router: '10.0.0.1' }, { destination: '172.16.0.0', prefix: 12, router: '10.0.0.3' }],
    ipxe: d.encodeEncapsulated(new Map([[176, Buffer.from([1])], [19, Buffer.from([1])]])),
    other: new Map([[2, Buffer.from([0, 0, 14, 16])], [224, Buffer.from('site-local')]]),
  };
  return [
    d.encodeDhcp(packet(rich, { sname: 'metalbox', file: 'undionly.kpxe' }), { maxSize: 1500 }),
    d.encodeDhcp(packet(rich)), // overloaded into file and sname
    d.encodeDhcp(packet({ messageType: 1, userClass: ['iPXE'], userClassRaw: true, other: new Map([[224, Buffer.alloc(300, 0x41)]]) }), { maxSize: 1500 }), // RFC 3396 split
    raw([53, 1, 1, 52, 1, 3, 255], { file: [119, 4, 1, 0x61, 0xc0, 0x00, 255], sname: [43, 2, 1, 2, 255] }),
    raw([53, 1, 3, 52, 1, 1, 43, 2, 0x61, 0x62, 255], { file: [43, 2, 0x63, 0x64, 12, 1, 0x78, 255] }),
    raw([53, 1, 1, 82, 12, 1, 3, 0x61, 0x62, 0x63, 9, 1, 0x7a, 1, 2, 0x78, 0x79, 255]),
    raw([53, 1, 1, 119, 2, 1, 0x61, 119, 1, 0, 119, 4, 3, 0x63, 0x6f, 0x6d, 119, 1, 0]),
    raw([53, 1, 1, 121, 13, 24, 192, 168, 1, 10, 0, 0, 1, 0, 10, 0, 0, 2, 255]),
    raw([53, 1, 1, 77, 4, 0x69, 0x50, 0x58, 0x45, 97, 17, 0, ...Array(16).fill(7), 93, 2, 0, 7, 94, 3, 1, 2, 1, 255]),
    raw([53, 1, 1, 175, 6, 19, 1, 1, 176, 1, 1, 43, 5, 6, 1, 8, 255, 0, 255]),
    raw([53, 1, 1, 12, 6, 0x6e, 0x6f, 0x64, 0x65, 0, 0, 60, 9, ...Buffer.from('PXEClient'), 255]),
    raw([255], { op: 2 }),
  ];
}

const DICTIONARY = words(
  COOKIE, [53, 1, 1], [53, 1, 3], [53, 1, 8], [52, 1, 1], [52, 1, 2], [52, 1, 3], [255], [0, 0, 0, 0],
  [82, 6, 1, 1, 0x61, 2, 1, 0x62], [82], [1, 0], [2, 0], [119, 2], [0xc0, 0x00], [0xc0], [3, 0x63, 0x6f, 0x6d, 0], [121, 5, 8, 10, 0, 0, 1],
  [77, 4], [43, 3, 6, 1, 8], [175, 3, 19, 1, 1], [93, 2, 0, 7], [94, 3, 1, 3, 0], [97, 17, 0], [61, 7, 1], [55, 4, 1, 3, 6, 15],
  [57, 2, 5, 220], [50, 4, 10, 0, 0, 5], [54, 4, 10, 0, 0, 1], [12, 4], [60, 9], [66], [67], [224, 1, 0], 'PXEClient', 'iPXE', 'HTTPClient',
);

function encapsulated(d: Dhcp, data: Buffer, option: number): void {
  const sub = decodeOrRefuse(() => d.decodeEncapsulated(data, option), d.MetalboxError, /^DHCP_BAD_OPTION$/, data.length, `decodeEncapsulated(${option})`);
  if (sub === undefined) return;
  expectEqual(d.decodeEncapsulated(d.encodeEncapsulated(sub), option), sub, `option ${option}: sub-options after encodeEncapsulated`);
}

export async function createTarget(): Promise<FuzzTarget> {
  const inst = await loadInstrumented<Dhcp>('dhcp', reexport('*', 'src/protocols/dhcp/index.ts') + reexport('{ MetalboxError }', 'src/lib/errors.ts'));
  const d = inst.module;
  return codecTarget('dhcp', inst, {
    seeds: seeds(d),
    dictionary: DICTIONARY,
    maxLen: 2048,
    run(input) {
      const peeked = d.peekMessageType(input);
      const p = decodeOrRefuse(() => d.decodeDhcp(input), d.MetalboxError, /^DHCP_/, input.length, 'decodeDhcp');
      if (p === undefined) return;
      if (peeked !== undefined && p.options.messageType !== peeked) {
        throw new InvariantError(`peekMessageType says ${peeked}, decodeDhcp says ${String(p.options.messageType)}`);
      }
      d.clientKey(p);
      d.formatDhcp(p);
      const once = d.encodeDhcp(p, { maxSize: 65535 });
      const back = d.decodeDhcp(once);
      expectEqual(back, p, 'decodeDhcp(encodeDhcp(p))');
      if (!d.encodeDhcp(back, { maxSize: 65535 }).equals(once)) throw new InvariantError('re-encoding a decoded packet is not stable');
      if (p.options.vendorSpecific !== undefined) encapsulated(d, p.options.vendorSpecific, 43);
      if (p.options.ipxe !== undefined) encapsulated(d, p.options.ipxe, 175);
    },
  });
}
