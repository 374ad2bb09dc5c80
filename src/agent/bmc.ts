// The machine's own BMC, seen in-band. The kernel's IPMI message handler (ipmi_si + ipmi_devintf) exposes it as
// /dev/ipmi0 and /sys/class/ipmi/ipmi0; the native addon issues the IPMICTL_SEND_COMMAND /
// IPMICTL_RECEIVE_MSG_TRUNC ioctls (src/lib/ipmi-device.ts). Over that the agent
//   - finds the LAN channel and its IP address (Get Channel Info §22.24 on channels 1-11 for medium 802.3 LAN;
//     Get LAN Configuration Parameters §23.2, parameters 3 and 4): the inventory's `bmc.address`;
//   - when the task asks (commission, bmcUser.create), makes the user the appliance will power the machine
//     with: a user named "metalbox" is reused, else the first free slot (Get User Access §22.27 for the number
//     of user ids and the fixed names, Get User Name §22.29), then Set User Name §22.28, Set User Password
//     §22.30 (a fresh random password), Set User Access §22.26 (ADMINISTRATOR on the LAN channel, IPMI messaging
//     on), Set User Password "enable user", and Get User Access to check that it held.
// The commands go through `BmcTransport`, so tests drive the sequence against a fake BMC. The password is
// handed back to the caller only (it goes to the appliance in POST done); it is never logged.

import { randomInt } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { completionCodeText, hex2, PRIVILEGE } from '../protocols/ipmi/constants.ts';
import type { IpmiResponse } from '../lib/ipmi-device.ts';
import {
  BMC_CMD, decodeChannelInfo, decodeLanAddress, decodeLanAddressSource, decodeUserAccess, decodeUserName,
  encodeGetChannelInfo, encodeGetLanConfig, encodeGetUserAccess, encodeGetUserName, encodeSetUserAccess,
  encodeSetUserName, encodeSetUserPassword, LAN_PARAM, MEDIUM_802_3_LAN, PASSWORD_BYTES_16, PASSWORD_BYTES_20,
  PASSWORD_OP, type AddressSource, type BmcCommand,
} from './bmc-commands.ts';
import { AgentError, describe, errno } from './errors.ts';
import type { Run } from './run.ts';
import { exists, readAttr, type Roots } from './sysfs.ts';

export interface BmcInfo {
  present: boolean;
  address?: string;
}

/** Device nodes an in-band BMC may have: devtmpfs's name, and the older udev and devfs ones. */
function deviceNodes(roots: Roots): string[] {
  return [path.join(roots.dev, 'ipmi0'), path.join(roots.dev, 'ipmi', '0'), path.join(roots.dev, 'ipmidev', '0')];
}

export async function detectBmc(roots: Roots): Promise<BmcInfo> {
  for (const node of deviceNodes(roots)) {
    if (await exists(node)) return { present: true };
  }
  return { present: await exists(path.join(roots.sys, 'class', 'ipmi', 'ipmi0')) };
}

/** The IPMI device as the agent uses it (src/lib/ipmi-device.ts's IpmiDevice, or a fake). */
export interface BmcTransport {
  request(netfn: number, cmd: number, data: Uint8Array, timeoutMs: number): Promise<IpmiResponse>;
  close(): Promise<void>;
}

export interface OpenBmcOptions {
  roots: Roots;
  run: Run;
  /** Load ipmi_si and ipmi_devintf first (the ephemeral environment has no udev to do it). */
  loadModules: boolean;
  open: (devicePath: string) => BmcTransport;
  log: (line: string) => void;
  /** How long to wait for ipmi0 when the firmware declares a BMC (SMBIOS type 38) but the kernel has none yet. */
  waitMs?: number;
}

/**
 * The in-band BMC, opened; undefined when this machine has none. Without udev nothing makes the device node
 * if devtmpfs did not: it is made from /sys/class/ipmi/ipmi0/dev. Throws AGENT_BMC_UNAVAILABLE when there is
 * a BMC that cannot be opened.
 */
