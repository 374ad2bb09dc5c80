// A boot storm's machines, light: N simulated machines in one Node process, each doing what a BIOS machine
// does from power-on to enlistment, with its own MAC, SMBIOS UUID and leased address:
//
//   dhcp1   DORA as the NIC's PXE ROM: option 93 = 0 (BIOS), 60 "PXEClient:Arch:00000:UNDI:002001", 94, 97
//           (UUID), 55 with 66/67; the boot file from option 67, else the BOOTP `file` field; the TFTP server
//           from option 66, else siaddr, else the server id
//   tftp    RRQ of that file with tsize and blksize (--blksize, default 1468 as atftp asks; PXE ROMs ask
//           1432-1468), lockstep ACKs, no windowsize (PXE ROMs know none)
//   dhcp2   DORA again as iPXE (undionly.kpxe): user class "iPXE" (option 77, sent bare as iPXE does), option 175
//   script  HTTP GET of the script URL from option 67; `kernel URL ARGS` and `initrd URL` read from it, and
//           metalbox.url / metalbox.token from the kernel arguments
//   kernel  GET of the kernel URL, every byte read and counted against Content-Length
//   initrd  the same for the initrd
//   enlist  POST /boot/agent/v1/inventory with the boot token (Bearer) and an inventory like src/agent/inventory.ts
//           makes; skipped when the script carried no token (the classic stack's static script) or with --no-enlist
//
// Run it inside a client network namespace on the provisioning network (root), one or a few processes:
//
//   node --import tsx test/helpers/storm-client.ts --machines N [--first I] [--interface c0] [--start-at EPOCH_MS|stdin]
//        [--blksize 1468] [--dhcp-retry firmware|fast] [--reboot-delay-ms 10000] [--spread-ms 0] [--no-enlist]
//        [--deadline-s 600] [--mac-prefix 52:54:0f]
//
// Choices, and why:
// - DHCP is broadcast, as on a real rack: one UDP socket on 0.0.0.0:68 takes the replies of every machine of the
//   process (several processes may share port 68: Linux hands each of them every broadcast; each keeps its own
//   by xid). Requests set the broadcast flag, so replies come broadcast: a machine cannot take a unicast reply
//   to an address it does not hold yet (PXE ROMs commonly set the flag; iPXE does not, it reads raw frames).
//   No option 61 in either DORA, so both are the same client to any server. The namespace needs a route for
//   255.255.255.255 (`ip route add default dev IF`).
// - Each machine's TFTP and HTTP use its own leased address: the address is added to --interface (`ip addr add
//   IP/32`, batched through one `ip -force -batch -` per burst) before its first socket binds to it, so a
//   server's per-client limits see N clients, as they would on a rack.
// - Retries like firmware: dhcp1 retransmits after 4, 8, 16 and 32 s (PXE spec 2.1), dhcp2 after 1, 2, 4, 8 s
//   (iPXE's config/dhcp.h); --dhcp-retry fast uses 1, 2, 4, 8 s for both (the crash test). After the last
//   retransmission, or on a NAK, the DORA starts over with a new xid. TFTP retransmits the RRQ or the last ACK
//   after 1, 2, 4, 4, 4 s, then gives up. A failed TFTP transfer or HTTP fetch (error status, short body, refused
//   or reset connection, 30 s without a byte) makes the machine reboot, as iPXE's `goto failed ... reboot`
//   and a PXE ROM's boot failure do: after --reboot-delay-ms it starts again at dhcp1. The enlistment POST is
//   retried by itself after 1, 2, 4, 8, 8 ... s, as the agent does (src/agent/client.ts).
// - DHCP and TFTP run in a worker thread (test/helpers/storm-udp.ts says why: the main thread's event loop ran
//   600-700 ms late while moving the kernels and initrds, and answered every datagram that late); HTTP stays on
//   the main thread.
// - HTTP: one keep-alive connection per machine for script, kernel and initrd (iPXE pools connections), a new
//   connection for the enlistment (the kernel's own TCP stack).
//
// Output: JSON lines on stdout, as things happen:
//   {"ev":"ready"}                                             with --start-at stdin: bound; waiting for the epoch ms
//                                                              to start at, on one line of stdin
//   {"ev":"lease","mac","ip","phase":"dhcp1"|"dhcp2","t"}      an ACK this machine took (t: ms since --start-at)
//   {"ev":"enlisted","mac","machineId","t"}                    a 2xx answer to the enlistment
//   {"ev":"machine","mac","ip","t","ms":{PHASE: ms},"retries":{PHASE: n},"errors":{PHASE: n},"reboots"}  done
//   {"ev":"summary","done","total","failed":[mac...],"bytes","elapsedMs","cpuSeconds"}   at the end (all done or the deadline)
// and the first errors of each phase as {"ev":"error","mac","phase","message"}.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import type { AckFacts, DoraRequest, TftpRequest, UdpReply, UdpRequest } from './storm-udp.ts';

