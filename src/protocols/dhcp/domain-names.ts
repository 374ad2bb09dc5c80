// Lists of domain names in RFC 1035 wire form with message compression, as option 119 carries them
// (RFC 3397 §2: pointers are offsets into the option's data after RFC 3396 concatenation).
//
// Text form: labels joined by '.', no trailing dot, the root name is ''. Label octets that would be ambiguous
// in text are escaped as in RFC 1035 §5.1 master files: `\.` and `\\`, and `\DDD` (decimal) for octets
// outside 0x21..0x7e, so every wire name has exactly one text form and decode/encode round trips.

/** Builds the error for bad wire data; `offset` is relative to the start of the list. */
export type NameFailure = (offset: number, reason: string) => Error;

const MAX_NAME_WIRE = 255; // RFC 1035 §2.3.4, counting length octets and the final zero
const MAX_LABEL = 63;
const MAX_POINTER = 0x3fff;

interface Suffix {
  text: string;
  wire: number;
}

const ROOT: Suffix = { text: '', wire: 1 };

function escapeLabel(data: Buffer, start: number, len: number): string {
  let plain = true;
  for (let i = start; i < start + len; i++) {
    const b = data[i]!;
    if (b < 0x21 || b > 0x7e || b === 0x2e || b === 0x5c) {
      plain = false;
      break;
    }
  }
  if (plain) return data.toString('latin1', start, start + len);
  let out = '';
  for (let i = start; i < start + len; i++) {
    const b = data[i]!;
    if (b === 0x2e || b === 0x5c) out += `\\${String.fromCharCode(b)}`;
    else if (b < 0x21 || b > 0x7e) out += `\\${String(b).padStart(3, '0')}`;
    else out += String.fromCharCode(b);
  }
  return out;
}

/**
 * Decodes a sequence of names filling `data` exactly. Hostile input is bounded: a pointer must point before
 * the start of the run of labels it ends (RFC 1035 §4.1.4 only allows earlier names; this also rules out
 * loops), a name is at most 255 octets, and every position's suffix is decoded once and remembered, so the
 * work is linear in the data even for chains of pointers.
 */
export function decodeNameList(data: Buffer, fail: NameFailure): string[] {
  const memo = new Map<number, Suffix>();
  const names: string[] = [];
  const n = data.length;
  // Positions walked for the current name: label positions with their text, pointer positions with ''.
  const walkedPos: number[] = [];
  const walkedLabel: (string | undefined)[] = [];
  const walkedLen: number[] = [];
  let pos = 0;
  while (pos < n) {
    const nameStart = pos;
    walkedPos.length = 0;
    walkedLabel.length = 0;
    walkedLen.length = 0;
    let p = pos;
    let segmentStart = pos;
    let next = -1;
    let wire = 0;
    let tail: Suffix;
    for (;;) {
      // Only earlier names fill the memo, so only a position before this name can be in it (and `next`
      // is then already set by the pointer that led there).
      const known = p < nameStart ? memo.get(p) : undefined;
      if (known !== undefined) {
        tail = known;
        break;
      }
      if (p >= n) throw fail(p, 'name runs past the end of the option');
      const len = data[p]!;
      if (len === 0) {
        tail = ROOT;
        if (next < 0) next = p + 1;
        break;
      }
      const kind = len & 0xc0;
      if (kind === 0xc0) {
        if (p + 1 >= n) throw fail(p, 'compression pointer cut short');
        const target = ((len & 0x3f) << 8) | data[p + 1]!;
        if (next < 0) next = p + 2;
        if (target >= segmentStart) throw fail(p, `compression pointer to ${target} does not point backwards`);
        walkedPos.push(p);
        walkedLabel.push(undefined);
        walkedLen.push(0);
        segmentStart = target;
        p = target;
        continue;
      }
      if (kind !== 0) throw fail(p, `label type 0x${kind.toString(16)} is reserved`);
      if (p + 1 + len > n) throw fail(p, 'label runs past the end of the option');
      wire += 1 + len;
      if (wire + 1 > MAX_NAME_WIRE) throw fail(nameStart, 'name longer than 255 octets');
      walkedPos.push(p);
      walkedLabel.push(escapeLabel(data, p + 1, len));
      walkedLen.push(len);
      p += 1 + len;
    }
    if (wire + tail.wire > MAX_NAME_WIRE) throw fail(nameStart, 'name longer than 255 octets');
    for (let i = walkedPos.length - 1; i >= 0; i--) {
      const label = walkedLabel[i];
      if (label !== undefined) {
        tail = { text: tail.text === '' ? label : `${label}.${tail.text}`, wire: tail.wire + 1 + walkedLen[i]! };
      }
      memo.set(walkedPos[i]!, tail);
    }
    names.push(tail.text);
    pos = next;
  }
  return names;
}

