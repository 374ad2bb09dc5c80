// The framing of IPMI over LAN: the RMCP header (§13.1.3, ASF 2.0 §3.2.2), ASF presence ping/pong (ASF 2.0
// §3.2.4.3), the IPMI v1.5 session wrapper (§13.6; used here only before a session, for Get Channel
// Authentication Capabilities) and the IPMI v2.0 / RMCP+ session wrapper with its integrity trailer
// (§13.6, §13.28.4). Pure: Buffer <-> values; the caller supplies keys, and the payload of an encrypted
// packet stays ciphertext here (crypto.ts decrypts it).
import { ByteWriter } from '../../lib/bytes.ts';
import { ASF, AUTH_TYPE, NEXT_HEADER, PAYLOAD_AUTHENTICATED, PAYLOAD_ENCRYPTED, PAYLOAD_TYPE, RMCP } from './constants.ts';
import { integrityAuthCode, integrityParameters } from './crypto.ts';
import { ipmiDecodeError, ipmiReader, u16le, u32le, writeU16le, writeU32le } from './reader.ts';

/** An ASF message in an RMCP class-6 packet. */
export interface AsfPacket {
  kind: 'asf';
  /** RMCP sequence number (0xff: no RMCP ACK wanted). */
  rmcpSequence: number;
  /** IANA enterprise number of the message (4542 for ASF's own). */
  iana: number;
  /** 0x80 presence ping, 0x40 presence pong, others kept as numbers. */
  messageType: number;
  /** Chosen by the pinger, echoed in the pong. */
  tag: number;
  data: Buffer;
}

/** An IPMI v1.5 session packet (auth type none, MD2, MD5, straight password or OEM). */
export interface Ipmi15Packet {
  kind: 'ipmi15';
  authType: number;
  sequence: number;
  sessionId: number;
  /** 16 bytes, present unless authType is none. */
  authCode?: Buffer;
  /** The IPMI LAN message (message.ts decodes it). */
  message: Buffer;
}

/** The integrity trailer of an authenticated RMCP+ packet (§13.28.4). */
export interface RmcpPlusTrailer {
  padLength: number;
  nextHeader: number;
  authCode: Buffer;
  /** The bytes the AuthCode covers: from the auth type through the next header (a view of the packet). */
  signed: Buffer;
}

/** An IPMI v2.0 / RMCP+ session packet. */
export interface RmcpPlusPacket {
  kind: 'rmcp+';
  /** The low six bits of the payload type byte (PAYLOAD_TYPE). */
  payloadType: number;
  encrypted: boolean;
  authenticated: boolean;
  /** Only for payload type 2, OEM explicit. */
  oem?: { iana: number; payloadId: number };
  sessionId: number;
  sequence: number;
  /** As on the wire: ciphertext (IV first) when encrypted. A view of the packet. */
  payload: Buffer;
  /** Where the payload starts in the packet (for error offsets of later decoding). */
  payloadOffset: number;
  trailer?: RmcpPlusTrailer;
}

export type IpmiPacket = AsfPacket | Ipmi15Packet | RmcpPlusPacket;

export interface DecodeOptions {
  /**
   * The AuthCode length of the session's integrity algorithm. Without it, the trailer of an authenticated
   * packet is located by the spec's rule that the signed range is a multiple of 4 bytes (§13.28.4); with it,
   * any pad length the BMC chose is accepted as long as the trailer is consistent.
   */
  authCodeLength?: number;
}

const RMCP_HEADER = 4;
const MAX_IPMI15_MESSAGE = 255;

/**
 * Decodes one RMCP datagram: ASF (class 6) or IPMI (class 7, v1.5 or RMCP+ session). Throws MetalboxError
 * BMC_PROTOCOL with `details.offset` for anything malformed: a bad RMCP version, an RMCP ACK, an unknown
 * class, a length that overruns the datagram, bytes left over, an inconsistent integrity trailer.
 */
