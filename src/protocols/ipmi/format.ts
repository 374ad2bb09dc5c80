// formatIpmi: a stable, line-oriented text dump of one decoded IPMI LAN packet for golden files and logs
// at debug level. It never throws for a packet decodeIpmiPacket accepted: a payload or body that does not
// decode is shown as hex with the reason.
import {
  APP_CMD, ASF, AUTH_ALG_NAMES, AUTH_TYPE, CHASSIS_CMD, completionCodeText, CONFIDENTIALITY_ALG_NAMES, hex2,
  INTEGRITY_ALG_NAMES, NETFN, PAYLOAD_TYPE, PRIVILEGE_NAMES, RAKP_NAME_ONLY_LOOKUP, RMCP_PLUS_STATUS,
} from './constants.ts';
import {
  BOOT_DEVICE_NAMES, CHASSIS_CONTROL_NAMES, decodeChannelAuthCapabilities, decodeChassisStatus, decodeCloseSessionRequest,
  decodeDeviceId, decodeGetBootOptions, decodeSetBootOptionsRequest, decodeSetSessionPrivilege, decodeSystemGuid, firmwareVersion,
  guidToUuid, type BootFlags,
} from './commands.ts';
import { decodeIpmiMessage, type IpmiMessage } from './message.ts';
import { decodeAsfPong, type IpmiPacket, type RmcpPlusPacket } from './packet.ts';
import { decodeOpenSessionRequest, decodeOpenSessionResponse, decodeRakp1, decodeRakp2, decodeRakp3, decodeRakp4 } from './rakp.ts';
import { hex32 } from './reader.ts';

export interface FormatContext {
  /** The decrypted payload of an encrypted packet (without the confidentiality header and trailer). */
  plaintext?: Buffer;
  /** What checking the packet's AuthCode with the session's K1 gave. */
  integrity?: 'verified' | 'mismatch';
}

const AUTH_TYPE_NAMES: Record<number, string> = { [AUTH_TYPE.NONE]: 'none', [AUTH_TYPE.MD2]: 'MD2', [AUTH_TYPE.MD5]: 'MD5', [AUTH_TYPE.STRAIGHT]: 'straight', [AUTH_TYPE.OEM]: 'OEM' };
const PAYLOAD_NAMES: Record<number, string> = {
  [PAYLOAD_TYPE.IPMI]: 'IPMI', [PAYLOAD_TYPE.SOL]: 'SOL', [PAYLOAD_TYPE.OEM_EXPLICIT]: 'OEM',
  [PAYLOAD_TYPE.OPEN_SESSION_REQUEST]: 'Open Session Request', [PAYLOAD_TYPE.OPEN_SESSION_RESPONSE]: 'Open Session Response',
  [PAYLOAD_TYPE.RAKP1]: 'RAKP 1', [PAYLOAD_TYPE.RAKP2]: 'RAKP 2', [PAYLOAD_TYPE.RAKP3]: 'RAKP 3', [PAYLOAD_TYPE.RAKP4]: 'RAKP 4',
};
const NETFN_NAMES: Record<number, string> = { [NETFN.CHASSIS]: 'Chassis', [NETFN.BRIDGE]: 'Bridge', [NETFN.SENSOR]: 'Sensor/Event', [NETFN.APP]: 'App', [NETFN.FIRMWARE]: 'Firmware', [NETFN.STORAGE]: 'Storage', [NETFN.TRANSPORT]: 'Transport' };
const COMMAND_NAMES: Record<string, string> = {
  [`${NETFN.APP}:${APP_CMD.GET_DEVICE_ID}`]: 'Get Device ID',
  [`${NETFN.APP}:${APP_CMD.GET_SYSTEM_GUID}`]: 'Get System GUID',
  [`${NETFN.APP}:${APP_CMD.GET_CHANNEL_AUTH_CAPABILITIES}`]: 'Get Channel Authentication Capabilities',
  [`${NETFN.APP}:${APP_CMD.SET_SESSION_PRIVILEGE_LEVEL}`]: 'Set Session Privilege Level',
  [`${NETFN.APP}:${APP_CMD.CLOSE_SESSION}`]: 'Close Session',
  [`${NETFN.APP}:${APP_CMD.GET_CHANNEL_CIPHER_SUITES}`]: 'Get Channel Cipher Suites',
  [`${NETFN.CHASSIS}:${CHASSIS_CMD.GET_CHASSIS_CAPABILITIES}`]: 'Get Chassis Capabilities',
  [`${NETFN.CHASSIS}:${CHASSIS_CMD.GET_CHASSIS_STATUS}`]: 'Get Chassis Status',
  [`${NETFN.CHASSIS}:${CHASSIS_CMD.CHASSIS_CONTROL}`]: 'Chassis Control',
  [`${NETFN.CHASSIS}:${CHASSIS_CMD.CHASSIS_IDENTIFY}`]: 'Chassis Identify',
  [`${NETFN.CHASSIS}:${CHASSIS_CMD.SET_SYSTEM_BOOT_OPTIONS}`]: 'Set System Boot Options',
  [`${NETFN.CHASSIS}:${CHASSIS_CMD.GET_SYSTEM_BOOT_OPTIONS}`]: 'Get System Boot Options',
};

