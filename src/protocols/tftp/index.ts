// TFTP codec: pure Buffer <-> TftpPacket (RFC 1350, 2347) and the netascii conversion. The transfer
// logic (option negotiation, windows, retransmission) lives in src/services/tftp.
export {
  DEFAULT_BLOCK_SIZE,
  ERROR_CODE,
  MAX_BLOCK_SIZE,
  OPCODE,
  decodeTftp,
  encodeDataHeader,
  encodeDataInto,
  encodeTftp,
  optionValue,
  type OpName,
  type TftpAck,
  type TftpData,
  type TftpError,
  type TftpOack,
  type TftpOption,
  type TftpPacket,
  type TftpRequest,
} from './packet.ts';
export { fromNetascii, toNetascii } from './netascii.ts';
export { formatTftp } from './format.ts';
