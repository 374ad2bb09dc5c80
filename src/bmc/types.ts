// The one interface every BMC driver implements (IPMI over LAN, Redfish, Wake-on-LAN, manual).
// Drivers speak to one BMC each and hold no policy: "power on of a running machine does nothing",
// one session per BMC, the global concurrency cap, events and retries live in the BMC service
// (src/services/bmc). A driver throws MetalboxError with one of BMC_ERROR_CODES and a message a human
// can act on; it never puts a password in a message, a log line or `details`.

export type PowerState = 'on' | 'off' | 'unknown';

/** What power actions mean here (the same words in the API, the CLI and events). */
export const POWER_ACTIONS = ['on', 'off', 'soft-off', 'cycle', 'reset'] as const;
export type PowerAction = (typeof POWER_ACTIONS)[number];

export type BootDevice = 'pxe' | 'disk';

export interface BootDeviceRequest {
  device: BootDevice;
  /** Keep it for every following boot (else the next boot only). */
  persistent: boolean;
  /** Ask for a UEFI boot (IPMI boot flags bit 5; Redfish BootSourceOverrideMode UEFI). */
  efi: boolean;
}

export interface BmcInfo {
  /** Vendor or manufacturer id as the BMC reports it. */
  manufacturer?: string;
  model?: string;
  firmwareVersion?: string;
  /** IPMI version, Redfish version: what was spoken. */
  protocolVersion?: string;
  /** System GUID/UUID when the BMC gives it. */
  systemUuid?: string;
  [extra: string]: unknown;
}

/** Where and how to reach a BMC. Secrets arrive decrypted, only in memory, and only to the driver. */
export interface BmcEndpoint {
  /** 'ipmi' | 'redfish' | 'wol' | 'manual' */
  driver: string;
  /** Host or IPv4 address (ipmi, redfish); the machine's MAC for wol. */
  address: string;
  port?: number;
  username?: string;
  password?: string;
  /** IPMI: cipher suite (3 = HMAC-SHA1/AES-128, 17 = HMAC-SHA256/AES-128). */
  cipherSuite?: number;
  /** IPMI: BMC key Kg, hex; absent = use the user's password (the usual case). */
  kg?: string;
  /** Redfish: SHA-256 fingerprint of the certificate pinned at enrolment, "AB:CD:..." upper hex. */
  tlsFingerprint?: string;
  /** Redfish: the ComputerSystem to drive when the service has several; default the first. */
  systemId?: string;
}

/**
 * One BMC. Methods reject with MetalboxError BMC_AUTH_FAILED, BMC_TIMEOUT, BMC_UNREACHABLE,
 * BMC_UNSUPPORTED (this BMC or driver cannot do that, e.g. status over Wake-on-LAN), BMC_PROTOCOL (the BMC
 * answered something malformed or a completion code that is an error) or BMC_TLS_MISMATCH (Redfish: the
 * certificate is not the pinned one). `signal` aborts a call (BMC_TIMEOUT with reason aborted).
 */
export interface BmcDriver {
  readonly kind: string;
  powerStatus(signal?: AbortSignal): Promise<PowerState>;
  /** Executes exactly the action asked; deciding not to act (on while on) is the service's job. */
  power(action: PowerAction, signal?: AbortSignal): Promise<void>;
  setBootDevice(request: BootDeviceRequest, signal?: AbortSignal): Promise<void>;
  /** Chassis identify LED for `seconds` (0 = off). */
  identify(seconds: number, signal?: AbortSignal): Promise<void>;
  info(signal?: AbortSignal): Promise<BmcInfo>;
  /** Ends any session and frees sockets; idempotent. */
  close(): Promise<void>;
}
