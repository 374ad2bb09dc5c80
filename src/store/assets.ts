// The boot asset store: kernels, initrds and root filesystems on disk, content-addressed, with their records
// (boot images) in the store's `images` collection.
//
// Layout under the assets dir (config boot.assetsDir, default <stateDir>/assets):
//   blobs/<sha256>   file contents, named by their sha-256 (hex); shared between images that hold the same file
//   tmp/             downloads in progress; emptied at open
// A boot image is a named set of boot files: { kernel, initrd, rootfs? } plus a kernel command line.
//
// Durability and order: a file is streamed to tmp/ while it is hashed and counted, fsynced, renamed to
// blobs/<sha256> and the blobs dir fsynced; only then is the record written (a durable store write). Removal
// deletes the record first, then the blobs no other image references. A crash can so leave an unreferenced
// blob, never a record without its blobs; `open()` removes such leftovers. Adds and removes of this process
// run one at a time (a blob being committed must not be collected by a concurrent remove); the store's
// lock keeps other processes out.
//
// User input never becomes a path here: blobs are named by the hash we computed, images by a checked name
// that is only ever a store key.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { MetalboxError, errnoCode } from '../lib/errors.ts';
import type { ImageRecord, Store } from './types.ts';

/** The boot files an image may hold, in the order they are added. */
export const IMAGE_FILES = ['kernel', 'initrd', 'rootfs'] as const;
export type ImageFileRole = (typeof IMAGE_FILES)[number];

/** Image names: lower-case words, usable in a URL path segment and a shell without quoting. */
export const IMAGE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** Extra kernel arguments: one line of printable ASCII (x86 COMMAND_LINE_SIZE is 2048 in all). */
const CMDLINE = /^[\x20-\x7e]{0,1024}$/;
const SHA256 = /^[0-9a-f]{64}$/;
/** Large reads: a 100 MiB file in 100 reads, not 1,600 (the stream default is 64 KiB). */
const READ_CHUNK = 1024 * 1024;
const PROGRESS_EVERY_MS = 250;
/** Bytes of each open blob kept in memory: HTTP sends them with the headers, then the rest by sendfile. */
export const BLOB_HEAD_BYTES = 64 * 1024;
/** Blobs kept open between downloads at most (one descriptor each); beyond, the idle ones are closed. */
const OPEN_BLOBS_MAX = 32;
const STALL_MS = 60_000;

export interface ImageFile {
  sha256: string;
  size: number;
  /** Where it came from: an absolute path, or a URL without credentials, query or fragment. */
  source: string;
}

export interface BootImage extends ImageRecord {
  /** Same as `name`: images are keyed by name. */
  id: string;
  name: string;
  files: { kernel: ImageFile; initrd: ImageFile; rootfs?: ImageFile };
  /** Extra kernel arguments for this image (after metalbox's own). */
  cmdline: string;
  /** Sum of the file sizes. */
  size: number;
  createdAt: string;
}

export type AssetSource =
  | { kind: 'file'; path: string; sha256?: string; /** recorded as the source instead of the path (an upload's name) */ label?: string }
  | { kind: 'url'; url: string; sha256?: string };

export interface AssetProgress {
  role: ImageFileRole;
  source: string;
  bytes: number;
  /** Announced or known size; undefined for a download without Content-Length. */
  total: number | undefined;
  elapsedMs: number;
  done: boolean;
}

export interface AddImageInput {
  name: string;
  files: Partial<Record<ImageFileRole, AssetSource>>;
  cmdline?: string;
}

export interface AddOptions {
  maxBytes: number;
  /** A download that delivers nothing for this long fails (ASSET_FETCH_FAILED). Default 60 s. */
  stallMs?: number;
  onProgress?: (p: AssetProgress) => void;
  signal?: AbortSignal;
}

/**
 * A source spec from the command line: an http(s) URL or a local path (resolved against `cwd`), with an
 * optional expected checksum as a `#sha256=HEX` suffix (pip's convention; a fragment never reaches a server).
 */
