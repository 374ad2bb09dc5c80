// The IPMI v2.0 over LAN BmcDriver (src/bmc/types.ts): one IpmiClient (one RMCP+ session, kept open
// between calls) per BMC. It executes exactly what it is asked; policy (on while on, retries across calls,
// the global concurrency cap) is the BMC service's.
import { isMetalboxError, MetalboxError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import {
  APP_CMD, BOOT_DEVICE, CHASSIS_CMD, CHASSIS_CONTROL, decodeChassisStatus, decodeDeviceId, decodeSystemGuid, encodeChassisControl,
  encodeChassisIdentify, encodeSetBootFlags, firmwareVersion, guidToUuid, NETFN, PRIVILEGE,
} from '../../protocols/ipmi/index.ts';
import type { BmcDriver, BmcEndpoint, BmcInfo, BootDeviceRequest, PowerAction, PowerState } from '../types.ts';
import { IpmiClient, type IpmiClientOptions, type IpmiClientStats } from './client.ts';

export interface IpmiDriverOptions {
  /** Longest one driver call may take, session setup and retransmissions included; default 5000 ms. */
  deadlineMs?: number;
  /** Wait before a retransmission; default 1000 ms. */
  timeoutMs?: number;
  /** Retransmissions per message; default 4. */
  retries?: number;
  sessionIdleMs?: number;
  /** 'operator' is enough for every action here; default 'administrator' (what MAAS and ipmitool ask). */
  privilege?: 'operator' | 'administrator';
  logger?: Logger;
  randomBytes?: (n: number) => Buffer;
}

export interface IpmiDriver extends BmcDriver {
  readonly kind: 'ipmi';
  /** Counters of the underlying client (tests, metrics). */
  stats(): IpmiClientStats;
}

/** Chassis Control values for each power action (§28.3). */
const POWER_CONTROL: Record<PowerAction, number> = {
  on: CHASSIS_CONTROL.POWER_UP,
  off: CHASSIS_CONTROL.POWER_DOWN,
  'soft-off': CHASSIS_CONTROL.SOFT_SHUTDOWN,
  cycle: CHASSIS_CONTROL.POWER_CYCLE,
  reset: CHASSIS_CONTROL.HARD_RESET,
};

const BOOT_DEVICES = { pxe: BOOT_DEVICE.PXE, disk: BOOT_DEVICE.DISK } as const;

/** IANA enterprise numbers of common BMC vendors (Get Device ID's manufacturer ID). */
const MANUFACTURERS: Record<number, string> = {
  2: 'IBM', 11: 'Hewlett Packard Enterprise', 343: 'Intel', 674: 'Dell', 4753: 'MontaVista (OpenIPMI)', 10876: 'Super Micro', 19046: 'Lenovo',
};

function parseKg(kg: string | undefined, address: string): Buffer | undefined {
  if (kg === undefined || kg === '') return undefined;
  // Never echo the value: it is a secret.
  if (!/^(?:[0-9a-fA-F]{2}){1,20}$/.test(kg)) throw new MetalboxError('BMC_INVALID', 'Kg must be 1-20 bytes in hex', { details: { address } });
  return Buffer.from(kg, 'hex');
}

/**
 * A BmcDriver speaking IPMI v2.0 / RMCP+ to `endpoint` (driver 'ipmi'). Throws BMC_INVALID for an unusable
 * endpoint; nothing is sent until the first call.
 */
export function createIpmiDriver(endpoint: BmcEndpoint, options: IpmiDriverOptions = {}): IpmiDriver {
  if (endpoint.driver !== 'ipmi') throw new MetalboxError('BMC_INVALID', `createIpmiDriver needs an 'ipmi' endpoint, got ${JSON.stringify(endpoint.driver)}`, { details: { driver: endpoint.driver } });
  const clientOptions: IpmiClientOptions = {
    address: endpoint.address,
    ...(endpoint.port !== undefined ? { port: endpoint.port } : {}),
    username: endpoint.username ?? '',
    password: endpoint.password ?? '',
    ...(endpoint.cipherSuite !== undefined ? { cipherSuite: endpoint.cipherSuite } : {}),
    privilege: options.privilege === 'operator' ? PRIVILEGE.OPERATOR : PRIVILEGE.ADMINISTRATOR,
    ...(options.deadlineMs !== undefined ? { deadlineMs: options.deadlineMs } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    ...(options.retries !== undefined ? { retries: options.retries } : {}),
    ...(options.sessionIdleMs !== undefined ? { sessionIdleMs: options.sessionIdleMs } : {}),
    ...(options.logger !== undefined ? { logger: options.logger } : {}),
    ...(options.randomBytes !== undefined ? { randomBytes: options.randomBytes } : {}),
  };
  const kg = parseKg(endpoint.kg, endpoint.address);
  if (kg !== undefined) clientOptions.kg = kg;
  const client = new IpmiClient(clientOptions);

  /** A command whose data bytes mean "this BMC does not offer that" when refused with 0xCC or 0x80. */
  const unsupportedOnInvalidData = async (netFn: number, cmd: number, data: Buffer, what: string, signal?: AbortSignal): Promise<Buffer> => {
    const rs = await client.request(netFn, cmd, data, signal, what);
    if (rs.completionCode === 0) return rs.data;
    // QUIRK(bmc): BMCs refuse a chassis control or boot device they do not offer with "invalid data
    // field" (0xCC; ipmi_sim does for soft-off without a control script), and boot parameters they do not
    // know with 0x80 "parameter not supported" (§28.12).
    if (rs.completionCode === 0xcc || (cmd === CHASSIS_CMD.SET_SYSTEM_BOOT_OPTIONS && (rs.completionCode === 0x80 || rs.completionCode === 0x82))) {
      throw new MetalboxError('BMC_UNSUPPORTED', `the BMC at ${client.address} does not offer ${what} (completion code 0x${rs.completionCode.toString(16)})`, {
        details: { address: client.address, completionCode: rs.completionCode, netFn, cmd },
      });
    }
    throw client.completionError(rs, what);
  };

  return {
    kind: 'ipmi',

    async powerStatus(signal?: AbortSignal): Promise<PowerState> {
      const data = await client.command(NETFN.CHASSIS, CHASSIS_CMD.GET_CHASSIS_STATUS, Buffer.alloc(0), 'Get Chassis Status', signal);
      return decodeChassisStatus(data).powerOn ? 'on' : 'off';
    },

    async power(action: PowerAction, signal?: AbortSignal): Promise<void> {
      const control = POWER_CONTROL[action];
      if (control === undefined) throw new TypeError(`unknown power action ${JSON.stringify(action)}`);
      await unsupportedOnInvalidData(NETFN.CHASSIS, CHASSIS_CMD.CHASSIS_CONTROL, encodeChassisControl(control), `power ${action} (Chassis Control)`, signal);
    },

    async setBootDevice(request: BootDeviceRequest, signal?: AbortSignal): Promise<void> {
      const device = BOOT_DEVICES[request.device];
      if (device === undefined) throw new TypeError(`unknown boot device ${JSON.stringify(request.device)}`);
      // Parameter 5 with the valid bit set; persistent and EFI as asked (§28.12, table 28-14).
      const data = encodeSetBootFlags({ valid: true, persistent: request.persistent, efi: request.efi, device });
      await unsupportedOnInvalidData(NETFN.CHASSIS, CHASSIS_CMD.SET_SYSTEM_BOOT_OPTIONS, data, `boot device ${request.device} (Set System Boot Options)`, signal);
    },

    async identify(seconds: number, signal?: AbortSignal): Promise<void> {
      if (!Number.isInteger(seconds) || seconds < 0) throw new RangeError(`identify seconds must be a non-negative integer, got ${seconds}`);
      // The interval byte holds up to 255 s; longer means "on until turned off" (force identify on, §28.5).
      const data = seconds > 0xff ? encodeChassisIdentify(0xff, true) : encodeChassisIdentify(seconds);
      await unsupportedOnInvalidData(NETFN.CHASSIS, CHASSIS_CMD.CHASSIS_IDENTIFY, data, 'Chassis Identify', signal);
    },

    async info(signal?: AbortSignal): Promise<BmcInfo> {
      const id = decodeDeviceId(await client.command(NETFN.APP, APP_CMD.GET_DEVICE_ID, Buffer.alloc(0), 'Get Device ID', signal));
      const info: BmcInfo = {
        manufacturer: MANUFACTURERS[id.manufacturerId] ?? `IANA ${id.manufacturerId}`,
        manufacturerId: id.manufacturerId,
        model: `0x${id.productId.toString(16).padStart(4, '0')}`,
        productId: id.productId,
        firmwareVersion: firmwareVersion(id),
        protocolVersion: `IPMI ${id.ipmiVersion}`,
        deviceId: id.deviceId,
        deviceRevision: id.deviceRevision,
      };
      try {
        const guid = decodeSystemGuid(await client.command(NETFN.APP, APP_CMD.GET_SYSTEM_GUID, Buffer.alloc(0), 'Get System GUID', signal));
        info.systemUuid = guidToUuid(guid);
        info.systemGuid = guid.toString('hex');
      } catch (err) {
        // Get System GUID is optional (§22.14): a BMC that refuses it still has an identity.
        if (!isMetalboxError(err, 'BMC_UNSUPPORTED') && !isMetalboxError(err, 'BMC_PROTOCOL')) throw err;
      }
      return info;
    },

    close(): Promise<void> {
      return client.close();
    },

    stats(): IpmiClientStats {
      return client.stats();
    },
  };
}
