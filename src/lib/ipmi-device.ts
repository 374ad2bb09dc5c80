// The machine's own BMC through the kernel's IPMI device (/dev/ipmi0: ipmi_si + ipmi_devintf), with the
// IPMICTL_SEND_COMMAND / IPMICTL_RECEIVE_MSG_TRUNC ioctls of the native addon (src/native/metalbox.c, "ipmi").
// Only the agent uses it (src/agent/bmc.ts), on the machine being commissioned; the appliance talks to BMCs
// over the LAN (src/bmc/ipmi).
import { loadAddon } from './addon.ts';

/** A response: its completion code (IPMI v2.0 §5.2) and the data after it. */
export interface IpmiResponse {
  completionCode: number;
  data: Buffer;
}

export interface IpmiDevice {
  /**
   * One request to the BMC (system interface, LUN 0). Rejects with a Node-style error: ETIMEDOUT when no
   * response came within timeoutMs, others from the ioctls (code and syscall set). Requests are sent one at
   * a time, in call order.
   */
  request(netfn: number, cmd: number, data: Uint8Array, timeoutMs: number): Promise<IpmiResponse>;
  /** Closes the device once the requests already made have finished. */
  close(): Promise<void>;
}

interface NativeIpmi {
  ipmiOpen(path: string): number;
  ipmiRequest(fd: number, netfn: number, cmd: number, data: Buffer, timeoutMs: number): Promise<IpmiResponse>;
  ipmiClose(fd: number): void;
}

/** Opens the IPMI device; throws as open(2) fails (ENOENT: the drivers are not loaded or there is no BMC). */
export function openIpmiDevice(path = '/dev/ipmi0', native: NativeIpmi = loadAddon('metalbox_native') as NativeIpmi): IpmiDevice {
  const fd = native.ipmiOpen(path);
  let closed = false;
  // The queue: one request in the kernel at a time (the addon matches a response to its request by msgid,
  // and a late response is dropped; two waiting threads could take each other's).
  let tail: Promise<unknown> = Promise.resolve();
  return {
    request(netfn, cmd, data, timeoutMs) {
      if (closed) return Promise.reject(Object.assign(new Error(`EBADF: ${path} is closed`), { code: 'EBADF' }));
      const next = tail.then(() => native.ipmiRequest(fd, netfn, cmd, Buffer.from(data), timeoutMs));
      tail = next.catch(() => undefined);
      return next;
    },
    async close() {
      if (closed) return;
      closed = true;
      await tail;
      native.ipmiClose(fd);
    },
  };
}
