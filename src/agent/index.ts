// `metalbox agent`: what runs inside the ephemeral environment as root (the hook of /init), talking to the
// appliance over the agent API with the per-boot token (.notes/agent-contract.md).
//
//   enlist      inventory (+ the in-band BMC's address) -> POST inventory -> POST done -> power off
//   commission  GET task -> inventory (+ in-band BMC: its address; with bmcUser.create a metalbox user, bmc.ts)
//               -> POST inventory -> POST done (with the BMC user's credentials) -> power off
//   deploy      GET task -> image onto the disk, grow, cloud-init seed -> POST done -> reboot
//   release     GET task -> erase (none | quick | full) -> POST done -> power off
//   rescue      GET task -> SSH server with the task's keys, stays up (rescue.ts); without keys: exit 0
//   none        GET task -> exit 0 (the environment stays as /init leaves it)
//
// Any failure is reported with POST done {ok: false, error: {code, message}} before the agent exits 1.
// The token and the BMC user's password are never printed.

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openIpmiDevice } from '../lib/ipmi-device.ts';
import { openBlockDevice } from './block-device.ts';
import { createBmcUser, InbandBmc, openInbandBmc, type BmcTransport } from './bmc.ts';
import { ApplianceClient, type DoneBody } from './client.ts';
import { deploy } from './deploy.ts';
import { listDisks } from './disks.ts';
import { agentConfig, parseShellEnv, type AgentConfig } from './env.ts';
import { eraseDisk } from './erase.ts';
import { AgentError, describe, errno, isAgentError } from './errors.ts';
import { collectInventory, systeminformation, type Inventory, type SystemInfoSource } from './inventory.ts';
import { powerAction, type PowerAction } from './power.ts';
import { rescue, spawnProgram, type Spawn } from './rescue.ts';
import { runProgram, type Run } from './run.ts';
import { REAL_ROOTS, type Roots } from './sysfs.ts';
import type { AgentTask, EraseMode } from './task.ts';

export interface AgentIo {
  out(text: string): void;
  err(text: string): void;
}

export interface AgentDeps {
  roots: Roots;
  run: Run;
  systemInfo: () => Promise<SystemInfoSource>;
  power: (action: PowerAction) => Promise<void>;
  /** Inside the ephemeral environment (nothing autoloads modules there). */
  ephemeral: boolean;
  mountDir: string;
  retryDelayMs?: (attempt: number) => number;
  resumeDelayMs?: number;
  /** The in-band BMC, opened (undefined: none). Default: /dev/ipmi0 through the native addon (bmc.ts). */
  openBmc?: (log: (line: string) => void) => Promise<BmcTransport | undefined>;
  /** Bound on one BMC command (default 10 s). */
  bmcTimeoutMs?: number;
  /** Starts dropbear for rescue. */
  spawn: Spawn;
  /** root's home and dropbear's key directory (default /root, /etc/dropbear). */
  rescueDirs?: { home: string; hostKeys: string };
  /** Ends a rescue (tests); a real one lasts until the machine is powered off. */
  rescueSignal?: AbortSignal;
}

export const DEFAULT_ENV_FILE = '/run/metalbox/env';

export const AGENT_USAGE = `usage: metalbox agent [--env-file FILE] [--disk PATH] [--no-power]

Runs inside metalbox's ephemeral environment (as root): reads METALBOX_URL, METALBOX_TOKEN, METALBOX_MODE, ...
from FILE (default ${DEFAULT_ENV_FILE}) and the environment, asks the appliance for its task, does it, reports
the result, then powers off (commission, release) or reboots (deploy).

  --env-file FILE   shell assignments to read (METALBOX_URL='...')
  --disk PATH       write (deploy) or erase (release) this disk or file instead of the task's choice
  --no-power        exit instead of powering off or rebooting (also with metalbox.hold=1)
`;

