// The TFTP service: read-only TFTP (RFC 1350) with option negotiation (RFC 2347/2348/2349) and windows
// (RFC 7440) on the provisioning interfaces only.
//
// - One listening socket per provisioning interface on tftp.port, bound to the device (SO_BINDTODEVICE):
//   a request that arrives on any other interface is never seen.
// - Each transfer gets a socket of its own (port 0: its TID, RFC 1350 §4) bound to the address the
//   request was sent to and to the same device. Packets on it from anyone but the client's TID get
//   ERROR 5 and change nothing.
// - Requests that are refused (writes, bad names, unknown files, caps) get an ERROR packet from the
//   listening socket; undecodable datagrams get nothing (a reply would let a spoofed flood aim us at a
//   third party), a counter and a rate-limited warning.
// - Per client address, read and write requests are rate limited (tftp.rateLimit, a token bucket): over
//   it the client gets one ERROR 0 "rate limited" a second and its other requests are dropped unanswered. An
//   ERROR rather than silence because that is what a real client (PXE firmware, tftp-hpa's and atftp's clients)
//   can act on: it stops at once and says why, where silence makes it retransmit until it times out, and the
//   existing caps (busy, busy-client) answer the same way. At most one a second per address, and never larger
//   than the request it answers, so a spoofed flood cannot use us as a reflector or an amplifier.
// - Every read request that names a file ends as one `boot.tftp` event against the machine (its MAC from
//   the DHCP lease of the client's address, else the address).
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Counter, Gauge } from 'prom-client';
import type { Config } from '../../config/schema.ts';
import { EventBatcher } from '../../core/event-batcher.ts';
import type { EventLog, NewEvent } from '../../core/events.ts';
import { errnoCode, isMetalboxError, MetalboxError } from '../../lib/errors.ts';
import { isLoopbackAddress } from '../../lib/ipv4.ts';
import { limitedLogger, type LimitedLog } from '../../lib/log-limit.ts';
import { RateLimiter } from '../../lib/rate-limit.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Metrics } from '../../lib/metrics.ts';
import { openUdpSocket, type Datagram, type UdpSocket } from '../../lib/udp-socket.ts';
import { decodeTftp, encodeTftp, ERROR_CODE, MAX_BLOCK_SIZE, type TftpPacket, type TftpRequest } from '../../protocols/tftp/index.ts';
import type { Store } from '../../store/types.ts';
import type { Service } from '../service.ts';
import { negotiate } from './negotiate.ts';
import { autoexecIpxe, checkTftpPath, createIpxeSource, createRootSource, GeneratedFiles, type TftpClient, type TftpFile, type TftpSource } from './sources.ts';
import { Transfer, type TransferResult } from './transfer.ts';

/** IPv4 header 20 + UDP header 8 + TFTP DATA header 4: what a DATA packet adds to its block. */
const HEADER_BYTES = 32;
/** Bytes in flight per transfer at most (windowsize x blksize). */
const MAX_WINDOW_BYTES = 128 * 1024;
/** ERROR message for a request that does not parse: with the 5 bytes around it, no longer than the requests it answers. */
const MALFORMED_REPLY = 'bad request';
/** ERROR message for a client over its rate limit (5 + 12 octets: no longer than any real request). */
const RATE_LIMITED_REPLY = 'rate limited';
/** How long a client address -> MAC lookup is reused. */
const MAC_CACHE_MS = 5000;
/** Boot-timeline events waiting to be written at most; beyond it they are counted and dropped. */
const MAX_PENDING_EVENTS = 10_000;
/** Boot-timeline events are written in one batch at most this often. */
const EVENT_FLUSH_MS = 200;

export interface TftpServiceDeps {
  config: Config;
  store: Store;
  events: EventLog;
  logger: Logger;
  metrics: Metrics;
  /** Port of the HTTP boot service, for the generated autoexec.ipxe. */
  httpPort: number;
  /** Replaces the default sources (generated files, then the root, then the iPXE loaders). Tests. */
  sources?: TftpSource[];
  /** An interface's MTU; default: /sys/class/net/IF/mtu. */
  mtu?: (ifname: string) => Promise<number | undefined>;
  now?: () => number;
}

interface Listener { ifname: string; socket: UdpSocket; maxBlockSize: number }

