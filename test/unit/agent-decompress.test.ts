// The deploy decompressors against streams made by the real tools (gzip, xz, zstd, busybox).
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import t from 'tap';
import { createDecompressor, xzCommand } from '../../src/agent/decompress.ts';
import type { Compression } from '../../src/agent/task.ts';

/** A few MiB that compress like a disk image: random runs, zero runs, text. */
function imageLike(): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < 24; i++) {
    parts.push(randomBytes(32 << 10), Buffer.alloc(64 << 10), Buffer.from(`line ${i} of some configuration file\n`.repeat(800)));
  }
  return Buffer.concat(parts);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function tool(cmd: string, args: string[], input: Buffer): Buffer {
  return execFileSync(cmd, args, { input, maxBuffer: 64 << 20 });
}

/** Feeds `input` in uneven chunks through the decompressor; resolves with the output. */
async function decompress(compression: Compression, input: Buffer, env?: NodeJS.ProcessEnv): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const sizes = [1, 7, 100, 4096, 65536, 300_000];
  const pieces: Buffer[] = [];
  for (let off = 0, i = 0; off < input.length; i++) {
    const n = sizes[i % sizes.length] as number;
    pieces.push(input.subarray(off, off + n));
    off += n;
  }
  await pipeline(Readable.from(pieces), createDecompressor(compression, env), new Writable({
    write(chunk: Buffer, _e, cb) { chunks.push(Buffer.from(chunk)); cb(); },
  }));
  return Buffer.concat(chunks);
}

const data = imageLike();

t.test('each format made by its own tool decompresses to the same bytes', async (t) => {
  const made: [Compression, Buffer][] = [
    ['none', data],
    ['gzip', tool('gzip', ['-c', '-6'], data)],
    ['xz', tool('xz', ['-c', '-3'], data)],
    ['zstd', tool('zstd', ['-c', '-q', '-3'], data)],
    ['zstd', tool('zstd', ['-c', '-q', '-19', '--long=24'], data)],
  ];
  for (const [c, input] of made) {
    t.ok(input.length <= data.length, `${c}: ${input.length} bytes in`);
    t.equal(sha(await decompress(c, input)), sha(data), `${c} round trip`);
  }
});

t.test('concatenated members and frames (pigz, zstd -T, cat a b) are one stream', async (t) => {
  const half = data.length >> 1;
  const a = data.subarray(0, half);
  const b = data.subarray(half);
  t.equal(sha(await decompress('gzip', Buffer.concat([tool('gzip', ['-c'], a), tool('gzip', ['-c'], b)]))), sha(data), 'gzip members');
  t.equal(sha(await decompress('zstd', Buffer.concat([tool('zstd', ['-c', '-q'], a), tool('zstd', ['-c', '-q'], b)]))), sha(data), 'zstd frames');
  t.equal(sha(await decompress('xz', Buffer.concat([tool('xz', ['-c'], a), tool('xz', ['-c'], b)]))), sha(data), 'xz streams');
});

t.test('xz through busybox xzcat when no xzcat is installed (the ephemeral environment)', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-bb-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const busybox = execFileSync('sh', ['-c', 'command -v busybox'], { encoding: 'utf8' }).trim();
  symlinkSync(busybox, path.join(dir, 'busybox'));
  const env = { PATH: dir };
  t.same(xzCommand(env), { file: path.join(dir, 'busybox'), args: ['xzcat'] });
  t.equal(sha(await decompress('xz', tool('xz', ['-c', '-3'], data), env)), sha(data), 'busybox xzcat');
  t.same(xzCommand({ PATH: '/usr/bin:/bin' }).args, [], 'xz-utils xzcat where present');
});

t.test('corrupt and truncated input fails the stream', async (t) => {
  const cases: [Compression, Buffer][] = [
    ['gzip', tool('gzip', ['-c'], data)],
    ['xz', tool('xz', ['-c'], data)],
    ['zstd', tool('zstd', ['-c', '-q'], data)],
  ];
  for (const [c, good] of cases) {
    await t.rejects(decompress(c, good.subarray(0, good.length - 100)), `${c}: truncated`);
    const bad = Buffer.from(good);
    for (let i = 0, p = bad.length >> 1; i < 64; i++, p += 13) bad.writeUInt8(bad.readUInt8(p) ^ 0x5a, p);
    // fzstd skips the frame's XXH64 content checksum, so corrupt zstd may decode to other bytes instead of
    // failing: the deploy's sha256 over the compressed stream is what catches it (agent-run tests).
    const out = await decompress(c, bad).catch(() => undefined);
    if (c === 'zstd') t.ok(out === undefined || sha(out) !== sha(data), `${c}: corrupted in the middle fails or differs`);
    else t.equal(out, undefined, `${c}: corrupted in the middle fails`);
    await t.rejects(decompress(c, randomBytes(5000)), `${c}: not that format at all`);
  }
  await t.rejects(decompress('xz', Buffer.from('not xz at all, not at all')), { message: /^xz: / }, 'the program\'s own message');
});
