// An IPMI v2.0 / RMCP+ client for one BMC: session establishment (Get Channel Authentication
// Capabilities, Open Session, RAKP 1-4, Set Session Privilege Level), requests inside the session with
// per-packet sequence numbers, the inbound replay window, retransmission with a per-call deadline,
// transparent re-establishment when the BMC drops the session, and Close Session on close().
//
// One UDP socket per client (src/lib/udp-socket.ts, port 0, no SO_REUSEADDR), opened with the session and
// closed by close() or when establishing a session fails. Calls are serialised: one exchange is in flight
// at a time, which is what BMCs expect of a session (and what the BMC service's one-session-per-BMC rule
// relies on).
//
// What arrives on the socket is sorted into: the answer we wait for; "not for us" (another source, another
// session ID, a replayed or duplicate sequence number, an answer to an earlier request), ignored and
// counted; and "for us but malformed" (does not decode, AuthCode does not verify, bad padding), also
// ignored so that a forged packet cannot break a call, but remembered: if no good answer comes before
// the retransmissions run out, the call fails with BMC_PROTOCOL instead of BMC_TIMEOUT. The password,
// Kg and session keys never appear in an error, a log line or `details`.
import { randomBytes as cryptoRandomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { errnoCode, isMetalboxError, MetalboxError } from '../../lib/errors.ts';
import { limitedLogger, type LimitedLog } from '../../lib/log-limit.ts';
import type { Logger } from '../../lib/logger.ts';
import { openUdpSocket, type Datagram, type UdpSocket } from '../../lib/udp-socket.ts';
import {
  APP_CMD, CIPHER_SUITES, codesEqual, completionCodeText, decodeChannelAuthCapabilities, decodeIpmiMessage, decodeIpmiPacket,
  decodeOpenSessionResponse, decodeRakp2, decodeRakp4, deriveSessionKeys, encodeCloseSession, encodeGetChannelAuthCapabilities,
  encodeIpmi15, encodeIpmiRequest, encodeOpenSessionRequest, encodeRakp1, encodeRakp3, encodeRmcpPlus, encodeSetSessionPrivilege,
  NETFN, openIpmiMessage, PAYLOAD_TYPE, PRIVILEGE, PRIVILEGE_NAMES, rakp2AuthCode, rakp3AuthCode, rakp4Icv, RAKP_NAME_ONLY_LOOKUP,
  RMCP_PLUS_STATUS, sealIpmiMessage, type CipherSuite, type IpmiResponse, type SessionSecrets,
} from '../../protocols/ipmi/index.ts';

export const IPMI_PORT = 623;

/** The abort reason close() gives calls in flight. */
const CLOSED = 'closed';

export interface IpmiClientOptions {
  /** IPv4 address or host name of the BMC. */
  address: string;
  port?: number;
  /** 0-16 bytes; '' is the null user. */
  username?: string;
  /** 0-20 bytes (K_UID). */
  password?: string;
  /** The BMC key K_G (0-20 bytes), when the BMC has one set; else the password is used (§13.31). */
  kg?: Buffer;
  /** 3 (HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128; default) or 17 (the SHA-256 equivalents). */
  cipherSuite?: number;
  /** Session privilege to ask for: PRIVILEGE.OPERATOR (3) or ADMINISTRATOR (4, default). */
  privilege?: number;
  /** Wait for an answer before retransmitting; default 1000 ms. */
  timeoutMs?: number;
  /** Retransmissions of one message; default 4. */
  retries?: number;
  /** Longest a call may take, session setup and retransmissions included; default 5000 ms. */
  deadlineMs?: number;
  /**
   * An idle session older than this is closed and a new one opened before the next request (BMCs end idle
   * sessions, IPMI v2.0 §6.12.15); default 25,000 ms. A session that stops answering earlier is reopened too.
   */
  sessionIdleMs?: number;
  logger?: Logger;
  /** Source of randomness (session IDs, RAKP random numbers, IVs); tests make it deterministic. */
  randomBytes?: (n: number) => Buffer;
}

export interface IpmiClientStats {
  sent: number;
  retransmits: number;
  received: number;
  /** From elsewhere, for another session, or answers to earlier requests. */
  ignored: number;
  /** Authenticated packets whose sequence number was already seen or fell behind the window. */
  replays: number;
  /** Did not decode, verify or decrypt. */
  malformed: number;
  sessionsOpened: number;
  /** Sessions found dead (no answer) or idle and opened again. */
  sessionsReopened: number;
}

interface Session {
  consoleSessionId: number;
  managedSessionId: number;
  secrets: SessionSecrets;
  /** Last session sequence number we used. */
  outSeq: number;
  window: ReplayWindow;
  /** performance.now() of the last good answer. */
  lastHeard: number;
}

interface CallContext {
  deadline: number;
  signal: AbortSignal;
  started: number;
}

/**
 * The inbound anti-replay check of §6.12.13-§6.12.14: a sequence number is accepted once, when it is above
 * every one seen so far or within the 32 below the highest and not yet seen. Call it only for packets whose
 * AuthCode verified, so that a forger cannot move the window.
 */
export class ReplayWindow {
  private highest = -1;
  /** Bit i: highest - i was seen. */
  private seen = 0;

  accept(sequence: number): boolean {
    if (this.highest < 0 || sequence > this.highest) {
      const shift = this.highest < 0 ? 32 : sequence - this.highest;
      this.seen = shift >= 32 ? 1 : ((this.seen << shift) | 1) >>> 0;
      this.highest = sequence;
      return true;
    }
    const back = this.highest - sequence;
    if (back >= 32) return false;
    const bit = (1 << back) >>> 0;
    if ((this.seen & bit) !== 0) return false;
    this.seen = (this.seen | bit) >>> 0;
    return true;
  }
}

/** RMCP+ status codes (§13.24) as the error a human can act on. */
function statusError(step: string, status: number, where: string, suite: number): MetalboxError {
  const text = `${RMCP_PLUS_STATUS[status] ?? 'unknown status'} (RMCP+ status 0x${status.toString(16).padStart(2, '0')})`;
  const details = { step, rmcpPlusStatus: status, address: where };
  switch (status) {
    case 0x04: case 0x05: case 0x06: case 0x07: case 0x10: case 0x11:
      return new MetalboxError('BMC_UNSUPPORTED', `the BMC at ${where} refused cipher suite ${suite} in ${step}: ${text}`, { details: { ...details, cipherSuite: suite } });
    case 0x09: case 0x0a:
      return new MetalboxError('BMC_AUTH_FAILED', `the BMC at ${where} refused the privilege level asked for in ${step}: ${text}; the user may need operator or administrator privilege`, { details });
    case 0x0d: case 0x0c:
      return new MetalboxError('BMC_AUTH_FAILED', `the BMC at ${where} does not know the user name: ${text}`, { details });
    case 0x0e: case 0x0f:
      return new MetalboxError('BMC_AUTH_FAILED', `the BMC at ${where} rejected the credentials in ${step}: ${text}; check the password (and Kg)`, { details });
    case 0x01: case 0x0b:
      return new MetalboxError('BMC_BUSY', `the BMC at ${where} has no free session in ${step}: ${text}; try again later, or close stale sessions on the BMC`, { details });
    default:
      return new MetalboxError('BMC_PROTOCOL', `the BMC at ${where} answered ${step} with ${text}`, { details });
  }
}

export class IpmiClient {
  readonly address: string;
  readonly port: number;
  private readonly suite: CipherSuite;
  private readonly username: Buffer;
  private readonly kuid: Buffer;
  private readonly kg: Buffer;
  private readonly privilege: number;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly deadlineMs: number;
  private readonly sessionIdleMs: number;
  private readonly random: (n: number) => Buffer;
  private readonly log: LimitedLog | undefined;

  private socket: UdpSocket | undefined;
  private target: string | undefined;
  private session: Session | undefined;
  private rqSeq = 0;
  private tag = 0;
  private onDatagram: ((d: Datagram) => void) | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private closing = new AbortController();
  private readonly counters: IpmiClientStats = { sent: 0, retransmits: 0, received: 0, ignored: 0, replays: 0, malformed: 0, sessionsOpened: 0, sessionsReopened: 0 };

  /** Throws BMC_INVALID for unusable options (never echoing a secret). */
  constructor(options: IpmiClientOptions) {
    const invalid = (message: string): MetalboxError => new MetalboxError('BMC_INVALID', message, { details: { address: options.address } });
    if (typeof options.address !== 'string' || options.address === '') throw invalid('the IPMI driver needs the BMC address');
    if (isIP(options.address) === 6) throw new MetalboxError('BMC_UNSUPPORTED', `the IPMI driver speaks IPv4 only; ${options.address} is IPv6`, { details: { address: options.address } });
    const port = options.port ?? IPMI_PORT;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`port ${port} must be 1-65535`);
    const suite = CIPHER_SUITES[options.cipherSuite ?? 3];
    if (suite === undefined) throw invalid(`cipher suite ${options.cipherSuite} is not supported; use 3 (HMAC-SHA1, AES-128) or 17 (HMAC-SHA256, AES-128)`);
    const username = Buffer.from(options.username ?? '', 'utf8');
    if (username.length > 16) throw invalid(`an IPMI user name is at most 16 bytes, this one is ${username.length}`);
    const kuid = Buffer.from(options.password ?? '', 'utf8');
    if (kuid.length > 20) throw invalid(`an IPMI v2.0 password is at most 20 bytes, this one is ${kuid.length}`);
    if (options.kg !== undefined && (options.kg.length === 0 || options.kg.length > 20)) throw invalid('Kg must be 1-20 bytes');
    const privilege = options.privilege ?? PRIVILEGE.ADMINISTRATOR;
    if (![PRIVILEGE.USER, PRIVILEGE.OPERATOR, PRIVILEGE.ADMINISTRATOR].includes(privilege as 2)) throw invalid(`privilege ${privilege} must be 2 (user), 3 (operator) or 4 (administrator)`);
    this.address = options.address;
    this.port = port;
    this.suite = suite;
    this.username = username;
    this.kuid = kuid;
    this.kg = options.kg ?? kuid;
    this.privilege = privilege;
    this.timeoutMs = positive(options.timeoutMs ?? 1000, 'timeoutMs');
    this.retries = nonNegative(options.retries ?? 4, 'retries');
    this.deadlineMs = positive(options.deadlineMs ?? 5000, 'deadlineMs');
    this.sessionIdleMs = positive(options.sessionIdleMs ?? 25_000, 'sessionIdleMs');
    this.random = options.randomBytes ?? cryptoRandomBytes;
    this.log = options.logger ? limitedLogger(options.logger) : undefined;
  }

  private get where(): string {
    return `${this.address}:${this.port}`;
  }

  stats(): IpmiClientStats {
    return { ...this.counters };
  }

  /** Whether a session is established right now. */
  get sessionOpen(): boolean {
    return this.session !== undefined;
  }

  /**
   * Sends one request inside the session (establishing it first if needed) and returns the response,
   * whatever its completion code. Rejects with BMC_TIMEOUT, BMC_UNREACHABLE, BMC_AUTH_FAILED,
   * BMC_UNSUPPORTED, BMC_BUSY or BMC_PROTOCOL.
   */
  request(netFn: number, cmd: number, data: Buffer = Buffer.alloc(0), signal?: AbortSignal, what?: string): Promise<IpmiResponse> {
    return this.enqueue(signal, (ctx) => this.requestInSession(ctx, netFn, cmd, data, what ?? `netFn 0x${netFn.toString(16)} cmd 0x${cmd.toString(16)}`));
  }

  /**
   * Like request(), but a completion code other than 0 is an error: 0xD4 (insufficient privilege) is
   * BMC_AUTH_FAILED; 0xC1 (invalid command), 0xD5 (not in present state) and 0xD6 (sub-function
   * unavailable) are BMC_UNSUPPORTED; the rest BMC_PROTOCOL. `what` names the command in the message.
   * Returns the response data after the completion code.
   */
  async command(netFn: number, cmd: number, data: Buffer, what: string, signal?: AbortSignal): Promise<Buffer> {
    const rs = await this.request(netFn, cmd, data, signal, what);
    if (rs.completionCode !== 0) throw this.completionError(rs, what);
    return rs.data;
  }

  completionError(rs: IpmiResponse, what: string): MetalboxError {
    const cc = rs.completionCode;
    const details = { address: this.address, completionCode: cc, netFn: rs.netFn & ~1, cmd: rs.cmd };
    const text = `${completionCodeText(cc)} (completion code 0x${cc.toString(16)})`;
    if (cc === 0xd4) return new MetalboxError('BMC_AUTH_FAILED', `the BMC at ${this.where} refused ${what}: ${text}; the user needs more privilege`, { details });
    if (cc === 0xc1 || cc === 0xd5 || cc === 0xd6) return new MetalboxError('BMC_UNSUPPORTED', `the BMC at ${this.where} cannot do ${what}: ${text}`, { details });
    return new MetalboxError('BMC_PROTOCOL', `the BMC at ${this.where} answered ${what} with ${text}`, { details });
  }

  /** Opens the session now (else the first request does). */
  connect(signal?: AbortSignal): Promise<void> {
    return this.enqueue(signal, (ctx) => this.ensureSession(ctx));
  }

  /**
   * Ends the session (Close Session, §22.19, one short exchange whose failure is ignored) and closes the
   * socket. Calls in flight or queued fail with BMC_TIMEOUT (reason "closed"). Idempotent; the client can
   * be used again afterwards (it opens a new session).
   */
  close(): Promise<void> {
    this.closing.abort(CLOSED);
    this.closing = new AbortController();
    const run = async (): Promise<void> => {
      const s = this.session;
      if (s !== undefined && this.socket !== undefined) {
        const now = performance.now();
        const ctx: CallContext = { started: now, deadline: now + Math.min(this.timeoutMs, 1000), signal: this.closing.signal };
        try {
          await this.sessionExchange(ctx, s, NETFN.APP, APP_CMD.CLOSE_SESSION, encodeCloseSession(s.managedSessionId), 'Close Session', 2);
        } catch {
          // Best effort: the BMC ends the session itself when it times out.
        }
      }
      this.session = undefined;
      this.closeSocket();
    };
    const p = this.tail.then(run, run);
    this.tail = p.catch(() => undefined);
    return p;
  }

  // --- calls ---------------------------------------------------------------------------------------------

  private enqueue<T>(signal: AbortSignal | undefined, fn: (ctx: CallContext) => Promise<T>): Promise<T> {
    // The close signal is the one current at enqueue time: a call queued before close() fails with it.
    const closing = this.closing.signal;
    const run = async (): Promise<T> => {
      const started = performance.now();
      const ctx: CallContext = { started, deadline: started + this.deadlineMs, signal: signal ? AbortSignal.any([signal, closing]) : closing };
      if (ctx.signal.aborted) throw this.abortError(ctx, closing);
      try {
        return await fn(ctx);
      } catch (err) {
        if (ctx.signal.aborted && !isMetalboxError(err)) throw this.abortError(ctx, closing);
        throw err;
      } finally {
        // A client that has no session holds no socket between calls (a dead BMC costs no descriptor).
        if (this.session === undefined) this.closeSocket();
      }
    };
    const p = this.tail.then(run, run);
    this.tail = p.catch(() => undefined);
    return p;
  }

  private abortError(ctx: CallContext, closing: AbortSignal): MetalboxError {
    const reason = closing.aborted ? 'closed' : 'aborted';
    return new MetalboxError('BMC_TIMEOUT', `the call to the BMC at ${this.where} was ${reason}`, { details: { address: this.address, reason, elapsedMs: Math.round(performance.now() - ctx.started) } });
  }

  private async requestInSession(ctx: CallContext, netFn: number, cmd: number, data: Buffer, what: string): Promise<IpmiResponse> {
    await this.ensureSession(ctx);
    try {
      // Two tries in the session as it is; a BMC that answers neither may have ended it.
      return await this.sessionExchange(ctx, this.session!, netFn, cmd, data, what, Math.min(2, this.retries + 1));
    } catch (err) {
      if (!isMetalboxError(err, 'BMC_TIMEOUT') || ctx.signal.aborted || performance.now() >= ctx.deadline) throw err;
      // §6.12.15: BMCs close sessions after inactivity, and forget them when they reset. A silent session
      // is dropped and a new one established once (if the BMC is gone, that fails by the deadline).
      this.log?.('debug', 'ipmi-session-silent', { address: this.address }, 'IPMI session silent; establishing a new one');
      this.session = undefined;
      this.counters.sessionsReopened++;
      await this.ensureSession(ctx);
      return await this.sessionExchange(ctx, this.session!, netFn, cmd, data, what, this.retries + 1);
    }
  }

  // --- the socket and one exchange -----------------------------------------------------------------------

  private async resolveTarget(): Promise<string> {
    if (isIP(this.address) === 4) return this.address;
    try {
      return (await lookup(this.address, { family: 4 })).address;
    } catch (err) {
      throw new MetalboxError('BMC_UNREACHABLE', `cannot resolve the BMC host name ${this.address}: ${errnoCode(err) ?? (err as Error).message}`, { cause: err, details: { address: this.address } });
    }
  }

  private openSocket(): UdpSocket {
    if (this.socket === undefined) {
      this.socket = openUdpSocket({ port: 0, reuseAddress: false }, (d) => this.receive(d));
    }
    return this.socket;
  }

  private closeSocket(): void {
    this.socket?.close();
    this.socket = undefined;
  }

  private receive(d: Datagram): void {
    this.counters.received++;
    if (d.address !== this.target || d.port !== this.port || this.onDatagram === undefined) {
      this.counters.ignored++;
      return;
    }
    this.onDatagram(d);
  }

  /**
   * Sends `build()` and retransmits a fresh `build()` every timeoutMs until `accept` returns a value, the
   * attempts are used up or the call's deadline passes. `accept` returns undefined for "not for us" and
   * throws BMC_PROTOCOL for "malformed" (both keep waiting) or any other MetalboxError to end the call.
   */
  private exchange<T>(ctx: CallContext, what: string, attempts: number, build: () => Buffer, accept: (d: Datagram) => T | undefined): Promise<T> {
    const socket = this.openSocket();
    const target = this.target!;
    return new Promise<T>((resolve, reject) => {
      let sent = 0;
      let timer: NodeJS.Timeout | undefined;
      let malformed: MetalboxError | undefined;
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        this.onDatagram = undefined;
        ctx.signal.removeEventListener('abort', onAbort);
        settle();
      };
      const onAbort = (): void => {
        const reason = ctx.signal.reason === CLOSED ? 'closed' : 'aborted';
        finish(() => reject(new MetalboxError('BMC_TIMEOUT', `the call to the BMC at ${this.where} was ${reason} during ${what}`, { details: { address: this.address, reason } })));
      };
      const attempt = (): void => {
        const left = ctx.deadline - performance.now();
        if (sent >= attempts || left <= 0) {
          const elapsedMs = Math.round(performance.now() - ctx.started);
          const details = { address: this.address, port: this.port, step: what, attempts: sent, elapsedMs };
          finish(() => reject(malformed !== undefined
            ? new MetalboxError('BMC_PROTOCOL', `the BMC at ${this.where} answered ${what} only with packets that do not decode or verify (${malformed.message})`, { cause: malformed, details })
            : new MetalboxError('BMC_TIMEOUT', `no answer from the BMC at ${this.where} to ${what} after ${sent} attempt(s) in ${elapsedMs} ms`, { details })));
          return;
        }
        const data = build();
        if (sent > 0) this.counters.retransmits++;
        sent++;
        try {
          // false: the send queue was full; the datagram is lost like any other and retransmitted.
          if (socket.send(data, target, this.port)) this.counters.sent++;
        } catch (err) {
          const errno = isMetalboxError(err) ? err.details?.errno : errnoCode(err);
          finish(() => reject(new MetalboxError('BMC_UNREACHABLE', `cannot send to the BMC at ${this.where}: ${typeof errno === 'string' ? errno : (err as Error).message}`, { cause: err, details: { address: this.address, port: this.port } })));
          return;
        }
        timer = setTimeout(attempt, Math.min(this.timeoutMs, left));
      };
      this.onDatagram = (d) => {
        let value: T | undefined;
        try {
          value = accept(d);
        } catch (err) {
          if (isMetalboxError(err, 'BMC_PROTOCOL')) {
            malformed = err;
            this.counters.malformed++;
            this.log?.('warn', `ipmi-malformed:${this.address}`, { address: this.address, step: what, error: err.message }, 'malformed IPMI packet from the BMC ignored');
            return;
          }
          finish(() => reject(err));
          return;
        }
        if (value === undefined) {
          this.counters.ignored++;
          return;
        }
        finish(() => resolve(value));
      };
      if (ctx.signal.aborted) {
        onAbort();
        return;
      }
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      attempt();
    });
  }

  private nextRqSeq(): number {
    this.rqSeq = (this.rqSeq + 1) & 0x3f;
    return this.rqSeq;
  }

  /** One request inside `s`: every attempt is a new packet (sequence number, IV); the rqSeq stays. */
  private sessionExchange(ctx: CallContext, s: Session, netFn: number, cmd: number, data: Buffer, what: string, attempts: number): Promise<IpmiResponse> {
    const rqSeq = this.nextRqSeq();
    const message = encodeIpmiRequest({ netFn, cmd, rqSeq, data });
    return this.exchange(ctx, what, attempts,
      () => {
        // §6.12.13: each packet of the session carries the next sequence number, retransmissions too.
        s.outSeq = s.outSeq >= 0xffffffff ? 1 : s.outSeq + 1;
        return sealIpmiMessage(s.secrets, { sessionId: s.managedSessionId, sequence: s.outSeq, message, iv: this.random(16) });
      },
      (d) => {
        const p = decodeIpmiPacket(d.data, { authCodeLength: s.secrets.suite.authCodeLength });
        if (p.kind !== 'rmcp+' || p.sessionId !== s.consoleSessionId) return undefined;
        const plain = openIpmiMessage(s.secrets, p);
        if (!s.window.accept(p.sequence)) {
          this.counters.replays++;
          this.log?.('debug', `ipmi-replay:${this.address}`, { address: this.address, sequence: p.sequence }, 'replayed or duplicate IPMI packet ignored');
          return undefined;
        }
        const m = decodeIpmiMessage(plain);
        if (m.kind !== 'response' || m.netFn !== (netFn | 1) || m.cmd !== cmd || m.rqSeq !== rqSeq) return undefined;
        s.lastHeard = performance.now();
        return m;
      });
  }

  // --- session establishment -----------------------------------------------------------------------------

  private async ensureSession(ctx: CallContext): Promise<void> {
    const s = this.session;
    if (s !== undefined && performance.now() - s.lastHeard < this.sessionIdleMs) return;
    if (s !== undefined) {
      // Idle long enough that the BMC may have ended it: close it politely (freeing the BMC's slot if it
      // still exists) and open a new one, instead of waiting for a silent request to tell us.
      this.counters.sessionsReopened++;
      const short: CallContext = { ...ctx, deadline: Math.min(ctx.deadline, performance.now() + Math.min(this.timeoutMs, 500)) };
      try {
        await this.sessionExchange(short, s, NETFN.APP, APP_CMD.CLOSE_SESSION, encodeCloseSession(s.managedSessionId), 'Close Session', 1);
      } catch (err) {
        if (ctx.signal.aborted) throw err;
      }
      this.session = undefined;
    }
    this.target = await this.resolveTarget();
    this.openSocket();
    await this.channelAuthCapabilities(ctx);
    this.session = await this.openSession(ctx);
    this.counters.sessionsOpened++;
    const rs = await this.sessionExchange(ctx, this.session, NETFN.APP, APP_CMD.SET_SESSION_PRIVILEGE_LEVEL, encodeSetSessionPrivilege(this.privilege), 'Set Session Privilege Level', this.retries + 1);
    if (rs.completionCode !== 0) {
      this.session = undefined;
      const name = PRIVILEGE_NAMES[this.privilege];
      throw new MetalboxError('BMC_AUTH_FAILED', `the BMC at ${this.where} refused ${name} privilege for this user (completion code 0x${rs.completionCode.toString(16)}: ${completionCodeText(rs.completionCode)})`, {
        details: { address: this.address, completionCode: rs.completionCode, privilege: this.privilege },
      });
    }
  }

  /** Get Channel Authentication Capabilities (§22.13) before any session: is this a v2.0 BMC, does it want a Kg? */
  private async channelAuthCapabilities(ctx: CallContext): Promise<void> {
    const rqSeq = this.nextRqSeq();
    const message = encodeIpmiRequest({ netFn: NETFN.APP, cmd: APP_CMD.GET_CHANNEL_AUTH_CAPABILITIES, rqSeq, data: encodeGetChannelAuthCapabilities({ privilege: this.privilege }) });
    const packet = encodeIpmi15({ message });
    const rs = await this.exchange(ctx, 'Get Channel Authentication Capabilities', this.retries + 1, () => packet, (d) => {
      const p = decodeIpmiPacket(d.data);
      if (p.kind !== 'ipmi15' || p.sessionId !== 0) return undefined;
      const m = decodeIpmiMessage(p.message);
      if (m.kind !== 'response' || m.netFn !== NETFN.APP + 1 || m.cmd !== APP_CMD.GET_CHANNEL_AUTH_CAPABILITIES || m.rqSeq !== rqSeq) return undefined;
      return m;
    });
    // QUIRK(bmc): some BMCs refuse the v2.0 "extended data" form; RMCP+ may still work, so an error here
    // is not fatal and Open Session decides.
    if (rs.completionCode !== 0) return;
    const caps = decodeChannelAuthCapabilities(rs.data);
    if (caps.extendedCapabilities && !caps.ipmi20) {
      throw new MetalboxError('BMC_UNSUPPORTED', `the BMC at ${this.where} does not speak IPMI v2.0 (RMCP+) on this channel; the IPMI driver needs it`, { details: { address: this.address } });
    }
    if (caps.kgSet && this.kg === this.kuid) {
      throw new MetalboxError('BMC_AUTH_FAILED', `the BMC at ${this.where} has a BMC key (Kg) set; give the BMC its Kg`, { details: { address: this.address, kgSet: true } });
    }
  }

  /** Open Session (§13.17-§13.18) and RAKP 1-4 (§13.20-§13.23). */
  private async openSession(ctx: CallContext): Promise<Session> {
    const suite = this.suite;
    const where = this.where;
    const consoleSessionId = this.randomSessionId();
    const tag = this.nextTag();
    const openRequest = encodeRmcpPlus({
      payloadType: PAYLOAD_TYPE.OPEN_SESSION_REQUEST, sessionId: 0, sequence: 0,
      // Privilege 0: "the highest level matching the proposed algorithms", as ipmitool asks; RAKP 1 asks for ours.
      payload: encodeOpenSessionRequest({ tag, privilege: PRIVILEGE.HIGHEST, consoleSessionId, authAlg: suite.authAlg, integrityAlg: suite.integrityAlg, confidentialityAlg: suite.confidentialityAlg }),
    });
    const opened = await this.exchange(ctx, 'Open Session', this.retries + 1, () => openRequest, (d) => {
      const p = decodeIpmiPacket(d.data);
      if (p.kind !== 'rmcp+' || p.payloadType !== PAYLOAD_TYPE.OPEN_SESSION_RESPONSE || p.sessionId !== 0) return undefined;
      const m = decodeOpenSessionResponse(p.payload, p.payloadOffset);
      if (!ours(m, tag, consoleSessionId)) return undefined;
      if (m.status !== 0) throw statusError('Open Session', m.status, where, suite.id);
      if (m.authAlg !== suite.authAlg || m.integrityAlg !== suite.integrityAlg || m.confidentialityAlg !== suite.confidentialityAlg) {
        throw new MetalboxError('BMC_UNSUPPORTED', `the BMC at ${where} answered cipher suite ${suite.id} with other algorithms (auth ${m.authAlg}, integrity ${m.integrityAlg}, confidentiality ${m.confidentialityAlg})`, { details: { address: this.address, cipherSuite: suite.id } });
      }
      if (m.managedSessionId === undefined || m.managedSessionId === 0) throw new MetalboxError('BMC_PROTOCOL', `the BMC at ${where} opened a session with ID 0`, { details: { address: this.address } });
      return m.managedSessionId;
    });
    const managedSessionId = opened;

    const consoleRandom = this.random(16);
    const role = RAKP_NAME_ONLY_LOOKUP | this.privilege;
    const rakp1Tag = this.nextTag();
    const rakp1 = encodeRmcpPlus({ payloadType: PAYLOAD_TYPE.RAKP1, sessionId: 0, sequence: 0, payload: encodeRakp1({ tag: rakp1Tag, managedSessionId, consoleRandom, role, username: this.username }) });
    const r2 = await this.exchange(ctx, 'RAKP message 1', this.retries + 1, () => rakp1, (d) => {
      const p = decodeIpmiPacket(d.data);
      if (p.kind !== 'rmcp+' || p.payloadType !== PAYLOAD_TYPE.RAKP2 || p.sessionId !== 0) return undefined;
      const m = decodeRakp2(p.payload, suite.rakpCodeLength, p.payloadOffset);
      if (!ours(m, rakp1Tag, consoleSessionId)) return undefined;
      if (m.status !== 0) throw statusError('RAKP message 2', m.status, where, suite.id);
      return m;
    });
    const params = { consoleSessionId, managedSessionId, consoleRandom, managedRandom: r2.managedRandom!, managedGuid: r2.managedGuid!, role, username: this.username };
    const rakp3Tag = this.nextTag();
    if (!codesEqual(rakp2AuthCode(suite, this.kuid, params), r2.authCode!)) {
      // §13.22: tell the BMC (RAKP 3 with an error status) so it can free the half-open session.
      this.sendQuietly(encodeRmcpPlus({ payloadType: PAYLOAD_TYPE.RAKP3, sessionId: 0, sequence: 0, payload: encodeRakp3({ tag: rakp3Tag, status: 0x0f, managedSessionId, authCode: Buffer.alloc(0) }) }));
      throw new MetalboxError('BMC_AUTH_FAILED', `the BMC at ${where} rejected the credentials: its RAKP 2 key exchange code does not match the password (wrong password or user name)`, { details: { address: this.address, step: 'RAKP message 2' } });
    }

    const keys = deriveSessionKeys(suite, this.kg, params);
    const rakp3 = encodeRmcpPlus({ payloadType: PAYLOAD_TYPE.RAKP3, sessionId: 0, sequence: 0, payload: encodeRakp3({ tag: rakp3Tag, status: 0, managedSessionId, authCode: rakp3AuthCode(suite, this.kuid, params) }) });
    await this.exchange(ctx, 'RAKP message 3', this.retries + 1, () => rakp3, (d) => {
      const p = decodeIpmiPacket(d.data);
      if (p.kind !== 'rmcp+' || p.payloadType !== PAYLOAD_TYPE.RAKP4 || p.sessionId !== 0) return undefined;
      const m = decodeRakp4(p.payload, p.payloadOffset);
      if (!ours(m, rakp3Tag, consoleSessionId)) return undefined;
      if (m.status !== 0) throw statusError('RAKP message 3', m.status, where, suite.id);
      if (!codesEqual(rakp4Icv(suite, keys.sik, params), m.icv)) {
        throw new MetalboxError('BMC_AUTH_FAILED', `the BMC at ${where} derived other session keys (RAKP 4 integrity check value does not match): wrong Kg`, { details: { address: this.address, step: 'RAKP message 4' } });
      }
      return m;
    });
    return {
      consoleSessionId,
      managedSessionId,
      secrets: { suite, k1: keys.k1, k2: keys.k2 },
      outSeq: 0,
      window: new ReplayWindow(),
      lastHeard: performance.now(),
    };
  }

  private sendQuietly(data: Buffer): void {
    try {
      this.socket?.send(data, this.target!, this.port);
    } catch {
      // Only a courtesy to the BMC.
    }
  }

  private randomSessionId(): number {
    // Any value but 0, which means "no session" (§13.17).
    for (;;) {
      const id = this.random(4).readUInt32LE(0);
      if (id !== 0) return id;
    }
  }

  private nextTag(): number {
    this.tag = (this.tag + 1) & 0xff;
    return this.tag;
  }
}

/**
 * Whether a session setup answer is for the message we sent: its tag and our console session ID. A short
 * error answer without the session ID (QUIRK(ipmi_sim), see rakp.ts) is matched by its tag alone.
 */
function ours(m: { tag: number; status: number; consoleSessionId?: number }, tag: number, consoleSessionId: number): boolean {
  if (m.tag !== tag) return false;
  return m.consoleSessionId === undefined ? m.status !== 0 : m.consoleSessionId === consoleSessionId;
}

function positive(v: number, what: string): number {
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${what} must be a positive number, got ${v}`);
  return v;
}

function nonNegative(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0) throw new RangeError(`${what} must be a non-negative integer, got ${v}`);
  return v;
}
