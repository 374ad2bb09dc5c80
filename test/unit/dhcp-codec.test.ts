// The DHCPv4 codec: round trips, RFC 3396 split/join, overload, encoder rules, a table of hostile packets each
// with its error code and offset, bounded time on big hostile inputs, and a seeded mutation fuzzer over the
// golden captures.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { isMetalboxError } from '../../src/lib/errors.ts';
import { parseIPv4 } from '../../src/lib/ipv4.ts';
import {
  clientKey,
  decodeDhcp,
  decodeEncapsulated,
  decodeIpxeEncap,
  encodeDhcp,
  encodeEncapsulated,
  formatDhcp,
  hwAddress,
  MESSAGE_TYPE,
  OPTION,
  type DhcpOptions,
  type DhcpPacket,
} from '../../src/protocols/dhcp/index.ts';

const GOLDEN = fileURLToPath(new URL('../golden/dhcp/', import.meta.url));

function packet(options: Partial<DhcpOptions>, header: Partial<DhcpPacket> = {}): DhcpPacket {
  return {
    op: 1,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: 0xdeadbeef,
    secs: 3,
    flags: 0x8000,
    ciaddr: '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: '0.0.0.0',
    giaddr: '0.0.0.0',
    chaddr: Buffer.from('525400abcdef00000000000000000000', 'hex'),
    sname: '',
    file: '',
    ...header,
    options: { other: new Map(), ...options },
  };
}

/** Every typed option, with values that exercise each type's corners. */
function richOptions(): DhcpOptions {
  return {
    subnetMask: '255.255.255.0',
    routers: ['10.0.0.1', '10.0.0.2'],
    dnsServers: ['10.0.0.53'],
    hostname: 'node-1',
    domainName: 'lab.example',
    mtu: 9000,
    broadcastAddress: '10.0.0.255',
    ntpServers: ['10.0.0.123', '10.0.1.123'],
    vendorSpecific: Buffer.from([6, 1, 8, 255]),
    requestedIp: '10.0.0.50',
    leaseTime: 86400,
    messageType: MESSAGE_TYPE.ACK,
    serverId: '10.0.0.1',
    parameterList: [1, 3, 6, 15, 119, 121, 175],
    maxMessageSize: 1500,
    renewalTime: 43200,
    rebindingTime: 75600,
    vendorClass: 'PXEClient:Arch:00007:UNDI:003000',
    clientId: Buffer.from('01525400abcdef', 'hex'),
    tftpServer: '10.0.0.1',
    bootfile: 'ipxe/snponly.efi',
    userClass: ['iPXE', 'metalbox'],
    relayAgent: { circuitId: Buffer.from('eth0:vlan7'), remoteId: Buffer.from('switch-3'), other: [[5, Buffer.from([10, 0, 0, 0])], [151, Buffer.from('vpn')]] },
    clientArch: [7, 16],
    clientNdi: { type: 1, major: 3, minor: 0 },
    clientUuid: { type: 0, id: Buffer.from('526a3c8b0e2f7b4c9d550a1b2c3d4e5f', 'hex') },
    domainSearch: ['lab.example', 'rack1.lab.example', 'example', 'odd\\.label.lab.example', 'sp\\032ce.example', ''],
    classlessRoutes: [
      { destination: '0.0.0.0', prefix: 0, router: '10.0.0.1' },
      { destination: '192.168.0.0', prefix: 16, router: '10.0.0.2' },
      { destination: '172.16.0.0', prefix: 12, router: '10.0.0.3' },
      { destination: '10.9.8.7', prefix: 32, router: '10.0.0.4' },
    ],
    ipxe: encodeEncapsulated(new Map([[176, Buffer.from([1])], [19, Buffer.from([1])]])),
    other: new Map([[2, Buffer.from([0, 0, 14, 16])], [224, Buffer.from('site-local')], [250, Buffer.alloc(0)]]),
  };
}

/** The option instances of the options field as [code, length] pairs, in wire order. */
function wireOptions(buf: Buffer, start = 240, end = buf.length): [number, number][] {
  const out: [number, number][] = [];
  let i = start;
  while (i < end && buf[i] !== 255) {
    if (buf[i] === 0) {
      i++;
      continue;
    }
    out.push([buf[i]!, buf[i + 1]!]);
    i += 2 + buf[i + 1]!;
  }
  return out;
}

/** A raw message: a BOOTREQUEST header, the cookie unless told otherwise, then `options` verbatim. */
function raw(options: number[], opts: { file?: number[]; sname?: number[]; cookie?: number[]; header?: (b: Buffer) => void; pad?: number } = {}): Buffer {
  const head = Buffer.alloc(236);
  head[0] = 1;
  head[1] = 1;
  head[2] = 6;
  Buffer.from('525400abcdef', 'hex').copy(head, 28);
  if (opts.sname) Buffer.from(opts.sname).copy(head, 44);
  if (opts.file) Buffer.from(opts.file).copy(head, 108);
  opts.header?.(head);
  const body = Buffer.from([...(opts.cookie ?? [99, 130, 83, 99]), ...options]);
  const out = Buffer.concat([head, body]);
  return opts.pad !== undefined && out.length < opts.pad ? Buffer.concat([out, Buffer.alloc(opts.pad - out.length)]) : out;
}

