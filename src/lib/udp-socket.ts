// IPv4 UDP sockets that know their interface: the one socket type of DHCP, proxyDHCP, TFTP, DNS and NTP.
//
// node:dgram cannot bind a socket to a device (SO_BINDTODEVICE) nor say on which interface a datagram
// arrived (IP_PKTINFO), and a socket bound to an interface address never sees a broadcast DHCPDISCOVER.
// So these sockets come from our native module (src/native/metalbox.c): one socket per provisioning
// interface on 0.0.0.0:67 bound to that device hears exactly that device's broadcasts (a VLAN
// sub-interface or a bridge is a device of its own), every datagram carries its arrival interface and
// addresses, and a reply can be sent out of a chosen interface even from a socket bound to no device.
//
// This file is the only one that knows the native API; services use openUdpSocket and never node:dgram.
//
// Behaviour worth knowing:
// - Receiving runs on the event loop (libuv polls the fd); at most 64 datagrams are handled per wakeup,
//   so a flooded socket cannot starve timers or other sockets. What the kernel drops meanwhile (a full
//   receive queue) shows in stats().kernelDropped.
// - Sending never waits: a full send queue drops the datagram and send() returns false (counted in
//   stats().dropped); clients of every protocol served here retransmit.
// - onDatagram runs synchronously per datagram; an exception thrown from it is an uncaught exception
//   (like one thrown from a node:dgram 'message' listener). Services catch their own errors.
// - Batch mode (openUdpBatchSocket: DHCP, DNS, NTP): one call per wakeup with every datagram read (recvmmsg),
//   payloads back to back and their fields as numbers; with `dhcp: true` the native side also peeks DHCP message
//   types and can drop chosen types itself (setDhcpDrop), so a service shedding a flood pays no JS for what it
//   sheds; with `timestamps: true` each datagram carries the kernel's receive time (SO_TIMESTAMPNS). Replies
//   queued with queue() during the callback leave together after it in one sendmmsg (or when flush() is called).
// - An open socket keeps the process alive and is not garbage-collected, even when unreferenced;
//   close() releases it (idempotent). Sockets still open when the process or worker ends are closed.
import { isIP } from 'node:net';
import { constants as osConstants } from 'node:os';
import { loadAddon } from './addon.ts';
import { errnoCode, MetalboxError } from './errors.ts';
import { formatIPv4 } from './ipv4.ts';

export interface Datagram {
  data: Buffer;
  /** Source address and port. */
  address: string;
  port: number;
  /** Interface the datagram arrived on (ip(7) ipi_ifindex): the VLAN sub-interface or bridge, not the port below it. */
  ifindex: number;
  /** Destination address in the IP header (ipi_addr): 255.255.255.255 for a broadcast, else the address the sender used. */
  localAddress: string;
  /**
   * The local address the kernel would answer from (ipi_spec_dst): the receiving interface's address
   * even for a broadcast. Beyond the issue's Datagram: it saves the DHCP server a lookup for its
   * server identifier (RFC 2132 §9.7) and a DNS/NTP server the choice of reply source.
   */
  interfaceAddress: string;
}

export interface UdpSocketOptions {
  port: number;
  /** Local IPv4 address to bind; default 0.0.0.0 (needed to hear broadcasts). */
  address?: string;
  /** Interface to bind to (SO_BINDTODEVICE): only datagrams that arrive on it are received. */
  device?: string;
  /** Allow sending to broadcast addresses (SO_BROADCAST). Default false. */
  broadcast?: boolean;
  /** Allow binding an address not (yet) configured on this host (IP_FREEBIND). Default false. */
  freebind?: boolean;
  /**
   * SO_REUSEADDR, default true. Sockets bound to different devices never conflict; reuse matters
   * only where a device-bound and an unbound socket (or two sockets on one device) share a port. With it,
   * another process that also sets SO_REUSEADDR (dnsmasq does) can bind the same port without an
   * error; set false to make such a bind fail with EADDRINUSE instead (fail fast at start).
   * With port 0, set it false: Linux may hand two SO_REUSEADDR sockets the same ephemeral port
   * (measured: 3,000 port-0 sockets on one address got 2,844 distinct ports), and they then share
   * their traffic (a TFTP transfer would read another's ACKs).
   */
  reuseAddress?: boolean;
  /**
   * SO_RCVBUF in bytes: room to queue a burst (a rack powering on at once) while JS is busy. Default:
   * the kernel's (net.core.rmem_default); capped at net.core.rmem_max. What overflows it is counted in
   * stats().kernelDropped.
   */
  receiveBufferSize?: number;
  /**
   * Datagrams read per wakeup of the event loop, 1 to 4096; default 64, which keeps one wakeup well under a
   * millisecond of JS work. A service that only queues what it reads (DHCP sheds load by message type) reads
   * more, so the kernel's queue, which drops blindly, stays short.
   */
  readBatch?: number;
}

