// `metalbox images add|list|remove`: boot images in the asset store. Like every command that touches the
// store, it goes through the running metalbox's control socket when one runs (that process then reads the
// local files or downloads the URLs itself, and streams progress back), and opens the store otherwise.
import { join } from 'node:path';
import type { Config } from '../config/schema.ts';
import { MetalboxError } from '../lib/errors.ts';
import type { Store } from '../store/types.ts';
import {
  AssetStore, IMAGE_FILES, IpxeBinaries, checkImageName, parseSource,
  type AssetProgress, type AssetSource, type BootImage, type ImageFileRole, type IpxeFileInfo,
} from '../store/assets.ts';
import { callControl, type ControlHandler } from '../services/control.ts';
import type { CliIo } from './commands.ts';

/** The setting that overrides config boot.ephemeralImage (read by HTTP boot on every script request). */
const EPHEMERAL_SETTING = 'boot.ephemeralImage';
/** A control call for `images add` may be silent this long between progress lines. */
const ADD_IDLE_TIMEOUT_MS = 10 * 60_000;

export interface ImageFlags { kernel?: string; initrd?: string; rootfs?: string; cmdline?: string }
export const IMAGE_FLAG_NAMES = ['kernel', 'initrd', 'rootfs', 'cmdline'] as const;

export function assetsDir(config: Config): string {
  return config.boot.assetsDir ?? join(config.stateDir, 'assets');
}

export interface ImageList { images: BootImage[]; ephemeralImage: string | null; ipxeDir: string; ipxe: IpxeFileInfo[] }

/** The operations shared by the control socket (server running) and direct store access (not running). */
function imageOps(store: Store, assets: AssetStore, config: Config) {
  return {
    add: (name: string, files: Partial<Record<ImageFileRole, AssetSource>>, cmdline: string | undefined, onProgress?: (p: AssetProgress) => void, signal?: AbortSignal) =>
      assets.add({ name, files, ...(cmdline !== undefined ? { cmdline } : {}) }, {
        maxBytes: config.boot.maxAssetBytes,
        ...(onProgress ? { onProgress } : {}),
        ...(signal ? { signal } : {}),
      }),
    async list(): Promise<ImageList> {
      const setting = await store.settings.get(EPHEMERAL_SETTING);
      const ephemeral = typeof setting === 'string' && setting !== '' ? setting : config.boot.ephemeralImage;
      return { images: await assets.list(), ephemeralImage: ephemeral ?? null, ipxeDir: config.boot.ipxeDir, ipxe: await new IpxeBinaries(config.boot.ipxeDir).describe() };
    },
    async remove(name: string) {
      const removed = await assets.remove(checkImageName(name));
      if (!removed) throw new MetalboxError('NOT_FOUND', `no image "${name}"`);
      return { name, removedBlobs: removed.removedBlobs };
    },
  };
}

/** Control handlers for `images`, given the server's asset store. */
export function imageControlHandlers(deps: { store: Store; assets: AssetStore; config: Config }): Record<string, ControlHandler> {
  const ops = imageOps(deps.store, deps.assets, deps.config);
  return {
    'images.add': async (req, ctx) => ops.add(checkImageName(req.name), checkSources(req.files), typeof req.cmdline === 'string' ? req.cmdline : undefined, (p) => ctx.progress(p), ctx.signal),
    'images.list': async () => ops.list(),
    'images.remove': async (req) => ops.remove(String(req.name)),
  };
}

/** Sources as they arrive over the control socket: re-checked, since the server reads them as itself. */
function checkSources(value: unknown): Partial<Record<ImageFileRole, AssetSource>> {
  if (typeof value !== 'object' || value === null) throw new MetalboxError('CLI_USAGE', 'images.add needs files');
  const out: Partial<Record<ImageFileRole, AssetSource>> = {};
  for (const [role, s] of Object.entries(value as Record<string, unknown>)) {
    if (!(IMAGE_FILES as readonly string[]).includes(role)) throw new MetalboxError('IMAGE_INVALID', `unknown image file "${role}"`);
    const src = s as Partial<{ kind: string; path: string; url: string; sha256: string }>;
    const sum = typeof src.sha256 === 'string' ? `#sha256=${src.sha256}` : '';
    const spec = src.kind === 'file' && typeof src.path === 'string' && src.path.startsWith('/') ? src.path
      : src.kind === 'url' && typeof src.url === 'string' ? src.url : undefined;
    if (spec === undefined) throw new MetalboxError('CLI_USAGE', `images.add: ${role} must be an absolute path or a URL`);
    out[role as ImageFileRole] = parseSource(spec + sum, '/');
  }
  return out;
}