const DISCOVER = [53, 1, 1];
const latin1 = (s: string): number[] => [...Buffer.from(s, 'latin1')];

// ---------------------------------------------------------------------------------------------------------

t.test('round trip of a packet with every typed option', async (t) => {
  const p = packet(richOptions(), { op: 2, yiaddr: '10.0.0.50', siaddr: '10.0.0.1', giaddr: '10.0.5.1', sname: 'metalbox', file: 'undionly.kpxe', hops: 1 });
  const wire = encodeDhcp(p, { maxSize: 1500 });
  t.same(decodeDhcp(wire), p, 'decode(encode(x)) equals x');
  t.ok(encodeDhcp(decodeDhcp(wire), { maxSize: 1500 }).equals(wire), 'encode is deterministic');

  const codes = wireOptions(wire).map(([c]) => c);
  t.equal(codes[0], OPTION.MESSAGE_TYPE, '53 first');
  t.equal(codes[1], OPTION.SERVER_ID, '54 second');
  t.equal(codes.at(-1), OPTION.RELAY_AGENT, '82 last (RFC 3046 §2.1)');
  const middle = codes.slice(2, -1);
  t.same(middle, [...middle].sort((a, b) => a - b), 'the rest ascending');
  t.notOk(codes.includes(OPTION.OVERLOAD), 'no overload when it fits');

  // The same packet with the default 576 limit and free file/sname fields overloads and still round trips.
  const small = packet(richOptions(), { op: 2 });
  const over = encodeDhcp(small);
  t.ok(over.length <= 548, `fits 576-28 octets (${over.length})`);
  t.ok(wireOptions(over).some(([c]) => c === OPTION.OVERLOAD), 'option 52 present');
  t.same(decodeDhcp(over), small, 'overloaded encoding decodes to the same packet');
});

t.test('user class: RFC 3004 list and the bare-string quirk both re-encode byte for byte', async (t) => {
  for (const [label, bytes, expected, rawFlag] of [
    ['iPXE bare string', latin1('iPXE'), ['iPXE'], true],
    ['RFC 3004 list', [4, ...latin1('iPXE'), 2, ...latin1('ab')], ['iPXE', 'ab'], undefined],
    ['bare string with a zero octet', [0, 65, 66], ['\0AB'], true],
    ['length octet past the end', [9, 65], ['\tA'], true],
  ] as const) {
    const p = decodeDhcp(raw([...DISCOVER, OPTION.USER_CLASS, bytes.length, ...bytes, 255]));
    t.same(p.options.userClass, expected, `${label}: items`);
    t.equal(p.options.userClassRaw, rawFlag, `${label}: raw flag`);
    const again = encodeDhcp(p);
    const at = again.indexOf(Buffer.from([OPTION.USER_CLASS, bytes.length, ...bytes]), 240);
    t.ok(at >= 240, `${label}: same octets on the wire`);
  }
  t.throws(() => encodeDhcp(packet({ userClass: ['a', 'b'], userClassRaw: true })), TypeError, 'raw needs exactly one item');
  t.throws(() => encodeDhcp(packet({ userClass: [''] })), TypeError, 'RFC 3004 items are at least one octet');
});

t.test('RFC 3396: a 600-octet option is split into 255+255+90 and joined again', async (t) => {
  const big = Buffer.alloc(600);
  for (let i = 0; i < big.length; i++) big[i] = i & 0xff;
  const p = packet({ messageType: MESSAGE_TYPE.OFFER, vendorSpecific: big, other: new Map([[224, Buffer.from(big.subarray(0, 300))]]) });
  const wire = encodeDhcp(p, { maxSize: 1500 });
  t.same(wireOptions(wire), [[53, 1], [43, 255], [43, 255], [43, 90], [224, 255], [224, 45]], 'instances in order');
  const back = decodeDhcp(wire);
  t.ok(back.options.vendorSpecific?.equals(big), 'option 43 joined');
  t.ok(back.options.other.get(224)?.equals(big.subarray(0, 300)), 'raw option 224 joined');
  t.throws(() => encodeDhcp(p), TypeError, 'does not fit 576 even with overload: caller bug');
});

t.test('RFC 3396 + RFC 3397: the RFC 3397 §3 example, split in three instances with a pointer across them', async (t) => {
  const data = [3, ...latin1('eng'), 5, ...latin1('apple'), 3, ...latin1('com'), 0, 9, ...latin1('marketing'), 0xc0, 0x04];
  const opts = [...DISCOVER];
  for (let i = 0; i < data.length; i += 9) opts.push(OPTION.DOMAIN_SEARCH, 9, ...data.slice(i, i + 9));
  const p = decodeDhcp(raw([...opts, 255]));
  t.same(p.options.domainSearch, ['eng.apple.com', 'marketing.apple.com']);
  const wire = encodeDhcp(p);
  const [, len] = wireOptions(wire).find(([c]) => c === OPTION.DOMAIN_SEARCH)!;
  t.equal(len, data.length, 'our encoder compresses the same way');
});

