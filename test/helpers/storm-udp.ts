// The UDP half of the storm's machines (test/helpers/storm-client.ts): DHCP (both DORAs) and TFTP, run in a worker
// thread of the client process. Why a thread: one client process moves every machine's kernel and initrd (20 GiB
// for 500 machines), and its event loop then ran 600-700 ms late (monitorEventLoopDelay): every DHCP reply and every
// TFTP block waited that long for the JavaScript that answers it, so the client, not the server, set the DHCP and
// TFTP times, and iPXE's 1 s retransmission fired on replies that had arrived. On a rack each machine has its own
// CPU; here the DHCP/TFTP thread is mostly idle, so the scheduler runs it as soon as a datagram arrives.
//
// The main thread asks { id, kind: 'dora' | 'tftp', ... } and gets { id, ... } back (UdpReply); retries, timeouts and
// their counts are decided here, as storm-client.ts's header describes.
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { parentPort, workerData } from 'node:worker_threads';
import { decodeDhcp, encodeDhcp, MESSAGE_TYPE, type DhcpOptions, type DhcpPacket } from '../../src/protocols/dhcp/index.ts';
import { decodeTftp, encodeTftp, optionValue, type TftpPacket } from '../../src/protocols/tftp/index.ts';

export type DoraPhase = 'dhcp1' | 'dhcp2';

export interface DoraRequest { id: number; kind: 'dora'; phase: DoraPhase; mac: string; uuid: string; retry: 'firmware' | 'fast'; deadline: number }
export interface TftpRequest { id: number; kind: 'tftp'; ip: string; server: string; file: string; blksize: number }
export type UdpRequest = DoraRequest | TftpRequest;

export interface AckFacts { yiaddr: string; siaddr: string; file: string; bootfile?: string; tftpServer?: string; serverId?: string }
export interface UdpReply {
  id: number;
  /** The ACK (dora), or undefined when the attempt failed (message says why). */
  ack?: AckFacts;
  ok: boolean;
  message?: string;
  bytes: number;
  retries: number;
  /** Failed tries within the request (a DORA given up after every retransmission, a NAK), with what happened. */
  errors: string[];
  /** When the ACK arrived (epoch ms). */
  at: number;
}

const PXE_VENDOR_CLASS = 'PXEClient:Arch:00000:UNDI:002001';
/** What a PXE ROM asks for (Intel's): mask, routers, DNS, host and domain name, 43, 54, 60, TFTP server and file. */
const PXE_PARAMS = [1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135];
/** What iPXE asks for (its dhcp_request_options_data): the above and its own 175, 203 (and 119, 121). */
const IPXE_PARAMS = [1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 121, 128, 129, 130, 131, 132, 133, 134, 135, 175, 203];
/** Option 175 as iPXE sends it: feature sub-options (HTTP 0x13, PXE ext 0x10, DNS 0x0c, TFTP 0x15, bzImage 0x18, ...). */
const IPXE_ENCAP = Buffer.from([0x13, 1, 1, 0x10, 1, 2, 0x0c, 1, 1, 0x15, 1, 1, 0x18, 1, 1, 0x19, 1, 1, 0x23, 1, 1, 0x11, 1, 1]);
/** Retransmission timeouts: PXE spec 2.1 (4, 8, 16, 32 s), iPXE's config/dhcp.h (1, 2, 4, 8 s), and fast for tests. */
const DHCP_SCHEDULES = { firmware: [4000, 8000, 16000, 32000], ipxe: [1000, 2000, 4000, 8000], fast: [1000, 2000, 4000, 8000] };
const TFTP_TIMEOUTS = [1000, 2000, 4000, 4000, 4000];

interface DhcpWait { xid: number; onReply: (p: DhcpPacket) => void }

export interface UdpEngine {
  handle(req: UdpRequest): Promise<UdpReply>;
  stats(): { received: number; unmatched: number };
  close(): void;
}