export const PHASES = ['dhcp1', 'tftp', 'dhcp2', 'script', 'kernel', 'initrd', 'enlist'] as const;
export type Phase = (typeof PHASES)[number];

export interface MachineResult {
  ev: 'machine';
  mac: string;
  ip: string;
  /** ms since the storm's start at which the machine was done (enlisted, or fetched its initrd without enlisting). */
  t: number;
  /** Duration of each phase's successful attempt, ms. */
  ms: Partial<Record<Phase, number>>;
  /** Retransmissions (DHCP, TFTP) and repeated requests (enlist) by phase. */
  retries: Partial<Record<Phase, number>>;
  /** Failed attempts by phase (timeouts after every retransmission, error answers, broken transfers). */
  errors: Partial<Record<Phase, number>>;
  reboots: number;
}
export interface LeaseEvent { ev: 'lease'; mac: string; ip: string; phase: 'dhcp1' | 'dhcp2'; t: number }
export interface EnlistedEvent { ev: 'enlisted'; mac: string; machineId: string; t: number }
export interface ErrorEvent { ev: 'error'; mac: string; phase: Phase; message: string }
export interface SummaryEvent { ev: 'summary'; done: number; total: number; failed: string[]; bytes: number; elapsedMs: number; cpuSeconds: number;
  /** DHCP replies this process's socket read, and those for no DORA of its own (other processes', late ones). */
  dhcp: { received: number; unmatched: number };
  /** How late this process's event loop ran (perf_hooks.monitorEventLoopDelay): what its own load added to every phase. */
  loopDelayMs: { p99: number; max: number } }
export interface ReadyEvent { ev: 'ready' }
export type StormEvent = ReadyEvent | LeaseEvent | EnlistedEvent | MachineResult | ErrorEvent | SummaryEvent;

/** Splits a child's stdout into StormEvents (for the bench and the crash test). */
export function stormLines(onEvent: (e: StormEvent) => void): (chunk: string) => void {
  let buf = '';
  return (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line.startsWith('{')) onEvent(JSON.parse(line) as StormEvent);
    }
  };
}

