// NTP: decodeNtp on a datagram (the 48-byte header, RFC 7822 extension fields, the legacy MAC), plus what the
// server does with a request that decodes: answer() (or a kiss) and the reply encoded.
//
// Invariants (test/unit/ntp-codec.test.ts): decode throws only NTP_* MetalboxErrors with an offset inside the
// input; a decoded packet encodes back to the same octets, bit for bit; formatNtp and kissCode accept it; the
// reply answer() makes for it, and a RATE kiss, encode and decode again.
import type * as NtpCodec from '../../../src/protocols/ntp/index.ts';
import type * as NtpPolicy from '../../../src/services/ntp/policy.ts';
import type { MetalboxError } from '../../../src/lib/errors.ts';
import type { NtpPacket } from '../../../src/protocols/ntp/index.ts';
import type { ReplyHeader } from '../../../src/services/ntp/policy.ts';
import { loadInstrumented, reexport } from '../coverage.ts';
import type { FuzzTarget } from '../engine.ts';
import { codecTarget, decodeOrRefuse, InvariantError, words } from './common.ts';

type Ntp = typeof NtpCodec
  & Pick<typeof NtpPolicy, 'answer' | 'kiss'>
  & { MetalboxError: typeof MetalboxError };

const HEADER: ReplyHeader = { leap: 0, stratum: 2, precision: -20, rootDelay: 0x00000123, rootDispersion: 0x00000456, referenceId: 0x0a4d0001, referenceTime: { seconds: 0xe9000000, fraction: 0x80000000 } };

function header(b0: number, stratum = 3): Buffer {
  const b = Buffer.alloc(48);
  b[0] = b0;
  b[1] = stratum;
  b[2] = 6;
  b[3] = 0xe9;
  b.writeUInt32BE(0xe9000001, 40);
  return b;
}

function ef(type: number, valueBytes: number): Buffer {
  const b = Buffer.alloc(4 + valueBytes, 0x5a);
  b.writeUInt16BE(type, 0);
  b.writeUInt16BE(4 + valueBytes, 2);
  return b;
}

function seeds(): Buffer[] {
  return [
    header(0x23), header(0x1b), header(0x24, 1), header(0xe4, 0), header(0x21), header(0x25),
    Buffer.concat([header(0x23), ef(0x0104, 32)]),
    Buffer.concat([header(0x23), ef(0x0104, 12), ef(0x0204, 28)]),
    Buffer.concat([header(0x23), Buffer.alloc(20, 1)]), // key id + MD5
    Buffer.concat([header(0x23), Buffer.alloc(24, 2)]), // key id + SHA-1
    Buffer.concat([header(0x23), Buffer.alloc(4)]), // crypto-NAK
    Buffer.concat([header(0x23), ef(1, 12), Buffer.alloc(20, 3)]),
  ];
}

const DICTIONARY = words([0x23], [0x1b], [0xe3], [0x24], [0, 0x10], [0, 0x14], [0, 0x18], [0x01, 0x04], [0x02, 0x04], 'RATE', 'DENY', 'RSTR', 'GPS\0', 'LOCL', [0, 0, 0, 0]);

export async function createTarget(): Promise<FuzzTarget> {
  const inst = await loadInstrumented<Ntp>('ntp', reexport('*', 'src/protocols/ntp/index.ts')
    + reexport('{ answer, kiss }', 'src/services/ntp/policy.ts')
    + reexport('{ MetalboxError }', 'src/lib/errors.ts'));
  const n = inst.module;
  const receive = { seconds: 0xe9000002, fraction: 0x40000000 };
  const roundTrip = (p: NtpPacket, what: string): void => {
    const wire = n.encodeNtp(p);
    if (wire.length !== n.ntpLength(p)) throw new InvariantError(`${what}: ${wire.length} octets, ntpLength says ${n.ntpLength(p)}`);
    n.decodeNtp(wire);
  };
  return codecTarget('ntp', inst, {
    seeds: seeds(),
    dictionary: DICTIONARY,
    maxLen: 512,
    run(input) {
      const p = decodeOrRefuse(() => n.decodeNtp(input), n.MetalboxError, /^NTP_/, input.length, 'decodeNtp');
      if (p === undefined) return;
      n.formatNtp(p);
      n.kissCode(p);
      if (!n.encodeNtp(p).equals(input)) throw new InvariantError('encodeNtp(decodeNtp(x)) is not x');
      const reply = n.answer(p, HEADER, receive);
      if (reply !== undefined) roundTrip(reply, 'the reply');
      roundTrip(n.kiss(p, 'RATE'), 'a RATE kiss');
    },
  });
}