export function parseSource(spec: string, cwd: string = process.cwd()): AssetSource {
  let text = spec;
  let sha256: string | undefined;
  const m = /#sha256=([0-9a-fA-F]{64})$/.exec(text);
  if (m) {
    sha256 = m[1]!.toLowerCase();
    text = text.slice(0, m.index);
  }
  if (text === '') throw new MetalboxError('IMAGE_INVALID', `empty source "${spec}"`);
  const withSum = <T extends AssetSource>(s: T): T => (sha256 === undefined ? s : { ...s, sha256 });
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new MetalboxError('IMAGE_INVALID', `"${redactUrl(text)}" is not a valid URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new MetalboxError('IMAGE_INVALID', `${url.protocol} URLs are not supported (http or https)`);
    return withSum({ kind: 'url', url: url.href });
  }
  return withSum({ kind: 'file', path: resolve(cwd, text) });
}

/** A URL as it may be stored and logged: no credentials, query (signed URLs carry secrets there) or fragment. */
export function redactUrl(text: string): string {
  try {
    const u = new URL(text);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(unparseable URL)';
  }
}

function freezeImage(image: BootImage): BootImage {
  for (const f of Object.values(image.files)) Object.freeze(f);
  Object.freeze(image.files);
  return Object.freeze(image);
}

export function checkImageName(name: unknown): string {
  if (typeof name !== 'string' || !IMAGE_NAME.test(name)) {
    throw new MetalboxError('IMAGE_INVALID', `image name ${JSON.stringify(name)} must be 1-63 of a-z 0-9 . _ - starting with a letter or digit`);
  }
  return name;
}

/**
 * A blob open for reading, shared by every download of it: a boot storm fetches the same kernel and initrd
 * hundreds of times, and one descriptor (checked once against the record's size) and its first bytes in
 * memory save each download an open, a stat, a read and a close on the thread pool. Blobs never change
 * (named by their hash); a removed one stays readable through the descriptor until its last reader closes.
 */
export interface BlobReader {
  readonly fd: number;
  readonly size: number;
  /** The blob's first min(size, BLOB_HEAD_BYTES) bytes. */
  readonly head: Buffer;
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  /** Lets go of this reader (once; later calls do nothing). */
  close(): Promise<void>;
}

interface OpenBlob { fh: FileHandle; size: number; head: Buffer }
/** A shared blob's bookkeeping, kept synchronously: `readers` counts those holding it or awaiting its open. */
interface SharedBlob { opening: Promise<OpenBlob>; readers: number; retired: boolean }

export class AssetStore {
  readonly blobsDir: string;
  private readonly tmpDir: string;
  /** Adds and removes, one at a time (see the header). */
  private chain: Promise<unknown> = Promise.resolve();
  /** Image records by name (`null`: known absent). Every change goes through add/remove, which update it. */
  private readonly records = new Map<string, BootImage | null>();
  /** Blobs open for reading (see BlobReader), oldest first. */
  private readonly openBlobs = new Map<string, SharedBlob>();

  constructor(readonly dir: string, private readonly store: Store) {
    this.blobsDir = join(dir, 'blobs');
    this.tmpDir = join(dir, 'tmp');
  }

  /** Creates the layout, empties tmp/, removes blobs no image references (left by a crash). */
  async open(): Promise<{ removedBlobs: number }> {
    try {
      await mkdir(this.blobsDir, { recursive: true, mode: 0o755 });
      await rm(this.tmpDir, { recursive: true, force: true });
      await mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new MetalboxError('ASSET_WRITE_FAILED', `cannot prepare the asset store ${this.dir}: ${errnoCode(err) ?? (err as Error).message}`, { cause: err });
    }
    return this.serialized(async () => ({ removedBlobs: await this.collect(new Set()) }));
  }

  blobPath(sha256: string): string {
    if (!SHA256.test(sha256)) throw new TypeError(`blobPath: not a sha256: ${sha256}`);
    return join(this.blobsDir, sha256);
  }

  /** The image's record (frozen: shared by every caller), from memory after the first read. */
  async get(name: string): Promise<BootImage | undefined> {
    if (!IMAGE_NAME.test(name)) return undefined;
    const known = this.records.get(name);
    if (known !== undefined) return known ?? undefined;
    const generation = this.generation;
    const record = (await this.store.images.get(name)) as BootImage | undefined;
    const frozen = record ? freezeImage(record) : undefined;
    // Not cached when an add or remove began or ended during the read (it may have changed the record); one that
    // is still running clears the cache when it ends.
    if (generation === this.generation) {
      if (this.records.size >= 1024) this.records.clear();
      this.records.set(name, frozen ?? null);
    }
    return frozen;
  }

  async list(): Promise<BootImage[]> {
    const out: BootImage[] = [];
    for await (const [, v] of this.store.images.entries()) out.push(v as BootImage);
    return out;
  }

  /**
   * Opens a registered file for reading. The size is checked against the record: a blob that is missing or
   * has another size is ASSET_MISSING (the operator must re-add the image), never served short.
   */
  async openBlob(file: ImageFile): Promise<FileHandle> {
    let fh: FileHandle | undefined;
    try {
      fh = await open(this.blobPath(file.sha256), 'r');
      const st = await fh.stat();
      if (!st.isFile() || st.size !== file.size) throw new Error(`size ${st.size}, expected ${file.size}`);
      return fh;
    } catch (err) {
      await fh?.close().catch(() => undefined);
      throw new MetalboxError('ASSET_MISSING', `boot file ${file.sha256} is missing or damaged in the asset store: ${errnoCode(err) ?? (err as Error).message}`, { cause: err });
    }
  }

  /**
   * A shared reader of a registered file (see BlobReader); close it when done. ASSET_MISSING as openBlob.
   */
  async readBlob(file: ImageFile): Promise<BlobReader> {
    let shared = this.openBlobs.get(file.sha256);
    if (shared) {
      // Most recently used last: trimOpenBlobs retires from the front.
      this.openBlobs.delete(file.sha256);
      this.openBlobs.set(file.sha256, shared);
    } else {
      const opening = this.openShared(file);
      const entry: SharedBlob = shared = { opening, readers: 0, retired: false };
      this.openBlobs.set(file.sha256, entry);
      opening.catch(() => { if (this.openBlobs.get(file.sha256) === entry) this.openBlobs.delete(file.sha256); });
      this.trimOpenBlobs();
    }
    const entry = shared;
    entry.readers++;
    let blob: OpenBlob;
    try {
      blob = await entry.opening;
      if (blob.size !== file.size) throw new MetalboxError('ASSET_MISSING', `boot file ${file.sha256} has ${blob.size} bytes, its record says ${file.size}`);
    } catch (err) {
      this.release(entry);
      throw err;
    }
    let closed = false;
    return {
      fd: blob.fh.fd, size: blob.size, head: blob.head,
      read: (buffer, offset, length, position) => blob.fh.read(buffer, offset, length, position),
      close: async () => {
        if (closed) return;
        closed = true;
        await this.release(entry);
      },
    };
  }

  /** One reader fewer; a retired blob's descriptor closes with its last reader. */
  private async release(entry: SharedBlob): Promise<void> {
    entry.readers--;
    if (entry.retired && entry.readers === 0) await entry.opening.then((b) => b.fh.close()).catch(() => undefined);
  }

  private async openShared(file: ImageFile): Promise<OpenBlob> {
    const fh = await this.openBlob(file);
    try {
      const head = Buffer.allocUnsafe(Math.min(file.size, BLOB_HEAD_BYTES));
      const { bytesRead } = await fh.read(head, 0, head.length, 0);
      if (bytesRead !== head.length) throw new Error(`read ${bytesRead} of the first ${head.length} bytes`);
      return { fh, size: file.size, head };
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw new MetalboxError('ASSET_MISSING', `boot file ${file.sha256} cannot be read: ${errnoCode(err) ?? (err as Error).message}`, { cause: err });
    }
  }

  /**
   * Stops sharing the least recently used blobs beyond OPEN_BLOBS_MAX (a later download opens its own); each
   * descriptor closes once its readers have closed.
   */
  private trimOpenBlobs(): void {
    for (const sha of this.openBlobs.keys()) {
      if (this.openBlobs.size <= OPEN_BLOBS_MAX) return;
      this.retireBlob(sha);
    }
  }

  /** Stops sharing a blob now; its descriptor closes once it has no reader. */
  private retireBlob(sha: string): void {
    const entry = this.openBlobs.get(sha);
    if (!entry) return;
    this.openBlobs.delete(sha);
    entry.retired = true;
    if (entry.readers === 0) void entry.opening.then((b) => b.fh.close()).catch(() => undefined);
  }

  /** Downloads/copies every file, then registers the image. Nothing is registered unless every file arrived whole. */
  async add(input: AddImageInput, options: AddOptions): Promise<BootImage> {
    const name = checkImageName(input.name);
    const cmdline = (input.cmdline ?? '').trim();
    if (!CMDLINE.test(cmdline)) throw new MetalboxError('IMAGE_INVALID', 'the kernel command line must be one line of printable ASCII, at most 1024 characters');
    for (const role of Object.keys(input.files)) {
      if (!(IMAGE_FILES as readonly string[]).includes(role)) throw new MetalboxError('IMAGE_INVALID', `unknown image file "${role}" (kernel, initrd, rootfs)`);
    }
    if (!input.files.kernel || !input.files.initrd) throw new MetalboxError('IMAGE_INVALID', 'an image needs a kernel and an initrd');
    if (await this.store.images.get(name)) throw exists(name);

    const fetched: { role: ImageFileRole; tmp: string; file: ImageFile }[] = [];
    try {
      for (const role of IMAGE_FILES) {
        const source = input.files[role];
        if (!source) continue;
        fetched.push({ role, ...(await this.ingest(role, source, options)) });
      }
      return await this.serialized(async () => {
        if (await this.store.images.get(name)) throw exists(name);
        for (const f of fetched) await this.commitBlob(f.tmp, f.file);
        await this.syncBlobsDir();
        const files = Object.fromEntries(fetched.map((f) => [f.role, f.file])) as BootImage['files'];
        const record: BootImage = {
          id: name, name, files, cmdline,
          size: fetched.reduce((n, f) => n + f.file.size, 0),
          createdAt: new Date().toISOString(),
        };
        await this.store.images.put(name, record);
        return record;
      });
    } finally {
      for (const f of fetched) await unlink(f.tmp).catch(() => undefined);
    }
  }

  /** Deletes the record, then the blobs no other image holds. `undefined` when there is no such image. */
  async remove(name: string): Promise<{ image: BootImage; removedBlobs: number } | undefined> {
    return this.serialized(async () => {
      const image = await this.get(name);
      if (!image) return undefined;
      await this.store.images.del(name);
      return { image, removedBlobs: await this.collect(new Set(Object.values(image.files).map((f) => f.sha256))) };
    });
  }

  // ---------------------------------------------------------------------------------------------------------

  /** Moves when an add or remove (they change records) begins and when it ends: `get` caches a read only if it did not. */
  private generation = 0;

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(async () => {
      this.generation++;
      try {
        return await fn();
      } finally {
        this.records.clear();
        this.generation++;
      }
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Removes blobs no image references: those in `candidates`, or every blob when it is empty. */
  private async collect(candidates: Set<string>): Promise<number> {
    const referenced = new Set<string>();
    for (const image of await this.list()) for (const f of Object.values(image.files)) referenced.add(f.sha256);
    const names = candidates.size > 0 ? [...candidates] : await readdir(this.blobsDir);
    let removed = 0;
    for (const sha of names) {
      if (referenced.has(sha)) continue;
      this.retireBlob(sha);
      try {
        await unlink(join(this.blobsDir, sha));
        removed++;
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw writeFailed(`cannot remove blob ${sha}`, err);
      }
    }
    if (removed > 0) await this.syncBlobsDir();
    return removed;
  }

  private async commitBlob(tmp: string, file: ImageFile): Promise<void> {
    const dest = this.blobPath(file.sha256);
    const existing = await stat(dest).catch(() => undefined);
    if (existing?.isFile() && existing.size === file.size) return; // same content already stored (by its hash)
    try {
      await rename(tmp, dest);
    } catch (err) {
      throw writeFailed(`cannot move ${file.sha256} into the asset store`, err);
    }
  }

  private async syncBlobsDir(): Promise<void> {
    let fh: FileHandle | undefined;
    try {
      fh = await open(this.blobsDir, 'r');
      await fh.sync();
    } catch (err) {
      throw writeFailed('cannot sync the blobs directory', err);
    } finally {
      await fh?.close().catch(() => undefined);
    }
  }

  /** Streams one source to a temporary file, hashing and counting; fsyncs it. */
  private async ingest(role: ImageFileRole, source: AssetSource, options: AddOptions): Promise<{ tmp: string; file: ImageFile }> {
    // Downloads: a timer that every chunk restarts aborts a download that stalls.
    const stall = new AbortController();
    const stallMs = options.stallMs ?? STALL_MS;
    let stallTimer: NodeJS.Timeout | undefined;
    const alive = () => {
      clearTimeout(stallTimer);
      if (source.kind === 'url') stallTimer = setTimeout(() => stall.abort(), stallMs);
    };
    alive();
    const signal = options.signal ? AbortSignal.any([options.signal, stall.signal]) : stall.signal;
    const stalled = () => new MetalboxError('ASSET_FETCH_FAILED', `${redactSource(source)}: no data for ${stallMs / 1000} s`);
    let opened: OpenedSource;
    try {
      opened = source.kind === 'file' ? await openFile(source.path, options.maxBytes, source.label) : await openUrl(source.url, options, signal);
    } catch (err) {
      clearTimeout(stallTimer);
      throw stall.signal.aborted ? stalled() : err;
    }
    const tmp = join(this.tmpDir, `${role}-${randomBytes(8).toString('hex')}`);
    const hash = createHash('sha256');
    const started = Date.now();
    let bytes = 0;
    let lastReport = 0;
    const report = (done: boolean): void => {
      const now = Date.now();
      if (!options.onProgress || (!done && now - lastReport < PROGRESS_EVERY_MS)) return;
      lastReport = now;
      options.onProgress({ role, source: opened.label, bytes, total: opened.total, elapsedMs: now - started, done });
    };
    let out: FileHandle;
    try {
      out = await open(tmp, 'wx', 0o644);
    } catch (err) {
      opened.stream.destroy();
      throw writeFailed(`cannot create a temporary file in ${this.tmpDir}`, err);
    }
    try {
      report(false);
      try {
        for await (const chunk of opened.stream as AsyncIterable<Uint8Array>) {
          alive();
          if (options.signal?.aborted) throw new MetalboxError('ASSET_FETCH_FAILED', `${role}: cancelled`);
          bytes += chunk.length;
          if (bytes > options.maxBytes) throw tooLarge(opened.label, options.maxBytes);
          if (opened.total !== undefined && bytes > opened.total) throw incomplete(opened.label, bytes, opened.total);
          hash.update(chunk);
          await writeAll(out, chunk);
          report(false);
        }
      } catch (err) {
        if (err instanceof MetalboxError) throw err;
        if (options.signal?.aborted) throw new MetalboxError('ASSET_FETCH_FAILED', `${role}: cancelled`, { cause: err });
        if (stall.signal.aborted) throw stalled();
        if (errnoCode(err) === 'ENOSPC' || errnoCode(err) === 'EIO' || errnoCode(err) === 'EDQUOT') throw writeFailed(`cannot write ${role}`, err);
        // The peer closed before the announced length (undici: "terminated"), or the file went away.
        if (opened.total !== undefined && bytes < opened.total) throw incomplete(opened.label, bytes, opened.total, err);
        throw source.kind === 'file'
          ? new MetalboxError('ASSET_SOURCE_UNREADABLE', `cannot read ${opened.label}: ${errnoCode(err) ?? (err as Error).message}`, { cause: err })
          : new MetalboxError('ASSET_FETCH_FAILED', `download of ${opened.label} failed: ${causeText(err)}`, { cause: err });
      }
      if (opened.total !== undefined && bytes !== opened.total) throw incomplete(opened.label, bytes, opened.total);
      try {
        await out.sync();
      } catch (err) {
        throw writeFailed(`cannot sync ${role}`, err);
      }
      report(true);
    } catch (err) {
      opened.stream.destroy();
      await out.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw err;
    } finally {
      clearTimeout(stallTimer);
    }
    await out.close();
    const sha256 = hash.digest('hex');
    if (source.sha256 !== undefined && source.sha256 !== sha256) {
      await unlink(tmp).catch(() => undefined);
      throw new MetalboxError('ASSET_CHECKSUM_MISMATCH', `${opened.label}: sha256 is ${sha256}, expected ${source.sha256}`);
    }
    return { tmp, file: { sha256, size: bytes, source: opened.label } };
  }
}

interface OpenedSource { stream: Readable | AsyncIterable<Uint8Array> & { destroy(): void }; total: number | undefined; label: string }

async function openFile(path: string, maxBytes: number, label: string = path): Promise<OpenedSource> {
  if (!isAbsolute(path)) throw new TypeError(`openFile: not an absolute path: ${path}`);
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, 'r');
    const st = await fh.stat();
    if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EISDIR' });
    if (st.size > maxBytes) throw tooLarge(path, maxBytes);
    const stream = createReadStream('', { fd: fh, highWaterMark: READ_CHUNK });
    return { stream, total: st.size, label };
  } catch (err) {
    await fh?.close().catch(() => undefined);
    if (err instanceof MetalboxError) throw err;
    throw new MetalboxError('ASSET_SOURCE_UNREADABLE', `cannot read ${path}: ${errnoCode(err) ?? (err as Error).message}`, { cause: err });
  }
}

async function openUrl(url: string, options: AddOptions, signal: AbortSignal): Promise<OpenedSource> {
  const label = redactUrl(url);
  let res: Response;
  try {
    // fetch follows up to 20 redirects. identity: a decoded body would not match a Content-Length.
    res = await fetch(url, { redirect: 'follow', headers: { 'accept-encoding': 'identity' }, signal });
  } catch (err) {
    throw new MetalboxError('ASSET_FETCH_FAILED', `cannot fetch ${label}: ${causeText(err)}`, { cause: err });
  }
  if (!res.ok || res.body === null) {
    await res.body?.cancel().catch(() => undefined);
    throw new MetalboxError('ASSET_FETCH_FAILED', `${label} answered ${res.status} ${res.statusText}`.trimEnd(), { details: { status: res.status } });
  }
  const encoding = res.headers.get('content-encoding');
  const lengthHeader = res.headers.get('content-length');
  const announced = lengthHeader !== null && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
  // A server that encodes anyway sends the encoded length; the decoded body cannot be checked against it.
  const total = encoding === null || encoding === 'identity' ? announced : undefined;
  if (announced !== undefined && announced > options.maxBytes) {
    await res.body.cancel().catch(() => undefined);
    throw tooLarge(label, options.maxBytes);
  }
  const body = res.body;
  const iterable = {
    [Symbol.asyncIterator]: () => (body as unknown as AsyncIterable<Uint8Array>)[Symbol.asyncIterator](),
    destroy: () => { void body.cancel().catch(() => undefined); },
  };
  return { stream: iterable, total, label };
}

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let off = 0;
  while (off < chunk.length) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
    off += bytesWritten;
  }
}

const redactSource = (s: AssetSource): string => (s.kind === 'file' ? s.path : redactUrl(s.url));

function causeText(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
  return errnoCode(cause) ?? (cause as Error)?.message ?? String(cause);
}

/** The three iPXE binaries served by name (Debian's `ipxe` package installs them in /usr/lib/ipxe). */
export const IPXE_BINARIES = ['undionly.kpxe', 'ipxe.efi', 'snponly.efi'] as const;
export type IpxeBinary = (typeof IPXE_BINARIES)[number];

export interface IpxeFileInfo { name: IpxeBinary; path: string; size: number; sha256: string }

/**
 * The iPXE binaries in boot.ipxeDir, served as they are (a package upgrade takes effect at once). Size and
 * sha-256 are those of the open file; the hash is computed once per file version (device, inode, size, mtime).
 */
export class IpxeBinaries {
  private readonly hashes = new Map<string, Promise<string>>();

  constructor(readonly dir: string) {}

  static isName(name: string): name is IpxeBinary {
    return (IPXE_BINARIES as readonly string[]).includes(name);
  }

  /** Opens one of the three; `undefined` when it is not installed. Close the handle when done. */
  async open(name: IpxeBinary): Promise<{ fh: FileHandle; info: IpxeFileInfo } | undefined> {
    if (!IpxeBinaries.isName(name)) throw new TypeError(`IpxeBinaries.open: ${name}`);
    const path = join(this.dir, name);
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
      throw new MetalboxError('ASSET_MISSING', `cannot open ${path}: ${errnoCode(err) ?? (err as Error).message}`, { cause: err });
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) { await fh.close(); return undefined; }
      const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
      const id = `${name}\0${key}`;
      let sha = this.hashes.get(id);
      if (!sha) {
        sha = hashHandle(fh, st.size);
        for (const k of this.hashes.keys()) if (k.startsWith(`${name}\0`)) this.hashes.delete(k);
        this.hashes.set(id, sha);
        sha.catch(() => this.hashes.delete(id));
      }
      return { fh, info: { name, path, size: st.size, sha256: await sha } };
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw new MetalboxError('ASSET_MISSING', `cannot read ${path}: ${errnoCode(err) ?? (err as Error).message}`, { cause: err });
    }
  }

  /** Those of the three that are installed, with size and sha-256. */
  async describe(): Promise<IpxeFileInfo[]> {
    const out: IpxeFileInfo[] = [];
    for (const name of IPXE_BINARIES) {
      const opened = await this.open(name);
      if (!opened) continue;
      await opened.fh.close();
      out.push(opened.info);
    }
    return out;
  }
}

/** sha-256 of a file through positional reads (the handle's position is left alone). */
async function hashHandle(fh: FileHandle, size: number): Promise<string> {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, Math.max(size, 1)));
  for (let pos = 0; pos < size;) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return hash.digest('hex');
}

const exists = (name: string) => new MetalboxError('IMAGE_EXISTS', `image "${name}" already exists; remove it first`, { details: { name } });
const tooLarge = (label: string, max: number) => new MetalboxError('ASSET_TOO_LARGE', `${label} is larger than boot.maxAssetBytes (${max} bytes)`, { details: { max } });
const incomplete = (label: string, got: number, expected: number, cause?: unknown) => new MetalboxError('ASSET_INCOMPLETE',
  `${label}: got ${got} bytes, the server announced ${expected}`, { cause, details: { got, expected } });
const writeFailed = (what: string, err: unknown) => new MetalboxError('ASSET_WRITE_FAILED', `${what}: ${errnoCode(err) ?? (err as Error).message}`, { cause: err });
