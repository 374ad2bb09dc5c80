// The sender state machine (src/services/tftp/transfer.ts) against scripted and simulated clients, with no
// sockets: lockstep and windowed transfers, the final empty block, OACK then ACK 0, partial and duplicate ACKs,
// the Sorcerer's Apprentice rule, back-off and giving up, block-number wrap past 65535, netascii, read errors,
// a lossy network; and option negotiation (RFC 2347/2348/2349/7440).
import t from 'tap';
import { MetalboxError } from '../../src/lib/errors.ts';
import { decodeTftp, encodeTftp, toNetascii, type TftpData, type TftpPacket } from '../../src/protocols/tftp/index.ts';
import { negotiate } from '../../src/services/tftp/negotiate.ts';
import { bufferFile, type TftpFile } from '../../src/services/tftp/sources.ts';
import { Transfer, type TransferParams, type TransferResult } from '../../src/services/tftp/transfer.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) b[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  return b;
}

/** A transfer whose sends are recorded; `ended` resolves with the result. */
function harness(over: Partial<TransferParams> & { file: TftpFile }) {
  const sent: TftpPacket[] = [];
  let resolveEnd!: (r: TransferResult) => void;
  const ended = new Promise<TransferResult>((r) => { resolveEnd = r; });
  const tr = new Transfer({
    netascii: false, blockSize: 8, windowSize: 1, timeoutMs: 30, retries: 3,
    send: (d) => { sent.push(decodeTftp(Buffer.from(d))); return true; },
    onEnd: (r) => resolveEnd(r),
    ...over,
  });
  const ack = (block: number) => tr.onPacket({ op: 'ACK', block });
  return { tr, sent, ended, ack };
}

/** Waits until `n` packets have been sent (reads are async). */
async function until(sent: unknown[], n: number): Promise<void> {
  for (let i = 0; i < 200 && sent.length < n; i++) await sleep(1);
}

t.test('lockstep: DATA 1..n, the last one short', async (t) => {
  const data = pattern(20);
  const h = harness({ file: bufferFile(data) });
  h.tr.start();
  for (let b = 1; b <= 3; b++) {
    await until(h.sent, b);
    t.match(h.sent[b - 1], { op: 'DATA', block: b });
    h.ack(b);
  }
  const r = await h.ended;
  t.match(r, { ok: true, bytes: 20, blocks: 3, retransmitted: 0 });
  t.ok(Buffer.concat(h.sent.map((p) => (p as TftpData).data)).equals(data));
});

t.test('a file of whole blocks ends with an empty block; an empty file is one empty block', async (t) => {
  const h = harness({ file: bufferFile(pattern(16)) });
  h.tr.start();
  for (let b = 1; b <= 3; b++) { await until(h.sent, b); h.ack(b); }
  t.same(h.sent.map((p) => (p as TftpData).data.length), [8, 8, 0]);
  t.match(await h.ended, { ok: true, bytes: 16 });
  const e = harness({ file: bufferFile(Buffer.alloc(0)) });
  e.tr.start();
  await until(e.sent, 1);
  e.ack(1);
  t.match(await e.ended, { ok: true, bytes: 0, blocks: 1 });
});

t.test('OACK first, then ACK 0 starts the data; the OACK is resent on timeout', async (t) => {
  const oack = encodeTftp({ op: 'OACK', options: [{ name: 'blksize', value: '8' }] });
  const h = harness({ file: bufferFile(pattern(4)), oack });
  h.tr.start();
  t.match(h.sent[0], { op: 'OACK' });
  h.ack(1); // not the ACK of the OACK
  await sleep(45);
  t.match(h.sent[1], { op: 'OACK' }, 'resent after the timeout');
  h.ack(0);
  await until(h.sent, 3);
  t.match(h.sent[2], { op: 'DATA', block: 1 });
  h.ack(1);
  t.match(await h.ended, { ok: true, bytes: 4, retransmitted: 1 });
});

