// RMCP+ cryptography (IPMI v2.0 §13.28-§13.31): the RAKP exchange's key-exchange authentication codes,
// the session keys SIK, K1 and K2, the integrity trailer's AuthCode and AES-CBC-128 confidentiality. Pure:
// every random value (console random number, IV) and every key is passed in; nothing here draws
// randomness or keeps state.
import { createCipheriv, createDecipheriv, createHmac, timingSafeEqual } from 'node:crypto';
import { AUTH_ALG, CONFIDENTIALITY_ALG, INTEGRITY_ALG } from './constants.ts';
import { ipmiDecodeError, writeU32le } from './reader.ts';

export type HashName = 'sha1' | 'sha256';

/** What a cipher suite means here (§22.15.2, table 22-19). Only suites with integrity and AES are offered. */
export interface CipherSuite {
  id: number;
  authAlg: number;
  integrityAlg: number;
  confidentialityAlg: number;
  /** The RAKP HMAC and the SIK/K1/K2 hash. */
  hash: HashName;
  /** Length of the RAKP 2/3 key exchange authentication codes: the full HMAC (§13.31). */
  rakpCodeLength: number;
  /** Length of the RAKP 4 integrity check value: HMAC-SHA1-96 / HMAC-SHA256-128 (§13.31, errata). */
  rakp4IcvLength: number;
  /** Length of the session trailer's AuthCode (§13.28.4): 12 for HMAC-SHA1-96, 16 for HMAC-SHA256-128. */
  authCodeLength: number;
}

/**
 * Cipher suite 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128 (what ipmitool -C 3 and most BMCs speak).
 * Cipher suite 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128 (added by the IPMI v2.0 errata).
 */
export const CIPHER_SUITES: Readonly<Record<number, CipherSuite>> = {
  3: { id: 3, authAlg: AUTH_ALG.HMAC_SHA1, integrityAlg: INTEGRITY_ALG.HMAC_SHA1_96, confidentialityAlg: CONFIDENTIALITY_ALG.AES_CBC_128, hash: 'sha1', rakpCodeLength: 20, rakp4IcvLength: 12, authCodeLength: 12 },
  17: { id: 17, authAlg: AUTH_ALG.HMAC_SHA256, integrityAlg: INTEGRITY_ALG.HMAC_SHA256_128, confidentialityAlg: CONFIDENTIALITY_ALG.AES_CBC_128, hash: 'sha256', rakpCodeLength: 32, rakp4IcvLength: 16, authCodeLength: 16 },
};

/** The suite with these algorithms, if we speak it. */
export function suiteByAlgorithms(authAlg: number, integrityAlg: number, confidentialityAlg: number): CipherSuite | undefined {
  return Object.values(CIPHER_SUITES).find((s) => s.authAlg === authAlg && s.integrityAlg === integrityAlg && s.confidentialityAlg === confidentialityAlg);
}

/** The integrity algorithm's hash and AuthCode length (§13.28.4). */
export function integrityParameters(integrityAlg: number): { hash: HashName; length: number } | undefined {
  if (integrityAlg === INTEGRITY_ALG.HMAC_SHA1_96) return { hash: 'sha1', length: 12 };
  if (integrityAlg === INTEGRITY_ALG.HMAC_SHA256_128) return { hash: 'sha256', length: 16 };
  return undefined;
}

/** Largest user password / Kg for IPMI v2.0 (§13.31: K_UID and K_G are 160 bits). */
export const MAX_KEY_BYTES = 20;

function hmac(hash: HashName, key: Buffer, ...parts: Buffer[]): Buffer {
  // A key shorter than the hash's block is zero-padded by HMAC itself (RFC 2104 §2), which is exactly the
  // spec's "password padded with 0s to 20 bytes" (§13.31), so the key goes in as given.
  const h = createHmac(hash, key);
  for (const p of parts) h.update(p);
  return h.digest();
}

function u8(n: number): Buffer {
  return Buffer.from([n]);
}

function checkLength(b: Buffer, n: number, what: string): void {
  if (!Buffer.isBuffer(b) || b.length !== n) throw new TypeError(`IPMI: ${what} must be ${n} bytes`);
}

