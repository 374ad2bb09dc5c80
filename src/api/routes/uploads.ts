// Browser uploads of boot files, for images added from the console (src/console/pages/images.tsx).
//
//   POST /api/v1/uploads?filename=NAME   admin   body application/octet-stream -> 201 {id, size, sha256, expiresAt}
//
// The body is streamed to <assetsDir>/tmp/upload-<id> while it is hashed and counted, never held in memory,
// and refused with 413 ASSET_TOO_LARGE past boot.maxAssetBytes (at once when Content-Length says so). An
// upload is then named in POST /api/v1/images as `{ upload: id }` and copied into the asset store like a local
// file (its sha-256 is checked again on the way). Uploads live in this process only: one not used within an
// hour is deleted, and the asset store empties tmp/ at open, so none survives a restart.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { MetalboxError, errnoCode } from '../../lib/errors.ts';
import { ErrorSchema } from '../schemas.ts';
import { validatorCompiler } from './machines.ts';

export const UPLOAD_ID_PATTERN = '^upl_[0-9a-f]{16}$';
const UPLOAD_TTL_MS = 60 * 60 * 1000;

export interface Upload {
  id: string;
  path: string;
  filename: string;
  size: number;
  sha256: string;
  expiresAt: string;
}

/** The uploads of this process. `take` marks one in use (no expiry) until `release` or `consume`. */
export class Uploads {
  private readonly items = new Map<string, { upload: Upload; timer: NodeJS.Timeout | undefined; inUse: boolean }>();

  constructor(readonly dir: string, private readonly ttlMs: number = UPLOAD_TTL_MS, private readonly now: () => number = Date.now) {}

  newPath(): { id: string; path: string } {
    const id = `upl_${randomBytes(8).toString('hex')}`;
    return { id, path: join(this.dir, `upload-${id.slice(4)}`) };
  }

  add(u: Omit<Upload, 'expiresAt'>): Upload {
    const upload = { ...u, expiresAt: new Date(this.now() + this.ttlMs).toISOString() };
    const entry = { upload, timer: undefined as NodeJS.Timeout | undefined, inUse: false };
    entry.timer = setTimeout(() => { if (!entry.inUse) void this.drop(u.id); }, this.ttlMs);
    entry.timer.unref();
    this.items.set(u.id, entry);
    return upload;
  }

  get(id: string): Upload | undefined {
    return this.items.get(id)?.upload;
  }

  /** Marks an upload in use by an image being added; `undefined` when unknown (expired, used, never made). */
  take(id: string): Upload | undefined {
    const e = this.items.get(id);
    if (!e || e.inUse) return undefined;
    e.inUse = true;
    return e.upload;
  }

  /** The image add failed: the upload may be used again until it expires (a new hour from now). */
  release(id: string): void {
    const e = this.items.get(id);
    if (!e) return;
    e.inUse = false;
    clearTimeout(e.timer);
    e.timer = setTimeout(() => { if (!e.inUse) void this.drop(id); }, this.ttlMs);
    e.timer.unref();
  }

  async drop(id: string): Promise<void> {
    const e = this.items.get(id);
    if (!e) return;
    clearTimeout(e.timer);
    this.items.delete(id);
    await unlink(e.upload.path).catch(() => undefined);
  }

  async dropAll(): Promise<void> {
    for (const id of [...this.items.keys()]) await this.drop(id);
  }
}

const UploadSchema = Type.Object({
  id: Type.String({ pattern: UPLOAD_ID_PATTERN }),
  filename: Type.String(),
  size: Type.Integer(),
  sha256: Type.String(),
  expiresAt: Type.String({ description: 'deleted then unless used in POST /api/v1/images' }),
});

const UploadQuery = Type.Object({
  filename: Type.Optional(Type.String({ maxLength: 255, pattern: '^[\\x20-\\x7e]*$', description: 'the file\'s name, shown as the image file\'s source' })),
}, { additionalProperties: false });