export function decodeIpmiPacket(buf: Buffer, options: DecodeOptions = {}): IpmiPacket {
  const r = ipmiReader(buf, 'RMCP packet');
  const version = r.u8();
  if (version !== RMCP.VERSION) throw ipmiDecodeError(0, `RMCP version 0x${version.toString(16)} is not 0x06 (RMCP 1.0)`, { version });
  r.skip(1); // reserved
  const rmcpSequence = r.u8();
  const klass = r.u8();
  if ((klass & RMCP.CLASS_ACK) !== 0) throw ipmiDecodeError(3, 'RMCP ACK messages are not used by IPMI', { class: klass });
  if (klass === RMCP.CLASS_ASF) {
    const iana = r.u32();
    const messageType = r.u8();
    const tag = r.u8();
    r.skip(1); // reserved
    const length = r.u8();
    const data = r.bytes(length);
    if (!r.atEnd()) throw ipmiDecodeError(r.offset, `${r.remaining} byte(s) after the ASF message`, { extra: r.remaining });
    return { kind: 'asf', rmcpSequence, iana, messageType, tag, data };
  }
  if (klass !== RMCP.CLASS_IPMI) throw ipmiDecodeError(3, `RMCP class 0x${klass.toString(16)} is neither ASF (6) nor IPMI (7)`, { class: klass });
  // IPMI packets carry RMCP sequence 0xff (§13.1.3); we accept others, as BMCs ignore the field.
  const authType = r.peekU8();
  if (authType === AUTH_TYPE.RMCP_PLUS) return decodeRmcpPlus(buf, options);

  r.skip(1);
  if (![AUTH_TYPE.NONE, AUTH_TYPE.MD2, AUTH_TYPE.MD5, AUTH_TYPE.STRAIGHT, AUTH_TYPE.OEM].includes(authType as 0)) {
    throw ipmiDecodeError(RMCP_HEADER, `unknown session authentication type 0x${authType.toString(16)}`, { authType });
  }
  const sequence = u32le(r);
  const sessionId = u32le(r);
  const authCode = authType === AUTH_TYPE.NONE ? undefined : r.copy(16);
  const length = r.u8();
  const message = r.bytes(length);
  // QUIRK(bmc): §13.6 lets v1.5 senders add one legacy pad byte (0) after some message lengths.
  if (r.remaining > 1 || (r.remaining === 1 && buf[r.offset] !== 0)) {
    throw ipmiDecodeError(r.offset, `${r.remaining} byte(s) after the IPMI v1.5 message`, { extra: r.remaining });
  }
  return { kind: 'ipmi15', authType, sequence, sessionId, ...(authCode === undefined ? {} : { authCode }), message };
}

