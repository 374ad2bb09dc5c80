// The agent API (src/services/boot-http/agent-routes.ts) through buildApp + app.inject on the memory store:
// per-boot token checks, enlisting, commissioning, the deploy task, done, phone-home, progress, the binary.
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { buildApp } from '../../src/api/app.ts';
import { EventLog } from '../../src/core/events.ts';
import { newBootToken, verifyBootToken } from '../../src/core/boot-tokens.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { AssetStore, IpxeBinaries, parseSource } from '../../src/store/assets.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import type { EventRecord, Store } from '../../src/store/types.ts';
import { sniffCompression, type AgentDeps } from '../../src/services/boot-http/agent-routes.ts';

const MAC = '52:54:00:77:00:20';
const HOUR = 3600_000;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const INVENTORY = {
  cpu: { model: 'QEMU Virtual CPU', cores: 2, threads: 2, sockets: 1 },
  memoryBytes: 1073741824,
  firmware: 'bios',
  dmi: { vendor: 'LabCorp', product: 'PXE-Node', serial: 'NODE0001', uuid: '8B3C6A52-2F0E-4C7B-9D55-0A1B2C3D4E5F' },
  disks: [{ name: 'vda', path: '/dev/vda', sizeBytes: 4294967296, rotational: false, removable: false }],
  nics: [{ name: 'eth0', mac: MAC, link: true, speedMbps: 1000, driver: 'virtio_net' }],
  bmc: { present: false },
};

interface Fixture {
  app: Awaited<ReturnType<typeof buildApp>>;
  store: Store;
  registry: MachineRegistry;
  clock: { now: number };
  disk: Buffer;
  binary: Buffer;
  logs: string[];
  enrolled: { machineId: string; bmc: { address: string; username: string; password: string } }[];
  /** A boot token as the iPXE script would have issued it. */
  token(subject: { mac?: string; uuid?: string; machineId?: string; purpose: string }, ttlMs?: number): Promise<string>;
  auth(token: string): { authorization: string };
  events(type?: string): Promise<EventRecord[]>;
}

async function fixture(t: Test, agent: Partial<AgentDeps> = {}): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-agent-routes-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const clock = { now: Date.parse('2026-01-01T00:00:00Z') };
  const store = createMemoryStore();
  const events = new EventLog(store, () => clock.now);
  const logs: string[] = [];
  const logger = createLogger('trace', new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } }));
  const registry = await MachineRegistry.open({ store, events, logger, now: () => clock.now });
  const assets = new AssetStore(join(dir, 'assets'), store);
  await assets.open();
  // A deploy image: the OS's kernel and initrd, and its disk image (gzip) as the rootfs.
  const disk = gzipSync(Buffer.concat([Buffer.from('GPT DISK IMAGE'), Buffer.alloc(100_000, 7)]));
  writeFileSync(join(dir, 'vmlinuz'), 'KERNEL');
  writeFileSync(join(dir, 'initrd'), 'INITRD');
  writeFileSync(join(dir, 'disk.img.gz'), disk);
  await assets.add({ name: 'debian-12', files: { kernel: parseSource(join(dir, 'vmlinuz')), initrd: parseSource(join(dir, 'initrd')), rootfs: parseSource(join(dir, 'disk.img.gz')) } }, { maxBytes: 1e9 });
  await assets.add({ name: 'no-disk', files: { kernel: parseSource(join(dir, 'vmlinuz')), initrd: parseSource(join(dir, 'initrd')) } }, { maxBytes: 1e9 });
  const binary = Buffer.concat([Buffer.from('\x7fELF'), Buffer.alloc(300_000, 1)]);
  writeFileSync(join(dir, 'metalbox'), binary);
  const enrolled: Fixture['enrolled'] = [];
  const app = await buildApp({
    logger, metrics: createMetrics({ processMetrics: false }), version: 'x', instanceId: () => 'i',
    readiness: () => ({ phase: 'running', services: {} }),
    boot: {
      store, events, assets, ipxe: new IpxeBinaries(join(dir, 'ipxe')), logger, ephemeralImage: 'eph', tokenTtlMs: 2 * HOUR, now: () => clock.now, eventFlushMs: 0,
      agent: { registry, binaryPath: join(dir, 'metalbox'), ...agent },
    },
  });
  t.teardown(() => app.close());
  return {
    app, store, registry, clock, disk, binary, logs, enrolled,
    async token(subject, ttlMs = 2 * HOUR) {
      const issued = newBootToken(subject, ttlMs, clock.now);
      await store.write([issued.op]);
      return issued.token;
    },
    auth: (token) => ({ authorization: `Bearer ${token}` }),
    async events(type) {
      await sleep(20); // boot.http events are written (in a batch) after the response
      const out: EventRecord[] = [];
      for await (const [, e] of store.events.entries()) if (type === undefined || e.type === type) out.push(e);
      return out;
    },
  };
}

