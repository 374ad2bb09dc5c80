// Where TFTP files come from: the root directory, the iPXE binaries of the ipxe package, and files
// generated per machine. A source answers `undefined` for a name it does not have ("not found" is a
// normal answer, not an error); it throws TFTP_PATH_REFUSED for a name that must not be served and
// TFTP_READ_FAILED when the file is there but cannot be read.
//
// Every name is checked by `checkTftpPath` before any source sees it. The root source checks again and,
// after opening, asks the kernel where the opened file really is (/proc/self/fd): a symlink, or a
// directory swapped for one between the check and the open, cannot lead outside the root.
import { closeSync, constants, fstatSync, openSync, read as fsRead, readlinkSync, readSync, realpathSync, type Stats } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { errnoCode, MetalboxError } from '../../lib/errors.ts';

export interface TftpFile {
  /** Bytes in the file (octet mode: what the transfer sends; reported as tsize, RFC 2349). */
  readonly size: number;
  /**
   * Up to `length` bytes at `offset`; fewer only at the end of the file. Throws TFTP_READ_FAILED. With
   * `into` (at least `length` bytes), a source may read into it and return a view of it, so the caller
   * can reuse its buffers; it may also ignore it.
   */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  close(): Promise<void>;
  /** Reads return views of bytes the file holds in memory: a caller offering `into` would only waste the buffer. */
  readonly inMemory?: boolean;
}

export interface TftpClient {
  address: string;
  /** From the client's DHCP lease, when it has one. */
  mac?: string;
}

export interface TftpSource {
  /** Opens `path` (already checked by checkTftpPath and normalised) for `client`; undefined when this source has no such file. */
  open(path: string, client: TftpClient): Promise<TftpFile | undefined>;
}

/** Longest file name served, in bytes (the names firmware asks for are short; PATH_MAX games are not). */
export const MAX_PATH_BYTES = 255;

export type PathRefusal = 'empty' | 'too-long' | 'nul' | 'backslash' | 'control' | 'absolute' | 'dot-dot' | 'outside-root' | 'not-a-file';

/**
 * Checks a requested name (latin1, one character per wire byte) and returns its normal form ('.' and
 * empty segments dropped: "./a//b" -> "a/b"), or the reason it is refused. Refused: empty, over 255
 * bytes, NUL, a backslash (a Windows separator: "..\\x" must not become a traversal anywhere),
 * other control bytes, an absolute path, any ".." segment.
 */
export function checkTftpPath(name: string): { path: string } | { refused: PathRefusal } {
  if (name.length === 0) return { refused: 'empty' };
  if (name.length > MAX_PATH_BYTES) return { refused: 'too-long' };
  if (name.includes('\0')) return { refused: 'nul' };
  if (name.includes('\\')) return { refused: 'backslash' };
  if (/[\x01-\x1f\x7f]/.test(name)) return { refused: 'control' };
  if (name.startsWith('/')) return { refused: 'absolute' };
  const segments = name.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) return { refused: 'dot-dot' };
  if (segments.length === 0) return { refused: 'empty' };
  return { path: segments.join('/') };
}

function refused(reason: PathRefusal, path: string): MetalboxError {
  return new MetalboxError('TFTP_PATH_REFUSED', `TFTP: "${path}" refused (${reason})`, { details: { reason, path } });
}

function readFailed(path: string, err: unknown): MetalboxError {
  const errno = errnoCode(err);
  return new MetalboxError('TFTP_READ_FAILED', `TFTP: cannot read "${path}": ${errno ?? (err as Error).message}`, { cause: err, details: { path, errno } });
}

/**
 * A file on disk, read on demand (never loaded whole). Reads go to the libuv thread pool; the fd is closed
 * only once no read is in flight (closing it earlier could let a read land on a reused fd number).
 */
class DiskFile implements TftpFile {
  private inFlight = 0;
  private closing = false;
  private closed = false;

  constructor(private readonly fd: number, readonly size: number, private readonly name: string) {}

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    if (this.closing) throw readFailed(this.name, new Error('the file is closed'));
    const buf = into !== undefined && into.length >= length ? into : Buffer.allocUnsafe(length);
    let got = 0;
    this.inFlight++;
    try {
      // A short read before the end is legal (read(2)); loop until the buffer is full or EOF.
      while (got < length) {
        const n = await new Promise<number>((resolve, reject) => fsRead(this.fd, buf, got, length - got, offset + got, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead))));
        if (n === 0) break;
        got += n;
      }
    } catch (err) {
      throw readFailed(this.name, err);
    } finally {
      this.inFlight--;
      if (this.closing && this.inFlight === 0) this.release();
    }
    return buf.length === got ? buf : buf.subarray(0, got);
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.inFlight === 0) this.release();
  }

  private release(): void {
    if (this.closed) return;
    this.closed = true;
    // close(2) of a regular file is quick: no thread-pool trip for it.
    try { closeSync(this.fd); } catch { /* nothing to do */ }
  }
}

/** A file held in memory (generated content). */
export function bufferFile(data: Buffer): TftpFile {
  return {
    size: data.length,
    inMemory: true,
    read: async (offset, length) => data.subarray(Math.min(offset, data.length), Math.min(offset + length, data.length)),
    close: async () => undefined,
  };
}

/**
 * Small files (the iPXE loaders, menus, pxelinux configs) are read whole once and served from memory: a boot
 * storm fetches the same undionly.kpxe hundreds of times, and each transfer would otherwise read it again
 * through the thread pool. Keyed by device, inode, size and mtime, so a replaced or rewritten file is read anew;
 * bounded (least recently used dropped first).
 */
const SMALL_FILE_BYTES = 1024 * 1024;
const SMALL_CACHE_BYTES = 32 * 1024 * 1024;
const smallFiles = new Map<string, Buffer>();
let smallBytes = 0;