export interface UdpSendVia {
  /** Send out of this interface (IP_PKTINFO ipi_ifindex); a broadcast then leaves on it only. */
  ifindex?: number;
  /** Source address of the datagram (ipi_spec_dst); must be one of ours (else SOCKET_SEND_FAILED, ENETUNREACH or EINVAL). */
  sourceAddress?: string;
}

export interface UdpSocketStats {
  /** Datagrams delivered to onDatagram. */
  received: number;
  /** Datagrams longer than 64 KiB, dropped (cannot happen over IPv4 with this buffer; counted anyway). */
  truncated: number;
  sent: number;
  /** Sends refused because the send queue was full (EAGAIN) or the kernel had no buffers (ENOBUFS). */
  dropped: number;
  /** Datagrams for this socket the kernel dropped before we read them: a full receive queue, a bad checksum (SO_MEMINFO). */
  kernelDropped: number;
  /** Unexpected receive errors (none expected on an unconnected UDP socket). */
  receiveErrors: number;
}

export interface UdpSocket {
  /** The bound port (the kernel's choice when opened with port 0). */
  readonly port: number;
  /** The bound address. */
  readonly address: string;
  readonly device?: string;
  /**
   * Sends one datagram. Returns false when it was dropped because the send queue is full (the caller
   * counts it); throws SOCKET_SEND_FAILED for other failures (no route, EACCES for a broadcast without
   * `broadcast: true`, a non-local sourceAddress, the socket is closed).
   */
  send(data: Buffer, address: string, port: number, via?: UdpSendVia): boolean;
  /**
   * Sends `data` as consecutive datagrams of `segmentSize` bytes (the last may be shorter) to one
   * destination in one syscall: UDP generic segmentation offload (udp(7) UDP_SEGMENT). At most 64
   * datagrams and 65507 bytes per call (RangeError beyond). Returns false when the send queue was full,
   * like send(); throws SOCKET_SEND_FAILED otherwise, with errno EINVAL/EIO/EOPNOTSUPP/ENOPROTOOPT where
   * the kernel or the device cannot segment: the caller then sends the datagrams one by one.
   */
  sendSegments(data: Buffer, segmentSize: number, address: string, port: number): boolean;
  /** Stops receiving and closes the socket. Safe to call more than once. */
  close(): void;
  stats(): UdpSocketStats;
}

/**
 * Datagrams of one wakeup, for openUdpBatchSocket's callback. Datagram i (0 <= i < count) has the fields
 * `meta[i * BATCH_WORDS + BATCH.X]`; its payload is `data.subarray(offset, offset + length)`.
 */
export interface DatagramBatch {
  /** Every payload of the batch, back to back: a new Buffer each call, so views of it may be kept. */
  data: Buffer;
  /**
   * The per-datagram fields (BATCH), addresses as numbers in host order (formatIPv4 gives the text). The same
   * array is reused for every call: read it during the callback only.
   */
  meta: Uint32Array;
  count: number;
  /** The socket's stats().filtered when the batch was read (what setDhcpDrop dropped so far, in all). */
  filtered: number;
}

/** Words of DatagramBatch.meta per datagram. */
export const BATCH_WORDS = 10;
/** Offsets of the fields in a datagram's row of DatagramBatch.meta. */
export const BATCH = {
  OFFSET: 0,
  LENGTH: 1,
  /** Source address and port. */
  ADDRESS: 2,
  PORT: 3,
  /** As Datagram.ifindex. */
  IFINDEX: 4,
  /** As Datagram.localAddress (the destination in the IP header). */
  LOCAL_ADDRESS: 5,
  /** As Datagram.interfaceAddress. */
  INTERFACE_ADDRESS: 6,
  /** The DHCP message type (option 53) of a BOOTREQUEST, with `dhcp: true`; 0 when none was found (or not asked). */
  DHCP_TYPE: 7,
  /**
   * With `timestamps: true`: when the kernel received the datagram (SO_TIMESTAMPNS, CLOCK_REALTIME), Unix seconds
   * (mod 2^32) and nanoseconds; both 0 without.
   */
  TIME_SECONDS: 8,
  TIME_NANOSECONDS: 9,
} as const;