function decodeRmcpPlus(buf: Buffer, options: DecodeOptions): RmcpPlusPacket {
  const r = ipmiReader(buf, 'RMCP+ session header', RMCP_HEADER);
  r.skip(1); // auth type 0x06
  const typeByte = r.u8();
  const payloadType = typeByte & 0x3f;
  const encrypted = (typeByte & PAYLOAD_ENCRYPTED) !== 0;
  const authenticated = (typeByte & PAYLOAD_AUTHENTICATED) !== 0;
  let oem: RmcpPlusPacket['oem'];
  if (payloadType === PAYLOAD_TYPE.OEM_EXPLICIT) oem = { iana: u32le(r), payloadId: u16le(r) };
  const sessionId = u32le(r);
  const sequence = u32le(r);
  const lengthAt = r.offset;
  const length = u16le(r);
  const payloadOffset = r.offset;
  if (length > r.remaining) throw ipmiDecodeError(lengthAt, `payload length ${length} overruns the packet (${r.remaining} byte(s) left)`, { length, available: r.remaining });
  const payload = r.bytes(length);
  const packet: RmcpPlusPacket = { kind: 'rmcp+', payloadType, encrypted, authenticated, ...(oem === undefined ? {} : { oem }), sessionId, sequence, payload, payloadOffset };
  if (!authenticated) {
    if (!r.atEnd()) throw ipmiDecodeError(r.offset, `${r.remaining} byte(s) after the payload of an unauthenticated packet`, { extra: r.remaining });
    return packet;
  }
  // §13.28.4: integrity pad (FFh bytes), pad length, next header (07h), AuthCode.
  const payloadEnd = r.offset;
  const trailing = r.remaining;
  let padLength: number;
  let codeLength: number;
  if (options.authCodeLength !== undefined) {
    codeLength = options.authCodeLength;
    if (trailing < codeLength + 2) throw ipmiDecodeError(payloadEnd, `integrity trailer truncated: ${trailing} byte(s) for a ${codeLength}-byte AuthCode`, { trailing });
    padLength = buf[buf.length - codeLength - 2]!;
    if (payloadEnd + padLength + 2 + codeLength !== buf.length) {
      throw ipmiDecodeError(buf.length - codeLength - 2, `integrity pad length ${padLength} does not match the ${trailing - codeLength - 2} byte(s) of pad`, { padLength });
    }
  } else {
    const signedWithoutPad = buf.length - RMCP_HEADER - trailing + 2;
    padLength = (4 - (signedWithoutPad % 4)) % 4;
    codeLength = trailing - padLength - 2;
    if (codeLength < 0) throw ipmiDecodeError(payloadEnd, `integrity trailer truncated: ${trailing} byte(s)`, { trailing });
    if (buf[payloadEnd + padLength] !== padLength) {
      throw ipmiDecodeError(payloadEnd + padLength, `integrity pad length is ${buf[payloadEnd + padLength]}, the 4-byte alignment needs ${padLength}`, { padLength });
    }
  }
  const nextHeaderAt = payloadEnd + padLength + 1;
  const nextHeader = buf[nextHeaderAt]!;
  if (nextHeader !== NEXT_HEADER) throw ipmiDecodeError(nextHeaderAt, `next header is 0x${nextHeader.toString(16)}, not 0x07`, { nextHeader });
  const codeAt = nextHeaderAt + 1;
  packet.trailer = { padLength, nextHeader, authCode: buf.subarray(codeAt, codeAt + codeLength), signed: buf.subarray(RMCP_HEADER, codeAt) };
  return packet;
}

function rmcpHeader(w: ByteWriter, klass: number): void {
  w.u8(RMCP.VERSION).u8(0).u8(RMCP.SEQUENCE_NO_ACK).u8(klass);
}

/** An ASF presence ping (ASF 2.0 §3.2.4.3): RMCP class 6, IANA 4542, type 0x80, the caller's tag, no data. */
export function encodeAsfPing(tag: number): Buffer {
  return encodeAsf({ messageType: ASF.PRESENCE_PING, tag, data: Buffer.alloc(0) });
}

export function encodeAsf(m: { iana?: number; messageType: number; tag: number; data: Buffer }): Buffer {
  if (m.data.length > 255) throw new TypeError('IPMI: ASF data is at most 255 bytes');
  const w = new ByteWriter(12 + m.data.length);
  rmcpHeader(w, RMCP.CLASS_ASF);
  w.u32(m.iana ?? ASF.IANA).u8(m.messageType).u8(m.tag).u8(0).u8(m.data.length).bytes(m.data);
  return Buffer.from(w.toBuffer());
}

export interface AsfPong {
  /** IANA enterprise number of the responder's OEM (4542 when none). */
  iana: number;
  oemDefined: number;
  /** Supported entities byte: bit 7 = IPMI supported, bits 3:0 = ASF version (1 = 1.0). */
  entities: number;
  /** Supported interactions byte: bit 5 = RMCP security extensions. */
  interactions: number;
  ipmi: boolean;
  asfVersion: number;
  securityExtensions: boolean;
}