/** The MAC of machine `index` (0-based) under a 3-octet prefix. */
export function stormMac(prefix: string, index: number): string {
  return `${prefix}:${[(index >> 16) & 255, (index >> 8) & 255, index & 255].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
}

// ---------------------------------------------------------------------------------------------------------

class Reboot extends Error {
  constructor(readonly phase: Phase, message: string) { super(message); }
}

/** Adds addresses to an interface, batched: one `ip -force -batch -` per burst of requests. */
class AddressAdder {
  private readonly added = new Set<string>();
  private pending = new Map<string, (() => void)[]>();
  private running = false;

  constructor(private readonly ifname: string | undefined) {}

  ensure(ip: string): Promise<void> {
    if (this.ifname === undefined || this.added.has(ip)) return Promise.resolve();
    return new Promise((resolve) => {
      const waiting = this.pending.get(ip) ?? [];
      waiting.push(resolve);
      this.pending.set(ip, waiting);
      if (!this.running) { this.running = true; setTimeout(() => this.flush(), 5); }
    });
  }

  private flush(): void {
    const batch = this.pending;
    this.pending = new Map();
    if (batch.size === 0) { this.running = false; return; }
    // -force: go on past an address that is already there ("File exists").
    const child = spawn('ip', ['-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
    child.on('close', () => {
      const real = err.split('\n').filter((l) => l.trim() && !/File exists|Command failed/.test(l));
      if (real.length > 0) process.stderr.write(`ip addr add: ${real.slice(0, 3).join('; ')}\n`);
      for (const [ip, waiters] of batch) { this.added.add(ip); for (const w of waiters) w(); }
      this.flush();
    });
    child.stdin!.end([...batch.keys()].map((ip) => `addr add ${ip}/32 dev ${this.ifname}\n`).join(''));
  }
}

export interface StormOptions {
  machines: number;
  first: number;
  macPrefix: string;
  ifname: string | undefined;
  /** Resolves with the storm's time zero (epoch ms) once every process is ready; machines power on then. */
  start: () => Promise<number>;
  blksize: number;
  dhcpRetry: 'firmware' | 'fast';
  rebootDelayMs: number;
  spreadMs: number;
  enlist: boolean;
  deadlineMs: number;
  emit: (e: StormEvent) => void;
}

const HTTP_IDLE_MS = 30_000;

/** One read buffer for every connection: each read is consumed before the next one (one thread). */
const READ_BUFFER = Buffer.allocUnsafe(1024 * 1024);

/**
 * A minimal HTTP/1.1 client for GETs on one keep-alive connection from one local address, as iPXE fetches a
 * script, a kernel and an initrd. Why not node:http: the client process carries every machine's downloads, and
 * node:http reads 64 KiB per read(2) with a stream event and a Buffer per chunk; this reads up to 1 MiB into one
 * reused buffer (net.Socket `onread`) and only counts the body, so the client's CPU per GiB (its ceiling on this
 * 2-CPU machine) goes to the kernel's copy. Responses need Content-Length (files and scripts have it).
 */
class RawHttp {
  private sock: net.Socket | undefined;
  private onBytes: ((chunk: Buffer) => void) | undefined;
  private onEnd: ((err: Error) => void) | undefined;

  constructor(private readonly localAddress: string) {}

  get(url: URL, keepText: boolean): Promise<{ status: number; bytes: number; text?: string }> {
    return new Promise((resolve, reject) => {
      if (!this.sock || this.sock.destroyed) {
        const sock = net.connect({
          host: url.hostname, port: Number(url.port || 80), localAddress: this.localAddress,
          onread: { buffer: READ_BUFFER, callback: (n: number, buf: Uint8Array) => { this.onBytes?.(Buffer.from(buf.buffer, buf.byteOffset, n)); return true; } },
        });
        sock.setTimeout(HTTP_IDLE_MS, () => sock.destroy(new Error(`nothing for ${HTTP_IDLE_MS / 1000} s`)));
        sock.on('error', (err) => this.onEnd?.(err));
        sock.on('close', () => this.onEnd?.(new Error('socket hang up')));
        this.sock = sock;
      }
      let head: Buffer | undefined = Buffer.alloc(0);
      let status = 0;
      let length = -1;
      let got = 0;
      let close = false;
      const text: Buffer[] = [];
      const finish = (err?: Error): void => {
        this.onBytes = undefined;
        this.onEnd = undefined;
        if (err) { this.sock?.destroy(); reject(err); return; }
        if (close) this.sock?.destroy();
        resolve({ status, bytes: got, ...(keepText ? { text: Buffer.concat(text).toString('utf8') } : {}) });
      };
      this.onEnd = (err) => finish(new Error(`${err.message} after ${got} body bytes`));
      this.onBytes = (chunk) => {
        let body = chunk;
        if (head !== undefined) {
          head = Buffer.concat([head, chunk]);
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) { if (head.length > 64 * 1024) finish(new Error('no end of headers')); return; }
          const lines = head.subarray(0, end).toString('latin1').split('\r\n');
          status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
          for (const l of lines.slice(1)) {
            const m = /^([^:]+):\s*(.*)$/.exec(l);
            if (!m) continue;
            const name = m[1]!.toLowerCase();
            if (name === 'content-length') length = Number(m[2]);
            else if (name === 'connection' && /close/i.test(m[2]!)) close = true;
            else if (name === 'transfer-encoding') { finish(new Error(`unsupported transfer-encoding ${m[2]}`)); return; }
          }
          if (length < 0) { finish(new Error('no Content-Length')); return; }
          // Our own copy of what follows the headers: the read buffer is reused by the next read.
          body = Buffer.from(head.subarray(end + 4));
          head = undefined;
        }
        got += body.length;
        if (keepText) text.push(Buffer.from(body));
        if (got >= length) finish(got === length ? undefined : new Error(`${got} bytes for a Content-Length of ${length}`));
      };
      this.sock.write(`GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUser-Agent: iPXE/1.21.1 (storm)\r\nConnection: keep-alive\r\n\r\n`);
    });
  }

  close(): void {
    this.sock?.destroy();
    this.sock = undefined;
  }
}

/** The UDP worker (storm-udp.ts): requests out, replies matched by id. */
class UdpThread {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, (r: UdpReply) => void>();
  private nextId = 1;
  private statsWaiter: ((s: { received: number; unmatched: number }) => void) | undefined;
  readonly ready: Promise<void>;

  constructor() {
    // Node 20 does not apply the parent's module hooks (--import tsx) to a worker: the worker registers tsx itself,
    // then loads the .ts module.
    const tsxApi = import.meta.resolve('tsx/esm/api');
    const code = `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(new URL('./storm-udp.ts', import.meta.url).href)}); });`;
    this.worker = new Worker(code, { eval: true, workerData: { stormUdp: true } });
    this.ready = new Promise((resolve, reject) => {
      this.worker.once('error', reject);
      this.worker.on('message', (m: UdpReply | { kind: 'ready' } | { kind: 'stats'; received: number; unmatched: number }) => {
        if ('kind' in m) {
          if (m.kind === 'ready') resolve();
          else if (m.kind === 'stats') this.statsWaiter?.({ received: m.received, unmatched: m.unmatched });
          return;
        }
        const w = this.waiting.get(m.id);
        this.waiting.delete(m.id);
        w?.(m);
      });
    });
    this.worker.on('error', (err) => { process.stderr.write(`udp worker: ${err.stack ?? err.message}\n`); process.exit(1); });
  }

  ask<R extends UdpRequest>(req: Omit<R, 'id'>): Promise<UdpReply> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.worker.postMessage({ ...req, id });
    });
  }

  async close(): Promise<{ received: number; unmatched: number }> {
    const stats = await new Promise<{ received: number; unmatched: number }>((resolve) => {
      this.statsWaiter = resolve;
      this.worker.postMessage({ kind: 'stats' });
    });
    this.worker.postMessage({ kind: 'close' });
    await new Promise((r) => this.worker.once('exit', r));
    return stats;
  }
}

export async function runStorm(o: StormOptions): Promise<SummaryEvent> {
  const addresses = new AddressAdder(o.ifname);
  const errorsShown = new Map<Phase, number>();
  let bytes = 0;
  let startAt = Number.POSITIVE_INFINITY;
  const since = () => Date.now() - startAt;
  const udp = new UdpThread();
  await udp.ready;

  const fail = (mac: string, phase: Phase, message: string): void => {
    const n = errorsShown.get(phase) ?? 0;
    errorsShown.set(phase, n + 1);
    if (n < 5) o.emit({ ev: 'error', mac, phase, message });
  };

  class Machine {
    readonly uuid: Buffer;
    ip = '';
    readonly ms: Partial<Record<Phase, number>> = {};
    readonly retries: Partial<Record<Phase, number>> = {};
    readonly errors: Partial<Record<Phase, number>> = {};
    reboots = 0;
    conn: RawHttp | undefined;

    constructor(readonly mac: string) {
      this.uuid = randomBytes(16);
      // RFC 4122 version 4 shape, as SMBIOS UUIDs usually are.
      this.uuid[6] = (this.uuid[6]! & 0x0f) | 0x40;
      this.uuid[8] = (this.uuid[8]! & 0x3f) | 0x80;
    }

    count(what: 'retries' | 'errors', phase: Phase, n = 1): void {
      if (n > 0) this[what][phase] = (this[what][phase] ?? 0) + n;
    }

    async boot(): Promise<boolean> {
      for (;;) {
        if (Date.now() > startAt + o.deadlineMs) return false;
        try {
          const pxe = await this.timed('dhcp1', () => this.dora('dhcp1'));
          const file = pxe.bootfile ?? pxe.file;
          const tftpServer = pxe.tftpServer ?? (pxe.siaddr !== '0.0.0.0' ? pxe.siaddr : pxe.serverId);
          if (!file || !tftpServer) throw new Reboot('dhcp1', `no boot file or server in the PXE ACK (file "${file}", server ${tftpServer})`);
          await this.timed('tftp', () => this.tftp(tftpServer, file));
          const ipxe = await this.timed('dhcp2', () => this.dora('dhcp2'));
          const scriptUrl = ipxe.bootfile ?? ipxe.file;
          if (!/^https?:\/\//.test(scriptUrl)) throw new Reboot('dhcp2', `iPXE's ACK names no script URL (option 67 "${scriptUrl}")`);
          await addresses.ensure(this.ip);
          this.conn = new RawHttp(this.ip);
          let boot: { kernel: string; initrd: string; args: Map<string, string> };
          try {
            const script = await this.timed('script', () => this.get('script', scriptUrl, true));
            boot = parseScript(script ?? '');
            await this.timed('kernel', () => this.get('kernel', boot.kernel, false));
            await this.timed('initrd', () => this.get('initrd', boot.initrd, false));
          } finally {
            this.conn.close();
            this.conn = undefined;
          }
          const url = boot.args.get('metalbox.url');
          const token = boot.args.get('metalbox.token');
          if (o.enlist && url !== undefined && token !== undefined) await this.timed('enlist', () => this.enlist(url, token));
          return true;
        } catch (err) {
          if (!(err instanceof Reboot)) throw err;
          this.count('errors', err.phase);
          fail(this.mac, err.phase, err.message);
          this.reboots++;
          await sleep(o.rebootDelayMs);
        }
      }
    }

    async timed<T>(phase: Phase, fn: () => Promise<T>): Promise<T> {
      const t0 = performance.now();
      const r = await fn();
      this.ms[phase] = performance.now() - t0;
      return r;
    }

    /** A DORA in the UDP thread; the lease is reported the moment the answer is here. */
    async dora(phase: 'dhcp1' | 'dhcp2'): Promise<AckFacts> {
      const r = await udp.ask<DoraRequest>({ kind: 'dora', phase, mac: this.mac, uuid: this.uuid.toString('hex'), retry: o.dhcpRetry, deadline: startAt + o.deadlineMs });
      this.count('retries', phase, r.retries);
      this.count('errors', phase, r.errors.length);
      for (const e of r.errors) fail(this.mac, phase, e);
      if (!r.ok || !r.ack) throw new Reboot(phase, r.message ?? 'no ACK');
      this.ip = r.ack.yiaddr;
      o.emit({ ev: 'lease', mac: this.mac, ip: r.ack.yiaddr, phase, t: r.at - startAt });
      return r.ack;
    }

    /** A TFTP read in the UDP thread, from this machine's address. */
    async tftp(server: string, file: string): Promise<void> {
      await addresses.ensure(this.ip);
      const r = await udp.ask<TftpRequest>({ kind: 'tftp', ip: this.ip, server, file, blksize: o.blksize });
      this.count('retries', 'tftp', r.retries);
      bytes += r.bytes;
      if (!r.ok) throw new Reboot('tftp', r.message ?? 'failed');
    }

    /** GET over the machine's keep-alive connection: the text when asked, else the bytes are counted and dropped. */
    async get(phase: Phase, url: string, text: boolean): Promise<string | undefined> {
      try {
        const r = await this.conn!.get(new URL(url), text);
        bytes += r.bytes;
        if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
        return r.text;
      } catch (err) {
        throw new Reboot(phase, `GET ${url}: ${(err as Error).message}`);
      }
    }

    /** The agent's first report; repeated after 1, 2, 4, 8, 8 ... s until a 2xx (src/agent/client.ts). */
    async enlist(base: string, token: string): Promise<void> {
      const body = JSON.stringify(inventory(this.mac, this.uuid));
      for (let attempt = 1; ; attempt++) {
        const r = await new Promise<{ status: number; text: string } | Error>((resolve) => {
          const req = http.request(`${base}/boot/agent/v1/inventory`, {
            method: 'POST', agent: false, localAddress: this.ip,
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
          }, (res) => {
            let text = '';
            res.setEncoding('utf8').on('data', (d: string) => { text += d; });
            res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
            res.on('error', resolve);
          });
          req.setTimeout(HTTP_IDLE_MS, () => req.destroy(new Error(`nothing for ${HTTP_IDLE_MS / 1000} s`)));
          req.on('error', resolve);
          req.end(body);
        });
        if (!(r instanceof Error) && r.status >= 200 && r.status < 300) {
          const id = (JSON.parse(r.text) as { machineId?: string }).machineId ?? '';
          o.emit({ ev: 'enlisted', mac: this.mac, machineId: id, t: since() });
          return;
        }
        this.count('errors', 'enlist');
        fail(this.mac, 'enlist', r instanceof Error ? r.message : `HTTP ${r.status}: ${r.text.slice(0, 200)}`);
        if (Date.now() > startAt + o.deadlineMs) throw new Reboot('enlist', 'deadline');
        this.count('retries', 'enlist');
        await sleep(Math.min(8000, 1000 * 2 ** (attempt - 1)));
      }
    }
  }

  const machines = Array.from({ length: o.machines }, (_, i) => new Machine(stormMac(o.macPrefix, o.first + i)));
  startAt = await o.start();
  await sleep(Math.max(0, startAt - Date.now()));
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const failed: string[] = [];
  let done = 0;
  await Promise.all(machines.map(async (m, i) => {
    // Power-on spread: machine i starts at i/N of --spread-ms (0: all at once).
    if (o.spreadMs > 0) await sleep((o.spreadMs * i) / o.machines);
    const ok = await m.boot().catch((err: unknown) => { fail(m.mac, 'dhcp1', `client bug: ${(err as Error).stack ?? String(err)}`); return false; });
    if (!ok) { failed.push(m.mac); return; }
    done++;
    o.emit({ ev: 'machine', mac: m.mac, ip: m.ip, t: since(), ms: m.ms, retries: m.retries, errors: m.errors, reboots: m.reboots });
  }));
  const dhcpSeen = await udp.close();
  const cpu = process.cpuUsage();
  const summary: SummaryEvent = {
    ev: 'summary', done, total: o.machines, failed, bytes, elapsedMs: since(), cpuSeconds: (cpu.user + cpu.system) / 1e6, dhcp: dhcpSeen,
    loopDelayMs: { p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
  };
  o.emit(summary);
  return summary;
}

