// Who a DHCP message is from, for the per-client rate limit (dhcp.rateLimit): the client identifier (option 61,
// RFC 2132 §9.14) when the message has one, else the hardware address (chaddr). Never the source address: a
// relay (RFC 2131 §4.3.1, giaddr) sends a whole rack's messages from its one address, and a 500-machine boot
// storm through it must not be throttled as if it were one client.
//
// Read straight from the datagram's octets, before any decoding, as a number: the check runs for every datagram
// a socket hands us (flood included), so it must cost no allocation and no string. A MAC of 6 octets is itself
// the key (below 2^48); anything else (a client identifier, a longer chaddr) is hashed into [2^48, 2^53), so the
// two kinds never meet. Two clients whose identifiers collide in 52 bits would share a bucket: harmless.
// Option overload (option 52: options in sname/file) is not followed: such a client is keyed by its chaddr,
// which is as stable.

/** Fixed BOOTP header length, then the magic cookie (RFC 2131 §3). */
const OPTIONS_AT = 240;
const CHADDR_AT = 28;
const TWO_48 = 2 ** 48;

/** The rate-limit key of the DHCP message in buf[at, at + length); -1 when it is too short to be one (the decoder drops it). */
export function dhcpClientKey(buf: Buffer, at: number, length: number): number {
  if (length < CHADDR_AT + 16) return -1;
  const end = at + length;
  if (length > OPTIONS_AT && buf[at + 236] === 99 && buf[at + 237] === 130 && buf[at + 238] === 83 && buf[at + 239] === 99) {
    // RFC 2132 §2: pad (0) is one octet, end (255) stops, everything else is code, length, value.
    for (let i = at + OPTIONS_AT; i < end;) {
      const code = buf[i]!;
      if (code === 0) { i++; continue; }
      if (code === 255 || i + 1 >= end) break;
      const len = buf[i + 1]!;
      if (code === 61 && len > 0 && i + 2 + len <= end) return hashKey(buf, i + 2, i + 2 + len);
      i += 2 + len;
    }
  }
  const hlen = buf[at + 2]!;
  const c = at + CHADDR_AT;
  if (hlen === 6) return ((buf[c]! * 256 + buf[c + 1]!) * 65536 + (buf[c + 2]! * 256 + buf[c + 3]!)) * 65536 + buf[c + 4]! * 256 + buf[c + 5]!;
  return hashKey(buf, c, c + Math.min(16, hlen));
}

/** Two FNV-1a variants over buf[from, to): 52 bits, offset to 2^48 and above. */
function hashKey(buf: Buffer, from: number, to: number): number {
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  for (let i = from; i < to; i++) {
    const b = buf[i]!;
    h1 = Math.imul(h1 ^ b, 0x01000193);
    h2 = Math.imul(h2 ^ b, 0x5bd1e995);
  }
  // (h1 >>> 0) * 2^20 + 20 bits of h2 is below 2^52; + 2^48 stays below 2^53 (a safe integer).
  return TWO_48 + (h1 >>> 0) * 1_048_576 + ((h2 >>> 12) & 0xfffff);
}
