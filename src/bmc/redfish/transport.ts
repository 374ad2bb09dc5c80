// HTTPS to one Redfish service: a keep-alive agent whose every new TLS connection is checked against the
// certificate fingerprint pinned at enrolment BEFORE the socket is handed to an HTTP request. The agent
// supplies sockets through createConnection's callback, so no request (and so no password or token) is
// written to a connection until its certificate has been seen and accepted: not even in the TLS 1.3
// window where a client may send data right after its Finished, before 'secureConnect' runs in JS.
//
// Redirects (301/302/303/307/308) are followed on the same origin only and to a bounded depth; errors are
// MetalboxError with the BMC_* codes. Nothing here ever sees the credentials: callers pass ready headers,
// and no header value is logged or put in a message.
import { X509Certificate } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { Agent, request as httpsRequest, type RequestOptions } from 'node:https';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { checkServerIdentity, connect as tlsConnect, type TLSSocket } from 'node:tls';
import { errnoCode, MetalboxError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';

export interface TransportOptions {
  host: string;
  port: number;
  /** Pinned SHA-256 fingerprint, "AB:CD:..." (normalized). Absent: the system CAs and the host name decide. */
  fingerprint?: string;
  /** Bound on one HTTP exchange, TLS handshake included. */
  timeoutMs: number;
  maxRedirects: number;
  /** Largest answer body accepted; Redfish resources are a few KiB. */
  maxBodyBytes?: number;
  logger?: Logger;
}

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Path (and query) that finally answered, after redirects. */
  path: string;
}

export interface ExchangeOptions {
  headers?: Record<string, string>;
  /** JSON body (sent with Content-Type: application/json). */
  body?: unknown;
  signal?: AbortSignal | undefined;
  /** Safe to send again on a fresh connection when a pooled one turns out closed (not for reset actions). */
  idempotent?: boolean;
}

export interface CertificateInfo {
  /** SHA-256 over the DER certificate, "AB:CD:..." */
  fingerprint: string;
  subject: string;
  issuer: string;
  validFrom: string;
  validTo: string;
  serialNumber: string;
  subjectAltName?: string;
  selfSigned: boolean;
  /** Whether the system CAs and the host name would accept it without a pin. */
  trustedByCa: boolean;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EADDRNOTAVAIL', 'ENETDOWN', 'EHOSTDOWN']);
const CLOSED = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);
const DEFAULT_MAX_BODY = 1024 * 1024;

/** `host:port` for messages, with IPv6 brackets. */
export function hostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

function certificateInfo(socket: TLSSocket, host: string): CertificateInfo | undefined {
  const x509 = socket.getPeerX509Certificate();
  if (!x509) return undefined;
  const date = (s: string) => {
    const d = new Date(s);
    return Number.isNaN(d.getTime()) ? s : d.toISOString();
  };
  const hostOk = checkServerIdentity(host, socket.getPeerCertificate()) === undefined;
  return {
    fingerprint: x509.fingerprint256,
    subject: x509.subject.replace(/\n/g, ', '),
    issuer: x509.issuer.replace(/\n/g, ', '),
    validFrom: date(x509.validFrom),
    validTo: date(x509.validTo),
    serialNumber: x509.serialNumber,
    subjectAltName: x509.subjectAltName,
    selfSigned: x509.checkIssued(x509) && x509.verify(x509.publicKey),
    trustedByCa: socket.authorized && hostOk,
  };
}

/**
 * Decides whether a finished handshake may carry requests: with a pin, exactly that certificate; without
 * one, a certificate the system CAs accept for this host name. Returns the refusal, or undefined.
 */
function refusal(socket: TLSSocket, host: string, port: number, pin: string | undefined): MetalboxError | undefined {
  const info = certificateInfo(socket, host);
  const where = hostPort(host, port);
  if (!info) return new MetalboxError('BMC_TLS_MISMATCH', `${where} presented no TLS certificate`);
  if (pin !== undefined) {
    if (info.fingerprint === pin) return undefined;
    return new MetalboxError('BMC_TLS_MISMATCH',
      `TLS certificate of ${where} does not match the pinned one: expected SHA-256 ${pin}, seen ${info.fingerprint} ` +
      `(subject ${info.subject}, valid to ${info.validTo}); re-pin it if the BMC's certificate was replaced on purpose`,
      { details: { expected: pin, seen: info.fingerprint, subject: info.subject, validTo: info.validTo } });
  }
  if (info.trustedByCa) return undefined;
  const reason = socket.authorizationError ? String(socket.authorizationError) : 'host name does not match';
  return new MetalboxError('BMC_TLS_MISMATCH',
    `TLS certificate of ${where} is not trusted (${reason}) and no fingerprint is pinned; ` +
    `its SHA-256 fingerprint is ${info.fingerprint} (subject ${info.subject}): pin it if that is the BMC's`,
    { details: { expected: null, seen: info.fingerprint, subject: info.subject, reason } });
}

