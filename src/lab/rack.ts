// `metalbox lab up` / `lab down`: a virtual rack on this host, for trying metalbox and for the end-to-end test.
// One network namespace holds all of it, so that nothing touches the host's networks:
//
//   ns <name>:  br0  10.<net>.0.1/24     the provisioning network: metalbox's DHCP/TFTP/HTTP, one tap per machine
//               bmc0 10.<net+1>.0.1/24   a link (veth) with the BMCs' addresses (.10, .11, ...): ipmi_sim per machine
//               metalbox serve           HTTPS (console + API) on 10.<net>.0.1:5443
//   host:       127.0.0.1:<port>  ->  <dir>/console.sock  ->  10.<net>.0.1:5443 (two socat relays)
//
// Each machine is a QEMU VM behind its own ipmi_sim BMC (src/lab/chassis.ts): it does not run until metalbox powers
// it on through its BMC. `up` registers every machine by its BMC alone (POST /api/v1/machines {bmc}), so metalbox
// powers it on, it PXE-boots and enlists; the operator (or the test) takes it on from there: commission, deploy,
// release. Everything the lab made is listed in <dir>/lab.json, which `down` reads: it stops the VMs, the BMCs,
// metalbox and the relays, and deletes the namespace (with `purge`, the directory too).
//
// Needs root, iproute2, qemu-system-x86 + ipxe-qemu, openipmi (ipmi_sim), socat; python3 for the router
// advertisement that saves iPXE a 13 s IPv6 wait per boot (optional).
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MetalboxError } from '../lib/errors.ts';
import { apiRequest, fetchCertificate, type ApiAnswer, type Target } from '../cli/api-client.ts';
import { callControl } from '../services/control.ts';
import { CHASSIS_SCRIPT, EMULATION, lanConf, vmConf } from './chassis.ts';

export interface LabImages {
  /** The ephemeral environment built with the agent (image/ephemeral/build.sh --agent). */
  ephemeral: { kernel: string; initrd: string };
  /** A deployable disk image (image/deploy-test), registered as `name` and made the default deploy image. */
  deploy?: { name: string; kernel: string; initrd: string; image: string };
}

export interface LabOptions {
  /** Where the lab keeps everything (state dir, disks, logs, lab.json). */
  dir: string;
  /** Namespace name (also the VMs' name prefix): [a-z0-9-], at most 12 characters. */
  name: string;
  machines: number;
  memoryMiB: number;
  diskGiB: number;
  /** Second octet of the provisioning network 10.<net>.0.0/24 (the BMC network is <net + 1>). */
  net: number;
  /** Host loopback port of the console and API relay. */
  port: number;
  images: LabImages;
  /** How to run metalbox itself (this program): argv without the command. */
  metalbox: string[];
  /** Run the VMs with KVM (default: TCG, software emulation, which works everywhere QEMU does). */
  kvm?: boolean;
  /** Register the machines by their BMCs (default true); false leaves that to the operator. */
  register?: boolean;
  /** Progress lines. */
  log?: (line: string) => void;
}

export interface LabMachine {
  index: number;
  name: string;
  mac: string;
  uuid: string;
  memoryMiB: number;
  diskBytes: number;
  dir: string;
  disk: string;
  serialLog: string;
  bmc: { address: string; username: string; password: string };
  /** The metalbox machine id it was registered as. */
  machineId?: string;
}

/** What `up` made and `down` removes (lab.json). */
export interface LabState {
  name: string;
  ns: string;
  dir: string;
  createdAt: string;
  /** The console and API, from this host. */
  url: string;
  fingerprint: string;
  admin: { username: string; passwordFile: string };
  /** An API token of the admin (file, 0600). */
  tokenFile: string;
  server: string;
  provisioning: string;
  bmcNetwork: string;
  config: string;
  stateDir: string;
  machines: LabMachine[];
  pids: Record<string, number>;
}

const NAME = /^[a-z][a-z0-9-]{0,11}$/;
const STATE_FILE = 'lab.json';

/** Tools the lab runs, with the Debian package that has each. */
const TOOLS: [string, string][] = [['ip', 'iproute2'], ['qemu-system-x86_64', 'qemu-system-x86'], ['ipmi_sim', 'openipmi'], ['socat', 'socat']];

function have(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

function sh(cmd: string, args: string[], opts: { allowFail?: boolean } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0 && !opts.allowFail) {
    throw new MetalboxError('LAB_FAILED', `${cmd} ${args.join(' ')}: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`);
  }
  return r.stdout ?? '';
}

