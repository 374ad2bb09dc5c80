// The NTP codec (src/protocols/ntp): header fields, extension fields and MACs (RFC 7822), kiss codes, the
// time formats and their arithmetic across the 2036 wrap, a table of hostile inputs each with its error code,
// and a fuzz pass.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { isMetalboxError } from '../../src/lib/errors.ts';
import {
  decodeNtp, encodeNtp, encodeNtpInto, formatNtp, isZeroTimestamp, kissCode, LEAP, MODE, NTP_UNIX_OFFSET, ntpAdd, ntpDiff, ntpEqual,
  ntpFromUnix, ntpFromUnixMs, ntpLength, ntpToUnixMs, refIdAddress, refIdFromText, refIdText, secondsToShort, shortToSeconds,
  type NtpPacket,
} from '../../src/protocols/ntp/index.ts';

function header(over: Partial<Record<'b0' | 'stratum' | 'poll' | 'precision', number>> = {}): Buffer {
  const b = Buffer.alloc(48);
  b[0] = over.b0 ?? ((0 << 6) | (4 << 3) | 3);
  b[1] = over.stratum ?? 2;
  b.writeInt8(over.poll ?? 6, 2);
  b.writeInt8(over.precision ?? -20, 3);
  b.writeUInt32BE(0x00018000, 4); // 1.5 s
  b.writeUInt32BE(0x00004000, 8); // 0.25 s
  b.writeUInt32BE(0xc0000201, 12); // 192.0.2.1
  for (let i = 16; i < 48; i++) b[i] = i;
  return b;
}

function ef(type: number, valueBytes: number): Buffer {
  const b = Buffer.alloc(4 + valueBytes, 0xab);
  b.writeUInt16BE(type, 0);
  b.writeUInt16BE(4 + valueBytes, 2);
  return b;
}

t.test('header fields', async (t) => {
  const p = decodeNtp(header({ b0: (1 << 6) | (3 << 3) | 4, stratum: 3, poll: -3, precision: -25 }));
  t.equal(p.leap, LEAP.ADD_SECOND);
  t.equal(p.version, 3);
  t.equal(p.mode, MODE.SERVER);
  t.equal(p.stratum, 3);
  t.equal(p.poll, -3, 'poll is signed');
  t.equal(p.precision, -25, 'precision is signed');
  t.equal(shortToSeconds(p.rootDelay), 1.5);
  t.equal(shortToSeconds(p.rootDispersion), 0.25);
  t.equal(refIdAddress(p.referenceId), '192.0.2.1');
  t.same(p.referenceTime, { seconds: 0x10111213, fraction: 0x14151617 });
  t.same(p.originTime, { seconds: 0x18191a1b, fraction: 0x1c1d1e1f });
  t.same(p.receiveTime, { seconds: 0x20212223, fraction: 0x24252627 });
  t.same(p.transmitTime, { seconds: 0x28292a2b, fraction: 0x2c2d2e2f });
  t.same(p.extensions, []);
  t.equal(p.mac, undefined);
  t.ok(encodeNtp(p).equals(header({ b0: (1 << 6) | (3 << 3) | 4, stratum: 3, poll: -3, precision: -25 })), 'round trip');
});

t.test('extension fields and MACs survive a round trip (RFC 7822)', async (t) => {
  const cases: [string, Buffer, (p: NtpPacket) => void][] = [
    ['one field of 28 bytes', Buffer.concat([header(), ef(0x0104, 24)]), (p) => { t.equal(p.extensions.length, 1); t.equal(p.extensions[0]!.type, 0x0104); t.equal(p.extensions[0]!.value.length, 24); }],
    ['two fields, 16 then 28', Buffer.concat([header(), ef(0x0204, 12), ef(0x0404, 24)]), (p) => t.same(p.extensions.map((e) => e.type), [0x0204, 0x0404])],
    ['MD5 MAC (key id + 16)', Buffer.concat([header(), Buffer.alloc(20, 7)]), (p) => { t.equal(p.mac?.keyId, 0x07070707); t.equal(p.mac?.digest.length, 16); }],
    ['SHA-1 MAC (key id + 20)', Buffer.concat([header(), Buffer.alloc(24, 9)]), (p) => t.equal(p.mac?.digest.length, 20)],
    ['crypto-NAK (key id only)', Buffer.concat([header(), Buffer.alloc(4)]), (p) => { t.equal(p.mac?.keyId, 0); t.equal(p.mac?.digest.length, 0); }],
    ['field then MAC', Buffer.concat([header(), ef(0x0104, 12), Buffer.alloc(20, 1)]), (p) => { t.equal(p.extensions.length, 1); t.equal(p.mac?.digest.length, 16); }],
  ];
  for (const [name, bin, check] of cases) {
    const p = decodeNtp(bin);
    check(p);
    t.equal(ntpLength(p), bin.length, `${name}: length`);
    t.ok(encodeNtp(p).equals(bin), `${name}: bit for bit`);
    t.match(formatNtp(p), p.mac ? /^mac key=/m : /^extension type=/m, `${name}: shown by formatNtp`);
  }
});