/** Kernel and initrd URLs and the kernel's `key=value` arguments from an iPXE script (script.ts's shape, or a static one). */
export function parseScript(text: string): { kernel: string; initrd: string; args: Map<string, string> } {
  let kernel = '';
  let initrd = '';
  const args = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.split('||')[0]!.trim();
    const words = line.split(/\s+/);
    if (words[0] === 'kernel' || words[0] === 'chain') {
      const rest = words.slice(1).filter((w) => !w.startsWith('--'));
      kernel = rest[0] ?? '';
      for (const a of rest.slice(1)) {
        const eq = a.indexOf('=');
        if (eq > 0) args.set(a.slice(0, eq), a.slice(eq + 1));
      }
    } else if (words[0] === 'initrd') {
      initrd = words.slice(1).filter((w) => !w.startsWith('--'))[0] ?? '';
    }
  }
  if (!/^https?:\/\//.test(kernel) || !/^https?:\/\//.test(initrd)) throw new Reboot('script', `no kernel and initrd URLs in the script: ${JSON.stringify(text.slice(0, 300))}`);
  return { kernel, initrd, args };
}

/** An inventory as src/agent/inventory.ts reports it, for a small BIOS server. */
function inventory(mac: string, uuid: Buffer): unknown {
  const hex = uuid.toString('hex');
  return {
    cpu: { model: 'GenuineIntel Xeon Storm 4110', cores: 8, threads: 16, sockets: 1 },
    memoryBytes: 32 * 1024 ** 3,
    firmware: 'bios',
    dmi: {
      vendor: 'StormCorp', product: 'PXE-Node', serial: `STORM-${mac.replace(/:/g, '').slice(6)}`,
      uuid: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`, biosVersion: '2.1.7',
    },
    disks: [{ name: 'sda', path: '/dev/sda', sizeBytes: 480 * 1000 ** 3, model: 'STORM SSD', serial: `SSD${mac.replace(/:/g, '')}`, rotational: false, removable: false }],
    nics: [{ name: 'eth0', mac, link: true, speedMbps: 10000, driver: 'ixgbe' }],
  };
}

// ---------------------------------------------------------------------------------------------------------

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, '/'))) {
  const { values } = parseArgs({
    options: {
      machines: { type: 'string', default: '100' },
      first: { type: 'string', default: '0' },
      'mac-prefix': { type: 'string', default: '52:54:0f' },
      interface: { type: 'string' },
      'start-at': { type: 'string' },
      blksize: { type: 'string', default: '1468' },
      'dhcp-retry': { type: 'string', default: 'firmware' },
      'reboot-delay-ms': { type: 'string', default: '10000' },
      'spread-ms': { type: 'string', default: '0' },
      'no-enlist': { type: 'boolean', default: false },
      'deadline-s': { type: 'string', default: '600' },
    },
  });
  const retry = values['dhcp-retry'];
  if (retry !== 'firmware' && retry !== 'fast') throw new TypeError('--dhcp-retry firmware|fast');
  // --start-at stdin: say {"ev":"ready"} once bound, then wait for a line with the epoch ms to start at.
  const startArg = values['start-at'];
  const out: string[] = [];
  let flushing = false;
  // Lines are buffered and written once per tick: thousands of small writes to a pipe would cost the clients' CPU.
  const emit = (e: StormEvent): void => {
    out.push(JSON.stringify(e));
    if (!flushing) { flushing = true; setImmediate(() => { flushing = false; process.stdout.write(`${out.splice(0).join('\n')}\n`); }); }
  };
  const summary = await runStorm({
    machines: Number(values.machines), first: Number(values.first), macPrefix: values['mac-prefix'], ifname: values.interface,
    start: async () => {
      if (startArg === undefined) return Date.now();
      if (startArg !== 'stdin') return Number(startArg);
      process.stdout.write('{"ev":"ready"}\n');
      let line = '';
      for await (const chunk of process.stdin.setEncoding('utf8')) {
        line += chunk as string;
        if (line.includes('\n')) break;
      }
      return Number(line.trim());
    },
    blksize: Number(values.blksize), dhcpRetry: retry, rebootDelayMs: Number(values['reboot-delay-ms']),
    spreadMs: Number(values['spread-ms']), enlist: !values['no-enlist'], deadlineMs: Number(values['deadline-s']) * 1000, emit,
  });
  await new Promise<void>((resolve) => setImmediate(resolve));
  process.exitCode = summary.done === summary.total ? 0 : 3;
}
