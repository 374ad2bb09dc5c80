// The TFTP codec: round trips of every packet type, RFC 2347 option rules, encoder refusals, netascii, a
// table of hostile packets each with its error code and offset, the golden captures of real clients
// (test/golden/tftp, made by capture.sh; METALBOX_UPDATE_GOLDEN=1 rewrites the .txt dumps), bounded time on
// big inputs, and a seeded mutation fuzzer.
import t from 'tap';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMetalboxError } from '../../src/lib/errors.ts';
import {
  decodeTftp,
  encodeDataHeader,
  encodeDataInto,
  encodeTftp,
  formatTftp,
  fromNetascii,
  MAX_BLOCK_SIZE,
  optionValue,
  toNetascii,
  type TftpPacket,
} from '../../src/protocols/tftp/index.ts';

const GOLDEN = fileURLToPath(new URL('../golden/tftp/', import.meta.url));
const UPDATE = process.env.METALBOX_UPDATE_GOLDEN === '1';
const bytes = (...parts: (number[] | string)[]): Buffer => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));

t.test('round trip of every packet type', async (t) => {
  const packets: TftpPacket[] = [
    { op: 'RRQ', filename: 'undionly.kpxe', mode: 'octet', options: [] },
    { op: 'RRQ', filename: 'ipxe/snponly.efi', mode: 'OCTET', options: [{ name: 'BlkSize', value: '1468' }, { name: 'tsize', value: '0' }, { name: 'x-vendor', value: '' }, { name: 'windowsize', value: '8' }] },
    { op: 'WRQ', filename: 'upload.bin', mode: 'netascii', options: [{ name: 'tsize', value: '1234' }] },
    { op: 'DATA', block: 0, data: Buffer.alloc(0) },
    { op: 'DATA', block: 65535, data: Buffer.alloc(512, 7) },
    { op: 'DATA', block: 1, data: Buffer.alloc(MAX_BLOCK_SIZE, 1) },
    { op: 'ACK', block: 0 },
    { op: 'ACK', block: 65535 },
    { op: 'ERROR', code: 1, message: 'file not found' },
    { op: 'ERROR', code: 0, message: '' },
    { op: 'OACK', options: [{ name: 'blksize', value: '1468' }, { name: 'tsize', value: '73728' }] },
    { op: 'OACK', options: [] },
    { op: 'RRQ', filename: 'caf\u00e9/\u00ff', mode: 'octet', options: [] },
  ];
  for (const p of packets) {
    const wire = encodeTftp(p);
    t.same(decodeTftp(wire), p, formatTftp(p));
    t.ok(encodeTftp(decodeTftp(wire)).equals(wire), `${p.op}: encoding is stable`);
  }
  t.same([...encodeTftp({ op: 'RRQ', filename: 'a', mode: 'octet', options: [{ name: 'blksize', value: '1468' }] })], [0, 1, 97, 0, ...Buffer.from('octet'), 0, ...Buffer.from('blksize'), 0, ...Buffer.from('1468'), 0], 'RFC 2347 layout');
  t.same([...encodeTftp({ op: 'ACK', block: 258 })], [0, 4, 1, 2]);
  t.same([...encodeTftp({ op: 'ERROR', code: 2, message: 'no' })], [0, 5, 0, 2, 110, 111, 0]);
});

t.test('options: case-insensitive lookup, wire order and spelling kept', async (t) => {
  const p = decodeTftp(bytes([0, 1], 'f\0octet\0TSIZE\x000\0BlkSize\x00512\0'));
  t.equal(p.op, 'RRQ');
  if (p.op !== 'RRQ') return;
  t.same(p.options, [{ name: 'TSIZE', value: '0' }, { name: 'BlkSize', value: '512' }]);
  t.equal(optionValue(p.options, 'blksize'), '512');
  t.equal(optionValue(p.options, 'tSize'), '0');
  t.equal(optionValue(p.options, 'windowsize'), undefined);
});

