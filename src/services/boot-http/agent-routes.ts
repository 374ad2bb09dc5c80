// The appliance's side of the agent API (.notes/agent-contract.md): what `metalbox agent`, running in the
// ephemeral environment, downloads and talks to. Registered by the boot-http plugin when it is given
// `agent` deps. Routes (all under /boot/, public in src/api/auth.ts PUBLIC_ROUTES: firmware-class clients
// cannot log in; the agent presents the per-boot token of the script that booted it instead):
//
//   GET|HEAD /boot/agent/metalbox                  the appliance's own executable (the agent is `metalbox agent`)
//   POST     /boot/agent/v1/inventory              Bearer token: hardware facts (enlist: create or link the machine;
//                                                  commission: store them and apply 'commission-done')
//   GET      /boot/agent/v1/task                   Bearer token: what the machine's state asks of the agent
//   POST     /boot/agent/v1/progress               Bearer token: a boot timeline event (1/s per machine kept)
//   POST     /boot/agent/v1/done                   Bearer token: the outcome (lifecycle actions, see `done`)
//   POST     /boot/agent/v1/phone-home             cloud-init's phone_home from the deployed system: Deployed
//
// Token rules: the boot token (src/core/boot-tokens.ts) must be known and unexpired, else BOOT_TOKEN_INVALID
// (401) without saying which check failed. A token names the machine it was issued for (id, MAC, UUID) and
// the boot kind ('purpose'); a report changes the lifecycle only when the machine is still in the phase the
// token was issued for, so an agent left over from an aborted phase cannot end the next one. Phone-home
// tokens (purpose 'phone-home', in the deployed system's cloud-init seed, so readable by whoever owns that
// system) are good for the phone-home route only, and only once. cloud-init's phone_home takes nothing but a
// URL, so the token travels as the URL's password (http://phone-home:TOKEN@SERVER/...): python-requests sends
// URL credentials as Basic authorization, which keeps the token out of the request line, and so out of
// every request log and boot timeline event.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Type, { type Static } from 'typebox';
import { isSingleBinary } from '../../lib/addon.ts';
import { isMetalboxError, MetalboxError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { limitedLogger } from '../../lib/log-limit.ts';
import { BOOT_BY_STATE, type BootKind } from '../../core/boot-plan.ts';
import { newBootToken, requireBootToken, type BootTokenRecord } from '../../core/boot-tokens.ts';
import type { EventLog, NewEvent } from '../../core/events.ts';
import { isState, MAX_REASON_LENGTH, type Action } from '../../core/lifecycle.ts';
import { usableSystemUuid, type Machine, type MachineRegistry } from '../../core/machines.ts';
import type { Store } from '../../store/types.ts';
import type { AssetStore, ImageFile } from '../../store/assets.ts';
import { sendFile, type BodyMode, type SendOutcome } from './http-file.ts';

/** What the boot-http plugin's caller (main) gives for the agent API. */
export interface AgentDeps {
  registry: MachineRegistry;
  /**
   * Registers a BMC user the agent made in-band (commissioning; POST done `bmc`). Without it the task never
   * asks the agent to make one. Errors are logged and recorded; the report itself still succeeds.
   */
  enrollBmc?: (machineId: string, bmc: { address: string; username: string; password: string }, actor: string) => Promise<void>;
  /** Does this machine have a BMC (then the agent is not asked to make a user)? Default: a `bmcs` record names it. */
  hasBmc?: (machineId: string) => Promise<boolean>;
  /**
   * Ask a commissioning agent to make a BMC user in-band when the machine has no BMC (setting
   * lifecycle.createBmcUser; default true). false: the task never carries `bmcUser`, and a `bmc` reported in
   * done is not enrolled.
   */
  createBmcUser?: boolean;
  /** The executable served at /boot/agent/metalbox. Default: this process's when it is the single binary, else dist/metalbox. */
  binaryPath?: string;
  /** Least time between two progress events of one machine (default 1000 ms); reports in between are dropped. */
  progressIntervalMs?: number;
}

/** What the boot-http plugin shares with these routes. */
export interface AgentContext {
  store: Store;
  events: EventLog;
  assets: AssetStore;
  logger: Logger;
  tokenTtlMs: number;
  now: () => number;
  readChunk: number;
  body: BodyMode;
  /** http://SERVER:PORT as the machine reached us. */
  serverUrl: (req: FastifyRequest) => string;
  /** The boot timeline event of a file download (boot.http). */
  record: (req: FastifyRequest, subject: string | undefined, o: SendOutcome, extra?: Record<string, unknown>) => void;
}

/** The setting naming the image a deploy uses when the deploy request names none. */
export const DEFAULT_DEPLOY_IMAGE_SETTING = 'deploy.defaultImage';
/** Default erase of a release: partition tables and file system signatures (the agent's 'quick'). */
export const DEFAULT_ERASE = 'quick';
const ACTOR = 'agent';
const PHONE_HOME = 'phone-home';
/** A MAC-less machine powered on for enlistment (lifecycle runner) is linked to an enlisting boot this long after. */
const ENLIST_WINDOW_MS = 30 * 60_000;

// ---------------------------------------------------------------------------------------------------------
// Schemas (TypeBox; fastify's validator). Sizes are bounded: this is input from the provisioning network.

const Str = (max: number) => Type.String({ maxLength: max });
const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

export const InventorySchema = Type.Object({
  cpu: Type.Object({ model: Str(256), cores: Count, threads: Count, sockets: Count }),
  memoryBytes: Count,
  firmware: Type.Enum(['bios', 'uefi']),
  dmi: Type.Object({
    vendor: Type.Optional(Str(256)), product: Type.Optional(Str(256)), serial: Type.Optional(Str(256)),
    uuid: Type.Optional(Str(64)), biosVersion: Type.Optional(Str(256)),
  }),
  disks: Type.Array(Type.Object({
    name: Str(64), path: Str(256), sizeBytes: Count, model: Type.Optional(Str(256)), serial: Type.Optional(Str(256)),
    rotational: Type.Boolean(), removable: Type.Optional(Type.Boolean()),
  }), { maxItems: 256 }),
  nics: Type.Array(Type.Object({
    name: Str(64), mac: Str(32), link: Type.Boolean(), speedMbps: Type.Optional(Count), driver: Type.Optional(Str(64)),
  }), { maxItems: 256 }),
  bmc: Type.Optional(Type.Object({ present: Type.Boolean(), address: Type.Optional(Str(253)) })),
});
export type Inventory = Static<typeof InventorySchema>;

const ProgressSchema = Type.Object({
  phase: Type.String({ minLength: 1, maxLength: 64 }),
  done: Type.Optional(Count),
  total: Type.Optional(Count),
  message: Type.Optional(Str(500)),
});

const MODES = ['enlist', 'commission', 'deploy', 'release', 'rescue', 'none'] as const;
const DoneSchema = Type.Object({
  mode: Type.Enum([...MODES]),
  ok: Type.Boolean(),
  error: Type.Optional(Type.Object({ code: Str(64), message: Str(2000) })),
  bmc: Type.Optional(Type.Object({ address: Type.String({ minLength: 1, maxLength: 253 }), username: Type.String({ minLength: 1, maxLength: 32 }), password: Type.String({ minLength: 1, maxLength: 64 }) })),
});


// ---------------------------------------------------------------------------------------------------------
// What the lifecycle stores on the machine for the agent (written by the machines API and these routes)

/** `machine.deployment`: the deploy request (POST .../actions/deploy) and how it went. */
export interface DeploymentRecord {
  image?: string;
  disk?: string;
  sshKeys?: string[];
  requestedAt?: string;
  requestedBy?: string;
  /** The agent reported the image written (done ok): the machine boots its disk from now on. */
  writtenAt?: string;
  /** The installed system phoned home. */
  phonedHomeAt?: string;
  instanceId?: string;
  hostKeys?: Record<string, string>;
}
/** `machine.release`: the release request. */
export interface ReleaseRecord { erase?: 'none' | 'quick' | 'full'; requestedAt?: string }
/** `machine.rescue`: the rescue request (POST .../actions/rescue). Without sshKeys the deployment's are used. */
export interface RescueRecord { sshKeys?: string[]; requestedAt?: string; requestedBy?: string }

/** The keys root may log in to a rescue boot with: the rescue request's, else those of the last deploy request. */
export function rescueKeys(machine: Machine): string[] {
  const r = machine.rescue as RescueRecord | undefined;
  if (r?.sshKeys !== undefined) return r.sshKeys;
  return (machine.deployment as DeploymentRecord | undefined)?.sshKeys ?? [];
}

/** The task mode a machine's state implies. */
export function taskMode(machine: Machine | undefined): 'commission' | 'deploy' | 'release' | 'rescue' | 'none' {
  if (!machine || !isState(machine.state)) return 'none';
  const kind = BOOT_BY_STATE[machine.state];
  if (kind === 'deploy') return (machine.deployment as DeploymentRecord | undefined)?.writtenAt === undefined ? 'deploy' : 'none';
  return kind === 'commission' || kind === 'release' || kind === 'rescue' ? kind : 'none';
}

/** The lifecycle actions that end each phase. */
const PHASE_ACTIONS: Partial<Record<BootKind, { done: Action; failed: Action }>> = {
  commission: { done: 'commission-done', failed: 'commission-failed' },
  deploy: { done: 'deploy-done', failed: 'deploy-failed' },
  release: { done: 'release-done', failed: 'release-failed' },
};

// ---------------------------------------------------------------------------------------------------------

export function agentRoutes(ctx: AgentContext, agent: AgentDeps): FastifyPluginAsync {
  const store = ctx.store;
  const registry = agent.registry;
  const limited = limitedLogger(ctx.logger);
  const progressEvery = agent.progressIntervalMs ?? 1000;
  const enrollBmc = agent.createBmcUser === false ? undefined : agent.enrollBmc;
  /** Per machine: when its last progress event was kept, and how many reports were dropped since. */
  const progressSeen = new Map<string, { at: number; dropped: number }>();
  const compressions = new Map<string, Compression>();
  const hasBmc = agent.hasBmc ?? (async (id: string) => {
    for await (const [, b] of store.bmcs.entries()) if (b.machineId === id) return true;
    return false;
  });

  /** The token of the request: a boot token issued for an agent boot (not a phone-home token). */
  const authenticate = async (req: FastifyRequest, reply: FastifyReply): Promise<BootTokenRecord> => {
    const m = /^bearer +(\S+) *$/i.exec(req.headers.authorization ?? '');
    try {
      const token = await requireBootToken(store, m?.[1], ctx.now());
      if (token.purpose === PHONE_HOME) throw new MetalboxError('BOOT_TOKEN_INVALID', 'the boot token is unknown or expired');
      return token;
    } catch (err) {
      // RFC 6750 §3: a 401 names the scheme.
      if (isMetalboxError(err, 'BOOT_TOKEN_INVALID')) void reply.header('www-authenticate', 'Bearer realm="metalbox-boot"');
      throw err;
    }
  };

  /** The machine a token was issued for: by id, else by the MAC or UUID the boot named. */
  const machineOf = (t: BootTokenRecord): Machine | undefined =>
    (t.machineId !== undefined ? registry.get(t.machineId) : undefined)
    ?? (t.mac !== undefined ? registry.byMac(t.mac) : undefined)
    ?? (t.uuid !== undefined ? registry.byUuid(t.uuid) : undefined);

  const requireMachine = (t: BootTokenRecord): Machine => {
    const m = machineOf(t);
    if (!m) throw new MetalboxError('MACHINE_NOT_FOUND', 'no machine is known for this boot (enlisting boots report their inventory first)');
    return m;
  };

  /**
   * The phase a report may end: the machine's state must still be the phase the token's boot was for
   * (LIFECYCLE_INVALID_TRANSITION otherwise, naming both).
   */
  const phaseOf = (t: BootTokenRecord, m: Machine): { done: Action; failed: Action } => {
    const kind = isState(m.state) ? BOOT_BY_STATE[m.state] : undefined;
    const actions = kind !== undefined ? PHASE_ACTIONS[kind] : undefined;
    if (!actions || kind !== t.purpose) {
      throw new MetalboxError('LIFECYCLE_INVALID_TRANSITION', `machine ${m.id} is ${m.state}; this boot was for ${t.purpose}: its report no longer applies`,
        { details: { machine: m.id, state: m.state, purpose: t.purpose } });
    }
    return actions;
  };

  const event = (type: string, subject: string, data: Record<string, unknown>): NewEvent => ({ type, actor: ACTOR, subject, data });

  /**
   * Has the phase this boot was for already ended well, since the boot began? Then a `done ok` repeats what is
   * known (commissioning ends with the inventory, an agent may retry a report whose answer it lost): 204.
   */
  const succeeded = (t: BootTokenRecord, m: Machine): boolean => {
    const since = Date.parse(t.createdAt);
    const after = (iso: unknown) => typeof iso === 'string' && Date.parse(iso) >= since;
    const d = m.deployment as DeploymentRecord | undefined;
    switch (t.purpose) {
      case 'commission': return after(m.commissionedAt);
      case 'deploy': return after(d?.writtenAt) || (m.state === 'Deployed' && after(m.stateChangedAt));
      // Releasing reaches Ready only by release-done.
      case 'release': return m.state === 'Ready' && after(m.stateChangedAt);
      default: return false;
    }
  };

  return async (fastify: FastifyInstance) => {
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

    // cloud-init's phone_home posts an HTML form (requests' `data=` dict). Only in this plugin's scope.
    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 64 * 1024 }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(String(body))));
    });

    // -- the agent binary ---------------------------------------------------------------------------------
    const binary = binaryFile(agent.binaryPath);
    app.route({
      method: ['GET', 'HEAD'],
      url: '/boot/agent/metalbox',
      handler: async (req, reply) => {
        const found = await binary();
        const fh = await open(found.path, 'r');
        return sendFile(req, reply, {
          fh, size: found.size, etag: `"${found.sha256}"`, contentType: 'application/octet-stream', cacheControl: 'no-cache',
          readChunk: ctx.readChunk, body: ctx.body,
        }, (o) => ctx.record(req, undefined, o, { agent: true }));
      },
    });

    // -- inventory ----------------------------------------------------------------------------------------
    app.post('/boot/agent/v1/inventory', { schema: { body: InventorySchema } }, async (req, reply) => {
      const token = await authenticate(req, reply);
      const inv = req.body;
      const inventory = { ...inv, reportedAt: new Date(ctx.now()).toISOString() };
      const summary = inventorySummary(inv);
      let machine: Machine;
      if (token.purpose === 'enlist') {
        machine = await enlist(token, inv, machineOf(token));
        machine = await registry.amend(machine.id, { ...linkFields(token, inv, machine, registry), set: { inventory } }, { actor: ACTOR },
          { type: 'machine.inventory', data: { purpose: token.purpose, ...summary } });
      } else if (token.purpose === 'commission') {
        machine = requireMachine(token);
        phaseOf(token, machine);
        machine = (await registry.act(machine.id, 'commission-done', { actor: ACTOR, set: { inventory } })).machine;
      } else {
        // A deploy, release or rescue boot reporting facts: kept, no state change.
        machine = await registry.amend(requireMachine(token).id, { set: { inventory } }, { actor: ACTOR }, { type: 'machine.inventory', data: { purpose: token.purpose, ...summary } });
      }
      return { machineId: machine.id, hostname: machine.hostname, mode: taskMode(machine) };
    });

    /** The machine an enlisting boot is: known by MAC or UUID, a machine registered by its BMC alone, or a new one. */
    async function enlist(token: BootTokenRecord, inv: Inventory, known: Machine | undefined): Promise<Machine> {
      if (known) return known;
      const macs = [token.mac, ...inv.nics.map((n) => n.mac.toLowerCase())].filter((m): m is string => m !== undefined);
      for (const mac of macs) {
        const m = registry.byMac(mac);
        if (m) return m;
      }
      const uuid = usableSystemUuid(inv.dmi.uuid) ?? token.uuid;
      // A UUID names a machine only when that machine has no MAC yet (registered by its BMC with its UUID): boards
      // that share a placeholder SMBIOS UUID are common (QUIRK(firmware)), so a machine with MACs is not matched
      // by UUID alone.
      const byUuid = uuid !== undefined ? registry.byUuid(uuid) : undefined;
      if (byUuid && byUuid.macs.length === 0) return byUuid;
      // A machine registered by its BMC alone and powered on for enlistment just now: if exactly one waits, this is it.
      const since = ctx.now() - ENLIST_WINDOW_MS;
      const waiting = [...(registry.withState('New') ?? [])].filter((m) => m.macs.length === 0 && enlistmentStarted(m) >= since);
      if (waiting.length === 1) return waiting[0]!;
      if (waiting.length > 1) limited('warn', 'enlist-ambiguous', { waiting: waiting.map((m) => m.id) }, 'several machines registered by BMC are enlisting at once: an enlisting boot gets a new machine');
      const mac = token.mac ?? macs[0];
      return registry.create({
        ...(mac !== undefined ? { mac } : {}),
        ...(uuid !== undefined && !byUuid ? { uuid } : {}),
      }, { actor: ACTOR });
    }

    // -- task ---------------------------------------------------------------------------------------------
    app.get('/boot/agent/v1/task', async (req, reply) => {
      const token = await authenticate(req, reply);
      const machine = machineOf(token);
      const mode = taskMode(machine);
      if (!machine || mode === 'none') return { mode: 'none' };
      if (mode === 'commission') {
        if (!enrollBmc) return { mode };
        return { mode, bmcUser: { create: !(await hasBmc(machine.id)) } };
      }
      if (mode === 'release') {
        const erase = (machine.release as ReleaseRecord | undefined)?.erase ?? DEFAULT_ERASE;
        return { mode, release: { erase } };
      }
      if (mode === 'rescue') return { mode, rescue: { sshKeys: rescueKeys(machine) } };
      return { mode, deploy: await deployTask(req, token, machine) };
    });

    async function deployTask(req: FastifyRequest, token: BootTokenRecord, machine: Machine): Promise<Record<string, unknown>> {
      const d = (machine.deployment ?? {}) as DeploymentRecord;
      const setting = await store.settings.get(DEFAULT_DEPLOY_IMAGE_SETTING);
      const name = d.image ?? (typeof setting === 'string' && setting !== '' ? setting : undefined);
      if (name === undefined) {
        throw new MetalboxError('IMAGE_INVALID', `machine ${machine.id} has no deploy image: deploy it with {"image": NAME}, or set ${DEFAULT_DEPLOY_IMAGE_SETTING}`);
      }
      const image = await ctx.assets.get(name);
      const file = image?.files.rootfs;
      if (!image || !file) {
        throw new MetalboxError('IMAGE_INVALID', image ? `image "${name}" has no disk image (its rootfs file)` : `the deploy image "${name}" is not registered (metalbox images add ${name} ... --rootfs DISK_IMAGE)`);
      }
      const base = ctx.serverUrl(req);
      const mac = token.mac ?? machine.macs[0];
      if (mac === undefined) throw new MetalboxError('MACHINE_INVALID', `machine ${machine.id} has no MAC to configure in the installed system`);
      // A phone-home token for the installed system's cloud-init, stored (hash only) with the task's event.
      const issued = newBootToken({ machineId: machine.id, mac, purpose: PHONE_HOME }, ctx.tokenTtlMs, ctx.now());
      const phoneHome = new URL(`${base}/boot/agent/v1/phone-home`);
      phoneHome.username = PHONE_HOME;
      phoneHome.password = issued.token;
      const task = {
        imageUrl: `${base}/boot/assets/${encodeURIComponent(image.name)}/rootfs`,
        sha256: file.sha256,
        size: file.size,
        compression: await compressionOf(file),
        disk: d.disk ?? 'auto',
        hostname: machine.hostname,
        sshKeys: d.sshKeys ?? [],
        phoneHomeUrl: phoneHome.href,
        network: { mac },
        // Stable for one deployment (the agent may ask twice); a new deploy request is a new instance.
        instanceId: `${machine.id}-${createHash('sha256').update(d.requestedAt ?? machine.stateChangedAt ?? '').digest('hex').slice(0, 12)}`,
      };
      await store.write([issued.op, ctx.events.op(event('boot.agent.task', machine.id, { mode: 'deploy', image: image.name, disk: task.disk, compression: task.compression }))]);
      return task;
    }

    /** gzip, zstd or xz by the blob's magic bytes (RFC 1952 §2.3.1; RFC 8878 §3.1.1; xz file format §2.1.1.1). */
    async function compressionOf(file: ImageFile): Promise<Compression> {
      const cached = compressions.get(file.sha256);
      if (cached) return cached;
      const fh = await ctx.assets.openBlob(file);
      try {
        const head = Buffer.alloc(6);
        const { bytesRead } = await fh.read(head, 0, 6, 0);
        const c = sniffCompression(head.subarray(0, bytesRead));
        compressions.set(file.sha256, c);
        return c;
      } finally {
        await fh.close();
      }
    }

    // -- progress -----------------------------------------------------------------------------------------
    app.post('/boot/agent/v1/progress', { schema: { body: ProgressSchema } }, async (req, reply) => {
      const token = await authenticate(req, reply);
      const machine = machineOf(token);
      const subject = machine?.id ?? token.mac ?? token.uuid ?? 'unknown';
      const t = ctx.now();
      const seen = progressSeen.get(subject);
      if (seen !== undefined && t - seen.at < progressEvery) {
        seen.dropped++;
        return reply.code(204).send();
      }
      // Bounded: machines that reported more than an interval ago need no entry (a flood of boots cannot grow it).
      if (progressSeen.size >= 10_000) for (const [k, v] of progressSeen) if (t - v.at >= progressEvery) progressSeen.delete(k);
      progressSeen.set(subject, { at: t, dropped: 0 });
      const droppedBefore = seen?.dropped ?? 0;
      const p = req.body;
      await ctx.events.append(event('boot.agent.progress', subject, {
        purpose: token.purpose, phase: p.phase,
        ...(p.done !== undefined ? { done: p.done } : {}), ...(p.total !== undefined ? { total: p.total } : {}), ...(p.message !== undefined ? { message: p.message } : {}),
        ...(droppedBefore > 0 ? { droppedBefore } : {}),
      }));
      return reply.code(204).send();
    });

    // -- done ---------------------------------------------------------------------------------------------
    // ok:false fails the phase ('*-failed' with the reason). ok:true: commission -> 'commission-done' (if the
    // inventory did not already), deploy -> the image is written and the machine reboots into it: recorded,
    // and its iPXE script says local disk from now on; 'deploy-done' waits for the installed system's
    // phone-home. release -> 'release-done'. enlist, rescue, none: recorded only.
    app.post('/boot/agent/v1/done', { schema: { body: DoneSchema } }, async (req, reply) => {
      const token = await authenticate(req, reply);
      const body = req.body;
      const machine = body.mode === 'enlist' || body.mode === 'none' || body.mode === 'rescue' ? machineOf(token) : requireMachine(token);
      const subject = machine?.id ?? token.mac ?? token.uuid ?? 'unknown';
      const facts: Record<string, unknown> = { purpose: token.purpose, mode: body.mode, ok: body.ok };
      if (body.error) facts.error = { code: body.error.code, message: body.error.message.slice(0, 500) };
      if (body.bmc) facts.bmc = { address: body.bmc.address, username: body.bmc.username }; // never the password

      if (machine && (body.mode === 'commission' || body.mode === 'deploy' || body.mode === 'release') && !(body.ok && succeeded(token, machine))) {
        const phase = phaseOf(token, machine);
        if (!body.ok) {
          const why = body.error ? `${body.error.code}: ${body.error.message}` : `the agent reported ${body.mode} failed`;
          await registry.act(machine.id, phase.failed, { actor: ACTOR, reason: why.slice(0, MAX_REASON_LENGTH) });
        } else if (body.mode === 'commission') {
          await registry.act(machine.id, phase.done, { actor: ACTOR });
        } else if (body.mode === 'deploy') {
          const d = (machine.deployment ?? {}) as DeploymentRecord;
          await registry.amend(machine.id, { set: { deployment: { ...d, writtenAt: new Date(ctx.now()).toISOString() } } }, { actor: ACTOR }, { type: 'machine.deploy.written', data: {} });
        } else {
          await registry.act(machine.id, phase.done, { actor: ACTOR });
        }
      }
      await ctx.events.append(event('boot.agent.done', subject, facts));
      if (body.bmc && machine && enrollBmc) {
        try {
          await enrollBmc(machine.id, body.bmc, ACTOR);
        } catch (err) {
          ctx.logger.warn({ err, machine: machine.id, bmc: body.bmc.address }, 'could not register the BMC user the agent made');
          await ctx.events.append(event('boot.agent.bmc', machine.id, { address: body.bmc.address, result: 'failed', code: isMetalboxError(err) ? err.code : 'INTERNAL' }))
            .catch(() => undefined);
        }
      }
      return reply.code(204).send();
    });

    // -- phone-home ---------------------------------------------------------------------------------------
    app.post('/boot/agent/v1/phone-home', async (req, reply) => {
      let record: BootTokenRecord;
      let machine: Machine | undefined;
      try {
        record = await requireBootToken(store, phoneHomeToken(req.headers.authorization), ctx.now());
        machine = record.purpose === PHONE_HOME && record.machineId !== undefined ? registry.get(record.machineId) : undefined;
        if (!machine) throw new MetalboxError('BOOT_TOKEN_INVALID', 'the boot token is unknown or expired');
      } catch (err) {
        if (isMetalboxError(err, 'BOOT_TOKEN_INVALID')) void reply.header('www-authenticate', 'Basic realm="metalbox-phone-home"');
        throw err;
      }
      const form = (typeof req.body === 'object' && req.body !== null ? req.body : {}) as Record<string, unknown>;
      const text = (k: string) => (typeof form[k] === 'string' ? (form[k] as string).slice(0, 2048) : undefined);
      const hostKeys: Record<string, string> = {};
      for (const k of ['pub_key_rsa', 'pub_key_ecdsa', 'pub_key_ed25519', 'pub_key_dsa']) {
        const v = text(k);
        if (v !== undefined && v !== '' && v !== 'N/A') hostKeys[k.slice('pub_key_'.length)] = v.trim();
      }
      const d = (machine.deployment ?? {}) as DeploymentRecord;
      const deployment: DeploymentRecord = {
        ...d, phonedHomeAt: new Date(ctx.now()).toISOString(),
        ...(text('instance_id') !== undefined ? { instanceId: text('instance_id') } : {}),
        ...(Object.keys(hostKeys).length > 0 ? { hostKeys } : {}),
      };
      if (machine.state !== 'Deploying') {
        throw new MetalboxError('LIFECYCLE_INVALID_TRANSITION', `machine ${machine.id} is ${machine.state}, not Deploying: the phone-home does not apply`,
          { details: { machine: machine.id, state: machine.state } });
      }
      await registry.act(machine.id, 'deploy-done', { actor: PHONE_HOME, set: { deployment } });
      // One use: the token sits in the installed system's seed, readable by its users.
      await store.tokens.del(record.id);
      await ctx.events.append(event('boot.agent.phone-home', machine.id, {
        ...(text('hostname') !== undefined ? { hostname: text('hostname') } : {}),
        ...(text('instance_id') !== undefined ? { instanceId: text('instance_id') } : {}),
        hostKeys: Object.keys(hostKeys), client: req.ip,
      }));
      return { machineId: machine.id, state: 'Deployed' };
    });
  };
}