/** Flags of a queued datagram (UdpBatchSocket.queue). */
export const SEND_FLAGS = {
  /**
   * The datagram is an NTP packet (48 octets at least): its transmit timestamp (RFC 5905 §8 T3, octets 40-47) is
   * written natively right before the sendmmsg that sends it: the host's CLOCK_REALTIME plus setNtpOffset()'s seconds.
   */
  NTP_TRANSMIT: 1,
} as const;

export interface UdpBatchSocketOptions extends UdpSocketOptions {
  /**
   * The socket serves DHCP: the native side reads each datagram's message type (BATCH.DHCP_TYPE, as
   * peekMessageType in src/protocols/dhcp) and setDhcpDrop can make it drop some types before JS sees them.
   */
  dhcp?: boolean;
  /** Kernel receive timestamps (SO_TIMESTAMPNS) in BATCH.TIME_SECONDS / TIME_NANOSECONDS. Default false. */
  timestamps?: boolean;
  /**
   * Room each datagram gets in a read, 512 to 65536 bytes (default 65536: nothing is ever cut). A longer datagram
   * is counted in stats().truncated and dropped. Smaller slots let one recvmmsg take more datagrams: DNS and NTP
   * queries are small.
   */
  maxDatagram?: number;
  /**
   * Told of each queued datagram the kernel did not take when the queue is sent without a callback of its own: after
   * the batch callback, or because queue() found it full.
   */
  onSendFailure?: SendFailure;
}

export interface UdpBatchSocketStats extends UdpSocketStats {
  /** Datagrams read and dropped by the setDhcpDrop filter (not in `received`). */
  filtered: number;
  /** Queued datagrams the kernel refused for another reason than a full queue (no route, a foreign source address). */
  sendErrors: number;
}

/** Why queued datagrams were not sent, for UdpBatchSocket.flush(): index in the flush and errno name (EAGAIN, ENETUNREACH, ...). */
export type SendFailure = (index: number, code: string) => void;

export interface UdpBatchSocket extends UdpSocket {
  /** Sends to an address given as a number in host order (as BATCH delivers them); otherwise like send() without `via`. */
  sendTo(data: Buffer, address: number, port: number): boolean;
  /**
   * Copies a datagram into the socket's send queue (numeric address in host order; `sourceAddress`, `ifindex` as
   * send()'s `via`, 0 for none; `flags` from SEND_FLAGS). The queue is sent with one sendmmsg per 64 datagrams
   * when the batch callback returns, by flush(), or first when it is full (256 KiB or 1024 datagrams; failures then
   * go to the option onSendFailure). Returns the datagram's index in the flush that sends it.
   */
  queue(data: Buffer, address: number, port: number, sourceAddress?: number, ifindex?: number, flags?: number): number;
  /**
   * Sends what is queued and returns how many datagrams the kernel took. Each datagram not taken is reported to
   * `onFailure` (default: the option onSendFailure) with its index and errno name: EAGAIN/ENOBUFS when it was
   * dropped on a full send queue (counted in stats().dropped, and so is the rest of the flush), anything else
   * (ENETUNREACH, EINVAL for a source address not ours) in stats().sendErrors. Throws SOCKET_SEND_FAILED when the
   * socket is closed.
   */
  flush(onFailure?: SendFailure): number;
  /** Datagrams queued and not yet flushed. */
  readonly queued: number;
  /** Seconds added to the host clock in the NTP transmit timestamps of SEND_FLAGS.NTP_TRANSMIT (the served offset). */
  setNtpOffset(seconds: number): void;
  /**
   * Opened with `dhcp: true` only: from now on, DHCP requests (BOOTREQUEST, magic cookie) whose message type is
   * in `types` are read and dropped before any JS object is made for them, counted in stats().filtered; an empty
   * list turns the filter off. For shedding load: it costs the kernel's receive and a few bytes' peek.
   */
  setDhcpDrop(types: readonly number[]): void;
  stats(): UdpBatchSocketStats;
}