t.test('QUIRK: NUL padding after a request\'s options is accepted, nowhere else', async (t) => {
  const p = decodeTftp(bytes([0, 1], 'f\0octet\0blksize\x001468\0', [0, 0]));
  t.same(p, { op: 'RRQ', filename: 'f', mode: 'octet', options: [{ name: 'blksize', value: '1468' }] });
  t.same(decodeTftp(bytes([0, 1], 'f\0octet\0', [0])), { op: 'RRQ', filename: 'f', mode: 'octet', options: [] });
  t.throws(() => decodeTftp(bytes([0, 6], 'blksize\x00512\0', [0])), { code: 'TFTP_BAD_OPTION' }, 'not after an OACK');
});

t.test('DATA is a view, encodeDataInto reuses a buffer', async (t) => {
  const wire = encodeTftp({ op: 'DATA', block: 3, data: Buffer.from('abc') });
  const p = decodeTftp(wire);
  if (p.op !== 'DATA') throw new Error('not DATA');
  t.equal(p.data.buffer, wire.buffer, 'no copy');
  const scratch = Buffer.alloc(4 + 8);
  const a = encodeDataInto(scratch, 70000 & 0xffff, Buffer.from('12345678'));
  t.same(decodeTftp(a), { op: 'DATA', block: 70000 - 65536, data: Buffer.from('12345678') });
  const b = encodeDataInto(scratch, 9, Buffer.from('xy'));
  t.equal(b.length, 6);
  t.same(decodeTftp(b), { op: 'DATA', block: 9, data: Buffer.from('xy') });
  t.throws(() => encodeDataInto(Buffer.alloc(5), 1, Buffer.from('xy')), TypeError);
  const two = Buffer.alloc(12);
  encodeDataHeader(two, 6, 65535);
  t.same([...two.subarray(6, 10)], [0, 3, 255, 255], 'encodeDataHeader at an offset');
  t.throws(() => encodeDataHeader(two, 9, 1), TypeError, 'no room');
});

t.test('encoder refuses what the decoder would (caller bugs are TypeErrors)', async (t) => {
  const bad: [string, TftpPacket][] = [
    ['empty file name', { op: 'RRQ', filename: '', mode: 'octet', options: [] }],
    ['NUL in a file name', { op: 'RRQ', filename: 'a\0b', mode: 'octet', options: [] }],
    ['empty mode', { op: 'RRQ', filename: 'a', mode: '', options: [] }],
    ['empty option name', { op: 'OACK', options: [{ name: '', value: '1' }] }],
    ['NUL in a value', { op: 'OACK', options: [{ name: 'a', value: '1\0' }] }],
    ['duplicate option', { op: 'OACK', options: [{ name: 'blksize', value: '1' }, { name: 'BLKSIZE', value: '2' }] }],
    ['block 65536', { op: 'ACK', block: 65536 }],
    ['negative block', { op: 'DATA', block: -1, data: Buffer.alloc(0) }],
    ['oversized DATA', { op: 'DATA', block: 1, data: Buffer.alloc(MAX_BLOCK_SIZE + 1) }],
    ['error code 70000', { op: 'ERROR', code: 70000, message: '' }],
    ['character above latin1', { op: 'ERROR', code: 0, message: '\u20ac' }],
    ['unknown op', { op: 'NOPE' } as unknown as TftpPacket],
  ];
  for (const [label, p] of bad) t.throws(() => encodeTftp(p), TypeError, label);
});