export async function runAgent(argv: string[], env: NodeJS.ProcessEnv, io: AgentIo, overrides: Partial<AgentDeps> = {}): Promise<number> {
  const started = performance.now();
  const log = (line: string) => io.out(`metalbox-agent: [${((performance.now() - started) / 1000).toFixed(1)}s] ${line}\n`);
  let flags;
  try {
    flags = parseArgs({
      args: argv,
      allowPositionals: false,
      strict: true,
      options: {
        'env-file': { type: 'string' },
        disk: { type: 'string' },
        'no-power': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (err) {
    io.err(`metalbox: AGENT_USAGE: ${describe(err)}\n\n${AGENT_USAGE}`);
    return 2;
  }
  if (flags.help) { io.out(AGENT_USAGE); return 0; }

  const deps: AgentDeps = {
    roots: REAL_ROOTS,
    run: runProgram,
    systemInfo: systeminformation,
    power: (action) => powerAction(action, runProgram),
    spawn: spawnProgram,
    ephemeral: existsSync('/etc/metalbox/build'),
    // One per process: a person running the agent by hand beside a test must not share a mount point.
    mountDir: path.join(existsSync('/etc/metalbox/build') ? '/run/metalbox' : tmpdir(), `metalbox-target-${process.pid}`),
    ...overrides,
  };

  let config: AgentConfig;
  try {
    config = agentConfig(await readEnvFile(flags['env-file']), env);
  } catch (err) {
    io.err(`metalbox: ${isAgentError(err) ? err.code : 'AGENT_ENV_INVALID'}: ${describe(err)}\n`);
    return 1;
  }
  const client = new ApplianceClient({
    url: config.url,
    token: config.token,
    log,
    ...(deps.retryDelayMs !== undefined ? { retryDelayMs: deps.retryDelayMs } : {}),
  });
  log(`metalbox agent for ${config.mac ?? 'unknown MAC'} (${config.ip ?? 'no address'}) talking to ${config.url}${config.mode !== undefined ? `, booted for ${config.mode}` : ''}`);

  let mode: string = config.mode ?? 'unknown';
  try {
    let after: PowerAction | undefined;
    if (config.mode === 'enlist') {
      await enlistOrCommission(client, deps, log, 'enlist', false);
      after = 'poweroff';
    } else {
      const task = await client.task();
      mode = task.mode;
      log(`task: ${describeTask(task)}`);
      after = await perform(task, client, deps, flags.disk, log, { ip: config.ip, out: (line) => io.out(`${line}\n`) });
    }
    io.out(`METALBOX-AGENT-DONE mode=${mode} ok=true\n`);
    if (after !== undefined) {
      if (flags['no-power'] || config.hold) {
        log(`leaving the machine up (${flags['no-power'] ? '--no-power' : 'metalbox.hold=1'}) instead of: ${after}`);
      } else {
        log(after === 'reboot' ? 'rebooting' : 'powering off');
        await deps.power(after);
      }
    }
    return 0;
  } catch (err) {
    const failure = isAgentError(err) ? err : new AgentError('AGENT_INTERNAL', describe(err), { cause: err });
    if (!isAgentError(err)) io.err(`metalbox-agent: internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
    log(`failed: ${failure.code}: ${failure.message}`);
    io.out(`METALBOX-AGENT-DONE mode=${mode} ok=false code=${failure.code}\n`);
    // A refused token will be refused again: do not spend the retries on it.
    if (!(failure.code === 'AGENT_APPLIANCE_REFUSED' && / 401 /.test(failure.message))) {
      await client.done({ mode, ok: false, error: { code: failure.code, message: failure.message.slice(0, 1000) } })
        .catch((e: unknown) => log(`could not report the failure: ${describe(e)}`));
    }
    return 1;
  }
}

async function readEnvFile(file: string | undefined): Promise<Map<string, string>> {
  try {
    return parseShellEnv(await readFile(file ?? DEFAULT_ENV_FILE, 'utf8'));
  } catch (err) {
    // The default file is optional (the process environment may carry everything); a named one is not.
    if (file === undefined && errno(err) === 'ENOENT') return new Map();
    throw new AgentError('AGENT_ENV_INVALID', `cannot read ${file ?? DEFAULT_ENV_FILE}: ${describe(err)}`);
  }
}

function describeTask(task: AgentTask): string {
  switch (task.mode) {
    case 'deploy': return `deploy ${task.deploy.hostname} onto ${task.deploy.disk} (${task.deploy.compression})`;
    case 'release': return `release, erase ${task.release.erase}`;
    case 'commission': return `commission${task.bmcUser?.create ? ', create a BMC user' : ''}`;
    case 'rescue': return `rescue with ${task.rescue.sshKeys.length} SSH key(s)`;
    default: return task.mode;
  }
}

/** Does the task; returns what to do with the machine afterwards. */
async function perform(task: AgentTask, client: ApplianceClient, deps: AgentDeps, disk: string | undefined, log: (l: string) => void,
  ctx: { ip: string | undefined; out: (line: string) => void }): Promise<PowerAction | undefined> {
  switch (task.mode) {
    case 'none':
      log('nothing to do');
      return undefined;
    case 'rescue':
      await rescue(task.rescue, {
        run: deps.run, spawn: deps.spawn, homeDir: deps.rescueDirs?.home ?? '/root', hostKeyDir: deps.rescueDirs?.hostKeys ?? '/etc/dropbear',
        procDir: deps.roots.proc, address: ctx.ip, log, out: ctx.out, progress: (p) => client.progress(p),
        ...(deps.rescueSignal !== undefined ? { signal: deps.rescueSignal } : {}),
      });
      await client.settleProgress();
      return undefined;
    case 'commission':
      await enlistOrCommission(client, deps, log, 'commission', task.bmcUser?.create === true);
      return 'poweroff';
    case 'deploy': {
      const report = await deploy(task.deploy, {
        client, roots: deps.roots, run: deps.run, mountDir: deps.mountDir, loadModules: deps.ephemeral, log,
        ...(disk !== undefined ? { diskOverride: disk } : {}),
        ...(deps.resumeDelayMs !== undefined ? { resumeDelayMs: deps.resumeDelayMs } : {}),
      });
      log(`deployed to ${report.disk}: root ${report.root.fsType} on ${report.root.number === undefined ? 'the whole disk' : `partition ${report.root.number}`}`);
      await client.done({ mode: 'deploy', ok: true });
      return 'reboot';
    }
    case 'release':
      await release(task.release.erase, client, deps, disk, log);
      await client.done({ mode: 'release', ok: true });
      return 'poweroff';
  }
}

async function enlistOrCommission(client: ApplianceClient, deps: AgentDeps, log: (l: string) => void, mode: 'enlist' | 'commission', bmcUser: boolean): Promise<void> {
  // First the BMC: opening it loads its drivers (no udev here), which the inventory then sees.
  const openBmc = deps.openBmc ?? ((l: (line: string) => void) => openInbandBmc({
    roots: deps.roots, run: deps.run, loadModules: deps.ephemeral, open: (p) => openIpmiDevice(p), log: l,
  }));
  let bmc: BmcTransport | undefined;
  try {
    bmc = await openBmc(log);
  } catch (err) {
    // Asked for a BMC user: that is a failure of the commissioning. Otherwise the address is only a nicety.
    if (bmcUser) throw err;
    log(`in-band BMC: ${describe(err)}`);
  }
  try {
    const t0 = performance.now();
    let inventory: Inventory;
    try {
      inventory = await collectInventory(deps.roots, await deps.systemInfo());
    } catch (err) {
      throw new AgentError('AGENT_INVENTORY_FAILED', describe(err), { cause: err });
    }
    const ms = Math.round(performance.now() - t0);
    log(`inventory in ${ms} ms: ${inventory.cpu.sockets} x ${inventory.cpu.model}, ${inventory.cpu.cores} cores, ${inventory.cpu.threads} threads; `
      + `${(inventory.memoryBytes / 2 ** 30).toFixed(1)} GiB; ${inventory.firmware}; ${inventory.disks.length} disk(s); ${inventory.nics.length} NIC(s)`
      + `${bmc !== undefined || inventory.bmc?.present ? '; in-band BMC present' : ''}`);

    const done: DoneBody = { mode, ok: true };
    const opts = { log, ...(deps.bmcTimeoutMs !== undefined ? { timeoutMs: deps.bmcTimeoutMs } : {}) };
    if (bmc !== undefined && bmcUser) {
      const t1 = performance.now();
      const user = await createBmcUser(bmc, opts);
      inventory.bmc = { present: true, address: user.address };
      done.bmc = { address: user.address, username: user.username, password: user.password };
      const what = `BMC user "${user.username}" (id ${user.userId}${user.reused ? ', taken over' : ''}) with ADMINISTRATOR on LAN channel ${user.channel}, BMC at ${user.address}`;
      log(`${what} in ${Math.round(performance.now() - t1)} ms`);
      client.progress({ phase: 'bmc', message: what });
    } else if (bmc !== undefined) {
      try {
        const lan = await new InbandBmc(bmc, opts).lan();
        inventory.bmc = { present: true, address: lan.address };
        log(`in-band BMC at ${lan.address} (LAN channel ${lan.channel}, ${lan.source})`);
      } catch (err) {
        inventory.bmc = { present: true };
        log(`in-band BMC: address unknown: ${describe(err)}`);
      }
    } else if (bmcUser) {
      const why = 'no in-band BMC (/dev/ipmi0) to create a user on';
      log(why);
      client.progress({ phase: 'bmc', message: why });
    }
    const reply = await client.inventory(inventory);
    log(`inventory accepted${reply.machineId !== undefined ? `: machine ${reply.machineId}` : ''}${reply.hostname !== undefined ? ` (${reply.hostname})` : ''}`);
    await client.done(done);
  } finally {
    await bmc?.close().catch((err: unknown) => log(`closing the BMC device: ${describe(err)}`));
  }
}

async function release(erase: EraseMode, client: ApplianceClient, deps: AgentDeps, disk: string | undefined, log: (l: string) => void): Promise<void> {
  if (erase === 'none') { log('erase: none'); return; }
  // Every disk of the machine that nothing uses (the environment runs from RAM), or the one given.
  const paths = disk !== undefined ? [disk] : (await listDisks(deps.roots)).filter((d) => !d.removable && !d.inUse).map((d) => d.path);
  for (const p of paths) {
    const dev = await openBlockDevice(p, deps.roots.sys);
    try {
      const t0 = performance.now();
      let lastLog = 0;
      const result = await eraseDisk(dev, erase, (done, total) => {
        client.progress({ phase: 'erase', done, total, message: `${erase} erase of ${p}` });
        const secs = (performance.now() - t0) / 1000;
        if (erase === 'full' && secs - lastLog >= 10) { lastLog = secs; log(`erasing ${p}: ${Math.floor((done / total) * 100)}%`); }
      });
      log(`${erase} erase of ${p}: ${result.bytes} bytes zeroed${erase === 'quick' ? ` (${result.partitions} partition(s))` : ''} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    } finally {
      await dev.close();
    }
  }
  if (paths.length === 0) log('erase: no disk to erase');
}