t.test('option concatenation across the options field, file and sname, in that order', async (t) => {
  const wire = raw([...DISCOVER, OPTION.OVERLOAD, 1, 3, 43, 2, 0x61, 0x62, 255], {
    file: [43, 2, 0x63, 0x64, 255],
    sname: [43, 1, 0x65, 12, 3, ...latin1('box'), 255],
  });
  const p = decodeDhcp(wire);
  t.equal(p.options.vendorSpecific?.toString(), 'abcde', 'options, then file, then sname (RFC 3396)');
  t.equal(p.options.hostname, 'box', 'an option only in sname');
  t.equal(p.file, '', 'file carried options');
  t.equal(p.sname, '', 'sname carried options');

  const fileOnly = decodeDhcp(raw([...DISCOVER, OPTION.OVERLOAD, 1, 1, 255], { file: [12, 1, 0x78, 255], sname: latin1('server-a') }));
  t.equal(fileOnly.options.hostname, 'x');
  t.equal(fileOnly.sname, 'server-a', 'sname keeps its text when only file is overloaded');

  const noEnd = decodeDhcp(raw([...DISCOVER, OPTION.OVERLOAD, 1, 1, 255], { file: [12, 1, 0x79] }));
  t.equal(noEnd.options.hostname, 'y', 'a field without End is tolerated');
});

t.test('encoder overload: file then sname, only when empty', async (t) => {
  const filler = (n: number) => new Map([[224, Buffer.alloc(n, 0x41)], [225, Buffer.alloc(100, 0x42)], [226, Buffer.alloc(40, 0x43)]]);
  // 224 (n) fills the options field; 225 goes to file; 226 to sname.
  const p = packet({ messageType: MESSAGE_TYPE.OFFER, serverId: '10.0.0.1', other: filler(255) });
  const wire = encodeDhcp(p);
  t.ok(wire.length <= 548, 'within 576 - 28');
  const opts = wireOptions(wire);
  t.same(opts.slice(0, 3), [[53, 1], [54, 4], [52, 1]], '53, 54, then 52');
  t.equal(wire[240 + 3 + 6 + 2], 3, 'overload value 3 (file and sname)');
  t.same(wireOptions(wire, 108, 236), [[225, 100]], 'file carries 225');
  t.same(wireOptions(wire, 44, 108), [[226, 40]], 'sname carries 226');
  t.same(decodeDhcp(wire), p, 'round trip');

  const withFile = packet({ messageType: MESSAGE_TYPE.OFFER, other: new Map([[224, Buffer.alloc(255)], [225, Buffer.alloc(30)], [226, Buffer.alloc(40)]]) }, { file: 'pxelinux.0' });
  const w2 = encodeDhcp(withFile);
  t.same(wireOptions(w2, 44, 108), [[226, 40]], 'file in use: sname only');
  t.equal(decodeDhcp(w2).file, 'pxelinux.0');
  t.same(decodeDhcp(w2), withFile);

  const both = packet({ other: new Map([[224, Buffer.alloc(255)], [225, Buffer.alloc(255)]]) }, { file: 'a', sname: 'b' });
  t.throws(() => encodeDhcp(both), TypeError, 'no room and no free field');
  t.doesNotThrow(() => encodeDhcp(both, { maxSize: 1500 }), 'fits a larger client limit');
});

t.test('encoder: padding, limits and header fields', async (t) => {
  const p = packet({ messageType: MESSAGE_TYPE.NAK }, { chaddr: Buffer.from('020000000001', 'hex'), op: 2 });
  const wire = encodeDhcp(p);
  t.equal(wire.length, 300, 'padded to the BOOTP minimum');
  t.equal(wire.readUInt32BE(236), 0x63825363, 'cookie');
  t.same(wireOptions(wire), [[53, 1]]);
  t.equal(wire[243], 255, 'End right after the options');
  const back = decodeDhcp(wire);
  t.equal(back.chaddr.length, 16, 'chaddr is 16 octets after decode');
  t.equal(hwAddress(back), '02:00:00:00:00:01');
  t.equal(clientKey(back), '02:00:00:00:00:01');
  t.equal(clientKey({ ...back, htype: 32, hlen: 3 }), '32/02:00:00', 'non-Ethernet keys cannot collide with MACs');
  t.equal(formatDhcp(back).split('\n')[0], 'op: 2 BOOTREPLY');

  // Option 57 below the RFC 2132 minimum is raised to 576.
  const big = packet({ other: new Map([[224, Buffer.alloc(250)]]) });
  t.equal(encodeDhcp(big, { maxSize: 300 }).length, encodeDhcp(big).length, 'maxSize floor 576');

  for (const [label, bad] of [
    ['op 3', packet({}, { op: 3 as 1 })],
    ['hlen 17', packet({}, { hlen: 17 })],
    ['xid too big', packet({}, { xid: 2 ** 32 })],
    ['chaddr 17 octets', packet({}, { chaddr: Buffer.alloc(17) })],
    ['bad ciaddr', packet({}, { ciaddr: '10.0.0.256' })],
    ['sname too long', packet({}, { sname: 'x'.repeat(65) })],
    ['file not latin1', packet({}, { file: 'snø☃' })],
    ['bad router', packet({ routers: ['10.0.0.1', 'gateway'] })],
    ['empty router list', packet({ routers: [] })],
    ['empty arch list', packet({ clientArch: [] })],
    ['lease time negative', packet({ leaseTime: -1 })],
    ['mtu 70000', packet({ mtu: 70000 })],
    ['message type 9', packet({ messageType: 9 as 1 })],
    ['hostname not latin1', packet({ hostname: '☃' })],
    ['route with host bits past the prefix octets', packet({ classlessRoutes: [{ destination: '10.1.0.0', prefix: 8, router: '10.0.0.1' }] })],
    ['route prefix 33', packet({ classlessRoutes: [{ destination: '10.0.0.0', prefix: 33, router: '10.0.0.1' }] })],
    ['domain with an empty label', packet({ domainSearch: ['a..b'] })],
    ['domain label of 64 octets', packet({ domainSearch: [`${'a'.repeat(64)}.com`] })],
    ['raw option 52', packet({ other: new Map([[52, Buffer.from([1])]]) })],
    ['raw option 255', packet({ other: new Map([[255, Buffer.alloc(0)]]) })],
    ['raw 53 and typed 53', packet({ messageType: 1, other: new Map([[53, Buffer.from([1])]]) })],
    ['relay sub-option of 256 octets', packet({ relayAgent: { circuitId: Buffer.alloc(256), other: [] } })],
  ] as const) {
    t.throws(() => encodeDhcp(bad), TypeError, `${label}: caller bug`);
  }
});