/** The native module's UDP part (src/native/metalbox.c). */
interface NativeUdp {
  udpOpen(options: { address: string; port: number; device?: string; broadcast?: boolean; freebind?: boolean; reuseAddress?: boolean; receiveBufferSize?: number; readBatch?: number },
    onDatagram: (data: Buffer, address: string, port: number, ifindex: number, localAddress: string, interfaceAddress: string) => void): object;
  udpOpen(options: { address: string; port: number; device?: string; broadcast?: boolean; freebind?: boolean; reuseAddress?: boolean; receiveBufferSize?: number; readBatch?: number; batch: true; dhcp: boolean },
    onBatch: (data: Buffer, meta: Uint32Array, count: number, filtered: number) => void): object;
  udpOpen(options: { address: string; port: number; batch: true; dhcp: boolean; timestamps: boolean; maxDatagram?: number; [k: string]: unknown },
    onBatch: (data: Buffer, meta: Uint32Array, count: number, filtered: number) => void): object;
  udpSend(socket: object, data: Buffer, address: string, port: number, ifindex: number, sourceAddress: string | null): boolean;
  udpSendTo(socket: object, data: Buffer, address: number, port: number): boolean;
  udpSendBatch(socket: object, data: Buffer, rows: Uint32Array, count: number, ntpOffset: number): number;
  udpSetDhcpDrop(socket: object, mask: number): void;
  udpSendSegments(socket: object, data: Buffer, segmentSize: number, address: string, port: number): boolean;
  udpClose(socket: object): void;
  udpStats(socket: object): UdpBatchSocketStats & { port: number; open: boolean };
  udpSocketCount(): number;
  ifNameToIndex(name: string): number;
  ifIndexToName(index: number): string | undefined;
  arpAdd(ifname: string, ip: string, mac: Buffer): void;
}

// Loaded on first use: commands that open no socket never dlopen the module.
let native: NativeUdp | undefined;
function udp(): NativeUdp {
  native ??= loadAddon('metalbox_native') as NativeUdp;
  return native;
}

/** An errno name from the native module ("ERRNO_<n>" for one it has no name for); anything else passes through. */
const SYSTEM_ERROR = /^(E[A-Z0-9]+|ERRNO_\d+)$/;

/** What an errno means for someone opening a socket; the message must say what to fix. */
const OPEN_HINTS: Record<string, string> = {
  ENODEV: 'no such network interface',
  EADDRINUSE: 'the port is already in use by another socket',
  EADDRNOTAVAIL: 'the address is not configured on this host (freebind allows that)',
  EACCES: 'not permitted: ports below 1024 need CAP_NET_BIND_SERVICE, which root has',
  EPERM: 'not permitted: binding to a device needs CAP_NET_RAW on kernels before 5.7',
};

/**
 * Opens a UDP socket and starts delivering datagrams to `onDatagram`. Throws MetalboxError
 * SOCKET_OPEN_FAILED (naming device, address, port and errno; `cause` is the system error) when the
 * socket cannot be opened, and TypeError/RangeError for malformed options (caller bugs).
 */
export function openUdpSocket(options: UdpSocketOptions, onDatagram: (d: Datagram) => void): UdpSocket {
  if (typeof onDatagram !== 'function') throw new TypeError('onDatagram must be a function');
  const { socket } = open(options, (address) => udp().udpOpen(
    { ...address, broadcast: options.broadcast ?? false, freebind: options.freebind ?? false, reuseAddress: options.reuseAddress ?? true, receiveBufferSize: options.receiveBufferSize, readBatch: options.readBatch },
    (data, from, port, ifindex, localAddress, interfaceAddress) => onDatagram({ data, address: from, port, ifindex, localAddress, interfaceAddress }),
  ));
  return socket;
}

/**
 * Like openUdpSocket, but each wakeup's datagrams come in one call (DatagramBatch; up to `readBatch` of them, in
 * several calls when they do not fit 320 KiB) with numeric addresses: for a service that takes many small
 * datagrams per wakeup (DHCP under load), one JS call, one Buffer and no strings per wakeup instead of one call,
 * one Buffer and three strings per datagram.
 */
