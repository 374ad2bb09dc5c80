// The IPMI v2.0 / RMCP+ codec (src/protocols/ipmi): round trips of every message type, the RAKP codes and
// session keys against vectors computed here from the spec's formulas (§13.31, §13.32) with node:crypto
// directly, both paddings (integrity pad to 4 bytes, AES-CBC-128 confidentiality pad 1..N,N), the command
// bodies, a table of hostile inputs each with its code and offset, encoder refusals, and a seeded fuzz pass
// that may only ever produce BMC_PROTOCOL errors. The real-peer captures are in ipmi-golden.test.ts.
import t from 'tap';
import { createCipheriv, createHmac } from 'node:crypto';
import { isMetalboxError, MetalboxError } from '../../src/lib/errors.ts';
import {
  additionalKey, AUTH_TYPE, BOOT_DEVICE, CHASSIS_CONTROL, CIPHER_SUITES, decodeAsfPong, decodeChannelAuthCapabilities,
  decodeChassisStatus, decodeCloseSessionRequest, decodeDeviceId, decodeGetBootOptions, decodeIpmiMessage, decodeIpmiPacket,
  decodeOpenSessionRequest, decodeOpenSessionResponse, decodeRakp1, decodeRakp2, decodeRakp3, decodeRakp4, decodeSetBootOptionsRequest,
  decodeSetSessionPrivilege, decodeSystemGuid, decryptAesCbc128, deriveSessionKeys, encodeAsf, encodeAsfPing, encodeChassisControl,
  encodeChassisIdentify, encodeCloseSession, encodeGetBootOptions, encodeGetChannelAuthCapabilities, encodeIpmi15, encodeIpmiRequest,
  encodeIpmiResponse, encodeOpenSessionRequest, encodeOpenSessionResponse, encodeRakp1, encodeRakp2, encodeRakp3, encodeRakp4,
  encodeRmcpPlus, encodeSetBootFlags, encodeSetSessionPrivilege, encryptAesCbc128, firmwareVersion, formatIpmi, guidToUuid,
  integrityAuthCode, ipmiChecksum, openIpmiMessage, PAYLOAD_TYPE, rakp2AuthCode, rakp3AuthCode, rakp4Icv, sealIpmiMessage,
  sessionIntegrityKey, verifyIntegrity, type CipherSuite, type IpmiPacket, type RakpParameters, type SessionSecrets,
} from '../../src/protocols/ipmi/index.ts';

const SHA1: CipherSuite = CIPHER_SUITES[3]!;
const SHA256: CipherSuite = CIPHER_SUITES[17]!;
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const seq = (n: number, from = 0): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (from + i) & 0xff));

// --- an independent rendering of §13.31/§13.32, straight from the formulas ---------------------------------

function ref(hash: 'sha1' | 'sha256', key: Buffer, ...parts: Buffer[]): Buffer {
  const h = createHmac(hash, key);
  for (const p of parts) h.update(p);
  return h.digest();
}
const le32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};

const PARAMS: RakpParameters = {
  consoleSessionId: 0xa0a2a3a4,
  managedSessionId: 0x00000682,
  consoleRandom: seq(16),
  managedRandom: seq(16, 16),
  managedGuid: seq(16, 32),
  role: 0x14,
  username: Buffer.from('admin'),
};
const KUID = Buffer.from('password');
const KG = hex('0102030405060708090a0b0c0d0e0f1011121314');

t.test('RAKP codes and session keys: anchored vectors (computed from the formulas with node:crypto)', async (t) => {
  const vectors = {
    3: {
      rakp2: '63d442b3ffae012d89b165b712e74873be725a97',
      rakp3: '4ab420258775814f120682c8ab9275c29997effd',
      sik: '122c77c4b11ccd93251cbae6c34a9cb6310da154',
      sikKg: '0d91535531735975a266907349ea6db0c682bd9e',
      k1: 'e4472be78f9a81fa68297aab696a7be8c97fc9f8',
      k2: '2b6552012a2517cb3b5713901d757a6efc7d8301',
      icv: 'cbc92b34c27ddd964513b6fba0888b9a3124440b'.slice(0, 24),
    },
    17: {
      rakp2: '90cb3a28eb6b4cef99c1f4cf99aa583a7a1c2a332ff0127dc6d25eca746bcbe9',
      rakp3: '72a845290e0504673b2177d93a8dd844954778f3fe6b0476b2e7055a21663586',
      sik: 'e5935f7199865ad961063477b0662684e2ce9b1da8f2b8d41c5ce127d37e9bcf',
      sikKg: '2cc1a33f5bdd363d57cde9d293982459ad5ed1556988d2cb144577a2a0114839',
      k1: 'dc4fe73d075306f6897115dd63257385e845c10404fa1d73991790c6a101bec2',
      k2: '2a4f969ea6dfa83066f36674fdc2fea289fa1a21da90303e9b5269b54ec5adb5',
      icv: '4cb544711f839fd44de29f3cc4c5c8d2b029c833e56ae9bbf01d9f87616f65c4'.slice(0, 32),
    },
  };
  for (const [id, v] of Object.entries(vectors)) {
    const suite = CIPHER_SUITES[Number(id)]!;
    t.equal(rakp2AuthCode(suite, KUID, PARAMS).toString('hex'), v.rakp2, `suite ${id}: RAKP 2 code`);
    t.equal(rakp3AuthCode(suite, KUID, PARAMS).toString('hex'), v.rakp3, `suite ${id}: RAKP 3 code`);
    const keys = deriveSessionKeys(suite, KUID, PARAMS);
    t.equal(keys.sik.toString('hex'), v.sik, `suite ${id}: SIK (K_G = K_UID)`);
    t.equal(sessionIntegrityKey(suite, KG, PARAMS).toString('hex'), v.sikKg, `suite ${id}: SIK with a Kg`);
    t.equal(keys.k1.toString('hex'), v.k1, `suite ${id}: K1`);
    t.equal(keys.k2.toString('hex'), v.k2, `suite ${id}: K2`);
    t.equal(rakp4Icv(suite, keys.sik, PARAMS).toString('hex'), v.icv, `suite ${id}: RAKP 4 ICV (${suite.rakp4IcvLength} bytes)`);
  }
});