t.test('decoding details', async (t) => {
  const p = decodeDhcp(raw([...DISCOVER, 12, 6, ...latin1('node'), 0, 0, 255]));
  t.equal(p.options.hostname, 'node', 'trailing NULs of NVT strings dropped (RFC 2132 §2)');
  const junkAfterEnd = decodeDhcp(raw([...DISCOVER, 255, 12, 200, 1]));
  t.equal(junkAfterEnd.options.hostname, undefined, 'nothing after End is read');
  const bootp = decodeDhcp(raw([255], { pad: 300 }));
  t.equal(bootp.options.messageType, undefined, 'a cookie and no option 53 decodes (BOOTP-style), the server decides');
  const names = decodeDhcp(raw([...DISCOVER, 1, 4, 255, 255, 255, 0, 2, 4, 0, 0, 0x0e, 0x10, 255], { sname: latin1('srv'), file: latin1('boot.efi') }));
  t.equal(names.options.other.get(2)?.toString('hex'), '00000e10', 'unknown option kept raw');
  t.equal(names.sname, 'srv');
  t.equal(names.file, 'boot.efi');
  const relay = decodeDhcp(raw([...DISCOVER, 82, 12, 1, 3, 0x61, 0x62, 0x63, 9, 1, 0x7a, 1, 2, 0x78, 0x79, 255]));
  t.same(relay.options.relayAgent, { circuitId: Buffer.from('abc'), other: [[9, Buffer.from('z')], [1, Buffer.from('xy')]] }, 'sub-options in order, a repeated circuit id kept in other');
  t.same(decodeDhcp(encodeDhcp(relay)).options.relayAgent, relay.options.relayAgent);

  const encap = decodeEncapsulated(Buffer.from([0, 1, 1, 9, 6, 1, 8, 1, 1, 7, 255, 3, 3]));
  t.same([...encap], [[1, Buffer.from([9, 7])], [6, Buffer.from([8])]], 'pad skipped, repeats joined, stop at End');
  t.same([...decodeEncapsulated(encodeEncapsulated(encap))], [...encap], 'encapsulated round trip');
  t.throws(() => decodeIpxeEncap(Buffer.from([19, 5, 1])), { code: 'DHCP_BAD_OPTION', details: { offset: 2, option: 175 } });
});

// ---------------------------------------------------------------------------------------------------------
// Hostile packets: each one's error code and the offset it points at.

interface Hostile {
  name: string;
  buf: Buffer;
  code: string;
  offset: number;
}

const O = 240; // first option octet

