// Numbers from the IPMI v2.0 specification (rev 1.1 with errata) and DMTF DSP0136 (ASF 2.0, for the
// RMCP presence ping). Section numbers in comments are the IPMI spec's unless said otherwise.

/** RMCP header (ASF 2.0 §3.2.2.1; IPMI §13.1.3). */
export const RMCP = {
  VERSION: 0x06,
  /** "No RMCP ACK": IPMI messages never use RMCP-level acknowledgement (§13.1.3). */
  SEQUENCE_NO_ACK: 0xff,
  CLASS_ASF: 0x06,
  CLASS_IPMI: 0x07,
  /** Bit 7 of the class byte marks an RMCP ACK. */
  CLASS_ACK: 0x80,
} as const;

/** ASF messages carried by RMCP class 6 (DSP0136 §3.2.4). */
export const ASF = {
  /** The ASF IANA enterprise number, 4542 (0x000011BE), big-endian on the wire. */
  IANA: 4542,
  PRESENCE_PING: 0x80,
  PRESENCE_PONG: 0x40,
} as const;

/** Session header authentication type (§13.6, table 13-8; 0x06 = RMCP+ format, §13.6). */
export const AUTH_TYPE = { NONE: 0x00, MD2: 0x01, MD5: 0x02, STRAIGHT: 0x04, OEM: 0x05, RMCP_PLUS: 0x06 } as const;

/** RMCP+ payload types (§13.27.3, table 13-16), in the low six bits of the payload type byte. */
export const PAYLOAD_TYPE = {
  IPMI: 0x00,
  SOL: 0x01,
  OEM_EXPLICIT: 0x02,
  OPEN_SESSION_REQUEST: 0x10,
  OPEN_SESSION_RESPONSE: 0x11,
  RAKP1: 0x12,
  RAKP2: 0x13,
  RAKP3: 0x14,
  RAKP4: 0x15,
} as const;
/** Payload type byte bits (§13.6). */
export const PAYLOAD_ENCRYPTED = 0x80;
export const PAYLOAD_AUTHENTICATED = 0x40;

/** Integrity trailer "next header" value (§13.28.4): always 07h. */
export const NEXT_HEADER = 0x07;

/** Network function codes of requests (§5.1, table 5-1); the response's is one more. */
export const NETFN = { CHASSIS: 0x00, BRIDGE: 0x02, SENSOR: 0x04, APP: 0x06, FIRMWARE: 0x08, STORAGE: 0x0a, TRANSPORT: 0x0c } as const;

/** App commands (§20, §22; table G-1). */
export const APP_CMD = {
  GET_DEVICE_ID: 0x01,
  GET_SYSTEM_GUID: 0x37,
  GET_CHANNEL_AUTH_CAPABILITIES: 0x38,
  SET_SESSION_PRIVILEGE_LEVEL: 0x3b,
  CLOSE_SESSION: 0x3c,
  GET_CHANNEL_CIPHER_SUITES: 0x54,
} as const;

/** Chassis commands (§28). */
export const CHASSIS_CMD = {
  GET_CHASSIS_CAPABILITIES: 0x00,
  GET_CHASSIS_STATUS: 0x01,
  CHASSIS_CONTROL: 0x02,
  CHASSIS_IDENTIFY: 0x04,
  SET_SYSTEM_BOOT_OPTIONS: 0x08,
  GET_SYSTEM_BOOT_OPTIONS: 0x09,
} as const;

/** Addresses on the LAN channel (§5.5, §13.8): the BMC's slave address and the remote console's software ID. */
export const BMC_SLAVE_ADDRESS = 0x20;
export const REMOTE_CONSOLE_SWID = 0x81;

/** Privilege levels (§6.8; table 22-20 for the encoding). */
export const PRIVILEGE = { HIGHEST: 0x00, CALLBACK: 0x01, USER: 0x02, OPERATOR: 0x03, ADMINISTRATOR: 0x04, OEM: 0x05 } as const;
export const PRIVILEGE_NAMES: Record<number, string> = { 0: 'highest', 1: 'callback', 2: 'user', 3: 'operator', 4: 'administrator', 5: 'oem' };

