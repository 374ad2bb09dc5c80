// Request and response bodies of the IPMI commands metalbox sends (the data after the command byte; a
// response's data here starts after the completion code). Decoders throw BMC_PROTOCOL with the offset in
// the data; extra bytes the spec allows for later revisions are ignored, missing required ones are errors.
import { PRIVILEGE } from './constants.ts';
import { ipmiDecodeError, ipmiReader, u16le, u24le, u32le, withBase, writeU32le } from './reader.ts';

function check(v: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new TypeError(`IPMI: ${what} must be an integer from 0 to ${max}, got ${v}`);
}

// --- Get Channel Authentication Capabilities (§22.13) -----------------------------------------------------

/** Channel 0Eh means "the channel this request arrives on". */
export const CURRENT_CHANNEL = 0x0e;

export function encodeGetChannelAuthCapabilities(r: { channel?: number; extended?: boolean; privilege: number }): Buffer {
  const channel = r.channel ?? CURRENT_CHANNEL;
  check(channel, 0x0f, 'channel');
  check(r.privilege, 0x0f, 'privilege');
  // Bit 7: "get IPMI v2.0+ extended data" (a v1.5-only BMC answers with an error; we need v2.0 anyway).
  return Buffer.from([(r.extended ?? true ? 0x80 : 0) | channel, r.privilege]);
}

export interface ChannelAuthCapabilities {
  channel: number;
  /** Bitmask of supported v1.5 auth types: bit 0 none, 1 MD2, 2 MD5, 4 straight password, 5 OEM. */
  authTypes: number;
  /** Bit 7 of byte 2: the extended capabilities byte below is meaningful. */
  extendedCapabilities: boolean;
  /** Kg is set to something other than the default all-zero value (two-key login needed). */
  kgSet: boolean;
  perMessageAuthDisabled: boolean;
  userLevelAuthDisabled: boolean;
  nonNullUsernames: boolean;
  nullUsernames: boolean;
  anonymousLogin: boolean;
  ipmi15: boolean;
  ipmi20: boolean;
  oemId: number;
  oemAuxiliary: number;
}

export function decodeChannelAuthCapabilities(data: Buffer, base = 0): ChannelAuthCapabilities {
  return withBase(base, () => {
    const r = ipmiReader(data, 'Get Channel Authentication Capabilities response');
    const channel = r.u8() & 0x0f;
    const b2 = r.u8();
    const b3 = r.u8();
    const b4 = r.u8();
    const oemId = u24le(r);
    const oemAuxiliary = r.u8();
    const extended = (b2 & 0x80) !== 0;
    return {
      channel,
      authTypes: b2 & 0x3f,
      extendedCapabilities: extended,
      kgSet: (b3 & 0x20) !== 0,
      perMessageAuthDisabled: (b3 & 0x10) !== 0,
      userLevelAuthDisabled: (b3 & 0x08) !== 0,
      nonNullUsernames: (b3 & 0x04) !== 0,
      nullUsernames: (b3 & 0x02) !== 0,
      anonymousLogin: (b3 & 0x01) !== 0,
      // A v1.5-only BMC has no byte-4 meaning: v1.5, not v2.0.
      ipmi15: extended ? (b4 & 0x01) !== 0 : true,
      ipmi20: extended && (b4 & 0x02) !== 0,
      oemId,
      oemAuxiliary,
    };
  });
}

// --- Set Session Privilege Level (§22.18), Close Session (§22.19) -------------------------------------------

export function encodeSetSessionPrivilege(privilege: number): Buffer {
  check(privilege, PRIVILEGE.OEM, 'privilege');
  return Buffer.from([privilege]);
}

export function decodeSetSessionPrivilege(data: Buffer, base = 0): { privilege: number } {
  return withBase(base, () => ({ privilege: ipmiReader(data, 'Set Session Privilege Level response').u8() & 0x0f }));
}

export function encodeCloseSession(sessionId: number): Buffer {
  return writeU32le(sessionId);
}

export function decodeCloseSessionRequest(data: Buffer, base = 0): { sessionId: number } {
  return withBase(base, () => ({ sessionId: u32le(ipmiReader(data, 'Close Session request')) }));
}

