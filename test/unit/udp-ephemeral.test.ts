// Port 0 without SO_REUSEADDR gives every socket a port of its own (what each TFTP transfer's TID relies
// on); with SO_REUSEADDR Linux may hand one port to two sockets, which is why the TFTP service asks for none.
import t from 'tap';
import { openUdpSocket } from '../../src/lib/udp-socket.ts';

t.test('port 0 with reuseAddress false: distinct ports', async (t) => {
  const sockets = Array.from({ length: 2000 }, () => openUdpSocket({ port: 0, address: '127.0.0.1', reuseAddress: false }, () => undefined));
  try {
    t.equal(new Set(sockets.map((s) => s.port)).size, sockets.length, `${sockets.length} sockets, ${sockets.length} ports`);
  } finally {
    for (const s of sockets) s.close();
  }
});