/** A machine in `state` by the lifecycle's own actions. */
async function machineIn(f: Fixture, state: 'New' | 'Commissioning' | 'Ready' | 'Deploying' | 'Releasing', set?: Record<string, unknown>) {
  const ctx = { actor: 'test' };
  let m = await f.registry.create({ mac: MAC }, ctx);
  if (state === 'New') return m;
  m = (await f.registry.act(m.id, 'commission', ctx)).machine;
  if (state === 'Commissioning') return m;
  m = (await f.registry.act(m.id, 'commission-done', ctx)).machine;
  if (state === 'Ready') return m;
  m = (await f.registry.act(m.id, 'deploy', { ...ctx, set: set ?? { deployment: { image: 'debian-12', disk: '/dev/vda', sshKeys: ['ssh-ed25519 AAAAC3Nza test@lab'], requestedAt: '2026-01-01T00:00:00.000Z' } } })).machine;
  if (state === 'Deploying') return m;
  await f.registry.amend(m.id, { set: { deployment: { writtenAt: 'x' } } }, ctx, { type: 'test' });
  m = (await f.registry.act(m.id, 'deploy-done', ctx)).machine;
  return (await f.registry.act(m.id, 'release', { ...ctx, set: { release: { erase: 'full' } } })).machine;
}

t.test('tokens: missing, malformed, unknown, expired and phone-home tokens are 401 BOOT_TOKEN_INVALID', async (t) => {
  const f = await fixture(t);
  const good = await f.token({ mac: MAC, purpose: 'enlist' });
  const short = await f.token({ mac: MAC, purpose: 'enlist' }, 1000);
  const phone = await f.token({ mac: MAC, machineId: 'x', purpose: 'phone-home' });
  f.clock.now += 2000;
  const cases: [string, Record<string, string>][] = [
    ['no header', {}],
    ['not bearer', { authorization: `Basic ${good}` }],
    ['unknown token', f.auth('A'.repeat(43))],
    ['garbage', f.auth('../../etc/passwd')],
    ['expired', f.auth(short)],
    ['a phone-home token', f.auth(phone)],
  ];
  for (const [why, headers] of cases) {
    for (const [method, url, payload] of [['GET', '/boot/agent/v1/task'], ['POST', '/boot/agent/v1/inventory', INVENTORY], ['POST', '/boot/agent/v1/progress', { phase: 'x' }], ['POST', '/boot/agent/v1/done', { mode: 'enlist', ok: true }]] as const) {
      const res = await f.app.inject({ method, url, headers, ...(payload ? { payload } : {}) });
      t.equal(res.statusCode, 401, `${why}: ${method} ${url}`);
      t.equal(res.json().code, 'BOOT_TOKEN_INVALID');
      t.equal(res.headers['www-authenticate'], 'Bearer realm="metalbox-boot"');
    }
  }
  t.equal(f.registry.size, 0, 'nothing was created');
  const ok = await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(good) });
  t.equal(ok.statusCode, 200, 'the good token works');
  t.same(ok.json(), { mode: 'none' }, 'an enlisting boot has no task');
  t.notMatch(f.logs.join(''), good, 'no token in the logs');
});