export function openUdpBatchSocket(options: UdpBatchSocketOptions, onBatch: (batch: DatagramBatch) => void): UdpBatchSocket {
  if (typeof onBatch !== 'function') throw new TypeError('onBatch must be a function');
  const dhcp = options.dhcp ?? false;
  const timestamps = options.timestamps ?? false;
  if (options.maxDatagram !== undefined && (!Number.isInteger(options.maxDatagram) || options.maxDatagram < 512 || options.maxDatagram > 65536)) {
    throw new RangeError(`maxDatagram must be an integer from 512 to 65536, got ${options.maxDatagram}`);
  }
  // The send queue: payloads back to back in `out`, one row of SEND_WORDS per datagram (see udpSendBatch in
  // metalbox.c). Allocated on the first queue(): a socket that never queues pays nothing.
  let out: Buffer | undefined;
  let rows: Uint32Array | undefined;
  let queued = 0;
  let used = 0;
  let ntpOffset = 0;
  const { socket, handle, local, isClosed } = open(options, (address) => udp().udpOpen(
    { ...address, broadcast: options.broadcast ?? false, freebind: options.freebind ?? false, reuseAddress: options.reuseAddress ?? true, receiveBufferSize: options.receiveBufferSize, readBatch: options.readBatch, batch: true, dhcp, timestamps, maxDatagram: options.maxDatagram },
    (data, meta, count, filtered) => {
      try {
        onBatch({ data, meta, count, filtered });
      } finally {
        // What the callback queued leaves now, together (a throw still sends what was answered before it).
        if (queued > 0 && !isClosed()) flush();
      }
    },
  ));
  const flush = (onFailure: SendFailure | undefined = options.onSendFailure): number => {
    if (isClosed()) {
      queued = 0;
      used = 0;
      throw new MetalboxError('SOCKET_SEND_FAILED', `cannot send from ${local}: the socket is closed`);
    }
    if (queued === 0) return 0;
    const count = queued;
    queued = 0;
    used = 0;
    const taken = udp().udpSendBatch(handle, out!, rows!, count, ntpOffset);
    if (taken < count && onFailure !== undefined) {
      for (let i = 0, r = SEND_STATUS; i < count; i++, r += SEND_WORDS) {
        const errno = rows![r]!;
        if (errno !== 0) onFailure(i, errnoName(errno));
      }
    }
    return taken;
  };
  return {
    ...socket,
    sendTo(data, to, toPort) {
      if (isClosed()) throw new MetalboxError('SOCKET_SEND_FAILED', `cannot send to ${formatAddress(to)}:${toPort} from ${local}: the socket is closed`, { details: { to: formatAddress(to), port: toPort } });
      try {
        return udp().udpSendTo(handle, data, to, toPort);
      } catch (err) {
        const code = errnoCode(err);
        if (code === undefined || !SYSTEM_ERROR.test(code)) throw err;
        throw new MetalboxError('SOCKET_SEND_FAILED', `cannot send to ${formatAddress(to)}:${toPort} from ${local}: ${code}`, {
          cause: err,
          details: { to: formatAddress(to), port: toPort, errno: code },
        });
      }
    },
    queue(data, to, toPort, sourceAddress = 0, ifindex = 0, flags = 0) {
      const length = data.length;
      if (length > MAX_UDP_PAYLOAD) throw new RangeError(`a datagram holds 65507 bytes at most, got ${length}`);
      if (out === undefined) {
        out = Buffer.allocUnsafe(SEND_ARENA);
        rows = new Uint32Array(SEND_ROWS * SEND_WORDS);
      }
      if (queued === SEND_ROWS || used + length > SEND_ARENA) flush();
      data.copy(out, used);
      const r = queued * SEND_WORDS;
      const row = rows!;
      row[r] = used;
      row[r + 1] = length;
      row[r + 2] = to;
      row[r + 3] = toPort;
      row[r + 4] = sourceAddress;
      row[r + 5] = ifindex;
      row[r + 6] = flags;
      row[r + 7] = 0;
      used += length;
      return queued++;
    },
    flush,
    get queued() {
      return queued;
    },
    setNtpOffset(seconds) {
      if (!Number.isFinite(seconds)) throw new TypeError(`NTP offset must be a finite number of seconds, got ${seconds}`);
      ntpOffset = seconds;
    },
    setDhcpDrop(types) {
      if (!dhcp) throw new TypeError('setDhcpDrop needs a socket opened with dhcp: true');
      let mask = 0;
      for (const t of types) {
        if (!Number.isInteger(t) || t < 1 || t > 31) throw new RangeError(`DHCP message type must be 1..31, got ${t}`);
        mask |= 1 << t;
      }
      if (!isClosed()) udp().udpSetDhcpDrop(handle, mask >>> 0);
    },
    stats() {
      const { received, truncated, sent, dropped, kernelDropped, receiveErrors, filtered, sendErrors } = udp().udpStats(handle);
      return { received, truncated, sent, dropped, kernelDropped, receiveErrors, filtered, sendErrors };
    },
  };
}