t.test('netascii: LF -> CR LF, CR -> CR NUL, and back', async (t) => {
  t.same([...toNetascii(Buffer.from('a\nb\rc\r\n'))], [...Buffer.from('a\r\nb\r\0c\r\0\r\n')]);
  const plain = Buffer.from('no line ends');
  t.equal(toNetascii(plain), plain, 'unchanged data is not copied');
  let seed = 1;
  const random = Buffer.alloc(100_000);
  for (let i = 0; i < random.length; i++) random[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
  t.ok(fromNetascii(toNetascii(random)).equals(random), 'random bytes survive the round trip');
  // Conversion is per byte: converting in pieces gives the same as converting at once.
  const pieces = Buffer.concat([toNetascii(random.subarray(0, 333)), toNetascii(random.subarray(333))]);
  t.ok(pieces.equals(toNetascii(random)), 'piecewise conversion is the same');
});

t.test('formatTftp: stable text', async (t) => {
  t.equal(formatTftp(decodeTftp(bytes([0, 1], 'a b\0octet\0tsize\x000\0'))), 'RRQ "a b" mode="octet" "tsize"="0"');
  t.equal(formatTftp({ op: 'DATA', block: 7, data: Buffer.alloc(3) }), 'DATA block=7 bytes=3');
  t.equal(formatTftp({ op: 'ACK', block: 7 }), 'ACK block=7');
  t.equal(formatTftp({ op: 'ERROR', code: 1, message: 'x"y' }), 'ERROR code=1 "x\\"y"');
  t.equal(formatTftp({ op: 'OACK', options: [{ name: 'blksize', value: '1468' }] }), 'OACK "blksize"="1468"');
});

/** name, datagram, expected code, expected offset. */
function hostiles(): [string, Buffer, string, number][] {
  return [
    ['empty datagram', bytes([]), 'TFTP_TRUNCATED', 0],
    ['one byte', bytes([0]), 'TFTP_TRUNCATED', 0],
    ['opcode 0', bytes([0, 0, 1, 2]), 'TFTP_BAD_OPCODE', 0],
    ['opcode 7', bytes([0, 7]), 'TFTP_BAD_OPCODE', 0],
    ['opcode 0x0100 (byte order)', bytes([1, 0], 'a\0octet\0'), 'TFTP_BAD_OPCODE', 0],
    ['RRQ without anything', bytes([0, 1]), 'TFTP_TRUNCATED', 2],
    ['RRQ file name without NUL', bytes([0, 1], 'undionly.kpxe'), 'TFTP_TRUNCATED', 2],
    ['RRQ without a mode', bytes([0, 1], 'a\0'), 'TFTP_TRUNCATED', 4],
    ['RRQ mode without NUL', bytes([0, 1], 'a\0octet'), 'TFTP_TRUNCATED', 4],
    ['RRQ empty file name', bytes([0, 1], '\0octet\0'), 'TFTP_BAD_REQUEST', 2],
    ['RRQ empty mode', bytes([0, 1], 'a\0\0'), 'TFTP_BAD_REQUEST', 4],
    ['RRQ option without value', bytes([0, 1], 'a\0octet\0blksize\0'), 'TFTP_BAD_OPTION', 18],
    ['RRQ option value without NUL', bytes([0, 1], 'a\0octet\0blksize\x001468'), 'TFTP_TRUNCATED', 18],
    ['RRQ option name without NUL', bytes([0, 1], 'a\0octet\0blksize'), 'TFTP_TRUNCATED', 10],
    ['RRQ empty option name then value', bytes([0, 1], 'a\0octet\0\x00512\0'), 'TFTP_BAD_OPTION', 10],
    ['RRQ duplicate option, other case', bytes([0, 1], 'a\0octet\0blksize\x00512\0BLKSIZE\x001468\0'), 'TFTP_BAD_OPTION', 22],
    ['WRQ file name without NUL', bytes([0, 2], 'x'), 'TFTP_TRUNCATED', 2],
    ['DATA without block', bytes([0, 3, 1]), 'TFTP_TRUNCATED', 2],
    ['DATA over 65464 bytes', Buffer.concat([bytes([0, 3, 0, 1]), Buffer.alloc(MAX_BLOCK_SIZE + 1)]), 'TFTP_OVERSIZE', 4],
    ['ACK without block', bytes([0, 4]), 'TFTP_TRUNCATED', 2],
    ['ACK half a block', bytes([0, 4, 0]), 'TFTP_TRUNCATED', 2],
    ['ACK with trailing bytes', bytes([0, 4, 0, 1, 0]), 'TFTP_OVERSIZE', 4],
    ['ERROR without code', bytes([0, 5, 0]), 'TFTP_TRUNCATED', 2],
    ['ERROR message without NUL', bytes([0, 5, 0, 1], 'oops'), 'TFTP_TRUNCATED', 4],
    ['ERROR bytes after the message', bytes([0, 5, 0, 1], 'oops\0x'), 'TFTP_OVERSIZE', 9],
    ['OACK option without value', bytes([0, 6], 'tsize\0'), 'TFTP_BAD_OPTION', 8],
    ['OACK value without NUL', bytes([0, 6], 'tsize\x00123'), 'TFTP_TRUNCATED', 8],
    ['OACK duplicate option', bytes([0, 6], 'tsize\x001\0TSize\x002\0'), 'TFTP_BAD_OPTION', 10],
  ];
}

t.test('hostile packets: each error code and offset', async (t) => {
  const table = hostiles();
  for (const [name, buf, code, offset] of table) {
    let caught: unknown;
    try {
      decodeTftp(buf);
    } catch (err) {
      caught = err;
    }
    t.ok(isMetalboxError(caught), `${name}: a MetalboxError`);
    if (isMetalboxError(caught)) {
      t.equal(caught.code, code, `${name}: ${code}`);
      t.equal(caught.details?.offset, offset, `${name}: offset ${offset}`);
    }
  }
});

t.test('big inputs decode in bounded time', async (t) => {
  const time = (buf: Buffer): number => {
    let best = Infinity;
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      try { decodeTftp(buf); } catch { /* timed either way */ }
      best = Math.min(best, performance.now() - t0);
    }
    return best;
  };
  // 65,000 bytes of distinct tiny options; the same with a duplicate at the very end; a name with no NUL.
  const many: string[] = [];
  for (let i = 0; many.join('').length < 64_000; i++) many.push(`o${i}\0v\0`);
  const opts = bytes([0, 1], 'f\0octet\0', many.join(''));
  t.ok(time(opts) < 50, `many options: ${time(opts).toFixed(2)} ms`);
  const dup = bytes([0, 1], 'f\0octet\0', many.join(''), 'o0\0v\0');
  t.throws(() => decodeTftp(dup), { code: 'TFTP_BAD_OPTION' });
  t.ok(time(dup) < 50, `duplicate at the end: ${time(dup).toFixed(2)} ms`);
  const unterminated = Buffer.concat([bytes([0, 1]), Buffer.alloc(65_000, 0x41)]);
  t.ok(time(unterminated) < 50, `unterminated name: ${time(unterminated).toFixed(2)} ms`);
});