t.test('enlist: an unknown machine becomes a New machine with a generated host name, its MAC and UUID', async (t) => {
  const f = await fixture(t);
  const token = await f.token({ mac: MAC, purpose: 'enlist' });
  const res = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/inventory', headers: f.auth(token), payload: INVENTORY });
  t.equal(res.statusCode, 200, res.body);
  const body = res.json();
  t.match(body, { machineId: String, hostname: 'node-770020', mode: 'none' });
  const m = f.registry.get(body.machineId)!;
  t.equal(m.state, 'New');
  t.same(m.macs, [MAC]);
  t.equal(m.uuid, '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f', 'the SMBIOS UUID, lower case');
  t.match(m.inventory, { ...INVENTORY, reportedAt: '2026-01-01T00:00:00.000Z' }, 'the inventory is on the record');
  t.match(await f.store.machines.get(m.id), { inventory: { cpu: INVENTORY.cpu } }, 'and in the store');

  // The same boot reporting again: the same machine, the facts refreshed.
  const again = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/inventory', headers: f.auth(token), payload: { ...INVENTORY, memoryBytes: 2 ** 31 } });
  t.equal(again.json().machineId, m.id);
  t.equal(f.registry.size, 1);
  t.equal((f.registry.get(m.id)!.inventory as { memoryBytes: number }).memoryBytes, 2 ** 31);

  const done = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: f.auth(token), payload: { mode: 'enlist', ok: true } });
  t.equal(done.statusCode, 204);
  t.equal(f.registry.get(m.id)!.state, 'New', 'enlisting changes no state');
  t.match(await f.events('boot.agent.done'), [{ subject: m.id, actor: 'agent', data: { mode: 'enlist', ok: true } }]);
  t.equal((await f.events('machine.created')).length, 1);
  t.equal((await f.events('machine.inventory')).length, 2);
});

t.test('enlist: placeholder UUIDs are not stored; a UUID never links a machine that has MACs', async (t) => {
  const f = await fixture(t);
  const other = await f.registry.create({ mac: '52:54:00:00:00:01', uuid: '03000200-0400-0500-0006-000700080009' }, { actor: 't' });
  const a = await f.token({ mac: MAC, purpose: 'enlist' });
  const r1 = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/inventory', headers: f.auth(a), payload: { ...INVENTORY, dmi: { uuid: '03000200-0400-0500-0006-000700080009' } } });
  t.not(r1.json().machineId, other.id, 'a shared placeholder UUID is not an identity');
  t.equal(f.registry.get(r1.json().machineId)!.uuid, undefined, 'and the new machine does not take it');
  const b = await f.token({ mac: '52:54:00:00:00:99', purpose: 'enlist' });
  const r2 = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/inventory', headers: f.auth(b), payload: { ...INVENTORY, nics: [], dmi: { uuid: '00000000-0000-0000-0000-000000000000' } } });
  t.equal(f.registry.get(r2.json().machineId)!.uuid, undefined, 'an all-zero UUID is none');
});

t.test('enlist: the boot of a machine registered by its BMC alone is linked to it, not duplicated', async (t) => {
  const f = await fixture(t);
  const bmcOnly = await f.registry.create({}, { actor: 't' });
  const token = await f.token({ mac: MAC, purpose: 'enlist' });
  // Not waiting for an enlistment (never powered on by the lifecycle runner): a new machine.
  const stale = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/inventory', headers: f.auth(token), payload: { ...INVENTORY, dmi: {} } });
  t.not(stale.json().machineId, bmcOnly.id);
  await f.registry.remove(stale.json().machineId, { actor: 't' });
  // Powered on for enlistment just now (what the runner records): this boot is that machine.
  await f.registry.amend(bmcOnly.id, { set: { enlistment: { poweredOnAt: new Date(f.clock.now - 60_000).toISOString() } } }, { actor: 'lifecycle' }, { type: 'machine.enlistment' });
  const linked = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/inventory', headers: f.auth(token), payload: INVENTORY });
  t.equal(linked.json().machineId, bmcOnly.id);
  t.equal(linked.json().hostname, bmcOnly.hostname, 'it keeps its name');
  t.same(f.registry.get(bmcOnly.id)!.macs, [MAC], 'and gets the MAC it booted from');
  t.equal(f.registry.get(bmcOnly.id)!.uuid, '8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f');
  t.equal(f.registry.size, 1);
});