const MAX_UDP_PAYLOAD = 65507;
/** Words per queued datagram (udpSendBatch's rows) and the one the native side writes the errno into. */
const SEND_WORDS = 8;
const SEND_STATUS = 7;
const SEND_ARENA = 256 * 1024;
const SEND_ROWS = 1024;

let errnoNames: Map<number, string> | undefined;
/** The errno name of a number (os.constants.errno), or ERRNO_<n>. */
function errnoName(n: number): string {
  errnoNames ??= new Map(Object.entries(osConstants.errno).map(([name, value]) => [value, name]));
  return errnoNames.get(n) ?? `ERRNO_${n}`;
}

/** An address for a message: a number that is no IPv4 address (a caller bug, refused by the native side) as is. */
function formatAddress(n: number): string {
  return Number.isInteger(n) && n >= 0 && n <= 0xffffffff ? formatIPv4(n) : String(n);
}

/** Validates the options, opens the native socket (`openNative`), and builds the methods both socket kinds share. */
function open(options: UdpSocketOptions, openNative: (address: { address: string; port: number; device: string | undefined }) => object):
  { socket: UdpSocket; handle: object; local: string; isClosed: () => boolean } {
  const address = options.address ?? '0.0.0.0';
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) throw new RangeError(`port must be an integer from 0 to 65535, got ${options.port}`);
  if (isIP(address) !== 4) throw new TypeError(`address must be an IPv4 address, got ${JSON.stringify(address)}`);
  if (options.device !== undefined && (typeof options.device !== 'string' || options.device === '')) throw new TypeError('device must be a non-empty interface name');
  if (options.receiveBufferSize !== undefined && (!Number.isInteger(options.receiveBufferSize) || options.receiveBufferSize < 0 || options.receiveBufferSize > 2 ** 30)) {
    throw new RangeError(`receiveBufferSize must be an integer from 0 to 2^30, got ${options.receiveBufferSize}`);
  }
  if (options.readBatch !== undefined && (!Number.isInteger(options.readBatch) || options.readBatch < 1 || options.readBatch > 4096)) {
    throw new RangeError(`readBatch must be an integer from 1 to 4096, got ${options.readBatch}`);
  }

  const device = options.device;
  const where = `${address}:${options.port}${device === undefined ? '' : ` on ${device}`}`;
  let handle: object;
  try {
    handle = openNative({ address, port: options.port, device });
  } catch (err) {
    const code = errnoCode(err);
    if (code === undefined || !SYSTEM_ERROR.test(code)) throw err;
    const hint = OPEN_HINTS[code];
    throw new MetalboxError('SOCKET_OPEN_FAILED', `cannot open UDP socket ${where}: ${code}${hint === undefined ? '' : ` (${hint})`}`, {
      cause: err,
      details: { address, port: options.port, device, errno: code },
    });
  }
  const port = udp().udpStats(handle).port;
  const local = `${address}:${port}${device === undefined ? '' : ` on ${device}`}`;
  let closed = false;

  const socket = {
    port,
    address,
    ...(device === undefined ? {} : { device }),
    send(data, to, toPort, via) {
      if (closed) throw new MetalboxError('SOCKET_SEND_FAILED', `cannot send to ${to}:${toPort} from ${local}: the socket is closed`, { details: { to, port: toPort } });
      if (isIP(to) !== 4) throw new TypeError(`address must be an IPv4 address, got ${JSON.stringify(to)}`);
      if (via?.sourceAddress !== undefined && isIP(via.sourceAddress) !== 4) throw new TypeError(`sourceAddress must be an IPv4 address, got ${JSON.stringify(via.sourceAddress)}`);
      try {
        return udp().udpSend(handle, data, to, toPort, via?.ifindex ?? 0, via?.sourceAddress ?? null);
      } catch (err) {
        const code = errnoCode(err);
        if (code === undefined || !SYSTEM_ERROR.test(code)) throw err;
        throw new MetalboxError('SOCKET_SEND_FAILED', `cannot send to ${to}:${toPort} from ${local}: ${code}`, {
          cause: err,
          details: { to, port: toPort, ifindex: via?.ifindex, sourceAddress: via?.sourceAddress, errno: code },
        });
      }
    },
    sendSegments(data, segmentSize, to, toPort) {
      if (closed) throw new MetalboxError('SOCKET_SEND_FAILED', `cannot send to ${to}:${toPort} from ${local}: the socket is closed`, { details: { to, port: toPort } });
      try {
        return udp().udpSendSegments(handle, data, segmentSize, to, toPort);
      } catch (err) {
        const code = errnoCode(err);
        if (code === undefined || !SYSTEM_ERROR.test(code)) throw err;
        throw new MetalboxError('SOCKET_SEND_FAILED', `cannot send ${data.length} bytes in segments of ${segmentSize} to ${to}:${toPort} from ${local}: ${code}`, {
          cause: err,
          details: { to, port: toPort, segmentSize, errno: code },
        });
      }
    },
    close() {
      closed = true;
      udp().udpClose(handle);
    },
    stats() {
      const { received, truncated, sent, dropped, kernelDropped, receiveErrors } = udp().udpStats(handle);
      return { received, truncated, sent, dropped, kernelDropped, receiveErrors };
    },
  } satisfies UdpSocket;
  return { socket, handle, local, isClosed: () => closed };
}