/** Splits a text name into label octets, undoing RFC 1035 §5.1 escapes. A malformed name is a caller bug. */
function parseName(name: string): Buffer[] {
  const text = name.endsWith('.') && !name.endsWith('\\.') ? name.slice(0, -1) : name;
  if (text === '') return [];
  const labels: Buffer[] = [];
  let cur: number[] = [];
  const bad = (why: string): TypeError => new TypeError(`domain name ${JSON.stringify(name)}: ${why}`);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) throw bad('characters above U+00FF');
    if (c === 0x2e) {
      if (cur.length === 0) throw bad('empty label');
      labels.push(Buffer.from(cur));
      cur = [];
    } else if (c === 0x5c) {
      const d = text.slice(i + 1, i + 4);
      if (/^\d{3}$/.test(d)) {
        const v = Number(d);
        if (v > 255) throw bad(`escape \\${d} is not an octet`);
        cur.push(v);
        i += 3;
      } else {
        if (i + 1 >= text.length) throw bad('trailing backslash');
        const e = text.charCodeAt(i + 1);
        if (e > 0xff) throw bad('characters above U+00FF');
        cur.push(e);
        i += 1;
      }
    } else {
      cur.push(c);
    }
    if (cur.length > MAX_LABEL) throw bad('label longer than 63 octets');
  }
  if (cur.length === 0) throw bad('empty label');
  labels.push(Buffer.from(cur));
  let wire = 1;
  for (const l of labels) wire += 1 + l.length;
  if (wire > MAX_NAME_WIRE) throw bad('longer than 255 octets');
  return labels;
}

/** Encodes names with compression: a suffix already written (same octets, same case) becomes a pointer. */
export function encodeNameList(names: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  let length = 0;
  const written = new Map<string, number>();
  for (const name of names) {
    const labels = parseName(name);
    // A key per suffix, built from the end: each label's length octet then its octets, so keys are
    // unambiguous whatever the labels contain. Matching is exact (case included): the decoder returns
    // exactly the names it was given.
    const keys: string[] = new Array<string>(labels.length);
    let key = '';
    for (let i = labels.length - 1; i >= 0; i--) {
      const l = labels[i]!;
      key = `${String.fromCharCode(l.length)}${l.toString('latin1')}${key}`;
      keys[i] = key;
    }
    let pointer = -1;
    for (let i = 0; i < labels.length; i++) {
      const at = written.get(keys[i]!);
      if (at !== undefined) {
        pointer = at;
        break;
      }
      if (length <= MAX_POINTER) written.set(keys[i]!, length);
      const l = labels[i]!;
      const head = Buffer.allocUnsafe(1);
      head[0] = l.length;
      parts.push(head, l);
      length += 1 + l.length;
    }
    if (pointer >= 0) {
      const ptr = Buffer.allocUnsafe(2);
      ptr.writeUInt16BE(0xc000 | pointer, 0);
      parts.push(ptr);
      length += 2;
    } else {
      parts.push(Buffer.alloc(1));
      length += 1;
    }
  }
  return Buffer.concat(parts, length);
}