t.test('commission: the task, the inventory stored and commission-done in one write; a second report is refused', async (t) => {
  const f = await fixture(t);
  const m = await machineIn(f, 'Commissioning');
  const token = await f.token({ mac: MAC, machineId: m.id, purpose: 'commission' });
  t.same((await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) })).json(), { mode: 'commission' }, 'no BMC user without a way to enrol one');
  const res = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/inventory', headers: f.auth(token), payload: INVENTORY });
  t.equal(res.statusCode, 200, res.body);
  t.same(res.json(), { machineId: m.id, hostname: m.hostname, mode: 'none' });
  const after = f.registry.get(m.id)!;
  t.equal(after.state, 'Ready');
  t.equal(after.commissionedAt, '2026-01-01T00:00:00.000Z');
  t.match(after.inventory, { cpu: INVENTORY.cpu, disks: INVENTORY.disks });
  t.match(await f.events('machine.state'), [{}, { subject: m.id, actor: 'agent', data: { from: 'Commissioning', to: 'Ready', action: 'commission-done' } }]);
  const again = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/inventory', headers: f.auth(token), payload: INVENTORY });
  t.equal(again.statusCode, 409);
  t.equal(again.json().code, 'LIFECYCLE_INVALID_TRANSITION');
  // The agent's done after its inventory: the phase ended well already, nothing to do.
  t.equal((await f.app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: f.auth(token), payload: { mode: 'commission', ok: true } })).statusCode, 204);
  t.equal(f.registry.get(m.id)!.state, 'Ready');
  t.equal((await f.app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: f.auth(token), payload: { mode: 'commission', ok: false, error: { code: 'X', message: 'y' } } })).statusCode, 409,
    'a failure of a phase that is over is refused');
});

t.test('commission: a BMC user is asked for when the machine has none; its credentials are enrolled, never logged', async (t) => {
  const enrolled: { id: string; bmc: { address: string; username: string; password: string } }[] = [];
  const f = await fixture(t, { enrollBmc: async (id, bmc) => { enrolled.push({ id, bmc }); } });
  const m = await machineIn(f, 'Commissioning');
  const token = await f.token({ mac: MAC, machineId: m.id, purpose: 'commission' });
  t.same((await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) })).json(), { mode: 'commission', bmcUser: { create: true } });
  await f.store.bmcs.put('b1', { id: 'b1', machineId: m.id, driver: 'ipmi', address: '10.0.0.9', createdAt: '', updatedAt: '' });
  t.same((await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) })).json(), { mode: 'commission', bmcUser: { create: false } }, 'it has one now');
  const secret = 'Pa55-word-never-logged';
  const done = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: f.auth(token), payload: { mode: 'commission', ok: true, bmc: { address: '10.0.0.9', username: 'metalbox', password: secret } } });
  t.equal(done.statusCode, 204);
  t.same(enrolled, [{ id: m.id, bmc: { address: '10.0.0.9', username: 'metalbox', password: secret } }]);
  t.equal(f.registry.get(m.id)!.state, 'Ready', 'done ok ends commissioning when the inventory did not');
  const all = JSON.stringify(await f.events()) + f.logs.join('');
  t.notMatch(all, secret, 'the password is in no event and no log line');
  t.match(await f.events('boot.agent.done'), [{ data: { bmc: { address: '10.0.0.9', username: 'metalbox' } } }]);
});

t.test('commission: createBmcUser false: no BMC user is asked for, and one reported anyway is not enrolled', async (t) => {
  const enrolled: string[] = [];
  const f = await fixture(t, { enrollBmc: async (id) => { enrolled.push(id); }, createBmcUser: false });
  const m = await machineIn(f, 'Commissioning');
  const token = await f.token({ mac: MAC, machineId: m.id, purpose: 'commission' });
  t.same((await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) })).json(), { mode: 'commission' });
  const done = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: f.auth(token), payload: { mode: 'commission', ok: true, bmc: { address: '10.0.0.9', username: 'metalbox', password: 'x-secret-x' } } });
  t.equal(done.statusCode, 204);
  t.same(enrolled, [], 'not enrolled');
  t.equal(f.registry.get(m.id)!.state, 'Ready');
});

