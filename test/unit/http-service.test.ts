// HttpService's connection handling: keep-alive connections outlive Node's 5 s default (a boot storm's machine
// may take longer than that to read a kernel out of the socket buffers before it asks for the initrd).
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify from 'fastify';
import t from 'tap';
import { HttpService, KEEP_ALIVE_MS } from '../../src/services/http.ts';

/** One keep-alive connection: sends a request and resolves with the whole response (Content-Length framed). */
class Connection {
  private buf = '';
  private closed = false;
  private waiter: (() => void) | undefined;
  constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => { this.buf += d; this.waiter?.(); });
    socket.on('close', () => { this.closed = true; this.waiter?.(); });
  }

  static async open(port: number): Promise<Connection> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    return new Connection(socket);
  }

  async get(path: string): Promise<{ status: number; body: string }> {
    this.socket.write(`GET ${path} HTTP/1.1\r\nhost: test\r\n\r\n`);
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n');
      const length = end >= 0 ? Number(/content-length: (\d+)/i.exec(this.buf.slice(0, end))?.[1] ?? 0) : -1;
      if (end >= 0 && this.buf.length >= end + 4 + length) {
        const status = Number(this.buf.slice(9, 12));
        const body = this.buf.slice(end + 4, end + 4 + length);
        this.buf = this.buf.slice(end + 4 + length);
        return { status, body };
      }
      if (this.closed) throw new Error(`connection closed by the server (had ${JSON.stringify(this.buf)})`);
      await new Promise<void>((resolve) => { this.waiter = resolve; });
    }
  }

  get isClosed(): boolean { return this.closed; }
  destroy(): void { this.socket.destroy(); }
}

t.test('an idle keep-alive connection is kept past Node\'s 5 s default', async (t) => {
  t.ok(KEEP_ALIVE_MS >= 60_000, `keep-alive ${KEEP_ALIVE_MS} ms, like nginx's 75 s`);
  const app = Fastify();
  app.get('/boot/x', async () => 'file');
  await app.ready();
  const http = new HttpService(app, { host: '127.0.0.1', port: 0 });
  await http.start();
  t.teardown(() => http.stop());
  const conn = await Connection.open(http.address().port);
  t.teardown(() => conn.destroy());
  t.same(await conn.get('/boot/x'), { status: 200, body: 'file' });
  // Node's default keepAliveTimeout (5 s, plus its 1 s grace) would have closed the connection by now.
  await sleep(7_000);
  t.notOk(conn.isClosed, 'still open after 7 s idle');
  t.same(await conn.get('/boot/x'), { status: 200, body: 'file' }, 'the second request on the connection is answered');
});
