// RMCP/ASF presence ping (ASF 2.0 §3.2.4.3; IPMI v2.0 §13.2.3): is there an IPMI-capable BMC at this
// address? No credentials, no session. "Nothing answered" is a normal result (undefined), not an error.
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { MetalboxError } from '../../lib/errors.ts';
import { openUdpSocket } from '../../lib/udp-socket.ts';
import { ASF, decodeAsfPong, decodeIpmiPacket, encodeAsfPing, type AsfPong } from '../../protocols/ipmi/index.ts';
import { IPMI_PORT } from './client.ts';

export interface IpmiPingOptions {
  port?: number;
  /** Wait per ping before sending the next; default 1000 ms. */
  timeoutMs?: number;
  /** Pings sent in all; default 3. */
  attempts?: number;
  signal?: AbortSignal;
}

export interface IpmiPingResult extends AsfPong {
  /** Round trip of the ping that was answered, ms. */
  rttMs: number;
}

/**
 * Sends up to `attempts` presence pings to an IPv4 address and resolves with the first matching pong, or
 * undefined when none came. Rejects only for a bad address (BMC_INVALID) or when the ping cannot be sent
 * at all (BMC_UNREACHABLE, e.g. no route).
 */
export function ipmiPing(address: string, options: IpmiPingOptions = {}): Promise<IpmiPingResult | undefined> {
  if (isIP(address) !== 4) return Promise.reject(new MetalboxError('BMC_INVALID', `ipmiPing needs an IPv4 address, got ${JSON.stringify(address)}`, { details: { address } }));
  const port = options.port ?? IPMI_PORT;
  const timeoutMs = options.timeoutMs ?? 1000;
  const attempts = options.attempts ?? 3;
  const tag = randomBytes(1)[0]! % 255; // 255 is reserved (ASF 2.0 §3.2.4.3: "message tag FFh ... no RMCP ACK")
  return new Promise((resolve, reject) => {
    let sentAt = 0;
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    const socket = openUdpSocket({ port: 0, reuseAddress: false }, (d) => {
      if (d.address !== address || d.port !== port) return;
      try {
        const p = decodeIpmiPacket(d.data);
        if (p.kind !== 'asf' || p.messageType !== ASF.PRESENCE_PONG || p.tag !== tag) return;
        const pong = decodeAsfPong(p);
        done(() => resolve({ ...pong, rttMs: performance.now() - sentAt }));
      } catch {
        // Not a pong: keep waiting.
      }
    });
    const onAbort = (): void => done(() => resolve(undefined));
    const done = (settle: () => void): void => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.close();
      settle();
    };
    const ping = encodeAsfPing(tag);
    const next = (): void => {
      if (sent >= attempts) {
        done(() => resolve(undefined));
        return;
      }
      sent++;
      sentAt = performance.now();
      try {
        socket.send(ping, address, port);
      } catch (err) {
        done(() => reject(new MetalboxError('BMC_UNREACHABLE', `cannot send an RMCP ping to ${address}:${port}: ${(err as Error).message}`, { cause: err, details: { address, port } })));
        return;
      }
      timer = setTimeout(next, timeoutMs);
    };
    if (options.signal?.aborted) {
      done(() => resolve(undefined));
      return;
    }
    options.signal?.addEventListener('abort', onAbort, { once: true });
    next();
  });
}
