// A small IPMI v2.0 BMC for tests: the managed-system side of RMCP+ (Open Session, RAKP 1-4 with
// HMAC-SHA1 or HMAC-SHA256, integrity HMAC-SHA1-96 / HMAC-SHA256-128, AES-CBC-128), the IPMI 1.5
// pre-session Get Channel Authentication Capabilities, the ASF presence pong, and the chassis commands
// metalbox sends. ipmi_sim 2.0.33 refuses cipher suite 17, so this is where suite 17 is tested.
//
// It is written from the spec (IPMI v2.0 §13, §22, §28) with node:crypto and hand-built bytes, and does
// NOT use src/protocols/ipmi: a misreading of the spec in the codec then shows up as a disagreement here
// instead of being shared by both ends. It listens on 127.0.0.1 (loopback: no namespace needed).
//
// `mischief` lets a test rewrite or replace what it sends (truncate, flip a byte of the AuthCode, change
// the session ID, replay an earlier answer, drop), which is how the hostile-response table is built.
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import dgram from 'node:dgram';

export interface ResponderUser {
  password: string;
  /** Maximum privilege: 2 user, 3 operator, 4 administrator. */
  privilege: number;
}

export type AnswerKind = 'pong' | 'auth-caps' | 'open-session' | 'rakp2' | 'rakp4' | 'response';

export interface Outgoing {
  kind: AnswerKind;
  /** For kind 'response': the command answered. */
  netFn?: number;
  cmd?: number;
  /** The datagram about to be sent. */
  packet: Buffer;
  /** Every datagram sent before this one, oldest first (for replays). */
  history: readonly Buffer[];
}

export interface ResponderOptions {
  users?: Record<string, ResponderUser>;
  /** Cipher suites accepted in Open Session (3 and 17 by default). */
  suites?: number[];
  /** The BMC key; absent = K_UID is used for the SIK (§13.31). */
  kg?: Buffer;
  guid?: Buffer;
  /** Returns the datagrams to send instead of `o.packet` (an empty array drops it); undefined sends it as is. */
  mischief?: (o: Outgoing) => Buffer[] | undefined;
}

interface Suite { auth: number; integrity: number; conf: number; hash: 'sha1' | 'sha256'; codeLength: number; icvLength: number }
const SUITES: Record<number, Suite> = {
  3: { auth: 1, integrity: 1, conf: 1, hash: 'sha1', codeLength: 20, icvLength: 12 },
  17: { auth: 3, integrity: 4, conf: 1, hash: 'sha256', codeLength: 32, icvLength: 16 },
};

interface PendingSession {
  managedId: number;
  consoleId: number;
  suite: Suite;
  consoleRandom?: Buffer;
  managedRandom?: Buffer;
  role?: number;
  username?: Buffer;
  user?: ResponderUser;
}

interface ActiveSession extends PendingSession {
  k1: Buffer;
  k2: Buffer;
  privilege: number;
  outSeq: number;
  /** Every session sequence number the console used, in arrival order. */
  inbound: number[];
}

export interface ReceivedCommand {
  session: number;
  sequence: number;
  netFn: number;
  cmd: number;
  rqSeq: number;
  data: Buffer;
}

const le32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
};
const checksum = (b: Buffer): number => (0x100 - (b.reduce((s, x) => (s + x) & 0xff, 0))) & 0xff;
const hmac = (hash: 'sha1' | 'sha256', key: Buffer, ...parts: Buffer[]): Buffer => {
  const h = createHmac(hash, key);
  for (const p of parts) h.update(p);
  return h.digest();
};

export class IpmiResponder {
  readonly users: Record<string, ResponderUser>;
  readonly suites: number[];
  readonly guid: Buffer;
  kg: Buffer | undefined;
  mischief: ResponderOptions['mischief'];

  /** Chassis state the commands change. */
  power = false;
  /** The five data bytes of the last Set System Boot Options parameter 5. */
  bootFlags: Buffer | undefined;
  identify: Buffer[] = [];
  controls: number[] = [];
  readonly commands: ReceivedCommand[] = [];
  /** Console packets it could not make sense of (a client bug if any). */
  readonly clientErrors: string[] = [];
  sessionsOpened = 0;
  sessionsClosed = 0;

