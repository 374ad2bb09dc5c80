// A light DHCP load client: N simulated machines (one MAC each) doing DISCOVER -> OFFER -> REQUEST -> ACK
// over one UDP socket on port 68 with the broadcast flag set, retrying on silence. Run it inside a client
// network namespace: `node --import tsx test/helpers/dhcp-load.ts --clients N --seconds S`.
// Prints one JSON line per ACK ({"mac","ip","ms"}) the moment it arrives, then a summary line.
import dgram from 'node:dgram';
import { parseArgs } from 'node:util';
import { decodeDhcp, encodeDhcp, MESSAGE_TYPE, type DhcpPacket } from '../../src/protocols/dhcp/index.ts';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '100' },
    seconds: { type: 'string', default: '60' },
    concurrency: { type: 'string', default: '50' },
    'mac-prefix': { type: 'string', default: '52:54:01' },
    'server-port': { type: 'string', default: '67' },
  },
});
const total = Number(values.clients);
const deadline = Date.now() + Number(values.seconds) * 1000;
const concurrency = Number(values.concurrency);
const serverPort = Number(values['server-port']);

interface Client { mac: string; chaddr: Buffer; xid: number; state: 'idle' | 'discover' | 'request' | 'done'; offered?: string; serverId?: string; sentAt: number; startedAt: number; tries: number }

const clients: Client[] = [];
for (let i = 0; i < total; i++) {
  const tail = [(i >> 16) & 255, (i >> 8) & 255, i & 255].map((b) => b.toString(16).padStart(2, '0')).join(':');
  const mac = `${values['mac-prefix']}:${tail}`;
  const chaddr = Buffer.alloc(16);
  Buffer.from(mac.replace(/:/g, ''), 'hex').copy(chaddr);
  clients.push({ mac, chaddr, xid: 0, state: 'idle', sentAt: 0, startedAt: 0, tries: 0 });
}
const byXid = new Map<number, Client>();
let sendErrors = 0;

const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true });
socket.on('error', (err) => { console.error(err); process.exit(1); });

function packet(c: Client, type: number, extra: Partial<DhcpPacket['options']> = {}): Buffer {
  return encodeDhcp({
    op: 1, htype: 1, hlen: 6, hops: 0, xid: c.xid, secs: 0, flags: 0x8000,
    ciaddr: '0.0.0.0', yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr: '0.0.0.0', chaddr: c.chaddr, sname: '', file: '',
    options: { messageType: type as DhcpPacket['options']['messageType'], parameterList: [1, 3, 6, 15, 51, 54], other: new Map(), ...extra },
  });
}

function send(c: Client): void {
  c.sentAt = Date.now();
  c.tries++;
  const data = c.state === 'discover'
    ? packet(c, MESSAGE_TYPE.DISCOVER)
    : packet(c, MESSAGE_TYPE.REQUEST, { requestedIp: c.offered!, serverId: c.serverId! });
  socket.send(data, serverPort, '255.255.255.255', (err) => {
    if (err && sendErrors++ === 0) process.stderr.write(`send failed: ${err.message}\n`);
  });
}

function begin(c: Client): void {
  byXid.delete(c.xid);
  c.xid = (Math.random() * 0xffffffff) >>> 0;
  byXid.set(c.xid, c);
  c.state = 'discover';
  if (c.startedAt === 0) c.startedAt = Date.now();
  send(c);
}

let active = 0;
let next = 0;
let done = 0;
function fill(): void {
  while (active < concurrency && next < clients.length) { active++; begin(clients[next++]!); }
}

socket.on('message', (msg) => {
  let p: DhcpPacket;
  try { p = decodeDhcp(msg); } catch { return; }
  if (p.op !== 2) return;
  const c = byXid.get(p.xid);
  if (!c) return;
  const type = p.options.messageType;
  if (c.state === 'discover' && type === MESSAGE_TYPE.OFFER) {
    c.state = 'request';
    c.offered = p.yiaddr;
    c.serverId = p.options.serverId;
    send(c);
  } else if (c.state === 'request' && type === MESSAGE_TYPE.ACK) {
    c.state = 'done';
    byXid.delete(c.xid);
    done++;
    active--;
    process.stdout.write(`${JSON.stringify({ mac: c.mac, ip: p.yiaddr, ms: Date.now() - c.startedAt })}\n`);
    fill();
  } else if (c.state === 'request' && type === MESSAGE_TYPE.NAK) {
    begin(c);
  }
});

socket.bind(68, () => {
  socket.setBroadcast(true);
  fill();
  // Silence (a server restarting) means retry: the same step again after 1 s, from DISCOVER after 4 tries.
  const timer = setInterval(() => {
    const now = Date.now();
    for (const c of byXid.values()) {
      if (now - c.sentAt < 1000) continue;
      if (c.tries > 4 && c.state === 'request') { c.tries = 0; begin(c); } else send(c);
    }
    if (done === total || now > deadline) {
      clearInterval(timer);
      process.stdout.write(`${JSON.stringify({ summary: true, done, total })}\n`);
      socket.close();
    }
  }, 200);
});