export async function openInbandBmc(o: OpenBmcOptions): Promise<BmcTransport | undefined> {
  if (o.loadModules) {
    // Absent modules (another kernel) fail harmlessly: then there is simply no device.
    for (const m of ['ipmi_si', 'ipmi_devintf']) await o.run('modprobe', [m], { timeoutMs: 20_000 });
  }
  const classDir = path.join(o.roots.sys, 'class', 'ipmi', 'ipmi0');
  // SMBIOS type 38 (IPMI Device Information, DSP0134 §7.39): the firmware says there is a BMC, so give the
  // kernel a moment to finish probing it (ipmi_si asks it Get Device ID before registering ipmi0).
  const declared = await exists(path.join(o.roots.sys, 'firmware', 'dmi', 'entries', '38-0'));
  const until = performance.now() + (declared ? o.waitMs ?? 10_000 : 0);
  while (!(await exists(classDir)) && performance.now() < until) await sleep(200);

  let node: string | undefined;
  for (const n of deviceNodes(o.roots)) if (await exists(n)) { node = n; break; }
  if (node === undefined) {
    const dev = await readAttr(path.join(classDir, 'dev'));
    if (dev === undefined) return undefined;
    const m = /^(\d+):(\d+)$/.exec(dev);
    if (!m) throw new AgentError('AGENT_BMC_UNAVAILABLE', `${classDir}/dev reads "${dev}", not MAJOR:MINOR`);
    node = path.join(o.roots.dev, 'ipmi0');
    await mkdir(path.dirname(node), { recursive: true });
    const r = await o.run('mknod', ['-m', '0600', node, 'c', m[1]!, m[2]!]);
    if (r.code !== 0) throw new AgentError('AGENT_BMC_UNAVAILABLE', `mknod ${node} c ${m[1]} ${m[2]}: ${(r.stderr || r.stdout).trim()}`);
    o.log(`made ${node} (char ${m[1]}:${m[2]}): devtmpfs had not`);
  }
  try {
    return o.open(node);
  } catch (err) {
    throw new AgentError('AGENT_BMC_UNAVAILABLE', `cannot open ${node}: ${describe(err)}`, { cause: err });
  }
}

export const BMC_USERNAME = 'metalbox';
/** Password length: within the 16 bytes every BMC keeps (see createBmcUser's QUIRK), 95 bits of entropy. */
export const BMC_PASSWORD_LENGTH = 16;
const LOWER = 'abcdefghijkmnopqrstuvwxyz';
const UPPER = 'ABCDEFGHJKLMNPQRSTUVWXYZ';
const DIGITS = '23456789';
// Symbols no BMC web UI, shell or URL mangles; one is required by the password rules some BMCs enforce.
const SYMBOLS = '-_.+=';

/**
 * A random password of printable characters: `length` characters (at most 20, the IPMI maximum) with at least
 * one lower-case letter, upper-case letter, digit and symbol (vendor password policies ask for that), look-alikes
 * (l, I, O, 0, 1) left out.
 */
export function generatePassword(length = BMC_PASSWORD_LENGTH, pick: (max: number) => number = (max) => randomInt(max)): string {
  if (!Number.isInteger(length) || length < 4 || length > PASSWORD_BYTES_20) throw new RangeError('a BMC password is 4-20 characters');
  const all = LOWER + UPPER + DIGITS + SYMBOLS;
  const chars = [LOWER, UPPER, DIGITS, SYMBOLS].map((set) => set[pick(set.length)]!);
  while (chars.length < length) chars.push(all[pick(all.length)]!);
  // Fisher-Yates, so the required classes are not always first.
  for (let i = chars.length - 1; i > 0; i--) {
    const j = pick(i + 1);
    [chars[i], chars[j]] = [chars[j]!, chars[i]!];
  }
  return chars.join('');
}

export interface BmcOptions {
  /** Bound on one command (the kernel's own retries for an unanswered one take about 5 s). Default 10 s. */
  timeoutMs?: number;
  log?: (line: string) => void;
}

export interface LanInfo {
  channel: number;
  address: string;
  source: AddressSource;
}

export interface BmcUser extends LanInfo {
  username: string;
  password: string;
  userId: number;
  /** A user named metalbox was there already (its password is replaced). */
  reused: boolean;
}

/** IPMI over the in-band transport: one method per command, failures as AGENT_BMC_* errors. */
export class InbandBmc {
  private readonly timeoutMs: number;
  private readonly log: (line: string) => void;

  constructor(private readonly transport: BmcTransport, opts: BmcOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.log = opts.log ?? (() => undefined);
  }

  /** One command; a completion code other than 0 is thrown (AGENT_BMC_COMMAND_FAILED, 0xC3: AGENT_BMC_TIMEOUT). */
  async call(c: BmcCommand, data: Buffer, what = ''): Promise<Buffer> {
    const r = await this.send(c, data, what);
    if (r.completionCode !== 0) throw ccError(c, r.completionCode, what);
    return r.data;
  }