const captures = readdirSync(GOLDEN).filter((f) => f.endsWith('.bin')).map((f) => f.slice(0, -4)).sort();

t.test('golden captures from real clients', async (t) => {
  t.same(['atftp-options-ack', 'atftp-options-rrq', 'tftp-hpa-netascii-rrq', 'tftp-hpa-octet-rrq'].filter((c) => !captures.includes(c)), [], 'every expected capture is checked in');
  for (const name of captures) {
    const bin = readFileSync(join(GOLDEN, `${name}.bin`));
    const p = decodeTftp(bin);
    const text = `${formatTftp(p)}\n`;
    const txt = join(GOLDEN, `${name}.txt`);
    if (UPDATE) writeFileSync(txt, text);
    t.ok(existsSync(txt), `${name}.txt exists (METALBOX_UPDATE_GOLDEN=1 creates it)`);
    if (existsSync(txt)) t.equal(text, readFileSync(txt, 'utf8'), `${name}: dump matches`);
    t.ok(encodeTftp(p).equals(bin), `${name}: re-encodes byte for byte`);
  }
});

// Fuzz: seeded, deterministic mutations of the captures and of our own encodings. decode must return a packet
// that re-encodes to something that decodes to the same packet, or throw a TFTP_* MetalboxError with an
// offset inside the input. Nothing else may escape.