t.test('rescue: the task carries the rescue request\'s keys, else the last deploy request\'s, else none', async (t) => {
  const f = await fixture(t);
  const ctx = { actor: 'test' };
  const m = await machineIn(f, 'Ready');
  const deployKey = 'ssh-ed25519 AAAAC3Nza deploy@lab';
  const rescueKey = 'ssh-ed25519 AAAAC3Nza rescue@lab';
  const task = async () => {
    const token = await f.token({ mac: MAC, machineId: m.id, purpose: 'rescue' });
    return (await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) })).json();
  };
  await f.registry.act(m.id, 'rescue', { ...ctx, set: { rescue: { requestedAt: 'now' } } });
  t.same(await task(), { mode: 'rescue', rescue: { sshKeys: [] } }, 'no keys anywhere');
  await f.registry.amend(m.id, { set: { deployment: { image: 'debian-12', sshKeys: [deployKey] } } }, ctx, { type: 'test' });
  t.same(await task(), { mode: 'rescue', rescue: { sshKeys: [deployKey] } }, 'the deployment\'s keys');
  await f.registry.amend(m.id, { set: { rescue: { sshKeys: [rescueKey] } } }, ctx, { type: 'test' });
  t.same(await task(), { mode: 'rescue', rescue: { sshKeys: [rescueKey] } }, 'the rescue request\'s keys win');
  await f.registry.amend(m.id, { set: { rescue: { sshKeys: [] } } }, ctx, { type: 'test' });
  t.same(await task(), { mode: 'rescue', rescue: { sshKeys: [] } }, 'an explicit empty list means none');
});

t.test('deploy: the task names the image, disk, keys, network and a fresh phone-home URL', async (t) => {
  const f = await fixture(t);
  const m = await machineIn(f, 'Deploying');
  const token = await f.token({ mac: MAC, machineId: m.id, purpose: 'deploy' });
  const res = await f.app.inject({ url: '/boot/agent/v1/task', headers: { ...f.auth(token), host: '10.77.0.1:5240' } });
  t.equal(res.statusCode, 200, res.body);
  const { mode, deploy } = res.json();
  t.equal(mode, 'deploy');
  t.match(deploy, {
    imageUrl: 'http://10.77.0.1:5240/boot/assets/debian-12/rootfs',
    sha256: sha(f.disk), size: f.disk.length, compression: 'gzip', disk: '/dev/vda', hostname: m.hostname,
    sshKeys: ['ssh-ed25519 AAAAC3Nza test@lab'], network: { mac: MAC },
    phoneHomeUrl: /^http:\/\/phone-home:[A-Za-z0-9_-]{43}@10\.77\.0\.1:5240\/boot\/agent\/v1\/phone-home$/,
    instanceId: new RegExp(`^${m.id}-[0-9a-f]{12}$`),
  });
  const phone = new URL(deploy.phoneHomeUrl).password;
  t.match(await verifyBootToken(f.store, phone, f.clock.now), { purpose: 'phone-home', machineId: m.id, mac: MAC }, 'a phone-home token for this machine');
  const image = await f.app.inject({ url: '/boot/assets/debian-12/rootfs' });
  t.equal(sha(image.rawPayload), deploy.sha256, 'the image URL serves those bytes');
  const second = (await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) })).json().deploy;
  t.equal(second.instanceId, deploy.instanceId, 'one instance id per deployment');
  t.not(second.phoneHomeUrl, deploy.phoneHomeUrl, 'a new phone-home token per task');
  t.match(await f.events('boot.agent.task'), [{ subject: m.id, data: { image: 'debian-12', compression: 'gzip', disk: '/dev/vda' } }, {}]);
  t.notMatch(JSON.stringify(await f.events()), phone, 'the phone-home token is in no event');
});