interface Active {
  key: string;
  client: string;
  file: string;
  transfer?: Transfer;
}

export class TftpService implements Service {
  readonly name = 'tftp';
  /** Per-machine files: register generators here (autoexec.ipxe is one). */
  readonly generated = new GeneratedFiles();
  private readonly listeners: Listener[] = [];
  private sources: TftpSource[] = [];
  /** Transfers by client address:port, including those still opening their file. */
  private readonly active = new Map<string, Active>();
  private readonly perClient = new Map<string, number>();
  /** Boot-timeline events, written in batches (src/core/event-batcher.ts). */
  private readonly timeline: EventBatcher;
  private readonly log: LimitedLog;
  private readonly now: () => number;
  private readonly m: ReturnType<typeof createTftpMetrics>;
  private stopped = false;
  private readonly macCache = new Map<string, { mac: string | undefined; at: number }>();
  /** Windows leave through UDP segmentation offload (udp(7) UDP_SEGMENT) until the kernel refuses it once. */
  private segmentation = true;
  /** tftp.rateLimit by client address: one ERROR a second ('notify') beyond it. */
  private readonly limiter: RateLimiter<string>;

  constructor(private readonly deps: TftpServiceDeps) {
    this.log = limitedLogger(deps.logger);
    this.now = deps.now ?? Date.now;
    this.limiter = new RateLimiter<string>(deps.config.tftp.rateLimit, { notifyIntervalS: 1 });
    this.m = createTftpMetrics(deps.metrics, () => this.active.size, () => this.limiter.size);
    this.timeline = new EventBatcher({
      events: deps.events, flushMs: EVENT_FLUSH_MS, maxPending: MAX_PENDING_EVENTS,
      onDropped: (count, err) => {
        this.m.eventsDropped.inc(count);
        if (err !== undefined) this.log('warn', 'event', { err: { code: isMetalboxError(err) ? err.code : undefined, message: (err as Error).message } }, 'tftp boot events not recorded');
      },
    });
  }

  /** Client addresses the rate limiter tracks now (tests, metrics): never above tftp.rateLimit.maxClients. */
  get rateLimitedClients(): number {
    return this.limiter.size;
  }

  /** The directory served: tftp.root, default <stateDir>/tftp. */
  get root(): string {
    return this.deps.config.tftp.root ?? join(this.deps.config.stateDir, 'tftp');
  }