t.test('RAKP codes and keys agree with the formulas for random inputs', async (t) => {
  let state = 7;
  const rand = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => (state = (state * 1103515245 + 12345) >>> 0) >>> 24));
  for (let i = 0; i < 50; i++) {
    const suite = i % 2 === 0 ? SHA1 : SHA256;
    const h = suite.hash;
    const username = rand(i % 17);
    const p: RakpParameters = { consoleSessionId: rand(4).readUInt32LE(), managedSessionId: rand(4).readUInt32LE(), consoleRandom: rand(16), managedRandom: rand(16), managedGuid: rand(16), role: rand(1)[0]!, username };
    const kuid = rand(i % 21);
    const kg = i % 3 === 0 ? rand(20) : kuid;
    const roleUser = Buffer.from([p.role, username.length]);
    t.ok(rakp2AuthCode(suite, kuid, p).equals(ref(h, kuid, le32(p.consoleSessionId), le32(p.managedSessionId), p.consoleRandom, p.managedRandom, p.managedGuid, roleUser, username)));
    t.ok(rakp3AuthCode(suite, kuid, p).equals(ref(h, kuid, p.managedRandom, le32(p.consoleSessionId), roleUser, username)));
    const sik = ref(h, kg, p.consoleRandom, p.managedRandom, roleUser, username);
    const keys = deriveSessionKeys(suite, kg, p);
    t.ok(keys.sik.equals(sik) && keys.k1.equals(ref(h, sik, Buffer.alloc(20, 1))) && keys.k2.equals(ref(h, sik, Buffer.alloc(20, 2))), `keys #${i}`);
    t.ok(additionalKey(suite, sik, 3).equals(ref(h, sik, Buffer.alloc(20, 3))), 'K3');
    t.ok(rakp4Icv(suite, sik, p).equals(ref(h, sik, p.consoleRandom, le32(p.managedSessionId), p.managedGuid).subarray(0, suite.rakp4IcvLength)));
  }
  // HMAC pads short keys with zeros (RFC 2104), which is the spec's 20-byte zero-padded K_UID.
  t.ok(rakp2AuthCode(SHA1, KUID, PARAMS).equals(rakp2AuthCode(SHA1, Buffer.concat([KUID, Buffer.alloc(12)]), PARAMS)), 'K_UID zero padding makes no difference');
  t.throws(() => rakp2AuthCode(SHA1, Buffer.alloc(21), PARAMS), TypeError, 'a 21-byte password is a caller bug');
  t.throws(() => rakp2AuthCode(SHA1, KUID, { ...PARAMS, consoleRandom: Buffer.alloc(15) }), TypeError);
  t.throws(() => rakp2AuthCode(SHA1, KUID, { ...PARAMS, username: Buffer.alloc(17) }), TypeError);
});

t.test('integrity: AuthCode lengths and the pad that aligns the signed range to 4 bytes', async (t) => {
  const k1 = seq(20);
  for (const suite of [SHA1, SHA256]) {
    for (let n = 0; n <= 40; n++) {
      const payload = seq(n, 100);
      const wire = encodeRmcpPlus({ payloadType: PAYLOAD_TYPE.IPMI, sessionId: 0x11223344, sequence: n + 1, payload, integrity: { algorithm: suite.integrityAlg, k1 } });
      const p = decodeIpmiPacket(wire);
      if (p.kind !== 'rmcp+' || p.trailer === undefined) throw new Error('no trailer');
      t.equal(p.trailer.signed.length % 4, 0, `suite ${suite.id}, ${n}-byte payload: signed range is whole DWORDs`);
      t.ok(p.trailer.padLength < 4 && wire.subarray(16 + n, 16 + n + p.trailer.padLength).every((b) => b === 0xff), 'pad bytes are FFh');
      t.equal(p.trailer.authCode.length, suite.authCodeLength);
      t.ok(p.trailer.authCode.equals(ref(suite.hash, k1, p.trailer.signed).subarray(0, suite.authCodeLength)), 'AuthCode = truncated HMAC over auth type .. next header');
      t.same(decodeIpmiPacket(wire, { authCodeLength: suite.authCodeLength }), p, 'the session-length decode agrees');
      t.ok(verifyIntegrity({ suite, k1, k2: k1 }, p));
      t.notOk(verifyIntegrity({ suite, k1: seq(20, 1), k2: k1 }, p), 'another K1 does not verify');
    }
  }
  t.equal(integrityAuthCode(SHA1.integrityAlg, k1, Buffer.from('x')).length, 12, 'HMAC-SHA1-96');
  t.equal(integrityAuthCode(SHA256.integrityAlg, k1, Buffer.from('x')).length, 16, 'HMAC-SHA256-128');
  t.throws(() => integrityAuthCode(2, k1, Buffer.from('x')), TypeError, 'HMAC-MD5-128 is not offered');
});

