// NTP time formats (RFC 5905 §6) and the arithmetic on them. Pure: no clock is read here.
//
// - A timestamp is 64 bits: 32 bits of seconds since 1900-01-01 (era 0) and 32 bits of fraction. It is kept
//   as two unsigned 32-bit numbers so a timestamp copied from a request goes back bit for bit (the origin
//   timestamp of a reply, RFC 5905 §8), and so no precision is lost to a double.
// - The seconds field wraps in 2036 (era 1). RFC 5905 §6: differences between timestamps are taken modulo
//   2^64 and read as signed, so they stay right across the wrap as long as the two are within 68 years.
// - The short format (root delay, root dispersion) is 16 bits of seconds and 16 of fraction.

/** An RFC 5905 64-bit timestamp: `seconds` and `fraction` are unsigned 32-bit integers. */
export interface NtpTimestamp {
  seconds: number;
  fraction: number;
}

/** Seconds from 1900-01-01 (the NTP prime epoch) to 1970-01-01 (the Unix epoch). RFC 5905 Figure 4. */
export const NTP_UNIX_OFFSET = 2_208_988_800;
const TWO32 = 4_294_967_296;

export const ZERO_TIMESTAMP: Readonly<NtpTimestamp> = Object.freeze({ seconds: 0, fraction: 0 });

/** True for the all-zero timestamp, which RFC 5905 §7.3 reserves for "unknown / not set". */
export function isZeroTimestamp(t: NtpTimestamp): boolean {
  return t.seconds === 0 && t.fraction === 0;
}

/**
 * The NTP timestamp of a Unix time given as whole seconds and a fraction of a second in [0, 1). Splitting the
 * two keeps sub-microsecond precision that a single double of milliseconds since 1970 would lose.
 * The seconds wrap modulo 2^32 (era 1 from 2036 on), as on the wire.
 */
export function ntpFromUnix(unixSeconds: number, fractionOfSecond: number): NtpTimestamp {
  let s = Math.floor(unixSeconds);
  let f = fractionOfSecond + (unixSeconds - s);
  const carry = Math.floor(f);
  s += carry;
  f -= carry;
  let fraction = Math.floor(f * TWO32);
  if (fraction >= TWO32) fraction = TWO32 - 1;
  return { seconds: (s + NTP_UNIX_OFFSET) % TWO32, fraction };
}

/** The NTP timestamp of a Unix time in milliseconds (a Date's resolution: fine for tests and formatting). */
export function ntpFromUnixMs(ms: number): NtpTimestamp {
  const s = Math.floor(ms / 1000);
  return ntpFromUnix(s, (ms - s * 1000) / 1000);
}

/**
 * Unix milliseconds of a timestamp. The era is chosen as RFC 4330 §3 does: seconds with the top bit set
 * are era 0 (1968-2036), the others era 1 (2036-2104).
 */
export function ntpToUnixMs(t: NtpTimestamp): number {
  const era = t.seconds >= 0x80000000 ? 0 : 1;
  return ((t.seconds + era * TWO32 - NTP_UNIX_OFFSET) + t.fraction / TWO32) * 1000;
}

/** `a - b` in seconds, signed, modulo 2^64 (RFC 5905 §6): right across the 2036 wrap. */
export function ntpDiff(a: NtpTimestamp, b: NtpTimestamp): number {
  return ((a.seconds - b.seconds) | 0) + (a.fraction - b.fraction) / TWO32;
}

/** `t + seconds` (seconds may be negative), wrapping like the wire format. */
export function ntpAdd(t: NtpTimestamp, seconds: number): NtpTimestamp {
  const whole = Math.floor(seconds);
  let fraction = t.fraction + Math.round((seconds - whole) * TWO32);
  let carry = 0;
  if (fraction >= TWO32) { fraction -= TWO32; carry = 1; }
  return { seconds: ((t.seconds + whole + carry) % TWO32 + TWO32) % TWO32, fraction };
}

export function ntpEqual(a: NtpTimestamp, b: NtpTimestamp): boolean {
  return a.seconds === b.seconds && a.fraction === b.fraction;
}

/** RFC 5905 §6 short format (16.16 unsigned) to seconds. */
export function shortToSeconds(raw: number): number {
  return raw / 65536;
}

/** Seconds to the short format, rounded up (a delay or dispersion must not be understated), saturating at 65535.99998 s. */
export function secondsToShort(seconds: number): number {
  if (!(seconds > 0)) return 0;
  const raw = Math.ceil(seconds * 65536);
  return raw > 0xffffffff ? 0xffffffff : raw;
}

/** A timestamp as hex `seconds.fraction`, the way ntpq and Wireshark show one. */
export function formatTimestampHex(t: NtpTimestamp): string {
  return `${t.seconds.toString(16).padStart(8, '0')}.${t.fraction.toString(16).padStart(8, '0')}`;
}
