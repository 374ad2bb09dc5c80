// The clock-selection math, pure: the on-wire offset and delay of one exchange (RFC 5905 §8), a reply's
// sanity tests (the packet tests of RFC 5905 §8 and Appendix A.5.1.1), a simplified clock filter (the
// lowest-delay sample of the last eight, RFC 5905 §10), the root distance (§10, Appendix A.5.5.2) and the
// choice of the upstream to follow (simplified §11: the lowest root distance among reachable upstreams).
//
// Times are seconds (doubles) unless a name says otherwise; `now` values are a monotonic clock in seconds.
import { isZeroTimestamp, kissCode, LEAP, MODE, ntpDiff, ntpEqual, shortToSeconds, type NtpPacket, type NtpTimestamp } from '../../protocols/ntp/index.ts';

/** RFC 5905 §7.2: frequency tolerance, 15 ppm: how fast dispersion grows with age. */
export const PHI = 15e-6;
/** RFC 5905 §7.2 MAXDISP: a dispersion beyond this means "no use". */
export const MAXDISP = 16;
/** RFC 5905 §7.2 MAXDIST: root distance beyond which an upstream cannot be selected. */
export const MAXDIST = 1.5;
/** RFC 5905 §7.2 NSTAGE: the clock filter's depth. */
export const FILTER_STAGES = 8;
/** RFC 5905 §7.2 MAXSTRAT: the stratum that means "unsynchronised". */
export const MAXSTRAT = 16;

/** The four timestamps of one client/server exchange (RFC 5905 §8 Figure 15), as the client sees them. */
export interface Exchange {
  /** T1: when the request left (our clock). */
  t1: NtpTimestamp;
  /** T2: when the server received it (its clock). */
  t2: NtpTimestamp;
  /** T3: when the server sent the reply (its clock). */
  t3: NtpTimestamp;
  /** T4: when the reply arrived (our clock). */
  t4: NtpTimestamp;
}

/**
 * RFC 5905 §8: offset θ = ((T2 - T1) + (T3 - T4)) / 2 (how far the server's clock is ahead of ours) and
 * round-trip delay δ = (T4 - T1) - (T3 - T2), the server's own processing time taken out. Each difference is
 * taken between timestamps first (64-bit modular, right across the 2036 wrap), then combined as doubles.
 */
export function onWire(x: Exchange): { offset: number; delay: number } {
  const a = ntpDiff(x.t2, x.t1);
  const b = ntpDiff(x.t3, x.t4);
  return { offset: (a + b) / 2, delay: ntpDiff(x.t4, x.t1) - ntpDiff(x.t3, x.t2) };
}

export interface Sample {
  /** θ: the upstream's clock minus ours, seconds. */
  offset: number;
  /** δ: round-trip delay, seconds (at least the precision: never 0 or negative). */
  delay: number;
  /** ε at the time of the sample: precisions plus PHI x the round trip. */
  dispersion: number;
  /** Monotonic seconds when it was taken. */
  at: number;
  /** Our (host) clock when the reply arrived, T4: the reference time we serve is this plus the offset. */
  hostTime: NtpTimestamp;
  /** What the upstream said about itself. */
  leap: number;
  stratum: number;
  /** Seconds. */
  rootDelay: number;
  rootDispersion: number;
  referenceId: number;
  /** The upstream's precision (log2 s). */
  precision: number;
}

export type ReplyVerdict =
  | { ok: true; sample: Sample }
  | { ok: false; kiss: string }
  | { ok: false; reason: 'not-server' | 'bogus-origin' | 'unsynchronised' | 'bad-stratum' | 'zero-timestamp' | 'bad-delay' | 'bad-distance' | 'future-reference' };

/**
 * Checks a reply to our request and turns it into a sample. `sentTransmit` is what our request carried in its
 * transmit field (a random cookie, not our clock: RFC 9109 style data minimisation); the reply's origin must
 * echo it bit for bit (RFC 5905 §8 "bogus" test), which also defeats off-path spoofing. `t1`/`t4` are our
 * clock at send and receive, `ourPrecision` our log2 precision, `at` monotonic seconds now.
 * Kiss-o'-Death packets (stratum 0) come back as `{ kiss }` once their origin matched: the caller obeys
 * them (RATE: back off; DENY, RSTR: stop).
 */
