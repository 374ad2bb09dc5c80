// Boot images in the asset store (src/store/assets.ts), and the jobs that download them.
//
//   GET    /api/v1/images          viewer  images (files with sha256, size, source), the ephemeral image, iPXE binaries
//   GET    /api/v1/images/:name    viewer
//   POST   /api/v1/images          admin   {name, kernel: {url | upload, sha256?}, initrd: {...}, rootfs?, cmdline?} -> 202 {job}
//   POST   /api/v1/uploads         admin   one file from the browser (src/api/routes/uploads.ts) -> {id}
//   DELETE /api/v1/images/:name    admin   unregister; files no other image uses are deleted
//   GET    /api/v1/jobs            viewer  jobs (newest first)
//   GET    /api/v1/jobs/:id        viewer  state, progress (bytes, total), result or error code
//   DELETE /api/v1/jobs/:id        admin   cancel a running job
//
// Only http(s) URLs or uploads: a path would make the server read its own files for whoever asks. An
// upload's file is read by the path we chose for it, never one from the request. A download is all-or-nothing: the image is registered only when
// every file arrived whole (and matched its sha256 when one was given).
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { MetalboxError } from '../../lib/errors.ts';
import { IMAGE_FILES, IMAGE_NAME, IpxeBinaries, checkImageName, parseSource, redactUrl, type AssetSource, type AssetStore, type ImageFileRole } from '../../store/assets.ts';
import { EPHEMERAL_IMAGE_SETTING } from '../../services/boot-http/routes.ts';
import { ErrorSchema } from '../schemas.ts';
import { JOB_ID_PATTERN, Jobs } from '../jobs.ts';
import { actorOf, validatorCompiler } from './machines.ts';
import type { ResourcesApiDeps } from './resources.ts';
import { UPLOAD_ID_PATTERN, Uploads, uploadRoutes } from './uploads.ts';
import { join } from 'node:path';

const FileSchema = Type.Object({ sha256: Type.String(), size: Type.Integer(), source: Type.String({ description: 'where it came from (URL without credentials or query)' }) });
export const ImageSchema = Type.Object({
  name: Type.String(),
  files: Type.Object({ kernel: FileSchema, initrd: FileSchema, rootfs: Type.Optional(FileSchema) }),
  cmdline: Type.String({ description: 'extra kernel arguments' }),
  size: Type.Integer({ description: 'bytes, all files' }),
  createdAt: Type.String(),
});

const Source = Type.Object({
  url: Type.Optional(Type.String({ maxLength: 4096, pattern: '^[hH][tT][tT][pP][sS]?://', description: 'http or https' })),
  upload: Type.Optional(Type.String({ pattern: UPLOAD_ID_PATTERN, description: 'an upload id from POST /api/v1/uploads (instead of url)' })),
  sha256: Type.Optional(Type.String({ pattern: '^[0-9a-fA-F]{64}$', description: 'expected sha-256: a file that differs is refused' })),
}, { additionalProperties: false });

const AddBody = Type.Object({
  name: Type.String({ pattern: IMAGE_NAME.source, description: '1-63 of a-z 0-9 . _ -' }),
  kernel: Source,
  initrd: Source,
  rootfs: Type.Optional(Source),
  cmdline: Type.Optional(Type.String({ maxLength: 1024, pattern: '^[\\x20-\\x7e]*$', description: 'extra kernel arguments: one line of printable ASCII' })),
}, { additionalProperties: false });

export const JobSchema = Type.Object({
  id: Type.String(),
  kind: Type.String({ description: 'image.add' }),
  subject: Type.String(),
  actor: Type.String(),
  state: Type.Enum(['running', 'succeeded', 'failed', 'cancelled']),
  createdAt: Type.String(),
  finishedAt: Type.Optional(Type.String()),
  progress: Type.Object({
    bytes: Type.Integer(),
    total: Type.Union([Type.Integer(), Type.Null()], { description: 'null while a size is unknown (no Content-Length)' }),
    parts: Type.Record(Type.String(), Type.Object({ bytes: Type.Integer(), total: Type.Union([Type.Integer(), Type.Null()]), done: Type.Boolean() })),
  }),
  result: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() })),
});

