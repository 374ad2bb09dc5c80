// A disk opened for positional reads and writes: a real block device, or a regular file standing in for one
// (tests, `metalbox agent --disk FILE`). Plain buffered writes (no O_DIRECT: it needs aligned buffers and gains
// nothing for one sequential stream) and an fsync at the end; the size never changes (a file is not extended).

import { open, realpath, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { AgentError, describe } from './errors.ts';
import { int, readAttr } from './sysfs.ts';

export interface BlockDevice {
  readonly path: string;
  /** Bytes. */
  readonly size: number;
  /** Logical sector size: the unit of partition tables on this disk. */
  readonly sectorSize: number;
  readonly isFile: boolean;
  read(position: number, length: number): Promise<Buffer>;
  write(position: number, data: Uint8Array): Promise<void>;
  /** Writes zeros over [position, position + length), clamped to the disk. */
  zero(position: number, length: number, onProgress?: (done: number) => void): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

const ZERO_CHUNK = 4 << 20;

export async function openBlockDevice(file: string, sysRoot = '/sys'): Promise<BlockDevice> {
  let st;
  try {
    st = await stat(file);
  } catch (err) {
    throw new AgentError('AGENT_DISK_NOT_FOUND', `cannot open ${file}: ${describe(err)}`, { cause: err });
  }
  let size: number;
  let sectorSize = 512;
  if (st.isBlockDevice()) {
    const name = path.basename(await realpath(file));
    const dir = path.join(sysRoot, 'class', 'block', name);
    // 512-byte units whatever the logical block size (include/linux/blkdev.h SECTOR_SHIFT).
    const sectors = int(await readAttr(path.join(dir, 'size')));
    if (sectors === undefined) throw new AgentError('AGENT_DISK_NOT_FOUND', `${file}: the kernel reports no size for ${name}`);
    size = sectors * 512;
    sectorSize = int(await readAttr(path.join(dir, 'queue', 'logical_block_size'))) ?? 512;
  } else if (st.isFile()) {
    size = st.size;
  } else {
    throw new AgentError('AGENT_DISK_NOT_FOUND', `${file} is neither a block device nor a file`);
  }
  let fh: FileHandle;
  try {
    fh = await open(file, 'r+');
  } catch (err) {
    throw new AgentError('AGENT_DISK_IO', `cannot open ${file} for writing: ${describe(err)}`, { cause: err });
  }
  return new FileBlockDevice(file, fh, size, sectorSize, st.isFile());
}

class FileBlockDevice implements BlockDevice {
  constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly size: number,
    readonly sectorSize: number,
    readonly isFile: boolean,
  ) {}

  async read(position: number, length: number): Promise<Buffer> {
    this.check(position, length);
    const buf = Buffer.alloc(length);
    let done = 0;
    try {
      while (done < length) {
        const { bytesRead } = await this.fh.read(buf, done, length - done, position + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
    } catch (err) {
      throw new AgentError('AGENT_DISK_IO', `reading ${this.path} at ${position}: ${describe(err)}`, { cause: err });
    }
    if (done < length) throw new AgentError('AGENT_DISK_IO', `reading ${this.path} at ${position}: short read (${done} of ${length} bytes)`);
    return buf;
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    this.check(position, data.length);
    let done = 0;
    try {
      while (done < data.length) {
        const { bytesWritten } = await this.fh.write(data, done, data.length - done, position + done);
        done += bytesWritten;
      }
    } catch (err) {
      throw new AgentError('AGENT_DISK_IO', `writing ${this.path} at ${position}: ${describe(err)}`, { cause: err });
    }
  }

  async zero(position: number, length: number, onProgress?: (done: number) => void): Promise<void> {
    const start = Math.max(0, Math.min(position, this.size));
    const end = Math.max(start, Math.min(position + length, this.size));
    const zeros = Buffer.alloc(Math.min(ZERO_CHUNK, end - start));
    for (let p = start; p < end; p += zeros.length) {
      await this.write(p, zeros.subarray(0, Math.min(zeros.length, end - p)));
      onProgress?.(Math.min(end, p + zeros.length) - start);
    }
  }

  async sync(): Promise<void> {
    try {
      await this.fh.sync();
    } catch (err) {
      throw new AgentError('AGENT_DISK_IO', `flushing ${this.path}: ${describe(err)}`, { cause: err });
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  private check(position: number, length: number): void {
    if (!Number.isSafeInteger(position) || position < 0 || length < 0 || position + length > this.size) {
      throw new RangeError(`${this.path}: [${position}, ${position + length}) is outside the disk (${this.size} bytes)`);
    }
  }
}