export function uploadRoutes(deps: { uploads: Uploads; maxBytes: number }): FastifyPluginAsync {
  const { uploads, maxBytes } = deps;
  return async (fastify) => {
    fastify.setValidatorCompiler(validatorCompiler);
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
    // Every body reaches the handler as the raw stream (this plugin's scope only): the handler refuses a
    // wrong Content-Type with its own code, and fastify's bodyLimit (1 MiB) does not apply to a stream we read.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
    app.addHook('onClose', async () => uploads.dropAll());

    app.post('/api/v1/uploads', {
      config: { access: 'admin' },
      schema: {
        summary: 'Upload one boot file (application/octet-stream, streamed); name it in POST /api/v1/images as {upload: id}',
        querystring: UploadQuery,
        response: { 201: UploadSchema, 400: ErrorSchema, 413: ErrorSchema, 415: ErrorSchema },
      },
    }, async (req, reply) => {
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== 'application/octet-stream') {
        req.raw.resume();
        throw new MetalboxError('UPLOAD_CONTENT_TYPE', `an upload is sent as application/octet-stream, not ${type || 'no Content-Type'}`);
      }
      const length = req.headers['content-length'];
      if (length !== undefined && /^\d+$/.test(length) && Number(length) > maxBytes) {
        void reply.header('connection', 'close');
        throw tooLarge(maxBytes);
      }
      const { id, path } = uploads.newPath();
      const hash = createHash('sha256');
      let size = 0;
      try {
        // By events, not pipeline(): on a refusal the request is paused, never destroyed, so the 413 still
        // reaches the client (with Connection: close, which ends the rest of the body).
        await new Promise<void>((resolve, reject) => {
          const src = req.raw;
          const out = createWriteStream(path, { flags: 'wx', mode: 0o600 });
          let failed = false;
          const fail = (err: unknown): void => {
            if (failed) return;
            failed = true;
            src.off('data', onData);
            src.pause();
            out.destroy();
            out.once('close', () => reject(err));
          };
          const onData = (chunk: Buffer): void => {
            size += chunk.length;
            if (size > maxBytes) return fail(tooLarge(maxBytes));
            hash.update(chunk);
            if (!out.write(chunk)) {
              src.pause();
              out.once('drain', () => { if (!failed) src.resume(); });
            }
          };
          src.on('data', onData);
          src.once('end', () => { if (!failed) out.end(); });
          src.once('error', fail);
          src.once('close', () => { if (!src.readableEnded) fail(Object.assign(new Error('the client closed the connection'), { code: 'ECONNRESET' })); });
          out.once('error', fail);
          out.once('close', () => { if (!failed) resolve(); });
        });
      } catch (err) {
        await unlink(path).catch(() => undefined);
        if (err instanceof MetalboxError) {
          void reply.header('connection', 'close');
          throw err;
        }
        const code = errnoCode(err);
        if (code === 'ENOSPC' || code === 'EIO' || code === 'EDQUOT' || code === 'EACCES' || code === 'ENOENT') {
          throw new MetalboxError('ASSET_WRITE_FAILED', `cannot write the upload: ${code}`, { cause: err });
        }
        throw new MetalboxError('UPLOAD_INCOMPLETE', `the upload ended early: ${code ?? (err as Error).message}`, { cause: err });
      }
      const filename = req.query.filename ?? 'upload';
      const upload = uploads.add({ id, path, filename, size, sha256: hash.digest('hex') });
      req.log.info({ upload: id, size }, 'upload stored');
      return reply.code(201).send({ id, filename, size: upload.size, sha256: upload.sha256, expiresAt: upload.expiresAt });
    });
  };
}

const tooLarge = (max: number) => new MetalboxError('ASSET_TOO_LARGE', `the upload is larger than boot.maxAssetBytes (${max} bytes)`, { details: { max } });