/** Can this host run a lab? Names what is missing. */
export function labPreflight(): string[] {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('the lab needs root (network namespaces, tap devices)');
  for (const [tool, pkg] of TOOLS) if (!have(tool)) problems.push(`${tool} is missing (apt-get install ${pkg})`);
  if (!existsSync('/usr/share/qemu/efi-virtio.rom') && !existsSync('/usr/lib/ipxe/qemu/efi-virtio.rom')) problems.push('QEMU\'s iPXE NIC ROMs are missing (apt-get install ipxe-qemu)');
  return problems;
}

export function readLabState(dir: string): LabState | undefined {
  const file = join(dir, STATE_FILE);
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as LabState;
}

function nsExists(ns: string): boolean {
  return sh('ip', ['netns', 'list'], { allowFail: true }).split('\n').some((l) => l.split(' ')[0] === ns);
}

/** Starts a long-lived process detached from us (it outlives `lab up`), output appended to `log`; returns its pid. */
function daemon(argv: string[], log: string, env: NodeJS.ProcessEnv = process.env): number {
  const fd = openSync(log, 'a');
  try {
    const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', fd, fd], env });
    child.unref();
    if (child.pid === undefined) throw new MetalboxError('LAB_FAILED', `could not start ${argv[0]}`);
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

const alive = (pid: number | undefined): boolean => {
  if (!pid) return false;
  try { process.kill(pid, 0); return true; } catch { return false; }
};

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new MetalboxError('LAB_FAILED', `${what}: not within ${Math.round(timeoutMs / 1000)} s`);
    await sleep(200);
  }
}

// QUIRK(firmware): iPXE (Debian's 2019 build) waits about 13 s for an IPv6 router advertisement before it uses
// its IPv4 lease. One RA a second (RFC 4861 §4.2: router lifetime 0, so nobody routes through us) ends that wait.
export const RA_SENDER = `
import socket, struct, sys, time
idx = socket.if_nametoindex(sys.argv[1])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
ra = struct.pack('!BBHBBHII', 134, 0, 0, 64, 0, 0, 0, 0)
while True:
    try:
        s.sendto(ra, ('ff02::1', 0, 0, idx))
    except OSError:
        pass
    time.sleep(1)
`;

/** A Lab handle: the state plus an API client with the admin's token. */
export class Lab {
  constructor(readonly state: LabState) {}

  get target(): Target {
    return { url: this.state.url, fingerprint: this.state.fingerprint, token: readFileSync(this.state.tokenFile, 'utf8').trim(), source: 'lab' };
  }

  /** One API call; a non-2xx answer throws with the API's error. */
  async api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const r: ApiAnswer = await apiRequest(this.target, method, path, body === undefined ? {} : { body });
    if (r.status >= 300) {
      const e = r.body as { code?: string; message?: string };
      throw new MetalboxError('LAB_FAILED', `${method} ${path}: ${r.status} ${e?.code ?? ''} ${e?.message ?? JSON.stringify(r.body)}`, { details: { status: r.status, code: e?.code } });
    }
    return r.body as T;
  }

  /** Runs a command inside the lab's namespace. */
  exec(cmd: string, args: string[], opts: { allowFail?: boolean } = {}): string {
    return sh('ip', ['netns', 'exec', this.state.ns, cmd, ...args], opts);
  }

  /** Whether a machine's VM is running (its QEMU pid file names a live process). */
  running(m: LabMachine): boolean {
    const f = join(m.dir, 'qemu.pid');
    return existsSync(f) && alive(Number(readFileSync(f, 'utf8').trim()));
  }

  /** What the machine's BMC was asked to do, in order ("power 1", "boot pxe", ...). */
  bmcEvents(m: LabMachine): string[] {
    const f = join(m.dir, 'events');
    return existsSync(f) ? readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => l.replace(/^\d+ /, '')) : [];
  }

  serial(m: LabMachine): string {
    return existsSync(m.serialLog) ? readFileSync(m.serialLog, 'utf8').replace(/\r/g, '') : '';
  }
}

