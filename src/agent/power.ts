// Ending the ephemeral boot: power off (commission, release) or reboot into the deployed disk (deploy).
// busybox `poweroff -f` / `reboot -f` call reboot(2) at once (no init to ask: the agent runs under /init as
// PID 1). Should they be missing, the magic SysRq trigger does the same (Documentation/admin-guide/sysrq.rst:
// 's' sync, 'u' remount read-only, then 'o' power off or 'b' reboot); writing to /proc/sysrq-trigger works as
// root whatever kernel.sysrq says.

import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Run } from './run.ts';

export type PowerAction = 'poweroff' | 'reboot';

export async function powerAction(action: PowerAction, run: Run, procRoot = '/proc'): Promise<void> {
  await run('sync', []);
  const r = await run(action, ['-f']);
  if (r.code === 0) {
    // reboot(2) does not return; if it did, give the kernel a moment before trying the other way.
    await new Promise((res) => setTimeout(res, 5000));
  }
  const trigger = path.join(procRoot, 'sysrq-trigger');
  for (const key of ['s', 'u', action === 'poweroff' ? 'o' : 'b']) {
    await writeFile(trigger, key).catch(() => undefined);
  }
}