  private readonly socket = dgram.createSocket('udp4');
  private readonly pending = new Map<number, PendingSession>();
  readonly sessions = new Map<number, ActiveSession>();
  private readonly history: Buffer[] = [];
  private nextManagedId = 0x1000;
  port = 0;

  constructor(options: ResponderOptions = {}) {
    this.users = options.users ?? { admin: { password: 'password', privilege: 4 } };
    this.suites = options.suites ?? [3, 17];
    this.kg = options.kg;
    this.guid = options.guid ?? Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    this.mischief = options.mischief;
  }

  async start(): Promise<this> {
    this.socket.on('message', (msg, rinfo) => {
      try {
        this.handle(msg, rinfo.address, rinfo.port);
      } catch (err) {
        this.clientErrors.push((err as Error).message);
      }
    });
    await new Promise<void>((resolve) => this.socket.bind(0, '127.0.0.1', () => resolve()));
    this.port = this.socket.address().port;
    return this;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }

  /** Forgets every session, as a BMC does after its inactivity timeout or a reset. */
  dropSessions(): void {
    this.sessions.clear();
    this.pending.clear();
  }

  private send(kind: AnswerKind, packet: Buffer, address: string, port: number, cmd?: { netFn: number; cmd: number }): void {
    const planned = this.mischief?.({ kind, packet, history: [...this.history], ...(cmd ?? {}) });
    this.history.push(packet);
    for (const p of planned ?? [packet]) this.socket.send(p, port, address);
  }

  private handle(msg: Buffer, address: string, port: number): void {
    if (msg.length < 5 || msg[0] !== 0x06) throw new Error('not RMCP');
    if (msg[3] === 0x06) {
      // ASF presence ping -> pong (DSP0136 §3.2.4.3): IPMI supported, ASF 1.0.
      if (msg[8] !== 0x80) throw new Error('ASF message is not a ping');
      const data = Buffer.from([0, 0, 0x11, 0xbe, 0, 0, 0, 0, 0x81, 0, 0, 0, 0, 0, 0, 0]);
      this.send('pong', Buffer.concat([Buffer.from([6, 0, 0xff, 6, 0, 0, 0x11, 0xbe, 0x40, msg[9]!, 0, 16]), data]), address, port);
      return;
    }
    if (msg[4] !== 0x06) {
      this.handleV15(msg, address, port);
      return;
    }
    const typeByte = msg[5]!;
    const payloadType = typeByte & 0x3f;
    const sessionId = msg.readUInt32LE(6);
    const sequence = msg.readUInt32LE(10);
    const length = msg.readUInt16LE(14);
    const payload = msg.subarray(16, 16 + length);
    if (payload.length !== length) throw new Error('payload truncated');
    switch (payloadType) {
      case 0x10: return this.openSession(payload, address, port);
      case 0x12: return this.rakp1(payload, address, port);
      case 0x14: return this.rakp3(payload, address, port);
      case 0x00: return this.sessionMessage(msg, typeByte, sessionId, sequence, payload, address, port);
      default: throw new Error(`payload type ${payloadType}`);
    }
  }

  /** Get Channel Authentication Capabilities outside a session (IPMI 1.5 header, auth type none). */
  private handleV15(msg: Buffer, address: string, port: number): void {
    const m = msg.subarray(14, 14 + msg[13]!);
    if (m[5] !== 0x38) throw new Error(`pre-session command 0x${m[5]?.toString(16)}`);
    const rqSeq = m[4]! >> 2;
    const data = Buffer.from([0x01, 0x97, this.kg ? 0x24 : 0x04, 0x03, 0, 0, 0, 0]);
    const response = this.message(0x07, rqSeq, 0x38, 0, data);
    const head = Buffer.from([6, 0, 0xff, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, response.length]);
    this.send('auth-caps', Buffer.concat([head, response]), address, port);
  }

