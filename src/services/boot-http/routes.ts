// HTTP boot: the fastify plugin buildApp registers when it is given BootHttpDeps. Routes (no auth: firmware
// and iPXE cannot authenticate; nothing here is secret but the per-boot token, which only the script of the
// machine that asked carries):
//
//   GET       /boot/ipxe?mac=..|uuid=..|bootif=..  the iPXE script for that machine (planBoot decides)
//   GET       /boot/AA-BB-CC-DD-EE-FF.ipxe         the same, by MAC (the URL DHCP hands to iPXE)
//   GET|HEAD  /boot/undionly.kpxe|ipxe.efi|snponly.efi   the iPXE binaries from boot.ipxeDir
//   GET|HEAD  /boot/assets/IMAGE/kernel|initrd|rootfs     boot image files from the asset store
//   /boot/agent/...                                  the agent API (agent-routes.ts), when given `agent` deps
//
// Nothing outside the asset store and the three iPXE binaries is reachable: no request path is ever joined
// to a directory. An image name selects a store record, whose sha-256 names the blob; a binary name must be
// one of three literals. Every request under /boot is an event ('boot.http') on the machine's timeline.
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { Logger } from '../../lib/logger.ts';
import { ERROR_CODES, MetalboxError } from '../../lib/errors.ts';
import { parseMac } from '../../lib/mac.ts';
import { limitedLogger } from '../../lib/log-limit.ts';
import { planBoot } from '../../core/boot-plan.ts';
import { newBootToken, pruneBootTokens } from '../../core/boot-tokens.ts';
import type { EventLog, NewEvent } from '../../core/events.ts';
import type { MachineRecord, Store } from '../../store/types.ts';
import { IMAGE_FILES, IPXE_BINARIES, IpxeBinaries, type AssetStore, type ImageFileRole } from '../../store/assets.ts';
import { DEFAULT_READ_CHUNK, sendFile, type BodyMode, type SendOutcome } from './http-file.ts';
import { chainScript, kernelScript, localDiskScript, problemScript } from './script.ts';
import { agentRoutes, type AgentDeps } from './agent-routes.ts';
import { EventBatcher } from '../../core/event-batcher.ts';

export interface BootHttpDeps {
  store: Store;
  events: EventLog;
  assets: AssetStore;
  ipxe: IpxeBinaries;
  logger: Logger;
  /** Config boot.ephemeralImage; the setting `boot.ephemeralImage` in the store overrides it. */
  ephemeralImage: string | undefined;
  tokenTtlMs: number;
  /** Read size for file bodies (default 1 MiB) and how they are written (default sendfile); benchmark knobs. */
  readChunkBytes?: number;
  body?: BodyMode;
  /** Boot-timeline events are written in one batch at most this often, ms (default 200; tests use 0). */
  eventFlushMs?: number;
  now?: () => number;
  /** The agent API under /boot/agent/ (agent-routes.ts): registered when given. */
  agent?: AgentDeps;
}

/** The setting that names the ephemeral image, read on every script request (no restart needed). */
export const EPHEMERAL_IMAGE_SETTING = 'boot.ephemeralImage';
const PRUNE_EVERY_MS = 60 * 60 * 1000;
/** Boot-timeline events are written in one batch at most this often, and at most this many wait (as TFTP's). */
const EVENT_FLUSH_MS = 200;
const MAX_PENDING_EVENTS = 10_000;
/** Path segments we accept at all; anything else is a traversal attempt or garbage. */
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

const ScriptQuery = Type.Object({
  mac: Type.Optional(Type.String({ maxLength: 64 })),
  uuid: Type.Optional(Type.String({ maxLength: 64 })),
  bootif: Type.Optional(Type.String({ maxLength: 64, description: 'pxelinux BOOTIF form, 01-aa-bb-cc-dd-ee-ff' })),
});

interface Identity { mac?: string; uuid?: string }

