// The appliance image (image/appliance/build.sh) for tests: built once per content hash (the binary, the
// ephemeral environment with the agent, the units, the scripts) and cached under .cache/appliance/<key>/, with
// the distribution's base root cached apart (.cache/appliance/base-<key>/); booted under QEMU with its serial
// console on a unix socket, which a `SerialConsole` reads and types into.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureBinary } from './binary.ts';
import { ensureEphemeral } from './ephemeral.ts';
import { runBuilder, type BuilderResult } from './image-builder.ts';
import { ROOT } from './process.ts';

export const APPLIANCE_BUILDER = join(ROOT, 'image/appliance/build.sh');
export const APPLIANCE_UPGRADE = join(ROOT, 'image/appliance/upgrade.sh');

export interface ApplianceImage {
  key: string;
  raw: string;
  qcow2: string;
  /** sizes and seconds per step (build.sh's manifest) */
  manifest: Record<string, string>;
  log: string;
  /** wall time of this call, binary and ephemeral environment included */
  seconds: number;
  binaryLog: string;
}

let building: Promise<ApplianceImage> | undefined;

/** The Debian 12 appliance (what CI can build: only Debian's archive is reachable there). */
export function ensureAppliance(): Promise<ApplianceImage> {
  building ??= build().catch((err: unknown) => { building = undefined; throw err; });
  return building;
}

async function build(): Promise<ApplianceImage> {
  const started = performance.now();
  const binaryLog = ensureBinary();
  const eph = await ensureEphemeral({ agent: true });
  // Twenty minutes: a cold base is debootstrap + apt-get of a kernel and systemd from Debian's mirror.
  const r: BuilderResult = await runBuilder(APPLIANCE_BUILDER, ['--distro', 'debian', '--suite', 'bookworm', '--mirror', 'http://deb.debian.org/debian', '--ephemeral', dirname(eph.kernel)],
    { timeoutMs: 1_200_000, required: ['key', 'raw', 'qcow2'], manifestOf: 'raw' });
  return { key: r.out.key!, raw: r.out.raw!, qcow2: r.out.qcow2!, manifest: r.manifest, log: r.log, seconds: (performance.now() - started) / 1000, binaryLog };
}

/** A VM's serial console on a unix socket (QEMU `-chardev socket,server=on`): everything read, and typing. */
export class SerialConsole {
  text = '';
  private cursor = 0;
  private socket: Socket | undefined;
  private waiters = new Set<() => void>();

  /** Connects, retrying while QEMU has not made the socket yet. */
  static async open(path: string, timeoutMs = 30_000): Promise<SerialConsole> {
    const c = new SerialConsole();
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        c.socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path, () => resolve(s));
          s.once('error', reject);
        });
        break;
      } catch (err) {
        if (Date.now() > until) throw new Error(`serial console ${path}: ${(err as Error).message}`);
        await sleep(100);
      }
    }
    c.socket.on('data', (d: Buffer) => { c.text += d.toString('latin1'); for (const w of c.waiters) w(); });
    c.socket.on('error', () => undefined);
    return c;
  }

  /** Waits for `re` in what came after the last match; returns the match (and moves past it). */
  async waitFor(re: RegExp, timeoutMs: number, what = String(re)): Promise<RegExpExecArray> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const rest = this.text.slice(this.cursor);
      const m = re.exec(rest);
      if (m) {
        this.cursor += m.index + m[0].length;
        return m;
      }
      const left = until - Date.now();
      if (left <= 0) throw new Error(`serial console: no ${what} within ${timeoutMs / 1000} s; last output:\n${this.text.slice(-3000)}`);
      await new Promise<void>((resolve) => {
        const done = () => { clearTimeout(timer); this.waiters.delete(done); resolve(); };
        const timer = setTimeout(done, Math.min(left, 1000));
        this.waiters.add(done);
      });
    }
  }

  /** Types a line (Enter is CR, as a terminal sends it). */
  type(line: string): void { this.socket?.write(`${line}\r`); }

  close(): void { this.socket?.destroy(); }
}

export interface VmOptions {
  /** Network namespace QEMU runs in (its tap must be there). */
  ns: string;
  disk: string;
  format: 'raw' | 'qcow2';
  dir: string;
  name: string;
  /** The provisioning NIC: a tap on the namespace's bridge. */
  tap: string;
  provMac: string;
  mgmtMac: string;
  uefi?: boolean;
  memoryMiB?: number;
}

export interface Vm {
  proc: ChildProcess;
  console: SerialConsole;
  startedAt: number;
  /** ACPI power button (systemd shuts down), then waits for QEMU to exit; kills it after `timeoutMs`. */
  powerdown(timeoutMs?: number): Promise<void>;
  kill(): void;
}

/**
 * Boots the disk: SeaBIOS (or OVMF), TCG, two virtio NICs (management: QEMU user networking; provisioning: the
 * tap), serial console and QMP on unix sockets in `dir`. NIC ROMs are left out: the disk boots first anyway.
 */
export async function bootVm(o: VmOptions): Promise<Vm> {
  const serial = join(o.dir, `${o.name}.serial`);
  const qmp = join(o.dir, `${o.name}.qmp`);
  const args = [
    'netns', 'exec', o.ns, 'qemu-system-x86_64', '-accel', 'tcg', '-m', String(o.memoryMiB ?? 1536), '-smp', '1', '-name', o.name,
    '-nographic', '-monitor', 'none', '-chardev', `socket,id=s0,path=${serial},server=on,wait=off`, '-serial', 'chardev:s0',
    '-qmp', `unix:${qmp},server=on,wait=off`,
    '-netdev', 'user,id=m0', '-device', `virtio-net-pci,netdev=m0,mac=${o.mgmtMac},romfile=`,
    '-netdev', `tap,id=p0,ifname=${o.tap},script=no,downscript=no`, '-device', `virtio-net-pci,netdev=p0,mac=${o.provMac},romfile=`,
    '-drive', `file=${o.disk},if=virtio,format=${o.format}`,
  ];
  if (o.uefi) {
    const vars = join(o.dir, `${o.name}.vars.fd`);
    const { copyFileSync } = await import('node:fs');
    copyFileSync('/usr/share/OVMF/OVMF_VARS.fd', vars);
    args.push('-drive', 'if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd', '-drive', `if=pflash,format=raw,file=${vars}`);
  }
  const { openSync } = await import('node:fs');
  const logFd = openSync(join(o.dir, `${o.name}.qemu.log`), 'a');
  const startedAt = performance.now();
  const proc = spawn('ip', args, { stdio: ['ignore', logFd, logFd] });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const console = await SerialConsole.open(serial);
  const kill = () => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL'); console.close(); };
  return {
    proc, console, startedAt, kill,
    async powerdown(timeoutMs = 90_000) {
      await new Promise<void>((resolve) => {
        const s = connect(qmp, () => {
          s.write('{"execute":"qmp_capabilities"}\n{"execute":"system_powerdown"}\n');
          setTimeout(() => { s.destroy(); resolve(); }, 500);
        });
        s.once('error', () => resolve());
      });
      const timer = setTimeout(kill, timeoutMs);
      await exited;
      clearTimeout(timer);
      console.close();
    },
  };
}
