// MAC addresses: one canonical text form, lower-case colon-separated (aa:bb:cc:dd:ee:ff), everywhere:
// store keys, indexes, config, API and logs.

/** Accepts aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff and aabb.ccdd.eeff (any case); `undefined` otherwise. */
export function parseMac(text: string): string | undefined {
  const hex = text.trim().toLowerCase().replace(/[:.-]/g, '');
  if (!/^[0-9a-f]{12}$/.test(hex)) return undefined;
  const sep = /^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$|^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$/i;
  if (!sep.test(text.trim())) return undefined;
  return hex.match(/../g)!.join(':');
}

/** The canonical text of a 6-byte hardware address. */
export function formatMac(bytes: Uint8Array): string {
  if (bytes.length < 6) throw new TypeError(`formatMac: ${bytes.length} bytes`);
  let out = '';
  for (let i = 0; i < 6; i++) out += (i ? ':' : '') + bytes[i]!.toString(16).padStart(2, '0');
  return out;
}

/** 6 bytes from canonical (or any accepted) text; throws TypeError on bad input (a caller bug). */
export function macBytes(text: string): Buffer {
  const mac = parseMac(text);
  if (mac === undefined) throw new TypeError(`macBytes: not a MAC: ${text}`);
  return Buffer.from(mac.replace(/:/g, ''), 'hex');
}
