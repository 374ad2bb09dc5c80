// IPMI over LAN: the RMCP/ASF/IPMI v1.5/RMCP+ framing, the session-setup payloads (Open Session, RAKP 1-4:
// both the console's and the BMC's side), IPMI messages and the command bodies, and the session crypto.
//
// The first input byte picks what the rest is (a fuzzer cannot forge an AuthCode, so the sealed paths wrap the
// fuzzed bytes in a valid session packet themselves):
//   0-3, 7  a datagram: decodeIpmiPacket (no AuthCode length, 12, 16, 20), formatIpmi, then its payload by type,
//           its IPMI message and command body, and openIpmiMessage under two sessions (suites 3 and 17)
//   4       a payload or body: the second byte picks the decoder, the rest is its input
//   5       a plaintext IPMI message, sealed (AES-CBC-128 + HMAC) under a session, decoded and opened again
//   6       ciphertext under a valid AuthCode: decryption and the confidentiality pad on fuzzed bytes
//
// Invariants (test/unit/ipmi-codec.test.ts): every decoder throws only BMC_PROTOCOL with an offset inside its
// input; what decodes re-encodes to the same bytes (IPMI messages, v1.5 packets without auth, unauthenticated
// RMCP+ packets, ASF) or to an equal value (Open Session, RAKP); a sealed message opens to its plaintext.
import type * as IpmiCodec from '../../../src/protocols/ipmi/index.ts';
import type { MetalboxError } from '../../../src/lib/errors.ts';
import type { IpmiMessage, SessionSecrets } from '../../../src/protocols/ipmi/index.ts';
import { loadInstrumented, reexport } from '../coverage.ts';
import type { FuzzTarget } from '../engine.ts';
import { codecTarget, decodeOrRefuse, expectEqual, golden, InvariantError, words } from './common.ts';

type Ipmi = typeof IpmiCodec & { MetalboxError: typeof MetalboxError };

const seq = (n: number, from = 0): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (from + i) & 0xff));

/** The datagrams of a golden capture (direction byte, 16-bit length, bytes). */
function datagrams(capture: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i + 3 <= capture.length;) {
    const length = capture.readUInt16BE(i + 1);
    out.push(capture.subarray(i + 3, i + 3 + length));
    i += 3 + length;
  }
  return out;
}

const sel = (s: number, b: Buffer): Buffer => Buffer.concat([Buffer.from([s]), b]);