const hex = (b: Buffer): string => (b.length === 0 ? '(none)' : b.toString('hex'));
const yes = (b: boolean): string => (b ? 'yes' : 'no');
const name = (table: Record<number, string>, n: number): string => `${table[n] ?? 'unknown'}(0x${hex2(n)})`;
const sid = (n: number | undefined): string => (n === undefined ? '(absent)' : hex32(n));
const privilege = (n: number | undefined): string => n === undefined ? '(absent)' : PRIVILEGE_NAMES[n & 0x0f] ?? `0x${hex2(n)}`;
const status = (n: number): string => `${n === 0 ? 'ok' : RMCP_PLUS_STATUS[n] ?? 'unknown'}(0x${hex2(n)})`;
const latin1 = (b: Buffer): string => JSON.stringify(b.toString('latin1'));

/** One packet as text, one fact per line, nested by indentation; ends with a newline. */
export function formatIpmi(packet: IpmiPacket, ctx: FormatContext = {}): string {
  const lines: string[] = [];
  switch (packet.kind) {
    case 'asf': {
      const type = packet.messageType === ASF.PRESENCE_PING ? 'presence ping' : packet.messageType === ASF.PRESENCE_PONG ? 'presence pong' : `type 0x${hex2(packet.messageType)}`;
      lines.push(`RMCP ASF seq=0x${hex2(packet.rmcpSequence)} iana=${packet.iana} ${type} tag=${packet.tag} data=${hex(packet.data)}`);
      if (packet.messageType === ASF.PRESENCE_PONG) {
        guard(lines, '  ', packet.data, () => {
          const p = decodeAsfPong(packet);
          lines.push(`  pong iana=${p.iana} oem=0x${p.oemDefined.toString(16)} ipmi=${yes(p.ipmi)} asf-version=${p.asfVersion} security-extensions=${yes(p.securityExtensions)}`);
        });
      }
      break;
    }
    case 'ipmi15':
      lines.push(`RMCP IPMI v1.5 session auth=${AUTH_TYPE_NAMES[packet.authType] ?? packet.authType} seq=${packet.sequence} id=${hex32(packet.sessionId)}${packet.authCode ? ` authcode=${hex(packet.authCode)}` : ''}`);
      formatMessageBytes(lines, '  ', packet.message);
      break;
    case 'rmcp+':
      formatRmcpPlus(lines, packet, ctx);
      break;
  }
  return `${lines.join('\n')}\n`;
}

function guard(lines: string[], indent: string, raw: Buffer, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    lines.push(`${indent}undecodable ${hex(raw)}: ${(err as Error).message}`);
  }
}