t.test('confidentiality: AES-CBC-128 with IPMI\'s 1, 2, ... N, N padding', async (t) => {
  const k2 = seq(20, 50);
  const iv = seq(16, 200);
  for (let n = 0; n <= 48; n++) {
    const plain = seq(n, 7);
    const out = encryptAesCbc128(plain, k2, iv);
    const padLength = (16 - ((n + 1) % 16)) % 16;
    t.equal(out.length, 16 + n + padLength + 1, `${n} bytes: IV + data + ${padLength} pad + length byte`);
    t.equal((out.length - 16) % 16, 0);
    // What the spec says the ciphertext is, built by hand.
    const trailer = Buffer.from([...Array.from({ length: padLength }, (_, i) => i + 1), padLength]);
    const c = createCipheriv('aes-128-cbc', k2.subarray(0, 16), iv).setAutoPadding(false);
    t.ok(out.equals(Buffer.concat([iv, c.update(Buffer.concat([plain, trailer])), c.final()])), `${n} bytes: same as by hand`);
    t.ok(decryptAesCbc128(out, k2).equals(plain), 'round trip');
  }
  // Bad padding is BMC_PROTOCOL with the offset of the offending byte.
  const forge = (last: Buffer): Buffer => {
    const c = createCipheriv('aes-128-cbc', k2.subarray(0, 16), iv).setAutoPadding(false);
    return Buffer.concat([iv, c.update(last), c.final()]);
  };
  t.throws(() => decryptAesCbc128(forge(Buffer.from([...seq(15), 16])), k2, 100), { code: 'BMC_PROTOCOL', details: { offset: 100 + 16 + 15 } }, 'pad length 16');
  t.throws(() => decryptAesCbc128(forge(Buffer.from([...seq(12, 40), 1, 2, 9, 3])), k2), { code: 'BMC_PROTOCOL', details: { offset: 16 + 14 } }, 'third pad byte 9');
  t.throws(() => decryptAesCbc128(Buffer.alloc(16), k2), { code: 'BMC_PROTOCOL' }, 'IV only');
  t.throws(() => decryptAesCbc128(Buffer.alloc(40), k2), { code: 'BMC_PROTOCOL' }, 'not whole blocks');
  t.throws(() => encryptAesCbc128(Buffer.alloc(1), k2, Buffer.alloc(8)), TypeError, 'IV must be 16 bytes');
});

t.test('sealed session messages open again; tampering does not', async (t) => {
  for (const suite of [SHA1, SHA256]) {
    const keys = deriveSessionKeys(suite, KUID, PARAMS);
    const s: SessionSecrets = { suite, k1: keys.k1, k2: keys.k2 };
    const message = encodeIpmiRequest({ netFn: 0x00, cmd: 0x01, rqSeq: 9 });
    const wire = sealIpmiMessage(s, { sessionId: 0x682, sequence: 42, message, iv: seq(16, 1) });
    const p = decodeIpmiPacket(wire, { authCodeLength: suite.authCodeLength });
    if (p.kind !== 'rmcp+') throw new Error('not rmcp+');
    t.match(p, { payloadType: PAYLOAD_TYPE.IPMI, encrypted: true, authenticated: true, sessionId: 0x682, sequence: 42 });
    t.ok(openIpmiMessage(s, p).equals(message), `suite ${suite.id}: round trip`);
    for (let i = 4; i < wire.length; i++) {
      const bad = Buffer.from(wire);
      bad[i]! ^= 0x01;
      let outcome = 'accepted';
      try {
        const q = decodeIpmiPacket(bad, { authCodeLength: suite.authCodeLength });
        if (q.kind === 'rmcp+') openIpmiMessage(s, q);
      } catch (err) {
        outcome = isMetalboxError(err, 'BMC_PROTOCOL') ? 'refused' : `threw ${String(err)}`;
      }
      if (outcome !== 'refused') t.fail(`suite ${suite.id}: flipping a bit of byte ${i} was ${outcome}`);
    }
    t.pass(`suite ${suite.id}: every single-bit change after the RMCP header is refused`);
    const plainPacket = decodeIpmiPacket(encodeRmcpPlus({ payloadType: 0, sessionId: 1, sequence: 1, payload: message }));
    t.throws(() => openIpmiMessage(s, plainPacket as Extract<IpmiPacket, { kind: 'rmcp+' }>), { code: 'BMC_PROTOCOL' }, 'an unauthenticated, unencrypted packet is refused in a session');
  }
});

