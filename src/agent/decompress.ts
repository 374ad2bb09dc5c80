// Decompressors for deploy images, each a Duplex stream: gzip with node:zlib, zstd with fzstd (pure JS; Node 20's
// zlib has no zstd), xz with the `xzcat` applet of busybox (the ephemeral environment's busybox-static 1.35 has
// it; xz-utils' xzcat where installed) as a child process. Corrupt input fails the stream.

import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { Duplex, PassThrough, Transform, type TransformCallback } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Decompress as ZstdDecompress } from 'fzstd';
import type { Compression } from './task.ts';

export function createDecompressor(compression: Compression, env: NodeJS.ProcessEnv = process.env): Duplex {
  switch (compression) {
    case 'none': return new PassThrough({ highWaterMark: 1 << 20 });
    case 'gzip': return createGunzip({ chunkSize: 256 << 10 });
    case 'zstd': return new ZstdStream();
    case 'xz': {
      const cmd = xzCommand(env);
      return new ChildFilter(cmd.file, cmd.args, 'xz');
    }
  }
}

/** fzstd's push/ondata decoder as a Transform (each ondata block is a fresh array, safe to hand on). */
class ZstdStream extends Transform {
  private readonly decoder: ZstdDecompress;

  constructor() {
    super({ readableHighWaterMark: 1 << 20 });
    this.decoder = new ZstdDecompress((data) => {
      if (data.length > 0) this.push(Buffer.from(data.buffer, data.byteOffset, data.length));
    });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.decoder.push(chunk);
      cb();
    } catch (err) {
      cb(zstdError(err));
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.decoder.push(new Uint8Array(0), true);
      cb();
    } catch (err) {
      cb(zstdError(err));
    }
  }
}

function zstdError(err: unknown): Error {
  return new Error(`zstd: ${err instanceof Error ? err.message : String(err)}`);
}

/** `xzcat` on PATH, else `busybox xzcat`. */
export function xzCommand(env: NodeJS.ProcessEnv): { file: string; args: string[] } {
  const xzcat = which('xzcat', env);
  if (xzcat !== undefined) return { file: xzcat, args: [] };
  return { file: which('busybox', env) ?? 'busybox', args: ['xzcat'] };
}

function which(name: string, env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of (env.PATH ?? '/usr/bin:/bin').split(':')) {
    if (dir === '') continue;
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // next
    }
  }
  return undefined;
}

/**
 * A filter program as a Duplex: what is written goes to its stdin, its stdout is read. The stream ends only when
 * the program exits 0; any other exit (corrupt input) is an error carrying the start of its stderr.
 */
class ChildFilter extends Duplex {
  private readonly child;
  private stderr = '';
  private exit: Promise<number | string>;
  private stdoutEnded = false;

  constructor(file: string, args: string[], private readonly label: string) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    this.child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.exit = new Promise((resolve) => {
      this.child.once('error', (err) => { this.destroy(new Error(`${label}: cannot run ${file}: ${err.message}`)); resolve(-1); });
      this.child.once('close', (code, signal) => resolve(code ?? signal ?? -1));
    });
    this.child.stderr.setEncoding('utf8').on('data', (d: string) => { if (this.stderr.length < 2000) this.stderr += d; });
    this.child.stdin.on('error', () => undefined); // EPIPE when the program quits early: its exit code says why
    this.child.stdout.on('data', (d: Buffer) => { if (!this.push(d)) this.child.stdout.pause(); });
    this.child.stdout.once('end', () => {
      this.stdoutEnded = true;
      void this.exit.then((code) => {
        if (code === 0) this.push(null);
        else this.destroy(new Error(`${this.label}: ${this.stderr.trim().split('\n')[0] || `exit ${code}`}`));
      });
    });
  }

  override _read(): void {
    if (!this.stdoutEnded) this.child.stdout.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.child.stdin.write(chunk)) cb();
    else this.child.stdin.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    // The program's exit code decides the outcome (an EPIPE here would hide its message).
    this.child.stdin.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill();
    cb(err);
  }
}
