// The IPMI commands the agent sends to its machine's own BMC (src/agent/bmc.ts), as pure codecs: request data
// in, response data (after the completion code) out. Section numbers are IPMI v2.0 rev 1.1's. A response
// shorter than its fixed part is refused (AGENT_BMC_COMMAND_FAILED) before any byte is read.

import { NETFN } from '../protocols/ipmi/constants.ts';
import { AgentError } from './errors.ts';

/** App (§22) and Transport (§23) commands, table G-1. */
export const BMC_CMD = {
  GET_CHANNEL_INFO: { netfn: NETFN.APP, cmd: 0x42, name: 'Get Channel Info' },
  SET_USER_ACCESS: { netfn: NETFN.APP, cmd: 0x43, name: 'Set User Access' },
  GET_USER_ACCESS: { netfn: NETFN.APP, cmd: 0x44, name: 'Get User Access' },
  SET_USER_NAME: { netfn: NETFN.APP, cmd: 0x45, name: 'Set User Name' },
  GET_USER_NAME: { netfn: NETFN.APP, cmd: 0x46, name: 'Get User Name' },
  SET_USER_PASSWORD: { netfn: NETFN.APP, cmd: 0x47, name: 'Set User Password' },
  GET_LAN_CONFIG: { netfn: NETFN.TRANSPORT, cmd: 0x02, name: 'Get LAN Configuration Parameters' },
} as const;
export type BmcCommand = (typeof BMC_CMD)[keyof typeof BMC_CMD];

/** Channel medium types (§6.5, table 6-3). */
export const MEDIUM_802_3_LAN = 0x04;
/** LAN configuration parameters (§23.2, table 23-4). */
export const LAN_PARAM = { IP_ADDRESS: 3, IP_ADDRESS_SOURCE: 4 } as const;
/** IP Address Source values (§23.2, parameter 4, bits 3:0). */
export const ADDRESS_SOURCES = ['unspecified', 'static', 'dhcp', 'bios', 'other'] as const;
export type AddressSource = (typeof ADDRESS_SOURCES)[number];
/** Set User Password operations (§22.30, byte 2 bits 1:0). */
export const PASSWORD_OP = { DISABLE_USER: 0, ENABLE_USER: 1, SET_PASSWORD: 2, TEST_PASSWORD: 3 } as const;
/** User names are 16 bytes, NUL-padded (§22.28); passwords 16 or, with the 20-byte form, 20 (§22.30). */
export const USER_NAME_BYTES = 16;
export const PASSWORD_BYTES_20 = 20;
export const PASSWORD_BYTES_16 = 16;

function need(cmd: BmcCommand, data: Buffer, bytes: number): void {
  if (data.length < bytes) {
    throw new AgentError('AGENT_BMC_COMMAND_FAILED', `${cmd.name}: the BMC answered ${data.length} data bytes, expected at least ${bytes}`);
  }
}

/** §22.24 Get Channel Info request: the channel number (0x0E would be "this channel"). */
export function encodeGetChannelInfo(channel: number): Buffer {
  return Buffer.from([channel & 0x0f]);
}

export interface ChannelInfo { channel: number; medium: number; protocol: number }

export function decodeChannelInfo(data: Buffer): ChannelInfo {
  need(BMC_CMD.GET_CHANNEL_INFO, data, 3);
  return { channel: data[0]! & 0x0f, medium: data[1]! & 0x7f, protocol: data[2]! & 0x1f };
}

/** §23.2 Get LAN Configuration Parameters request: channel (bit 7 clear: the value, not only the revision), parameter, set and block selectors. */
export function encodeGetLanConfig(channel: number, parameter: number): Buffer {
  return Buffer.from([channel & 0x0f, parameter, 0x00, 0x00]);
}

/** The IP address (parameter 3): revision byte, then 4 bytes in network order. */
export function decodeLanAddress(data: Buffer): string {
  need(BMC_CMD.GET_LAN_CONFIG, data, 5);
  return [...data.subarray(1, 5)].join('.');
}

/** The IP address source (parameter 4): revision byte, then the source in bits 3:0. */
export function decodeLanAddressSource(data: Buffer): AddressSource {
  need(BMC_CMD.GET_LAN_CONFIG, data, 2);
  return ADDRESS_SOURCES[data[1]! & 0x0f] ?? 'other';
}

