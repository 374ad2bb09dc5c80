// RMCP+ session setup payloads (§13.17-§13.23): Open Session Request/Response and RAKP messages 1-4.
// Session IDs are little-endian like every IPMI LAN field; random numbers, GUIDs and codes are byte strings
// kept exactly as sent. The key exchange codes themselves are computed in crypto.ts.
import { ByteWriter } from '../../lib/bytes.ts';
import { ipmiDecodeError, ipmiReader, u32le, withBase, writeU32le } from './reader.ts';

/** One algorithm proposal in an Open Session message (§13.17, table 13-9): 8 bytes. */
const PAYLOAD_RECORD = { AUTHENTICATION: 0x00, INTEGRITY: 0x01, CONFIDENTIALITY: 0x02 } as const;

export interface OpenSessionRequest {
  tag: number;
  /** Requested maximum privilege (low 4 bits); 0 = the highest the proposed algorithms allow. */
  privilege: number;
  consoleSessionId: number;
  authAlg: number;
  integrityAlg: number;
  confidentialityAlg: number;
}

export interface OpenSessionResponse {
  tag: number;
  /** RMCP+ status code (RMCP_PLUS_STATUS); 0 = success. */
  status: number;
  /** Maximum privilege level granted (low 4 bits). Absent only in a short error response. */
  privilege?: number;
  /** Absent only in a short error response. */
  consoleSessionId?: number;
  /** The rest is present only on success (a BMC may end the message after the console session ID on error). */
  managedSessionId?: number;
  authAlg?: number;
  integrityAlg?: number;
  confidentialityAlg?: number;
}

export interface Rakp1 {
  tag: number;
  managedSessionId: number;
  /** R_M, 16 bytes. */
  consoleRandom: Buffer;
  /** The whole byte: privilege in bits 3:0, bit 4 = name-only lookup. The key codes use it as is. */
  role: number;
  /** 0-16 bytes. */
  username: Buffer;
}

export interface Rakp2 {
  tag: number;
  status: number;
  /** Absent only in a short error response. */
  consoleSessionId?: number;
  /** On success only: R_C, the BMC's GUID and the key exchange authentication code. */
  managedRandom?: Buffer;
  managedGuid?: Buffer;
  authCode?: Buffer;
}

export interface Rakp3 {
  tag: number;
  status: number;
  /** Absent only in a short error message. */
  managedSessionId?: number;
  /** Absent when status is not 0 (§13.22). */
  authCode: Buffer;
}

export interface Rakp4 {
  tag: number;
  status: number;
  /** Absent only in a short error response. */
  consoleSessionId?: number;
  /** Integrity check value (HMAC-SHA1-96 or HMAC-SHA256-128); absent on error. */
  icv: Buffer;
}

/**
 * QUIRK(ipmi_sim): an error response may end right after its status byte (ipmi_sim 2.0.33 answers a refused
 * cipher suite with just the tag and status). With a non-zero status, a body that ends before `need` more
 * bytes is accepted as short.
 */
function shortError(r: ReturnType<typeof ipmiReader>, status: number, need: number): boolean {
  return status !== 0 && r.remaining < need;
}

function check(v: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new TypeError(`IPMI: ${what} must be an integer from 0 to ${max}, got ${v}`);
}

function writeRecord(w: ByteWriter, type: number, alg: number): void {
  check(alg, 0x3f, 'algorithm');
  w.u8(type).u8(0).u8(0).u8(8).u8(alg).u8(0).u8(0).u8(0);
}

function readRecord(r: ReturnType<typeof ipmiReader>, type: number, what: string): number {
  const at = r.offset;
  const t = r.u8();
  if (t !== type) throw ipmiDecodeError(at, `${what} payload type is 0x${t.toString(16)}, expected 0x${type.toString(16)}`, { payloadType: t });
  r.skip(2);
  const length = r.u8();
  // 08h, or 00h for a "null" record that lets the BMC choose (§13.17).
  if (length !== 8 && length !== 0) throw ipmiDecodeError(at + 3, `${what} payload length is ${length}, not 8`, { length });
  const alg = r.u8() & 0x3f;
  r.skip(3);
  return alg;
}

