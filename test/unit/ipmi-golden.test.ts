// Golden captures: each test/golden/ipmi/*.bin is one whole exchange between a real client (ipmitool -I
// lanplus -C 3, rmcp_ping) and a real BMC (OpenIPMI ipmi_sim), recorded datagram by datagram by
// capture.sh; its .txt beside it is formatIpmi's dump of every datagram, checked in and reviewed.
// METALBOX_UPDATE_GOLDEN=1 rewrites the .txt files.
//
// Encrypted packets: the capture's user and password (admin / password) are public, so this test derives
// each session's SIK, K1 and K2 from the captured RAKP messages with our own key derivation, and then
// checks that every AuthCode verifies and every payload decrypts with IPMI's padding. That makes the
// captures a test of the crypto against two independent implementations, and the dumps show the
// cleartext commands. Beyond decoding, our encoders must rebuild every datagram byte for byte (given the
// capture's IVs and random numbers).
import t from 'tap';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  APP_CMD, BOOT_DEVICE, CHASSIS_CMD, CIPHER_SUITES, codesEqual, decodeDeviceId, decodeIpmiMessage, decodeIpmiPacket, decodeOpenSessionRequest,
  decodeOpenSessionResponse, decodeRakp1, decodeRakp2, decodeRakp3, decodeRakp4, decodeSetBootOptionsRequest, decodeSystemGuid, deriveSessionKeys,
  encodeAsf, encodeIpmi15, encodeIpmiRequest, encodeIpmiResponse, encodeOpenSessionRequest, encodeOpenSessionResponse, encodeRakp1, encodeRakp2,
  encodeRakp3, encodeRakp4, encodeRmcpPlus, encodeSetBootFlags, formatIpmi, guidToUuid, NETFN, openIpmiMessage, PAYLOAD_TYPE, rakp2AuthCode,
  rakp3AuthCode, rakp4Icv, sealIpmiMessage, verifyIntegrity, type CipherSuite, type FormatContext, type IpmiMessage, type IpmiPacket,
  type RakpParameters, type SessionSecrets,
} from '../../src/protocols/ipmi/index.ts';

const DIR = fileURLToPath(new URL('../golden/ipmi/', import.meta.url));
const UPDATE = process.env.METALBOX_UPDATE_GOLDEN === '1';
const PASSWORD = Buffer.from('password');
const SUITE: CipherSuite = CIPHER_SUITES[3]!;

// What capture.sh records; a missing one is a failure, not a smaller test.
const EXPECTED = ['asf-ping', 'power-status', 'power-on', 'power-soft', 'bootdev-pxe-efi-persistent', 'bootdev-disk', 'bootparam-get', 'identify', 'mc-info', 'mc-guid', 'wrong-password', 'suite17-refused'];

interface Record {
  from: 'console' | 'bmc';
  data: Buffer;
}

function records(file: string): Record[] {
  const buf = readFileSync(file);
  const out: Record[] = [];
  for (let i = 0; i < buf.length;) {
    const dir = buf[i]!;
    const length = buf.readUInt16BE(i + 1);
    out.push({ from: dir === 0x43 ? 'console' : 'bmc', data: buf.subarray(i + 3, i + 3 + length) });
    i += 3 + length;
  }
  return out;
}

/** One decoded datagram with what the session walk learned about it. */
interface Walked {
  from: 'console' | 'bmc';
  raw: Buffer;
  packet: IpmiPacket;
  ctx: FormatContext;
  message?: IpmiMessage;
  rakp?: 'verified' | 'mismatch';
}