function hostiles(): Hostile[] {
  const h: Hostile[] = [
    { name: 'empty buffer', buf: Buffer.alloc(0), code: 'DHCP_TRUNCATED', offset: 0 },
    { name: '235 octets', buf: Buffer.alloc(235, 1), code: 'DHCP_TRUNCATED', offset: 235 },
    { name: 'header without the cookie (239 octets)', buf: raw([]).subarray(0, 239), code: 'DHCP_TRUNCATED', offset: 239 },
    { name: 'BOOTP: no cookie', buf: raw([], { cookie: [0, 0, 0, 0], pad: 300 }), code: 'DHCP_BAD_COOKIE', offset: 236 },
    { name: 'wrong cookie', buf: raw(DISCOVER, { cookie: [99, 130, 83, 100] }), code: 'DHCP_BAD_COOKIE', offset: 236 },
    { name: 'op 3', buf: raw(DISCOVER, { header: (b) => { b[0] = 3; } }), code: 'DHCP_BAD_HEADER', offset: 0 },
    { name: 'op 0', buf: raw(DISCOVER, { header: (b) => { b[0] = 0; } }), code: 'DHCP_BAD_HEADER', offset: 0 },
    { name: 'hlen 17', buf: raw(DISCOVER, { header: (b) => { b[2] = 17; } }), code: 'DHCP_BAD_HEADER', offset: 2 },
    { name: 'option length past the end', buf: raw([...DISCOVER, 12, 10, 0x61, 0x62]), code: 'DHCP_OPTION_OVERRUN', offset: O + 3 },
    { name: 'option code without a length octet', buf: raw([...DISCOVER, 12]), code: 'DHCP_OPTION_OVERRUN', offset: O + 3 },
    { name: 'option 53 of length 0', buf: raw([53, 0, 255]), code: 'DHCP_BAD_OPTION', offset: O },
    { name: 'option 53 of length 2', buf: raw([53, 2, 1, 1, 255]), code: 'DHCP_BAD_OPTION', offset: O },
    { name: 'option 53 value 0', buf: raw([53, 1, 0, 255]), code: 'DHCP_BAD_OPTION', offset: O },
    { name: 'option 53 value 9', buf: raw([53, 1, 9, 255]), code: 'DHCP_BAD_OPTION', offset: O },
    { name: 'option 53 twice (joined to 2 octets)', buf: raw([53, 1, 1, 53, 1, 3, 255]), code: 'DHCP_BAD_OPTION', offset: O },
    { name: 'subnet mask of 3 octets', buf: raw([...DISCOVER, 1, 3, 255, 255, 255, 255]), code: 'DHCP_BAD_OPTION', offset: O + 3 },
    { name: 'routers of 6 octets', buf: raw([...DISCOVER, 3, 6, 10, 0, 0, 1, 10, 0, 255]), code: 'DHCP_BAD_OPTION', offset: O + 3 },
    { name: 'lease time of 2 octets', buf: raw([...DISCOVER, 51, 2, 1, 1, 255]), code: 'DHCP_BAD_OPTION', offset: O + 3 },
    { name: 'client arch of 3 octets', buf: raw([...DISCOVER, 93, 3, 0, 0, 7, 255]), code: 'DHCP_BAD_OPTION', offset: O + 3 },
    { name: 'client NDI of 2 octets', buf: raw([...DISCOVER, 94, 2, 1, 2, 255]), code: 'DHCP_BAD_OPTION', offset: O + 3 },
    { name: 'client UUID empty', buf: raw([...DISCOVER, 97, 0, 255]), code: 'DHCP_BAD_OPTION', offset: O + 3 },
    { name: 'overload 52 of value 4', buf: raw([...DISCOVER, 52, 1, 4, 255]), code: 'DHCP_BAD_OVERLOAD', offset: O + 3 },
    { name: 'overload 52 of value 0', buf: raw([...DISCOVER, 52, 1, 0, 255]), code: 'DHCP_BAD_OVERLOAD', offset: O + 3 },
    { name: 'overload 52 of 2 octets', buf: raw([...DISCOVER, 52, 2, 1, 1, 255]), code: 'DHCP_BAD_OVERLOAD', offset: O + 3 },
    { name: '52 inside file', buf: raw([...DISCOVER, 52, 1, 1, 255], { file: [52, 1, 2, 255] }), code: 'DHCP_BAD_OVERLOAD', offset: 108 },
    { name: '52 inside sname (overload loop)', buf: raw([...DISCOVER, 52, 1, 3, 255], { file: [255], sname: [0, 52, 1, 1, 255] }), code: 'DHCP_BAD_OVERLOAD', offset: 45 },
    { name: '52 twice', buf: raw([...DISCOVER, 52, 1, 1, 52, 1, 1, 255], { file: [255] }), code: 'DHCP_BAD_OVERLOAD', offset: O + 6 },
    { name: 'option running past the end of file', buf: raw([...DISCOVER, 52, 1, 1, 255], { file: [...Array(120).fill(0), 12, 20, 0x61] }), code: 'DHCP_OPTION_OVERRUN', offset: 108 + 120 },
    { name: 'option running past the end of sname', buf: raw([...DISCOVER, 52, 1, 2, 255], { sname: [...Array(60).fill(0), 12, 5, 0x61] }), code: 'DHCP_OPTION_OVERRUN', offset: 44 + 60 },
    { name: 'domain search: pointer to itself', buf: raw([...DISCOVER, 119, 2, 0xc0, 0x00, 255]), code: 'DHCP_BAD_OPTION', offset: O + 5 },
    { name: 'domain search: pointer loop over two names', buf: raw([...DISCOVER, 119, 8, 1, 0x61, 0xc0, 0x06, 1, 0x62, 0xc0, 0x00, 255]), code: 'DHCP_BAD_OPTION', offset: O + 7 },
    { name: 'domain search: forward pointer', buf: raw([...DISCOVER, 119, 5, 0xc0, 0x02, 1, 0x61, 0, 255]), code: 'DHCP_BAD_OPTION', offset: O + 5 },
    { name: 'domain search: reserved label type', buf: raw([...DISCOVER, 119, 3, 0x41, 0x61, 0, 255]), code: 'DHCP_BAD_OPTION', offset: O + 5 },
    { name: 'domain search: label past the end', buf: raw([...DISCOVER, 119, 3, 5, 0x61, 0x62, 255]), code: 'DHCP_BAD_OPTION', offset: O + 5 },
    { name: 'domain search: no terminating zero', buf: raw([...DISCOVER, 119, 2, 1, 0x61, 255]), code: 'DHCP_BAD_OPTION', offset: O + 7 },
    { name: 'domain search: cut pointer', buf: raw([...DISCOVER, 119, 1, 0xc0, 255]), code: 'DHCP_BAD_OPTION', offset: O + 5 },
    { name: 'classless route /33', buf: raw([...DISCOVER, 121, 5, 33, 10, 0, 0, 1, 255]), code: 'DHCP_BAD_OPTION', offset: O + 5 },
    { name: 'classless route cut short', buf: raw([...DISCOVER, 121, 4, 8, 10, 0, 0, 255]), code: 'DHCP_BAD_OPTION', offset: O + 7 },
    { name: 'relay agent sub-option past the end', buf: raw([...DISCOVER, 82, 3, 1, 5, 0x61, 255]), code: 'DHCP_BAD_OPTION', offset: O + 7 },
    {
      // The error offset follows the data across the three instances the option was split into.
      name: 'domain search: bad label in the third of three instances',
      buf: raw([...DISCOVER, 119, 2, 1, 0x61, 119, 1, 0, 119, 2, 0x80, 0, 255]),
      code: 'DHCP_BAD_OPTION',
      offset: O + 3 + 4 + 3 + 2,
    },
  ];
  // A name over 255 octets (5 labels of 63 = 320).
  const long: number[] = [];
  for (let i = 0; i < 5; i++) long.push(63, ...Array(63).fill(0x61));
  long.push(0);
  const instances: number[] = [];
  for (let i = 0; i < long.length; i += 255) {
    const chunk = long.slice(i, i + 255);
    instances.push(119, chunk.length, ...chunk);
  }
  h.push({ name: 'domain search: name over 255 octets', buf: raw([...DISCOVER, ...instances, 255]), code: 'DHCP_BAD_OPTION', offset: O + 5 });
  // 10k instances of option 53 join to 10,000 octets.
  h.push({ name: '10k instances of option 53', buf: raw(Array.from({ length: 10_000 }, () => [53, 1, 1]).flat()), code: 'DHCP_BAD_OPTION', offset: O });
  return h;
}