function checkKey(key: Buffer, what: string): void {
  if (!Buffer.isBuffer(key) || key.length > MAX_KEY_BYTES) throw new TypeError(`IPMI: ${what} must be at most ${MAX_KEY_BYTES} bytes`);
}

export interface RakpParameters {
  /** SID_M: the remote console's session ID (ours). */
  consoleSessionId: number;
  /** SID_C: the managed system's session ID (the BMC's). */
  managedSessionId: number;
  /** R_M: 16 random bytes from the console (RAKP 1). */
  consoleRandom: Buffer;
  /** R_C: 16 random bytes from the BMC (RAKP 2). */
  managedRandom: Buffer;
  /** GUID_C: the BMC's GUID (RAKP 2), as sent. */
  managedGuid: Buffer;
  /** ROLE_M: the whole "requested maximum privilege" byte of RAKP 1, lookup bit included. */
  role: number;
  /** UNAME_M, as sent in RAKP 1 (0-16 bytes). */
  username: Buffer;
}

function checkRakp(p: Partial<RakpParameters>): void {
  if (p.consoleRandom !== undefined) checkLength(p.consoleRandom, 16, 'console random number');
  if (p.managedRandom !== undefined) checkLength(p.managedRandom, 16, 'managed system random number');
  if (p.managedGuid !== undefined) checkLength(p.managedGuid, 16, 'managed system GUID');
  if (p.username !== undefined && (!Buffer.isBuffer(p.username) || p.username.length > 16)) throw new TypeError('IPMI: user name must be at most 16 bytes');
}

/** RAKP 2 key exchange authentication code: HMAC_Kuid(SID_M, SID_C, R_M, R_C, GUID_C, ROLE_M, ULENGTH_M, UNAME_M) (§13.31). */
export function rakp2AuthCode(suite: CipherSuite, kuid: Buffer, p: RakpParameters): Buffer {
  checkKey(kuid, 'the password');
  checkRakp(p);
  return hmac(suite.hash, kuid, writeU32le(p.consoleSessionId), writeU32le(p.managedSessionId), p.consoleRandom, p.managedRandom, p.managedGuid,
    u8(p.role), u8(p.username.length), p.username);
}

/** RAKP 3 key exchange authentication code: HMAC_Kuid(R_C, SID_M, ROLE_M, ULENGTH_M, UNAME_M) (§13.31). */
export function rakp3AuthCode(suite: CipherSuite, kuid: Buffer, p: Pick<RakpParameters, 'managedRandom' | 'consoleSessionId' | 'role' | 'username'>): Buffer {
  checkKey(kuid, 'the password');
  checkRakp(p);
  return hmac(suite.hash, kuid, p.managedRandom, writeU32le(p.consoleSessionId), u8(p.role), u8(p.username.length), p.username);
}

/** Session integrity key: SIK = HMAC_KG(R_M, R_C, ROLE_M, ULENGTH_M, UNAME_M) (§13.31); K_G is K_UID when the BMC has no Kg. */
export function sessionIntegrityKey(suite: CipherSuite, kg: Buffer, p: Pick<RakpParameters, 'consoleRandom' | 'managedRandom' | 'role' | 'username'>): Buffer {
  checkKey(kg, 'Kg');
  checkRakp(p);
  return hmac(suite.hash, kg, p.consoleRandom, p.managedRandom, u8(p.role), u8(p.username.length), p.username);
}

/** RAKP 4 integrity check value: HMAC_SIK(R_M, SID_C, GUID_C), truncated to the suite's ICV length (§13.31). */
export function rakp4Icv(suite: CipherSuite, sik: Buffer, p: Pick<RakpParameters, 'consoleRandom' | 'managedSessionId' | 'managedGuid'>): Buffer {
  checkRakp(p);
  return hmac(suite.hash, sik, p.consoleRandom, writeU32le(p.managedSessionId), p.managedGuid).subarray(0, suite.rakp4IcvLength);
}

/**
 * Additional key generation (§13.32): K_N = HMAC_SIK(const_N), const_N being 20 bytes of N. K1 keys the
 * integrity AuthCode, the first 16 bytes of K2 are the AES key. The constants stay 20 bytes for SHA-256.
 */
