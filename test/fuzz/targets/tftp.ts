// TFTP: decodeTftp on a datagram (RRQ/WRQ with RFC 2347 options and the trailing-NUL quirk, DATA, ACK, ERROR,
// OACK), plus what the service does with a request before any file is touched: checkTftpPath on the file
// name and negotiate (RFC 2348/2349/7440) on the options, whose OACK goes back on the wire.
//
// Invariants (test/unit/tftp-codec.test.ts, tftp-paths.test.ts): decode throws only TFTP_* MetalboxErrors
// with an offset inside the input; a decoded packet re-encodes and decodes to a deeply equal packet;
// formatTftp accepts it; checkTftpPath never throws and a path it passes has no "..", "." or empty segment, no
// leading "/", no NUL, backslash or control byte; negotiate never throws, grants a block size of 8..the limit
// and a window of 1..the limit, and its OACK encodes and decodes to itself; the netascii form of a DATA
// payload converts back to it.
import type * as TftpCodec from '../../../src/protocols/tftp/index.ts';
import type * as TftpNegotiate from '../../../src/services/tftp/negotiate.ts';
import type * as TftpSources from '../../../src/services/tftp/sources.ts';
import type { MetalboxError } from '../../../src/lib/errors.ts';
import type { TftpPacket } from '../../../src/protocols/tftp/index.ts';
import type { NegotiationLimits } from '../../../src/services/tftp/negotiate.ts';
import { loadInstrumented, reexport } from '../coverage.ts';
import type { FuzzTarget } from '../engine.ts';
import { codecTarget, decodeOrRefuse, expectEqual, InvariantError, words } from './common.ts';

type Tftp = typeof TftpCodec
  & Pick<typeof TftpNegotiate, 'negotiate'>
  & Pick<typeof TftpSources, 'checkTftpPath'>
  & { MetalboxError: typeof MetalboxError };

const LIMITS: NegotiationLimits = { maxBlockSize: 1468, maxWindowSize: 64, maxWindowBytes: 1 << 20 };

function seeds(t: Tftp): Buffer[] {
  const packets: TftpPacket[] = [
    { op: 'RRQ', filename: 'ipxe/snponly.efi', mode: 'octet', options: [{ name: 'blksize', value: '1468' }, { name: 'tsize', value: '0' }, { name: 'windowsize', value: '16' }, { name: 'timeout', value: '3' }] },
    { op: 'RRQ', filename: 'pxelinux.cfg/01-52-54-00-ab-cd-ef', mode: 'netascii', options: [] },
    { op: 'WRQ', filename: 'upload.bin', mode: 'OCTET', options: [{ name: 'BlkSize', value: '8' }] },
    { op: 'DATA', block: 1, data: Buffer.from('data block') },
    { op: 'ACK', block: 65535 },
    { op: 'ERROR', code: 8, message: 'option refused' },
    { op: 'OACK', options: [{ name: 'blksize', value: '512' }, { name: 'tsize', value: '1048576' }, { name: 'x-custom', value: '' }] },
  ];
  return [
    ...packets.map((p) => t.encodeTftp(p)),
    Buffer.from('\x00\x01a/./b//c\x00octet\x00blksize\x0065464\x00\x00\x00', 'latin1'), // NUL padding after the options
    Buffer.from('\x00\x01../etc/passwd\x00octet\x00', 'latin1'),
    Buffer.from('\x00\x01C:\\boot\\x\x00octet\x00windowsize\x000\x00', 'latin1'),
  ];
}

const DICTIONARY = words(
  [0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [0, 6], [0, 7], [0], [0, 0],
  'octet', 'netascii', 'mail', 'blksize', 'tsize', 'timeout', 'windowsize', 'BLKSIZE', '65464', '65465', '1468', '0', '8', '7', '256', '4294967296',
  '../', '/', './', '\\', '..', 'pxelinux.cfg/',
);

export async function createTarget(): Promise<FuzzTarget> {
  const inst = await loadInstrumented<Tftp>('tftp', reexport('*', 'src/protocols/tftp/index.ts')
    + reexport('{ negotiate }', 'src/services/tftp/negotiate.ts')
    + reexport('{ checkTftpPath }', 'src/services/tftp/sources.ts')
    + reexport('{ MetalboxError }', 'src/lib/errors.ts'));
  const t = inst.module;
  return codecTarget('tftp', inst, {
    seeds: seeds(t),
    dictionary: DICTIONARY,
    maxLen: 1024,
    run(input) {
      const p = decodeOrRefuse(() => t.decodeTftp(input), t.MetalboxError, /^TFTP_/, input.length, 'decodeTftp');
      if (p === undefined) return;
      t.formatTftp(p);
      expectEqual(t.decodeTftp(t.encodeTftp(p)), p, 'decodeTftp(encodeTftp(p))');
      if (p.op === 'DATA' && !t.fromNetascii(t.toNetascii(p.data)).equals(p.data)) throw new InvariantError('fromNetascii(toNetascii(x)) is not x');
      if (p.op !== 'RRQ' && p.op !== 'WRQ') return;

      const checked = t.checkTftpPath(p.filename);
      if ('path' in checked) {
        const segments = checked.path.split('/');
        if (checked.path.startsWith('/') || segments.some((s) => s === '' || s === '.' || s === '..') || /[\x00-\x1f\x7f\\]/.test(checked.path)) {
          throw new InvariantError(`checkTftpPath passed ${JSON.stringify(p.filename)} as ${JSON.stringify(checked.path)}`);
        }
      }
      for (const size of [undefined, 0, 123_456_789]) {
        const n = t.negotiate(p.options, size, LIMITS);
        if (!Number.isInteger(n.blockSize) || n.blockSize < 8 || n.blockSize > LIMITS.maxBlockSize) throw new InvariantError(`negotiate granted blksize ${n.blockSize}`);
        if (!Number.isInteger(n.windowSize) || n.windowSize < 1 || n.windowSize > LIMITS.maxWindowSize || n.windowSize * n.blockSize > Math.max(LIMITS.maxWindowBytes, n.blockSize)) {
          throw new InvariantError(`negotiate granted windowsize ${n.windowSize} with blksize ${n.blockSize}`);
        }
        if (n.oack.length > 0) {
          const oack: TftpPacket = { op: 'OACK', options: n.oack };
          expectEqual(t.decodeTftp(t.encodeTftp(oack)), oack, 'the OACK of negotiate');
        }
      }
    },
  });
}
