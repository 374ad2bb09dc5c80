// The IPMI message inside a LAN session packet (§13.8, figure 13-4; checksums §13.8 and §5.5): two
// addresses, network function and LUNs, sequence number, command, data, and two 2's-complement checksums.
// A request and a response have the same layout; an odd network function marks the response, whose first
// data byte is the completion code.
import { ByteWriter } from '../../lib/bytes.ts';
import { BMC_SLAVE_ADDRESS, REMOTE_CONSOLE_SWID } from './constants.ts';
import { ipmiDecodeError } from './reader.ts';

export interface IpmiRequest {
  kind: 'request';
  /** Responder: the BMC's slave address 0x20. */
  rsAddr: number;
  rsLun: number;
  netFn: number;
  /** Requester: the remote console's software ID 0x81. */
  rqAddr: number;
  rqLun: number;
  /** 6 bits, chosen by the requester and echoed in the response. */
  rqSeq: number;
  cmd: number;
  data: Buffer;
}

export interface IpmiResponse {
  kind: 'response';
  rqAddr: number;
  rqLun: number;
  /** The request's network function + 1. */
  netFn: number;
  rsAddr: number;
  rsLun: number;
  rqSeq: number;
  cmd: number;
  completionCode: number;
  /** The data after the completion code. */
  data: Buffer;
}

export type IpmiMessage = IpmiRequest | IpmiResponse;

/** 2's complement checksum: the byte that makes the sum of the range plus itself 0 mod 256 (§13.8). */
export function ipmiChecksum(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum = (sum + bytes[i]!) & 0xff;
  return (0x100 - sum) & 0xff;
}

const HEADER = 6;

/**
 * Decodes an IPMI LAN message. `base` is its offset in the packet (for error offsets). Throws BMC_PROTOCOL
 * for fewer than 7 bytes (8 for a response: the completion code) or a wrong checksum.
 */
export function decodeIpmiMessage(buf: Buffer, base = 0): IpmiMessage {
  if (buf.length < HEADER + 1) throw ipmiDecodeError(base + buf.length, `IPMI message truncated: ${buf.length} byte(s), at least 7 needed`, { length: buf.length });
  if (ipmiChecksum(buf, 0, 2) !== buf[2]) throw ipmiDecodeError(base + 2, `IPMI header checksum is 0x${buf[2]!.toString(16)}, expected 0x${ipmiChecksum(buf, 0, 2).toString(16)}`);
  const last = buf.length - 1;
  if (ipmiChecksum(buf, 3, last) !== buf[last]) throw ipmiDecodeError(base + last, `IPMI data checksum is 0x${buf[last]!.toString(16)}, expected 0x${ipmiChecksum(buf, 3, last).toString(16)}`);
  const netFn = buf[1]! >> 2;
  const lun1 = buf[1]! & 3;
  const seq = buf[4]! >> 2;
  const lun2 = buf[4]! & 3;
  const cmd = buf[5]!;
  if ((netFn & 1) === 0) {
    return { kind: 'request', rsAddr: buf[0]!, rsLun: lun1, netFn, rqAddr: buf[3]!, rqLun: lun2, rqSeq: seq, cmd, data: buf.subarray(HEADER, last) };
  }
  if (buf.length < HEADER + 2) throw ipmiDecodeError(base + HEADER, 'IPMI response has no completion code', { length: buf.length });
  return { kind: 'response', rqAddr: buf[0]!, rqLun: lun1, netFn, rsAddr: buf[3]!, rsLun: lun2, rqSeq: seq, cmd, completionCode: buf[HEADER]!, data: buf.subarray(HEADER + 1, last) };
}

function check(v: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new TypeError(`IPMI: ${what} must be an integer from 0 to ${max}, got ${v}`);
}

function frame(a1: number, netFn: number, lun1: number, a2: number, seq: number, lun2: number, cmd: number, body: Buffer[]): Buffer {
  check(a1, 0xff, 'address');
  check(a2, 0xff, 'address');
  check(netFn, 0x3f, 'netFn');
  check(lun1, 3, 'LUN');
  check(lun2, 3, 'LUN');
  check(seq, 0x3f, 'rqSeq');
  check(cmd, 0xff, 'cmd');
  const w = new ByteWriter(8 + body.reduce((n, b) => n + b.length, 0));
  w.u8(a1).u8((netFn << 2) | lun1);
  w.u8(ipmiChecksum(w.toBuffer(), 0, 2));
  w.u8(a2).u8((seq << 2) | lun2).u8(cmd);
  for (const b of body) w.bytes(b);
  w.u8(ipmiChecksum(w.toBuffer(), 3, w.length));
  return Buffer.from(w.toBuffer());
}

/** A request from the remote console (0x81, LUN 0) to the BMC (0x20, LUN 0) unless told otherwise. */
export function encodeIpmiRequest(m: { netFn: number; cmd: number; rqSeq: number; data?: Buffer; rsAddr?: number; rsLun?: number; rqAddr?: number; rqLun?: number }): Buffer {
  if ((m.netFn & 1) !== 0) throw new TypeError(`IPMI: request netFn 0x${m.netFn.toString(16)} is odd (a response's)`);
  return frame(m.rsAddr ?? BMC_SLAVE_ADDRESS, m.netFn, m.rsLun ?? 0, m.rqAddr ?? REMOTE_CONSOLE_SWID, m.rqSeq, m.rqLun ?? 0, m.cmd, [m.data ?? Buffer.alloc(0)]);
}

/** A response (the BMC's side: test peers and round trips). `netFn` is the response's (odd) one. */
export function encodeIpmiResponse(m: { netFn: number; cmd: number; rqSeq: number; completionCode: number; data?: Buffer; rqAddr?: number; rqLun?: number; rsAddr?: number; rsLun?: number }): Buffer {
  if ((m.netFn & 1) !== 1) throw new TypeError(`IPMI: response netFn 0x${m.netFn.toString(16)} is even (a request's)`);
  check(m.completionCode, 0xff, 'completion code');
  return frame(m.rqAddr ?? REMOTE_CONSOLE_SWID, m.netFn, m.rqLun ?? 0, m.rsAddr ?? BMC_SLAVE_ADDRESS, m.rqSeq, m.rsLun ?? 0, m.cmd, [Buffer.from([m.completionCode]), m.data ?? Buffer.alloc(0)]);
}
