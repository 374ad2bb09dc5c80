// A stable text dump of an NTP packet, one field a line, for logs and golden files.
import { kissCode, refIdAddress, refIdText, type NtpPacket } from './packet.ts';
import { formatTimestampHex, isZeroTimestamp, ntpToUnixMs, shortToSeconds, type NtpTimestamp } from './time.ts';

const MODE_NAMES = ['reserved', 'symmetric-active', 'symmetric-passive', 'client', 'server', 'broadcast', 'control', 'private'];
const LEAP_NAMES = ['none', 'add-second', 'delete-second', 'unsynchronised'];

function timestamp(t: NtpTimestamp): string {
  if (isZeroTimestamp(t)) return `${formatTimestampHex(t)} (zero)`;
  return `${formatTimestampHex(t)} (${new Date(Math.floor(ntpToUnixMs(t))).toISOString()})`;
}

/** The reference id as RFC 5905 §7.3 reads it at this stratum. */
function refId(p: NtpPacket): string {
  const hex = `0x${p.referenceId.toString(16).padStart(8, '0')}`;
  const kiss = kissCode(p);
  if (kiss !== undefined) return `${hex} kiss=${kiss}`;
  if (p.stratum === 1) {
    const text = refIdText(p.referenceId);
    return text === undefined ? hex : `${hex} "${text}"`;
  }
  if (p.stratum >= 2 && p.stratum <= 15) return `${hex} ${refIdAddress(p.referenceId)}`;
  return hex;
}

export function formatNtp(p: NtpPacket): string {
  const lines = [
    `version ${p.version} mode ${p.mode} (${MODE_NAMES[p.mode] ?? '?'})`,
    `leap ${p.leap} (${LEAP_NAMES[p.leap] ?? '?'})`,
    `stratum ${p.stratum}${p.stratum === 0 ? ' (kiss-o\'-death / unspecified)' : p.stratum === 16 ? ' (unsynchronised)' : ''}`,
    `poll ${p.poll}`,
    `precision ${p.precision}`,
    `root-delay ${shortToSeconds(p.rootDelay).toFixed(6)} s (0x${p.rootDelay.toString(16).padStart(8, '0')})`,
    `root-dispersion ${shortToSeconds(p.rootDispersion).toFixed(6)} s (0x${p.rootDispersion.toString(16).padStart(8, '0')})`,
    `reference-id ${refId(p)}`,
    `reference ${timestamp(p.referenceTime)}`,
    `origin ${timestamp(p.originTime)}`,
    `receive ${timestamp(p.receiveTime)}`,
    `transmit ${timestamp(p.transmitTime)}`,
  ];
  for (const e of p.extensions) lines.push(`extension type=0x${e.type.toString(16).padStart(4, '0')} length=${e.value.length + 4} ${e.value.toString('hex')}`);
  if (p.mac) lines.push(p.mac.digest.length === 0 ? `mac key=${p.mac.keyId} crypto-nak` : `mac key=${p.mac.keyId} digest=${p.mac.digest.toString('hex')}`);
  return `${lines.join('\n')}\n`;
}
