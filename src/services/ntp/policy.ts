// What the NTP server says, pure: the header every reply carries at this moment (from the selected upstream,
// the operator's local stratum, or "unsynchronised"), and the reply to one request. The socket glue
// (server.ts) stamps the receive time when the datagram arrives and the transmit time just before it leaves.
import { LEAP, MODE, STRATUM_KOD, STRATUM_UNSYNCHRONISED, ZERO_TIMESTAMP, ntpAdd, refIdFromText, secondsToShort, type NtpPacket, type NtpTimestamp } from '../../protocols/ntp/index.ts';
import { dispersionNow, MAXDISP, type Sample } from './selection.ts';

/** Reference id of the local clock above stratum 1: 127.127.1.1, the historical LOCAL driver (chrony sends it too). */
export const LOCAL_REFID = 0x7f7f0101;

/** The header fields of every reply until the next recomputation, plus what the API shows. */
export interface ServedTime {
  /** upstream: following `upstream`; local: ntp.localStratum; none: unsynchronised. */
  source: 'upstream' | 'local' | 'none';
  leap: number;
  stratum: number;
  precision: number;
  /** Seconds (the wire carries the short format). */
  rootDelay: number;
  rootDispersion: number;
  referenceId: number;
  /** When the time we serve was last set from a source, in the served timescale; zero when never. */
  referenceTime: NtpTimestamp;
  /** Seconds added to the host clock for every timestamp we send: the selected upstream's offset. */
  offset: number;
  /** The upstream followed (configured name), when source is upstream. */
  upstream?: string;
}

export interface ServeInput {
  /** The selected upstream, its best sample and its IPv4 address as a number (the reference id). */
  selected?: { id: string; sample: Sample; address: number; sampleHostTime: NtpTimestamp };
  localStratum?: number;
  /** The offset of the last upstream we followed: kept in holdover (local stratum or unsynchronised). */
  holdoverOffset: number;
  precision: number;
  /** Monotonic seconds now. */
  now: number;
  /** The host clock now. */
  hostNow: NtpTimestamp;
}

/**
 * The served header. Following an upstream: stratum = its stratum + 1; root delay = its root delay + our
 * delay to it; root dispersion = its root dispersion + the sample's dispersion grown with age (RFC 5905
 * §11.3, without its |θ| term: we serve the offset-corrected time, so θ is no error of ours); reference id = its IPv4
 * address; reference time = when the sample was taken. Without one: the local stratum if the operator set
 * one, else leap 3 and stratum 16 with the largest dispersion, which every client rejects.
 */
export function servedTime(input: ServeInput): ServedTime {
  const rho = 2 ** input.precision;
  const sel = input.selected;
  if (sel && sel.sample.stratum + 1 < STRATUM_UNSYNCHRONISED) {
    const s = sel.sample;
    return {
      source: 'upstream',
      leap: s.leap,
      stratum: s.stratum + 1,
      precision: input.precision,
      rootDelay: s.rootDelay + s.delay,
      rootDispersion: Math.min(MAXDISP, s.rootDispersion + dispersionNow(s, input.now) + rho),
      referenceId: sel.address,
      referenceTime: ntpAdd(sel.sampleHostTime, s.offset),
      offset: s.offset,
      upstream: sel.id,
    };
  }
  if (input.localStratum !== undefined) {
    return {
      source: 'local',
      leap: LEAP.NONE,
      stratum: input.localStratum,
      precision: input.precision,
      rootDelay: 0,
      rootDispersion: rho,
      referenceId: input.localStratum === 1 ? refIdFromText('LOCL') : LOCAL_REFID,
      referenceTime: ntpAdd(input.hostNow, input.holdoverOffset),
      offset: input.holdoverOffset,
    };
  }
  return {
    source: 'none',
    leap: LEAP.UNSYNCHRONISED,
    stratum: STRATUM_UNSYNCHRONISED,
    precision: input.precision,
    rootDelay: 0,
    rootDispersion: MAXDISP,
    referenceId: 0,
    referenceTime: ZERO_TIMESTAMP,
    offset: input.holdoverOffset,
  };
}

/** The header fields in wire form, computed once per recomputation rather than per request. */
export type ReplyHeader = Pick<ServedTime, 'leap' | 'stratum' | 'precision' | 'rootDelay' | 'rootDispersion' | 'referenceId' | 'referenceTime'>;

export function replyHeader(s: ServedTime): ReplyHeader {
  return {
    leap: s.leap,
    stratum: s.stratum,
    precision: s.precision,
    rootDelay: secondsToShort(s.rootDelay),
    rootDispersion: secondsToShort(s.rootDispersion),
    referenceId: s.referenceId,
    referenceTime: s.referenceTime,
  };
}

/**
 * The reply to a request, or undefined when it gets none. Only client requests (mode 3) are answered:
 * symmetric, broadcast and server packets have no business on a server port (a mode-4 packet answered would
 * start a loop between two servers). The reply (RFC 5905 §8, §9.2): mode 4, the request's version and poll,
 * origin = the request's transmit timestamp bit for bit, receive = when the request arrived; its transmit
 * time is `receive` here and is overwritten just before the datagram leaves. Extension fields and a MAC in
 * the request are ignored: metalbox holds no keys, so the reply is unauthenticated and the client's own
 * policy decides.
 */
export function answer(req: NtpPacket, h: ReplyHeader, receive: NtpTimestamp): NtpPacket | undefined {
  if (req.mode !== MODE.CLIENT) return undefined;
  return {
    leap: h.leap,
    version: req.version,
    mode: MODE.SERVER,
    stratum: h.stratum,
    poll: req.poll,
    precision: h.precision,
    rootDelay: h.rootDelay,
    rootDispersion: h.rootDispersion,
    referenceId: h.referenceId,
    referenceTime: h.referenceTime,
    originTime: req.transmitTime,
    receiveTime: receive,
    transmitTime: receive,
    extensions: [],
  };
}

/**
 * A Kiss-o'-Death reply (RFC 5905 §7.4): leap 3, stratum 0, the kiss code as reference id, the client's
 * transmit time as origin so it can match it. It carries no time of ours (receive and transmit zero, as
 * ntpd's do): a client that ignores the kiss gets nothing to set its clock by.
 */
export function kiss(req: NtpPacket, code: string): NtpPacket {
  return {
    leap: LEAP.UNSYNCHRONISED,
    version: req.version,
    mode: MODE.SERVER,
    stratum: STRATUM_KOD,
    poll: req.poll,
    precision: 0,
    rootDelay: 0,
    rootDispersion: 0,
    referenceId: refIdFromText(code),
    referenceTime: ZERO_TIMESTAMP,
    originTime: req.transmitTime,
    receiveTime: ZERO_TIMESTAMP,
    transmitTime: ZERO_TIMESTAMP,
    extensions: [],
  };
}
