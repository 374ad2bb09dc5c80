// Listens the fastify app built by buildApp on http.listen. Binding happens in start() so a taken
// port fails the start (and the process) at once rather than later.
import type { FastifyInstance } from 'fastify';
import type { Service } from './service.ts';
import { MetalboxError, errnoCode } from '../lib/errors.ts';

export class HttpService implements Service {
  readonly name = 'http';
  private listening = false;

  constructor(private readonly app: FastifyInstance, private readonly listen: { host: string; port: number }) {}

  async start(): Promise<void> {
    try {
      await this.app.listen({ host: this.listen.host, port: this.listen.port });
    } catch (err) {
      throw new MetalboxError('SERVICE_START_FAILED', `http: cannot listen on ${this.listen.host}:${this.listen.port}: ${errnoCode(err) ?? (err as Error).message}`, { cause: err });
    }
    this.listening = true;
  }

  /** The bound address (port 0 in tests resolves to the real port). */
  address(): { host: string; port: number } {
    const a = this.app.server.address();
    return typeof a === 'object' && a !== null ? { host: a.address, port: a.port } : this.listen;
  }

  async stop(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    await this.app.close();
  }
}