/** The index of a network interface (if_nametoindex(3)); undefined when there is none by that name. */
export function ifIndex(name: string): number | undefined {
  const index = udp().ifNameToIndex(name);
  return index === 0 ? undefined : index;
}

/** The name of the interface with this index (if_indextoname(3)); undefined when there is none. */
export function ifName(index: number): string | undefined {
  if (!Number.isInteger(index) || index <= 0 || index > 0x7fffffff) return undefined;
  return udp().ifIndexToName(index);
}

const MAC = /^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$/i;

/**
 * Adds (or replaces) the ARP entry ip -> mac on `ifname`, so a unicast to `ip` goes to `mac` without an
 * ARP request first: RFC 2131 §4.1 lets a server unicast an OFFER/ACK to yiaddr/chaddr before the
 * client can answer ARP for that address. The entry is a normal dynamic one and ages out.
 * Throws SOCKET_SEND_FAILED (it exists to make a send possible) with the errno: ENODEV, EPERM (needs
 * CAP_NET_ADMIN), EINVAL (not an Ethernet-like interface); TypeError for a malformed ip or mac.
 */
export function arpAdd(ifname: string, ip: string, mac: string | Buffer): void {
  if (isIP(ip) !== 4) throw new TypeError(`ip must be an IPv4 address, got ${JSON.stringify(ip)}`);
  let bytes: Buffer;
  if (typeof mac === 'string') {
    if (!MAC.test(mac)) throw new TypeError(`mac must look like 52:54:00:12:34:56, got ${JSON.stringify(mac)}`);
    bytes = Buffer.from(mac.replace(/[:-]/g, ''), 'hex');
  } else {
    bytes = mac;
  }
  if (bytes.length !== 6) throw new TypeError(`mac must be 6 bytes, got ${bytes.length}`);
  try {
    udp().arpAdd(ifname, ip, bytes);
  } catch (err) {
    const code = errnoCode(err);
    if (code === undefined || !SYSTEM_ERROR.test(code)) throw err;
    throw new MetalboxError('SOCKET_SEND_FAILED', `cannot add ARP entry ${ip} -> ${bytes.toString('hex').replace(/(..)(?!$)/g, '$1:')} on ${ifname}: ${code}`, {
      cause: err,
      details: { ifname, ip, errno: code },
    });
  }
}

/** Native socket structs not yet freed in this process (open, or closed and not yet collected). For leak tests. */
export function udpSocketsAllocated(): number {
  return udp().udpSocketCount();
}