t.test('hostile inputs: each a stable code and the offset of the trouble', async (t) => {
  const table: [string, Buffer, string, number][] = [
    ['empty', Buffer.alloc(0), 'NTP_TRUNCATED', 0],
    ['47 bytes', header().subarray(0, 47), 'NTP_TRUNCATED', 47],
    ['version 0', header({ b0: 3 }), 'NTP_BAD_VERSION', 0],
    ['version 5 (NTPv5 drafts)', header({ b0: (5 << 3) | 3 }), 'NTP_BAD_VERSION', 0],
    ['version 7', header({ b0: (7 << 3) | 3 }), 'NTP_BAD_VERSION', 0],
    ['mode 0 (reserved)', header({ b0: 4 << 3 }), 'NTP_BAD_MODE', 0],
    ['mode 6 (control, ntpq)', header({ b0: (2 << 3) | 6 }), 'NTP_BAD_MODE', 0],
    ['mode 7 (private, monlist)', header({ b0: (2 << 3) | 7 }), 'NTP_BAD_MODE', 0],
    ['3 trailing bytes', Buffer.concat([header(), Buffer.alloc(3)]), 'NTP_BAD_EXTENSION', 48],
    ['8 trailing bytes', Buffer.concat([header(), Buffer.alloc(8)]), 'NTP_BAD_EXTENSION', 48],
    ['field length 0 (would loop)', Buffer.concat([header(), Buffer.alloc(28)]), 'NTP_BAD_EXTENSION', 48],
    ['field length 12 (< 16)', Buffer.concat([header(), (() => { const b = ef(1, 24); b.writeUInt16BE(12, 2); return b; })()]), 'NTP_BAD_EXTENSION', 48],
    ['field length 30 (not a multiple of 4)', Buffer.concat([header(), (() => { const b = ef(1, 28); b.writeUInt16BE(30, 2); return b; })()]), 'NTP_BAD_EXTENSION', 48],
    ['field longer than the packet', Buffer.concat([header(), (() => { const b = ef(1, 24); b.writeUInt16BE(0xfffc, 2); return b; })()]), 'NTP_BAD_EXTENSION', 48],
    ['second field overruns', Buffer.concat([header(), ef(1, 12), (() => { const b = ef(2, 24); b.writeUInt16BE(64, 2); return b; })()]), 'NTP_BAD_EXTENSION', 64],
    ['garbage after a field', Buffer.concat([header(), ef(1, 24), Buffer.alloc(6)]), 'NTP_BAD_EXTENSION', 76],
  ];
  for (const [name, bin, code, offset] of table) {
    try {
      decodeNtp(bin);
      t.fail(`${name}: accepted`);
    } catch (err) {
      t.ok(isMetalboxError(err), `${name}: a MetalboxError`);
      t.equal((err as { code: string }).code, code, `${name}: ${code}`);
      t.equal((err as { details: { offset: number } }).details.offset, offset, `${name}: offset ${offset}`);
    }
  }
});

t.test('fuzz: random and mutated packets decode or fail with an NTP code, never anything else', async (t) => {
  const seeds = [header(), Buffer.concat([header(), ef(0x0104, 24)]), Buffer.concat([header(), ef(1, 12), Buffer.alloc(20, 3)])];
  let decoded = 0;
  let refused = 0;
  for (let i = 0; i < 20_000; i++) {
    let bin: Buffer;
    if (i % 2 === 0) {
      bin = randomBytes(Math.floor(Math.random() * 140));
    } else {
      const seed = seeds[i % seeds.length]!;
      bin = Buffer.from(seed.subarray(0, Math.max(0, seed.length - Math.floor(Math.random() * 8))));
      for (let k = 0; k < 1 + Math.floor(Math.random() * 4); k++) if (bin.length > 0) bin[Math.floor(Math.random() * bin.length)] = Math.floor(Math.random() * 256);
    }
    try {
      const p = decodeNtp(bin);
      decoded++;
      if (!encodeNtp(p).equals(bin)) { t.fail(`round trip differs for ${bin.toString('hex')}`); return; }
    } catch (err) {
      refused++;
      if (!isMetalboxError(err) || !err.code.startsWith('NTP_')) { t.fail(`unexpected error for ${bin.toString('hex')}: ${String(err)}`); return; }
    }
  }
  t.ok(decoded > 1000, `some decoded (${decoded})`);
  t.ok(refused > 1000, `some refused (${refused})`);
});

