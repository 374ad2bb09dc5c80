// A stable one-line text dump of a TFTP packet, for logs and golden files.
import type { TftpOption, TftpPacket } from './packet.ts';

const quote = (s: string): string => JSON.stringify(s);
const opts = (o: readonly TftpOption[]): string => o.map((x) => ` ${quote(x.name)}=${quote(x.value)}`).join('');

export function formatTftp(p: TftpPacket): string {
  switch (p.op) {
    case 'RRQ':
    case 'WRQ': return `${p.op} ${quote(p.filename)} mode=${quote(p.mode)}${opts(p.options)}`;
    case 'DATA': return `DATA block=${p.block} bytes=${p.data.length}`;
    case 'ACK': return `ACK block=${p.block}`;
    case 'ERROR': return `ERROR code=${p.code} ${quote(p.message)}`;
    case 'OACK': return `OACK${opts(p.options)}`;
  }
}
