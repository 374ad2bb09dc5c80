// IPMI v2.0 over LAN (RMCP+): the BmcDriver, the session client under it, and the presence ping.
export { createIpmiDriver, type IpmiDriver, type IpmiDriverOptions } from './driver.ts';
export { IpmiClient, IPMI_PORT, ReplayWindow, type IpmiClientOptions, type IpmiClientStats } from './client.ts';
export { ipmiPing, type IpmiPingOptions, type IpmiPingResult } from './ping.ts';