t.test('encode checks its input (caller bugs are RangeErrors) and writes into a given buffer', async (t) => {
  const p = decodeNtp(header());
  t.throws(() => encodeNtp({ ...p, leap: 4 }), RangeError);
  t.throws(() => encodeNtp({ ...p, stratum: 256 }), RangeError);
  t.throws(() => encodeNtp({ ...p, poll: 128 }), RangeError);
  t.throws(() => encodeNtp({ ...p, transmitTime: { seconds: 2 ** 32, fraction: 0 } }), RangeError);
  t.throws(() => encodeNtp({ ...p, extensions: [{ type: 1, value: Buffer.alloc(10) }] }), RangeError, 'field not a multiple of 4');
  t.throws(() => encodeNtp({ ...p, mac: { keyId: 1, digest: Buffer.alloc(8) } }), RangeError, 'digest of a length no MAC has');
  const buf = Buffer.alloc(60, 0xee);
  t.equal(encodeNtpInto(p, buf, 12), 48);
  t.ok(buf.subarray(12).equals(header()), 'written at the offset');
  t.equal(buf[11], 0xee, 'nothing before it touched');
  t.throws(() => encodeNtpInto(p, Buffer.alloc(47)), RangeError);
});

t.test('reference ids and kiss codes', async (t) => {
  t.equal(refIdFromText('RATE'), 0x52415445);
  t.equal(refIdFromText('GPS'), 0x47505300, 'NUL-padded');
  t.equal(refIdText(0x52415445), 'RATE');
  t.equal(refIdText(0x47505300), 'GPS');
  t.equal(refIdText(0xc0000201), undefined, 'an address is not text');
  t.equal(refIdText(0x41004100), undefined, 'text after a NUL is not a code');
  t.equal(refIdText(0), undefined);
  t.throws(() => refIdFromText('TOOLONG'), RangeError);
  t.equal(kissCode({ stratum: 0, referenceId: refIdFromText('DENY') }), 'DENY');
  t.equal(kissCode({ stratum: 2, referenceId: refIdFromText('DENY') }), undefined, 'only stratum 0 kisses');
  const kod = decodeNtp(Buffer.from(header({ b0: (3 << 6) | (4 << 3) | 4, stratum: 0 }).fill(0, 12, 16)));
  t.equal(kissCode({ ...kod, referenceId: refIdFromText('RATE') }), 'RATE');
  t.match(formatNtp({ ...kod, referenceId: refIdFromText('RATE') }), /reference-id 0x52415445 kiss=RATE/);
});

t.test('timestamps: epochs, precision, the 2036 wrap', async (t) => {
  t.same(ntpFromUnix(0, 0), { seconds: NTP_UNIX_OFFSET, fraction: 0 }, '1970 is 2208988800 s after 1900');
  t.same(ntpFromUnix(1, 0.5), { seconds: NTP_UNIX_OFFSET + 1, fraction: 0x80000000 });
  t.same(ntpFromUnix(10, 1.25), { seconds: NTP_UNIX_OFFSET + 11, fraction: 0x40000000 }, 'a fraction of 1 s or more carries');
  t.same(ntpFromUnix(0, 0.9999999999999), { seconds: NTP_UNIX_OFFSET, fraction: 0xffffffff }, 'never a fraction of 2^32');
  const ms = Date.UTC(2026, 10, 23, 7, 0, 0, 123);
  t.equal(Math.round(ntpToUnixMs(ntpFromUnixMs(ms))), ms, 'ms round trip');
  // 2036-02-07T06:28:16Z is NTP second 2^32: era 1 starts at 0.
  const wrap = Date.UTC(2036, 1, 7, 6, 28, 16);
  t.same(ntpFromUnixMs(wrap), { seconds: 0, fraction: 0 }, 'era 1 starts at 0');
  t.equal(ntpToUnixMs({ seconds: 5, fraction: 0 }), wrap + 5000, 'small seconds read as era 1 (RFC 4330 §3)');
  const before = ntpFromUnixMs(wrap - 1500);
  const after = ntpFromUnixMs(wrap + 500);
  t.equal(ntpDiff(after, before), 2, 'difference across the wrap');
  t.equal(ntpDiff(before, after), -2, 'and back');
  t.ok(ntpEqual(ntpAdd(before, 2), after), 'ntpAdd across the wrap');
  t.ok(ntpEqual(ntpAdd(after, -2), before), 'negative ntpAdd across the wrap');
  t.equal(ntpDiff({ seconds: 10, fraction: 1 }, { seconds: 10, fraction: 0 }), 2 ** -32, 'one fraction unit is 2^-32 s');
  const a = ntpFromUnix(1_800_000_000, 0.123456789);
  t.ok(Math.abs(ntpDiff(ntpAdd(a, 0.000001), a) - 0.000001) < 1e-9, 'sub-microsecond arithmetic');
  t.ok(isZeroTimestamp({ seconds: 0, fraction: 0 }));
  t.notOk(isZeroTimestamp({ seconds: 0, fraction: 1 }));
});

t.test('short format', async (t) => {
  t.equal(secondsToShort(1.5), 0x00018000);
  t.equal(secondsToShort(0), 0);
  t.equal(secondsToShort(-1), 0, 'never negative');
  t.equal(secondsToShort(1e-9), 1, 'rounded up, never understated');
  t.equal(secondsToShort(1e6), 0xffffffff, 'saturates');
  t.equal(shortToSeconds(0x00004000), 0.25);
});