/** The data of a presence pong (ASF 2.0 §3.2.4.3, 16 bytes). */
export function decodeAsfPong(p: AsfPacket): AsfPong {
  if (p.messageType !== ASF.PRESENCE_PONG) throw ipmiDecodeError(8, `ASF message type 0x${p.messageType.toString(16)} is not a presence pong`, { messageType: p.messageType });
  if (p.data.length < 10) throw ipmiDecodeError(12, `presence pong carries ${p.data.length} bytes, not 16`, { length: p.data.length });
  const d = p.data;
  const entities = d[8]!;
  const interactions = d[9]!;
  return {
    iana: d.readUInt32BE(0),
    oemDefined: d.readUInt32BE(4),
    entities,
    interactions,
    ipmi: (entities & 0x80) !== 0,
    asfVersion: entities & 0x0f,
    securityExtensions: (interactions & 0x20) !== 0,
  };
}

/** An IPMI v1.5 session packet with auth type none (§13.6): what is sent before any session exists. */
export function encodeIpmi15(p: { sequence?: number; sessionId?: number; message: Buffer }): Buffer {
  if (p.message.length > MAX_IPMI15_MESSAGE) throw new TypeError('IPMI: a v1.5 message is at most 255 bytes');
  const w = new ByteWriter(14 + p.message.length);
  rmcpHeader(w, RMCP.CLASS_IPMI);
  w.u8(AUTH_TYPE.NONE).bytes(writeU32le(p.sequence ?? 0)).bytes(writeU32le(p.sessionId ?? 0)).u8(p.message.length).bytes(p.message);
  return Buffer.from(w.toBuffer());
}

export interface RmcpPlusEncodeInput {
  payloadType: number;
  sessionId: number;
  sequence: number;
  /** As it goes on the wire: already encrypted (IV first) when `encrypted`. */
  payload: Buffer;
  encrypted?: boolean;
  oem?: { iana: number; payloadId: number };
  /** Adds the integrity trailer and sets the authenticated bit. */
  integrity?: { algorithm: number; k1: Buffer };
}

/** An IPMI v2.0 / RMCP+ session packet (§13.6), with the integrity trailer when `integrity` is given (§13.28.4). */
export function encodeRmcpPlus(p: RmcpPlusEncodeInput): Buffer {
  if (!Number.isInteger(p.payloadType) || p.payloadType < 0 || p.payloadType > 0x3f) throw new TypeError(`IPMI: payload type ${p.payloadType} is not 6 bits`);
  if ((p.payloadType === PAYLOAD_TYPE.OEM_EXPLICIT) !== (p.oem !== undefined)) throw new TypeError('IPMI: OEM IANA and payload ID go with payload type 2 only');
  if (p.integrity !== undefined && integrityParameters(p.integrity.algorithm) === undefined) throw new TypeError(`IPMI: integrity algorithm ${p.integrity.algorithm} is not supported`);
  const w = new ByteWriter(32 + p.payload.length);
  rmcpHeader(w, RMCP.CLASS_IPMI);
  const typeByte = p.payloadType | (p.encrypted === true ? PAYLOAD_ENCRYPTED : 0) | (p.integrity !== undefined ? PAYLOAD_AUTHENTICATED : 0);
  w.u8(AUTH_TYPE.RMCP_PLUS).u8(typeByte);
  if (p.oem !== undefined) w.bytes(writeU32le(p.oem.iana)).bytes(writeU16le(p.oem.payloadId));
  w.bytes(writeU32le(p.sessionId)).bytes(writeU32le(p.sequence)).bytes(writeU16le(p.payload.length)).bytes(p.payload);
  if (p.integrity === undefined) return Buffer.from(w.toBuffer());
  // The signed range (auth type .. next header) must be a multiple of 4 bytes; the pad bytes are FFh.
  const signedWithoutPad = w.length - RMCP_HEADER + 2;
  const padLength = (4 - (signedWithoutPad % 4)) % 4;
  for (let i = 0; i < padLength; i++) w.u8(0xff);
  w.u8(padLength).u8(NEXT_HEADER);
  const signed = w.toBuffer().subarray(RMCP_HEADER);
  const code = integrityAuthCode(p.integrity.algorithm, p.integrity.k1, signed);
  w.bytes(code);
  return Buffer.from(w.toBuffer());
}
