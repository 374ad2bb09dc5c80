// Sealing and opening IPMI messages inside an established RMCP+ session (§13.6, §13.28, §13.29): encrypt
// with AES-CBC-128 under K2, sign with the integrity algorithm under K1, and the reverse. Pure: the IV and
// the sequence number come from the caller, and the replay window is the caller's (it needs state).
import { MetalboxError } from '../../lib/errors.ts';
import { PAYLOAD_TYPE } from './constants.ts';
import { codesEqual, decryptAesCbc128, encryptAesCbc128, integrityAuthCode, type CipherSuite } from './crypto.ts';
import { encodeRmcpPlus, type RmcpPlusPacket } from './packet.ts';

export interface SessionSecrets {
  suite: CipherSuite;
  k1: Buffer;
  k2: Buffer;
}

/** An IPMI message as an encrypted and authenticated RMCP+ packet to `sessionId` (the peer's session ID). */
export function sealIpmiMessage(s: SessionSecrets, p: { sessionId: number; sequence: number; message: Buffer; iv: Buffer }): Buffer {
  return encodeRmcpPlus({
    payloadType: PAYLOAD_TYPE.IPMI,
    sessionId: p.sessionId,
    sequence: p.sequence,
    encrypted: true,
    payload: encryptAesCbc128(p.message, s.k2, p.iv),
    integrity: { algorithm: s.suite.integrityAlg, k1: s.k1 },
  });
}

/** Whether the packet's AuthCode is the one K1 gives (false when it has no trailer). */
export function verifyIntegrity(s: SessionSecrets, p: RmcpPlusPacket): boolean {
  if (p.trailer === undefined) return false;
  return codesEqual(integrityAuthCode(s.suite.integrityAlg, s.k1, p.trailer.signed), p.trailer.authCode);
}

/**
 * The IPMI message inside a session packet from the peer. Throws BMC_PROTOCOL when the packet is not an
 * authenticated and encrypted IPMI payload (a session with integrity and confidentiality accepts nothing
 * less, §13.28), when its AuthCode is wrong, or when the confidentiality padding is bad.
 */
export function openIpmiMessage(s: SessionSecrets, p: RmcpPlusPacket): Buffer {
  if (p.payloadType !== PAYLOAD_TYPE.IPMI) throw new MetalboxError('BMC_PROTOCOL', `IPMI: session packet carries payload type 0x${p.payloadType.toString(16)}, not an IPMI message`, { details: { offset: 5, payloadType: p.payloadType } });
  if (!p.authenticated || !p.encrypted) {
    const missing = [p.authenticated ? '' : 'authenticated', p.encrypted ? '' : 'encrypted'].filter(Boolean).join(' nor ');
    throw new MetalboxError('BMC_PROTOCOL', `IPMI: session packet is not ${missing}; the session requires both`, { details: { offset: 5, authenticated: p.authenticated, encrypted: p.encrypted } });
  }
  if (!verifyIntegrity(s, p)) throw new MetalboxError('BMC_PROTOCOL', 'IPMI: session packet AuthCode does not verify', { details: { offset: p.payloadOffset + p.payload.length, integrity: 'mismatch' } });
  return decryptAesCbc128(p.payload, s.k2, p.payloadOffset);
}
