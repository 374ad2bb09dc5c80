// Running the few system programs the agent needs (mount, losetup, blockdev, modprobe, poweroff): busybox
// applets in the ephemeral environment, util-linux on a normal host.

import { execFile } from 'node:child_process';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export type Run = (cmd: string, args: string[], opts?: { timeoutMs?: number }) => Promise<RunResult>;

/** Runs a program; never throws (ENOENT is code 127, as from a shell). */
export const runProgram: Run = (cmd, args, opts = {}) => new Promise((resolve) => {
  execFile(cmd, args, { timeout: opts.timeoutMs ?? 60_000, encoding: 'utf8', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
    if (err === null) { resolve({ code: 0, stdout, stderr }); return; }
    const e = err as NodeJS.ErrnoException & { code?: unknown };
    const code = typeof e.code === 'number' ? e.code : e.code === 'ENOENT' ? 127 : 1;
    resolve({ code, stdout: stdout ?? '', stderr: stderr || e.message });
  });
});

/** The first line of a failed program's stderr, for messages. */
export function firstLine(r: RunResult): string {
  return (r.stderr.trim() || r.stdout.trim()).split('\n')[0] ?? `exit ${r.code}`;
}