function formatRmcpPlus(lines: string[], p: RmcpPlusPacket, ctx: FormatContext): void {
  const flags = [p.encrypted ? 'encrypted' : '', p.authenticated ? 'authenticated' : ''].filter(Boolean).join(' ');
  lines.push(`RMCP+ session payload=${name(PAYLOAD_NAMES, p.payloadType)}${flags ? ` ${flags}` : ''} id=${hex32(p.sessionId)} seq=${p.sequence} length=${p.payload.length}`);
  if (p.oem) lines.push(`  oem iana=${p.oem.iana} payload-id=0x${p.oem.payloadId.toString(16)}`);
  if (p.trailer) {
    const verdict = ctx.integrity === undefined ? '' : ` (${ctx.integrity})`;
    lines.push(`  integrity pad=${p.trailer.padLength} next-header=0x${hex2(p.trailer.nextHeader)} authcode=${hex(p.trailer.authCode)}${verdict}`);
  }
  let payload = p.payload;
  if (p.encrypted) {
    lines.push(`  confidentiality iv=${hex(p.payload.subarray(0, 16))} ciphertext=${Math.max(0, p.payload.length - 16)} bytes`);
    if (ctx.plaintext === undefined) {
      lines.push('  (no keys: payload not decrypted)');
      return;
    }
    payload = ctx.plaintext;
    lines.push(`  decrypted ${payload.length} bytes`);
  }
  const i = '  ';
  guard(lines, i, payload, () => {
    switch (p.payloadType) {
      case PAYLOAD_TYPE.IPMI:
        formatMessageBytes(lines, i, payload);
        break;
      case PAYLOAD_TYPE.OPEN_SESSION_REQUEST: {
        const m = decodeOpenSessionRequest(payload);
        lines.push(`${i}tag=${m.tag} privilege=${privilege(m.privilege)} console-session=${hex32(m.consoleSessionId)}`);
        lines.push(`${i}auth=${name(AUTH_ALG_NAMES, m.authAlg)} integrity=${name(INTEGRITY_ALG_NAMES, m.integrityAlg)} confidentiality=${name(CONFIDENTIALITY_ALG_NAMES, m.confidentialityAlg)}`);
        break;
      }
      case PAYLOAD_TYPE.OPEN_SESSION_RESPONSE: {
        const m = decodeOpenSessionResponse(payload);
        lines.push(`${i}tag=${m.tag} status=${status(m.status)} privilege=${privilege(m.privilege)} console-session=${sid(m.consoleSessionId)}`);
        if (m.managedSessionId !== undefined) {
          lines.push(`${i}managed-session=${hex32(m.managedSessionId)} auth=${name(AUTH_ALG_NAMES, m.authAlg!)} integrity=${name(INTEGRITY_ALG_NAMES, m.integrityAlg!)} confidentiality=${name(CONFIDENTIALITY_ALG_NAMES, m.confidentialityAlg!)}`);
        }
        break;
      }
      case PAYLOAD_TYPE.RAKP1: {
        const m = decodeRakp1(payload);
        const lookup = (m.role & RAKP_NAME_ONLY_LOOKUP) !== 0 ? 'name-only' : 'name+privilege';
        lines.push(`${i}tag=${m.tag} managed-session=${hex32(m.managedSessionId)} role=0x${hex2(m.role)} (${privilege(m.role)}, ${lookup} lookup) user=${latin1(m.username)}`);
        lines.push(`${i}console-random=${hex(m.consoleRandom)}`);
        break;
      }
      case PAYLOAD_TYPE.RAKP2: {
        const m = decodeRakp2(payload, Math.max(0, payload.length - 40));
        lines.push(`${i}tag=${m.tag} status=${status(m.status)} console-session=${sid(m.consoleSessionId)}`);
        if (m.managedRandom) {
          lines.push(`${i}managed-random=${hex(m.managedRandom)}`);
          lines.push(`${i}managed-guid=${hex(m.managedGuid!)}`);
          lines.push(`${i}key-exchange-code=${hex(m.authCode!)}`);
        }
        break;
      }
      case PAYLOAD_TYPE.RAKP3: {
        const m = decodeRakp3(payload);
        lines.push(`${i}tag=${m.tag} status=${status(m.status)} managed-session=${sid(m.managedSessionId)} key-exchange-code=${hex(m.authCode)}`);
        break;
      }
      case PAYLOAD_TYPE.RAKP4: {
        const m = decodeRakp4(payload);
        lines.push(`${i}tag=${m.tag} status=${status(m.status)} console-session=${sid(m.consoleSessionId)} integrity-check=${hex(m.icv)}`);
        break;
      }
      default:
        lines.push(`${i}payload ${hex(payload)}`);
    }
  });
}