t.test('round trips: RMCP, ASF, IPMI v1.5, RMCP+, messages, session setup payloads', async (t) => {
  const ping = encodeAsfPing(7);
  t.same([...ping], [6, 0, 0xff, 6, 0, 0, 0x11, 0xbe, 0x80, 7, 0, 0], 'presence ping bytes (ASF 2.0 §3.2.4.3)');
  t.match(decodeIpmiPacket(ping), { kind: 'asf', iana: 4542, messageType: 0x80, tag: 7 });
  const pong = decodeIpmiPacket(hex('0600ff06000011be40000010000011be0000000081000000000000'.padEnd(56, '0')));
  if (pong.kind !== 'asf') throw new Error('not asf');
  t.same(decodeAsfPong(pong), { iana: 4542, oemDefined: 0, entities: 0x81, interactions: 0, ipmi: true, asfVersion: 1, securityExtensions: false }, 'ipmi_sim\'s pong');
  t.same(decodeIpmiPacket(encodeAsf({ messageType: 0x40, tag: 1, data: seq(16) })), { kind: 'asf', rmcpSequence: 0xff, iana: 4542, messageType: 0x40, tag: 1, data: seq(16) });

  const rq = encodeIpmiRequest({ netFn: 0x06, cmd: 0x38, rqSeq: 0, data: encodeGetChannelAuthCapabilities({ privilege: 4 }) });
  t.same([...rq], [0x20, 0x18, 0xc8, 0x81, 0x00, 0x38, 0x8e, 0x04, 0xb5], 'Get Channel Auth Caps request, as ipmitool sends it');
  const v15 = encodeIpmi15({ message: rq });
  t.same(decodeIpmiPacket(v15), { kind: 'ipmi15', authType: AUTH_TYPE.NONE, sequence: 0, sessionId: 0, message: rq });
  t.same(decodeIpmiPacket(Buffer.concat([v15, Buffer.from([0])])), decodeIpmiPacket(v15), 'QUIRK: one legacy pad byte is accepted');
  const md5 = Buffer.concat([hex('0600ff07 02 01000000 04030201'), seq(16), Buffer.from([rq.length]), rq]);
  t.same(decodeIpmiPacket(md5), { kind: 'ipmi15', authType: AUTH_TYPE.MD5, sequence: 1, sessionId: 0x01020304, authCode: seq(16), message: rq }, 'v1.5 with an AuthCode');

  const rs = encodeIpmiResponse({ netFn: 0x07, cmd: 0x38, rqSeq: 63, completionCode: 0, data: hex('0197040300000000') });
  t.same(decodeIpmiMessage(rs), { kind: 'response', rqAddr: 0x81, rqLun: 0, netFn: 0x07, rsAddr: 0x20, rsLun: 0, rqSeq: 63, cmd: 0x38, completionCode: 0, data: hex('0197040300000000') });
  t.same(decodeIpmiMessage(encodeIpmiRequest({ netFn: 0x2c, cmd: 0, rqSeq: 5, rsLun: 2, rqLun: 1, data: seq(3) })), { kind: 'request', rsAddr: 0x20, rsLun: 2, netFn: 0x2c, rqAddr: 0x81, rqLun: 1, rqSeq: 5, cmd: 0, data: seq(3) });
  t.equal(ipmiChecksum(Buffer.from([0x20, 0x18])), 0xc8);

  const oem = encodeRmcpPlus({ payloadType: PAYLOAD_TYPE.OEM_EXPLICIT, oem: { iana: 343, payloadId: 0x1234 }, sessionId: 5, sequence: 6, payload: seq(3) });
  t.match(decodeIpmiPacket(oem), { kind: 'rmcp+', payloadType: 2, oem: { iana: 343, payloadId: 0x1234 }, sessionId: 5, sequence: 6, payload: seq(3), payloadOffset: 22 });

  const open = { tag: 3, privilege: 0, consoleSessionId: 0xa0a2a3a4, authAlg: 1, integrityAlg: 1, confidentialityAlg: 1 };
  const openWire = encodeOpenSessionRequest(open);
  t.equal(openWire.toString('hex'), '03000000a4a3a2a0000000080100000001000008010000000200000801000000', 'Open Session Request bytes as ipmitool sends them (but the tag)');
  t.same(decodeOpenSessionRequest(openWire), open);
  const openRs = { tag: 3, status: 0, privilege: 4, consoleSessionId: 1, managedSessionId: 2, authAlg: 3, integrityAlg: 4, confidentialityAlg: 1 };
  t.same(decodeOpenSessionResponse(encodeOpenSessionResponse(openRs)), openRs);
  t.same(decodeOpenSessionResponse(encodeOpenSessionResponse({ tag: 1, status: 0x11, privilege: 0, consoleSessionId: 9 })), { tag: 1, status: 0x11, privilege: 0, consoleSessionId: 9 }, 'error form: 8 bytes');
  t.same(decodeOpenSessionResponse(Buffer.from([1, 0x04])), { tag: 1, status: 4 }, 'QUIRK(ipmi_sim): error form of 2 bytes');
  t.throws(() => decodeOpenSessionResponse(Buffer.from([1, 0])), { code: 'BMC_PROTOCOL' }, 'but not on success');

  const r1 = { tag: 4, managedSessionId: 0x682, consoleRandom: seq(16), role: 0x14, username: Buffer.from('admin') };
  t.same(decodeRakp1(encodeRakp1(r1)), r1);
  t.same(decodeRakp1(encodeRakp1({ ...r1, username: Buffer.alloc(0) })), { ...r1, username: Buffer.alloc(0) }, 'null user');
  for (const suite of [SHA1, SHA256]) {
    const r2 = { tag: 4, status: 0, consoleSessionId: 1, managedRandom: seq(16), managedGuid: seq(16, 9), authCode: seq(suite.rakpCodeLength) };
    t.same(decodeRakp2(encodeRakp2(r2), suite.rakpCodeLength), r2, `RAKP 2, ${suite.rakpCodeLength}-byte code`);
    t.throws(() => decodeRakp2(encodeRakp2(r2), suite.rakpCodeLength === 20 ? 32 : 20), { code: 'BMC_PROTOCOL' }, 'a code of the other suite\'s length is refused');
  }
  t.same(decodeRakp2(encodeRakp2({ tag: 1, status: 0x0d, consoleSessionId: 7 }), 20), { tag: 1, status: 0x0d, consoleSessionId: 7 });
  const r3 = { tag: 5, status: 0, managedSessionId: 3, authCode: seq(32) };
  t.same(decodeRakp3(encodeRakp3(r3)), r3);
  const r4 = { tag: 6, status: 0, consoleSessionId: 3, icv: seq(12) };
  t.same(decodeRakp4(encodeRakp4(r4)), r4);
  t.same(decodeRakp4(Buffer.from([6, 0x0f])), { tag: 6, status: 0x0f, icv: Buffer.alloc(0) }, 'short RAKP 4 error');
});

