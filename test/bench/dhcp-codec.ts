// Nanoseconds per operation of the DHCPv4 codec: decode a real PXE DISCOVER (udhcpc -V PXEClient, and iPXE's
// with option 175), encode a typical PXE OFFER, and a DISCOVER decode + OFFER encode (what the server does per
// packet). With --peer DIR (a directory whose node_modules has npm `dhcp`, e.g. after
// `npm install --prefix DIR dhcp@0.2.20`), the same operations of that codec are measured in the same run,
// side by side. Not a timed test. Run from the repository root.
//
//   node --import tsx test/bench/dhcp-codec.ts [--ms PER_CASE] [--peer DIR]
//
// Under tsx every module is transpiled on its own (constants become getters, closures get names at run time);
// for the figures of the bundled binary, bundle the bench the same way image/build-binary.ts does:
//   npx esbuild test/bench/dhcp-codec.ts --bundle --platform=node --format=esm --outfile=.cache/dhcp-bench.mjs
//   node .cache/dhcp-bench.mjs [--peer DIR]
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { decodeDhcp, encodeDhcp, MESSAGE_TYPE, type DhcpPacket } from '../../src/protocols/dhcp/index.ts';

const { values } = parseArgs({ options: { ms: { type: 'string', default: '500' }, peer: { type: 'string' } } });
const budget = Number(values.ms);
if (!(budget > 0)) throw new TypeError('usage: dhcp-codec.ts [--ms PER_CASE] [--peer DIR]');

const golden = (name: string): Buffer => readFileSync(resolve('test/golden/dhcp', `${name}.bin`));
const pxeDiscover = golden('udhcpc-pxe-discover');
const ipxeDiscover = golden('ipxe-seabios-discover');

function offerFor(req: DhcpPacket): DhcpPacket {
  return {
    op: 2, htype: req.htype, hlen: req.hlen, hops: 0, xid: req.xid, secs: 0, flags: req.flags,
    ciaddr: '0.0.0.0', yiaddr: '10.77.0.50', siaddr: '10.77.0.1', giaddr: req.giaddr, chaddr: req.chaddr,
    sname: '', file: 'undionly.kpxe',
    options: {
      messageType: MESSAGE_TYPE.OFFER,
      serverId: '10.77.0.1',
      subnetMask: '255.255.255.0',
      routers: ['10.77.0.1'],
      dnsServers: ['10.77.0.1'],
      domainName: 'lab.example',
      leaseTime: 3600,
      renewalTime: 1800,
      rebindingTime: 3150,
      vendorClass: 'PXEClient',
      tftpServer: '10.77.0.1',
      bootfile: 'undionly.kpxe',
      other: new Map(),
    },
  };
}

const offer = offerFor(decodeDhcp(pxeDiscover));
let sink = 0;

/** Runs `f` in batches until `budget` ms have passed (after a warm-up); returns the median ns/op of the batches. */
function measure(f: () => unknown): number {
  for (let i = 0; i < 20_000; i++) f();
  const samples: number[] = [];
  const end = performance.now() + budget;
  while (performance.now() < end) {
    const n = 2_000;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) if (f() !== undefined) sink++;
    samples.push(Number(process.hrtime.bigint() - t0) / n);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)]!;
}

interface PeerCodec {
  parse(buf: Buffer): { options: Record<number, unknown> };
  format(data: unknown): unknown;
}

function loadPeer(dir: string | undefined): PeerCodec | undefined {
  if (dir === undefined) return undefined;
  const require = createRequire(join(dir, 'node_modules', 'x.js'));
  return require('dhcp/lib/protocol.js') as PeerCodec;
}

const peer = loadPeer(values.peer);
// The peer's options object for the same OFFER (its option map is keyed by code).
const peerOffer = {
  op: 2, htype: 1, hlen: 6, hops: 0, xid: offer.xid, secs: 0, flags: 0, ciaddr: '0.0.0.0', yiaddr: '10.77.0.50',
  siaddr: '10.77.0.1', giaddr: '0.0.0.0', chaddr: '02:00:00:77:00:21', sname: '', file: 'undionly.kpxe',
  options: { 53: 2, 54: '10.77.0.1', 1: '255.255.255.0', 3: ['10.77.0.1'], 6: ['10.77.0.1'], 15: 'lab.example', 51: 3600, 58: 1800, 59: 3150, 60: 'PXEClient', 66: '10.77.0.1', 67: 'undionly.kpxe' },
};

const cases: [string, () => unknown, (() => unknown) | undefined][] = [
  ['decode PXE DISCOVER (udhcpc, 300 B)', () => decodeDhcp(pxeDiscover), peer && (() => peer.parse(pxeDiscover))],
  ['decode iPXE DISCOVER (400 B, opt 175)', () => decodeDhcp(ipxeDiscover), undefined],
  ['encode PXE OFFER (12 options)', () => encodeDhcp(offer), peer && (() => peer.format(peerOffer))],
  ['decode DISCOVER + encode OFFER', () => encodeDhcp(offerFor(decodeDhcp(pxeDiscover))), peer && (() => peer.format({ ...peerOffer, xid: peer.parse(pxeDiscover).options[53] }))],
];

const rows = cases.map(([name, ours, theirs]) => [name, measure(ours).toFixed(0), theirs ? measure(theirs).toFixed(0) : '-']);
const head = ['operation', 'metalbox ns/op', `npm dhcp ns/op${peer ? '' : ' (--peer not given)'}`];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
console.log(line(head));
for (const r of rows) console.log(line(r));
console.log(`(node ${process.version}; median of ${budget} ms per case after warm-up; sink ${sink > 0 ? 'ok' : 'empty'})`);