t.test('hostile packets: each error code and offset', async (t) => {
  const table = hostiles();
  t.ok(table.length >= 15, `${table.length} cases`);
  for (const c of table) {
    let caught: unknown;
    try {
      decodeDhcp(c.buf);
    } catch (err) {
      caught = err;
    }
    t.ok(isMetalboxError(caught), `${c.name}: a MetalboxError`);
    if (isMetalboxError(caught)) {
      t.equal(caught.code, c.code, `${c.name}: ${c.code}`);
      t.equal(caught.details?.offset, c.offset, `${c.name}: offset ${c.offset}`);
    }
  }
});

t.test('hostile but legal: big inputs decode in bounded time', async (t) => {
  // Best of three, so a cold JIT or a GC pause does not decide; a quadratic decoder would take seconds.
  const time = (f: () => void): number => {
    let best = Infinity;
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      f();
      best = Math.min(best, performance.now() - t0);
    }
    return best;
  };
  const pads = raw([...DISCOVER], { pad: 65507 });
  let p!: DhcpPacket;
  t.ok(time(() => { p = decodeDhcp(pads); }) < 50, 'a 64 KiB packet of pads decodes in < 50 ms');
  t.equal(p.options.messageType, MESSAGE_TYPE.DISCOVER);

  const many = raw([...DISCOVER, ...Array.from({ length: 10_000 }, (_, i) => [43, 1, i & 0xff]).flat(), 255]);
  t.ok(time(() => { p = decodeDhcp(many); }) < 50, '10k one-octet instances of option 43 decode in < 50 ms');
  t.equal(p.options.vendorSpecific?.length, 10_000, 'joined to 10,000 octets (RFC 3396)');
  t.throws(() => encodeDhcp(p), TypeError, 'too big for 576 octets: the encoder refuses');
  t.same(decodeDhcp(encodeDhcp(p, { maxSize: 65535 })), p, 'round trips with a big enough limit');

  // Pointer chains: each name is a pointer to the one before (linear thanks to memoized suffixes).
  const chain: number[] = [1, 0x61, 0];
  while (chain.length < 16_000) {
    const prev = chain.length - (chain.length === 3 ? 3 : 2);
    chain.push(0xc0 | (prev >> 8), prev & 0xff);
  }
  const chained: number[] = [];
  for (let i = 0; i < chain.length; i += 255) {
    const piece = chain.slice(i, i + 255);
    chained.push(119, piece.length, ...piece);
  }
  const pointerBuf = raw([...DISCOVER, ...chained, 255]);
  t.ok(time(() => { p = decodeDhcp(pointerBuf); }) < 100, `${chain.length} octets of chained pointers decode in < 100 ms`);
  t.ok(p.options.domainSearch!.length > 7_900 && p.options.domainSearch!.every((n) => n === 'a'), 'every name resolves to "a"');

  // Names that each point into the middle of a long run of labels.
  const run: number[] = [];
  for (let i = 0; i < 120; i++) run.push(1, 0x62);
  run.push(0);
  const names = [...run];
  for (let k = 0; names.length < 60_000; k = (k + 2) % 240) names.push(0xc0, k);
  const pieces: number[] = [];
  for (let i = 0; i < names.length; i += 255) {
    const piece = names.slice(i, i + 255);
    pieces.push(119, piece.length, ...piece);
  }
  const midBuf = raw([...DISCOVER, ...pieces, 255]);
  t.ok(time(() => { p = decodeDhcp(midBuf); }) < 100, 'pointers into a long run of labels decode in < 100 ms');
});