t.test('command bodies', async (t) => {
  t.same([...encodeGetChannelAuthCapabilities({ privilege: 3, extended: false, channel: 1 })], [0x01, 0x03]);
  t.match(decodeChannelAuthCapabilities(hex('0197240300000000')), { channel: 1, authTypes: 0x17, extendedCapabilities: true, kgSet: true, nonNullUsernames: true, ipmi15: true, ipmi20: true });
  t.match(decodeChannelAuthCapabilities(hex('0117040000000000')), { extendedCapabilities: false, ipmi15: true, ipmi20: false }, 'a v1.5-only BMC');
  t.same([...encodeSetSessionPrivilege(4)], [4]);
  t.same(decodeSetSessionPrivilege(Buffer.from([0x04])), { privilege: 4 });
  t.same([...encodeCloseSession(0x682)], [0x82, 0x06, 0, 0]);
  t.same(decodeCloseSessionRequest(encodeCloseSession(0xdeadbeef)), { sessionId: 0xdeadbeef });

  const id = decodeDeviceId(hex('00030908029f911200020f00000000'));
  t.match(id, { deviceId: 0, deviceRevision: 3, providesSdrs: false, updateInProgress: false, firmwareMajor: 9, firmwareMinor: 8, ipmiVersion: '2.0', additionalSupport: 0x9f, manufacturerId: 4753, productId: 0x0f02 });
  t.equal(firmwareVersion(id), '9.08');
  t.equal(decodeDeviceId(hex('20810215 51bf 570100 3412')).ipmiVersion, '1.5', 'BCD 51h is 1.5');
  t.notOk('auxFirmware' in decodeDeviceId(hex('00030908029f911200020f')), 'auxiliary firmware is optional');
  const guid = hex('5f4e3d2c1b0a559d7b4c0e2f526a3c8b');
  t.ok(decodeSystemGuid(guid).equals(guid));
  t.equal(guidToUuid(guid), '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f', 'least significant byte first (§22.14)');

  t.same(decodeChassisStatus(hex('010000')), { powerOn: true, powerOverload: false, interlock: false, powerFault: false, powerControlFault: false, restorePolicy: 'always-off', lastPowerEvent: 0, intrusion: false, frontPanelLockout: false, driveFault: false, fanFault: false });
  t.match(decodeChassisStatus(hex('7e105f0f')), { powerOn: false, powerOverload: true, interlock: true, powerFault: true, powerControlFault: true, restorePolicy: 'unknown', lastPowerEvent: 0x10, intrusion: true, identify: 'temporary', frontPanelButtons: 0x0f });
  t.match(decodeChassisStatus(hex('2000 60')), { restorePolicy: 'previous', identify: 'indefinite' });

  t.same([...encodeChassisControl(CHASSIS_CONTROL.SOFT_SHUTDOWN)], [5]);
  t.same([...encodeChassisIdentify(10)], [10]);
  t.same([...encodeChassisIdentify(0, true)], [0, 1], 'force on');
  // Table 28-14: data 1 bit 7 valid, bit 6 persistent, bit 5 EFI; data 2 bits 5:2 device (PXE 0001b, disk 0010b).
  t.same([...encodeSetBootFlags({ valid: true, persistent: false, efi: false, device: BOOT_DEVICE.PXE })], [0x05, 0x80, 0x04, 0, 0, 0]);
  t.same([...encodeSetBootFlags({ valid: true, persistent: true, efi: true, device: BOOT_DEVICE.DISK })], [0x05, 0xe0, 0x08, 0, 0, 0]);
  t.same([...encodeSetBootFlags({ valid: false, persistent: false, efi: true, device: BOOT_DEVICE.NONE })], [0x05, 0x20, 0x00, 0, 0, 0]);
  t.same(decodeSetBootOptionsRequest(hex('05e00c000000')).bootFlags, { valid: true, persistent: true, efi: true, device: 3, data2Other: 0, data3: 0, data4: 0, data5: 0 });
  t.match(decodeSetBootOptionsRequest(hex('8001')), { parameter: 0, markInvalid: true, data: hex('01') });
  t.same([...encodeGetBootOptions(5)], [5, 0, 0]);
  t.match(decodeGetBootOptions(hex('01 05 80 04 00 00 00')), { version: 1, parameter: 5, invalid: false, bootFlags: { valid: true, device: 1 } });
  t.match(decodeGetBootOptions(hex('01 84 00 00')), { parameter: 4, invalid: true, data: hex('0000') });
});