const NameParams = Type.Object({ name: Type.String({ pattern: IMAGE_NAME.source }) }, { additionalProperties: false });
const JobParams = Type.Object({ id: Type.String({ pattern: JOB_ID_PATTERN }) }, { additionalProperties: false });

type ImageDeps = ResourcesApiDeps & { assets: AssetStore };

export function imageRoutes(deps: ImageDeps): FastifyPluginAsync {
  const { assets, store, config } = deps;
  const jobs = new Jobs(deps.now ? { now: deps.now } : {});
  // tmp/ of the asset store: on its file system (the copy into blobs/ stays local) and emptied at open.
  const uploads = new Uploads(join(assets.dir, 'tmp'));

  return async (fastify) => {
    fastify.setValidatorCompiler(validatorCompiler);
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
    app.addHook('onClose', async () => jobs.cancelAll());
    await app.register(uploadRoutes({ uploads, maxBytes: config.boot.maxAssetBytes }));

    app.get('/api/v1/images', {
      config: { access: 'viewer' },
      schema: {
        summary: 'Boot images, the ephemeral image and the iPXE binaries',
        response: {
          200: Type.Object({
            images: Type.Array(ImageSchema),
            ephemeralImage: Type.Union([Type.String(), Type.Null()], { description: 'what enlisting, commissioning and rescued machines boot (setting boot.ephemeralImage, else config)' }),
            ipxe: Type.Array(Type.Object({ name: Type.String(), size: Type.Integer(), sha256: Type.String() })),
          }),
        },
      },
    }, async () => {
      const setting = await store.settings.get(EPHEMERAL_IMAGE_SETTING);
      const ephemeral = typeof setting === 'string' && setting !== '' ? setting : config.boot.ephemeralImage;
      return { images: await assets.list(), ephemeralImage: ephemeral ?? null, ipxe: await new IpxeBinaries(config.boot.ipxeDir).describe() };
    });

    app.get('/api/v1/images/:name', {
      config: { access: 'viewer' },
      schema: { summary: 'One boot image', params: NameParams, response: { 200: ImageSchema, 404: ErrorSchema } },
    }, async (req) => (await assets.get(req.params.name)) ?? Promise.reject(new MetalboxError('NOT_FOUND', `no image ${req.params.name}`)));

    app.post('/api/v1/images', {
      config: { access: 'admin' },
      schema: {
        summary: 'Add a boot image from URLs or uploads: a download job (202); follow it at /api/v1/jobs/{id}',
        body: AddBody,
        response: { 202: Type.Object({ job: JobSchema }), 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema },
      },
    }, async (req, reply) => {
      const name = checkImageName(req.body.name);
      if ((await assets.get(name)) || jobs.running('image.add', name)) throw new MetalboxError('IMAGE_EXISTS', `an image named ${name} is registered or being added; remove it first or choose another name`);
      const files: Partial<Record<ImageFileRole, AssetSource>> = {};
      const taken: string[] = [];
      const release = () => { for (const id of taken) uploads.release(id); };
      for (const role of IMAGE_FILES) {
        const s = req.body[role];
        if (!s) continue;
        if ((s.url === undefined) === (s.upload === undefined)) {
          release();
          throw new MetalboxError('VALIDATION_FAILED', `body.${role}: give either url or upload`, { details: { field: role } });
        }
        if (s.upload !== undefined) {
          const u = uploads.take(s.upload);
          if (!u) {
            release();
            throw new MetalboxError('UPLOAD_NOT_FOUND', `body.${role}.upload: no upload ${s.upload} (uploads are kept an hour unused, used once, and not across a restart)`, { details: { field: role } });
          }
          taken.push(u.id);
          files[role] = { kind: 'file', path: u.path, sha256: s.sha256?.toLowerCase() ?? u.sha256, label: `upload:${u.filename}` };
          continue;
        }
        try {
          const source = parseSource(`${s.url}${s.sha256 ? `#sha256=${s.sha256}` : ''}`, '/');
          if (source.kind !== 'url') throw new MetalboxError('IMAGE_INVALID', 'not a URL');
          files[role] = source;
        } catch {
          release();
          throw new MetalboxError('VALIDATION_FAILED', `body.${role}.url: must be an http or https URL`, { details: { field: `${role}.url` } });
        }
      }
      const cmdline = req.body.cmdline;
      const { actor, audit } = actorOf(req);
      const started = audit?.({ type: 'image.add.started', subject: name, data: { sources: Object.fromEntries(Object.entries(files).map(([r, s]) => [r, s.kind === 'url' ? redactUrl(s.url) : s.label ?? 'file'])) } });
      if (started) await deps.events.append(started);
      const job = jobs.start('image.add', name, actor, async (handle) => {
        try {
          const image = await assets.add({ name, files, ...(cmdline !== undefined ? { cmdline } : {}) }, {
            maxBytes: config.boot.maxAssetBytes,
            signal: handle.signal,
            onProgress: (p) => handle.progress(p.role, { bytes: p.bytes, total: p.total ?? null, done: p.done }),
          });
          await deps.events.append({ type: 'image.added', actor, subject: name, data: { size: image.size, files: Object.fromEntries(Object.entries(image.files).map(([r, f]) => [r, { sha256: f.sha256, size: f.size }])) } });
          for (const id of taken) await uploads.drop(id);
          return { image: image.name, size: image.size };
        } catch (err) {
          release();
          await deps.events.append({ type: 'image.add.failed', actor, subject: name, data: { code: (err as { code?: string }).code ?? 'INTERNAL' } }).catch(() => undefined);
          throw err;
        }
      }, Object.keys(files));
      void reply.header('location', `/api/v1/jobs/${job.id}`);
      return reply.code(202).send({ job });
    });

    app.delete('/api/v1/images/:name', {
      config: { access: 'admin' },
      schema: {
        summary: 'Remove a boot image (files no other image uses are deleted)',
        params: NameParams,
        response: { 200: Type.Object({ name: Type.String(), removedBlobs: Type.Integer({ description: 'files deleted from the asset store' }) }), 404: ErrorSchema },
      },
    }, async (req) => {
      const removed = await assets.remove(req.params.name);
      if (!removed) throw new MetalboxError('NOT_FOUND', `no image ${req.params.name}`);
      const { audit, actor } = actorOf(req);
      const event = { type: 'image.removed', subject: req.params.name, data: { removedBlobs: removed.removedBlobs } };
      await deps.events.append(audit ? audit(event) : { ...event, actor });
      return { name: req.params.name, removedBlobs: removed.removedBlobs };
    });

    app.get('/api/v1/jobs', {
      config: { access: 'viewer' },
      schema: { summary: 'Jobs of this process, newest first', response: { 200: Type.Object({ items: Type.Array(JobSchema) }) } },
    }, async () => ({ items: jobs.list() }));

    app.get('/api/v1/jobs/:id', {
      config: { access: 'viewer' },
      schema: { summary: 'A job: state, progress, result or error', params: JobParams, response: { 200: JobSchema, 404: ErrorSchema } },
    }, async (req) => jobs.get(req.params.id) ?? Promise.reject(new MetalboxError('NOT_FOUND', `no job ${req.params.id} (jobs are kept an hour after they end, and not across a restart)`)));

    app.delete('/api/v1/jobs/:id', {
      config: { access: 'admin' },
      schema: { summary: 'Cancel a running job', params: JobParams, response: { 200: JobSchema, 404: ErrorSchema } },
    }, async (req) => jobs.cancel(req.params.id) ?? Promise.reject(new MetalboxError('NOT_FOUND', `no job ${req.params.id}`)));
  };
}