/** mulberry32: small, fast, deterministic. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function mutate(r: () => number, seed: Buffer): Buffer {
  const b = Buffer.from(seed);
  const int = (n: number): number => Math.floor(r() * n);
  switch (int(7)) {
    case 0: // flip bits
      for (let k = 0, n = 1 + int(4); k < n && b.length > 0; k++) b[int(b.length)]! ^= 1 << int(8);
      return b;
    case 1: // truncate
      return b.subarray(0, int(b.length + 1));
    case 2: // a byte becomes NUL or a NUL becomes a letter
      if (b.length > 0) { const i = int(b.length); b[i] = b[i] === 0 ? 0x61 : 0; }
      return b;
    case 3: // insert random bytes
      { const i = int(b.length + 1); return Buffer.concat([b.subarray(0, i), Buffer.from(Array.from({ length: 1 + int(8) }, () => int(256))), b.subarray(i)]); }
    case 4: // duplicate a slice
      { const i = int(b.length + 1); const j = i + int(b.length - i + 1); return Buffer.concat([b.subarray(0, j), b.subarray(i, j), b.subarray(j)]); }
    case 5: // random opcode
      if (b.length >= 2) b.writeUInt16BE(int(8), 0);
      return b;
    default: // pure noise
      return Buffer.from(Array.from({ length: int(40) }, () => int(256)));
  }
}

t.test('fuzz: decode never throws anything but a TFTP_* MetalboxError', async (t) => {
  const iterations = Number(process.env.METALBOX_FUZZ_ITERATIONS ?? 200_000);
  const r = rng(0x74667470); // "tftp"
  const pool = [
    ...captures.map((c) => readFileSync(join(GOLDEN, `${c}.bin`))),
    encodeTftp({ op: 'OACK', options: [{ name: 'blksize', value: '1468' }, { name: 'windowsize', value: '8' }] }),
    encodeTftp({ op: 'ERROR', code: 1, message: 'file not found' }),
    encodeTftp({ op: 'DATA', block: 9, data: Buffer.from('payload') }),
    encodeTftp({ op: 'WRQ', filename: 'x', mode: 'netascii', options: [] }),
  ];
  const counts = { decoded: 0, rejected: 0 };
  let failure: string | undefined;
  for (let i = 0; i < iterations && failure === undefined; i++) {
    const input = mutate(r, pool[i % pool.length]!);
    let p: TftpPacket;
    try {
      p = decodeTftp(input);
    } catch (err) {
      counts.rejected++;
      if (!isMetalboxError(err) || !err.code.startsWith('TFTP_')) failure = `iteration ${i}: ${String(err)} for ${input.toString('hex')}`;
      else if (typeof err.details?.offset !== 'number' || (err.details.offset as number) < 0 || (err.details.offset as number) > input.length) failure = `iteration ${i}: offset ${String(err.details?.offset)} outside the input`;
      continue;
    }
    counts.decoded++;
    try {
      const once = encodeTftp(p);
      if (formatTftp(decodeTftp(once)) !== formatTftp(p)) failure = `iteration ${i}: re-decoded packet differs for ${input.toString('hex')}`;
      else if (!encodeTftp(decodeTftp(once)).equals(once)) failure = `iteration ${i}: re-encoding is not stable`;
    } catch (err) {
      failure = `iteration ${i}: round trip threw ${String(err)} for ${input.toString('hex')}`;
    }
  }
  t.equal(failure, undefined, 'no escapes, every decoded packet round trips');
  t.ok(counts.decoded > iterations / 20 && counts.rejected > iterations / 20, `both outcomes exercised: ${JSON.stringify(counts)}`);
});
