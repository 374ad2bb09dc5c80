// A flood of NTP client requests from one source address, for the rate-limit test (run inside a namespace):
//   node --import tsx test/helpers/ntp-flood.ts SOURCE_ADDRESS SERVER_ADDRESS COUNT [PORT]
// Sends COUNT mode-3 requests at once (each with its own transmit timestamp), collects replies for a second,
// and prints one JSON line: {sent, answered, kisses: {CODE: n}, unmatched}.
import dgram from 'node:dgram';
import { decodeNtp, encodeNtp, kissCode, MODE, ZERO_TIMESTAMP } from '../../src/protocols/ntp/index.ts';

const [source, server, countText, portText] = process.argv.slice(2);
const count = Number(countText);
const port = Number(portText ?? 123);
const sock = dgram.createSocket('udp4');
const sent = new Set<string>();
const result = { sent: 0, answered: 0, kisses: {} as Record<string, number>, unmatched: 0 };
sock.on('message', (m) => {
  let p;
  try { p = decodeNtp(m); } catch { result.unmatched++; return; }
  const key = `${p.originTime.seconds}.${p.originTime.fraction}`;
  if (!sent.has(key)) { result.unmatched++; return; }
  const kiss = kissCode(p);
  if (kiss !== undefined) result.kisses[kiss] = (result.kisses[kiss] ?? 0) + 1;
  else result.answered++;
});
await new Promise<void>((r) => sock.bind(0, source, r));
for (let i = 0; i < count; i++) {
  const transmit = { seconds: 0x80000000 + process.pid, fraction: i };
  sent.add(`${transmit.seconds}.${transmit.fraction}`);
  sock.send(encodeNtp({ leap: 0, version: 4, mode: MODE.CLIENT, stratum: 0, poll: 6, precision: -20, rootDelay: 0, rootDispersion: 0, referenceId: 0, referenceTime: ZERO_TIMESTAMP, originTime: ZERO_TIMESTAMP, receiveTime: ZERO_TIMESTAMP, transmitTime: transmit, extensions: [] }), port, server);
  result.sent++;
  // A short pause every 50 so the kernel's queues do not drop what the server should see.
  if (i % 50 === 49) await new Promise((r) => setTimeout(r, 2));
}
await new Promise((r) => setTimeout(r, 1000));
process.stdout.write(`${JSON.stringify(result)}\n`);
sock.close();
