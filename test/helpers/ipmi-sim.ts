// A rack of simulated BMCs: N OpenIPMI ipmi_sim processes (LAB.md "A real BMC") in one network namespace,
// each on its own address, with its own state directory and a chassis_control script that keeps the
// chassis state in files, so that what a client did (power on/off/cycle/reset/soft-off, boot device,
// identify) can be read back. Clients run in a second namespace joined to the first by a veth pair:
//
//   ns <prefix>-cli  c0 10.N.0.1/24 ----veth---- b0 10.N.0.10, .11, ... /24  ns <prefix>-bmc (ipmi_sim x N)
//
// Reused by the IPMI driver tests, the 50-BMC benchmark and the QEMU power tests (which pass their own
// chassis script or extra lan.conf lines). stop() kills every process and removes the namespaces and the
// files, also after a failure; registering it with the test's teardown is the caller's job.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Lab, sh } from './netns.ts';
import { ROOT } from './process.ts';

const execFileAsync = promisify(execFile);

/**
 * The accounts every simulated BMC has. The passwords are distinctive on purpose: a test can then search
 * errors and logs for them without tripping over the word "password".
 * QUIRK(ipmi_sim): it does not hold an RMCP+ session to the user's maximum privilege (a "user" account
 * gets an administrator session); only the session's privilege level is enforced.
 */
export const SIM_USERS = {
  admin: { name: 'admin', password: 'mbx-admin-pw', privilege: 'admin' },
  operator: { name: 'oper', password: 'mbx-oper-pw', privilege: 'operator' },
  user: { name: 'viewer', password: 'mbx-view-pw', privilege: 'user' },
} as const;

/** The chassis state a BMC's script keeps: what ipmi_sim was told to do. */
export interface ChassisState {
  power: 0 | 1;
  /** ipmi_sim's word for the boot device: none, pxe, default (disk), cdrom, bios. */
  boot: string;
  /** "INTERVAL FORCE" of the last Chassis Identify, if any. */
  identify?: string;
  /** Every set, in order: "power 1", "reset 1", "shutdown 1", "boot pxe", "identify 10 0". */
  events: string[];
}

export interface SimBmc {
  index: number;
  name: string;
  address: string;
  port: number;
  /** ipmi_sim's -s directory. */
  simDir: string;
  /** The chassis script's files (power, boot, identify, events). */
  chassisDir: string;
  /** GUID as configured (32 hex digits, the bytes Get System GUID returns: least significant byte first). */
  guid: string;
  /** The same GUID as a UUID string (what Get System GUID means, §22.14, and what ipmitool prints). */
  uuid: string;
  state(): ChassisState;
  setPower(on: boolean): void;
  /** Kills and restarts ipmi_sim: every session is gone, the chassis state stays. */
  restart(): Promise<void>;
  /** The running ipmi_sim's pid. */
  pid(): number | undefined;
}

export interface IpmiSimLabOptions {
  count: number;
  /** Namespace name tag (short: interface names are 15 bytes). */
  tag?: string;
  /** The second octet of 10.N.0.0/24. */
  subnet?: number;
  /**
   * The chassis_control command for a BMC (ipmi_sim appends "get ..." / "set ..."); default the recording
   * script of this file with the BMC's chassis directory. false: none (ipmi_sim then answers Get Chassis
   * Status itself, without forking a script per poll, and refuses power control; for benchmarks).
   */
  chassisControl?: ((bmc: { index: number; chassisDir: string }) => string) | false;
  /** More lan.conf lines for each BMC (startcmd, serial, sol, ...). */
  extraConfig?: (bmc: { index: number; address: string; chassisDir: string }) => string[];
}

export interface IpmiSimLab {
  bmcNs: string;
  clientNs: string;
  clientAddress: string;
  /** An address on the BMC subnet where nothing answers. */
  unusedAddress: string;
  bmcs: SimBmc[];
  dir: string;
  /** ipmitool -I lanplus -C 3 (admin) against a BMC, from the client namespace. */
  ipmitool(bmc: SimBmc, args: string[], opts?: { user?: keyof typeof SIM_USERS; password?: string; cipherSuite?: number }): Promise<{ stdout: string; stderr: string; code: number }>;
  stop(): void;
}

/** Records every "set" and answers "get power" / "get boot" from files (see ipmi_sim's chassis_control). */
const CHASSIS_SCRIPT = `#!/bin/sh
# chassis_control for ipmi_sim: $0 DIR get|set PARM [VALUE] ...  (values arrive as one word each)
dir=$1; shift
op=$1; shift
case $op in
get)
  for p in "$@"; do
    case $p in
      power) echo "power:$(cat "$dir/power")" ;;
      boot) echo "boot:$(cat "$dir/boot")" ;;
      *) echo "unknown parameter $p"; exit 1 ;;
    esac
  done ;;
set)
  while [ $# -ge 2 ]; do
    p=$1; v=$2; shift 2
    echo "$p $v" >> "$dir/events"
    case $p in
      power) echo "$v" > "$dir/power" ;;
      shutdown) echo 0 > "$dir/power" ;;
      boot) echo "$v" > "$dir/boot" ;;
      identify) echo "$v" > "$dir/identify" ;;
      reset) ;;
      *) echo "unknown parameter $p"; exit 1 ;;
    esac
  done ;;
*) exit 1 ;;
esac
exit 0
`;