export function additionalKey(suite: CipherSuite, sik: Buffer, n: 1 | 2 | 3): Buffer {
  return hmac(suite.hash, sik, Buffer.alloc(20, n));
}

export interface SessionKeys {
  sik: Buffer;
  /** Integrity key. */
  k1: Buffer;
  /** Confidentiality key material; AES-CBC-128 uses its first 16 bytes. */
  k2: Buffer;
}

export function deriveSessionKeys(suite: CipherSuite, kg: Buffer, p: RakpParameters): SessionKeys {
  const sik = sessionIntegrityKey(suite, kg, p);
  return { sik, k1: additionalKey(suite, sik, 1), k2: additionalKey(suite, sik, 2) };
}

/** The session trailer's AuthCode over `signed` (auth type through next header, §13.28.4), truncated per algorithm. */
export function integrityAuthCode(integrityAlg: number, k1: Buffer, signed: Buffer): Buffer {
  const p = integrityParameters(integrityAlg);
  if (p === undefined) throw new TypeError(`IPMI: integrity algorithm ${integrityAlg} is not supported`);
  return hmac(p.hash, k1, signed).subarray(0, p.length);
}

/** Constant-time comparison of two authentication codes (a length mismatch is simply false). */
export function codesEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

const AES_BLOCK = 16;

/**
 * AES-CBC-128 confidentiality (§13.29): IV (16 bytes) || AES-CBC(K2[0..16), IV, data || pad || pad length).
 * IPMI pads with the bytes 1, 2, 3, ... N and then N, so that the whole is a multiple of 16 (N < 16);
 * that is not PKCS#7, hence no automatic padding.
 */
export function encryptAesCbc128(plaintext: Buffer, k2: Buffer, iv: Buffer): Buffer {
  checkLength(iv, AES_BLOCK, 'the IV');
  if (!Buffer.isBuffer(k2) || k2.length < AES_BLOCK) throw new TypeError('IPMI: K2 must be at least 16 bytes');
  const padLength = (AES_BLOCK - ((plaintext.length + 1) % AES_BLOCK)) % AES_BLOCK;
  const trailer = Buffer.alloc(padLength + 1);
  for (let i = 0; i < padLength; i++) trailer[i] = i + 1;
  trailer[padLength] = padLength;
  const cipher = createCipheriv('aes-128-cbc', k2.subarray(0, AES_BLOCK), iv).setAutoPadding(false);
  return Buffer.concat([iv, cipher.update(plaintext), cipher.update(trailer), cipher.final()]);
}

/**
 * Reverses encryptAesCbc128. `offset` is where the payload starts in the packet (for error offsets). Throws
 * BMC_PROTOCOL when the length is not IV + whole blocks or the padding is not 1, 2, ... N, N with N < 16.
 */
export function decryptAesCbc128(payload: Buffer, k2: Buffer, offset = 0): Buffer {
  if (payload.length < 2 * AES_BLOCK || payload.length % AES_BLOCK !== 0) {
    throw ipmiDecodeError(offset, `encrypted payload of ${payload.length} bytes is not a 16-byte IV and whole 16-byte blocks`, { length: payload.length });
  }
  const iv = payload.subarray(0, AES_BLOCK);
  const decipher = createDecipheriv('aes-128-cbc', k2.subarray(0, AES_BLOCK), iv).setAutoPadding(false);
  const plain = Buffer.concat([decipher.update(payload.subarray(AES_BLOCK)), decipher.final()]);
  const padLength = plain[plain.length - 1]!;
  const padAt = offset + AES_BLOCK + plain.length - 1;
  if (padLength >= AES_BLOCK) throw ipmiDecodeError(padAt, `confidentiality pad length ${padLength} is not below 16`, { padLength });
  const end = plain.length - 1 - padLength;
  for (let i = 0; i < padLength; i++) {
    if (plain[end + i] !== i + 1) throw ipmiDecodeError(padAt - padLength + i, `confidentiality pad byte ${i + 1} is ${plain[end + i]}, not ${i + 1}`, { padLength });
  }
  return plain.subarray(0, end);
}