t.test('ERROR 8 answering the OACK: options refused', async (t) => {
  const h = harness({ file: bufferFile(pattern(4)), oack: encodeTftp({ op: 'OACK', options: [{ name: 'tsize', value: '4' }] }) });
  h.tr.start();
  h.tr.onPacket({ op: 'ERROR', code: 8, message: 'no thanks' });
  t.match(await h.ended, { ok: false, reason: 'options-refused', clientMessage: 'no thanks' });
});

t.test('windowsize 1: a duplicate ACK is ignored (Sorcerer\'s Apprentice), the timer resends', async (t) => {
  const h = harness({ file: bufferFile(pattern(40)), timeoutMs: 40 });
  h.tr.start();
  await until(h.sent, 1);
  h.ack(1);
  await until(h.sent, 2);
  h.ack(1);
  h.ack(1);
  await sleep(10);
  t.equal(h.sent.length, 2, 'no resend on duplicate ACKs');
  await sleep(50);
  t.match(h.sent[2], { op: 'DATA', block: 2 }, 'the timeout resends block 2');
  h.tr.abort('aborted');
  t.match(await h.ended, { ok: false, reason: 'aborted' });
});

t.test('windows: full, partial and duplicate ACKs', async (t) => {
  const h = harness({ file: bufferFile(pattern(8 * 20)), windowSize: 4, timeoutMs: 1000 });
  const blocks = () => h.sent.map((p) => (p as TftpData).block);
  h.tr.start();
  await until(h.sent, 4);
  t.same(blocks(), [1, 2, 3, 4], 'a window of 4');
  h.ack(4);
  await until(h.sent, 8);
  t.same(blocks().slice(4), [5, 6, 7, 8], 'the next window');
  h.ack(6); // block 7 was lost: restart after 6
  await until(h.sent, 12);
  t.same(blocks().slice(8), [7, 8, 9, 10], 'restarted after the partial ACK');
  h.ack(6); // duplicate: the window's first block was lost
  await until(h.sent, 16);
  t.same(blocks().slice(12), [7, 8, 9, 10], 'a duplicate ACK resends the window once');
  h.ack(6);
  await sleep(10);
  t.equal(h.sent.length, 16, 'but only once');
  h.ack(3); // older than acknowledged: ignored
  h.ack(200); // never sent: ignored
  await sleep(10);
  t.equal(h.sent.length, 16);
  h.tr.abort('aborted');
  t.match(await h.ended, { ok: false, retransmitted: 6, partialAcks: 2 });
});

t.test('timeouts back off and the transfer gives up with ERROR after `retries`', async (t) => {
  const h = harness({ file: bufferFile(pattern(100)), timeoutMs: 20, retries: 3 });
  const times: number[] = [];
  const t0 = Date.now();
  const send = (d: Buffer) => { h.sent.push(decodeTftp(Buffer.from(d))); times.push(Date.now() - t0); return true; };
  const tr = new Transfer({ file: bufferFile(pattern(100)), netascii: false, blockSize: 8, windowSize: 1, timeoutMs: 20, retries: 3, send, onEnd: (r) => ended(r) });
  let ended!: (r: TransferResult) => void;
  const done = new Promise<TransferResult>((r) => { ended = r; });
  tr.start();
  const r = await done;
  t.match(r, { ok: false, reason: 'timeout', timeouts: 4 });
  const kinds = h.sent.map((p) => p.op);
  t.same(kinds, ['DATA', 'DATA', 'DATA', 'DATA', 'ERROR'], 'first send, 3 resends, then ERROR');
  const gaps = times.slice(1).map((x, i) => x - times[i]!);
  t.ok(gaps[0]! >= 18 && gaps[1]! >= 38 && gaps[2]! >= 78 && gaps[3]! >= 150, `gaps double: ${gaps.join(', ')} ms`);
});