  private message(netFn: number, rqSeq: number, cmd: number, cc: number, data: Buffer): Buffer {
    const h1 = Buffer.from([0x81, netFn << 2]);
    const body = Buffer.concat([Buffer.from([0x20, rqSeq << 2, cmd, cc]), data]);
    return Buffer.concat([h1, Buffer.from([checksum(h1)]), body, Buffer.from([checksum(body)])]);
  }

  private preSession(payloadType: number, payload: Buffer): Buffer {
    const head = Buffer.alloc(16);
    head.set([6, 0, 0xff, 7, 6, payloadType]);
    head.writeUInt16LE(payload.length, 14);
    return Buffer.concat([head, payload]);
  }

  private openSession(p: Buffer, address: string, port: number): void {
    const tag = p[0]!;
    const consoleId = p.readUInt32LE(4);
    const auth = p[12]! & 0x3f;
    const integrity = p[20]! & 0x3f;
    const conf = p[28]! & 0x3f;
    const suiteId = this.suites.find((id) => SUITES[id]!.auth === auth && SUITES[id]!.integrity === integrity && SUITES[id]!.conf === conf);
    if (suiteId === undefined) {
      this.send('open-session', this.preSession(0x11, Buffer.from([tag, 0x11, 0, 0, ...le32(consoleId)])), address, port);
      return;
    }
    const managedId = this.nextManagedId++;
    this.pending.set(managedId, { managedId, consoleId, suite: SUITES[suiteId]! });
    const algs = Buffer.from([0, 0, 0, 8, auth, 0, 0, 0, 1, 0, 0, 8, integrity, 0, 0, 0, 2, 0, 0, 8, conf, 0, 0, 0]);
    this.send('open-session', this.preSession(0x11, Buffer.concat([Buffer.from([tag, 0, 4, 0]), le32(consoleId), le32(managedId), algs])), address, port);
  }

  private rakp1(p: Buffer, address: string, port: number): void {
    const tag = p[0]!;
    const managedId = p.readUInt32LE(4);
    const s = this.pending.get(managedId);
    if (s === undefined) {
      this.send('rakp2', this.preSession(0x13, Buffer.from([tag, 0x02, 0, 0, 0, 0, 0, 0])), address, port);
      return;
    }
    s.consoleRandom = Buffer.from(p.subarray(8, 24));
    s.role = p[24]!;
    s.username = Buffer.from(p.subarray(28, 28 + p[27]!));
    const user = this.users[s.username.toString('utf8')];
    if (user === undefined) {
      this.send('rakp2', this.preSession(0x13, Buffer.from([tag, 0x0d, 0, 0, ...le32(s.consoleId)])), address, port);
      return;
    }
    if ((s.role & 0x0f) > user.privilege) {
      this.send('rakp2', this.preSession(0x13, Buffer.from([tag, 0x0a, 0, 0, ...le32(s.consoleId)])), address, port);
      return;
    }
    s.user = user;
    s.managedRandom = randomBytes(16);
    // §13.31: HMAC_Kuid(SID_M, SID_C, R_M, R_C, GUID_C, ROLE_M, ULENGTH_M, UNAME_M)
    const code = hmac(s.suite.hash, Buffer.from(user.password), le32(s.consoleId), le32(s.managedId), s.consoleRandom, s.managedRandom, this.guid,
      Buffer.from([s.role, s.username.length]), s.username);
    this.send('rakp2', this.preSession(0x13, Buffer.concat([Buffer.from([tag, 0, 0, 0]), le32(s.consoleId), s.managedRandom, this.guid, code])), address, port);
  }

