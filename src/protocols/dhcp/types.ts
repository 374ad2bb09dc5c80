// The decoded shape of a DHCPv4 message. Addresses are dotted quads; text fields are latin1 (one character
// per octet, so every byte string survives a round trip); opaque values are Buffers owned by the packet.
import type { MessageType } from './constants.ts';

/** Option 82 (RFC 3046): the relay's sub-options. The server echoes the whole option in its reply (§2.2). */
export interface RelayAgentInfo {
  /** Sub-option 1 (the first one, if repeated). */
  circuitId?: Buffer;
  /** Sub-option 2 (the first one, if repeated). */
  remoteId?: Buffer;
  /** Every other sub-option (and repeats of 1 and 2), in wire order. */
  other: [number, Buffer][];
}

export interface ClasslessRoute {
  /** Network address; octets past the prefix's significant octets are zero. */
  destination: string;
  /** 0..32 */
  prefix: number;
  router: string;
}

export interface DhcpOptions {
  /** 1 */ subnetMask?: string;
  /** 3 */ routers?: string[];
  /** 6 */ dnsServers?: string[];
  /** 12, NVT ASCII; trailing NULs dropped (RFC 2132 §2) */ hostname?: string;
  /** 15 */ domainName?: string;
  /** 26 */ mtu?: number;
  /** 28 */ broadcastAddress?: string;
  /** 42 */ ntpServers?: string[];
  /** 43, raw; see `decodeEncapsulated` */ vendorSpecific?: Buffer;
  /** 50 */ requestedIp?: string;
  /** 51, seconds */ leaseTime?: number;
  /** 53 */ messageType?: MessageType;
  /** 54 */ serverId?: string;
  /** 55, option codes in the client's order */ parameterList?: number[];
  /** 57, octets of the whole IP datagram (RFC 2132 §9.10) */ maxMessageSize?: number;
  /** 58, seconds */ renewalTime?: number;
  /** 59, seconds */ rebindingTime?: number;
  /** 60, latin1 */ vendorClass?: string;
  /** 61 (type octet first, as on the wire) */ clientId?: Buffer;
  /** 66 */ tftpServer?: string;
  /** 67 */ bootfile?: string;
  /** 77, RFC 3004 list of user classes (latin1) */ userClass?: string[];
  /**
   * 77 came as one bare string without RFC 3004's per-item length octet (QUIRK(ipxe): iPXE sends "iPXE" like
   * that); `userClass` then has exactly that one item and the encoder writes it back the same way.
   */
  userClassRaw?: boolean;
  /** 82 */ relayAgent?: RelayAgentInfo;
  /** 93, RFC 4578 16-bit architecture types; see CLIENT_ARCH */ clientArch?: number[];
  /** 94, RFC 4578 network interface identifier */ clientNdi?: { type: number; major: number; minor: number };
  /** 97, RFC 4578 machine identifier: type (0) and the 16-octet UUID */ clientUuid?: { type: number; id: Buffer };
  /** 119, RFC 3397; names without the trailing dot, RFC 1035 §5.1 escapes (`\.`, `\\`, `\DDD`) in labels */ domainSearch?: string[];
  /** 121, RFC 3442 */ classlessRoutes?: ClasslessRoute[];
  /** 175, iPXE's encapsulated options, raw; see `decodeIpxeEncap` */ ipxe?: Buffer;
  /** Every other option code (not 0, 52 or 255), raw, concatenated per RFC 3396. */
  other: Map<number, Buffer>;
}

export interface DhcpPacket {
  /** 1 BOOTREQUEST, 2 BOOTREPLY */
  op: 1 | 2;
  htype: number;
  /** 0..16 */
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  /** bit 15 = broadcast (FLAG_BROADCAST) */
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  /** dotted quads, '0.0.0.0' when zero */
  giaddr: string;
  /** 16 bytes as on the wire (the encoder accepts fewer and pads with zeros) */
  chaddr: Buffer;
  /** Up to the first NUL, latin1; '' when empty or when the field carried overloaded options. */
  sname: string;
  /** Up to the first NUL, latin1; '' when empty or when the field carried overloaded options. */
  file: string;
  options: DhcpOptions;
}