export async function runImages(positionals: string[], flags: ImageFlags, config: Config, io: CliIo, controlPath: string): Promise<number> {
  const [sub, name, ...extra] = positionals;
  const usage = 'usage: metalbox images add NAME --kernel FILE|URL --initrd FILE|URL [--rootfs FILE|URL] [--cmdline "ARGS"] | images list | images remove NAME';
  if (extra.length > 0) throw new MetalboxError('CLI_USAGE', usage);
  if (sub !== 'add' && IMAGE_FLAG_NAMES.some((f) => flags[f] !== undefined)) throw new MetalboxError('CLI_USAGE', `--kernel, --initrd, --rootfs and --cmdline go with images add; ${usage}`);

  /** Runs `op` through the server if it runs, else on the store and asset store opened here. */
  const viaServerOrStore = async <T>(request: Record<string, unknown> & { op: string }, direct: (ops: ReturnType<typeof imageOps>) => Promise<T>, onProgress?: (p: unknown) => void): Promise<T> => {
    const answer = await callControl(controlPath, request, ADD_IDLE_TIMEOUT_MS, onProgress);
    if (answer !== undefined) return answer as T;
    const { openLevelStore } = await import('../store/level-store.ts');
    const store = await openLevelStore(config.stateDir);
    try {
      const assets = new AssetStore(assetsDir(config), store);
      await assets.open();
      return await direct(imageOps(store, assets, config));
    } finally {
      await store.close();
    }
  };

  if (sub === 'add' && name !== undefined) {
    checkImageName(name);
    if (flags.kernel === undefined || flags.initrd === undefined) throw new MetalboxError('CLI_USAGE', `images add needs --kernel and --initrd; ${usage}`);
    const files: Partial<Record<ImageFileRole, AssetSource>> = {};
    for (const role of IMAGE_FILES) if (flags[role] !== undefined) files[role] = parseSource(flags[role]);
    const progress = progressPrinter(io);
    const image = await viaServerOrStore(
      { op: 'images.add', name, files, ...(flags.cmdline !== undefined ? { cmdline: flags.cmdline } : {}) },
      (ops) => ops.add(name, files, flags.cmdline, progress),
      (p) => progress(p as AssetProgress),
    );
    io.out(`image ${image.name} added (${formatBytes(image.size)})\n`);
    for (const role of IMAGE_FILES) {
      const f = image.files[role];
      if (f) io.out(`  ${role.padEnd(6)}  ${f.sha256}  ${formatBytes(f.size)}\n`);
    }
    return 0;
  }
  if (sub === 'list' && name === undefined) {
    const list = await viaServerOrStore({ op: 'images.list' }, (ops) => ops.list());
    io.out(formatList(list));
    return 0;
  }
  if (sub === 'remove' && name !== undefined) {
    const result = await viaServerOrStore({ op: 'images.remove', name }, (ops) => ops.remove(name));
    io.out(`image ${result.name} removed (${result.removedBlobs} file(s) no other image used deleted)\n`);
    return 0;
  }
  throw new MetalboxError('CLI_USAGE', usage);
}

export function formatList(list: ImageList): string {
  let out = '';
  if (list.images.length === 0) out += 'no boot images (metalbox images add NAME --kernel ... --initrd ...)\n';
  for (const image of list.images) {
    const mark = image.name === list.ephemeralImage ? '  [ephemeral image]' : '';
    out += `${image.name}  ${formatBytes(image.size)}  added ${image.createdAt}${mark}\n`;
    if (image.cmdline) out += `  cmdline ${image.cmdline}\n`;
    for (const role of IMAGE_FILES) {
      const f = image.files[role];
      if (f) out += `  ${role.padEnd(6)}  ${f.sha256}  ${formatBytes(f.size).padStart(10)}  ${f.source}\n`;
    }
  }
  if (list.ephemeralImage !== null && !list.images.some((i) => i.name === list.ephemeralImage)) {
    out += `warning: the ephemeral image "${list.ephemeralImage}" is not registered: machines cannot enlist\n`;
  }
  out += `iPXE binaries in ${list.ipxeDir}:${list.ipxe.length === 0 ? ' none (install Debian package ipxe)' : ''}\n`;
  for (const f of list.ipxe) out += `  ${f.name.padEnd(13)}  ${f.sha256}  ${formatBytes(f.size).padStart(10)}\n`;
  return out;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(1)} ${units[i]}`;
}

/** One line per file: bytes/total, percent, MiB/s; redrawn in place on a terminal, every 2 s otherwise. */
export function formatProgress(p: AssetProgress): string {
  const rate = p.elapsedMs > 0 ? p.bytes / 1024 / 1024 / (p.elapsedMs / 1000) : 0;
  const of = p.total === undefined ? formatBytes(p.bytes) : `${formatBytes(p.bytes)} / ${formatBytes(p.total)}`;
  const pct = p.total ? `  ${Math.floor((100 * p.bytes) / p.total)}%` : '';
  return `${p.role}: ${of}${pct}  ${rate.toFixed(1)} MiB/s${p.done ? '  done' : ''}`;
}

function progressPrinter(io: CliIo): (p: AssetProgress) => void {
  let last = 0;
  return (p) => {
    if (io.errTty) {
      io.err(`\r\x1b[K${formatProgress(p)}${p.done ? '\n' : ''}`);
      return;
    }
    const now = Date.now();
    if (!p.done && now - last < 2000) return;
    last = now;
    io.err(`${formatProgress(p)}\n`);
  };
}
