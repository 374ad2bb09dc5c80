// The local control socket: `<stateDir>/control.sock`, mode 0600 inside the 0700 state dir, so only
// the operator (root) on the appliance reaches it. The CLI uses it while `metalbox serve` holds the
// store's lock (backup, settings, status); it is not network-reachable and carries no credentials.
// Protocol: one JSON request line per connection, one JSON reply line. A request with `"progress": true`
// may get progress lines `{"progress": ...}` before its reply (long operations: images add).
import { connect, createServer, type Server, type Socket } from 'node:net';
import { chmod, unlink } from 'node:fs/promises';
import type { Logger } from '../lib/logger.ts';
import type { Service } from './service.ts';
import { MetalboxError, errnoCode, isMetalboxError, type ErrorCode } from '../lib/errors.ts';

export type ControlRequest = { op: string; [arg: string]: unknown };
export type ControlReply = { ok: true; result: unknown } | { ok: false; code: string; message: string };
/** What a handler may use besides the request: progress lines for the client, and an abort when it hangs up. */
export interface ControlContext { progress(data: unknown): void; signal: AbortSignal }
export type ControlHandler = (req: ControlRequest, ctx: ControlContext) => Promise<unknown>;

const MAX_REQUEST = 64 * 1024;

export class ControlService implements Service {
  readonly name = 'control';
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly path: string,
    private readonly handlers: Readonly<Record<string, ControlHandler>>,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    // We hold the store lock, so no other live metalbox owns this path: a socket file left here is stale.
    await unlink(this.path).catch((err: unknown) => { if (errnoCode(err) !== 'ENOENT') throw err; });
    const server = createServer((socket) => this.serve(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => { server.off('error', reject); resolve(); });
    });
    await chmod(this.path, 0o600);
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await unlink(this.path).catch(() => undefined);
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let buf = '';
    const hangup = new AbortController();
    socket.on('close', () => hangup.abort());
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_REQUEST) { socket.destroy(); return; }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      socket.removeAllListeners('data');
      let wantsProgress = false;
      const ctx: ControlContext = {
        progress: (data) => { if (wantsProgress && socket.writable) socket.write(`${JSON.stringify({ progress: data })}\n`); },
        signal: hangup.signal,
      };
      void this.answer(buf.slice(0, nl), ctx, (req) => { wantsProgress = req.progress === true; })
        .then((reply) => socket.end(`${JSON.stringify(reply)}\n`));
    });
  }

  private async answer(line: string, ctx: ControlContext, parsed: (req: ControlRequest) => void): Promise<ControlReply> {
    let req: ControlRequest;
    try {
      req = JSON.parse(line) as ControlRequest;
      if (typeof req !== 'object' || req === null || typeof req.op !== 'string') throw new Error('no op');
    } catch {
      return { ok: false, code: 'CLI_USAGE', message: 'control request must be a JSON object with an "op"' };
    }
    const handler = Object.hasOwn(this.handlers, req.op) ? this.handlers[req.op] : undefined;
    if (!handler) return { ok: false, code: 'CLI_USAGE', message: `unknown control op "${req.op}"` };
    parsed(req);
    try {
      return { ok: true, result: await handler(req, ctx) };
    } catch (err) {
      if (isMetalboxError(err)) return { ok: false, code: err.code, message: err.message };
      this.logger.error({ err, op: req.op }, 'control request failed');
      return { ok: false, code: 'INTERNAL', message: 'internal error; see the metalbox log' };
    }
  }
}

/**
 * Client side, used by the CLI. Resolves `undefined` when no server listens (no socket, or refused).
 * `timeoutMs` is the longest silence: each progress line (given to `onProgress`, and asked for) restarts it.
 */
export async function callControl(path: string, req: ControlRequest, timeoutMs = 60_000, onProgress?: (data: unknown) => void): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let buf = '';
    const expire = () => { socket.destroy(); reject(new MetalboxError('CONTROL_UNAVAILABLE', `metalbox did not answer on ${path} within ${timeoutMs} ms`)); };
    let timer = setTimeout(expire, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify(onProgress ? { ...req, progress: true } : req)}\n`));
    socket.on('data', (d: string) => {
      buf += d;
      clearTimeout(timer);
      timer = setTimeout(expire, timeoutMs);
      // Every complete line but the reply (the last) is a progress line.
      for (let nl = buf.indexOf('\n'); nl >= 0 && onProgress; nl = buf.indexOf('\n')) {
        let parsed: { progress?: unknown } | null = null;
        try { parsed = JSON.parse(buf.slice(0, nl)) as { progress?: unknown } | null; } catch { /* the reply, checked at end */ }
        if (typeof parsed !== 'object' || parsed === null || !('progress' in parsed)) break;
        buf = buf.slice(nl + 1);
        onProgress(parsed.progress);
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ECONNREFUSED') resolve(undefined);
      else reject(new MetalboxError('CONTROL_UNAVAILABLE', `cannot reach metalbox on ${path}: ${code ?? err.message}`, { cause: err }));
    });
    socket.on('end', () => {
      clearTimeout(timer);
      try {
        const reply = JSON.parse(buf) as ControlReply;
        if (reply.ok) resolve(reply.result);
        else reject(new MetalboxError(reply.code as ErrorCode, reply.message));
      } catch (err) {
        reject(new MetalboxError('CONTROL_UNAVAILABLE', `bad reply from metalbox on ${path}`, { cause: err }));
      }
    });
  });
}