  async start(): Promise<void> {
    const { config } = this.deps;
    this.stopped = false;
    if (this.deps.sources) {
      this.sources = this.deps.sources;
    } else {
      try {
        await mkdir(this.root, { recursive: true, mode: 0o755 });
      } catch (err) {
        throw new MetalboxError('SERVICE_START_FAILED', `tftp: cannot create the root ${this.root}: ${errnoCode(err) ?? (err as Error).message}`, { cause: err, details: { root: this.root } });
      }
      this.generated.register('autoexec.ipxe', autoexecIpxe(this.deps.httpPort));
      this.sources = [this.generated, await createRootSource(this.root), createIpxeSource(config.boot.ipxeDir)];
    }
    const mtuOf = this.deps.mtu ?? readMtu;
    try {
      for (const ifname of config.interfaces) {
        const mtu = await mtuOf(ifname);
        if (mtu === undefined) this.deps.logger.warn({ ifname }, 'cannot read the interface MTU: assuming 1500');
        const maxBlockSize = Math.max(8, Math.min(config.tftp.maxBlockSize, MAX_BLOCK_SIZE, (mtu ?? 1500) - HEADER_BYTES));
        // No SO_REUSEADDR: another TFTP server on this host (tftpd on 0.0.0.0:69) must fail our start.
        const socket = openUdpSocket({ port: config.tftp.port, device: ifname, reuseAddress: false, receiveBufferSize: 4 * 1024 * 1024 }, (d) => this.onRequest(listener, d));
        const listener: Listener = { ifname, socket, maxBlockSize };
        this.listeners.push(listener);
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.deps.logger.info({ interfaces: config.interfaces, port: config.tftp.port, root: this.deps.sources ? undefined : this.root, maxBlockSize: this.listeners.map((l) => l.maxBlockSize) }, 'tftp listening');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const l of this.listeners.splice(0)) l.socket.close();
    for (const a of [...this.active.values()]) a.transfer?.abort('aborted', 'server shutting down');
    // Write the boot-timeline events still queued, those of the transfers that just ended included.
    await this.timeline.drain(2000);
  }

  /** Transfers in progress (tests, status). */
  get transfers(): number {
    return this.active.size;
  }

  private onRequest(listener: Listener, d: Datagram): void {
    this.m.received.inc();
    let p: TftpPacket;
    try {
      p = decodeTftp(d.data);
    } catch (err) {
      this.m.malformed.inc();
      const e = err as MetalboxError;
      const request = d.data.length >= 2 && d.data[0] === 0 && (d.data[1] === 1 || d.data[1] === 2);
      this.log('warn', `malformed:${listener.ifname}`, { ifname: listener.ifname, from: `${d.address}:${d.port}`, code: isMetalboxError(err) ? e.code : 'TFTP_DECODE', offset: e.details?.offset, bytes: d.data.length }, request ? 'malformed TFTP request refused' : 'malformed TFTP packet dropped');
      // A request we cannot parse (a NUL inside the name shifts every field after it) is answered, so the
      // client stops at once; any other junk is dropped without a word. The answer is never larger than
      // the request, so it cannot amplify a spoofed flood.
      if (request && d.data.length >= MALFORMED_REPLY.length) this.sendError(listener, d, ERROR_CODE.ILLEGAL_OPERATION, MALFORMED_REPLY);
      return;
    }
    // Requests only (what takes a token is a transfer asked for; undecodable junk costs no more than this check
    // and is already counted, logged rate-limited and mostly unanswered). Loopback (this host) is not limited.
    if ((p.op === 'RRQ' || p.op === 'WRQ') && this.limiter.enabled && !isLoopbackAddress(d.address)) {
      const verdict = this.limiter.check(d.address, this.now() / 1000);
      if (verdict !== 'allow') {
        this.m.refused.inc({ reason: 'rate-limited' });
        if (verdict === 'notify') {
          this.log('warn', 'rate-limited', { ifname: listener.ifname, client: d.address, clients: this.limiter.size }, 'tftp client over its rate limit: requests refused');
          if (d.data.length >= RATE_LIMITED_REPLY.length + 5) this.sendError(listener, d, ERROR_CODE.NOT_DEFINED, RATE_LIMITED_REPLY);
        }
        return;
      }
    }
    if (p.op === 'WRQ') {
      this.refuse(listener, d, 'write', ERROR_CODE.ACCESS_VIOLATION, 'writes are not accepted', { file: p.filename });
      return;
    }
    if (p.op !== 'RRQ') {
      // DATA/ACK/ERROR/OACK belong to a transfer's own port, never to the listening one.
      this.m.refused.inc({ reason: 'not-a-request' });
      this.deps.logger.debug({ ifname: listener.ifname, from: `${d.address}:${d.port}`, op: p.op }, 'tftp packet on the request port ignored');
      return;
    }
    this.onRead(listener, d, p);
  }

  private onRead(listener: Listener, d: Datagram, req: TftpRequest): void {
    const { config } = this.deps;
    const key = `${d.address}:${d.port}`;
    const existing = this.active.get(key);
    if (existing) {
      // The same request again before the client heard from us: our first answer was slow or lost, and the
      // transfer already running retransmits it on its own. Anything else from that port (another file, or
      // a new client process that got the port of one that went away mid-transfer) replaces the transfer.
      if (existing.file === req.filename && !existing.transfer?.heard) {
        this.m.refused.inc({ reason: 'duplicate' });
        return;
      }
      existing.transfer?.abort('replaced');
    }
    const mode = req.mode.toLowerCase();
    if (mode !== 'octet' && mode !== 'netascii') {
      this.refuse(listener, d, 'mode', ERROR_CODE.ILLEGAL_OPERATION, `mode "${req.mode}" is not supported`, { file: req.filename, mode: req.mode });
      return;
    }
    const checked = checkTftpPath(req.filename);
    if ('refused' in checked) {
      this.refusePath(listener, d, req.filename, checked.refused);
      return;
    }
    if (this.active.size >= config.tftp.maxTransfers) {
      this.refuse(listener, d, 'busy', ERROR_CODE.NOT_DEFINED, 'too many transfers', { file: req.filename });
      return;
    }
    if ((this.perClient.get(d.address) ?? 0) >= config.tftp.maxTransfersPerClient) {
      this.refuse(listener, d, 'busy-client', ERROR_CODE.NOT_DEFINED, 'too many transfers', { file: req.filename });
      return;
    }
    // The slot is taken now, before any await, so a burst of requests cannot overshoot the caps.
    const a: Active = { key, client: d.address, file: req.filename };
    this.active.set(key, a);
    this.perClient.set(d.address, (this.perClient.get(d.address) ?? 0) + 1);
    void this.serve(listener, d, req, checked.path, mode === 'netascii', a).catch((err: unknown) => {
      this.deps.logger.error({ err, file: req.filename, client: key }, 'tftp transfer failed unexpectedly');
      this.release(a);
    });
  }

  private async serve(listener: Listener, d: Datagram, req: TftpRequest, path: string, netascii: boolean, a: Active): Promise<void> {
    const started = this.now();
    const mac = await this.macOf(d.address);
    const client: TftpClient = { address: d.address, ...(mac ? { mac } : {}) };
    const record = (ok: boolean, bytes: number, extra: Record<string, unknown> = {}) =>
      this.record(mac ?? d.address, { file: req.filename, bytes, ms: this.now() - started, ok, client: d.address, ...extra });

    let file: TftpFile | undefined;
    try {
      for (const source of this.sources) {
        file = await source.open(path, client);
        if (file) break;
      }
    } catch (err) {
      this.release(a);
      if (isMetalboxError(err, 'TFTP_PATH_REFUSED')) {
        this.refusePath(listener, d, req.filename, String(err.details?.reason ?? 'refused'), mac);
      } else {
        const denied = errnoCode((err as Error).cause) === 'EACCES';
        this.refuse(listener, d, 'read-failed', denied ? ERROR_CODE.ACCESS_VIOLATION : ERROR_CODE.NOT_DEFINED, denied ? 'access violation' : 'read error', { file: req.filename });
        this.log('warn', 'read-failed', { file: req.filename, client: d.address, err: { code: isMetalboxError(err) ? err.code : errnoCode(err), message: (err as Error).message } }, 'tftp file cannot be read');
        record(false, 0, { error: 'read-failed' });
      }
      return;
    }
    if (!file) {
      this.release(a);
      this.refuse(listener, d, 'not-found', ERROR_CODE.FILE_NOT_FOUND, 'file not found', { file: req.filename });
      record(false, 0, { error: 'not-found' });
      return;
    }
    if (this.stopped || this.active.get(a.key) !== a) {
      // Stopped, or replaced by a newer request from the same port, while the file was opening.
      await file.close();
      this.release(a);
      return;
    }

    const { config } = this.deps;
    const n = negotiate(req.options, netascii ? undefined : file.size, { maxBlockSize: listener.maxBlockSize, maxWindowSize: config.tftp.maxWindowSize, maxWindowBytes: MAX_WINDOW_BYTES });
    let socket: UdpSocket;
    try {
      // No SO_REUSEADDR: with it, bind(2) to port 0 may hand out a port another transfer's socket (also
      // SO_REUSEADDR) already holds, and the two transfers would then read each other's ACKs.
      socket = openUdpSocket({ port: 0, address: d.interfaceAddress, device: listener.ifname, reuseAddress: false }, (dd) => onDatagram(dd));
    } catch (err) {
      await file.close();
      this.release(a);
      this.refuse(listener, d, 'no-socket', ERROR_CODE.NOT_DEFINED, 'server error', { file: req.filename });
      this.log('error', 'socket', { err: { code: isMetalboxError(err) ? err.code : undefined, message: (err as Error).message } }, 'tftp cannot open a transfer socket');
      return;
    }
    const opened = file;
    const send = (data: Buffer): boolean => {
      try {
        return socket.send(data, d.address, d.port);
      } catch (err) {
        this.log('warn', `send:${listener.ifname}`, { ifname: listener.ifname, to: a.key, code: isMetalboxError(err) ? err.code : errnoCode(err) }, 'tftp datagram not sent');
        return false;
      }
    };
    const transfer = new Transfer({
      file: opened,
      netascii,
      blockSize: n.blockSize,
      windowSize: n.windowSize,
      timeoutMs: (n.timeoutSeconds ?? config.tftp.timeoutSeconds) * 1000,
      retries: config.tftp.retries,
      ...(n.oack.length > 0 ? { oack: encodeTftp({ op: 'OACK', options: n.oack }) } : {}),
      send,
      ...(this.segmentation ? {
        sendSegments: (data: Buffer, segmentSize: number) => socket.sendSegments(data, segmentSize, d.address, d.port),
        onSegmentsFailed: (err: unknown) => {
          if (!this.segmentation) return;
          this.segmentation = false;
          this.deps.logger.warn({ err: { code: isMetalboxError(err) ? err.code : undefined, errno: (err as MetalboxError).details?.errno, message: (err as Error).message } }, 'UDP segmentation offload unavailable: TFTP windows go one datagram per send');
        },
      } : {}),
      onSent: (bytes, resent) => {
        this.m.bytes.inc(bytes);
        if (resent > 0) this.m.retransmissions.inc(resent);
      },
      onEnd: (r) => {
        socket.close();
        void opened.close();
        this.release(a);
        this.finished(r, req, d, started, record);
      },
    });
    const onDatagram = (dd: Datagram): void => {
      if (dd.address !== d.address || dd.port !== d.port) {
        // RFC 1350 §4: a packet from another TID gets ERROR 5 and the transfer goes on.
        try { socket.send(encodeTftp({ op: 'ERROR', code: ERROR_CODE.UNKNOWN_TID, message: 'unknown transfer ID' }), dd.address, dd.port); } catch { /* best effort */ }
        return;
      }
      let p: TftpPacket;
      try {
        p = decodeTftp(dd.data);
      } catch {
        this.m.malformed.inc();
        return;
      }
      transfer.onPacket(p);
    };
    a.transfer = transfer;
    this.m.started.inc();
    this.deps.logger.debug({ file: req.filename, client: a.key, mac, blksize: n.blockSize, windowsize: n.windowSize, oack: n.oack.map((o) => `${o.name}=${o.value}`).join(' '), mode: netascii ? 'netascii' : 'octet' }, 'tftp transfer started');
    transfer.start();
  }

  private finished(r: TransferResult, req: TftpRequest, d: Datagram, started: number, record: (ok: boolean, bytes: number, extra?: Record<string, unknown>) => void): void {
    const ms = this.now() - started;
    const fields = { file: req.filename, client: `${d.address}:${d.port}`, bytes: r.bytes, ms, retransmitted: r.retransmitted, timeouts: r.timeouts, partialAcks: r.partialAcks };
    if (r.ok) {
      this.m.completed.inc();
      this.deps.logger.info(fields, 'tftp transfer completed');
      record(true, r.bytes);
    } else {
      this.m.failed.inc({ reason: r.reason ?? 'unknown' });
      const level = r.reason === 'read-failed' ? 'warn' : 'info';
      this.deps.logger[level]({ ...fields, reason: r.reason, ...(r.clientMessage !== undefined ? { clientMessage: r.clientMessage } : {}), ...(r.error ? { err: r.error } : {}) }, 'tftp transfer failed');
      record(false, r.bytes, { error: r.reason });
    }
  }

  private release(a: Active): void {
    if (this.active.get(a.key) === a) this.active.delete(a.key);
    const left = (this.perClient.get(a.client) ?? 1) - 1;
    if (left > 0) this.perClient.set(a.client, left);
    else this.perClient.delete(a.client);
  }

  private refusePath(listener: Listener, d: Datagram, file: string, reason: string, mac?: string): void {
    this.refuse(listener, d, `path-${reason}`, ERROR_CODE.ACCESS_VIOLATION, 'access violation', {});
    // JSON.stringify in the log line: the name may hold control bytes meant for a terminal.
    this.log('warn', `path:${reason}`, { ifname: listener.ifname, client: `${d.address}:${d.port}`, file: JSON.stringify(file), reason }, 'tftp request outside the root refused');
    this.record(mac ?? this.macOf(d.address).then((m) => m ?? d.address), { file, bytes: 0, ms: 0, ok: false, client: d.address, error: `path-${reason}` });
  }

  /** ERROR reply from the listening socket (the request got no TID of its own), plus the counter. */
  private refuse(listener: Listener, d: Datagram, reason: string, code: number, message: string, fields: Record<string, unknown>): void {
    this.m.refused.inc({ reason });
    this.deps.logger.debug({ ifname: listener.ifname, client: `${d.address}:${d.port}`, reason, ...fields }, 'tftp request refused');
    this.sendError(listener, d, code, message);
  }

  private sendError(listener: Listener, d: Datagram, code: number, message: string): void {
    try {
      listener.socket.send(encodeTftp({ op: 'ERROR', code, message }), d.address, d.port, { sourceAddress: d.interfaceAddress });
    } catch (err) {
      this.log('warn', `send:${listener.ifname}`, { ifname: listener.ifname, to: `${d.address}:${d.port}`, code: isMetalboxError(err) ? err.code : errnoCode(err) }, 'tftp error packet not sent');
    }
  }

  /**
   * The MAC of the machine that has `ip` leased, if any. Remembered for a few seconds: a booting machine
   * asks for several files in a row, and a store read per request costs more than a small file's transfer.
   */
  private async macOf(ip: string): Promise<string | undefined> {
    const now = this.now();
    const hit = this.macCache.get(ip);
    if (hit && now - hit.at < MAC_CACHE_MS) return hit.mac;
    let mac: string | undefined;
    try {
      mac = (await this.deps.store.leases.get(ip))?.mac;
    } catch {
      return undefined; // a closing store must not stop a boot
    }
    if (this.macCache.size >= 4096) this.macCache.clear();
    this.macCache.set(ip, { mac, at: now });
    return mac;
  }

  /**
   * Queues a boot-timeline event (against `subject`: the MAC, else the address), written with others in one batch
   * at most every EVENT_FLUSH_MS: one durable write per transfer would hold up the file reads of every other transfer
   * during a boot storm. Bounded: beyond MAX_PENDING_EVENTS (a request flood) events are counted and dropped.
   */
  private record(subject: string | Promise<string>, data: Record<string, unknown>): void {
    const event = (s: string): NewEvent => ({ type: 'boot.tftp', actor: 'tftp', subject: s, data });
    this.timeline.add(typeof subject === 'string' ? event(subject) : subject.then(event));
  }
}

/** /sys/class/net/IF/mtu (in the network namespace the process runs in). */
async function readMtu(ifname: string): Promise<number | undefined> {
  try {
    const v = Number((await readFile(`/sys/class/net/${ifname}/mtu`, 'utf8')).trim());
    return Number.isInteger(v) && v >= 68 ? v : undefined;
  } catch {
    return undefined;
  }
}

function createTftpMetrics(metrics: Metrics, active: () => number, rateLimitedClients: () => number) {
  const registers = [metrics.registry];
  return {
    received: new Counter({ name: 'metalbox_tftp_requests_received_total', help: 'Datagrams received on the TFTP request port', registers }),
    started: new Counter({ name: 'metalbox_tftp_transfers_started_total', help: 'TFTP read transfers started', registers }),
    completed: new Counter({ name: 'metalbox_tftp_transfers_completed_total', help: 'TFTP read transfers the client acknowledged to the end', registers }),
    failed: new Counter({ name: 'metalbox_tftp_transfers_failed_total', help: 'TFTP transfers that ended early, by reason', labelNames: ['reason'], registers }),
    bytes: new Counter({ name: 'metalbox_tftp_bytes_sent_total', help: 'TFTP DATA payload bytes sent, retransmissions included', registers }),
    retransmissions: new Counter({ name: 'metalbox_tftp_retransmissions_total', help: 'TFTP packets sent again (DATA blocks and OACKs)', registers }),
    malformed: new Counter({ name: 'metalbox_tftp_malformed_total', help: 'TFTP datagrams that could not be decoded', registers }),
    refused: new Counter({ name: 'metalbox_tftp_refused_total', help: 'TFTP requests answered with an ERROR (or ignored), by reason', labelNames: ['reason'], registers }),
    eventsDropped: new Counter({ name: 'metalbox_tftp_events_dropped_total', help: 'Boot-timeline events of TFTP reads not recorded (too many pending, or a store error)', registers }),
    limiterClients: new Gauge({ name: 'metalbox_tftp_rate_limited_clients', help: 'Client addresses the TFTP rate limiter tracks (at most tftp.rateLimit.maxClients)', registers, collect() { this.set(rateLimitedClients()); } }),
    active: new Gauge({ name: 'metalbox_tftp_transfers_active', help: 'TFTP transfers in progress', registers, collect() { this.set(active()); } }),
  };
}
