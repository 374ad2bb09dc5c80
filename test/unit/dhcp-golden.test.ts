// Golden captures: each test/golden/dhcp/*.bin is a UDP payload a real client sent (capture.sh records
// them from udhcpc, dhclient, udhcpc behind ISC dhcrelay, iPXE under SeaBIOS and OVMF's PXE in network
// namespaces); its .txt beside it
// is formatDhcp's dump, checked in and reviewed. METALBOX_UPDATE_GOLDEN=1 rewrites the .txt files.
import t from 'tap';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { decodeDhcp, decodeIpxeEncap, encodeDhcp, formatDhcp, hwAddress, MESSAGE_TYPE, OPTION } from '../../src/protocols/dhcp/index.ts';

const DIR = fileURLToPath(new URL('../golden/dhcp/', import.meta.url));
const UPDATE = process.env.METALBOX_UPDATE_GOLDEN === '1';

// The captures the done-when of the codec asks for; a missing one is a failure, not a smaller test.
const EXPECTED = ['udhcpc', 'udhcpc-pxe', 'dhclient', 'udhcpc-relayed', 'ipxe-seabios', 'ovmf-pxe'].flatMap((c) => [`${c}-discover`, `${c}-request`]);

const captures = readdirSync(DIR).filter((f) => f.endsWith('.bin')).map((f) => f.slice(0, -4)).sort();

t.same(EXPECTED.filter((e) => !captures.includes(e)), [], 'every expected capture is checked in');

for (const name of captures) {
  t.test(name, async (t) => {
    const bin = readFileSync(join(DIR, `${name}.bin`));
    const packet = decodeDhcp(bin);
    const text = formatDhcp(packet);
    const txtPath = join(DIR, `${name}.txt`);
    if (UPDATE) writeFileSync(txtPath, text);
    t.ok(existsSync(txtPath), `${name}.txt exists (run with METALBOX_UPDATE_GOLDEN=1 to create it)`);
    if (existsSync(txtPath)) t.equal(text, readFileSync(txtPath, 'utf8'), 'decoded dump matches the golden text');

    // Round trip: what we encode from it decodes to the same packet, and encoding is then stable.
    const again = encodeDhcp(packet, { maxSize: 1500 });
    t.same(decodeDhcp(again), packet, 're-encoded capture decodes to the same packet');
    t.ok(encodeDhcp(decodeDhcp(again), { maxSize: 1500 }).equals(again), 'encoding is stable');
    // Every client sent options in an order we do not impose, so bytes differ only in option order and padding.
    t.equal(again.length >= 300, true, 'at least the BOOTP minimum');
    t.equal(packet.op, 1, 'a client message');
    t.ok([MESSAGE_TYPE.DISCOVER, MESSAGE_TYPE.REQUEST].includes(packet.options.messageType as 1 | 3), 'DISCOVER or REQUEST');
    t.match(hwAddress(packet), /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/, 'an Ethernet MAC');
  });
}

t.test('client facts the server relies on', async (t) => {
  const load = (name: string) => decodeDhcp(readFileSync(join(DIR, `${name}.bin`)));

  const ipxe = load('ipxe-seabios-discover');
  t.same(ipxe.options.userClass, ['iPXE'], 'iPXE: user class "iPXE"');
  t.equal(ipxe.options.userClassRaw, true, 'iPXE: sent without the RFC 3004 length octet (QUIRK)');
  t.ok(ipxe.options.ipxe !== undefined, 'iPXE: option 175 present');
  const encap = decodeIpxeEncap(ipxe.options.ipxe!);
  t.ok(encap.size > 0, 'iPXE: option 175 decodes into sub-options');
  t.same(ipxe.options.clientArch, [0], 'iPXE under SeaBIOS: arch 0 (x86 BIOS)');
  t.equal(hwAddress(ipxe), '52:54:00:77:00:10');
  // The raw user class goes back out byte for byte.
  const wire = encodeDhcp(ipxe, { maxSize: 1500 });
  const at = wire.indexOf(Buffer.from([OPTION.USER_CLASS, 4, ...Buffer.from('iPXE')]), 240);
  t.ok(at > 0, 'user class re-encoded as the bare string');

  const ovmf = load('ovmf-pxe-discover');
  t.same(ovmf.options.clientArch, [7], 'OVMF: arch 7 (x64 UEFI)');
  t.match(ovmf.options.vendorClass, /^PXEClient:Arch:00007:/, 'OVMF: PXEClient vendor class');
  t.equal(ovmf.options.clientUuid?.id.length, 16, 'OVMF: 16-octet machine UUID');
  t.equal(ovmf.flags & 0x8000, 0x8000, 'OVMF asks for broadcast replies');

  const pxe = load('udhcpc-pxe-discover');
  t.equal(pxe.options.vendorClass, 'PXEClient');
  t.same(pxe.options.clientArch, [0]);

  const relayed = load('udhcpc-relayed-discover');
  t.equal(relayed.giaddr, '10.78.0.1', 'relayed: giaddr set by dhcrelay');
  t.equal(relayed.hops, 1, 'relayed: one hop');
  t.same(relayed.options.relayAgent, { circuitId: Buffer.from('down0'), other: [] }, 'relayed: option 82 with the circuit id');
  const relayWire = encodeDhcp(relayed);
  const codes: number[] = [];
  for (let i = 240; relayWire[i] !== 255; i += 2 + relayWire[i + 1]!) codes.push(relayWire[i]!);
  t.equal(codes.at(-1), OPTION.RELAY_AGENT, 'relayed: option 82 re-encoded last (RFC 3046 §2.1)');

  const dhclient = load('dhclient-request');
  t.equal(dhclient.options.requestedIp, '10.77.0.50');
  t.equal(dhclient.options.serverId, '10.77.0.1');
  t.equal(dhclient.options.hostname, 'mbx-node');
});