/** Binds 0.0.0.0:68 (shared with other processes: reuseAddr) and answers requests in this thread. */
export async function createUdpEngine(): Promise<UdpEngine> {
  const byXid = new Map<number, DhcpWait>();
  const seen = { received: 0, unmatched: 0 };
  const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  await new Promise<void>((resolve, reject) => { sock.once('error', reject); sock.bind(68, () => { sock.off('error', reject); resolve(); }); });
  sock.setBroadcast(true);
  try { sock.setRecvBufferSize(4 * 1024 * 1024); } catch { /* capped by net.core.rmem_max */ }
  sock.on('error', (err) => process.stderr.write(`dhcp socket: ${err.message}\n`));
  sock.on('message', (msg) => {
    seen.received++;
    let p: DhcpPacket;
    try { p = decodeDhcp(msg); } catch { return; }
    if (p.op !== 2) return;
    const w = byXid.get(p.xid);
    if (w) w.onReply(p);
    else seen.unmatched++; // another process's, or a duplicate answer to a retransmission we no longer wait for
  });

  function packet(r: DoraRequest, chaddr: Buffer, xid: number, type: number, started: number, extra: Partial<DhcpOptions>): Buffer {
    const ipxe = r.phase === 'dhcp2';
    const options: DhcpOptions = {
      messageType: type as DhcpOptions['messageType'],
      maxMessageSize: ipxe ? 1472 : 1260,
      clientArch: [0],
      clientNdi: { type: 1, major: 2, minor: 1 },
      clientUuid: { type: 0, id: Buffer.from(r.uuid, 'hex') },
      vendorClass: PXE_VENDOR_CLASS,
      parameterList: ipxe ? IPXE_PARAMS : PXE_PARAMS,
      // QUIRK(ipxe): iPXE sends user class "iPXE" without RFC 3004's length octet.
      ...(ipxe ? { userClass: ['iPXE'], userClassRaw: true, ipxe: IPXE_ENCAP } : {}),
      other: new Map(),
      ...extra,
    };
    return encodeDhcp({
      op: 1, htype: 1, hlen: 6, hops: 0, xid, secs: Math.min(0xffff, Math.floor((Date.now() - started) / 1000)), flags: 0x8000,
      ciaddr: '0.0.0.0', yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr: '0.0.0.0', chaddr, sname: '', file: '', options,
    });
  }

  /** One DORA until an ACK or the deadline: retransmits on the schedule, starts over after it or on a NAK. */
  function dora(r: DoraRequest): Promise<UdpReply> {
    const schedule = r.retry === 'fast' ? DHCP_SCHEDULES.fast : r.phase === 'dhcp1' ? DHCP_SCHEDULES.firmware : DHCP_SCHEDULES.ipxe;
    const chaddr = Buffer.from(r.mac.replace(/:/g, ''), 'hex');
    const started = Date.now();
    const out: UdpReply = { id: r.id, ok: false, bytes: 0, retries: 0, errors: [], at: 0 };
    return new Promise((resolve) => {
      let xid = 0;
      let state: 'discover' | 'request' = 'discover';
      let offer: DhcpPacket | undefined;
      let tries = 0;
      let timer: NodeJS.Timeout | undefined;
      const send = (): void => {
        const data = state === 'discover'
          ? packet(r, chaddr, xid, MESSAGE_TYPE.DISCOVER, started, {})
          : packet(r, chaddr, xid, MESSAGE_TYPE.REQUEST, started, { requestedIp: offer!.yiaddr, serverId: offer!.options.serverId! });
        sock.send(data, 67, '255.255.255.255', (err) => { if (err) process.stderr.write(`dhcp send: ${err.message}\n`); });
        clearTimeout(timer);
        timer = setTimeout(onTimeout, schedule[Math.min(tries, schedule.length - 1)]);
        tries++;
      };
      const onTimeout = (): void => {
        if (Date.now() > r.deadline) { byXid.delete(xid); resolve({ ...out, message: 'deadline' }); return; }
        out.retries++;
        if (tries >= schedule.length) {
          // Every retransmission went unanswered: the firmware gives up; the next boot starts over.
          out.errors.push(`no ${state === 'discover' ? 'OFFER' : 'ACK'} after ${tries} tries`);
          begin();
          return;
        }
        send();
      };
      const onReply = (p: DhcpPacket): void => {
        if (!p.chaddr.subarray(0, 6).equals(chaddr)) return;
        const type = p.options.messageType;
        if (state === 'discover' && type === MESSAGE_TYPE.OFFER) {
          if (p.options.serverId === undefined) return;
          state = 'request';
          offer = p;
          tries = 0;
          send();
        } else if (state === 'request' && type === MESSAGE_TYPE.ACK) {
          clearTimeout(timer);
          byXid.delete(xid);
          const o = p.options;
          resolve({
            ...out, ok: true, at: Date.now(),
            ack: { yiaddr: p.yiaddr, siaddr: p.siaddr, file: p.file, ...(o.bootfile !== undefined ? { bootfile: o.bootfile } : {}), ...(o.tftpServer !== undefined ? { tftpServer: o.tftpServer } : {}), ...(o.serverId !== undefined ? { serverId: o.serverId } : {}) },
          });
        } else if (state === 'request' && type === MESSAGE_TYPE.NAK) {
          out.errors.push(`NAK: ${p.options.other.get(56)?.toString('latin1') ?? ''}`);
          clearTimeout(timer);
          begin();
        }
      };
      const begin = (): void => {
        byXid.delete(xid);
        do xid = randomBytes(4).readUInt32BE(0); while (byXid.has(xid) || xid === 0);
        byXid.set(xid, { xid, onReply });
        state = 'discover';
        tries = 0;
        send();
      };
      begin();
    });
  }

  /** A TFTP read of `file` from `server`, from `ip` (already on the interface); every byte counted, none kept. */
  async function tftp(r: TftpRequest): Promise<UdpReply> {
    const out: UdpReply = { id: r.id, ok: false, bytes: 0, retries: 0, errors: [], at: 0 };
    const s = dgram.createSocket('udp4');
    try {
      await new Promise<void>((resolve, reject) => { s.once('error', reject); s.bind(0, r.ip, () => { s.off('error', reject); resolve(); }); });
    } catch (err) {
      s.close();
      return { ...out, message: `bind ${r.ip}: ${(err as Error).message}` };
    }
    try {
      return await new Promise<UdpReply>((resolve) => {
        let blksize = 512;
        let expect = 1;
        let peerPort = 0;
        let last: Buffer = encodeTftp({ op: 'RRQ', filename: r.file, mode: 'octet', options: [{ name: 'tsize', value: '0' }, { name: 'blksize', value: String(r.blksize) }] });
        let lastTo = 69;
        let tries = 0;
        let timer: NodeJS.Timeout | undefined;
        const fail = (message: string): void => { clearTimeout(timer); resolve({ ...out, message }); };
        const send = (buf: Buffer, port: number): void => {
          last = buf;
          lastTo = port;
          s.send(buf, port, r.server);
          clearTimeout(timer);
          tries = 0;
          timer = setTimeout(onTimeout, TFTP_TIMEOUTS[0]);
        };
        const onTimeout = (): void => {
          if (tries + 1 >= TFTP_TIMEOUTS.length) { fail(`timed out waiting for block ${expect} of ${r.file}`); return; }
          tries++;
          out.retries++;
          s.send(last, lastTo, r.server);
          timer = setTimeout(onTimeout, TFTP_TIMEOUTS[tries]);
        };
        s.on('error', (err) => fail(err.message));
        s.on('message', (msg, rinfo) => {
          if (rinfo.address !== r.server) return;
          // RFC 1350 §4: the first answer fixes the server's transfer id (its port); others get ERROR 5.
          if (peerPort === 0) peerPort = rinfo.port;
          else if (rinfo.port !== peerPort) { s.send(encodeTftp({ op: 'ERROR', code: 5, message: 'Unknown transfer ID' }), rinfo.port, r.server); return; }
          let p: TftpPacket;
          try { p = decodeTftp(msg); } catch { return; }
          if (p.op === 'ERROR') { fail(`TFTP error ${p.code}: ${p.message}`); return; }
          if (p.op === 'OACK' && expect === 1) {
            blksize = Number(optionValue(p.options, 'blksize') ?? 512);
            send(encodeTftp({ op: 'ACK', block: 0 }), peerPort);
            return;
          }
          if (p.op !== 'DATA') return;
          if (p.block === (expect & 0xffff)) {
            out.bytes += p.data.length;
            const ack = encodeTftp({ op: 'ACK', block: p.block });
            if (p.data.length < blksize) {
              clearTimeout(timer);
              // The final ACK; no dallying (RFC 1350 §6 makes it optional): a lost one costs the server a retransmission.
              s.send(ack, peerPort, r.server, () => resolve({ ...out, ok: true, at: Date.now() }));
              return;
            }
            expect++;
            send(ack, peerPort);
          } else if (p.block === ((expect - 1) & 0xffff)) {
            // A duplicate (our ACK was lost or late): ACK it again, once per DATA (Sorcerer's Apprentice, RFC 1123 §4.2.3.1).
            s.send(encodeTftp({ op: 'ACK', block: p.block }), peerPort, r.server);
          }
        });
        send(last, 69);
      });
    } finally {
      s.close();
    }
  }

  return {
    handle: (req) => (req.kind === 'dora' ? dora(req) : tftp(req)),
    stats: () => ({ ...seen }),
    close: () => sock.close(),
  };
}

// The worker: { kind: 'stats' } and { kind: 'close' } besides the requests.
if (parentPort && (workerData as { stormUdp?: boolean } | undefined)?.stormUdp) {
  const port = parentPort;
  const engine = await createUdpEngine();
  port.on('message', (m: UdpRequest | { kind: 'stats' } | { kind: 'close' }) => {
    if (m.kind === 'stats') port.postMessage({ kind: 'stats', ...engine.stats() });
    else if (m.kind === 'close') { engine.close(); port.close(); }
    else void engine.handle(m).then((reply) => port.postMessage(reply));
  });
  port.postMessage({ kind: 'ready' });
}