/** §22.27 Get User Access request: channel, user id. */
export function encodeGetUserAccess(channel: number, userId: number): Buffer {
  return Buffer.from([channel & 0x0f, userId & 0x3f]);
}

export interface UserAccess {
  /** Highest user id the BMC has (bits 5:0). */
  maxUsers: number;
  enabledUsers: number;
  /** User ids 1..fixedNames have names that cannot be changed (bits 5:0). */
  fixedNames: number;
  /** This user on this channel: IPMI messaging enabled (bit 4), privilege limit (bits 3:0). */
  ipmiMessaging: boolean;
  linkAuth: boolean;
  callbackOnly: boolean;
  privilege: number;
}

export function decodeUserAccess(data: Buffer): UserAccess {
  need(BMC_CMD.GET_USER_ACCESS, data, 4);
  const access = data[3]!;
  return {
    maxUsers: data[0]! & 0x3f,
    enabledUsers: data[1]! & 0x3f,
    fixedNames: data[2]! & 0x3f,
    callbackOnly: (access & 0x40) !== 0,
    linkAuth: (access & 0x20) !== 0,
    ipmiMessaging: (access & 0x10) !== 0,
    privilege: access & 0x0f,
  };
}

/** §22.29 Get User Name request: the user id. */
export function encodeGetUserName(userId: number): Buffer {
  return Buffer.from([userId & 0x3f]);
}

/** The 16-byte name, up to its first NUL; undefined for an empty slot. */
export function decodeUserName(data: Buffer): string | undefined {
  need(BMC_CMD.GET_USER_NAME, data, USER_NAME_BYTES);
  const raw = data.subarray(0, USER_NAME_BYTES);
  const end = raw.indexOf(0);
  const name = raw.subarray(0, end < 0 ? USER_NAME_BYTES : end).toString('latin1');
  return name === '' ? undefined : name;
}

/** §22.28 Set User Name request: user id, the name NUL-padded to 16 bytes. */
export function encodeSetUserName(userId: number, name: string): Buffer {
  const bytes = Buffer.from(name, 'latin1');
  if (bytes.length === 0 || bytes.length > USER_NAME_BYTES) throw new TypeError(`a user name is 1-${USER_NAME_BYTES} bytes`);
  const out = Buffer.alloc(1 + USER_NAME_BYTES);
  out[0] = userId & 0x3f;
  bytes.copy(out, 1);
  return out;
}

/**
 * §22.30 Set User Password request. Byte 1: bit 7 selects the 20-byte password form, bits 5:0 the user id;
 * byte 2: the operation; then the password NUL-padded to 16 or 20 bytes (set and test only).
 */
export function encodeSetUserPassword(userId: number, op: number, password?: { text: string; bytes: 16 | 20 }): Buffer {
  if (password === undefined) return Buffer.from([userId & 0x3f, op & 0x03]);
  const pw = Buffer.from(password.text, 'latin1');
  if (pw.length > password.bytes) throw new TypeError(`the password is longer than ${password.bytes} bytes`);
  const out = Buffer.alloc(2 + password.bytes);
  out[0] = (password.bytes === PASSWORD_BYTES_20 ? 0x80 : 0) | (userId & 0x3f);
  out[1] = op & 0x03;
  pw.copy(out, 2);
  return out;
}

/**
 * §22.26 Set User Access request. Byte 1: bit 7 "change the bits below", bit 6 callback only, bit 5 link
 * authentication, bit 4 IPMI messaging, bits 3:0 channel; byte 2 the user id; byte 3 the privilege limit.
 * The optional byte 4 (session limit) is left out: the BMC keeps its own.
 */
export function encodeSetUserAccess(channel: number, userId: number, a: { ipmiMessaging: boolean; linkAuth: boolean; callbackOnly: boolean; privilege: number }): Buffer {
  return Buffer.from([
    0x80 | (a.callbackOnly ? 0x40 : 0) | (a.linkAuth ? 0x20 : 0) | (a.ipmiMessaging ? 0x10 : 0) | (channel & 0x0f),
    userId & 0x3f,
    a.privilege & 0x0f,
  ]);
}