// ---------------------------------------------------------------------------------------------------------

export type Compression = 'none' | 'gzip' | 'xz' | 'zstd';

export function sniffCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (head.length >= 6 && head.equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  return 'none';
}

/** The token of a phone-home: the password of Basic credentials (the user name is not checked), or a Bearer token. */
function phoneHomeToken(authorization: string | undefined): string | undefined {
  const m = /^(basic|bearer) +(\S+) *$/i.exec(authorization ?? '');
  if (!m) return undefined;
  if (m[1]!.toLowerCase() === 'bearer') return m[2];
  const text = Buffer.from(m[2]!, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  return colon >= 0 ? text.slice(colon + 1) : undefined;
}

function enlistmentStarted(m: Machine): number {
  const e = m.enlistment as { poweredOnAt?: unknown } | undefined;
  const t = typeof e?.poweredOnAt === 'string' ? Date.parse(e.poweredOnAt) : Number.NaN;
  return Number.isNaN(t) ? -Infinity : t;
}

/**
 * The MAC the boot used and the machine's UUID, for a machine found or created while enlisting: what no other
 * machine holds (a placeholder UUID stays with the machine that had it first).
 */
function linkFields(token: BootTokenRecord, inv: Inventory, m: Machine, registry: MachineRegistry): { mac?: string; uuid?: string } {
  const out: { mac?: string; uuid?: string } = {};
  const mac = token.mac ?? inv.nics[0]?.mac.toLowerCase();
  if (mac !== undefined && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(mac) && (registry.byMac(mac) ?? m).id === m.id) out.mac = mac;
  const uuid = usableSystemUuid(inv.dmi.uuid);
  if (uuid !== undefined && m.uuid === undefined && registry.byUuid(uuid) === undefined) out.uuid = uuid;
  return out;
}

function inventorySummary(inv: Inventory): Record<string, unknown> {
  return {
    cpu: inv.cpu.model, threads: inv.cpu.threads, memoryBytes: inv.memoryBytes, firmware: inv.firmware,
    disks: inv.disks.length, nics: inv.nics.length,
  };
}

interface BinaryInfo { path: string; size: number; sha256: string }

/**
 * The agent binary: this process's executable inside the single binary (node:sea isSea(), the check
 * src/lib/addon.ts makes), else dist/metalbox of the source tree (tests build it), else 404 saying how to make
 * it. Its sha-256 (the ETag) is computed once per file version (size and mtime).
 */
function binaryFile(configured: string | undefined): () => Promise<BinaryInfo> {
  let cached: { key: string; info: BinaryInfo } | undefined;
  return async () => {
    const path = configured ?? (isSingleBinary() ? process.execPath : fileURLToPath(new URL('../../../dist/metalbox', import.meta.url)));
    if (!existsSync(path)) {
      throw new MetalboxError('NOT_FOUND', `the agent binary is not available: metalbox runs from source and ${path} does not exist (run npm run build:binary)`);
    }
    const st = await stat(path);
    const key = `${path}\0${st.size}\0${st.mtimeMs}`;
    if (cached?.key !== key) {
      const hash = createHash('sha256');
      const fh = await open(path, 'r');
      try {
        for await (const chunk of fh.createReadStream({ highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
      } finally {
        await fh.close().catch(() => undefined);
      }
      cached = { key, info: { path, size: st.size, sha256: hash.digest('hex') } };
    }
    return cached.info;
  };
}