t.test('block numbers wrap from 65535 to 0 (over 65535 blocks)', async (t) => {
  const data = pattern(16 * 70_000 + 5, 7);
  const wire: number[] = [];
  const received: Buffer[] = [];
  let resolveEnd!: (r: TransferResult) => void;
  const ended = new Promise<TransferResult>((r) => { resolveEnd = r; });
  let inWindow = 0;
  const tr: Transfer = new Transfer({
    file: bufferFile(data), netascii: false, blockSize: 16, windowSize: 8, timeoutMs: 5000, retries: 1,
    send: (d) => {
      const p = decodeTftp(Buffer.from(d)) as TftpData;
      wire.push(p.block);
      received.push(Buffer.from(p.data));
      if (++inWindow === 8 || p.data.length < 16) { inWindow = 0; setImmediate(() => tr.onPacket({ op: 'ACK', block: p.block })); }
      return true;
    },
    onEnd: (r) => resolveEnd(r),
  });
  tr.start();
  const r = await ended;
  t.match(r, { ok: true, bytes: data.length, retransmitted: 0 });
  t.equal(wire.length, 70_001);
  t.same(wire.slice(65533, 65538), [65534, 65535, 0, 1, 2], 'wraps to 0');
  t.equal(wire.at(-1), 70_001 - 65_536);
  t.ok(Buffer.concat(received).equals(data), 'every byte in order');
});

t.test('segmentation offload: a window leaves in batches of whole packets; a refusal falls back to one send each', async (t) => {
  const data = pattern(8 * 150 + 5, 3);
  const batches: number[] = [];
  const got: Buffer[] = [];
  let failOnce = true;
  let failed: unknown;
  let resolveEnd!: (r: TransferResult) => void;
  const ended = new Promise<TransferResult>((r) => { resolveEnd = r; });
  let inWindow = 0;
  const receive = (packet: Buffer) => {
    const p = decodeTftp(Buffer.from(packet)) as TftpData;
    got.push(Buffer.from(p.data));
    if (++inWindow === 100 || p.data.length < 8) { inWindow = 0; setImmediate(() => tr.onPacket({ op: 'ACK', block: p.block })); }
  };
  const tr: Transfer = new Transfer({
    file: bufferFile(data), netascii: false, blockSize: 8, windowSize: 100, timeoutMs: 5000, retries: 1,
    send: (d) => { batches.push(1); receive(d); return true; },
    sendSegments: (d, size) => {
      t.equal(size, 12, 'segment = header + block');
      if (batches.length >= 2 && failOnce) { failOnce = false; throw new Error('EIO'); }
      batches.push(Math.ceil(d.length / size));
      for (let o = 0; o < d.length; o += size) receive(d.subarray(o, Math.min(o + size, d.length)));
      return true;
    },
    onSegmentsFailed: (err) => { failed = err; },
    onEnd: (r) => resolveEnd(r),
  });
  tr.start();
  const r = await ended;
  t.match(r, { ok: true, bytes: data.length, retransmitted: 0 });
  t.ok(Buffer.concat(got).equals(data), 'every byte once, in order');
  t.same(batches.slice(0, 2), [64, 36], 'a window of 100 goes as 64 + 36 (64 segments per send at most)');
  t.match(failed, { message: 'EIO' }, 'the refusal was reported');
  t.ok(batches.length > 10 && batches.slice(2).every((b) => b === 1), 'then one datagram per send');
});

t.test('netascii: the converted stream, blocks cut after conversion', async (t) => {
  const data = Buffer.from('line one\nline two\r\nlast\r');
  const h = harness({ file: bufferFile(data), netascii: true });
  h.tr.start();
  for (let b = 1; b <= 5; b++) { await until(h.sent, b); h.ack(b); }
  const r = await h.ended;
  const got = Buffer.concat(h.sent.map((p) => (p as TftpData).data));
  t.ok(got.equals(toNetascii(data)), JSON.stringify(got.toString('latin1')));
  t.match(r, { ok: true, bytes: toNetascii(data).length });
});

