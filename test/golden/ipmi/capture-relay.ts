// The recording half of test/golden/ipmi/capture.sh: a UDP relay between a client (ipmitool, rmcp_ping)
// and a BMC (ipmi_sim). It listens on --listen ADDR:623, forwards every datagram to --bmc ADDR:623 from a
// socket of its own, passes the BMC's answers back, and appends each datagram, in order, to <label>.bin
// as one record: a direction byte ('C' console -> BMC, 'B' BMC -> console), the length (2 bytes,
// big-endian), then the UDP payload exactly as it crossed. It records bytes only and decodes nothing, so
// a codec bug cannot shape its own golden files. It exits 0 after --idle milliseconds without traffic once
// something was relayed, 1 if nothing came within --timeout seconds. Not a test: capture.sh runs it.
//
//   node --import tsx capture-relay.ts --out DIR --label NAME --listen ADDR --bmc ADDR [--ready FILE] [--idle MS] [--timeout S]
import dgram from 'node:dgram';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    out: { type: 'string' },
    label: { type: 'string' },
    listen: { type: 'string' },
    bmc: { type: 'string' },
    ready: { type: 'string' },
    idle: { type: 'string', default: '1500' },
    timeout: { type: 'string', default: '30' },
  },
});
const { out, label, listen, bmc } = values;
if (out === undefined || label === undefined || listen === undefined || bmc === undefined) {
  throw new TypeError('usage: capture-relay.ts --out DIR --label NAME --listen ADDR --bmc ADDR [--ready FILE] [--idle MS] [--timeout S]');
}
const PORT = 623;
const idleMs = Number(values.idle);

let count = 0;
let client: { address: string; port: number } | undefined;
let idleTimer: NodeJS.Timeout | undefined;

const file = join(out, `${label}.bin`);
writeFileSync(file, Buffer.alloc(0));

function record(from: 'console' | 'bmc', data: Buffer): void {
  count++;
  const head = Buffer.from([from === 'console' ? 0x43 : 0x42, data.length >> 8, data.length & 0xff]);
  appendFileSync(file, Buffer.concat([head, data]));
  if (idleTimer !== undefined) clearTimeout(idleTimer);
  idleTimer = setTimeout(() => { front.close(); back.close(); process.exit(0); }, idleMs);
}

const front = dgram.createSocket('udp4');
const back = dgram.createSocket('udp4');
front.on('message', (data, rinfo) => {
  // One client per capture: the first one's address and port get the answers.
  client ??= { address: rinfo.address, port: rinfo.port };
  record('console', data);
  back.send(data, PORT, bmc);
});
back.on('message', (data, rinfo) => {
  if (rinfo.address !== bmc || client === undefined) return;
  record('bmc', data);
  front.send(data, client.port, client.address);
});
front.bind(PORT, listen, () => {
  back.bind(0, listen, () => {
    if (values.ready !== undefined) writeFileSync(values.ready, 'ready\n');
  });
});
setTimeout(() => { if (count === 0) process.exit(1); }, Number(values.timeout) * 1000).unref();
