// The test lab: network namespaces joined by veth pairs (LAB.md). Every name carries a per-run prefix so
// parallel runs never collide, and `destroy()` removes every namespace the lab made (their veths, VLANs
// and bridges go with them), also when a test fails.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';

export function sh(cmd: string, args: string[], opts: { allowFail?: boolean; input?: string } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], input: opts.input ?? '' });
  } catch (err) {
    if (opts.allowFail) return '';
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr || e.message}`);
  }
}

/** Whether this process may build namespaces (root with iproute2). */
export function canBuildLab(): { ok: true } | { ok: false; why: string } {
  if (process.getuid?.() !== 0) return { ok: false, why: 'network namespaces need root (CI runs as root)' };
  try { sh('ip', ['netns', 'list']); } catch (err) { return { ok: false, why: `ip netns unusable: ${(err as Error).message}` }; }
  return { ok: true };
}

export class Lab {
  readonly prefix: string;
  private readonly namespaces: string[] = [];
  private readonly children: ChildProcess[] = [];

  constructor(tag: string) {
    // Interface names are limited to 15 bytes: keep the prefix short.
    this.prefix = `${tag}${process.pid % 10000}`;
  }

  /** A namespace with loopback up; returns its full name. */
  ns(name: string): string {
    const full = `${this.prefix}-${name}`;
    sh('ip', ['netns', 'add', full]);
    this.namespaces.push(full);
    sh('ip', ['-n', full, 'link', 'set', 'lo', 'up']);
    return full;
  }

  /** A veth pair between two namespaces, each end optionally addressed (CIDR), both up. */
  link(a: { ns: string; ifname: string; cidr?: string }, b: { ns: string; ifname: string; cidr?: string }): void {
    sh('ip', ['-n', a.ns, 'link', 'add', a.ifname, 'type', 'veth', 'peer', 'name', b.ifname, 'netns', b.ns]);
    for (const end of [a, b]) {
      if (end.cidr) sh('ip', ['-n', end.ns, 'addr', 'add', end.cidr, 'dev', end.ifname]);
      sh('ip', ['-n', end.ns, 'link', 'set', end.ifname, 'up']);
    }
  }

  /** A VLAN sub-interface `parent.id` in a namespace. */
  vlan(ns: string, parent: string, id: number, cidr?: string): string {
    const name = `${parent}.${id}`;
    sh('ip', ['-n', ns, 'link', 'add', 'link', parent, 'name', name, 'type', 'vlan', 'id', String(id)]);
    if (cidr) sh('ip', ['-n', ns, 'addr', 'add', cidr, 'dev', name]);
    sh('ip', ['-n', ns, 'link', 'set', name, 'up']);
    return name;
  }

  /** Runs a command inside a namespace and returns its stdout. */
  exec(ns: string, cmd: string, args: string[], opts: { allowFail?: boolean } = {}): string {
    return sh('ip', ['netns', 'exec', ns, cmd, ...args], opts);
  }

  /** Starts a long-running command inside a namespace; it is killed by destroy(). */
  spawn(ns: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.push(child);
    return child;
  }

  destroy(): void {
    for (const c of this.children) if (c.exitCode === null) c.kill('SIGKILL');
    for (const ns of this.namespaces.splice(0).reverse()) {
      // Kill anything still running in it (a daemonised dhclient), then remove it.
      const pids = sh('ip', ['netns', 'pids', ns], { allowFail: true }).split(/\s+/).filter(Boolean);
      for (const pid of pids) { try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ } }
      sh('ip', ['netns', 'del', ns], { allowFail: true });
    }
  }
}