t.test('a read error ends the transfer with ERROR', async (t) => {
  const file: TftpFile = { size: 100, read: async () => { throw new MetalboxError('TFTP_READ_FAILED', 'EIO'); }, close: async () => undefined };
  const h = harness({ file });
  h.tr.start();
  const r = await h.ended;
  t.match(r, { ok: false, reason: 'read-failed' });
  t.match(h.sent, [{ op: 'ERROR', code: 0, message: 'read error' }]);
});

t.test('a large file is read in chunks, not whole', async (t) => {
  const size = 2 * 1024 * 1024;
  let maxRead = 0;
  let reads = 0;
  const inner = bufferFile(pattern(size));
  const buffers = new Set<ArrayBufferLike>();
  const file: TftpFile = {
    size,
    read: async (o, l, into) => {
      reads++;
      maxRead = Math.max(maxRead, l);
      const data = await inner.read(o, l);
      if (!into) return data;
      buffers.add(into.buffer);
      data.copy(into);
      return into.subarray(0, data.length);
    },
    close: async () => undefined,
  };
  let n = 0;
  let resolveEnd!: (r: TransferResult) => void;
  const ended = new Promise<TransferResult>((r) => { resolveEnd = r; });
  const tr: Transfer = new Transfer({
    file, netascii: false, blockSize: 1468, windowSize: 16, timeoutMs: 5000, retries: 1,
    send: (d) => { const p = decodeTftp(Buffer.from(d)) as TftpData; if (++n % 16 === 0 || p.data.length < 1468) setImmediate(() => tr.onPacket({ op: 'ACK', block: p.block })); return true; },
    onEnd: (r) => resolveEnd(r),
  });
  tr.start();
  t.match(await ended, { ok: true, bytes: size });
  t.ok(maxRead <= 64 * 1024, `reads of at most 64 KiB (${maxRead})`);
  t.equal(reads, size / (64 * 1024), `${reads} reads, none past the end`);
  t.ok(buffers.size <= 3, `read buffers are reused: ${buffers.size} for ${reads} reads`);
});

t.test('a file in memory is sent from its own bytes: no read buffer is offered (a transfer allocates none)', async (t) => {
  const inner = bufferFile(pattern(200_000));
  t.equal(inner.inMemory, true);
  const offered: (Buffer | undefined)[] = [];
  const file: TftpFile = { ...inner, read: (o, l, into) => { offered.push(into); return inner.read(o, l); } };
  const h = harness({ file, blockSize: 1468 });
  h.tr.start();
  for (let block = 1; ; block++) {
    await until(h.sent, block);
    const p = h.sent[block - 1] as TftpData;
    h.ack(p.block);
    if (p.data.length < 1468) break;
  }
  t.match(await h.ended, { ok: true, bytes: 200_000 });
  t.ok(offered.length >= 4, `${offered.length} reads`);
  t.ok(offered.every((b) => b === undefined), 'none was offered a buffer');
});