/** Decodes an exchange in order, deriving the session keys from its RAKP messages and the public password. */
function walk(recs: Record[]): { items: Walked[]; secrets?: SessionSecrets; consoleSessionId?: number; managedSessionId?: number } {
  const items: Walked[] = [];
  let consoleSessionId: number | undefined;
  let managedSessionId: number | undefined;
  let params: RakpParameters | undefined;
  let sik: Buffer | undefined;
  let secrets: SessionSecrets | undefined;
  let rakp1: ReturnType<typeof decodeRakp1> | undefined;
  for (const r of recs) {
    const packet = decodeIpmiPacket(r.data);
    const item: Walked = { from: r.from, raw: r.data, packet, ctx: {} };
    if (packet.kind === 'ipmi15') item.message = decodeIpmiMessage(packet.message);
    if (packet.kind === 'rmcp+') {
      switch (packet.payloadType) {
        case PAYLOAD_TYPE.OPEN_SESSION_REQUEST:
          consoleSessionId = decodeOpenSessionRequest(packet.payload).consoleSessionId;
          break;
        case PAYLOAD_TYPE.OPEN_SESSION_RESPONSE:
          managedSessionId = decodeOpenSessionResponse(packet.payload).managedSessionId;
          break;
        case PAYLOAD_TYPE.RAKP1:
          rakp1 = decodeRakp1(packet.payload);
          break;
        case PAYLOAD_TYPE.RAKP2: {
          const m = decodeRakp2(packet.payload, SUITE.rakpCodeLength);
          if (m.status !== 0) break;
          params = { consoleSessionId: consoleSessionId!, managedSessionId: managedSessionId!, consoleRandom: rakp1!.consoleRandom, managedRandom: m.managedRandom!, managedGuid: m.managedGuid!, role: rakp1!.role, username: rakp1!.username };
          item.rakp = codesEqual(rakp2AuthCode(SUITE, PASSWORD, params), m.authCode!) ? 'verified' : 'mismatch';
          const keys = deriveSessionKeys(SUITE, PASSWORD, params);
          sik = keys.sik;
          secrets = { suite: SUITE, k1: keys.k1, k2: keys.k2 };
          break;
        }
        case PAYLOAD_TYPE.RAKP3: {
          const m = decodeRakp3(packet.payload);
          if (params && m.status === 0) item.rakp = codesEqual(rakp3AuthCode(SUITE, PASSWORD, params), m.authCode) ? 'verified' : 'mismatch';
          break;
        }
        case PAYLOAD_TYPE.RAKP4: {
          const m = decodeRakp4(packet.payload);
          if (params && m.status === 0) item.rakp = codesEqual(rakp4Icv(SUITE, sik!, params), m.icv) ? 'verified' : 'mismatch';
          break;
        }
      }
      if (packet.authenticated && secrets) {
        item.ctx.integrity = verifyIntegrity(secrets, packet) ? 'verified' : 'mismatch';
        if (item.ctx.integrity === 'verified') {
          item.ctx.plaintext = openIpmiMessage(secrets, packet);
          item.message = decodeIpmiMessage(item.ctx.plaintext);
        }
      }
    }
    items.push(item);
  }
  return { items, ...(secrets ? { secrets } : {}), ...(consoleSessionId !== undefined ? { consoleSessionId } : {}), ...(managedSessionId !== undefined ? { managedSessionId } : {}) };
}

function dump(items: Walked[]): string {
  return items.map((w, i) => {
    const rakp = w.rakp === undefined ? '' : `  (RAKP code ${w.rakp} with the public password)\n`;
    return `# ${String(i + 1).padStart(2, '0')} ${w.from === 'console' ? 'console -> BMC' : 'BMC -> console'}, ${w.raw.length} bytes\n${formatIpmi(w.packet, w.ctx)}${rakp}`;
  }).join('\n');
}

/** Our encoders rebuild the datagram exactly (the capture's IVs and random numbers are in the packets). */
function reencode(w: Walked, secrets: SessionSecrets | undefined): Buffer | undefined {
  const p = w.packet;
  if (p.kind === 'asf') return encodeAsf(p);
  if (p.kind === 'ipmi15') return encodeIpmi15({ sequence: p.sequence, sessionId: p.sessionId, message: reencodeMessage(w.message!) });
  if (p.authenticated) {
    if (!secrets || !w.ctx.plaintext) return undefined;
    return sealIpmiMessage(secrets, { sessionId: p.sessionId, sequence: p.sequence, message: reencodeMessage(w.message!), iv: p.payload.subarray(0, 16) });
  }
  const payload = ((): Buffer => {
    switch (p.payloadType) {
      case PAYLOAD_TYPE.OPEN_SESSION_REQUEST: return encodeOpenSessionRequest(decodeOpenSessionRequest(p.payload));
      case PAYLOAD_TYPE.OPEN_SESSION_RESPONSE: return encodeOpenSessionResponse(decodeOpenSessionResponse(p.payload));
      case PAYLOAD_TYPE.RAKP1: return encodeRakp1(decodeRakp1(p.payload));
      case PAYLOAD_TYPE.RAKP2: return encodeRakp2(decodeRakp2(p.payload, SUITE.rakpCodeLength));
      case PAYLOAD_TYPE.RAKP3: return encodeRakp3(decodeRakp3(p.payload));
      case PAYLOAD_TYPE.RAKP4: return encodeRakp4(decodeRakp4(p.payload));
      default: throw new Error(`payload type ${p.payloadType}`);
    }
  })();
  return encodeRmcpPlus({ payloadType: p.payloadType, sessionId: p.sessionId, sequence: p.sequence, payload });
}