t.test('formatIpmi: stable text', async (t) => {
  t.equal(formatIpmi(decodeIpmiPacket(encodeAsfPing(0))), 'RMCP ASF seq=0xff iana=4542 presence ping tag=0 data=(none)\n');
  const wire = encodeIpmi15({ message: encodeIpmiRequest({ netFn: 0x06, cmd: 0x38, rqSeq: 0, data: encodeGetChannelAuthCapabilities({ privilege: 4 }) }) });
  t.equal(formatIpmi(decodeIpmiPacket(wire)), [
    'RMCP IPMI v1.5 session auth=none seq=0 id=0x00000000',
    '  request rsAddr=0x20 rsLUN=0 rqAddr=0x81 rqLUN=0 rqSeq=0 netFn=App(0x06) cmd=Get Channel Authentication Capabilities(0x38)',
    '    channel=0x0e v2-extended-data=yes privilege=administrator',
    '',
  ].join('\n'));
  const sealed = decodeIpmiPacket(sealIpmiMessage({ suite: SHA1, k1: seq(20), k2: seq(20) }, { sessionId: 1, sequence: 2, message: encodeIpmiRequest({ netFn: 0, cmd: 2, rqSeq: 1, data: encodeChassisControl(1) }), iv: seq(16) }));
  t.match(formatIpmi(sealed), /\(no keys: payload not decrypted\)\n$/, 'without keys the payload stays opaque');
  t.match(formatIpmi(sealed, { plaintext: encodeIpmiRequest({ netFn: 0, cmd: 2, rqSeq: 1, data: encodeChassisControl(1) }), integrity: 'verified' }), /\(verified\)[\s\S]*control=power up\(0x01\)/);
  t.match(formatIpmi(decodeIpmiPacket(encodeRmcpPlus({ payloadType: PAYLOAD_TYPE.RAKP2, sessionId: 0, sequence: 0, payload: Buffer.from([1, 0, 3]) }))), /undecodable 010003: IPMI: RAKP message 2 truncated/, 'a bad payload is shown, not thrown');
});

/** name, datagram, expected offset (every one is BMC_PROTOCOL). */
const HOSTILE_PACKETS: [string, Buffer, number][] = [
  ['empty datagram', Buffer.alloc(0), 0],
  ['RMCP header cut short', hex('0600ff'), 3],
  ['RMCP version 5', hex('0500ff0700'), 0],
  ['RMCP ACK', hex('0600ff87'), 3],
  ['RMCP class 8', hex('0600ff08'), 3],
  ['ASF without its header', hex('0600ff06000011be80'), 9],
  ['ASF data length overruns', hex('0600ff06000011be80000005'), 12],
  ['ASF bytes after the data', hex('0600ff06000011be8000000000'), 12],
  ['IPMI class, nothing more', hex('0600ff07'), 4],
  ['v1.5 auth type 3', hex('0600ff0703'), 4],
  ['v1.5 sequence cut short', hex('0600ff0700000000'), 5],
  ['v1.5 session ID cut short', hex('0600ff07000000000001'), 9],
  ['v1.5 MD5 AuthCode cut short', Buffer.concat([hex('0600ff07020000000000000000'), seq(10)]), 13],
  ['v1.5 message length overruns', hex('0600ff0700000000000000000009201800'), 14],
  ['v1.5 two bytes after the message', hex('0600ff0700000000000000000001ff0000'), 15],
  ['RMCP+ payload type missing', hex('0600ff0706'), 5],
  ['RMCP+ session ID cut short', hex('0600ff070600010203'), 6],
  ['RMCP+ OEM IANA cut short', hex('0600ff07060201'), 6],
  ['RMCP+ payload length overruns', hex('0600ff0706100000000000000000200000'), 14],
  ['RMCP+ bytes after an unauthenticated payload', hex('0600ff0706100000000000000000010000ee'), 17],
  ['RMCP+ authenticated, no trailer at all', hex('0600ff0706c00100000001000000020000aaaa'), 18],
  ['RMCP+ authenticated, pad length wrong for the alignment', Buffer.concat([hex('0600ff0706c0 01000000 01000000 0400 aaaaaaaa ffff 03 07'), seq(12)]), 22],
  ['RMCP+ authenticated, next header 6', Buffer.concat([hex('0600ff0706c0 01000000 01000000 0400 aaaaaaaa ffff 02 06'), seq(12)]), 23],
];

t.test('hostile packets: each refused with BMC_PROTOCOL at its offset', async (t) => {
  for (const [name, buf, offset] of HOSTILE_PACKETS) {
    t.throws(() => decodeIpmiPacket(buf), { code: 'BMC_PROTOCOL', details: { offset } }, name);
  }
  // With the session's AuthCode length the trailer must still be consistent.
  const ok = encodeRmcpPlus({ payloadType: 0, sessionId: 1, sequence: 1, payload: seq(32), integrity: { algorithm: 1, k1: seq(20) } });
  t.throws(() => decodeIpmiPacket(ok, { authCodeLength: 16 }), { code: 'BMC_PROTOCOL' }, 'a 12-byte AuthCode read as 16');
  t.throws(() => decodeIpmiPacket(ok.subarray(0, ok.length - 13), { authCodeLength: 12 }), { code: 'BMC_PROTOCOL' }, 'trailer shorter than its AuthCode');
  const badPad = Buffer.from(ok);
  badPad[ok.length - 14] = 3;
  t.throws(() => decodeIpmiPacket(badPad, { authCodeLength: 12 }), { code: 'BMC_PROTOCOL', details: { offset: ok.length - 14 } }, 'pad length that does not match the pad');
});

