// IPMI v2.0 over LAN (RMCP+), pure codecs: see the module files for the spec sections they implement.
export * from './constants.ts';
export * from './crypto.ts';
export * from './packet.ts';
export * from './message.ts';
export * from './rakp.ts';
export * from './commands.ts';
export * from './session.ts';
export * from './format.ts';
export { ipmiDecodeError } from './reader.ts';
