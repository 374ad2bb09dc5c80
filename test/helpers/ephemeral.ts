// The ephemeral boot environment for tests: image/ephemeral/build.sh run once per content hash, and a reader
// of a VM's serial console that knows the environment's marker lines.
//
// The builder caches by a key of all its inputs under .cache/ephemeral/<key>/ and serialises builders with
// flock(1) on .cache/ephemeral/.lock, so tap's parallel test files build an image once: the second waits for
// the first and finds its result. Within one process the promise is shared as well.
import type { ChildProcess } from 'node:child_process';
import { runBuilder } from './image-builder.ts';
import { join } from 'node:path';
import { ROOT } from './process.ts';

export const BUILDER = join(ROOT, 'image/ephemeral/build.sh');

export interface EphemeralImage {
  kernel: string;
  initrd: string;
  key: string;
  /** The build's manifest: kernel and busybox versions, sizes, sha-256s, build_seconds. */
  manifest: Record<string, string>;
  /** What the builder said on stderr (figures, "cached ..."). */
  log: string;
  /** Wall time of this call (a cache hit is about a second: apt-cache reads the package lists twice). */
  seconds: number;
}

export interface EphemeralOptions {
  /** A shell script /init runs after the network check (build.sh --hook). */
  hook?: string;
  /** Extra files, `SRC:DEST` (build.sh --add). */
  add?: string[];
  /** The agent as the hook (build.sh --agent): the image metalbox boots machines into. */
  agent?: boolean;
}

/** Markers /init prints on the console (image/ephemeral/init). */
export const MARKER = {
  up: /METALBOX-EPHEMERAL-UP mac=(\S+) url=(\S+)/,
  http: /METALBOX-EPHEMERAL-HTTP (ok|fail)/,
  hook: /METALBOX-EPHEMERAL-HOOK rc=(\d+)/,
  poweroff: /METALBOX-EPHEMERAL-POWEROFF/,
} as const;

const builds = new Map<string, Promise<EphemeralImage>>();

export function ensureEphemeral(opts: EphemeralOptions = {}): Promise<EphemeralImage> {
  const args = [...(opts.agent ? ['--agent'] : []), ...(opts.hook ? ['--hook', opts.hook] : []), ...(opts.add ?? []).flatMap((a) => ['--add', a])];
  const id = JSON.stringify(args);
  let p = builds.get(id);
  if (!p) {
    p = build(args);
    builds.set(id, p);
    p.catch(() => builds.delete(id));
  }
  return p;
}

async function build(args: string[]): Promise<EphemeralImage> {
  // Ten minutes: a cold build downloads the kernel package (~70 MB) from the Debian mirror.
  const r = await runBuilder(BUILDER, args, { timeoutMs: 600_000, required: ['key', 'kernel', 'initrd'], manifestOf: 'kernel' });
  return { key: r.out.key!, kernel: r.out.kernel!, initrd: r.out.initrd!, manifest: r.manifest, log: r.log, seconds: r.seconds };
}

export interface Seen {
  /** The whole match. */
  text: string;
  match: RegExpExecArray;
  /** Milliseconds from the start of the watch (the VM's power-on) to the arrival of the match. */
  ms: number;
}

export interface Console {
  output(): string;
  /** Resolves at the first match in a complete line after `from` (an offset into output()); rejects on timeout or exit. */
  waitFor(re: RegExp, timeoutMs: number, from?: number): Promise<Seen>;
  /** Resolves with the exit code or signal; `undefined` if it is still running after timeoutMs. */
  exit(timeoutMs: number): Promise<number | string | undefined>;
  kill(): void;
}

/**
 * Watches a VM (QEMU with its serial console on stdout). Time zero is this call: start it right after the
 * spawn. Console text has CRs and terminal escapes removed.
 */
export function watchConsole(child: ChildProcess): Console {
  const t0 = performance.now();
  let out = '';
  let held = '';
  const waiters = new Set<() => void>();
  const poke = () => { for (const w of [...waiters]) w(); };
  // Terminal escapes (the firmware's and the kernel's) are removed.
  const add = (d: string) => {
    let text = held + d;
    held = '';
    // An escape sequence cut by the chunk boundary waits for the rest.
    const esc = text.lastIndexOf('\x1b');
    if (esc >= 0 && text.length - esc < 16 && !/^\x1b(c|\[[0-9;?=]*[A-Za-z])/.test(text.slice(esc))) {
      held = text.slice(esc);
      text = text.slice(0, esc);
    }
    out += text.replace(/\r/g, '').replace(/\x1b\[[0-9;?=]*[A-Za-z]/g, '').replace(/\x1bc/g, '');
    poke();
  };
  child.stdout?.setEncoding('utf8').on('data', add);
  child.stderr?.setEncoding('utf8').on('data', add);
  const exited = new Promise<number | string>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode ?? child.signalCode!);
    else child.once('exit', (code, signal) => { resolve(code ?? signal ?? -1); poke(); });
  });
  let done = false;
  void exited.then(() => { done = true; poke(); });
  return {
    output: () => out,
    kill: () => { if (!done) child.kill('SIGKILL'); },
    exit: (ms) => Promise.race([exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), ms).unref())]),
    waitFor(re, timeoutMs, from = 0) {
      return new Promise((resolve, reject) => {
        const check = () => {
          // Whole lines only: a chunk may end in the middle of a marker.
          const m = new RegExp(re.source, re.flags.replace('g', '')).exec(out.slice(from, out.lastIndexOf('\n') + 1));
          if (m) { finish(); resolve({ text: m[0], match: m, ms: performance.now() - t0 }); return; }
          if (done) { finish(); reject(new Error(`VM exited before ${re}; console tail:\n${out.slice(-4000)}`)); }
        };
        const timer = setTimeout(() => { finish(); reject(new Error(`timed out after ${timeoutMs} ms waiting for ${re}; console tail:\n${out.slice(-4000)}`)); }, timeoutMs);
        const finish = () => { clearTimeout(timer); waiters.delete(check); };
        waiters.add(check);
        check();
      });
    },
  };
}

/** Seconds with one decimal, for t.comment. */
export const secs = (ms: number) => (ms / 1000).toFixed(1);