  /** One command, the completion code returned rather than thrown; transport failures are thrown. */
  async send(c: BmcCommand, data: Buffer, what = ''): Promise<IpmiResponse> {
    const label = `${c.name}${what === '' ? '' : ` (${what})`}`;
    let timer: NodeJS.Timeout | undefined;
    // The transport bounds each request itself (the addon's poll); this guard is for one that does not.
    const guard = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error('no response'), { code: 'ETIMEDOUT' })), this.timeoutMs + 2000);
    });
    try {
      return await Promise.race([this.transport.request(c.netfn, c.cmd, data, this.timeoutMs), guard]);
    } catch (err) {
      if (errno(err) === 'ETIMEDOUT') {
        throw new AgentError('AGENT_BMC_TIMEOUT', `${label}: the BMC did not answer within ${this.timeoutMs / 1000} s`, { cause: err });
      }
      throw new AgentError('AGENT_BMC_UNAVAILABLE', `${label}: ${describe(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  /** The first 802.3 LAN channel among 1-11 (§6.3: 0 is IPMB, 12-15 are reserved or special). */
  async lanChannel(): Promise<number> {
    const seen: string[] = [];
    for (let ch = 1; ch <= 11; ch++) {
      const r = await this.send(BMC_CMD.GET_CHANNEL_INFO, encodeGetChannelInfo(ch), `channel ${ch}`);
      // Channels that do not exist answer 0xCB ("not present") or 0xCC ("invalid data field"): skip them.
      if (r.completionCode !== 0) continue;
      const info = decodeChannelInfo(r.data);
      if (info.medium === MEDIUM_802_3_LAN) return ch;
      seen.push(`${ch}: medium 0x${hex2(info.medium)}`);
    }
    throw new AgentError('AGENT_BMC_NO_LAN_CHANNEL', `the BMC has no 802.3 LAN channel among 1-11${seen.length > 0 ? ` (channels ${seen.join(', ')})` : ''}`);
  }

  async lanAddress(channel: number): Promise<{ address: string; source: AddressSource }> {
    const address = decodeLanAddress(await this.call(BMC_CMD.GET_LAN_CONFIG, encodeGetLanConfig(channel, LAN_PARAM.IP_ADDRESS), 'IP address'));
    const source = decodeLanAddressSource(await this.call(BMC_CMD.GET_LAN_CONFIG, encodeGetLanConfig(channel, LAN_PARAM.IP_ADDRESS_SOURCE), 'IP address source'));
    return { address, source };
  }

  /** The LAN channel and its address; AGENT_BMC_NO_ADDRESS when it has none. */
  async lan(): Promise<LanInfo> {
    const channel = await this.lanChannel();
    const { address, source } = await this.lanAddress(channel);
    if (address === '0.0.0.0') {
      throw new AgentError('AGENT_BMC_NO_ADDRESS', `the BMC's LAN channel ${channel} has no IP address (source: ${source}${source === 'dhcp' ? ', no lease yet?' : ''})`);
    }
    return { channel, address, source };
  }

  /**
   * The slot for `name`: the user already named so, else the first free one (empty name) above the fixed
   * names. User 1 is the anonymous user (§6.9.1; its name cannot be set), so the search starts at 2.
   */
  async findUserSlot(channel: number, name: string): Promise<{ userId: number; reused: boolean }> {
    const access = decodeUserAccess(await this.call(BMC_CMD.GET_USER_ACCESS, encodeGetUserAccess(channel, 1), 'user 1'));
    let free: number | undefined;
    const refused: number[] = [];
    for (let id = Math.max(2, access.fixedNames + 1); id <= access.maxUsers; id++) {
      const r = await this.send(BMC_CMD.GET_USER_NAME, encodeGetUserName(id), `user ${id}`);
      // QUIRK(firmware): some BMCs answer a never-used slot with an error rather than an empty name; such a
      // slot is not taken (it might be reserved), only remembered for the message.
      if (r.completionCode !== 0) { refused.push(id); continue; }
      const current = decodeUserName(r.data);
      if (current === name) return { userId: id, reused: true };
      if (current === undefined && free === undefined) free = id;
    }
    if (free === undefined) {
      throw new AgentError('AGENT_BMC_NO_FREE_USER', `all ${access.maxUsers} user slots of the BMC are taken and none is named ${name}${refused.length > 0 ? ` (Get User Name refused ids ${refused.join(', ')})` : ''}`);
    }
    return { userId: free, reused: false };
  }

  /**
   * Sets the password in the 20-byte form (§22.30); a BMC that only knows IPMI v1.5's 16-byte form refuses
   * the longer request (0xC7 "request data length invalid", or 0xCC), and then gets the 16-byte form.
   */
  async setPassword(userId: number, password: string): Promise<void> {
    const long = await this.send(BMC_CMD.SET_USER_PASSWORD, encodeSetUserPassword(userId, PASSWORD_OP.SET_PASSWORD, { text: password, bytes: PASSWORD_BYTES_20 }), `user ${userId}, set password`);
    if (long.completionCode === 0) return;
    if ((long.completionCode === 0xc7 || long.completionCode === 0xcc) && Buffer.byteLength(password, 'latin1') <= PASSWORD_BYTES_16) {
      this.log(`Set User Password: the 20-byte form was refused (${completionCodeText(long.completionCode)}); using the 16-byte form`);
      await this.call(BMC_CMD.SET_USER_PASSWORD, encodeSetUserPassword(userId, PASSWORD_OP.SET_PASSWORD, { text: password, bytes: PASSWORD_BYTES_16 }), `user ${userId}, set password`);
      return;
    }
    throw ccError(BMC_CMD.SET_USER_PASSWORD, long.completionCode, `user ${userId}, set password`);
  }
}