export function checkReply(reply: NtpPacket, sentTransmit: NtpTimestamp, t1: NtpTimestamp, t4: NtpTimestamp, ourPrecision: number, at: number): ReplyVerdict {
  if (reply.mode !== MODE.SERVER) return { ok: false, reason: 'not-server' };
  if (!ntpEqual(reply.originTime, sentTransmit)) return { ok: false, reason: 'bogus-origin' };
  const kiss = kissCode(reply);
  if (reply.stratum === 0) return { ok: false, kiss: kiss ?? '????' };
  if (reply.leap === LEAP.UNSYNCHRONISED) return { ok: false, reason: 'unsynchronised' };
  if (reply.stratum >= MAXSTRAT) return { ok: false, reason: 'bad-stratum' };
  if (isZeroTimestamp(reply.receiveTime) || isZeroTimestamp(reply.transmitTime)) return { ok: false, reason: 'zero-timestamp' };
  // A reference time after the reply's transmit time is impossible (RFC 5905 A.5.1.1 test 10 in spirit).
  if (!isZeroTimestamp(reply.referenceTime) && ntpDiff(reply.referenceTime, reply.transmitTime) > 0) return { ok: false, reason: 'future-reference' };
  const { offset, delay: rawDelay } = onWire({ t1, t2: reply.receiveTime, t3: reply.transmitTime, t4 });
  if (!(rawDelay > -1e-3) || rawDelay > MAXDISP) return { ok: false, reason: 'bad-delay' };
  const rho = 2 ** ourPrecision;
  const delay = Math.max(rawDelay, rho);
  const rootDelay = shortToSeconds(reply.rootDelay);
  const rootDispersion = shortToSeconds(reply.rootDispersion);
  // RFC 5905 §8: ε = ρ(peer) + ρ(system) + PHI x (T4 - T1).
  const dispersion = 2 ** reply.precision + rho + PHI * ntpDiff(t4, t1);
  if (rootDelay / 2 + rootDispersion >= MAXDISP) return { ok: false, reason: 'bad-distance' };
  return {
    ok: true,
    sample: { offset, delay, dispersion, at, hostTime: t4, leap: reply.leap, stratum: reply.stratum, rootDelay, rootDispersion, referenceId: reply.referenceId, precision: reply.precision },
  };
}

/** Adds a sample to an upstream's filter (the last FILTER_STAGES kept), oldest dropped. Returns the new list. */
export function addSample(samples: readonly Sample[], s: Sample): Sample[] {
  const out = [...samples, s];
  return out.length > FILTER_STAGES ? out.slice(out.length - FILTER_STAGES) : out;
}

/**
 * The clock filter, simplified (RFC 5905 §10): the sample with the lowest delay, because queueing only ever
 * adds delay and the error of an offset is bounded by half its delay. As in the RFC's filter, age is charged
 * at PHI (the sample's error bound is delay/2 + its dispersion now), so an old sample loses to a fresh one
 * whose extra delay is smaller than what the old one's age cost it. Ties go to the newest.
 */
export function bestSample(samples: readonly Sample[], now: number): Sample | undefined {
  let best: Sample | undefined;
  let bestError = Infinity;
  for (const s of samples) {
    const error = s.delay / 2 + dispersionNow(s, now);
    if (error < bestError || (error === bestError && best !== undefined && s.at > best.at)) {
      best = s;
      bestError = error;
    }
  }
  return best;
}

/** Dispersion of a sample now: its ε grown by PHI per second of age (RFC 5905 §10). */
export function dispersionNow(s: Sample, now: number): number {
  return s.dispersion + PHI * Math.max(0, now - s.at);
}

/**
 * Root distance λ (RFC 5905 Appendix A.5.5.2, without jitter): half the total round trip to the reference
 * clock plus every dispersion on the way. It bounds the error of the time an upstream gives us.
 */
export function rootDistance(s: Sample, now: number): number {
  return (s.rootDelay + s.delay) / 2 + s.rootDispersion + dispersionNow(s, now);
}

export interface Candidate {
  /** The upstream's key (its name as configured). */
  id: string;
  /** RFC 5905 §9.2 reach register: bit 0 is the latest poll; 0 means unreachable. */
  reach: number;
  sample: Sample | undefined;
}

/**
 * The upstream to follow: among reachable ones with a usable sample (stratum below 16, root distance under
 * MAXDIST), the lowest root distance; ties go to the lower stratum, then to the configured order.
 * Undefined when none qualifies: the server is then unsynchronised.
 */
export function selectUpstream(candidates: readonly Candidate[], now: number): { id: string; sample: Sample; distance: number } | undefined {
  let best: { id: string; sample: Sample; distance: number } | undefined;
  for (const c of candidates) {
    if (c.reach === 0 || !c.sample || c.sample.stratum >= MAXSTRAT) continue;
    const distance = rootDistance(c.sample, now);
    if (distance >= MAXDIST) continue;
    if (!best || distance < best.distance || (distance === best.distance && c.sample.stratum < best.sample.stratum)) best = { id: c.id, sample: c.sample, distance };
  }
  return best;
}