export function encodeOpenSessionRequest(m: OpenSessionRequest): Buffer {
  check(m.tag, 0xff, 'message tag');
  check(m.privilege, 0x0f, 'privilege');
  const w = new ByteWriter(32);
  w.u8(m.tag).u8(m.privilege).u8(0).u8(0).bytes(writeU32le(m.consoleSessionId));
  writeRecord(w, PAYLOAD_RECORD.AUTHENTICATION, m.authAlg);
  writeRecord(w, PAYLOAD_RECORD.INTEGRITY, m.integrityAlg);
  writeRecord(w, PAYLOAD_RECORD.CONFIDENTIALITY, m.confidentialityAlg);
  return Buffer.from(w.toBuffer());
}

export function decodeOpenSessionRequest(buf: Buffer, base = 0): OpenSessionRequest {
  return withBase(base, () => {
    const r = ipmiReader(buf, 'Open Session Request');
    const tag = r.u8();
    const privilege = r.u8() & 0x0f;
    r.skip(2);
    const consoleSessionId = u32le(r);
    const authAlg = readRecord(r, PAYLOAD_RECORD.AUTHENTICATION, 'authentication');
    const integrityAlg = readRecord(r, PAYLOAD_RECORD.INTEGRITY, 'integrity');
    const confidentialityAlg = readRecord(r, PAYLOAD_RECORD.CONFIDENTIALITY, 'confidentiality');
    if (!r.atEnd()) throw ipmiDecodeError(r.offset, `${r.remaining} byte(s) after the Open Session Request`);
    return { tag, privilege, consoleSessionId, authAlg, integrityAlg, confidentialityAlg };
  });
}

export function encodeOpenSessionResponse(m: OpenSessionResponse): Buffer {
  check(m.tag, 0xff, 'message tag');
  check(m.status, 0xff, 'status');
  const w = new ByteWriter(36);
  w.u8(m.tag).u8(m.status);
  if (m.consoleSessionId === undefined) return Buffer.from(w.toBuffer());
  w.u8(m.privilege ?? 0).u8(0).bytes(writeU32le(m.consoleSessionId));
  if (m.managedSessionId !== undefined) {
    w.bytes(writeU32le(m.managedSessionId));
    writeRecord(w, PAYLOAD_RECORD.AUTHENTICATION, m.authAlg ?? 0);
    writeRecord(w, PAYLOAD_RECORD.INTEGRITY, m.integrityAlg ?? 0);
    writeRecord(w, PAYLOAD_RECORD.CONFIDENTIALITY, m.confidentialityAlg ?? 0);
  }
  return Buffer.from(w.toBuffer());
}

export function decodeOpenSessionResponse(buf: Buffer, base = 0): OpenSessionResponse {
  return withBase(base, () => {
    const r = ipmiReader(buf, 'Open Session Response');
    const tag = r.u8();
    const status = r.u8();
    if (shortError(r, status, 6)) return { tag, status };
    const privilege = r.u8() & 0x0f;
    r.skip(1);
    const consoleSessionId = u32le(r);
    if (shortError(r, status, 28)) return { tag, status, privilege, consoleSessionId };
    const managedSessionId = u32le(r);
    const authAlg = readRecord(r, PAYLOAD_RECORD.AUTHENTICATION, 'authentication');
    const integrityAlg = readRecord(r, PAYLOAD_RECORD.INTEGRITY, 'integrity');
    const confidentialityAlg = readRecord(r, PAYLOAD_RECORD.CONFIDENTIALITY, 'confidentiality');
    if (!r.atEnd()) throw ipmiDecodeError(r.offset, `${r.remaining} byte(s) after the Open Session Response`);
    return { tag, status, privilege, consoleSessionId, managedSessionId, authAlg, integrityAlg, confidentialityAlg };
  });
}

export function encodeRakp1(m: Rakp1): Buffer {
  check(m.tag, 0xff, 'message tag');
  check(m.role, 0xff, 'role');
  if (m.consoleRandom.length !== 16) throw new TypeError('IPMI: the console random number must be 16 bytes');
  if (m.username.length > 16) throw new TypeError('IPMI: the user name must be at most 16 bytes');
  const w = new ByteWriter(28 + m.username.length);
  w.u8(m.tag).u8(0).u8(0).u8(0).bytes(writeU32le(m.managedSessionId)).bytes(m.consoleRandom).u8(m.role).u8(0).u8(0).u8(m.username.length).bytes(m.username);
  return Buffer.from(w.toBuffer());
}