function formatMessageBytes(lines: string[], indent: string, raw: Buffer): void {
  guard(lines, indent, raw, () => formatMessage(lines, indent, decodeIpmiMessage(raw)));
}

function formatMessage(lines: string[], indent: string, m: IpmiMessage): void {
  const fn = m.netFn & ~1;
  const cmd = `${COMMAND_NAMES[`${fn}:${m.cmd}`] ?? 'unknown'}(0x${hex2(m.cmd)})`;
  const netFn = `${NETFN_NAMES[fn] ?? 'unknown'}${m.kind === 'response' ? ' response' : ''}(0x${hex2(m.netFn)})`;
  if (m.kind === 'request') {
    lines.push(`${indent}request rsAddr=0x${hex2(m.rsAddr)} rsLUN=${m.rsLun} rqAddr=0x${hex2(m.rqAddr)} rqLUN=${m.rqLun} rqSeq=${m.rqSeq} netFn=${netFn} cmd=${cmd}`);
  } else {
    lines.push(`${indent}response rqAddr=0x${hex2(m.rqAddr)} rqLUN=${m.rqLun} rsAddr=0x${hex2(m.rsAddr)} rsLUN=${m.rsLun} rqSeq=${m.rqSeq} netFn=${netFn} cmd=${cmd}`);
    lines.push(`${indent}  completion=${completionCodeText(m.completionCode)}(0x${hex2(m.completionCode)})`);
  }
  const body = `${indent}  `;
  guard(lines, body, m.data, () => {
    const line = m.kind === 'request' ? requestBody(fn, m.cmd, m.data) : m.completionCode === 0 ? responseBody(fn, m.cmd, m.data) : undefined;
    if (line !== undefined) lines.push(...line.map((l) => `${body}${l}`));
    else if (m.data.length > 0) lines.push(`${body}data=${hex(m.data)}`);
  });
}

function bootFlags(f: BootFlags): string {
  return `boot-flags valid=${yes(f.valid)} persistent=${yes(f.persistent)} efi=${yes(f.efi)} device=${BOOT_DEVICE_NAMES[f.device] ?? 'reserved'}(0x${f.device.toString(16)}) other=0x${hex2(f.data2Other)},0x${hex2(f.data3)},0x${hex2(f.data4)},0x${hex2(f.data5)}`;
}

function requestBody(netFn: number, cmd: number, d: Buffer): string[] | undefined {
  if (netFn === NETFN.APP) {
    switch (cmd) {
      case APP_CMD.GET_CHANNEL_AUTH_CAPABILITIES:
        if (d.length !== 2) return undefined;
        return [`channel=0x${hex2(d[0]! & 0x0f)} v2-extended-data=${yes((d[0]! & 0x80) !== 0)} privilege=${privilege(d[1]!)}`];
      case APP_CMD.SET_SESSION_PRIVILEGE_LEVEL:
        if (d.length !== 1) return undefined;
        return [`privilege=${privilege(d[0]!)}`];
      case APP_CMD.CLOSE_SESSION:
        return [`session=${hex32(decodeCloseSessionRequest(d).sessionId)}`];
      case APP_CMD.GET_DEVICE_ID:
      case APP_CMD.GET_SYSTEM_GUID:
        return d.length === 0 ? [] : undefined;
    }
  }
  if (netFn === NETFN.CHASSIS) {
    switch (cmd) {
      case CHASSIS_CMD.GET_CHASSIS_STATUS:
        return d.length === 0 ? [] : undefined;
      case CHASSIS_CMD.CHASSIS_CONTROL:
        if (d.length !== 1) return undefined;
        return [`control=${CHASSIS_CONTROL_NAMES[d[0]! & 0x0f] ?? 'reserved'}(0x${hex2(d[0]!)})`];
      case CHASSIS_CMD.CHASSIS_IDENTIFY:
        if (d.length > 2) return undefined;
        return [`interval=${d.length > 0 ? `${d[0]}s` : 'default'}${d.length > 1 ? ` force-on=${yes((d[1]! & 1) !== 0)}` : ''}`];
      case CHASSIS_CMD.SET_SYSTEM_BOOT_OPTIONS: {
        const r = decodeSetBootOptionsRequest(d);
        const head = `parameter=${r.parameter} mark-invalid=${yes(r.markInvalid)}`;
        return r.bootFlags ? [head, bootFlags(r.bootFlags)] : [`${head} data=${hex(r.data)}`];
      }
      case CHASSIS_CMD.GET_SYSTEM_BOOT_OPTIONS:
        if (d.length !== 3) return undefined;
        return [`parameter=${d[0]! & 0x7f} set=${d[1]} block=${d[2]}`];
    }
  }
  return undefined;
}