t.test('a lossy network: drops both ways, the client re-ACKs on its own timeout; every byte arrives once, in order', async (t) => {
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) / 16777216;
  for (const windowSize of [1, 4, 16]) {
    const data = pattern(8 * 500 + 3, windowSize);
    const got: Buffer[] = [];
    let expected = 1;
    let inWindow = 0;
    let clientTimer: NodeJS.Timeout | undefined;
    let resolveEnd!: (r: TransferResult) => void;
    const ended = new Promise<TransferResult>((r) => { resolveEnd = r; });
    // RFC 7440 receiver: take the next block in order, ACK at the window's end or at the last block, ACK the
    // last good block when one arrives out of order, and re-ACK after 25 ms of silence.
    const ack = (block: number) => { if (rand() > 0.1) setImmediate(() => tr.onPacket({ op: 'ACK', block })); };
    const rearm = () => { clearTimeout(clientTimer); clientTimer = setTimeout(() => { ack((expected - 1) & 0xffff); rearm(); }, 25); };
    const tr: Transfer = new Transfer({
      file: bufferFile(data), netascii: false, blockSize: 8, windowSize, timeoutMs: 15, retries: 20,
      send: (d) => {
        if (rand() < 0.1) return true; // lost on the way
        const p = decodeTftp(Buffer.from(d)) as TftpData;
        rearm();
        if (p.block !== (expected & 0xffff)) { inWindow = 0; ack((expected - 1) & 0xffff); return true; }
        got.push(Buffer.from(p.data));
        expected++;
        if (++inWindow >= windowSize || p.data.length < 8) { inWindow = 0; ack(p.block); }
        return true;
      },
      onEnd: (r) => { clearTimeout(clientTimer); resolveEnd(r); },
    });
    tr.start();
    const r = await ended;
    t.ok(r.ok, `windowsize ${windowSize}: completed (${r.retransmitted} blocks resent, ${r.timeouts} timeouts)`);
    // The server may finish before a lost final ACK is retried: the client holds every byte either way.
    t.ok(Buffer.concat(got).equals(data), `windowsize ${windowSize}: every byte once, in order`);
  }
});

t.test('negotiate: RFC 2348/2349/7440 values and caps', async (t) => {
  const limits = { maxBlockSize: 1468, maxWindowSize: 64, maxWindowBytes: 128 * 1024 };
  const o = (...pairs: [string, string][]) => pairs.map(([name, value]) => ({ name, value }));
  t.same(negotiate([], 100, limits), { blockSize: 512, windowSize: 1, oack: [] }, 'no options: no OACK');
  t.same(negotiate(o(['blksize', '1468'], ['tsize', '0'], ['windowsize', '8']), 4096, limits).oack, o(['blksize', '1468'], ['tsize', '4096'], ['windowsize', '8']));
  t.same(negotiate(o(['BLKSIZE', '65464']), 1, limits), { blockSize: 1468, windowSize: 1, oack: o(['BLKSIZE', '1468']) }, 'capped, spelled as asked');
  t.same(negotiate(o(['blksize', '1024']), 1, limits).blockSize, 1024, 'less than the cap: as asked');
  t.same(negotiate(o(['blksize', '7']), 1, limits).oack, [], 'below 8: ignored');
  t.same(negotiate(o(['blksize', '65465']), 1, limits).oack, [], 'above 65464: ignored');
  t.same(negotiate(o(['blksize', '+512']), 1, limits).oack, [], 'not plain digits: ignored');
  t.same(negotiate(o(['blksize', ' 512']), 1, limits).oack, []);
  t.same(negotiate(o(['timeout', '3']), 1, limits), { blockSize: 512, windowSize: 1, timeoutSeconds: 3, oack: o(['timeout', '3']) });
  t.same(negotiate(o(['timeout', '0']), 1, limits).oack, [], 'timeout 0: ignored');
  t.same(negotiate(o(['timeout', '256']), 1, limits).oack, [], 'timeout 256: ignored');
  t.same(negotiate(o(['tsize', '0']), undefined, limits).oack, [], 'size unknown (netascii): no tsize');
  t.same(negotiate(o(['windowsize', '1000'], ['blksize', '1468']), 1, limits), { blockSize: 1468, windowSize: 64, oack: o(['windowsize', '64'], ['blksize', '1468']) }, 'window capped by config');
  t.same(negotiate(o(['windowsize', '64'], ['blksize', '8192']), 1, { ...limits, maxBlockSize: 8192 }).windowSize, 16, 'window capped by bytes in flight');
  t.same(negotiate(o(['windowsize', '0']), 1, limits).oack, [], 'windowsize 0: ignored');
  t.same(negotiate(o(['multicast', ''], ['x-unknown', '1']), 1, limits).oack, [], 'unknown options: ignored');
});