// ---------------------------------------------------------------------------------------------------------
// Fuzz: seeded, deterministic mutations of real captures and of our own encodings. decode must return a
// packet that re-encodes and re-decodes (and re-encodes to the same octets), or throw a DHCP_* MetalboxError
// with an offset inside the input. Nothing else may escape.

/** mulberry32: small, fast, deterministic. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** Offsets of option length octets in the options field (and file/sname when they hold options). */
function lengthOffsets(buf: Buffer): number[] {
  const out: number[] = [];
  const scan = (start: number, end: number): void => {
    let i = start;
    while (i + 1 < end && buf[i] !== 255) {
      if (buf[i] === 0) {
        i++;
        continue;
      }
      out.push(i + 1);
      i += 2 + buf[i + 1]!;
    }
  };
  scan(240, buf.length);
  scan(108, 236);
  scan(44, 108);
  return out;
}

function seeds(): Buffer[] {
  const s: Buffer[] = readdirSync(GOLDEN).filter((f) => f.endsWith('.bin')).sort().map((f) => readFileSync(join(GOLDEN, f)));
  s.push(encodeDhcp(packet(richOptions(), { op: 2, sname: 'metalbox', file: 'undionly.kpxe' }), { maxSize: 1500 }));
  s.push(encodeDhcp(packet(richOptions(), { op: 2 }))); // overloaded into file and sname
  s.push(raw([...DISCOVER, OPTION.OVERLOAD, 1, 3, 255], { file: [119, 4, 1, 0x61, 0xc0, 0x00, 255], sname: [43, 2, 1, 2, 255] }));
  return s;
}

function mutate(r: () => number, base: Buffer, pool: Buffer[]): Buffer {
  const int = (n: number): number => Math.floor(r() * n);
  // Most mutations land in the options area (and file/sname), where the parsing is; a few anywhere.
  const spot = (len: number): number => {
    const x = r();
    if (x < 0.75 && len > 240) return 240 + int(len - 240);
    if (x < 0.9) return 44 + int(192);
    return int(len);
  };
  let b = Buffer.from(base);
  const rounds = 1 + int(3);
  for (let k = 0; k < rounds; k++) {
    switch (int(8)) {
      case 0: // bit flips
        for (let i = 1 + int(4); i > 0; i--) {
          const at = spot(b.length);
          if (at < b.length) b[at] = b[at]! ^ (1 << int(8));
        }
        break;
      case 1: { // random octet
        const at = spot(b.length);
        if (at < b.length) b[at] = int(256);
        break;
      }
      case 2: // truncation, mostly inside the options
        b = b.subarray(0, r() < 0.9 ? Math.min(b.length, spot(b.length + 1)) : int(b.length + 1));
        break;
      case 3: { // splice two inputs, mostly at option-area offsets
        const other = pool[int(pool.length)]!;
        b = Buffer.concat([b.subarray(0, spot(b.length + 1)), other.subarray(spot(other.length + 1))]);
        break;
      }
      case 4: { // length octet tampering
        const lens = lengthOffsets(b);
        if (lens.length > 0) {
          const at = lens[int(lens.length)]!;
          const v = b[at]!;
          b[at] = [0, 1, 255, (v + 1) & 0xff, (v - 1) & 0xff, int(256)][int(6)]!;
        }
        break;
      }
      case 5: { // insert random octets into the options
        const at = Math.min(b.length, 240 + int(Math.max(1, b.length - 239)));
        const ins = Buffer.from(Array.from({ length: 1 + int(8) }, () => int(256)));
        b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
        break;
      }
      case 6: { // duplicate a slice (repeated options, RFC 3396 joins)
        const from = spot(b.length);
        const slice = b.subarray(from, from + int(40));
        const at = Math.min(b.length, spot(b.length + 1));
        b = Buffer.concat([b.subarray(0, at), slice, b.subarray(at)]);
        break;
      }
      default: { // interesting values: op, hlen, an overload value, pointers, End
        const at = r() < 0.2 ? [0, 2][int(2)]! : spot(b.length);
        if (at < b.length) b[at] = [0, 1, 2, 3, 16, 17, 52, 0xc0, 255][int(9)]!;
      }
    }
  }
  return b;
}