export async function createTarget(): Promise<FuzzTarget> {
  const inst = await loadInstrumented<Ipmi>('ipmi', reexport('*', 'src/protocols/ipmi/index.ts') + reexport('{ MetalboxError }', 'src/lib/errors.ts'));
  const m = inst.module;
  const params = { consoleSessionId: 0xa0a2a3a4, managedSessionId: 0x682, consoleRandom: seq(16), managedRandom: seq(16, 16), managedGuid: seq(16, 32), role: 0x14, username: Buffer.from('admin') };
  const sessions: SessionSecrets[] = [3, 17].map((id) => {
    const suite = m.CIPHER_SUITES[id]!;
    const keys = m.deriveSessionKeys(suite, Buffer.from('password'), params);
    return { suite, k1: keys.k1, k2: keys.k2 };
  });

  /** A decoder's failure must be BMC_PROTOCOL with an offset in [0, length]. */
  const guard = (what: string, length: number, fn: () => void): void => { decodeOrRefuse(fn, m.MetalboxError, /^BMC_PROTOCOL$/, length, what); };

  const bodies: [string, (b: Buffer) => unknown][] = [
    ['Open Session Request', (b) => expectEqual(m.decodeOpenSessionRequest(m.encodeOpenSessionRequest(m.decodeOpenSessionRequest(b))), m.decodeOpenSessionRequest(b), 'Open Session Request round trip')],
    ['Open Session Response', (b) => expectEqual(m.decodeOpenSessionResponse(m.encodeOpenSessionResponse(m.decodeOpenSessionResponse(b))), m.decodeOpenSessionResponse(b), 'Open Session Response round trip')],
    ['RAKP 1', (b) => expectEqual(m.decodeRakp1(m.encodeRakp1(m.decodeRakp1(b))), m.decodeRakp1(b), 'RAKP 1 round trip')],
    ['RAKP 2/20', (b) => expectEqual(m.decodeRakp2(m.encodeRakp2(m.decodeRakp2(b, 20)), 20), m.decodeRakp2(b, 20), 'RAKP 2 round trip')],
    ['RAKP 2/32', (b) => expectEqual(m.decodeRakp2(m.encodeRakp2(m.decodeRakp2(b, 32)), 32), m.decodeRakp2(b, 32), 'RAKP 2 round trip')],
    ['RAKP 3', (b) => expectEqual(m.decodeRakp3(m.encodeRakp3(m.decodeRakp3(b))), m.decodeRakp3(b), 'RAKP 3 round trip')],
    ['RAKP 4', (b) => expectEqual(m.decodeRakp4(m.encodeRakp4(m.decodeRakp4(b))), m.decodeRakp4(b), 'RAKP 4 round trip')],
    ['IPMI message', (b) => message(m.decodeIpmiMessage(b), b)],
    ['Channel Auth Capabilities', (b) => m.decodeChannelAuthCapabilities(b)],
    ['Device ID', (b) => m.firmwareVersion(m.decodeDeviceId(b))],
    ['System GUID', (b) => m.guidToUuid(m.decodeSystemGuid(b))],
    ['Chassis Status', (b) => m.decodeChassisStatus(b)],
    ['Get Boot Options', (b) => m.decodeGetBootOptions(b)],
    ['Set Boot Options request', (b) => m.decodeSetBootOptionsRequest(b)],
    ['Set Session Privilege', (b) => m.decodeSetSessionPrivilege(b)],
    ['Close Session request', (b) => m.decodeCloseSessionRequest(b)],
  ];

  /** An IPMI message: re-encodes to the same bytes; its body decodes by command. */
  function message(msg: IpmiMessage, bytes: Buffer): void {
    const again = msg.kind === 'request'
      ? m.encodeIpmiRequest({ netFn: msg.netFn, cmd: msg.cmd, rqSeq: msg.rqSeq, data: msg.data, rsAddr: msg.rsAddr, rsLun: msg.rsLun, rqAddr: msg.rqAddr, rqLun: msg.rqLun })
      : m.encodeIpmiResponse({ netFn: msg.netFn, cmd: msg.cmd, rqSeq: msg.rqSeq, completionCode: msg.completionCode, data: msg.data, rqAddr: msg.rqAddr, rqLun: msg.rqLun, rsAddr: msg.rsAddr, rsLun: msg.rsLun });
    if (!again.equals(bytes)) throw new InvariantError(`IPMI message re-encodes to ${again.toString('hex')}, not ${bytes.toString('hex')}`);
    const body = (name: string, fn: (b: Buffer) => unknown): void => guard(name, msg.data.length, () => fn(msg.data));
    const key = `${msg.netFn & 0x3e}:${msg.cmd}`;
    if (msg.kind === 'request') {
      if (key === `${m.NETFN.APP}:${m.APP_CMD.CLOSE_SESSION}`) body('Close Session request', m.decodeCloseSessionRequest);
      if (key === `${m.NETFN.CHASSIS}:${m.CHASSIS_CMD.SET_SYSTEM_BOOT_OPTIONS}`) body('Set Boot Options request', m.decodeSetBootOptionsRequest);
      return;
    }
    if (msg.completionCode !== 0) return;
    if (key === `${m.NETFN.APP}:${m.APP_CMD.GET_CHANNEL_AUTH_CAPABILITIES}`) body('Channel Auth Capabilities', m.decodeChannelAuthCapabilities);
    if (key === `${m.NETFN.APP}:${m.APP_CMD.GET_DEVICE_ID}`) body('Device ID', m.decodeDeviceId);
    if (key === `${m.NETFN.APP}:${m.APP_CMD.GET_SYSTEM_GUID}`) body('System GUID', m.decodeSystemGuid);
    if (key === `${m.NETFN.APP}:${m.APP_CMD.SET_SESSION_PRIVILEGE_LEVEL}`) body('Set Session Privilege', m.decodeSetSessionPrivilege);
    if (key === `${m.NETFN.CHASSIS}:${m.CHASSIS_CMD.GET_CHASSIS_STATUS}`) body('Chassis Status', m.decodeChassisStatus);
    if (key === `${m.NETFN.CHASSIS}:${m.CHASSIS_CMD.GET_SYSTEM_BOOT_OPTIONS}`) body('Get Boot Options', m.decodeGetBootOptions);
  }

  function messageBytes(bytes: Buffer, what: string): void {
    guard(what, bytes.length, () => message(m.decodeIpmiMessage(bytes), bytes));
  }

  function datagram(buf: Buffer, options: { authCodeLength?: number }): void {
    const p = decodeOrRefuse(() => m.decodeIpmiPacket(buf, options), m.MetalboxError, /^BMC_PROTOCOL$/, buf.length, 'decodeIpmiPacket');
    if (p === undefined) return;
    m.formatIpmi(p);
    switch (p.kind) {
      case 'asf': {
        const again = m.decodeIpmiPacket(m.encodeAsf({ iana: p.iana, messageType: p.messageType, tag: p.tag, data: p.data }));
        expectEqual({ ...again, rmcpSequence: p.rmcpSequence }, p, 'ASF round trip');
        if (p.messageType === m.ASF.PRESENCE_PONG) guard('decodeAsfPong', buf.length, () => m.decodeAsfPong(p));
        return;
      }
      case 'ipmi15':
        if (p.authType === m.AUTH_TYPE.NONE) {
          const again = m.encodeIpmi15({ sequence: p.sequence, sessionId: p.sessionId, message: p.message });
          // From the session header on: the RMCP sequence number (byte 2) and reserved byte are not kept (the encoder
          // writes 0xff, BMCs ignore it), and the one legacy pad byte the decoder accepts is not written back.
          if (!again.subarray(4).equals(buf.subarray(4, again.length))) throw new InvariantError(`v1.5 packet re-encodes to ${again.toString('hex')}`);
        }
        messageBytes(p.message, 'v1.5 IPMI message');
        return;
      case 'rmcp+': {
        if (!p.authenticated) {
          const again = m.encodeRmcpPlus({ payloadType: p.payloadType, sessionId: p.sessionId, sequence: p.sequence, payload: p.payload, encrypted: p.encrypted, ...(p.oem === undefined ? {} : { oem: p.oem }) });
          if (!again.subarray(4).equals(buf.subarray(4))) throw new InvariantError(`RMCP+ packet re-encodes to ${again.toString('hex')}`);
        }
        const payload = (name: string, fn: (b: Buffer, base: number) => unknown): void => guard(name, buf.length, () => fn(p.payload, p.payloadOffset));
        if (!p.encrypted) {
          switch (p.payloadType) {
            case m.PAYLOAD_TYPE.IPMI: messageBytes(p.payload, 'RMCP+ IPMI message'); break;
            case m.PAYLOAD_TYPE.OPEN_SESSION_REQUEST: payload('Open Session Request', m.decodeOpenSessionRequest); break;
            case m.PAYLOAD_TYPE.OPEN_SESSION_RESPONSE: payload('Open Session Response', m.decodeOpenSessionResponse); break;
            case m.PAYLOAD_TYPE.RAKP1: payload('RAKP 1', m.decodeRakp1); break;
            case m.PAYLOAD_TYPE.RAKP2: payload('RAKP 2', (b, base) => m.decodeRakp2(b, 20, base)); payload('RAKP 2', (b, base) => m.decodeRakp2(b, 32, base)); break;
            case m.PAYLOAD_TYPE.RAKP3: payload('RAKP 3', m.decodeRakp3); break;
            case m.PAYLOAD_TYPE.RAKP4: payload('RAKP 4', m.decodeRakp4); break;
          }
        }
        for (const s of sessions) {
          m.verifyIntegrity(s, p);
          guard('openIpmiMessage', buf.length, () => m.openIpmiMessage(s, p));
        }
      }
    }
  }

  const seeds: Buffer[] = [];
  for (const capture of golden('ipmi')) for (const d of datagrams(capture)) seeds.push(sel(0, d), sel(1, d));
  const rq = m.encodeIpmiRequest({ netFn: 0x06, cmd: 0x38, rqSeq: 0, data: m.encodeGetChannelAuthCapabilities({ privilege: 4 }) });
  const rs = (netFn: number, cmd: number, data: Buffer): Buffer => m.encodeIpmiResponse({ netFn, cmd, rqSeq: 1, completionCode: 0, data });
  const responses = [
    rs(7, 0x38, Buffer.from('0197040300000000', 'hex')), rs(7, 0x01, Buffer.from('00030908029f911200020f00000000', 'hex')), rs(7, 0x37, seq(16)),
    rs(7, 0x3b, Buffer.from([4])), rs(1, 0x01, Buffer.from('7e105f0f', 'hex')), rs(1, 0x09, Buffer.from('01058004000000', 'hex')),
    m.encodeIpmiRequest({ netFn: 6, cmd: 0x3c, rqSeq: 2, data: m.encodeCloseSession(0x682) }),
    m.encodeIpmiRequest({ netFn: 0, cmd: 0x08, rqSeq: 3, data: m.encodeSetBootFlags({ valid: true, persistent: true, efi: true, device: 1 }) }),
  ];
  seeds.push(
    sel(0, m.encodeAsfPing(1)), sel(0, m.encodeAsf({ messageType: 0x40, tag: 1, data: Buffer.from('000011be0000000081000000000000', 'hex') })),
    sel(0, m.encodeIpmi15({ message: rq })), sel(0, Buffer.concat([m.encodeIpmi15({ message: rq }), Buffer.from([0])])),
    ...responses.map((r) => sel(0, m.encodeIpmi15({ message: r }))),
    sel(0, m.encodeRmcpPlus({ payloadType: 0x10, sessionId: 0, sequence: 0, payload: m.encodeOpenSessionRequest({ tag: 3, privilege: 0, consoleSessionId: 1, authAlg: 1, integrityAlg: 1, confidentialityAlg: 1 }) })),
    sel(0, m.encodeRmcpPlus({ payloadType: 0x11, sessionId: 0, sequence: 0, payload: m.encodeOpenSessionResponse({ tag: 1, status: 0, privilege: 4, consoleSessionId: 1, managedSessionId: 2, authAlg: 1, integrityAlg: 1, confidentialityAlg: 1 }) })),
    sel(0, m.encodeRmcpPlus({ payloadType: 0x12, sessionId: 0, sequence: 0, payload: m.encodeRakp1({ tag: 4, managedSessionId: 0x682, consoleRandom: seq(16), role: 0x14, username: Buffer.from('admin') }) })),
    sel(0, m.encodeRmcpPlus({ payloadType: 0x13, sessionId: 0, sequence: 0, payload: m.encodeRakp2({ tag: 1, status: 0, consoleSessionId: 1, managedRandom: seq(16), managedGuid: seq(16), authCode: seq(20) }) })),
    sel(0, m.encodeRmcpPlus({ payloadType: 0x14, sessionId: 0, sequence: 0, payload: m.encodeRakp3({ tag: 5, status: 0, managedSessionId: 3, authCode: seq(20) }) })),
    sel(0, m.encodeRmcpPlus({ payloadType: 0x15, sessionId: 0, sequence: 0, payload: m.encodeRakp4({ tag: 1, status: 0, consoleSessionId: 1, icv: seq(12) }) })),
    sel(0, m.encodeRmcpPlus({ payloadType: 2, oem: { iana: 343, payloadId: 0x1234 }, sessionId: 5, sequence: 6, payload: seq(3) })),
    ...sessions.map((s, i) => sel(1 + i, m.sealIpmiMessage(s, { sessionId: 1, sequence: 3, message: responses[1]!, iv: seq(16) }))),
    ...responses.map((r) => sel(5, r)),
    sel(6, Buffer.concat([seq(16), seq(32, 7)])),
  );
  // One example input per body decoder, in the order of `bodies`.
  const bodySeeds = [
    m.encodeOpenSessionRequest({ tag: 3, privilege: 4, consoleSessionId: 1, authAlg: 3, integrityAlg: 4, confidentialityAlg: 1 }),
    m.encodeOpenSessionResponse({ tag: 1, status: 0x11, privilege: 0, consoleSessionId: 9 }),
    m.encodeRakp1({ tag: 4, managedSessionId: 0x682, consoleRandom: seq(16), role: 0x14, username: Buffer.alloc(0) }),
    m.encodeRakp2({ tag: 1, status: 0, consoleSessionId: 1, managedRandom: seq(16), managedGuid: seq(16), authCode: seq(20) }),
    m.encodeRakp2({ tag: 1, status: 0x0d, consoleSessionId: 7 }),
    m.encodeRakp3({ tag: 5, status: 0, managedSessionId: 3, authCode: seq(32) }),
    Buffer.from([6, 0x0f]),
    rq,
    Buffer.from('0117040000000000', 'hex'),
    Buffer.from('20810215 51bf 570100 3412'.replace(/ /g, ''), 'hex'),
    seq(16),
    Buffer.from('2000 60'.replace(/ /g, ''), 'hex'),
    Buffer.from('01 84 00 00'.replace(/ /g, ''), 'hex'),
    Buffer.from('05e00c000000', 'hex'),
    Buffer.from([0x04]),
    m.encodeCloseSession(0xdeadbeef),
  ];
  bodySeeds.forEach((b, i) => seeds.push(sel(4, Buffer.concat([Buffer.from([i]), b]))));

  // The golden captures went into `seeds` above, each behind a selector byte.
  return codecTarget('ipmi', inst, {
    seeds,
    golden: false,
    dictionary: words([6, 0, 0xff, 7], [6, 0, 0xff, 6], [0, 0, 0x11, 0xbe], [0x80], [0x40], [0x06, 0xc0], [0x06, 0x00], [0x06, 0x10], [0x06, 0x12], [0x06, 0x13], [0x06, 0x15],
      [0x20, 0x18, 0xc8, 0x81], [0x81, 0x1c, 0x63, 0x20], [0xff, 0xff, 0x02, 0x07], [0x07], [0, 0, 0, 8], [1, 0, 0, 8], [2, 0, 0, 8], 'admin'),
    maxLen: 512,
    run(input) {
      if (input.length === 0) return;
      const rest = input.subarray(1);
      switch (input[0]! & 7) {
        case 4: {
          if (rest.length === 0) return;
          const [name, fn] = bodies[rest[0]! % bodies.length]!;
          const data = rest.subarray(1);
          guard(name, data.length, () => fn(data));
          return;
        }
        case 5: {
          const s = sessions[rest.length & 1]!;
          const wire = m.sealIpmiMessage(s, { sessionId: 1, sequence: 2, message: rest, iv: seq(16, rest.length) });
          const p = m.decodeIpmiPacket(wire, { authCodeLength: s.suite.authCodeLength });
          if (p.kind !== 'rmcp+') throw new InvariantError(`a sealed message decodes as ${p.kind}`);
          const plain = m.openIpmiMessage(s, p);
          if (!plain.equals(rest)) throw new InvariantError('a sealed message opens to other bytes');
          m.formatIpmi(p, { plaintext: plain, integrity: 'verified' });
          messageBytes(plain, 'sealed IPMI message');
          return;
        }
        case 6: {
          const s = sessions[rest.length & 1]!;
          const wire = m.encodeRmcpPlus({ payloadType: 0, sessionId: 1, sequence: 2, payload: rest, encrypted: true, integrity: { algorithm: s.suite.integrityAlg, k1: s.k1 } });
          const p = m.decodeIpmiPacket(wire);
          if (p.kind !== 'rmcp+') throw new InvariantError(`an authenticated packet decodes as ${p.kind}`);
          let plain: Buffer | undefined;
          guard('openIpmiMessage', wire.length, () => { plain = m.openIpmiMessage(s, p); });
          if (plain !== undefined) messageBytes(plain, 'decrypted IPMI message');
          return;
        }
        default:
          datagram(rest, [{}, { authCodeLength: 12 }, { authCodeLength: 16 }, { authCodeLength: 20 }][input[0]! & 3]!);
      }
    },
  });
}