const EMU = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
`;

function lanConf(b: { name: string; address: string; guid: string; chassisControl: string | undefined; extra: string[] }): string {
  const auths = 'none md2 md5 straight';
  return [
    `name "${b.name}"`,
    'set_working_mc 0x20',
    '  startlan 1',
    `    addr ${b.address} 623`,
    '    priv_limit admin',
    ...['callback', 'user', 'operator', 'admin'].map((p) => `    allowed_auths_${p} ${auths}`),
    `    guid ${b.guid}`,
    '  endlan',
    ...(b.chassisControl === undefined ? [] : [`  chassis_control "${b.chassisControl}"`]),
    ...Object.values(SIM_USERS).map((u, i) => `  user ${i + 2} true "${u.name}" "${u.password}" ${u.privilege} 10 ${auths}`),
    ...b.extra,
    '',
  ].join('\n');
}

/** Whether ipmi_sim and ipmitool are installed (packages openipmi, ipmitool). */
export function haveIpmiTools(): { ok: true } | { ok: false; why: string } {
  for (const tool of ['ipmi_sim', 'ipmitool']) {
    if (sh('sh', ['-c', `command -v ${tool} || true`]).trim() === '') return { ok: false, why: `${tool} is not installed (packages openipmi, ipmitool)` };
  }
  return { ok: true };
}

/** Starts `count` simulated BMCs and waits until each listens on its UDP port 623. */
export async function startIpmiSims(options: IpmiSimLabOptions): Promise<IpmiSimLab> {
  const lab = new Lab(options.tag ?? 'mbxipmi');
  const dir = mkdtempSync(join(tmpdir(), 'mbx-ipmi-sim-'));
  const net = `10.${options.subnet ?? 93}.0`;
  const children = new Map<number, ChildProcess>();
  let stopped = false;
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    for (const c of children.values()) if (c.exitCode === null) c.kill('SIGKILL');
    lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (options.count < 1 || options.count > 200) throw new RangeError('count must be 1-200');
    const bmcNs = lab.ns('bmc');
    const clientNs = lab.ns('cli');
    lab.link({ ns: clientNs, ifname: 'c0', cidr: `${net}.1/24` }, { ns: bmcNs, ifname: 'b0' });
    const script = join(dir, 'chassis.sh');
    writeFileSync(script, CHASSIS_SCRIPT);
    chmodSync(script, 0o755);
    writeFileSync(join(dir, 'node.emu'), EMU);

    const bmcs: SimBmc[] = [];
    for (let i = 0; i < options.count; i++) {
      const address = `${net}.${10 + i}`;
      sh('ip', ['-n', bmcNs, 'addr', 'add', `${address}/24`, 'dev', 'b0']);
      const name = `node${i}`;
      const base = join(dir, name);
      const simDir = join(base, 'sim');
      const chassisDir = join(base, 'chassis');
      mkdirSync(simDir, { recursive: true });
      mkdirSync(chassisDir, { recursive: true });
      writeFileSync(join(chassisDir, 'power'), '0\n');
      writeFileSync(join(chassisDir, 'boot'), 'default\n');
      writeFileSync(join(chassisDir, 'events'), '');
      // A version-4 UUID per BMC, sent least significant byte first (§22.14).
      const uuid = `8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d${i.toString(16).padStart(4, '0')}`;
      const guid = Buffer.from(uuid.replace(/-/g, ''), 'hex').reverse().toString('hex');
      const chassisControl = options.chassisControl === false ? undefined : options.chassisControl?.({ index: i, chassisDir }) ?? `${script} ${chassisDir}`;
      const conf = join(base, 'lan.conf');
      writeFileSync(conf, lanConf({ name, address, guid, chassisControl, extra: options.extraConfig?.({ index: i, address, chassisDir }) ?? [] }));
      const start = (): void => {
        // -n: no console on stdin/stdout; it logs to syslog after start-up, so the pipes stay quiet.
        const child = spawn('ip', ['netns', 'exec', bmcNs, 'ipmi_sim', '-c', conf, '-f', join(dir, 'node.emu'), '-s', simDir, '-n'], { stdio: ['ignore', 'pipe', 'pipe'] });
        child.stdout!.resume();
        child.stderr!.resume();
        children.set(i, child);
      };
      start();
      const bmc: SimBmc = {
        index: i,
        name,
        address,
        port: 623,
        simDir,
        chassisDir,
        guid,
        uuid,
        state() {
          const read = (f: string): string | undefined => (existsSync(join(chassisDir, f)) ? readFileSync(join(chassisDir, f), 'utf8').trim() : undefined);
          const identify = read('identify');
          return {
            power: read('power') === '1' ? 1 : 0,
            boot: read('boot') ?? '',
            ...(identify !== undefined ? { identify } : {}),
            events: (read('events') ?? '').split('\n').filter(Boolean),
          };
        },
        setPower(on) {
          writeFileSync(join(chassisDir, 'power'), on ? '1\n' : '0\n');
        },
        async restart() {
          const old = children.get(i);
          if (old && old.exitCode === null) {
            const gone = new Promise((resolve) => old.once('exit', resolve));
            old.kill('SIGKILL');
            await gone;
          }
          start();
          await waitListening(bmcNs, [address]);
        },
        pid() {
          return children.get(i)?.pid;
        },
      };
      bmcs.push(bmc);
    }
    await waitListening(bmcNs, bmcs.map((b) => b.address));
    return {
      bmcNs,
      clientNs,
      clientAddress: `${net}.1`,
      unusedAddress: `${net}.250`,
      bmcs,
      dir,
      async ipmitool(bmc, args, opts = {}) {
        const user = SIM_USERS[opts.user ?? 'admin'];
        const argv = ['netns', 'exec', clientNs, 'ipmitool', '-I', 'lanplus', '-C', String(opts.cipherSuite ?? 3), '-H', bmc.address, '-U', user.name, '-P', opts.password ?? user.password, ...args];
        try {
          const { stdout, stderr } = await execFileAsync('ip', argv, { timeout: 60_000 });
          return { stdout, stderr, code: 0 };
        } catch (err) {
          const e = err as { stdout?: string; stderr?: string; code?: number };
          return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : 1 };
        }
      },
      stop,
    };
  } catch (err) {
    stop();
    throw err;
  }
}

/** Waits until a UDP socket is bound to ADDRESS:623 for each address (ss in the namespace). */
async function waitListening(ns: string, addresses: string[], timeoutMs = 20_000): Promise<void> {
  const until = performance.now() + timeoutMs;
  for (;;) {
    const bound = sh('ip', ['netns', 'exec', ns, 'ss', '-Hlun'], { allowFail: true });
    const missing = addresses.filter((a) => !bound.includes(`${a}:623`));
    if (missing.length === 0) return;
    if (performance.now() > until) throw new Error(`ipmi_sim did not bind ${missing.join(', ')}:623 within ${timeoutMs} ms`);
    await sleep(50);
  }
}

// --- our driver, in the client namespace ----------------------------------------------------------------

export interface ChildReply {
  id: number;
  ok: boolean;
  value?: unknown;
  error?: { code?: string; message?: string; details?: Record<string, unknown> };
  /** How long the call took inside the child, ms. */
  ms: number;
}

/** test/helpers/ipmi-driver-child.ts running in a namespace, driven over stdio. */
export class DriverChild {
  private nextId = 1;
  private readonly waiting = new Map<number, (r: ChildReply) => void>();
  private stderr = '';
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      let r: ChildReply;
      try { r = JSON.parse(line) as ChildReply; } catch { this.stderr += `(stdout) ${line}\n`; return; }
      this.waiting.get(r.id)?.(r);
      this.waiting.delete(r.id);
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { this.stderr += d; });
    this.exited = new Promise((resolve) => child.on('exit', (code) => {
      for (const [id, w] of this.waiting) w({ id, ok: false, error: { message: `driver child exited (${code}): ${this.stderr}` }, ms: 0 });
      this.waiting.clear();
      resolve(code);
    }));
  }

  request(op: string, args: Record<string, unknown> = {}): Promise<ChildReply> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.child.stdin!.write(`${JSON.stringify({ id, op, ...args })}\n`);
    });
  }

  /** Like request, but a failure throws (with the child's error). */
  async ok(op: string, args: Record<string, unknown> = {}): Promise<unknown> {
    const r = await this.request(op, args);
    if (!r.ok) throw new Error(`${op} ${JSON.stringify(args)} failed: ${JSON.stringify(r.error)}`);
    return r.value;
  }

  call(key: string, method: string, ...args: unknown[]): Promise<ChildReply> {
    return this.request('call', { key, method, args });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    void this.request('exit');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Starts the driver child inside `ns`. */
export function startDriverChild(ns: string): DriverChild {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '--expose-gc', '--import', 'tsx', join(ROOT, 'test/helpers/ipmi-driver-child.ts')], {
    cwd: ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  return new DriverChild(child);
}