function reencodeMessage(m: IpmiMessage): Buffer {
  return m.kind === 'request'
    ? encodeIpmiRequest({ netFn: m.netFn, cmd: m.cmd, rqSeq: m.rqSeq, data: m.data, rsAddr: m.rsAddr, rsLun: m.rsLun, rqAddr: m.rqAddr, rqLun: m.rqLun })
    : encodeIpmiResponse({ netFn: m.netFn, cmd: m.cmd, rqSeq: m.rqSeq, completionCode: m.completionCode, data: m.data, rqAddr: m.rqAddr, rqLun: m.rqLun, rsAddr: m.rsAddr, rsLun: m.rsLun });
}

const captures = readdirSync(DIR).filter((f) => f.endsWith('.bin')).map((f) => f.slice(0, -4)).sort();
t.same(EXPECTED.filter((e) => !captures.includes(e)), [], 'every expected capture is checked in');

const walked = new Map<string, ReturnType<typeof walk>>();
for (const name of captures) {
  t.test(name, async (t) => {
    const w = walk(records(join(DIR, `${name}.bin`)));
    walked.set(name, w);
    const text = dump(w.items);
    const txtPath = join(DIR, `${name}.txt`);
    if (UPDATE) writeFileSync(txtPath, text);
    t.ok(existsSync(txtPath), `${name}.txt exists (run with METALBOX_UPDATE_GOLDEN=1 to create it)`);
    if (existsSync(txtPath)) t.equal(text, readFileSync(txtPath, 'utf8'), 'decoded dump matches the golden text');
    for (const [i, item] of w.items.entries()) {
      const label = `#${i + 1} (${item.from})`;
      if (item.packet.kind === 'rmcp+' && item.packet.authenticated) {
        t.equal(item.ctx.integrity, 'verified', `${label}: AuthCode verifies with K1 derived from the capture`);
        t.ok(item.message, `${label}: decrypts to an IPMI message`);
      }
      const again = reencode(item, w.secrets);
      t.ok(again?.equals(item.raw), `${label}: our encoders rebuild it byte for byte`);
    }
  });
}

