// Wake-on-LAN: a machine without a BMC powers on when its NIC sees a "magic packet" (AMD's Magic Packet
// Technology white paper, 1995): 6 bytes 0xff, then the NIC's MAC 16 times, 102 bytes in all, anywhere in a
// frame. We send it as the UDP payload of a limited broadcast (255.255.255.255, port 9 "discard" by default,
// the port wakeonlan/etherwake users expect; 7 "echo" is the other common one) out of the provisioning
// interface(s), where the sleeping NIC listens. Nothing answers a magic packet: power state is unknowable,
// and the only action is "on".
import { setTimeout as sleep } from 'node:timers/promises';
import { MetalboxError } from '../lib/errors.ts';
import { macBytes, parseMac } from '../lib/mac.ts';
import { ifIndex, openUdpSocket, type UdpSocket, type UdpSocketOptions } from '../lib/udp-socket.ts';
import type { BmcDriver, BmcEndpoint, BmcInfo, PowerAction, PowerState } from './types.ts';

export const WOL_DEFAULT_PORT = 9;
export const MAGIC_PACKET_BYTES = 102;
/** Copies sent per "on": nothing acknowledges a magic packet and a NIC in a low-power state may miss one. */
const COPIES = 3;
const COPY_GAP_MS = 50;

/** The 102-byte magic packet for `mac` (any form parseMac accepts). TypeError for a malformed MAC (a caller bug). */
export function magicPacket(mac: string): Buffer {
  const bytes = macBytes(mac);
  const packet = Buffer.alloc(MAGIC_PACKET_BYTES, 0xff);
  for (let i = 0; i < 16; i++) bytes.copy(packet, 6 + i * 6);
  return packet;
}

export interface WolOptions {
  /**
   * Interfaces the packet leaves by (a broadcast leaves by exactly the interface named in IP_PKTINFO). Empty:
   * the routing table picks one (the default route's), which is seldom the provisioning network.
   */
  interfaces: readonly string[];
  /** Destination address; default the limited broadcast. A directed broadcast (10.0.0.255) crosses routers that allow it. */
  broadcastAddress?: string;
  /** For tests: how sockets are opened. */
  openSocket?: (options: UdpSocketOptions) => UdpSocket;
}

export function createWolDriver(endpoint: BmcEndpoint, options: WolOptions): BmcDriver {
  const mac = parseMac(endpoint.address);
  if (mac === undefined) throw new MetalboxError('BMC_INVALID', `Wake-on-LAN needs the machine's MAC as its address, got "${endpoint.address}"`);
  const port = endpoint.port ?? WOL_DEFAULT_PORT;
  const destination = options.broadcastAddress ?? '255.255.255.255';
  const open = options.openSocket ?? ((o: UdpSocketOptions) => openUdpSocket(o, () => undefined));
  const unsupported = (what: string) => Promise.reject(new MetalboxError('BMC_UNSUPPORTED', `Wake-on-LAN cannot ${what}: it can only power a machine on`));

  return {
    kind: 'wol',
    // Nothing answers a magic packet.
    powerStatus: async (): Promise<PowerState> => 'unknown',
    async power(action: PowerAction, signal?: AbortSignal) {
      if (action !== 'on') return unsupported(`power ${action}`);
      const via: (number | undefined)[] = [];
      for (const name of options.interfaces) {
        const index = ifIndex(name);
        if (index === undefined) throw new MetalboxError('BMC_UNREACHABLE', `Wake-on-LAN interface ${name} does not exist`);
        via.push(index);
      }
      if (via.length === 0) via.push(undefined);
      const packet = magicPacket(mac);
      // port 0 with reuseAddress false: a fresh ephemeral port of our own (see UdpSocketOptions.reuseAddress).
      const socket = open({ port: 0, address: '0.0.0.0', broadcast: true, reuseAddress: false });
      let sent = 0;
      try {
        for (let copy = 0; copy < COPIES; copy++) {
          if (copy > 0) await sleep(COPY_GAP_MS, undefined, signal ? { signal } : {}).catch(() => undefined);
          if (signal?.aborted) throw new MetalboxError('BMC_TIMEOUT', 'Wake-on-LAN send was cancelled');
          for (const ifindex of via) {
            try {
              if (socket.send(packet, destination, port, ifindex === undefined ? undefined : { ifindex })) sent++;
            } catch (err) {
              const code = (err as MetalboxError).details?.errno;
              throw new MetalboxError('BMC_UNREACHABLE', `cannot send the Wake-on-LAN packet for ${mac}: ${typeof code === 'string' ? code : (err as Error).message}`, { cause: err });
            }
          }
        }
      } finally {
        socket.close();
      }
      // send() returns false only when the socket's send queue is full; one copy leaving is enough.
      if (sent === 0) throw new MetalboxError('BMC_UNREACHABLE', `the Wake-on-LAN packet for ${mac} could not be queued (send queue full)`);
    },
    setBootDevice: () => unsupported('set a boot device'),
    identify: () => unsupported('blink an identify LED'),
    info: async (): Promise<BmcInfo> => ({ protocolVersion: 'wake-on-lan', mac, port, interfaces: [...options.interfaces] }),
    close: async () => undefined,
  };
}
