// Writes a decompressed image onto a disk in large sequential writes. The first bytes (the partition table and
// boot code) are held back in memory and written only by commitHead(), after the image's checksum has been
// verified: until then the disk's first MiB is zero, so an interrupted or corrupt deploy never leaves a disk
// that firmware would try to boot.

import { Writable } from 'node:stream';
import { AgentError } from './errors.ts';
import type { BlockDevice } from './block-device.ts';

export const HEAD_BYTES = 1 << 20;
const WRITE_BYTES = 4 << 20;
/** fdatasync this often, so the page cache of a small-memory machine does not fill with dirty pages. */
const SYNC_BYTES = 256 << 20;

export class DiskWriter extends Writable {
  /** Bytes of image taken in (written, or held in the head). */
  written = 0;
  private readonly head = Buffer.alloc(HEAD_BYTES);
  private headLength = 0;
  private buf = Buffer.allocUnsafe(WRITE_BYTES);
  private bufLength = 0;
  /** Disk position of buf[0]. */
  private bufPos = HEAD_BYTES;
  private sinceSync = 0;

  constructor(private readonly dev: BlockDevice) {
    super({ highWaterMark: 4 << 20 });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.take(chunk).then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.flush().then(() => cb(), cb);
  }

  /** Writes the held-back head (call once the image is verified), then flushes the disk. */
  async commitHead(): Promise<void> {
    if (this.headLength > 0) await this.dev.write(0, this.head.subarray(0, this.headLength));
    await this.dev.sync();
  }

  private async take(chunk: Buffer): Promise<void> {
    if (this.written + chunk.length > this.dev.size) {
      throw new AgentError('AGENT_IMAGE_TOO_LARGE', `the image is larger than ${this.dev.path} (${this.dev.size} bytes)`);
    }
    let data = chunk;
    if (this.headLength < HEAD_BYTES) {
      const n = Math.min(HEAD_BYTES - this.headLength, data.length);
      data.copy(this.head, this.headLength, 0, n);
      this.headLength += n;
      data = data.subarray(n);
    }
    this.written += chunk.length;
    while (data.length > 0) {
      const n = Math.min(WRITE_BYTES - this.bufLength, data.length);
      data.copy(this.buf, this.bufLength, 0, n);
      this.bufLength += n;
      data = data.subarray(n);
      if (this.bufLength === WRITE_BYTES) await this.flush();
    }
  }

  private async flush(): Promise<void> {
    if (this.bufLength === 0) return;
    await this.dev.write(this.bufPos, this.buf.subarray(0, this.bufLength));
    this.bufPos += this.bufLength;
    this.sinceSync += this.bufLength;
    this.bufLength = 0;
    if (this.sinceSync >= SYNC_BYTES && !this.dev.isFile) {
      this.sinceSync = 0;
      await this.dev.sync();
    }
  }
}
