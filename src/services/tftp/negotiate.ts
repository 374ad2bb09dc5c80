// Option negotiation for a read request (RFC 2347): which of the client's options we grant, and the
// OACK that says so. Pure: the caps come from config and the interface MTU.
import { DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, type TftpOption } from '../../protocols/tftp/index.ts';

export interface NegotiationLimits {
  /** Largest blksize granted: tftp.maxBlockSize, and the interface MTU less 32 (IPv4 20 + UDP 8 + TFTP 4). */
  maxBlockSize: number;
  /** tftp.maxWindowSize. */
  maxWindowSize: number;
  /** Bytes in flight per transfer at most: bounds memory and the socket's send queue (windowsize x blksize). */
  maxWindowBytes: number;
}

export interface Negotiated {
  blockSize: number;
  windowSize: number;
  /** RFC 2349 timeout the client asked for, in seconds; undefined: ours (tftp.timeoutSeconds). */
  timeoutSeconds?: number;
  /** The options to put in an OACK, in the client's order and spelling; empty: send no OACK, start with DATA 1. */
  oack: TftpOption[];
}

/** A decimal option value: digits only, no sign, no spaces; undefined otherwise. */
function decimal(value: string): number | undefined {
  return /^[0-9]{1,10}$/.test(value) ? Number(value) : undefined;
}

/**
 * Grants what we can of the client's options. An option we do not know, or one whose value is invalid, is
 * left out of the OACK (RFC 2347: the client then falls back to the RFC 1350 default for it).
 * `size` is what tsize reports; undefined when it is not known up front (netascii), and tsize is then left out.
 */
export function negotiate(options: readonly TftpOption[], size: number | undefined, limits: NegotiationLimits): Negotiated {
  const out: Negotiated = { blockSize: DEFAULT_BLOCK_SIZE, windowSize: 1, oack: [] };
  const granted = new Map<string, TftpOption>();
  for (const o of options) {
    const key = o.name.toLowerCase();
    const v = decimal(o.value);
    if (v === undefined) continue;
    switch (key) {
      case 'blksize':
        // RFC 2348: 8 to 65464; we may answer with less than asked, never more.
        if (v < 8 || v > MAX_BLOCK_SIZE) continue;
        out.blockSize = Math.min(v, limits.maxBlockSize);
        granted.set(key, { name: o.name, value: String(out.blockSize) });
        break;
      case 'timeout':
        // RFC 2349: 1 to 255 seconds; the server accepts it as it is or leaves it out.
        if (v < 1 || v > 255) continue;
        out.timeoutSeconds = v;
        granted.set(key, { name: o.name, value: String(v) });
        break;
      case 'tsize':
        // RFC 2349 §3 (read request): the client sends 0 and the server answers with the size.
        if (size === undefined) continue;
        granted.set(key, { name: o.name, value: String(size) });
        break;
      case 'windowsize':
        // RFC 7440: 1 to 65535; we may answer with less.
        if (v < 1 || v > 65535) continue;
        granted.set(key, { name: o.name, value: '' });
        out.windowSize = v;
        break;
      default:
        break;
    }
  }
  // The window is capped once the block size is known (the options may come in any order).
  if (granted.has('windowsize')) {
    out.windowSize = Math.max(1, Math.min(out.windowSize, limits.maxWindowSize, Math.floor(limits.maxWindowBytes / out.blockSize)));
    granted.get('windowsize')!.value = String(out.windowSize);
  }
  out.oack = options.map((o) => granted.get(o.name.toLowerCase())).filter((o): o is TftpOption => o !== undefined);
  return out;
}