// --- Get Device ID (§20.1), Get System GUID (§22.14) --------------------------------------------------------

export interface DeviceId {
  deviceId: number;
  deviceRevision: number;
  providesSdrs: boolean;
  /** Bit 7 of firmware revision 1 set: firmware, SDR update or self-initialisation in progress. */
  updateInProgress: boolean;
  firmwareMajor: number;
  /** BCD, as sent (0x08 -> "08"). */
  firmwareMinor: number;
  /** "2.0", "1.5": BCD, low nibble major, high nibble minor (§20.1). */
  ipmiVersion: string;
  additionalSupport: number;
  /** IANA enterprise number, 20 bits. */
  manufacturerId: number;
  productId: number;
  auxFirmware?: Buffer;
}

export function decodeDeviceId(data: Buffer, base = 0): DeviceId {
  return withBase(base, () => {
    const r = ipmiReader(data, 'Get Device ID response');
    const deviceId = r.u8();
    const rev = r.u8();
    const fw1 = r.u8();
    const fw2 = r.u8();
    const version = r.u8();
    const additionalSupport = r.u8();
    const manufacturerId = u24le(r) & 0x0fffff;
    const productId = u16le(r);
    const auxFirmware = r.remaining >= 4 ? r.copy(4) : undefined;
    return {
      deviceId,
      deviceRevision: rev & 0x0f,
      providesSdrs: (rev & 0x80) !== 0,
      updateInProgress: (fw1 & 0x80) !== 0,
      firmwareMajor: fw1 & 0x7f,
      firmwareMinor: fw2,
      ipmiVersion: `${version & 0x0f}.${version >> 4}`,
      additionalSupport,
      manufacturerId,
      productId,
      ...(auxFirmware === undefined ? {} : { auxFirmware }),
    };
  });
}

/** "9.08": major in decimal, minor as its two BCD digits. */
export function firmwareVersion(d: DeviceId): string {
  return `${d.firmwareMajor}.${d.firmwareMinor.toString(16).padStart(2, '0')}`;
}

export function decodeSystemGuid(data: Buffer, base = 0): Buffer {
  return withBase(base, () => ipmiReader(data, 'Get System GUID response').copy(16));
}

/**
 * The GUID as a UUID string. §22.14 sends it least significant byte first (byte 1 = node[0] ... byte 16 =
 * time_low's top byte), so the canonical text is the 16 bytes reversed.
 */
