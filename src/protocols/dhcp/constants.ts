// DHCPv4 numbers: message types (RFC 2132 §9.6), the option codes metalbox reads or writes, client
// architectures (RFC 4578 §2.1 as corrected by its errata and the IANA registry), and the fixed layout
// of the BOOTP header (RFC 2131 §2, figure 1).

/** Option 53 values (RFC 2132 §9.6). */
export const MESSAGE_TYPE = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;

export type MessageType = (typeof MESSAGE_TYPE)[keyof typeof MESSAGE_TYPE];

/** Option codes by name: those with a typed field in `DhcpOptions`, plus overload (52), which the codec owns. */
export const OPTION = {
  SUBNET_MASK: 1,
  ROUTER: 3,
  DNS_SERVERS: 6,
  HOSTNAME: 12,
  DOMAIN_NAME: 15,
  INTERFACE_MTU: 26,
  BROADCAST: 28,
  NTP_SERVERS: 42,
  VENDOR_SPECIFIC: 43,
  REQUESTED_IP: 50,
  LEASE_TIME: 51,
  OVERLOAD: 52,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  PARAMETER_LIST: 55,
  MAX_MESSAGE_SIZE: 57,
  RENEWAL_TIME: 58,
  REBINDING_TIME: 59,
  VENDOR_CLASS: 60,
  CLIENT_ID: 61,
  TFTP_SERVER: 66,
  BOOTFILE: 67,
  USER_CLASS: 77,
  RELAY_AGENT: 82,
  CLIENT_ARCH: 93,
  CLIENT_NDI: 94,
  CLIENT_UUID: 97,
  DOMAIN_SEARCH: 119,
  CLASSLESS_ROUTES: 121,
  IPXE_ENCAP: 175,
} as const;

export type OptionCode = (typeof OPTION)[keyof typeof OPTION];

/** Option 82 sub-options with a typed field (RFC 3046 §3). */
export const RELAY_AGENT_SUBOPTION = { CIRCUIT_ID: 1, REMOTE_ID: 2 } as const;

/**
 * Option 93 values. RFC 4578 §2.1 first had 7 = EFI BC and 9 = EFI x86-64; its errata (2016) swapped them to
 * match IANA and EDK2. QUIRK(firmware): some old x86-64 UEFI firmware still sends 9.
 */
export const CLIENT_ARCH = {
  BIOS_X86: 0,
  UEFI_X86: 6,
  UEFI_X64: 7,
  UEFI_EBC: 9,
  UEFI_ARM32: 10,
  UEFI_ARM64: 11,
  HTTP_UEFI_X86: 15,
  HTTP_UEFI_X64: 16,
  HTTP_UEFI_ARM32: 18,
  HTTP_UEFI_ARM64: 19,
} as const;

/** RFC 2131 §3: the first four octets of the options field, 99.130.83.99. */
export const MAGIC_COOKIE = 0x63825363;

/** RFC 2131 §2 figure 1: offsets and sizes of the fixed header. */
export const HEADER = {
  OP: 0,
  HTYPE: 1,
  HLEN: 2,
  HOPS: 3,
  XID: 4,
  SECS: 8,
  FLAGS: 10,
  CIADDR: 12,
  YIADDR: 16,
  SIADDR: 20,
  GIADDR: 24,
  CHADDR: 28,
  CHADDR_LEN: 16,
  SNAME: 44,
  SNAME_LEN: 64,
  FILE: 108,
  FILE_LEN: 128,
  /** The fixed header ends here; the options field starts with the cookie. */
  LENGTH: 236,
  COOKIE: 236,
  OPTIONS: 240,
} as const;

/** RFC 2131 §2: bit 15 of `flags` asks for a broadcast reply. */
export const FLAG_BROADCAST = 0x8000;

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;

/** RFC 2131 §2: "a DHCP client must be prepared to receive DHCP messages with an options field of at least
 * length 312 octets", i.e. 576-octet IP datagrams; option 57 counts the IP and UDP headers too (RFC 2132 §9.10). */
export const MIN_MAX_MESSAGE_SIZE = 576;
export const IP_UDP_HEADERS = 28;

/** RFC 951: a BOOTP message is 300 octets (236 of header and a 64-octet vend field). */
export const BOOTP_MIN_LENGTH = 300;
