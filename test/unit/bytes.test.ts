// ByteReader / ByteWriter (src/lib/bytes.ts): every read checked before it happens, errors carry the offset,
// the caller's failure factory decides what is thrown; the writer grows and refuses out-of-range values.
import t from 'tap';
import { ByteRangeError, ByteReader, ByteWriter } from '../../src/lib/bytes.ts';

t.test('reader: values, offsets, views', async (t) => {
  const buf = Buffer.from([1, 0x02, 0x03, 0xde, 0xad, 0xbe, 0xef, 0x41, 0x42, 0x43]);
  const r = new ByteReader(buf);
  t.equal(r.u8(), 1);
  t.equal(r.u16(), 0x0203);
  t.equal(r.u32(), 0xdeadbeef, 'unsigned');
  t.equal(r.offset, 7);
  t.equal(r.remaining, 3);
  t.equal(r.peekU8(), 0x41);
  const view = r.bytes(1);
  t.equal(view.buffer, buf.buffer, 'bytes() is a view');
  t.equal(r.latin1(2), 'BC');
  t.ok(r.atEnd());
  r.seek(3);
  const copy = r.copy(2);
  copy[0] = 0;
  t.equal(buf[3], 0xde, 'copy() does not alias');
  r.seek(0);
  r.skip(9);
  t.equal(r.u8(), 0x43);
});

t.test('reader: a window [start, end) with absolute offsets', async (t) => {
  const buf = Buffer.from([9, 9, 1, 2, 3, 9]);
  const r = new ByteReader(buf, { start: 2, end: 5 });
  t.equal(r.offset, 2);
  const sub = r.sub(2);
  t.equal(sub.u16(), 0x0102);
  t.equal(r.u8(), 3);
  t.throws(() => r.u8(), ByteRangeError, 'the window end is a hard end');
  t.throws(() => new ByteReader(buf, { start: 4, end: 2 }), TypeError, 'bad window is a caller bug');
  t.throws(() => new ByteReader(buf, { end: 7 }), TypeError);
});

t.test('reader: failures carry the offset; a factory chooses the error', async (t) => {
  const r = new ByteReader(Buffer.from([1, 2, 3]));
  r.u8();
  try {
    r.u32();
    t.fail('should throw');
  } catch (err) {
    t.ok(err instanceof ByteRangeError && err instanceof RangeError);
    t.match(err, { offset: 1, need: 4, available: 2 });
  }
  t.equal(r.offset, 1, 'a failed read consumes nothing');
  const f = new ByteReader(Buffer.alloc(2), { fail: (offset, need, available) => Object.assign(new Error(`${offset}/${need}/${available}`), { code: 'MINE' }) });
  t.throws(() => f.bytes(3), { code: 'MINE', message: '0/3/2' }, 'the factory error');
  t.throws(() => f.sub(3), { code: 'MINE' }, 'sub() checks too');
  t.throws(() => f.seek(3), { code: 'MINE' }, 'seek past the end');
});

t.test('writer: grows, writes big-endian, patches, refuses bad values', async (t) => {
  const w = new ByteWriter(1);
  w.u8(1).u16(0x0203).u32(0x04050607).bytes(Buffer.from([8])).latin1('é').zeros(2);
  for (let i = 0; i < 100; i++) w.u8(i);
  w.setU8(0, 0xff);
  const out = w.toBuffer();
  t.equal(out.length, 1 + 2 + 4 + 1 + 1 + 2 + 100);
  t.same([...out.subarray(0, 11)], [0xff, 2, 3, 4, 5, 6, 7, 8, 0xe9, 0, 0]);
  t.equal(out[110], 99);
  for (const bad of [() => w.u8(256), () => w.u8(-1), () => w.u8(1.5), () => w.u16(65536), () => w.u32(2 ** 32), () => w.latin1('☃'), () => w.setU8(1000, 1)]) {
    t.throws(bad, TypeError);
  }
});