  private rakp3(p: Buffer, address: string, port: number): void {
    const tag = p[0]!;
    const status = p[1]!;
    const managedId = p.readUInt32LE(4);
    const s = this.pending.get(managedId);
    if (s === undefined || s.user === undefined) {
      if (status === 0) this.send('rakp4', this.preSession(0x15, Buffer.from([tag, 0x02, 0, 0, 0, 0, 0, 0])), address, port);
      return;
    }
    if (status !== 0) {
      this.pending.delete(managedId);
      return;
    }
    const kuid = Buffer.from(s.user.password);
    // §13.31: RAKP 3 code = HMAC_Kuid(R_C, SID_M, ROLE_M, ULENGTH_M, UNAME_M)
    const expected = hmac(s.suite.hash, kuid, s.managedRandom!, le32(s.consoleId), Buffer.from([s.role!, s.username!.length]), s.username!);
    const got = p.subarray(8);
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
      this.send('rakp4', this.preSession(0x15, Buffer.concat([Buffer.from([tag, 0x0f, 0, 0]), le32(s.consoleId)])), address, port);
      return;
    }
    // SIK = HMAC_KG(R_M, R_C, ROLE_M, ULENGTH_M, UNAME_M); K_N = HMAC_SIK(20 x N) (§13.31, §13.32)
    const sik = hmac(s.suite.hash, this.kg ?? kuid, s.consoleRandom!, s.managedRandom!, Buffer.from([s.role!, s.username!.length]), s.username!);
    const k1 = hmac(s.suite.hash, sik, Buffer.alloc(20, 1));
    const k2 = hmac(s.suite.hash, sik, Buffer.alloc(20, 2));
    const icv = hmac(s.suite.hash, sik, s.consoleRandom!, le32(s.managedId), this.guid).subarray(0, s.suite.icvLength);
    this.pending.delete(managedId);
    this.sessions.set(managedId, { ...s, k1, k2, privilege: 2, outSeq: 0, inbound: [] });
    this.sessionsOpened++;
    this.send('rakp4', this.preSession(0x15, Buffer.concat([Buffer.from([tag, 0, 0, 0]), le32(s.consoleId), icv])), address, port);
  }

  private sessionMessage(msg: Buffer, typeByte: number, sessionId: number, sequence: number, payload: Buffer, address: string, port: number): void {
    const s = this.sessions.get(sessionId);
    if (s === undefined) return; // a BMC drops packets for sessions it does not know
    if ((typeByte & 0xc0) !== 0xc0) throw new Error('session packet not encrypted and authenticated');
    const end = 16 + payload.length;
    const codeLength = s.suite.integrity === 1 ? 12 : 16;
    const code = msg.subarray(msg.length - codeLength);
    const signed = msg.subarray(4, msg.length - codeLength);
    if (msg[msg.length - codeLength - 1] !== 0x07) throw new Error('next header is not 7');
    if ((signed.length % 4) !== 0) throw new Error('integrity pad does not align the signed range to 4 bytes');
    if (end + msg[msg.length - codeLength - 2]! + 2 !== msg.length - codeLength) throw new Error('pad length does not match');
    const hash = s.suite.integrity === 1 ? 'sha1' : 'sha256';
    if (!timingSafeEqual(hmac(hash, s.k1, signed).subarray(0, codeLength), code)) throw new Error('client AuthCode does not verify');
    s.inbound.push(sequence);
    // AES-CBC-128, K2's first 16 bytes, IV first; pad 1..N then N (§13.29).
    const decipher = createDecipheriv('aes-128-cbc', s.k2.subarray(0, 16), payload.subarray(0, 16)).setAutoPadding(false);
    const plain = Buffer.concat([decipher.update(payload.subarray(16)), decipher.final()]);
    const padLength = plain[plain.length - 1]!;
    for (let i = 0; i < padLength; i++) if (plain[plain.length - 1 - padLength + i] !== i + 1) throw new Error('client confidentiality pad is not 1..N');
    const m = plain.subarray(0, plain.length - 1 - padLength);
    if (checksum(m.subarray(0, 2)) !== m[2] || checksum(m.subarray(3, m.length - 1)) !== m[m.length - 1]) throw new Error('client message checksum');
    const netFn = m[1]! >> 2;
    const rqSeq = m[4]! >> 2;
    const cmd = m[5]!;
    const data = Buffer.from(m.subarray(6, m.length - 1));
    this.commands.push({ session: sessionId, sequence, netFn, cmd, rqSeq, data });
    const [cc, out] = this.execute(s, netFn, cmd, data);
    this.sendInSession(s, this.message(netFn | 1, rqSeq, cmd, cc, out), address, port, { netFn, cmd });
    if (netFn === 0x06 && cmd === 0x3c && cc === 0) {
      this.sessions.delete(sessionId);
      this.sessionsClosed++;
    }
  }

  private sendInSession(s: ActiveSession, message: Buffer, address: string, port: number, what: { netFn: number; cmd: number }): void {
    const padLength = (16 - ((message.length + 1) % 16)) % 16;
    const padded = Buffer.concat([message, Buffer.from(Array.from({ length: padLength }, (_, i) => i + 1)), Buffer.from([padLength])]);
    const iv = randomBytes(16);
    const cipher = createCipheriv('aes-128-cbc', s.k2.subarray(0, 16), iv).setAutoPadding(false);
    const payload = Buffer.concat([iv, cipher.update(padded), cipher.final()]);
    s.outSeq++;
    const head = Buffer.alloc(16);
    head.set([6, 0, 0xff, 7, 6, 0xc0]);
    head.writeUInt32LE(s.consoleId, 6);
    head.writeUInt32LE(s.outSeq, 10);
    head.writeUInt16LE(payload.length, 14);
    const unpadded = 12 + payload.length + 2;
    const pad = (4 - (unpadded % 4)) % 4;
    const body = Buffer.concat([head, payload, Buffer.alloc(pad, 0xff), Buffer.from([pad, 0x07])]);
    const codeLength = s.suite.integrity === 1 ? 12 : 16;
    const code = hmac(s.suite.integrity === 1 ? 'sha1' : 'sha256', s.k1, body.subarray(4)).subarray(0, codeLength);
    this.send('response', Buffer.concat([body, code]), address, port, what);
  }

  /** The BMC's side of each command: [completion code, data]. */
  private execute(s: ActiveSession, netFn: number, cmd: number, data: Buffer): [number, Buffer] {
    const need = (priv: number): boolean => s.privilege >= priv;
    if (netFn === 0x06) {
      switch (cmd) {
        case 0x3b: { // Set Session Privilege Level
          const p = data[0]! & 0x0f;
          if (p > (s.role! & 0x0f) || p > s.user!.privilege) return [0x81, Buffer.alloc(0)];
          if (p !== 0) s.privilege = p;
          return [0, Buffer.from([s.privilege])];
        }
        case 0x3c: return [0, Buffer.alloc(0)]; // Close Session
        case 0x01: return [0, Buffer.from([0x20, 0x81, 0x02, 0x15, 0x02, 0xbf, 0x57, 0x01, 0x00, 0x34, 0x12, 1, 2, 3, 4])]; // Get Device ID
        case 0x37: return [0, this.guid]; // Get System GUID
      }
    }
    if (netFn === 0x00) {
      switch (cmd) {
        case 0x01: return [0, Buffer.from([this.power ? 0x01 : 0x00, 0x00, 0x40 | (this.identify.length > 0 ? 0x10 : 0)])]; // Get Chassis Status
        case 0x02: { // Chassis Control
          if (!need(3)) return [0xd4, Buffer.alloc(0)];
          const c = data[0]!;
          if (c > 5 || c === 4) return [0xcc, Buffer.alloc(0)];
          this.controls.push(c);
          if (c === 0 || c === 5) this.power = false;
          if (c === 1) this.power = true;
          return [0, Buffer.alloc(0)];
        }
        case 0x04: // Chassis Identify
          if (!need(3)) return [0xd4, Buffer.alloc(0)];
          this.identify.push(Buffer.from(data));
          return [0, Buffer.alloc(0)];
        case 0x08: // Set System Boot Options
          if (!need(3)) return [0xd4, Buffer.alloc(0)];
          if ((data[0]! & 0x7f) !== 5) return [0x80, Buffer.alloc(0)];
          if (data.length !== 6) return [0xc7, Buffer.alloc(0)];
          this.bootFlags = Buffer.from(data.subarray(1));
          return [0, Buffer.alloc(0)];
        case 0x09: // Get System Boot Options
          if ((data[0]! & 0x7f) !== 5) return [0x80, Buffer.alloc(0)];
          return [0, Buffer.concat([Buffer.from([1, 5]), this.bootFlags ?? Buffer.alloc(5)])];
      }
    }
    return [0xc1, Buffer.alloc(0)];
  }
}
