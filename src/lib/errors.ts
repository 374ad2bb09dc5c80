// One error class for the whole project. The `code` is the stable contract (callers, the API and the
// README's error table key on it); the message is for humans and may change.

/** Every stable error code, with the HTTP status the API maps it to and a one-line meaning (README table). */
export const ERROR_CODES = {
  CONFIG_INVALID: { status: 400, meaning: 'the configuration does not match the schema; the message names the key path and the reason' },
  CONFIG_UNREADABLE: { status: 400, meaning: 'the configuration file cannot be read or is not valid YAML' },
  CLI_USAGE: { status: 400, meaning: 'unknown command, flag or missing argument on the command line' },
  STATE_DIR_UNUSABLE: { status: 500, meaning: 'the state directory cannot be created, read or written' },
  STATE_DIR_LOCKED: { status: 409, meaning: 'another metalbox process holds the state directory' },
  STORE_CORRUPT: { status: 500, meaning: 'the LevelDB store cannot be opened because its files are damaged' },
  STORE_TOO_NEW: { status: 500, meaning: 'the store was written by a newer metalbox whose schema this one does not know' },
  STORE_CONFLICT: { status: 409, meaning: 'a write would break a unique index (for example two machines with one MAC)' },
  STORE_CLOSED: { status: 503, meaning: 'the store is closed or closing' },
  STORE_WRITE_FAILED: { status: 503, meaning: 'the store could not make a write durable (disk full, I/O error); nothing was acknowledged' },
  STORE_DISK_FULL: { status: 503, meaning: 'the state file system is under its free-space reserve (store.reserveMiB): writes are refused until there is room; reads go on' },
  BACKUP_INVALID: { status: 400, meaning: 'a backup file is truncated, corrupt or not a metalbox backup' },
  BACKUP_WRITE_FAILED: { status: 500, meaning: 'the backup file could not be written (no space, no permission); nothing partial is left behind' },
  RESTORE_TARGET_NOT_EMPTY: { status: 409, meaning: 'restore only loads into an empty state directory' },
  ADDON_LOAD_FAILED: { status: 500, meaning: 'a native addon embedded in the binary could not be written or loaded' },
  SERVICE_START_FAILED: { status: 500, meaning: 'a service could not start (for example its port is taken)' },
  CONTROL_UNAVAILABLE: { status: 503, meaning: 'the running metalbox did not answer on its control socket' },
  DHCP_TRUNCATED: { status: 400, meaning: 'a DHCP packet is shorter than its fixed header or than a length it declares' },
  DHCP_BAD_COOKIE: { status: 400, meaning: 'a DHCP packet lacks the magic cookie 99.130.83.99' },
  DHCP_OPTION_OVERRUN: { status: 400, meaning: 'a DHCP option runs past the end of its field' },
  DHCP_BAD_OPTION: { status: 400, meaning: 'a DHCP option has a length or content its type does not allow' },
  DHCP_BAD_OVERLOAD: { status: 400, meaning: 'option 52 (overload) is invalid, repeated or appears inside an overloaded field' },
  DHCP_BAD_HEADER: { status: 400, meaning: 'a DHCP header field is impossible (op, hlen)' },
  DHCP_POOL_EXHAUSTED: { status: 503, meaning: 'a subnet has no free address for a new client' },
  TFTP_TRUNCATED: { status: 400, meaning: 'a TFTP packet is shorter than its fixed fields, or a string in it lacks its NUL terminator' },
  TFTP_BAD_OPCODE: { status: 400, meaning: 'a TFTP packet has an opcode outside 1-6 (RFC 1350, RFC 2347)' },
  TFTP_BAD_REQUEST: { status: 400, meaning: 'a TFTP read or write request has an empty file name or mode' },
  TFTP_BAD_OPTION: { status: 400, meaning: 'a TFTP option has an empty name, no value, or appears twice (RFC 2347)' },
  TFTP_OVERSIZE: { status: 400, meaning: 'a TFTP packet is longer than its type allows: DATA over 65464 bytes (RFC 2348), bytes after an ACK or an ERROR message' },
  TFTP_PATH_REFUSED: { status: 403, meaning: 'a TFTP file name is refused: "..", absolute, backslash, NUL or control byte, over 255 bytes, or it resolves outside the root' },
  TFTP_READ_FAILED: { status: 500, meaning: 'a file served by TFTP could not be opened or read (I/O error, permission)' },
  NTP_TRUNCATED: { status: 400, meaning: 'an NTP packet is shorter than the 48-byte header (RFC 5905 §7.3)' },
  NTP_BAD_VERSION: { status: 400, meaning: 'an NTP packet has version 0 or above 4' },
  NTP_BAD_MODE: { status: 400, meaning: 'an NTP packet has mode 0 (reserved), 6 (control) or 7 (private): not a time packet, never answered' },
  NTP_BAD_EXTENSION: { status: 400, meaning: 'what follows an NTP header is neither extension fields (RFC 7822: length a multiple of 4, at least 16, inside the packet) nor a MAC' },
  DNS_TRUNCATED: { status: 400, meaning: 'a DNS message is shorter than its header, or a name, question or record runs past its end (a count larger than what follows)' },
  DNS_BAD_POINTER: { status: 400, meaning: 'a DNS compression pointer does not point backwards (to itself, forward, or in a loop: RFC 9267)' },
  DNS_BAD_LABEL: { status: 400, meaning: 'a DNS name holds a label of an undefined type (0x40, 0x80: RFC 6891 §5)' },
  DNS_NAME_TOO_LONG: { status: 400, meaning: 'a DNS name is longer than 255 octets (RFC 1035 §2.3.4)' },
  DNS_BAD_RDATA: { status: 400, meaning: 'DNS record data does not fit its type or its RDLENGTH (an A of 5 octets, a name or TXT string past the end)' },
  DNS_BAD_OPT: { status: 400, meaning: 'a DNS OPT record is repeated, not owned by the root, outside the additional section, or its options overrun (RFC 6891 §6.1.1)' },
  DNS_TRAILING_DATA: { status: 400, meaning: 'a DNS message has octets after the last record its counts announce' },
  SOCKET_OPEN_FAILED: { status: 500, meaning: 'a device-bound UDP socket could not be opened (no such interface, port taken, no privilege)' },
  SOCKET_SEND_FAILED: { status: 500, meaning: 'a datagram could not be sent' },
  IMAGE_EXISTS: { status: 409, meaning: 'a boot image with that name is already registered; remove it first' },
  IMAGE_INVALID: { status: 400, meaning: 'a boot image definition is unusable: bad name, missing kernel or initrd, bad kernel command line or checksum' },
  ASSET_SOURCE_UNREADABLE: { status: 400, meaning: 'a local file given for a boot image cannot be opened or read' },
  ASSET_FETCH_FAILED: { status: 502, meaning: 'a boot image URL could not be fetched (network error, non-2xx answer, too many redirects, no data for 60 s, cancelled)' },
  ASSET_INCOMPLETE: { status: 502, meaning: 'a download ended before (or ran past) the length the server announced; nothing was stored' },
  ASSET_TOO_LARGE: { status: 413, meaning: 'a boot image file is larger than boot.maxAssetBytes' },
  ASSET_CHECKSUM_MISMATCH: { status: 422, meaning: 'a boot image file does not have the sha256 it was given with (#sha256=...); nothing was stored' },
  ASSET_WRITE_FAILED: { status: 500, meaning: 'the asset store could not write or sync a file (disk full, I/O error); nothing was registered' },
  UPLOAD_NOT_FOUND: { status: 404, meaning: 'an image names an upload that does not exist: never made, expired (an hour unused), already used, or made before a restart' },
  UPLOAD_CONTENT_TYPE: { status: 415, meaning: 'an upload (POST /api/v1/uploads) is not sent as application/octet-stream' },
  UPLOAD_INCOMPLETE: { status: 400, meaning: 'an upload ended before its body did (the client went away); nothing was kept' },
  ASSET_MISSING: { status: 500, meaning: 'a registered boot file is missing from the asset store or has the wrong size' },
  BOOT_PATH_INVALID: { status: 400, meaning: 'an HTTP boot path names something that cannot be in the asset store (traversal, bad characters)' },
  BOOT_REQUEST_INVALID: { status: 400, meaning: 'an iPXE script request carries a malformed mac, uuid or bootif' },
  BOOT_RANGE_NOT_SATISFIABLE: { status: 416, meaning: 'a Range request starts past the end of the file' },
  BOOT_TOKEN_INVALID: { status: 401, meaning: 'a per-boot token is unknown or expired' },
  BMC_AUTH_FAILED: { status: 502, meaning: 'the BMC refused the credentials (wrong user, password or Kg, or not enough privilege)' },
  BMC_TIMEOUT: { status: 504, meaning: 'the BMC did not answer within the time allowed (after retransmissions)' },
  BMC_UNREACHABLE: { status: 502, meaning: 'the BMC address cannot be reached (no route, connection refused, name unknown)' },
  BMC_UNSUPPORTED: { status: 422, meaning: 'this BMC or driver cannot do that (status over Wake-on-LAN, a reset type the system does not offer, cipher suite refused)' },
  BMC_PROTOCOL: { status: 502, meaning: 'the BMC answered something malformed, unauthenticated or an error completion code' },
  BMC_TLS_MISMATCH: { status: 502, meaning: 'the BMC\'s TLS certificate is not the one pinned at enrolment; re-pin it if the change is expected' },
  BMC_BUSY: { status: 429, meaning: 'too many BMC operations are queued, or the BMC has no free session; try again later' },
  BMC_NOT_FOUND: { status: 404, meaning: 'no BMC is registered with that id or machine' },
  BMC_INVALID: { status: 400, meaning: 'a BMC definition is unusable: unknown driver, bad address, port, cipher suite or Kg' },
  SECRET_KEY_UNUSABLE: { status: 500, meaning: 'the secrets key file (state dir, mode 0600) cannot be created or read, or does not decrypt a stored secret' },
  LIFECYCLE_INVALID_TRANSITION: { status: 409, meaning: 'the machine\'s state does not allow that action (the message names the states it is allowed from)' },
  MACHINE_NOT_FOUND: { status: 404, meaning: 'no machine has that id (or MAC, or hostname)' },
  MACHINE_CONFLICT: { status: 409, meaning: 'another machine already has that MAC, hostname or UUID' },
  MACHINE_INVALID: { status: 400, meaning: 'a machine field is unusable: hostname not an RFC 1123 label, bad MAC, UUID or tag' },
  MACHINE_POWER_UNAVAILABLE: { status: 503, meaning: 'power and boot-device control (the BMC service) is not available in this process' },
  TLS_UNUSABLE: { status: 500, meaning: 'the HTTPS certificate or key cannot be read, made or used (unreadable file, not PEM, key and certificate do not match)' },
  VALIDATION_FAILED: { status: 400, meaning: 'an API request does not match the route schema' },
  AUTH_REQUIRED: { status: 401, meaning: 'the request carries no credentials: log in (session cookie) or send Authorization: Bearer TOKEN' },
  AUTH_INVALID: { status: 401, meaning: 'the credentials are wrong, expired or revoked (user name and password, API token or session)' },
  AUTH_FORBIDDEN: { status: 403, meaning: 'the caller\'s role does not allow this (viewer < operator < admin), or a token would get more than its owner has' },
  CSRF_INVALID: { status: 403, meaning: 'a state-changing request authenticated by the session cookie lacks the session\'s X-CSRF-Token header or carries a wrong one' },
  AUTH_RATE_LIMITED: { status: 429, meaning: 'too many failed logins from this address or for this user, or too many password checks at once; retry after Retry-After seconds' },
  USER_INVALID: { status: 400, meaning: 'a user definition is unusable: the user name, role or password breaks a rule (the message names the field)' },
  USER_EXISTS: { status: 409, meaning: 'a user with that name already exists' },
  USER_LAST_ADMIN: { status: 409, meaning: 'the last admin cannot be deleted or given another role' },
  USER_PASSWORD_WRONG: { status: 403, meaning: 'the current password given with a password change is wrong' },
  API_TOKEN_INVALID: { status: 400, meaning: 'an API token request is unusable: bad name, or an expiry beyond the maximum (the message names the field)' },
  NOT_FOUND: { status: 404, meaning: 'no such route or record' },
  LAB_UNAVAILABLE: { status: 500, meaning: 'metalbox lab cannot run here: not root, or a tool it needs (QEMU, ipmi_sim, socat, iproute2) is missing; the message names it and its package' },
  LAB_EXISTS: { status: 409, meaning: 'a lab with that directory or namespace name is already up: metalbox lab down first' },
  LAB_NOT_FOUND: { status: 404, meaning: 'no lab in that directory' },
  LAB_FAILED: { status: 500, meaning: 'building or driving the lab failed (a command, an image build, the API); the message says which step' },
  INTERNAL: { status: 500, meaning: 'an unexpected failure; the log has the details' },
} as const satisfies Record<string, { status: number; meaning: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class MetalboxError extends Error {
  readonly code: ErrorCode;
  /** Structured facts that explain the error (key path, file, pid); never secrets. */
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MetalboxError';
    this.code = code;
    this.details = options?.details;
  }
}

export function isMetalboxError(err: unknown, code?: ErrorCode): err is MetalboxError {
  return err instanceof MetalboxError && (code === undefined || err.code === code);
}

/** The `code` property of an error from Node or a library (ENOENT, LEVEL_LOCKED, ...), if any. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}