function responseBody(netFn: number, cmd: number, d: Buffer): string[] | undefined {
  if (netFn === NETFN.APP) {
    switch (cmd) {
      case APP_CMD.GET_CHANNEL_AUTH_CAPABILITIES: {
        const c = decodeChannelAuthCapabilities(d);
        return [
          `channel=${c.channel} auth-types=0x${hex2(c.authTypes)} extended=${yes(c.extendedCapabilities)} ipmi15=${yes(c.ipmi15)} ipmi20=${yes(c.ipmi20)}`,
          `kg-set=${yes(c.kgSet)} per-message-auth-disabled=${yes(c.perMessageAuthDisabled)} user-level-auth-disabled=${yes(c.userLevelAuthDisabled)} non-null-users=${yes(c.nonNullUsernames)} null-users=${yes(c.nullUsernames)} anonymous=${yes(c.anonymousLogin)} oem=${c.oemId}/${c.oemAuxiliary}`,
        ];
      }
      case APP_CMD.SET_SESSION_PRIVILEGE_LEVEL:
        return [`privilege=${privilege(decodeSetSessionPrivilege(d).privilege)}`];
      case APP_CMD.CLOSE_SESSION:
        return d.length === 0 ? [] : undefined;
      case APP_CMD.GET_DEVICE_ID: {
        const v = decodeDeviceId(d);
        return [
          `device-id=${v.deviceId} revision=${v.deviceRevision} sdrs=${yes(v.providesSdrs)} firmware=${firmwareVersion(v)} update-in-progress=${yes(v.updateInProgress)} ipmi=${v.ipmiVersion}`,
          `manufacturer=${v.manufacturerId} product=0x${v.productId.toString(16).padStart(4, '0')} support=0x${hex2(v.additionalSupport)}${v.auxFirmware ? ` aux=${hex(v.auxFirmware)}` : ''}`,
        ];
      }
      case APP_CMD.GET_SYSTEM_GUID: {
        const g = decodeSystemGuid(d);
        return [`guid=${hex(g)} uuid=${guidToUuid(g)}`];
      }
    }
  }
  if (netFn === NETFN.CHASSIS) {
    switch (cmd) {
      case CHASSIS_CMD.GET_CHASSIS_STATUS: {
        const s = decodeChassisStatus(d);
        return [
          `power=${s.powerOn ? 'on' : 'off'} overload=${yes(s.powerOverload)} interlock=${yes(s.interlock)} fault=${yes(s.powerFault)} control-fault=${yes(s.powerControlFault)} restore=${s.restorePolicy} last-event=0x${hex2(s.lastPowerEvent)}`,
          `intrusion=${yes(s.intrusion)} panel-lockout=${yes(s.frontPanelLockout)} drive-fault=${yes(s.driveFault)} fan-fault=${yes(s.fanFault)} identify=${s.identify ?? 'not reported'}${s.frontPanelButtons === undefined ? '' : ` buttons=0x${hex2(s.frontPanelButtons)}`}`,
        ];
      }
      case CHASSIS_CMD.CHASSIS_CONTROL:
      case CHASSIS_CMD.CHASSIS_IDENTIFY:
      case CHASSIS_CMD.SET_SYSTEM_BOOT_OPTIONS:
        return d.length === 0 ? [] : undefined;
      case CHASSIS_CMD.GET_SYSTEM_BOOT_OPTIONS: {
        const b = decodeGetBootOptions(d);
        const head = `version=${b.version} parameter=${b.parameter} invalid=${yes(b.invalid)}`;
        return b.bootFlags ? [head, bootFlags(b.bootFlags)] : [`${head} data=${hex(b.data)}`];
      }
    }
  }
  return undefined;
}