export function decodeRakp1(buf: Buffer, base = 0): Rakp1 {
  return withBase(base, () => {
    const r = ipmiReader(buf, 'RAKP message 1');
    const tag = r.u8();
    r.skip(3);
    const managedSessionId = u32le(r);
    const consoleRandom = r.copy(16);
    const role = r.u8();
    r.skip(2);
    const lengthAt = r.offset;
    const length = r.u8();
    if (length > 16) throw ipmiDecodeError(lengthAt, `user name length ${length} is over 16`, { length });
    const username = r.copy(length);
    if (!r.atEnd()) throw ipmiDecodeError(r.offset, `${r.remaining} byte(s) after RAKP message 1`);
    return { tag, managedSessionId, consoleRandom, role, username };
  });
}

export function encodeRakp2(m: Rakp2): Buffer {
  check(m.tag, 0xff, 'message tag');
  check(m.status, 0xff, 'status');
  const w = new ByteWriter(72);
  w.u8(m.tag).u8(m.status);
  if (m.consoleSessionId === undefined) return Buffer.from(w.toBuffer());
  w.u8(0).u8(0).bytes(writeU32le(m.consoleSessionId));
  if (m.managedRandom !== undefined) {
    if (m.managedRandom.length !== 16 || m.managedGuid?.length !== 16) throw new TypeError('IPMI: RAKP 2 random number and GUID must be 16 bytes each');
    w.bytes(m.managedRandom).bytes(m.managedGuid).bytes(m.authCode ?? Buffer.alloc(0));
  }
  return Buffer.from(w.toBuffer());
}

/**
 * RAKP 2 (§13.21). `codeLength` is the key exchange authentication code length of the proposed
 * authentication algorithm (20 for HMAC-SHA1, 32 for HMAC-SHA256); the message must end right after it.
 */
export function decodeRakp2(buf: Buffer, codeLength: number, base = 0): Rakp2 {
  return withBase(base, () => {
    const r = ipmiReader(buf, 'RAKP message 2');
    const tag = r.u8();
    const status = r.u8();
    if (shortError(r, status, 6)) return { tag, status };
    r.skip(2);
    const consoleSessionId = u32le(r);
    if (shortError(r, status, 32 + codeLength)) return { tag, status, consoleSessionId };
    const managedRandom = r.copy(16);
    const managedGuid = r.copy(16);
    const authCode = r.copy(codeLength);
    if (!r.atEnd()) throw ipmiDecodeError(r.offset, `${r.remaining} byte(s) after RAKP message 2's ${codeLength}-byte authentication code`);
    return { tag, status, consoleSessionId, managedRandom, managedGuid, authCode };
  });
}

export function encodeRakp3(m: Rakp3): Buffer {
  check(m.tag, 0xff, 'message tag');
  check(m.status, 0xff, 'status');
  const w = new ByteWriter(8 + m.authCode.length);
  w.u8(m.tag).u8(m.status);
  if (m.managedSessionId === undefined) return Buffer.from(w.toBuffer());
  w.u8(0).u8(0).bytes(writeU32le(m.managedSessionId)).bytes(m.authCode);
  return Buffer.from(w.toBuffer());
}

/** RAKP 3 (§13.22): whatever follows the managed session ID is the authentication code. */
export function decodeRakp3(buf: Buffer, base = 0): Rakp3 {
  return withBase(base, () => {
    const r = ipmiReader(buf, 'RAKP message 3');
    const tag = r.u8();
    const status = r.u8();
    if (shortError(r, status, 6)) return { tag, status, authCode: Buffer.alloc(0) };
    r.skip(2);
    const managedSessionId = u32le(r);
    return { tag, status, managedSessionId, authCode: r.copy(r.remaining) };
  });
}

export function encodeRakp4(m: Rakp4): Buffer {
  check(m.tag, 0xff, 'message tag');
  check(m.status, 0xff, 'status');
  const w = new ByteWriter(8 + m.icv.length);
  w.u8(m.tag).u8(m.status);
  if (m.consoleSessionId === undefined) return Buffer.from(w.toBuffer());
  w.u8(0).u8(0).bytes(writeU32le(m.consoleSessionId)).bytes(m.icv);
  return Buffer.from(w.toBuffer());
}

/** RAKP 4 (§13.23): the integrity check value follows the console session ID (none on error). */
export function decodeRakp4(buf: Buffer, base = 0): Rakp4 {
  return withBase(base, () => {
    const r = ipmiReader(buf, 'RAKP message 4');
    const tag = r.u8();
    const status = r.u8();
    if (shortError(r, status, 6)) return { tag, status, icv: Buffer.alloc(0) };
    r.skip(2);
    const consoleSessionId = u32le(r);
    return { tag, status, consoleSessionId, icv: r.copy(r.remaining) };
  });
}

