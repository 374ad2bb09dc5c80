// Serves the fastify app built by buildApp on two ports: plain HTTP (http.listen) for what firmware and
// scrapers need, and HTTPS (https.listen) for the console and the API. One app, one router: each server hands
// its requests to app.routing. On plain HTTP only the boot endpoints, /healthz, /readyz and /metrics answer;
// any other path is redirected (308, method and body kept) to the same path over HTTPS, so a browser that
// typed the HTTP address lands on the console, and a password or token is never asked for in clear.
// Binding happens in start(): a taken port fails the start (and the process) at once.
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Service } from './service.ts';
import { MetalboxError, errnoCode } from '../lib/errors.ts';

export interface Listen { host: string; port: number }

/** What plain HTTP serves (firmware cannot do TLS; scrapers and health checks need no secret). */
export const PLAIN_HTTP_PATHS: readonly string[] = ['/healthz', '/readyz', '/metrics'];
export const PLAIN_HTTP_PREFIXES: readonly string[] = ['/boot/'];

export function servedOverPlainHttp(url: string): boolean {
  const path = url.split('?', 1)[0]!;
  return PLAIN_HTTP_PATHS.includes(path) || PLAIN_HTTP_PREFIXES.some((p) => path.startsWith(p));
}

export interface HttpsOptions extends Listen { cert: string; key: string }

/**
 * How long an idle keep-alive connection is kept, ms (nginx's keepalive_timeout default is 75 s). Node's default,
 * 5 s, counts from when the last byte of a response was handed to the kernel, not from when the client had it: in a
 * boot storm a machine still reading a kernel out of the socket buffers for 5 s sent its initrd request just as the
 * server closed the connection ("socket hang up"), and its boot failed. iPXE keeps one connection per server for the
 * script, the kernel and the initrd.
 */
export const KEEP_ALIVE_MS = 75_000;

export class HttpService implements Service {
  readonly name = 'http';
  private readonly servers: Server[] = [];
  private plain: Server | undefined;
  private secure: Server | undefined;

  /** Without `https`, plain HTTP serves every route (tests and benchmarks of the boot path). */
  constructor(private readonly app: FastifyInstance, private readonly listen: Listen, private readonly https?: HttpsOptions) {}

  async start(): Promise<void> {
    const handle = (req: IncomingMessage, res: ServerResponse): void => this.app.routing(req, res);
    if (this.https) {
      this.secure = createHttpsServer({ cert: this.https.cert, key: this.https.key, keepAliveTimeout: KEEP_ALIVE_MS }, handle);
      await this.bind(this.secure, this.https, 'https');
    }
    this.plain = createHttpServer({ keepAliveTimeout: KEEP_ALIVE_MS }, this.https ? (req, res) => this.plainRequest(req, res, handle) : handle);
    await this.bind(this.plain, this.listen, 'http');
  }

  /** The bound plain HTTP address (port 0 in tests resolves to the real port). */
  address(): Listen {
    return bound(this.plain) ?? this.listen;
  }

  /** The bound HTTPS address, when HTTPS is served. */
  httpsAddress(): Listen | undefined {
    return this.https ? bound(this.secure) ?? this.https : undefined;
  }

  async stop(): Promise<void> {
    for (const s of this.servers.splice(0)) {
      const closed = new Promise<void>((resolve) => s.close(() => resolve()));
      // Idle keep-alive browser connections must not hold the stop (10 s bound).
      s.closeIdleConnections();
      setTimeout(() => s.closeAllConnections(), 2000).unref();
      await closed;
    }
    await this.app.close();
  }

  private async bind(server: Server, at: Listen, what: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(at.port, at.host, () => { server.off('error', reject); resolve(); });
    }).catch((err: unknown) => {
      throw new MetalboxError('SERVICE_START_FAILED', `${what}: cannot listen on ${at.host}:${at.port}: ${errnoCode(err) ?? (err as Error).message}`, { cause: err });
    });
    this.servers.push(server);
  }

  private plainRequest(req: IncomingMessage, res: ServerResponse, handle: (req: IncomingMessage, res: ServerResponse) => void): void {
    if (servedOverPlainHttp(req.url ?? '/')) return handle(req, res);
    const https = this.httpsAddress()!;
    // The name the client used (Host), else the address it reached; the HTTPS port is ours.
    const host = hostOnly(req.headers.host) ?? bracket(req.socket.localAddress ?? https.host);
    const location = `https://${host}${https.port === 443 ? '' : `:${https.port}`}${req.url ?? '/'}`;
    res.writeHead(308, { location, 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    res.end(`the console and the API are served over HTTPS: ${location}\n`);
  }
}

function bound(server: Server | undefined): Listen | undefined {
  const a = server?.address() as AddressInfo | null | undefined;
  return a ? { host: a.address, port: a.port } : undefined;
}

/** The host part of a Host header ("[::1]:5240", "box:5240", "10.0.0.1"), if it is a plausible name. */
function hostOnly(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9.-]+)(?::\d{1,5})?$/.exec(header);
  return m?.[1];
}

function bracket(address: string): string {
  const a = address.startsWith('::ffff:') ? address.slice(7) : address;
  return a.includes(':') ? `[${a}]` : a;
}