t.test('deploy: no image named and no default, or an image without a disk: IMAGE_INVALID; the setting is the default', async (t) => {
  const f = await fixture(t);
  const m = await machineIn(f, 'Deploying', { deployment: { requestedAt: 'x' } });
  const token = await f.token({ mac: MAC, machineId: m.id, purpose: 'deploy' });
  const none = await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) });
  t.equal(none.statusCode, 400);
  t.match(none.json(), { code: 'IMAGE_INVALID', message: /no deploy image.*deploy\.defaultImage/ });
  await f.store.settings.put('deploy.defaultImage', 'no-disk');
  t.match((await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) })).json(), { code: 'IMAGE_INVALID', message: /"no-disk" has no disk image/ });
  await f.store.settings.put('deploy.defaultImage', 'debian-12');
  t.match((await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) })).json(), { mode: 'deploy', deploy: { disk: 'auto', sshKeys: [] } });
});

t.test('deploy: done ok marks the image written (the script boots the disk), phone-home makes it Deployed, once', async (t) => {
  const f = await fixture(t);
  const m = await machineIn(f, 'Deploying');
  const token = await f.token({ mac: MAC, machineId: m.id, purpose: 'deploy' });
  const phoneUrl = new URL((await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) })).json().deploy.phoneHomeUrl as string);
  // What python-requests (cloud-init) makes of a URL with credentials: Basic authorization, the path alone.
  const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
  const form = { 'content-type': 'application/x-www-form-urlencoded' };
  const phoneHome = (authorization: string | undefined, payload: string) =>
    f.app.inject({ method: 'POST', url: phoneUrl.pathname, headers: { ...form, ...(authorization ? { authorization } : {}) }, payload });
  t.equal((await f.app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: f.auth(token), payload: { mode: 'deploy', ok: true } })).statusCode, 204);
  t.equal((await f.app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: f.auth(token), payload: { mode: 'deploy', ok: true } })).statusCode, 204, 'a repeated report');
  t.equal((await f.events('machine.deploy.written')).length, 1, 'recorded once');
  let now = f.registry.get(m.id)!;
  t.equal(now.state, 'Deploying', 'deploy-done waits for the installed system');
  t.match(now.deployment, { image: 'debian-12', writtenAt: '2026-01-01T00:00:00.000Z' });
  const script = (await f.app.inject('/boot/52-54-00-77-00-20.ipxe')).body;
  t.match(script, /image is written: booting it from local disk\n.*sanboot --no-describe --drive 0x80/s, 'the next network boot goes to the disk');
  t.same((await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) })).json(), { mode: 'none' }, 'and an agent asking again has nothing to do');

  // cloud-init's phone_home: an HTML form.
  const body = new URLSearchParams({ instance_id: 'i-1', hostname: m.hostname, pub_key_ed25519: 'ssh-ed25519 AAAAhostkey root@node', pub_key_rsa: 'N/A' }).toString();
  for (const [why, authorization] of [['no credentials', undefined], ['an unknown token', basic('phone-home', 'A'.repeat(43))], ['no password', `Basic ${Buffer.from('phone-home').toString('base64')}`],
    ['an agent token', basic('phone-home', token)], ['garbage', 'Basic !!!']] as const) {
    const res = await phoneHome(authorization, body);
    t.equal(res.statusCode, 401, why);
    t.equal(res.headers['www-authenticate'], 'Basic realm="metalbox-phone-home"');
  }
  t.equal(f.registry.get(m.id)!.state, 'Deploying');
  const res = await phoneHome(basic(phoneUrl.username, phoneUrl.password), body);
  t.equal(res.statusCode, 200, res.body);
  t.same(res.json(), { machineId: m.id, state: 'Deployed' });
  now = f.registry.get(m.id)!;
  t.equal(now.state, 'Deployed');
  t.match(now.deployment, { image: 'debian-12', writtenAt: String, phonedHomeAt: '2026-01-01T00:00:00.000Z', instanceId: 'i-1', hostKeys: { ed25519: 'ssh-ed25519 AAAAhostkey root@node' } });
  t.notOk((now.deployment as { hostKeys: Record<string, string> }).hostKeys.rsa, '"N/A" is no key');
  t.match(await f.events('machine.state'), [{}, {}, {}, { actor: 'phone-home', data: { from: 'Deploying', to: 'Deployed', action: 'deploy-done' } }]);
  t.match(await f.events('boot.agent.phone-home'), [{ subject: m.id, data: { hostname: m.hostname, instanceId: 'i-1', hostKeys: ['ed25519'] } }]);
  const twice = await phoneHome(basic(phoneUrl.username, phoneUrl.password), body);
  t.equal(twice.statusCode, 401, 'the phone-home token is good once');
  t.notMatch(JSON.stringify(await f.events()) + f.logs.join(''), phoneUrl.password, 'the token is in no event and no log line');
});