/** Maps a socket or HTTP error to a BMC_* error; `where` is "host:port" plus what was being done. */
export function networkError(err: unknown, where: string, callerAborted: boolean): MetalboxError {
  if (err instanceof MetalboxError) return err;
  const code = errnoCode(err);
  const name = err instanceof Error ? err.name : '';
  if (name === 'AbortError' || code === 'ABORT_ERR' || name === 'TimeoutError') {
    return new MetalboxError('BMC_TIMEOUT', callerAborted ? `${where}: aborted` : `${where}: no answer in time`, { cause: err, details: { reason: callerAborted ? 'aborted' : 'timeout' } });
  }
  if (code === 'ETIMEDOUT') return new MetalboxError('BMC_TIMEOUT', `${where}: no answer in time`, { cause: err, details: { reason: 'timeout' } });
  if (code && UNREACHABLE.has(code)) return new MetalboxError('BMC_UNREACHABLE', `${where}: cannot be reached (${code})`, { cause: err, details: { errno: code } });
  if (code && CLOSED.has(code)) return new MetalboxError('BMC_PROTOCOL', `${where}: the connection was closed before an answer (${code})`, { cause: err, details: { errno: code } });
  if (code && (code === 'EPROTO' || code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS'))) {
    return new MetalboxError('BMC_PROTOCOL', `${where}: TLS handshake failed (${code})`, { cause: err, details: { errno: code } });
  }
  if (code?.startsWith('HPE_')) return new MetalboxError('BMC_PROTOCOL', `${where}: malformed HTTP answer (${code})`, { cause: err, details: { errno: code } });
  return new MetalboxError('BMC_PROTOCOL', `${where}: ${err instanceof Error ? err.message : String(err)}`, { cause: err, details: code ? { errno: code } : {} });
}

/** An https.Agent whose sockets are handed out only after the certificate check. */
class PinningAgent extends Agent {
  /** Connections still in their handshake, destroyed by close(). */
  readonly pending = new Set<TLSSocket>();

  constructor(private readonly opts: TransportOptions) {
    // maxSockets: BMCs allow a handful of connections in all; two per driver leaves room for others.
    // No TLS session cache: every connection does a full handshake, so every one shows its certificate.
    super({ keepAlive: true, keepAliveMsecs: 10_000, maxSockets: 2, maxFreeSockets: 2, timeout: 30_000, maxCachedSessions: 0 });
  }

  override createConnection(_options: RequestOptions, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    if (!callback) throw new TypeError('PinningAgent.createConnection needs the callback form');
    const { host, port, fingerprint, timeoutMs, logger } = this.opts;
    const where = hostPort(host, port);
    const socket = tlsConnect({
      host, port,
      servername: isIP(host) ? undefined : host,
      // The chain is judged in `refusal` (pin or CA): a self-signed BMC certificate is the usual case.
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
    });
    this.pending.add(socket);
    // Kept for the socket's whole life: an error between hand-over and the request's own listener (or on
    // an idle pooled socket) must not become an uncaught exception.
    socket.on('error', (err) => logger?.debug({ bmc: where, errno: errnoCode(err) }, 'redfish socket error'));
    let settled = false;
    const settle = (err: Error | null) => {
      if (settled) return;
      settled = true;
      this.pending.delete(socket);
      socket.setTimeout(0);
      socket.removeListener('error', onError);
      socket.removeListener('close', onClose);
      if (err) {
        socket.destroy();
        callback(err, socket);
      } else {
        callback(null, socket);
      }
    };
    const onError = (err: Error) => settle(networkError(err, `${where}: connect`, false));
    const onClose = () => settle(new MetalboxError('BMC_PROTOCOL', `${where}: connection closed during the TLS handshake`));
    socket.once('error', onError);
    socket.once('close', onClose);
    socket.setTimeout(timeoutMs, () => settle(new MetalboxError('BMC_TIMEOUT', `${where}: no TLS handshake within ${timeoutMs} ms`, { details: { reason: 'timeout' } })));
    socket.once('secureConnect', () => settle(refusal(socket, host, port, fingerprint) ?? null));
    return undefined;
  }
}

export class RedfishTransport {
  readonly where: string;
  private readonly agent: PinningAgent;
  private readonly origin: string;

  constructor(private readonly opts: TransportOptions) {
    this.where = hostPort(opts.host, opts.port);
    this.agent = new PinningAgent(opts);
    this.origin = new URL(`https://${this.where}/`).origin;
  }

  /** One request, following same-origin redirects. Any HTTP status is an answer; errors are network-level. */
  async request(method: string, path: string, options: ExchangeOptions = {}): Promise<HttpAnswer> {
    let url: URL;
    try {
      url = new URL(path, this.origin);
    } catch {
      throw new MetalboxError('BMC_PROTOCOL', `${this.where}: unusable URI from the BMC`);
    }
    // Links come from the BMC: a link to another origin would carry our credentials elsewhere.
    if (url.origin !== this.origin) throw new MetalboxError('BMC_PROTOCOL', `${this.where}: a link points to another origin (${url.origin}); refused`);
    let current = method;
    let body = options.body;
    for (let hop = 0; ; hop++) {
      const answer = await this.exchange(current, url, { ...options, body }, options.idempotent ?? false);
      if (!REDIRECTS.has(answer.status)) return answer;
      const location = answer.headers.location;
      if (!location) throw new MetalboxError('BMC_PROTOCOL', `${this.where}: ${current} ${url.pathname}: HTTP ${answer.status} without a Location`);
      if (hop >= this.opts.maxRedirects) {
        throw new MetalboxError('BMC_PROTOCOL', `${this.where}: ${method} ${path}: more than ${this.opts.maxRedirects} redirects`, { details: { status: answer.status } });
      }
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new MetalboxError('BMC_PROTOCOL', `${this.where}: ${current} ${url.pathname}: unusable Location in a redirect`);
      }
      // Credentials ride along on a redirect, so it must stay on the pinned origin.
      if (next.origin !== this.origin) {
        throw new MetalboxError('BMC_PROTOCOL', `${this.where}: ${current} ${url.pathname} redirects to another origin (${next.origin}); refused`, { details: { status: answer.status } });
      }
      // RFC 9110 §15.4.4: 303 means "GET the other resource". 301/302 keep the method here: turning a
      // POST into a GET (what browsers do) would silently drop a reset action.
      if (answer.status === 303 && current !== 'GET' && current !== 'HEAD') {
        current = 'GET';
        body = undefined;
      }
      this.opts.logger?.debug({ bmc: this.where, status: answer.status, from: url.pathname, to: next.pathname }, 'redfish redirect');
      url = next;
    }
  }

  private exchange(method: string, url: URL, options: ExchangeOptions, retryStale: boolean): Promise<HttpAnswer> {
    const { signal } = options;
    const path = url.pathname + url.search;
    const where = `${this.where}: ${method} ${url.pathname}`;
    if (signal?.aborted) return Promise.reject(networkError(signal.reason, where, true));
    const timeout = AbortSignal.timeout(this.opts.timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
    const headers: Record<string, string> = {
      'Accept': 'application/json',
      'OData-Version': '4.0',
      'User-Agent': 'metalbox',
      ...options.headers,
    };
    if (payload) {
      headers['Content-Type'] = 'application/json; charset=utf-8';
      headers['Content-Length'] = String(payload.length);
    }
    const max = this.opts.maxBodyBytes ?? DEFAULT_MAX_BODY;
    const started = performance.now();
    return new Promise<HttpAnswer>((outerResolve, outerReject) => {
      let answered = false;
      // Settles exactly once, whichever comes first: the answer, an error, or the deadline (also when
      // the BMC stalls in the middle of a body and the socket itself reports nothing).
      const done = () => combined.removeEventListener('abort', onAbort);
      const resolve = (v: HttpAnswer | Promise<HttpAnswer>) => { done(); outerResolve(v); };
      const reject = (e: MetalboxError) => { done(); outerReject(e); };
      const onAbort = () => {
        reject(networkError(combined.reason, where, signal?.aborted ?? false));
        req.destroy();
      };
      const req = httpsRequest({ agent: this.agent, host: this.opts.host, port: this.opts.port, method, path, headers });
      combined.addEventListener('abort', onAbort, { once: true });
      req.on('error', (err) => {
        if (combined.aborted) return onAbort();
        if (answered) return;
        // A pooled connection the BMC closed while idle fails at once on reuse: send again on a new one.
        if (retryStale && req.reusedSocket && CLOSED.has(errnoCode(err) ?? '') && !combined.aborted) {
          this.opts.logger?.debug({ bmc: this.where, method, path: url.pathname }, 'redfish stale keep-alive connection; retrying');
          resolve(this.exchange(method, url, options, false));
          return;
        }
        reject(networkError(err, where, false));
      });
      req.on('response', (res) => {
        answered = true;
        const declared = Number(res.headers['content-length']);
        if (Number.isFinite(declared) && declared > max) {
          res.destroy();
          reject(new MetalboxError('BMC_PROTOCOL', `${where}: answer of ${declared} bytes is larger than ${max}`));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > max) {
            res.destroy(new MetalboxError('BMC_PROTOCOL', `${where}: answer larger than ${max} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('error', (err) => (combined.aborted ? onAbort() : reject(networkError(err, where, false))));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          this.opts.logger?.debug({ bmc: this.where, method, path: url.pathname, status, ms: Math.round(performance.now() - started), reused: req.reusedSocket }, 'redfish request');
          resolve({ status, headers: res.headers, body: Buffer.concat(chunks), path });
        });
      });
      req.end(payload);
    });
  }

  /** Frees every socket (pooled, in use or still in its handshake). The agent can connect again later. */
  close(): void {
    for (const s of this.agent.pending) s.destroy();
    this.agent.pending.clear();
    this.agent.destroy();
  }
}

/**
 * Trust on first use, step one: connects, completes the TLS handshake, reads the certificate and hangs
 * up without sending a byte of HTTP. The operator compares the fingerprint (or the subject and validity)
 * with what the BMC shows on its own console or label, and pins it.
 */
export function fetchFingerprint(host: string, port = 443, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<CertificateInfo> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const where = hostPort(host, port);
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(networkError(options.signal.reason, `${where}: connect`, true));
      return;
    }
    const socket = tlsConnect({ host, port, servername: isIP(host) ? undefined : host, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    let settled = false;
    const finish = (err: MetalboxError | undefined, info?: CertificateInfo) => {
      if (settled) return;
      settled = true;
      options.signal?.removeEventListener('abort', onAbort);
      socket.removeAllListeners('error');
      socket.on('error', () => undefined);
      socket.destroy();
      if (err) reject(err);
      else resolve(info!);
    };
    const onAbort = () => finish(networkError(options.signal?.reason, `${where}: connect`, true));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    socket.setTimeout(timeoutMs, () => finish(new MetalboxError('BMC_TIMEOUT', `${where}: no TLS handshake within ${timeoutMs} ms`, { details: { reason: 'timeout' } })));
    socket.once('error', (err) => finish(networkError(err, `${where}: connect`, false)));
    socket.once('close', () => finish(new MetalboxError('BMC_PROTOCOL', `${where}: connection closed during the TLS handshake`)));
    socket.once('secureConnect', () => {
      const info = certificateInfo(socket, host);
      if (info) finish(undefined, info);
      else finish(new MetalboxError('BMC_TLS_MISMATCH', `${where} presented no TLS certificate`));
    });
  });
}

/** A few lines for an operator deciding whether to pin a certificate. */
export function formatCertificate(info: CertificateInfo): string {
  return [
    `SHA-256 fingerprint: ${info.fingerprint}`,
    `subject: ${info.subject}`,
    `issuer: ${info.issuer}${info.selfSigned ? ' (self-signed)' : ''}`,
    `valid: ${info.validFrom} to ${info.validTo}`,
    ...(info.subjectAltName ? [`names: ${info.subjectAltName}`] : []),
    `trusted by the system CAs: ${info.trustedByCa ? 'yes' : 'no'}`,
  ].join('\n');
}

// Re-exported so tests and callers can compute a fingerprint of a PEM they hold.
export function fingerprintOfPem(pem: string | Buffer): string {
  return new X509Certificate(pem).fingerprint256;
}