/** RAKP message 1 "requested maximum privilege" bit 4: look the user up by name only (§13.20). */
export const RAKP_NAME_ONLY_LOOKUP = 0x10;

/** Authentication, integrity and confidentiality algorithm numbers (§13.28, tables 13-17 to 13-19). */
export const AUTH_ALG = { NONE: 0x00, HMAC_SHA1: 0x01, HMAC_MD5: 0x02, HMAC_SHA256: 0x03 } as const;
export const INTEGRITY_ALG = { NONE: 0x00, HMAC_SHA1_96: 0x01, HMAC_MD5_128: 0x02, MD5_128: 0x03, HMAC_SHA256_128: 0x04 } as const;
export const CONFIDENTIALITY_ALG = { NONE: 0x00, AES_CBC_128: 0x01, XRC4_128: 0x02, XRC4_40: 0x03 } as const;

export const AUTH_ALG_NAMES: Record<number, string> = { 0: 'RAKP-none', 1: 'RAKP-HMAC-SHA1', 2: 'RAKP-HMAC-MD5', 3: 'RAKP-HMAC-SHA256' };
export const INTEGRITY_ALG_NAMES: Record<number, string> = { 0: 'none', 1: 'HMAC-SHA1-96', 2: 'HMAC-MD5-128', 3: 'MD5-128', 4: 'HMAC-SHA256-128' };
export const CONFIDENTIALITY_ALG_NAMES: Record<number, string> = { 0: 'none', 1: 'AES-CBC-128', 2: 'xRC4-128', 3: 'xRC4-40' };

/** RMCP+ and RAKP message status codes (§13.24, table 13-15). */
export const RMCP_PLUS_STATUS: Record<number, string> = {
  0x00: 'no errors',
  0x01: 'insufficient resources to create a session',
  0x02: 'invalid session ID',
  0x03: 'invalid payload type',
  0x04: 'invalid authentication algorithm',
  0x05: 'invalid integrity algorithm',
  0x06: 'no matching authentication payload',
  0x07: 'no matching integrity payload',
  0x08: 'inactive session ID',
  0x09: 'invalid role',
  0x0a: 'unauthorized role or privilege level requested',
  0x0b: 'insufficient resources to create a session at the requested role',
  0x0c: 'invalid name length',
  0x0d: 'unauthorized name',
  0x0e: 'unauthorized GUID',
  0x0f: 'invalid integrity check value',
  0x10: 'invalid confidentiality algorithm',
  0x11: 'no cipher suite match with proposed security algorithms',
  0x12: 'illegal or unrecognized parameter',
};

/** Generic completion codes (§5.2, table 5-2). 0x80-0xBE are command-specific. */
export const COMPLETION_CODES: Record<number, string> = {
  0x00: 'command completed normally',
  0xc0: 'node busy',
  0xc1: 'invalid command',
  0xc2: 'command invalid for given LUN',
  0xc3: 'timeout while processing command',
  0xc4: 'out of space',
  0xc5: 'reservation cancelled or invalid reservation ID',
  0xc6: 'request data truncated',
  0xc7: 'request data length invalid',
  0xc8: 'request data field length limit exceeded',
  0xc9: 'parameter out of range',
  0xca: 'cannot return number of requested data bytes',
  0xcb: 'requested sensor, data, or record not present',
  0xcc: 'invalid data field in request',
  0xcd: 'command illegal for specified sensor or record type',
  0xce: 'command response could not be provided',
  0xcf: 'cannot execute duplicated request',
  0xd0: 'SDR repository in update mode',
  0xd1: 'device in firmware update mode',
  0xd2: 'BMC initialization or initialization agent in progress',
  0xd3: 'destination unavailable',
  0xd4: 'insufficient privilege level',
  0xd5: 'command not supported in present state',
  0xd6: 'command sub-function disabled or unavailable',
  0xff: 'unspecified error',
};

/** A completion code as text: its meaning, or "command-specific 0x81". */
export function completionCodeText(cc: number): string {
  return COMPLETION_CODES[cc] ?? (cc >= 0x80 && cc <= 0xbe ? `command-specific 0x${hex2(cc)}` : `0x${hex2(cc)}`);
}

export function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}