function smallFile(fd: number, st: Stats, rel: string): TftpFile {
  const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  let data = smallFiles.get(key);
  if (data) {
    smallFiles.delete(key);
  } else {
    // Synchronous, like the open and fstat above: at most 1 MiB, once per version of the file.
    data = Buffer.allocUnsafe(st.size);
    let got = 0;
    while (got < data.length) {
      const n = readSync(fd, data, got, data.length - got, got);
      if (n === 0) break;
      got += n;
    }
    if (got !== data.length) throw readFailed(rel, new Error(`read ${got} of ${st.size} bytes`));
    smallBytes += data.length;
    for (const [k, v] of smallFiles) {
      if (smallBytes <= SMALL_CACHE_BYTES) break;
      smallFiles.delete(k);
      smallBytes -= v.length;
    }
  }
  smallFiles.set(key, data);
  return bufferFile(data);
}

// O_NONBLOCK: opening a FIFO someone left in the root must not hang a libuv thread; it has no effect on
// regular files. O_NOCTTY: a tty in the root must not become our controlling terminal.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;

/**
 * Opens `rel` under the real directory `realDir`; undefined when it does not exist or is not a regular
 * file. With `confine`, the opened file's real path must be inside `realDir` (TFTP_PATH_REFUSED otherwise).
 */
async function openIn(realDir: string, rel: string, confine: boolean): Promise<TftpFile | undefined> {
  // open, readlink and fstat run synchronously: on a local file system they take microseconds, while a
  // trip through the libuv thread pool costs a wake-up of another thread for each, on a CPU the event
  // loop keeps busy during a boot storm (measured: transfers of small files ran at a third of the speed).
  let fd: number;
  try {
    fd = openSync(join(realDir, rel), OPEN_FLAGS);
  } catch (err) {
    const code = errnoCode(err);
    // ENOTDIR: a path component is a file; ELOOP: a symlink loop; ENAMETOOLONG: cannot exist here.
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP' || code === 'ENAMETOOLONG') return undefined;
    throw readFailed(rel, err);
  }
  try {
    if (confine) {
      // The kernel's name for what we opened: every symlink resolved, race-free (the fd is already open).
      let real: string;
      try {
        real = readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        real = realpathSync(join(realDir, rel)); // no /proc: the check is then only as good as realpath
      }
      if (!real.startsWith(realDir.endsWith(sep) ? realDir : realDir + sep)) throw refused('outside-root', rel);
    }
    const st = fstatSync(fd);
    if (!st.isFile()) {
      closeSync(fd);
      return undefined;
    }
    if (st.size <= SMALL_FILE_BYTES) {
      const file = smallFile(fd, st, rel);
      closeSync(fd);
      return file;
    }
    return new DiskFile(fd, st.size, rel);
  } catch (err) {
    try { closeSync(fd); } catch { /* already closed */ }
    if (err instanceof MetalboxError) throw err;
    throw readFailed(rel, err);
  }
}

/** The root directory: anything under it, nothing outside it (symlinks that point out are refused). */
export async function createRootSource(root: string): Promise<TftpSource> {
  const realRoot = await realpath(root);
  return {
    async open(path) {
      const checked = checkTftpPath(path);
      if ('refused' in checked) throw refused(checked.refused, path);
      return openIn(realRoot, checked.path, true);
    },
  };
}

/** The iPXE loaders the DHCP service names (dhcp.bootFiles), from the ipxe package's directory; only these names. */
export const IPXE_FILES = ['undionly.kpxe', 'ipxe.efi', 'snponly.efi'] as const;

export function createIpxeSource(dir: string): TftpSource {
  return {
    async open(path) {
      if (!(IPXE_FILES as readonly string[]).includes(path)) return undefined;
      let realDir: string;
      try {
        realDir = await realpath(dir);
      } catch {
        return undefined; // no ipxe package: the file is simply not there
      }
      // Not confined: Debian's /usr/lib/ipxe entries may be symlinks into other package directories.
      return openIn(realDir, path, false);
    },
  };
}

/** Makes a file for one machine, or undefined when `path` is not one it makes. Runs per request: keep it cheap. */
export type TftpGenerator = (path: string, client: TftpClient) => Buffer | undefined | Promise<Buffer | undefined>;

/** Generated files (per-machine content): an extension point other services register generators on. */
export class GeneratedFiles implements TftpSource {
  private readonly generators = new Map<string, TftpGenerator>();

  /** Adds (or replaces) the generator called `name`; returns a function that removes it. */
  register(name: string, generator: TftpGenerator): () => void {
    this.generators.set(name, generator);
    return () => {
      if (this.generators.get(name) === generator) this.generators.delete(name);
    };
  }

  async open(path: string, client: TftpClient): Promise<TftpFile | undefined> {
    for (const generate of this.generators.values()) {
      const data = await generate(path, client);
      if (data !== undefined) return bufferFile(data);
    }
    return undefined;
  }
}

/**
 * `autoexec.ipxe`: iPXE loaded by TFTP (undionly.kpxe, snponly.efi) fetches this from its TFTP server
 * before anything else. It hands the boot to the HTTP boot service with the machine's MAC; `${...}`
 * below are iPXE settings, expanded by iPXE (next-server is the address the firmware got the loader from).
 */
export function autoexecIpxe(httpPort: number): TftpGenerator {
  const script = Buffer.from([
    '#!ipxe',
    '# metalbox: hand the boot over to HTTP',
    'chain http://${next-server}:' + String(httpPort) + '/boot/ipxe?mac=${net0/mac}',
    '',
  ].join('\n'));
  return (path) => (path === 'autoexec.ipxe' ? script : undefined);
}