/** Builds the rack, starts metalbox for it and registers the machines. On failure everything made is removed. */
export async function labUp(o: LabOptions): Promise<Lab> {
  const log = o.log ?? (() => undefined);
  if (!NAME.test(o.name)) throw new MetalboxError('CLI_USAGE', `lab name ${JSON.stringify(o.name)}: want [a-z][a-z0-9-], at most 12 characters`);
  if (!Number.isInteger(o.machines) || o.machines < 1 || o.machines > 32) throw new MetalboxError('CLI_USAGE', '--machines must be 1-32');
  if (!Number.isInteger(o.net) || o.net < 1 || o.net > 253) throw new MetalboxError('CLI_USAGE', '--net must be 1-253');
  if (o.memoryMiB < 512) throw new MetalboxError('CLI_USAGE', '--memory must be at least 512 (MiB): the agent runs from RAM');
  if (o.diskGiB < 1 || o.diskGiB > 1024) throw new MetalboxError('CLI_USAGE', '--disk must be 1-1024 (GiB)');
  const problems = labPreflight();
  if (problems.length > 0) throw new MetalboxError('LAB_UNAVAILABLE', `cannot build the lab here: ${problems.join('; ')}`);
  const dir = resolve(o.dir);
  const ns = o.name;
  const old = readLabState(dir);
  if (old || nsExists(ns)) throw new MetalboxError('LAB_EXISTS', `a lab ${ns} already exists (${old ? join(dir, STATE_FILE) : `namespace ${ns}`}): metalbox lab down first`);
  for (const f of [o.images.ephemeral.kernel, o.images.ephemeral.initrd, ...(o.images.deploy ? [o.images.deploy.image, o.images.deploy.kernel, o.images.deploy.initrd] : [])]) {
    if (!existsSync(f)) throw new MetalboxError('LAB_FAILED', `image file ${f} does not exist`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Every lab starts fresh: what a previous one left (kept by `down` for reading) goes now.
  for (const entry of readdirSync(dir)) {
    if (/^(state|m\d+|.*\.log|metalbox\.yaml|chassis\.sh|node\.emu|admin-password|api-token|console\.sock)$/.test(entry)) rmSync(join(dir, entry), { recursive: true, force: true });
  }

  const server = `10.${o.net}.0.1`;
  const bmcNet = `10.${o.net + 1}.0`;
  const state: LabState = {
    name: o.name, ns, dir, createdAt: new Date().toISOString(),
    url: `https://127.0.0.1:${o.port}`, fingerprint: '',
    admin: { username: 'admin', passwordFile: join(dir, 'admin-password') }, tokenFile: join(dir, 'api-token'),
    server, provisioning: `10.${o.net}.0.0/24`, bmcNetwork: `${bmcNet}.0/24`,
    config: join(dir, 'metalbox.yaml'), stateDir: join(dir, 'state'), machines: [], pids: {},
  };
  const save = () => writeFileSync(join(dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  const inNs = (cmd: string, ...args: string[]) => sh('ip', ['-n', ns, cmd, ...args]);
  try {
    // The namespace and its two networks.
    sh('ip', ['netns', 'add', ns]);
    save();
    inNs('link', 'set', 'lo', 'up');
    inNs('link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
    inNs('addr', 'add', `${server}/24`, 'dev', 'br0');
    inNs('link', 'set', 'br0', 'up');
    // A veth pair rather than a dummy link: not every kernel has the dummy driver (this one's CI has not).
    inNs('link', 'add', 'bmc0', 'type', 'veth', 'peer', 'name', 'bmc1');
    inNs('addr', 'add', `${bmcNet}.1/24`, 'dev', 'bmc0');
    inNs('link', 'set', 'bmc0', 'up');
    inNs('link', 'set', 'bmc1', 'up');

    // The machines: a tap on the bridge, a sparse disk, a BMC.
    const script = join(dir, 'chassis.sh');
    writeFileSync(script, CHASSIS_SCRIPT, { mode: 0o755 });
    writeFileSync(join(dir, 'node.emu'), EMULATION);
    const kvm = o.kvm === true;
    if (kvm && !existsSync('/dev/kvm')) throw new MetalboxError('LAB_UNAVAILABLE', '--kvm: this host has no /dev/kvm');
    for (let i = 0; i < o.machines; i++) {
      const name = `${ns}-m${i}`;
      const mdir = join(dir, `m${i}`);
      mkdirSync(join(mdir, 'sim'), { recursive: true });
      const tap = `tap${i}`;
      inNs('tuntap', 'add', 'dev', tap, 'mode', 'tap');
      inNs('link', 'set', tap, 'master', 'br0');
      inNs('link', 'set', tap, 'up');
      const m: LabMachine = {
        index: i, name,
        mac: `52:54:00:${(o.net & 0xff).toString(16).padStart(2, '0')}:4d:${i.toString(16).padStart(2, '0')}`,
        uuid: randomUUID(), memoryMiB: o.memoryMiB, diskBytes: o.diskGiB * 1024 ** 3,
        dir: mdir, disk: join(mdir, 'disk.raw'), serialLog: join(mdir, 'serial.log'),
        bmc: { address: `${bmcNet}.${10 + i}`, username: 'metalbox', password: randomBytes(9).toString('base64url') },
      };
      writeFileSync(m.disk, '');
      sh('truncate', ['-s', String(m.diskBytes), m.disk]);
      writeFileSync(join(mdir, 'boot'), 'default\n');
      writeFileSync(join(mdir, 'events'), '');
      writeFileSync(join(mdir, 'vm.conf'), vmConf({ name, memoryMiB: o.memoryMiB, uuid: m.uuid, mac: m.mac, tap, disk: m.disk, serialLog: m.serialLog, qmp: join(mdir, 'qmp.sock'), kvm }));
      inNs('addr', 'add', `${m.bmc.address}/24`, 'dev', 'bmc0');
      const conf = join(mdir, 'lan.conf');
      writeFileSync(conf, lanConf({ name, address: m.bmc.address, uuid: m.uuid, chassisControl: `${script} ${mdir}`, username: m.bmc.username, password: m.bmc.password }), { mode: 0o600 });
      state.pids[`bmc${i}`] = daemon(['ip', 'netns', 'exec', ns, 'ipmi_sim', '-c', conf, '-f', join(dir, 'node.emu'), '-s', join(mdir, 'sim'), '-n'], join(mdir, 'ipmi_sim.log'));
      state.machines.push(m);
      save();
    }
    log(`${o.machines} machine(s) behind ipmi_sim BMCs on ${state.bmcNetwork} (${kvm ? 'KVM' : 'TCG: software emulation, slow'})`);
    if (have('python3')) state.pids.ra = daemon(['ip', 'netns', 'exec', ns, 'python3', '-c', RA_SENDER, 'br0'], join(dir, 'ra.log'));

    // metalbox for the rack: its images, then serve in the namespace.
    writeFileSync(state.config, [
      `stateDir: ${state.stateDir}`,
      `http: { listen: "${server}:5240" }`,
      `https: { listen: "${server}:5443" }`,
      'interfaces: [br0]',
      'subnets:',
      `  - cidr: ${state.provisioning}`,
      `    gateway: ${server}`,
      `    dynamicRanges: ["10.${o.net}.0.100-10.${o.net}.0.199"]`,
      'boot: { ephemeralImage: ephemeral }',
      'dns: { enabled: true }',
      'ntp: { enabled: false }',
      'bmc: { pollSeconds: 10 }',
      '',
    ].join('\n'));
    const cli = (args: string[]): void => {
      const r = spawnSync(o.metalbox[0]!, [...o.metalbox.slice(1), ...args, '--config', state.config], { encoding: 'utf8' });
      if (r.status !== 0) throw new MetalboxError('LAB_FAILED', `metalbox ${args.slice(0, 3).join(' ')}: ${(r.stderr || r.stdout).trim()}`);
    };
    log('registering the ephemeral environment');
    cli(['images', 'add', 'ephemeral', '--kernel', o.images.ephemeral.kernel, '--initrd', o.images.ephemeral.initrd]);
    if (o.images.deploy) {
      const d = o.images.deploy;
      log(`registering the deploy image ${d.name}`);
      cli(['images', 'add', d.name, '--kernel', d.kernel, '--initrd', d.initrd, '--rootfs', d.image]);
      cli(['settings', 'set', 'deploy.defaultImage', d.name]);
    }
    const serveLog = join(dir, 'metalbox.log');
    state.pids.metalbox = daemon(['ip', 'netns', 'exec', ns, ...o.metalbox, 'serve', '--config', state.config], serveLog, { ...process.env, NOTIFY_SOCKET: '' });
    save();
    await waitFor('metalbox ready', 120_000, () => {
      if (!alive(state.pids.metalbox)) throw new MetalboxError('LAB_FAILED', `metalbox exited: ${readFileSync(serveLog, 'utf8').split('\n').slice(-5).join('\n')}`);
      return existsSync(serveLog) && readFileSync(serveLog, 'utf8').includes('"msg":"metalbox ready"') ? true : undefined;
    });

    // The console from the host: loopback port -> unix socket -> the namespace.
    const sock = join(dir, 'console.sock');
    rmSync(sock, { force: true });
    state.pids.relayIn = daemon(['ip', 'netns', 'exec', ns, 'socat', `UNIX-LISTEN:${sock},fork,mode=600`, `TCP:${server}:5443`], join(dir, 'relay.log'));
    await waitFor('the console relay', 10_000, () => (existsSync(sock) ? true : undefined));
    state.pids.relayOut = daemon(['socat', `TCP-LISTEN:${o.port},bind=127.0.0.1,reuseaddr,fork`, `UNIX-CONNECT:${sock}`], join(dir, 'relay.log'));
    save();
    const cert = await waitFor('the console on 127.0.0.1', 10_000, () => fetchCertificate(state.url, 2_000).catch(() => undefined));
    state.fingerprint = cert.fingerprint;

    // The first admin (through metalbox's control socket), and an API token for the lab's own calls.
    const password = randomBytes(12).toString('base64url');
    writeFileSync(state.admin.passwordFile, `${password}\n`, { mode: 0o600 });
    await callControl(join(state.stateDir, 'control.sock'), { op: 'users.create', username: state.admin.username, role: 'admin', password, actor: 'lab' });
    const target: Target = { url: state.url, fingerprint: state.fingerprint, source: 'lab' };
    const session = await apiRequest(target, 'POST', '/api/v1/login', { body: { username: state.admin.username, password }, noToken: true });
    if (session.status !== 200) throw new MetalboxError('LAB_FAILED', `login as ${state.admin.username}: ${session.status} ${JSON.stringify(session.body)}`);
    const cookie = String(session.headers['set-cookie']?.[0] ?? '').split(';')[0]!;
    const csrf = (session.body as { csrfToken?: string }).csrfToken ?? '';
    const made = await apiRequest(target, 'POST', '/api/v1/tokens', { noToken: true, headers: { cookie, 'x-csrf-token': csrf }, body: { name: `lab-${ns}` } });
    if (made.status >= 300) throw new MetalboxError('LAB_FAILED', `making an API token: ${made.status} ${JSON.stringify(made.body)}`);
    writeFileSync(state.tokenFile, `${(made.body as { token: string }).token}\n`, { mode: 0o600 });
    save();

    const lab = new Lab(state);
    if (o.register !== false) {
      for (const m of state.machines) {
        const created = await lab.api<{ id: string }>('POST', '/api/v1/machines', { bmc: { driver: 'ipmi', address: m.bmc.address, username: m.bmc.username, password: m.bmc.password } });
        m.machineId = created.id;
        log(`${m.name}: registered by its BMC ${m.bmc.address} as machine ${created.id}; metalbox powers it on to enlist`);
      }
      save();
    }
    for (const f of [state.config, join(dir, STATE_FILE)]) chmodSync(f, 0o600);
    return lab;
  } catch (err) {
    await labDown(dir, { purge: false }).catch(() => undefined);
    throw err;
  }
}

/** Stops everything a lab made and deletes its namespace; `purge` removes its directory too. Idempotent. */
export async function labDown(dirArg: string, opts: { purge?: boolean; name?: string } = {}): Promise<{ stopped: string[] }> {
  const dir = resolve(dirArg);
  const state = readLabState(dir);
  const ns = state?.ns ?? opts.name;
  if (!state && !ns) throw new MetalboxError('LAB_NOT_FOUND', `no lab in ${dir} (no ${STATE_FILE})`);
  const stopped: string[] = [];
  // metalbox first, gracefully: it writes its store and stops its services.
  const mbx = state?.pids.metalbox;
  if (alive(mbx)) {
    process.kill(mbx!, 'SIGTERM');
    for (let i = 0; i < 100 && alive(mbx); i++) await sleep(100);
    if (alive(mbx)) process.kill(mbx!, 'SIGKILL');
    stopped.push('metalbox');
  }
  for (const m of state?.machines ?? []) {
    const f = join(m.dir, 'qemu.pid');
    const pid = existsSync(f) ? Number(readFileSync(f, 'utf8').trim()) : undefined;
    if (alive(pid)) { process.kill(pid!, 'SIGKILL'); stopped.push(m.name); }
    rmSync(f, { force: true });
  }
  for (const [what, pid] of Object.entries(state?.pids ?? {})) {
    if (what !== 'metalbox' && alive(pid)) { try { process.kill(pid, 'SIGKILL'); stopped.push(what); } catch { /* gone */ } }
  }
  if (ns && nsExists(ns)) {
    for (const pid of sh('ip', ['netns', 'pids', ns], { allowFail: true }).split(/\s+/).filter(Boolean)) {
      try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
    }
    sh('ip', ['netns', 'del', ns], { allowFail: true });
    stopped.push(`namespace ${ns}`);
  }
  if (opts.purge) rmSync(dir, { recursive: true, force: true });
  else rmSync(join(dir, STATE_FILE), { force: true });
  return { stopped };
}