t.test('phone-home of a machine no longer deploying is refused and changes nothing', async (t) => {
  const f = await fixture(t);
  const m = await machineIn(f, 'Deploying');
  const phone = await f.token({ mac: MAC, machineId: m.id, purpose: 'phone-home' });
  await f.registry.act(m.id, 'abort', { actor: 'op' });
  // JSON and a Bearer token work too (other clients than cloud-init).
  const res = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/phone-home', headers: f.auth(phone), payload: { instance_id: 'x' } });
  t.equal(res.statusCode, 409);
  t.equal(f.registry.get(m.id)!.state, 'Allocated');
  await new Promise((r) => setTimeout(r, 20)); // refusals are recorded after the answer
  t.match(await f.events('boot.http'), [{ data: { path: '/boot/agent/v1/phone-home', status: 409 } }], 'the refusal is on the timeline');
  t.notMatch(JSON.stringify(await f.events()) + f.logs.join(''), phone, 'without the token (still valid) in any event or log line');
});

t.test('failures: done ok:false moves the phase to its failed state with the reason', async (t) => {
  for (const [state, purpose, failed] of [['Commissioning', 'commission', 'FailedCommissioning'], ['Deploying', 'deploy', 'FailedDeployment'], ['Releasing', 'release', 'FailedReleasing']] as const) {
    const f = await fixture(t);
    const m = await machineIn(f, state);
    const token = await f.token({ mac: MAC, machineId: m.id, purpose });
    const res = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: f.auth(token), payload: { mode: purpose, ok: false, error: { code: 'AGENT_DISK_NOT_FOUND', message: 'no disk matches /dev/vda' } } });
    t.equal(res.statusCode, 204, `${state}: ${res.body}`);
    const after = f.registry.get(m.id)!;
    t.equal(after.state, failed, state);
    t.equal(after.stateReason, 'AGENT_DISK_NOT_FOUND: no disk matches /dev/vda');
    t.match(await f.events('boot.agent.done'), [{ data: { ok: false, error: { code: 'AGENT_DISK_NOT_FOUND' } } }]);
  }
});

t.test('a report from a boot of an earlier phase does not end the current one', async (t) => {
  const f = await fixture(t);
  const m = await machineIn(f, 'Commissioning');
  const old = await f.token({ mac: MAC, machineId: m.id, purpose: 'commission' });
  await f.registry.act(m.id, 'abort', { actor: 'op' });
  await f.registry.act(m.id, 'commission', { actor: 'op' });
  await f.registry.act(m.id, 'commission-done', { actor: 'op' });
  await f.registry.act(m.id, 'deploy', { actor: 'op', set: { deployment: { image: 'debian-12' } } });
  const res = await f.app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: f.auth(old), payload: { mode: 'commission', ok: false, error: { code: 'X', message: 'late' } } });
  t.equal(res.statusCode, 409);
  t.match(res.json().message, /Deploying; this boot was for commission/);
  t.equal(f.registry.get(m.id)!.state, 'Deploying', 'the deployment goes on');
});

