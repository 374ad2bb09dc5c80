// The server side of test/golden/dhcp/capture.sh: listens on UDP 67 (inside the capture namespace), saves
// the first DHCP message of each type a client sends as <label>-<type>.bin, and with --offer answers a
// DISCOVER with a minimal OFFER (broadcast) so the client goes on to send its REQUEST. Exits 0 once it
// has what it waits for, 1 on --timeout. Not a test: capture.sh runs it.
//
//   node --import tsx capture-listener.ts --out DIR --label NAME [--offer] [--timeout SECONDS] [--ready FILE]
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { decodeDhcp, encodeDhcp, MESSAGE_TYPE, type DhcpPacket } from '../../../src/protocols/dhcp/index.ts';

const { values } = parseArgs({
  options: {
    out: { type: 'string' },
    label: { type: 'string' },
    offer: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '120' },
    ready: { type: 'string' },
  },
});
if (values.out === undefined || values.label === undefined) throw new TypeError('usage: capture-listener.ts --out DIR --label NAME [--offer] [--timeout S] [--ready FILE]');
const out = values.out;
const label = values.label;
const wanted = values.offer ? ['discover', 'request'] : ['discover'];
const typeNames = new Map<number, string>(Object.entries(MESSAGE_TYPE).map(([k, v]) => [v, k.toLowerCase()]));

const SERVER = '10.77.0.1';
const OFFERED = '10.77.0.50';

function offer(req: DhcpPacket): Buffer {
  const pxe = req.options.vendorClass?.startsWith('PXEClient') === true;
  return encodeDhcp({
    op: 2, htype: req.htype, hlen: req.hlen, hops: 0, xid: req.xid, secs: 0, flags: req.flags,
    ciaddr: '0.0.0.0', yiaddr: OFFERED, siaddr: SERVER, giaddr: req.giaddr, chaddr: req.chaddr,
    sname: '', file: pxe ? 'boot.efi' : '',
    options: {
      // RFC 3046 §2.2: a relayed request's option 82 is echoed in the reply.
      ...(req.options.relayAgent !== undefined ? { relayAgent: req.options.relayAgent } : {}),
      messageType: MESSAGE_TYPE.OFFER,
      serverId: SERVER,
      subnetMask: '255.255.255.0',
      routers: [SERVER],
      leaseTime: 600,
      ...(pxe ? { vendorClass: 'PXEClient' } : {}),
      other: new Map(),
    },
  });
}

const saved = new Set<string>();
const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true });
const timer = setTimeout(() => {
  process.stderr.write(`capture-listener ${label}: timed out with ${[...saved].join(', ') || 'nothing'}\n`);
  process.exit(1);
}, Number(values.timeout) * 1000);

sock.on('message', (msg) => {
  let req: DhcpPacket;
  try {
    req = decodeDhcp(msg);
  } catch (err) {
    const file = join(out, `${label}-undecodable-${Date.now()}.bin`);
    writeFileSync(file, msg);
    process.stderr.write(`capture-listener ${label}: ${String(err)}; saved ${file}\n`);
    return;
  }
  if (req.op !== 1) return;
  const type = typeNames.get(req.options.messageType ?? 0) ?? 'bootp';
  if (!saved.has(type)) {
    writeFileSync(join(out, `${label}-${type}.bin`), msg);
    saved.add(type);
    process.stderr.write(`capture-listener ${label}: saved ${type} (${msg.length} bytes)\n`);
  }
  if (values.offer && req.options.messageType === MESSAGE_TYPE.DISCOVER) {
    // RFC 2131 §4.1: through a relay, the reply goes to the relay's server port; else (no ciaddr) broadcast.
    if (req.giaddr !== '0.0.0.0') sock.send(offer(req), 67, req.giaddr);
    else sock.send(offer(req), 68, '255.255.255.255');
  }
  if (wanted.every((w) => saved.has(w))) {
    clearTimeout(timer);
    sock.close();
  }
});

sock.bind(67, '0.0.0.0', () => {
  sock.setBroadcast(true);
  if (values.ready !== undefined) writeFileSync(values.ready, 'ready\n');
});