export function bootHttp(deps: BootHttpDeps): FastifyPluginAsync {
  const now = deps.now ?? Date.now;
  const readChunk = deps.readChunkBytes ?? DEFAULT_READ_CHUNK;
  const body = deps.body ?? 'sendfile';
  const limited = limitedLogger(deps.logger);

  return async (fastify) => {
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

    let pruner: NodeJS.Timeout | undefined;
    const prune = () => pruneBootTokens(deps.store, now()).then(
      (n) => { if (n > 0) deps.logger.info({ removed: n }, 'expired boot tokens removed'); },
      (err: unknown) => deps.logger.warn({ err }, 'pruning boot tokens failed'),
    );
    app.addHook('onReady', async () => {
      void prune();
      void deps.ipxe.describe().then((found) => {
        const missing = IPXE_BINARIES.filter((n) => !found.some((f) => f.name === n));
        if (missing.length > 0) deps.logger.warn({ dir: deps.ipxe.dir, missing }, 'iPXE binaries missing: machines that need them cannot boot (Debian package ipxe, or config boot.ipxeDir)');
      }, (err: unknown) => deps.logger.warn({ err }, 'cannot read the iPXE binaries'));
      pruner = setInterval(() => void prune(), PRUNE_EVERY_MS).unref();
    });
    app.addHook('onClose', async () => clearInterval(pruner));

    // Timeline events of boot fetches, written in batches like TFTP's (src/core/event-batcher.ts): in a storm one
    // durable write per script, kernel and initrd held up the lease and token writes around them.
    const timeline = new EventBatcher({
      events: deps.events, flushMs: deps.eventFlushMs ?? EVENT_FLUSH_MS, maxPending: MAX_PENDING_EVENTS,
      onDropped: (count, err) => limited('warn', 'boot-event', { count, ...(err !== undefined ? { err } : {}) }, err !== undefined ? 'could not record boot events' : 'boot events dropped: too many waiting to be written'),
    });
    app.addHook('onClose', async () => timeline.drain(2000));

    /** Queues the request's timeline event; a failure to record never fails the boot. */
    const record = (req: FastifyRequest, subject: string | undefined, o: SendOutcome, extra: Record<string, unknown> = {}) => {
      const client = clientAddress(req);
      // Without a subject (files, refusals): the MAC of the client address's lease (leases are resident: no disk read).
      timeline.add(subject !== undefined
        ? bootEvent(req, subject, client, o, extra)
        : leaseMac(deps.store, client).then((mac) => bootEvent(req, mac ?? client, client, o, extra)));
    };

    app.addHook('onRequest', (req, _reply, done) => { clientAddress(req); done(); });

    // Refused /boot requests (bad MAC, traversal, missing file) land on the timeline too: that is how a broken
    // boot shows on the console.
    app.addHook('onError', async (req, _reply, err) => {
      const status = err instanceof MetalboxError ? ERROR_CODES[err.code].status : (err as { statusCode?: number }).statusCode ?? 500;
      record(req, undefined, { status, bytes: 0, complete: true });
    });

    app.get('/boot/ipxe', { schema: { querystring: ScriptQuery }, exposeHeadRoute: false }, async (req, reply) => {
      const q = req.query;
      const id: Identity = {};
      if (q.mac !== undefined) id.mac = macOrThrow(q.mac, 'mac');
      if (q.bootif !== undefined) {
        // pxelinux's BOOTIF=01-aa-bb-..: the leading 01 is the ARP hardware type (Ethernet).
        const mac = macOrThrow(q.bootif.replace(/^01-/, ''), 'bootif');
        if (id.mac !== undefined && id.mac !== mac) throw new MetalboxError('BOOT_REQUEST_INVALID', 'mac and bootif name different MACs');
        id.mac = mac;
      }
      if (q.uuid !== undefined && q.uuid !== '') {
        if (!UUID.test(q.uuid)) throw new MetalboxError('BOOT_REQUEST_INVALID', `uuid "${q.uuid}" is not a UUID`);
        id.uuid = q.uuid.toLowerCase();
      }
      return script(req, reply, id);
    });

    app.route({
      method: ['GET', 'HEAD'],
      url: '/boot/:name',
      handler: async (req: FastifyRequest, reply: FastifyReply) => {
        const { name } = req.params as { name: string };
        checkSegment(name);
        if (name.endsWith('.ipxe')) {
          const mac = macOrThrow(name.slice(0, -'.ipxe'.length), 'the script name');
          if (req.method === 'HEAD') return scriptReply(reply).send(); // no token for a HEAD
          return script(req, reply, { mac });
        }
        if (!IpxeBinaries.isName(name)) throw notFound(`no boot file "${name}"`);
        const opened = await deps.ipxe.open(name);
        if (!opened) throw notFound(`${name} is not installed in ${deps.ipxe.dir} (Debian package ipxe)`);
        return sendFile(req, reply, {
          fh: opened.fh, size: opened.info.size, etag: `"${opened.info.sha256}"`,
          contentType: 'application/octet-stream', cacheControl: 'no-cache', readChunk, body,
        }, (o) => record(req, undefined, o));
      },
    });

    app.route({
      method: ['GET', 'HEAD'],
      url: '/boot/assets/:image/:file',
      handler: async (req: FastifyRequest, reply: FastifyReply) => {
        const { image: name, file } = req.params as { image: string; file: string };
        checkSegment(name);
        checkSegment(file);
        if (!(IMAGE_FILES as readonly string[]).includes(file)) throw notFound(`no boot file "${file}" (kernel, initrd, rootfs)`);
        const image = await deps.assets.get(name);
        const entry = image?.files[file as ImageFileRole];
        if (!image || !entry) throw notFound(image ? `image "${name}" has no ${file}` : `no image "${name}"`);
        const fh = await deps.assets.readBlob(entry);
        // Cached copies revalidate: an image name can be removed and re-added with other content.
        return sendFile(req, reply, {
          fh, size: entry.size, etag: `"${entry.sha256}"`,
          contentType: 'application/octet-stream', cacheControl: 'no-cache', readChunk, body,
        }, (o) => record(req, undefined, o, { image: name }));
      },
    });

    if (deps.agent) {
      await fastify.register(agentRoutes({
        store: deps.store, events: deps.events, assets: deps.assets, logger: deps.logger, tokenTtlMs: deps.tokenTtlMs, now,
        readChunk, body, serverUrl, record,
      }, deps.agent));
    }

    async function script(req: FastifyRequest, reply: FastifyReply, id: Identity): Promise<FastifyReply> {
      const baseUrl = serverUrl(req);
      let machine: MachineRecord | undefined;
      // The registry (with the agent API) holds every machine in memory and writes them: no store read per script.
      const registry = deps.agent?.registry;
      if (id.mac !== undefined) machine = registry ? registry.byMac(id.mac) : await deps.store.machines.getBy('mac', id.mac);
      if (machine === undefined && id.uuid !== undefined) machine = registry ? registry.byUuid(id.uuid) : await deps.store.machines.getBy('uuid', id.uuid);
      const mac = id.mac ?? machine?.macs[0] ?? (await leaseMac(deps.store, clientAddress(req)));
      if (mac === undefined && id.uuid === undefined) {
        const text = chainScript(baseUrl);
        return sendScript(req, reply, undefined, text, { script: 'chain' });
      }
      const subject = mac ?? id.uuid;
      const plan = planBoot(machine);
      const facts = { plan: plan.kind, ...(machine ? { machineId: machine.id } : {}) };
      if (plan.kind === 'local-disk') return sendScript(req, reply, subject, localDiskScript(plan), facts);

      const imageName = await ephemeralImageName();
      const image = imageName === undefined ? undefined : await deps.assets.get(imageName);
      if (!image) {
        const why = imageName === undefined
          ? 'no ephemeral image is configured (config boot.ephemeralImage or: metalbox settings set boot.ephemeralImage NAME)'
          : `the ephemeral image "${imageName}" is not registered (metalbox images add ${imageName} ...)`;
        limited('warn', 'no-ephemeral-image', { mac, plan: plan.kind }, `cannot ${plan.kind} a machine: ${why}`);
        return sendScript(req, reply, subject, problemScript([`cannot ${plan.kind} this machine: ${why}`]), { ...facts, problem: 'no-ephemeral-image' });
      }
      const issued = newBootToken({
        ...(mac !== undefined ? { mac } : {}), ...(id.uuid !== undefined ? { uuid: id.uuid } : {}),
        ...(machine ? { machineId: machine.id } : {}), purpose: plan.kind,
      }, deps.tokenTtlMs, now());
      const text = kernelScript({
        baseUrl, plan, imageName: image.name, hasRootfs: image.files.rootfs !== undefined, imageCmdline: image.cmdline,
        token: issued.token, ...(mac !== undefined ? { mac } : {}), ...(id.uuid !== undefined ? { uuid: id.uuid } : {}),
      });
      // The token's hash and the event in one durable batch, before the machine sees the token.
      const event = bootEvent(req, subject!, clientAddress(req), { status: 200, bytes: Buffer.byteLength(text), complete: true }, { ...facts, image: image.name });
      await deps.store.write([issued.op, deps.events.op(event)]);
      return scriptReply(reply).send(text);
    }

    function sendScript(req: FastifyRequest, reply: FastifyReply, subject: string | undefined, text: string, facts: Record<string, unknown>): FastifyReply {
      record(req, subject, { status: 200, bytes: Buffer.byteLength(text), complete: true }, facts);
      return scriptReply(reply).send(text);
    }

    async function ephemeralImageName(): Promise<string | undefined> {
      const setting = await deps.store.settings.get(EPHEMERAL_IMAGE_SETTING);
      return typeof setting === 'string' && setting !== '' ? setting : deps.ephemeralImage;
    }
  };
}