t.test('release: the task carries the erase mode given at release; done ok makes the machine Ready', async (t) => {
  const f = await fixture(t);
  const m = await machineIn(f, 'Releasing');
  const token = await f.token({ mac: MAC, machineId: m.id, purpose: 'release' });
  t.same((await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) })).json(), { mode: 'release', release: { erase: 'full' } });
  await f.registry.amend(m.id, { set: { release: undefined } }, { actor: 't' }, { type: 'test' });
  t.same((await f.app.inject({ url: '/boot/agent/v1/task', headers: f.auth(token) })).json(), { mode: 'release', release: { erase: 'quick' } }, 'quick by default');
  t.equal((await f.app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: f.auth(token), payload: { mode: 'release', ok: true } })).statusCode, 204);
  t.equal(f.registry.get(m.id)!.state, 'Ready');
  t.equal((await f.app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: f.auth(token), payload: { mode: 'release', ok: true } })).statusCode, 204, 'a repeated report');
});

t.test('progress: a boot timeline event, at most one per second per machine; bad bodies are 400', async (t) => {
  const f = await fixture(t);
  const m = await machineIn(f, 'Deploying');
  const token = await f.token({ mac: MAC, machineId: m.id, purpose: 'deploy' });
  const post = (payload: unknown) => f.app.inject({ method: 'POST', url: '/boot/agent/v1/progress', headers: f.auth(token), payload: payload as object });
  t.equal((await post({ phase: 'image', done: 1, total: 10, message: 'writing /dev/vda' })).statusCode, 204);
  f.clock.now += 300;
  t.equal((await post({ phase: 'image', done: 2, total: 10 })).statusCode, 204, 'accepted');
  t.equal((await post({ phase: 'image', done: 3, total: 10 })).statusCode, 204);
  f.clock.now += 800;
  t.equal((await post({ phase: 'image', done: 9, total: 10 })).statusCode, 204);
  const ev = await f.events('boot.agent.progress');
  t.equal(ev.length, 2, 'two kept, two dropped');
  t.match(ev, [
    { subject: m.id, actor: 'agent', data: { purpose: 'deploy', phase: 'image', done: 1, total: 10, message: 'writing /dev/vda' } },
    { data: { done: 9, droppedBefore: 2 } },
  ]);
  for (const bad of [{}, { phase: '' }, { phase: 'x'.repeat(65) }, { phase: 'x', done: -1 }, { phase: 'x', message: 'y'.repeat(501) }]) {
    f.clock.now += 2000;
    t.equal((await post(bad)).statusCode, 400, JSON.stringify(bad).slice(0, 40));
  }
});

t.test('the agent binary: served with its sha-256 as ETag, HEAD, 304; a missing one is 404 saying how to build it', async (t) => {
  const f = await fixture(t);
  const res = await f.app.inject('/boot/agent/metalbox');
  t.equal(res.statusCode, 200);
  t.ok(res.rawPayload.equals(f.binary), 'the bytes');
  t.equal(res.headers.etag, `"${sha(f.binary)}"`);
  t.equal(res.headers['content-type'], 'application/octet-stream');
  t.equal((await f.app.inject({ method: 'HEAD', url: '/boot/agent/metalbox' })).headers['content-length'], String(f.binary.length));
  t.equal((await f.app.inject({ url: '/boot/agent/metalbox', headers: { 'if-none-match': `"${sha(f.binary)}"` } })).statusCode, 304);
  t.equal((await f.app.inject({ url: '/boot/agent/metalbox', headers: { range: 'bytes=0-3' } })).body, '\x7fELF');

  const g = await fixture(t, { binaryPath: '/nonexistent/metalbox' });
  const missing = await g.app.inject('/boot/agent/metalbox');
  t.equal(missing.statusCode, 404);
  t.match(missing.json().message, /npm run build:binary/);
});

t.test('compression is read from the image\'s first bytes', async (t) => {
  t.equal(sniffCompression(gzipSync(Buffer.from('x'))), 'gzip');
  t.equal(sniffCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0])), 'zstd');
  t.equal(sniffCompression(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])), 'xz');
  t.equal(sniffCompression(Buffer.from([0xeb, 0x63, 0x90])), 'none', 'an MBR');
  t.equal(sniffCompression(Buffer.alloc(0)), 'none');
});