t.test('hostile payloads and bodies', async (t) => {
  const cases: [string, () => unknown, number][] = [
    ['message of 6 bytes', () => decodeIpmiMessage(hex('201800810004')), 6],
    ['message header checksum', () => decodeIpmiMessage(hex('201801810004ff7b')), 2],
    ['message data checksum', () => decodeIpmiMessage(hex('2018c881000400')), 6],
    ['response without completion code', () => decodeIpmiMessage(hex('811c63200038a8')), 6],
    ['Open Session Request cut short', () => decodeOpenSessionRequest(hex('00000000a4a3a2a000000008')), 12],
    ['Open Session Request integrity record first', () => decodeOpenSessionRequest(hex('00000000a4a3a2a0010000080100000001000008010000000200000801000000')), 8],
    ['Open Session Request record length 5', () => decodeOpenSessionRequest(hex('00000000a4a3a2a0000000050100000001000008010000000200000801000000')), 11],
    ['Open Session Request trailing byte', () => decodeOpenSessionRequest(hex('00000000a4a3a2a000000008010000000100000801000000020000080100000000')), 32],
    ['RAKP 1 user name length 17', () => decodeRakp1(Buffer.concat([hex('0000000082060000'), seq(16), hex('14000011'), seq(17)])), 27],
    ['RAKP 1 user name cut short', () => decodeRakp1(Buffer.concat([hex('0000000082060000'), seq(16), hex('14000005'), seq(3)])), 28],
    ['RAKP 2 code cut short', () => decodeRakp2(Buffer.concat([hex('0000 0000 a4a3a2a0'), seq(32), seq(19)]), 20), 40],
    ['RAKP 2 trailing bytes', () => decodeRakp2(Buffer.concat([hex('0000 0000 a4a3a2a0'), seq(32), seq(21)]), 20), 60],
    ['RAKP 4 session ID cut short', () => decodeRakp4(hex('00000000a4a3')), 4],
    ['Device ID cut short', () => decodeDeviceId(hex('0003090802')), 5],
    ['Chassis Status cut short', () => decodeChassisStatus(hex('01')), 1],
    ['Channel Auth Caps cut short', () => decodeChannelAuthCapabilities(hex('01970403000000')), 7],
    ['GUID cut short', () => decodeSystemGuid(seq(15)), 0],
    ['boot flags cut short', () => decodeGetBootOptions(hex('010580040000')), 6],
    ['Set boot flags cut short', () => decodeSetBootOptionsRequest(hex('05800400')), 4],
    ['pong cut short', () => decodeAsfPong({ kind: 'asf', rmcpSequence: 255, iana: 4542, messageType: 0x40, tag: 0, data: seq(4) }), 12],
  ];
  for (const [name, fn, offset] of cases) t.throws(fn, { code: 'BMC_PROTOCOL', details: { offset } }, name);
  // Payload offsets move to the packet when a base is given.
  t.throws(() => decodeRakp4(hex('00000000a4a3'), 16), { code: 'BMC_PROTOCOL', details: { offset: 20 }, message: /at offset 20$/ }, 'rebased offset');
});

t.test('encoders refuse caller bugs with TypeError', async (t) => {
  const bad: [string, () => unknown][] = [
    ['odd request netFn', () => encodeIpmiRequest({ netFn: 7, cmd: 1, rqSeq: 0 })],
    ['even response netFn', () => encodeIpmiResponse({ netFn: 6, cmd: 1, rqSeq: 0, completionCode: 0 })],
    ['rqSeq 64', () => encodeIpmiRequest({ netFn: 6, cmd: 1, rqSeq: 64 })],
    ['netFn 64', () => encodeIpmiRequest({ netFn: 64, cmd: 1, rqSeq: 0 })],
    ['session ID 2^32', () => encodeRmcpPlus({ payloadType: 0, sessionId: 2 ** 32, sequence: 0, payload: Buffer.alloc(0) })],
    ['payload type 64', () => encodeRmcpPlus({ payloadType: 64, sessionId: 0, sequence: 0, payload: Buffer.alloc(0) })],
    ['OEM fields without payload type 2', () => encodeRmcpPlus({ payloadType: 0, oem: { iana: 1, payloadId: 1 }, sessionId: 0, sequence: 0, payload: Buffer.alloc(0) })],
    ['integrity algorithm MD5-128', () => encodeRmcpPlus({ payloadType: 0, sessionId: 0, sequence: 0, payload: Buffer.alloc(0), integrity: { algorithm: 3, k1: Buffer.alloc(20) } })],
    ['v1.5 message of 256 bytes', () => encodeIpmi15({ message: Buffer.alloc(256) })],
    ['RAKP 1 random of 15 bytes', () => encodeRakp1({ tag: 0, managedSessionId: 0, consoleRandom: Buffer.alloc(15), role: 0, username: Buffer.alloc(0) })],
    ['RAKP 1 user of 17 bytes', () => encodeRakp1({ tag: 0, managedSessionId: 0, consoleRandom: Buffer.alloc(16), role: 0, username: Buffer.alloc(17) })],
    ['boot device 16', () => encodeSetBootFlags({ valid: true, persistent: false, efi: false, device: 16 })],
    ['chassis control 6', () => encodeChassisControl(6)],
    ['identify 256 s', () => encodeChassisIdentify(256)],
    ['privilege 6', () => encodeSetSessionPrivilege(6)],
  ];
  for (const [name, fn] of bad) t.throws(fn, TypeError, name);
});