/**
 * Makes (or takes over) the metalbox user on the BMC's LAN channel with a new random password and
 * ADMINISTRATOR privilege, and says where the BMC is. The order keeps a half-made user harmless: the
 * user is enabled last, once its name, password and access are set.
 *
 * QUIRK(ipmi_sim): OpenIPMI's simulator keeps only the first 16 bytes of a password set in the 20-byte
 * form; passwords of 16 characters are the same password either way, so that is the length made.
 */
export async function createBmcUser(transport: BmcTransport, opts: BmcOptions & { username?: string; password?: string } = {}): Promise<BmcUser> {
  const bmc = new InbandBmc(transport, opts);
  const log = opts.log ?? (() => undefined);
  const username = opts.username ?? BMC_USERNAME;
  const password = opts.password ?? generatePassword();
  const lan = await bmc.lan();
  const { userId, reused } = await bmc.findUserSlot(lan.channel, username);
  log(`BMC: LAN channel ${lan.channel}, address ${lan.address} (${lan.source}); ${reused ? 'taking over' : 'making'} user ${userId} "${username}"`);
  if (!reused) await bmc.call(BMC_CMD.SET_USER_NAME, encodeSetUserName(userId, username), `user ${userId}`);
  await bmc.setPassword(userId, password);
  await bmc.call(BMC_CMD.SET_USER_ACCESS, encodeSetUserAccess(lan.channel, userId, { ipmiMessaging: true, linkAuth: false, callbackOnly: false, privilege: PRIVILEGE.ADMINISTRATOR }), `user ${userId}, channel ${lan.channel}`);
  await bmc.call(BMC_CMD.SET_USER_PASSWORD, encodeSetUserPassword(userId, PASSWORD_OP.ENABLE_USER), `user ${userId}, enable`);
  // Read back: a BMC that answered 0 but did not keep the access (firmware with its own policy) is caught here,
  // not later as a failed login from the appliance.
  const after = decodeUserAccess(await bmc.call(BMC_CMD.GET_USER_ACCESS, encodeGetUserAccess(lan.channel, userId), `user ${userId}`));
  if (after.privilege !== PRIVILEGE.ADMINISTRATOR || !after.ipmiMessaging) {
    throw new AgentError('AGENT_BMC_COMMAND_FAILED', `Set User Access: the BMC answered success, but user ${userId} on channel ${lan.channel} has privilege ${after.privilege} and IPMI messaging ${after.ipmiMessaging ? 'on' : 'off'}`);
  }
  return { ...lan, username, password, userId, reused };
}

function ccError(c: BmcCommand, cc: number, what: string): AgentError {
  const label = `${c.name}${what === '' ? '' : ` (${what})`}`;
  return new AgentError(cc === 0xc3 ? 'AGENT_BMC_TIMEOUT' : 'AGENT_BMC_COMMAND_FAILED', `${label}: completion code 0x${hex2(cc)} (${completionCodeText(cc)})`);
}