export function guidToUuid(guid: Buffer): string {
  if (guid.length !== 16) throw new TypeError('IPMI: a GUID is 16 bytes');
  const h = Buffer.from(guid).reverse().toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// --- Chassis (§28) ------------------------------------------------------------------------------------------

export const RESTORE_POLICIES = ['always-off', 'previous', 'always-on', 'unknown'] as const;
export const IDENTIFY_STATES = ['off', 'temporary', 'indefinite', 'reserved'] as const;

export interface ChassisStatus {
  powerOn: boolean;
  powerOverload: boolean;
  interlock: boolean;
  powerFault: boolean;
  powerControlFault: boolean;
  restorePolicy: (typeof RESTORE_POLICIES)[number];
  lastPowerEvent: number;
  intrusion: boolean;
  frontPanelLockout: boolean;
  driveFault: boolean;
  fanFault: boolean;
  /** Only when the BMC says it reports it (misc bit 6). */
  identify?: (typeof IDENTIFY_STATES)[number];
  frontPanelButtons?: number;
}

/** Get Chassis Status (§28.2): current power state, last power event, misc chassis state, [front panel]. */
export function decodeChassisStatus(data: Buffer, base = 0): ChassisStatus {
  return withBase(base, () => {
    const r = ipmiReader(data, 'Get Chassis Status response');
    const power = r.u8();
    const lastPowerEvent = r.u8();
    const misc = r.u8();
    const frontPanelButtons = r.remaining > 0 ? r.u8() : undefined;
    return {
      powerOn: (power & 0x01) !== 0,
      powerOverload: (power & 0x02) !== 0,
      interlock: (power & 0x04) !== 0,
      powerFault: (power & 0x08) !== 0,
      powerControlFault: (power & 0x10) !== 0,
      restorePolicy: RESTORE_POLICIES[(power >> 5) & 3]!,
      lastPowerEvent,
      intrusion: (misc & 0x01) !== 0,
      frontPanelLockout: (misc & 0x02) !== 0,
      driveFault: (misc & 0x04) !== 0,
      fanFault: (misc & 0x08) !== 0,
      ...((misc & 0x40) !== 0 ? { identify: IDENTIFY_STATES[(misc >> 4) & 3]! } : {}),
      ...(frontPanelButtons === undefined ? {} : { frontPanelButtons }),
    };
  });
}

/** Chassis Control (§28.3) data byte values. */
export const CHASSIS_CONTROL = {
  POWER_DOWN: 0x00,
  POWER_UP: 0x01,
  POWER_CYCLE: 0x02,
  HARD_RESET: 0x03,
  PULSE_DIAGNOSTIC_INTERRUPT: 0x04,
  /** "Initiate a soft-shutdown of OS via ACPI by emulating a fatal overtemperature." */
  SOFT_SHUTDOWN: 0x05,
} as const;
export const CHASSIS_CONTROL_NAMES: Record<number, string> = { 0: 'power down', 1: 'power up', 2: 'power cycle', 3: 'hard reset', 4: 'pulse diagnostic interrupt', 5: 'soft shutdown' };

export function encodeChassisControl(control: number): Buffer {
  check(control, CHASSIS_CONTROL.SOFT_SHUTDOWN, 'chassis control');
  return Buffer.from([control]);
}

/** Chassis Identify (§28.5): interval in seconds (0 = off), and byte 2 bit 0 to force it on indefinitely. */
export function encodeChassisIdentify(seconds: number, forceOn = false): Buffer {
  check(seconds, 0xff, 'identify interval');
  return forceOn ? Buffer.from([seconds, 0x01]) : Buffer.from([seconds]);
}

// --- System boot options (§28.12, §28.13; parameter 5 "boot flags", table 28-14) ---------------------------

export const BOOT_PARAMETER = { SET_IN_PROGRESS: 0, SERVICE_PARTITION_SELECTOR: 1, BOOT_FLAG_VALID_BIT_CLEARING: 3, BOOT_INFO_ACKNOWLEDGE: 4, BOOT_FLAGS: 5 } as const;

/** Boot device selector, boot flags data 2 bits 5:2 (table 28-14). */
export const BOOT_DEVICE = {
  NONE: 0x0,
  PXE: 0x1,
  DISK: 0x2,
  DISK_SAFE_MODE: 0x3,
  DIAGNOSTIC_PARTITION: 0x4,
  CD_DVD: 0x5,
  BIOS_SETUP: 0x6,
  REMOTE_FLOPPY: 0x7,
  REMOTE_CD_DVD: 0x8,
  PRIMARY_REMOTE_MEDIA: 0x9,
  REMOTE_DISK: 0xb,
  FLOPPY: 0xf,
} as const;
export const BOOT_DEVICE_NAMES: Record<number, string> = {
  0x0: 'no override', 0x1: 'PXE', 0x2: 'default hard drive', 0x3: 'default hard drive, safe mode', 0x4: 'diagnostic partition',
  0x5: 'CD/DVD', 0x6: 'BIOS setup', 0x7: 'remote floppy/removable', 0x8: 'remote CD/DVD', 0x9: 'primary remote media',
  0xb: 'remote hard drive', 0xf: 'floppy/removable',
};

export interface BootFlags {
  /** Data 1 bit 7: the flags are valid (the BIOS acts on them). */
  valid: boolean;
  /** Data 1 bit 6: for every following boot, not only the next one. */
  persistent: boolean;
  /** Data 1 bit 5: EFI boot instead of PC-compatible (legacy). */
  efi: boolean;
  /** Data 2 bits 5:2. */
  device: number;
  /** The other bits of data 2 (CMOS clear, keyboard lock, screen blank, reset lockout) and data 3-5, kept as sent. */
  data2Other: number;
  data3: number;
  data4: number;
  data5: number;
}

function bootFlagBytes(f: Pick<BootFlags, 'valid' | 'persistent' | 'efi' | 'device'> & Partial<BootFlags>): Buffer {
  check(f.device, 0x0f, 'boot device selector');
  const d1 = (f.valid ? 0x80 : 0) | (f.persistent ? 0x40 : 0) | (f.efi ? 0x20 : 0);
  const d2 = (f.device << 2) | ((f.data2Other ?? 0) & 0xc3);
  return Buffer.from([d1, d2, f.data3 ?? 0, f.data4 ?? 0, f.data5 ?? 0]);
}

/**
 * Set System Boot Options, parameter 5 (boot flags). Byte 1 is the parameter selector with bit 7 clear
 * ("mark parameter valid"/unlocked); then the five data bytes.
 */
export function encodeSetBootFlags(f: Pick<BootFlags, 'valid' | 'persistent' | 'efi' | 'device'> & Partial<BootFlags>): Buffer {
  return Buffer.concat([Buffer.from([BOOT_PARAMETER.BOOT_FLAGS]), bootFlagBytes(f)]);
}

function decodeBootFlagData(r: ReturnType<typeof ipmiReader>): BootFlags {
  const d1 = r.u8();
  const d2 = r.u8();
  const d3 = r.u8();
  const d4 = r.u8();
  const d5 = r.u8();
  return { valid: (d1 & 0x80) !== 0, persistent: (d1 & 0x40) !== 0, efi: (d1 & 0x20) !== 0, device: (d2 >> 2) & 0x0f, data2Other: d2 & 0xc3, data3: d3, data4: d4, data5: d5 };
}

export interface SetBootOptionsRequest {
  parameter: number;
  /** Selector bit 7: 1 = mark the parameter invalid/locked. */
  markInvalid: boolean;
  data: Buffer;
  /** Decoded when parameter is 5 and the data is long enough. */
  bootFlags?: BootFlags;
}

/** The request side of Set System Boot Options (test peers and golden dumps). */
export function decodeSetBootOptionsRequest(data: Buffer, base = 0): SetBootOptionsRequest {
  return withBase(base, () => {
    const r = ipmiReader(data, 'Set System Boot Options request');
    const selector = r.u8();
    const parameter = selector & 0x7f;
    const rest = r.copy(r.remaining);
    if (parameter !== BOOT_PARAMETER.BOOT_FLAGS) return { parameter, markInvalid: (selector & 0x80) !== 0, data: rest };
    const flags = decodeBootFlagData(ipmiReader(data, 'boot flags', 1));
    return { parameter, markInvalid: (selector & 0x80) !== 0, data: rest, bootFlags: flags };
  });
}

export function encodeGetBootOptions(parameter: number, setSelector = 0, blockSelector = 0): Buffer {
  check(parameter, 0x7f, 'boot parameter');
  return Buffer.from([parameter, setSelector, blockSelector]);
}

export interface BootOptionsResponse {
  version: number;
  parameter: number;
  /** Bit 7 of byte 2: the parameter is marked invalid / locked. */
  invalid: boolean;
  data: Buffer;
  bootFlags?: BootFlags;
}

/** Get System Boot Options response (§28.13): parameter version, valid bit + selector, data. */
export function decodeGetBootOptions(data: Buffer, base = 0): BootOptionsResponse {
  return withBase(base, () => {
    const r = ipmiReader(data, 'Get System Boot Options response');
    const version = r.u8() & 0x0f;
    const selector = r.u8();
    const parameter = selector & 0x7f;
    const rest = r.copy(r.remaining);
    const out: BootOptionsResponse = { version, parameter, invalid: (selector & 0x80) !== 0, data: rest };
    if (parameter === BOOT_PARAMETER.BOOT_FLAGS) {
      if (rest.length < 5) throw ipmiDecodeError(2 + rest.length, `boot flags carry ${rest.length} byte(s), not 5`, { length: rest.length });
      out.bootFlags = decodeBootFlagData(ipmiReader(data, 'boot flags', 2));
    }
    return out;
  });
}