t.test('fuzz: random and mutated datagrams only ever give BMC_PROTOCOL', async (t) => {
  let state = 0x9e3779b9;
  const next = (): number => (state = (state * 1664525 + 1013904223) >>> 0);
  const random = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => next() >>> 24));
  const keys = deriveSessionKeys(SHA1, KUID, PARAMS);
  const s3: SessionSecrets = { suite: SHA1, k1: keys.k1, k2: keys.k2 };
  const k17 = deriveSessionKeys(SHA256, KUID, PARAMS);
  const s17: SessionSecrets = { suite: SHA256, k1: k17.k1, k2: k17.k2 };
  const seeds = [
    encodeAsfPing(1),
    encodeAsf({ messageType: 0x40, tag: 1, data: seq(16) }),
    encodeIpmi15({ message: encodeIpmiResponse({ netFn: 7, cmd: 0x38, rqSeq: 1, completionCode: 0, data: hex('0197040300000000') }) }),
    encodeRmcpPlus({ payloadType: PAYLOAD_TYPE.OPEN_SESSION_RESPONSE, sessionId: 0, sequence: 0, payload: encodeOpenSessionResponse({ tag: 1, status: 0, privilege: 4, consoleSessionId: 1, managedSessionId: 2, authAlg: 1, integrityAlg: 1, confidentialityAlg: 1 }) }),
    encodeRmcpPlus({ payloadType: PAYLOAD_TYPE.RAKP2, sessionId: 0, sequence: 0, payload: encodeRakp2({ tag: 1, status: 0, consoleSessionId: 1, managedRandom: seq(16), managedGuid: seq(16), authCode: seq(20) }) }),
    encodeRmcpPlus({ payloadType: PAYLOAD_TYPE.RAKP4, sessionId: 0, sequence: 0, payload: encodeRakp4({ tag: 1, status: 0, consoleSessionId: 1, icv: seq(12) }) }),
    sealIpmiMessage(s3, { sessionId: 1, sequence: 3, message: encodeIpmiResponse({ netFn: 1, cmd: 1, rqSeq: 2, completionCode: 0, data: hex('010000') }), iv: seq(16) }),
    sealIpmiMessage(s17, { sessionId: 1, sequence: 3, message: encodeIpmiResponse({ netFn: 7, cmd: 1, rqSeq: 2, completionCode: 0, data: hex('00030908029f911200020f00000000') }), iv: seq(16) }),
  ];
  const bodies = [decodeChannelAuthCapabilities, decodeDeviceId, decodeChassisStatus, decodeSystemGuid, decodeGetBootOptions, decodeSetBootOptionsRequest, decodeSetSessionPrivilege, decodeCloseSessionRequest, decodeOpenSessionRequest, decodeOpenSessionResponse, decodeRakp1, (b: Buffer) => decodeRakp2(b, 20), (b: Buffer) => decodeRakp2(b, 32), decodeRakp3, decodeRakp4, decodeIpmiMessage];
  let decoded = 0;
  let refused = 0;
  const unexpected: string[] = [];
  const attempt = (fn: () => unknown): void => {
    try {
      fn();
      decoded++;
    } catch (err) {
      if (err instanceof MetalboxError && err.code === 'BMC_PROTOCOL' && typeof err.details?.offset === 'number') refused++;
      else if (unexpected.length < 5) unexpected.push(String((err as Error).stack ?? err));
    }
  };
  for (let i = 0; i < 30_000; i++) {
    let buf: Buffer;
    const kind = next() % 4;
    if (kind === 0) {
      buf = random(next() % 120);
    } else {
      buf = Buffer.from(seeds[next() % seeds.length]!);
      const edits = 1 + (next() % 4);
      for (let e = 0; e < edits; e++) {
        const op = next() % 3;
        if (op === 0 && buf.length > 0) buf[next() % buf.length] = next() >>> 24;
        else if (op === 1) buf = buf.subarray(0, next() % (buf.length + 1));
        else buf = Buffer.concat([buf, random(1 + (next() % 8))]);
      }
    }
    for (const options of [{}, { authCodeLength: 12 }, { authCodeLength: 16 }]) {
      attempt(() => {
        const p = decodeIpmiPacket(buf, options);
        formatIpmi(p);
        if (p.kind === 'rmcp+') {
          for (const s of [s3, s17]) {
            try {
              formatIpmi(p, { plaintext: openIpmiMessage(s, p) });
            } catch (err) {
              if (!isMetalboxError(err, 'BMC_PROTOCOL')) throw err;
            }
          }
        }
        if (p.kind === 'asf' && p.messageType === 0x40) decodeAsfPong(p);
      });
    }
    const body = bodies[next() % bodies.length]!;
    attempt(() => body(buf.subarray(next() % (buf.length + 1))));
  }
  t.same(unexpected, [], 'nothing but BMC_PROTOCOL (with an offset) was thrown');
  t.ok(decoded > 1000 && refused > 1000, `both outcomes exercised (${decoded} decoded, ${refused} refused)`);
});
