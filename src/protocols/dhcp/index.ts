// DHCPv4 codec: pure Buffer <-> DhcpPacket. The socket owner (src/services/dhcp) decides where replies go.
export {
  BOOTP_MIN_LENGTH,
  BOOTREPLY,
  BOOTREQUEST,
  CLIENT_ARCH,
  FLAG_BROADCAST,
  MAGIC_COOKIE,
  MESSAGE_TYPE,
  MIN_MAX_MESSAGE_SIZE,
  OPTION,
  RELAY_AGENT_SUBOPTION,
  type MessageType,
  type OptionCode,
} from './constants.ts';
export type { ClasslessRoute, DhcpOptions, DhcpPacket, RelayAgentInfo } from './types.ts';
export { clientKey, decodeDhcp, encodeDhcp, hwAddress, peekMessageType, type EncodeOptions } from './packet.ts';
export { decodeEncapsulated, decodeIpxeEncap, encodeEncapsulated, encodeOptionMap } from './options.ts';
export { formatDhcp } from './format.ts';