t.test('fuzz: decode never throws anything but a DHCP_* MetalboxError', async (t) => {
  const iterations = Number(process.env.METALBOX_FUZZ_ITERATIONS ?? 200_000);
  const r = rng(0x6d62782d); // "mbx-"
  const pool = seeds();
  const counts = { decoded: 0, rejected: 0 };
  const codes = new Map<string, number>();
  // The slowest inputs by wall time (kept to 16), re-timed after the run.
  const slow: { ms: number; input: Buffer }[] = [];
  const noteTime = (ms: number, input: Buffer): void => {
    if (slow.length < 16 || ms > slow[slow.length - 1]!.ms) {
      slow.push({ ms, input });
      slow.sort((a, b) => b.ms - a.ms);
      if (slow.length > 16) slow.pop();
    }
  };
  let failure: string | undefined;
  const started = performance.now();
  for (let i = 0; i < iterations && failure === undefined; i++) {
    const input = mutate(r, pool[i % pool.length]!, pool);
    const t0 = performance.now();
    let p: DhcpPacket;
    try {
      p = decodeDhcp(input);
    } catch (err) {
      noteTime(performance.now() - t0, input);
      if (!isMetalboxError(err) || !err.code.startsWith('DHCP_')) failure = `iteration ${i}: ${String(err)} for ${input.toString('hex')}`;
      else if (typeof err.details?.offset !== 'number' || (err.details.offset as number) < 0 || (err.details.offset as number) > input.length) failure = `iteration ${i}: offset ${String(err.details?.offset)} outside the input`;
      counts.rejected++;
      const code = isMetalboxError(err) ? err.code : 'other';
      codes.set(code, (codes.get(code) ?? 0) + 1);
      continue;
    }
    noteTime(performance.now() - t0, input);
    counts.decoded++;
    try {
      const once = encodeDhcp(p, { maxSize: 65535 });
      const again = encodeDhcp(decodeDhcp(once), { maxSize: 65535 });
      if (!again.equals(once)) failure = `iteration ${i}: re-encoding is not stable for ${input.toString('hex')}`;
      else if (formatDhcp(decodeDhcp(once)) !== formatDhcp(p)) failure = `iteration ${i}: re-decoded packet differs for ${input.toString('hex')}`;
    } catch (err) {
      failure = `iteration ${i}: round trip threw ${String(err)} for ${input.toString('hex')}`;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  t.equal(failure, undefined, 'no escapes, every decoded packet round trips');
  t.ok(counts.decoded > iterations / 20 && counts.rejected > iterations / 20, `both outcomes exercised: ${JSON.stringify(counts)}`);
  // Time per decode stays bounded. Wall time of a single call measures the scheduler as much as the codec on
  // a busy machine, so the slowest inputs of the run are decoded again, best of five: a typical decode takes
  // microseconds, and anything super-linear on these (up to a few KiB) inputs would take milliseconds.
  const retimed = slow.map(({ input }) => {
    let best = Infinity;
    for (let k = 0; k < 5; k++) {
      const t0 = performance.now();
      try {
        decodeDhcp(input);
      } catch {
        // rejected inputs are timed too
      }
      best = Math.min(best, performance.now() - t0);
    }
    return best;
  });
  const worst = Math.max(...retimed);
  t.ok(worst < 1, `slowest fuzz inputs re-timed: worst ${(worst * 1000).toFixed(1)} µs (first seen at ${slow[0]!.ms.toFixed(2)} ms wall)`);
  t.comment(`fuzz: ${iterations} iterations in ${seconds.toFixed(1)} s, ${JSON.stringify(counts)}, codes ${JSON.stringify(Object.fromEntries([...codes].sort()))}, worst re-timed decode ${(worst * 1000).toFixed(1)} µs`);
});

t.test('parseIPv4 (hand-written scan) agrees with a plain regex reference', async (t) => {
  const reference = (text: string): number | undefined => {
    const m = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/.exec(text);
    return m ? ((Number(m[1]) * 2 ** 24) + (Number(m[2]) << 16) + (Number(m[3]) << 8) + Number(m[4])) : undefined;
  };
  const cases = ['0.0.0.0', '255.255.255.255', '10.0.0.1', '1.2.3.4', '01.2.3.4', '1.2.3.04', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.256',
    '1..3.4', '.1.2.3', '1.2.3.', 'a.b.c.d', ' 1.2.3.4', '1.2.3.4 ', '100.200.250.199', '999.1.1.1', '1.2.3.1000', '', '0.0.0.00', '192.168.001.1', '1.2.3.-4', '１.2.3.4'];
  for (const c of cases) t.equal(parseIPv4(c), reference(c), JSON.stringify(c));
  const r = rng(7);
  for (let i = 0; i < 5000; i++) {
    const s = Array.from({ length: 4 }, () => String(Math.floor(r() * 300))).join('.');
    if (parseIPv4(s) !== reference(s)) t.fail(s);
  }
});
