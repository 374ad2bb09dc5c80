// Netascii (RFC 1350 §1, after RFC 764 Telnet NVT): what a server sends for mode "netascii". Every byte
// maps on its own (LF -> CR LF, CR -> CR NUL, the rest unchanged), so a file can be converted piece by
// piece with no state carried across pieces. Only the sending direction: metalbox never receives files.

const CR = 0x0d;
const LF = 0x0a;

/** The netascii form of `data` (a new buffer; `data` itself when it holds no CR or LF). */
export function toNetascii(data: Buffer): Buffer {
  let extra = 0;
  for (let i = data.indexOf(CR); i >= 0; i = data.indexOf(CR, i + 1)) extra++;
  for (let i = data.indexOf(LF); i >= 0; i = data.indexOf(LF, i + 1)) extra++;
  if (extra === 0) return data;
  const out = Buffer.allocUnsafe(data.length + extra);
  let o = 0;
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (b === LF) { out[o++] = CR; out[o++] = LF; }
    else if (b === CR) { out[o++] = CR; out[o++] = 0; }
    else out[o++] = b;
  }
  return out;
}

/** The inverse of toNetascii (CR LF -> LF, CR NUL -> CR), for tests and clients; a lone CR stays. */
export function fromNetascii(data: Buffer): Buffer {
  const out = Buffer.allocUnsafe(data.length);
  let o = 0;
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (b === CR && i + 1 < data.length && (data[i + 1] === LF || data[i + 1] === 0)) {
      out[o++] = data[i + 1] === LF ? LF : CR;
      i++;
    } else out[o++] = b;
  }
  return out.subarray(0, o);
}
