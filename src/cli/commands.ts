// The CLI's commands other than `serve`. main parses argv and hands over typed inputs.
// A command that touches the store goes through the running metalbox's control socket when one
// runs (it holds the store's lock), and opens the store directly otherwise.
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import type { Config } from '../config/schema.ts';
import { loadConfigFile } from '../config/load.ts';
import { MetalboxError } from '../lib/errors.ts';
import type { SettingValue, Store } from '../store/types.ts';
import { callControl, type ControlHandler } from '../services/control.ts';
import type { RunnerStatus } from '../services/service.ts';
import type { AssetStore } from '../store/assets.ts';
import { imageControlHandlers, runImages, type ImageFlags } from './images.ts';
import { bmcControlHandlers, runBmc, type BmcFlags } from './bmc.ts';
import { runUsers, userControlHandlers, type UserFlags } from './users.ts';
import type { AuthCore } from '../core/auth.ts';
import type { BmcService } from '../services/bmc/service.ts';
import { secretKeyPath } from '../bmc/secrets.ts';

export interface CliIo { out(text: string): void; err(text: string): void; /** stderr is a terminal (progress redrawn in place) */ errTty?: boolean }

export interface CommandInput {
  command: string;
  positionals: string[];
  config: Config;
  io: CliIo;
  defaultStateDir: string;
  /** Options of `images add` (--kernel, --initrd, --rootfs, --cmdline). */
  flags?: ImageFlags;
  /** Options of `bmc` (and METALBOX_BMC_PASSWORD as passwordEnv). */
  bmc?: BmcFlags;
  /** Options of `users` (--role, --admin, --password-file; METALBOX_PASSWORD as passwordEnv). */
  users?: UserFlags;
}

export const COMMANDS = ['config', 'status', 'backup', 'restore', 'settings', 'images', 'bmc', 'users'];

/** Setting keys: dotted lower-case words, so they read well in YAML, the API and the console. */
const SETTING_KEY = /^[a-z][a-zA-Z0-9_-]*(\.[a-zA-Z0-9_-]+)*$/;

/** The operations shared by the control socket (server running) and direct store access (not running). */
function storeOps(store: Store) {
  return {
    async backup(file: string) { return (await import('../store/backup.ts')).backupStore(store, file); },
    async settingsGet(key: string) { return store.settings.get(checkKey(key)); },
    async settingsSet(key: string, value: SettingValue) {
      await store.settings.put(checkKey(key), value);
      return { key, value };
    },
    async settingsList() {
      const out: Record<string, SettingValue> = {};
      for await (const [k, v] of store.settings.entries()) out[k] = v;
      return out;
    },
  };
}

function checkKey(key: unknown): string {
  if (typeof key !== 'string' || !SETTING_KEY.test(key) || key.length > 200) {
    throw new MetalboxError('CLI_USAGE', `setting key ${JSON.stringify(key)} must be dotted words such as site.name`);
  }
  return key;
}

/** Handlers the running server answers on its control socket. */
export function controlHandlers(deps: { store: Store; config: Config; status: () => RunnerStatus; version: string; assets?: AssetStore; bmc?: BmcService; auth?: AuthCore }): Record<string, ControlHandler> {
  const ops = storeOps(deps.store);
  return {
    status: async () => ({ version: deps.version, pid: process.pid, uptimeSeconds: Math.round(process.uptime()), stateDir: deps.config.stateDir, ...deps.status(), store: deps.store.stats(), ...(deps.bmc ? { bmc: deps.bmc.summary() } : {}) }),
    backup: async (req) => {
      if (typeof req.file !== 'string' || !req.file.startsWith('/')) throw new MetalboxError('CLI_USAGE', 'backup needs an absolute file path');
      return ops.backup(req.file);
    },
    'settings.get': async (req) => ({ value: (await ops.settingsGet(String(req.key))) ?? null }),
    'settings.set': async (req) => ops.settingsSet(String(req.key), req.value as SettingValue),
    'settings.list': async () => ops.settingsList(),
    ...(deps.assets ? imageControlHandlers({ store: deps.store, config: deps.config, assets: deps.assets }) : {}),
    ...(deps.bmc ? bmcControlHandlers(deps.bmc) : {}),
    ...(deps.auth ? userControlHandlers(deps.auth) : {}),
  };
}