t.test('facts the driver relies on, as real peers sent them', async (t) => {
  const get = (name: string): Walked[] => walked.get(name)!.items;
  const requests = (name: string, netFn: number, cmd: number): IpmiMessage[] => get(name).filter((w) => w.message?.kind === 'request' && w.message.netFn === netFn && w.message.cmd === cmd).map((w) => w.message!);
  const responses = (name: string, netFn: number, cmd: number): IpmiMessage[] => get(name).filter((w) => w.message?.kind === 'response' && w.message.netFn === netFn + 1 && w.message.cmd === cmd).map((w) => w.message!);

  // The RAKP codes of ipmitool and ipmi_sim verify with our derivation.
  for (const name of ['power-status', 'mc-guid']) {
    t.same(get(name).filter((w) => w.rakp !== undefined).map((w) => w.rakp), ['verified', 'verified', 'verified'], `${name}: RAKP 2, 3 and 4 verify`);
  }
  // Wrong password: the BMC keys RAKP 2 with the real password; ipmitool, holding the wrong one, finds that
  // its code does not verify and gives up before RAKP 3, exactly where our client says BMC_AUTH_FAILED.
  const wrong = get('wrong-password');
  const rakp2 = wrong.find((w) => w.packet.kind === 'rmcp+' && w.packet.payloadType === PAYLOAD_TYPE.RAKP2);
  t.equal(rakp2?.rakp, 'verified', 'wrong password: RAKP 2 verifies with the real password');
  if (rakp2?.packet.kind === 'rmcp+') {
    const m = decodeRakp2(rakp2.packet.payload, SUITE.rakpCodeLength);
    const open = wrong.find((w) => w.packet.kind === 'rmcp+' && w.packet.payloadType === PAYLOAD_TYPE.OPEN_SESSION_RESPONSE)!;
    const r1 = wrong.find((w) => w.packet.kind === 'rmcp+' && w.packet.payloadType === PAYLOAD_TYPE.RAKP1)!;
    const rakp1 = decodeRakp1((r1.packet as { payload: Buffer }).payload);
    const params: RakpParameters = { consoleSessionId: m.consoleSessionId!, managedSessionId: decodeOpenSessionResponse((open.packet as { payload: Buffer }).payload).managedSessionId!, consoleRandom: rakp1.consoleRandom, managedRandom: m.managedRandom!, managedGuid: m.managedGuid!, role: rakp1.role, username: rakp1.username };
    t.notOk(codesEqual(rakp2AuthCode(SUITE, Buffer.from('wrongpassword'), params), m.authCode!), 'wrong password: RAKP 2 does not verify with the password ipmitool had');
  }
  t.equal(wrong.at(-1), rakp2, 'wrong password: ipmitool sent nothing after RAKP 2');

  // Suite 17 refused: QUIRK(ipmi_sim) short Open Session Response, tag and status only.
  const refused = get('suite17-refused').find((w) => w.packet.kind === 'rmcp+' && w.packet.payloadType === PAYLOAD_TYPE.OPEN_SESSION_RESPONSE);
  if (refused?.packet.kind === 'rmcp+') t.same(decodeOpenSessionResponse(refused.packet.payload), { tag: 0, status: 0x04 }, 'suite 17: invalid authentication algorithm, 2-byte answer');
  else t.fail('suite 17: no Open Session Response');

  // ipmitool's boot device bytes are ours: parameter 5, valid + persistent + EFI, PXE in bits 5:2.
  const [pxe] = requests('bootdev-pxe-efi-persistent', NETFN.CHASSIS, CHASSIS_CMD.SET_SYSTEM_BOOT_OPTIONS).filter((m) => (m.data[0]! & 0x7f) === 5);
  t.ok(pxe, 'bootdev pxe: a parameter 5 request');
  t.same(decodeSetBootOptionsRequest(pxe!.data).bootFlags, { valid: true, persistent: true, efi: true, device: BOOT_DEVICE.PXE, data2Other: 0, data3: 0, data4: 0, data5: 0 });
  t.ok(encodeSetBootFlags({ valid: true, persistent: true, efi: true, device: BOOT_DEVICE.PXE }).equals(pxe!.data), 'our boot flags request equals ipmitool\'s');
  const [disk] = requests('bootdev-disk', NETFN.CHASSIS, CHASSIS_CMD.SET_SYSTEM_BOOT_OPTIONS).filter((m) => (m.data[0]! & 0x7f) === 5);
  t.ok(encodeSetBootFlags({ valid: true, persistent: false, efi: false, device: BOOT_DEVICE.DISK }).equals(disk!.data), 'bootdev disk: data 2 = 0x08');

  const [control] = requests('power-on', NETFN.CHASSIS, CHASSIS_CMD.CHASSIS_CONTROL);
  t.same([...control!.data], [0x01], 'power on: Chassis Control 1');
  const [soft] = requests('power-soft', NETFN.CHASSIS, CHASSIS_CMD.CHASSIS_CONTROL);
  t.same([...soft!.data], [0x05], 'soft: Chassis Control 5 (ACPI soft shutdown)');

  const [guid] = responses('mc-guid', NETFN.APP, APP_CMD.GET_SYSTEM_GUID);
  t.equal(guidToUuid(decodeSystemGuid(guid!.kind === 'response' ? guid!.data : Buffer.alloc(0))), '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f', 'GUID, least significant byte first: the UUID ipmitool printed');
  const [device] = responses('mc-info', NETFN.APP, APP_CMD.GET_DEVICE_ID);
  const id = decodeDeviceId(device!.data);
  t.match(id, { manufacturerId: 4753, productId: 0x0f02, ipmiVersion: '2.0', firmwareMajor: 9, firmwareMinor: 0x08 }, 'Get Device ID as ipmitool showed it (9.08, IPMI 2.0, 4753)');

  // Session sequence numbers: each side counts up by one per packet in the session.
  const session = get('power-status').filter((w) => w.packet.kind === 'rmcp+' && w.packet.authenticated);
  const seq = (from: string): number[] => session.filter((w) => w.from === from).map((w) => (w.packet as { sequence: number }).sequence);
  const bmc = seq('bmc');
  t.same(bmc, bmc.map((_, i) => bmc[0]! + i), 'the BMC numbers its packets consecutively');
  t.equal(bmc[0], 1, 'ipmi_sim starts at 1');
});