function bootEvent(req: FastifyRequest, subject: string, client: string, o: SendOutcome, extra: Record<string, unknown>): NewEvent {
  const data: Record<string, unknown> = { path: req.url.split('?')[0], method: req.method, status: o.status, bytes: o.bytes, client, ...extra };
  if (!o.complete) data.complete = false;
  return { type: 'boot.http', actor: 'http', subject, data };
}

/** Scripts are per request (a fresh token each time): never cached. */
const scriptReply = (reply: FastifyReply): FastifyReply => reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store');

const notFound = (message: string) => new MetalboxError('NOT_FOUND', message);

function checkSegment(segment: string): void {
  if (!SEGMENT.test(segment) || segment.includes('..')) {
    throw new MetalboxError('BOOT_PATH_INVALID', `"${printable(segment)}" is not a boot file name`);
  }
}

function macOrThrow(text: string, what: string): string {
  const mac = parseMac(text);
  if (mac === undefined) throw new MetalboxError('BOOT_REQUEST_INVALID', `${what} "${printable(text)}" is not a MAC address`);
  return mac;
}

const printable = (s: string): string => s.slice(0, 80).replace(/[^\x20-\x7e]/g, '?');

/** The client's address, taken when the request arrives: once the client hangs up, its socket forgets it. */
const clients = new WeakMap<FastifyRequest, string>();

function clientAddress(req: FastifyRequest): string {
  let ip = clients.get(req);
  if (ip === undefined) {
    const raw = req.socket.remoteAddress ?? 'unknown';
    ip = raw.startsWith('::ffff:') ? raw.slice(7) : raw;
    clients.set(req, ip);
  }
  return ip;
}

async function leaseMac(store: Store, ip: string): Promise<string | undefined> {
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(ip)) return undefined;
  return (await store.leases.get(ip))?.mac;
}

/**
 * http://SERVER:PORT as the machine reached us: the local address of this connection (never 0.0.0.0 when
 * listening on all addresses). Without a socket address (app.inject) the Host header stands in.
 */
export function serverUrl(req: FastifyRequest): string {
  const local = req.socket.localAddress;
  const port = req.socket.localPort;
  if (local && port && local !== '0.0.0.0' && local !== '::') {
    const addr = local.startsWith('::ffff:') ? local.slice(7) : local;
    return `http://${addr.includes(':') ? `[${addr}]` : addr}:${port}`;
  }
  return `http://${req.host}`;
}