export async function runCommand(input: CommandInput): Promise<number> {
  const { command, positionals, config, io } = input;
  const controlPath = join(config.stateDir, 'control.sock');
  if (command !== 'users' && (input.users?.role !== undefined || input.users?.admin !== undefined)) {
    throw new MetalboxError('CLI_USAGE', '--role and --admin go with metalbox users create');
  }
  if (command !== 'images' && Object.values(input.flags ?? {}).some((v) => v !== undefined)) {
    throw new MetalboxError('CLI_USAGE', '--kernel, --initrd, --rootfs and --cmdline go with images add');
  }
  // --password-file (and --password, refused there with a reason) are shared with users.
  const shared = (k: string) => command === 'users' && (k === 'password-file' || k === 'password');
  if (command !== 'bmc' && Object.entries(input.bmc ?? {}).some(([k, v]) => k !== 'passwordEnv' && !shared(k) && v !== undefined)) {
    throw new MetalboxError('CLI_USAGE', `the options of bmc (${Object.keys(input.bmc ?? {}).filter((k) => k !== 'passwordEnv').map((k) => `--${k}`).join(', ')}) go with metalbox bmc`);
  }
  /** Runs `op` through the server if it runs, else on the store opened here (and closed after). */
  const viaServerOrStore = async <T>(request: Record<string, unknown> & { op: string }, direct: (ops: ReturnType<typeof storeOps>) => Promise<T>): Promise<T> => {
    const answer = await callControl(controlPath, request);
    if (answer !== undefined) return answer as T;
    const { openLevelStore } = await import('../store/level-store.ts');
    const store = await openLevelStore(config.stateDir);
    try { return await direct(storeOps(store)); } finally { await store.close(); }
  };

  switch (command) {
    case 'config': {
      const [sub, file] = positionals;
      if (sub === 'check' && file) {
        const checked = loadConfigFile(file, input.defaultStateDir);
        io.out(`ok: ${file} (stateDir ${checked.stateDir}, ${checked.subnets.length} subnet(s), interfaces: ${checked.interfaces.join(', ') || 'none'})\n`);
        return 0;
      }
      if (sub === 'default' && !file) { io.out(stringify(config)); return 0; }
      throw new MetalboxError('CLI_USAGE', 'usage: metalbox config check FILE | metalbox config default');
    }
    case 'status': {
      const status = await callControl(controlPath, { op: 'status' });
      if (status === undefined) { io.err(`metalbox is not running (no control socket at ${controlPath})\n`); return 1; }
      io.out(`${JSON.stringify(status, null, 2)}\n`);
      return 0;
    }
    case 'backup': {
      const [file] = positionals;
      if (!file || positionals.length !== 1) throw new MetalboxError('CLI_USAGE', 'usage: metalbox backup FILE');
      const abs = resolve(file);
      const result = await viaServerOrStore({ op: 'backup', file: abs }, (ops) => ops.backup(abs));
      io.out(`backup written: ${abs} ${JSON.stringify(result)}\n`);
      // The backup holds BMC secrets sealed only; the key that opens them is not in it (src/bmc/secrets.ts).
      io.out(`BMC passwords in it are sealed with ${secretKeyPath(config.stateDir)}, which the backup does not contain: keep a copy of that file with the backup; restoring on another box needs it in the new state dir (mode 0600)\n`);
      return 0;
    }
    case 'restore': {
      const [file] = positionals;
      if (!file || positionals.length !== 1) throw new MetalboxError('CLI_USAGE', 'usage: metalbox restore FILE');
      const { restoreBackup } = await import('../store/backup.ts');
      const result = await restoreBackup(resolve(file), config.stateDir);
      io.out(`restored ${resolve(file)} into ${config.stateDir} ${JSON.stringify(result)}\n`);
      return 0;
    }
    case 'settings': {
      const [sub, key, value, ...extra] = positionals;
      if (extra.length > 0) throw new MetalboxError('CLI_USAGE', 'too many arguments to settings');
      if (sub === 'list' && key === undefined) {
        const all = await viaServerOrStore({ op: 'settings.list' }, (ops) => ops.settingsList());
        for (const [k, v] of Object.entries(all)) io.out(`${k}\t${JSON.stringify(v)}\n`);
        return 0;
      }
      if (sub === 'get' && key !== undefined && value === undefined) {
        const got = await viaServerOrStore({ op: 'settings.get', key }, async (ops) => ({ value: (await ops.settingsGet(key)) ?? null }));
        if (got.value === null) { io.err(`setting ${key} is not set\n`); return 1; }
        io.out(`${typeof got.value === 'string' ? got.value : JSON.stringify(got.value)}\n`);
        return 0;
      }
      if (sub === 'set' && key !== undefined && value !== undefined) {
        const parsed = parseSettingValue(value);
        await viaServerOrStore({ op: 'settings.set', key, value: parsed }, (ops) => ops.settingsSet(key, parsed));
        io.out(`${key} = ${JSON.stringify(parsed)}\n`);
        return 0;
      }
      throw new MetalboxError('CLI_USAGE', 'usage: metalbox settings list | get KEY | set KEY VALUE');
    }
    case 'images':
      return runImages(positionals, input.flags ?? {}, config, io, controlPath);
    case 'bmc':
      return runBmc(positionals, input.bmc ?? {}, config, io, controlPath);
    case 'users':
      return runUsers(positionals, input.users ?? {}, config, io, controlPath);
    default:
      throw new MetalboxError('CLI_USAGE', `unknown command "${command}"`);
  }
}

/** JSON when it parses (numbers, booleans, objects), else the text itself. */
function parseSettingValue(text: string): SettingValue {
  try { return JSON.parse(text) as SettingValue; } catch { return text; }
}
