// A BMC as the agent sees it in-band (src/agent/bmc.ts BmcTransport), written from the IPMI v2.0 command
// descriptions (§22.24, §22.26-§22.30, §23.2) rather than from our encoders: channels with a medium type, a LAN
// configuration, a user table. It records every request, and misbehaves on demand (a completion code for a
// command, no answer at all, a lost privilege).
import type { BmcTransport } from '../../src/agent/bmc.ts';
import type { IpmiResponse } from '../../src/lib/ipmi-device.ts';

export interface FakeUser {
  name: string;
  /** As stored: 20 bytes, NUL-padded. */
  password: Buffer;
  enabled: boolean;
  /** Per channel: privilege limit (0x0F: no access) and IPMI messaging. */
  access: Map<number, { privilege: number; messaging: boolean }>;
}

export interface Sent {
  netfn: number;
  cmd: number;
  data: Buffer;
}

const NAMES: Record<string, string> = {
  '6/66': 'Get Channel Info', '6/67': 'Set User Access', '6/68': 'Get User Access', '6/69': 'Set User Name',
  '6/70': 'Get User Name', '6/71': 'Set User Password', '12/2': 'Get LAN Configuration Parameters',
};

export class FakeBmc implements BmcTransport {
  /** channel -> medium type (§6.5: 0x04 802.3 LAN, 0x05 asynch serial, 0x0C system interface). */
  channels = new Map<number, number>([[1, 0x04]]);
  address = [10, 93, 0, 10];
  /** 1 static, 2 DHCP. */
  addressSource = 1;
  maxUsers = 10;
  fixedNames = 0;
  users = new Map<number, FakeUser>();
  sent: Sent[] = [];
  closed = false;
  /** Answer this command (by name) with this completion code, `times` times (default every time). */
  failures: { command: string; cc: number; times?: number; when?: (data: Buffer) => boolean }[] = [];
  /** Never answer this command (by name). */
  hang: string | undefined;
  /** Reject this command (by name) as the device would after its timeout. */
  timeOut: string | undefined;
  /** Answer Set User Access with success but keep nothing. */
  ignoreAccess = false;
  /** Only the 16-byte password form (an IPMI v1.5 BMC): the 20-byte form is 0xC7. */
  only16 = false;

  constructor() {
    this.users.set(2, { name: 'admin', password: pad('admin-pw', 20), enabled: true, access: new Map([[1, { privilege: 4, messaging: true }]]) });
  }

  names(): string[] {
    return this.sent.map((s) => NAMES[`${s.netfn}/${s.cmd}`] ?? `${s.netfn}/${s.cmd}`);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  request(netfn: number, cmd: number, raw: Uint8Array, _timeoutMs: number): Promise<IpmiResponse> {
    const data = Buffer.from(raw);
    this.sent.push({ netfn, cmd, data });
    const name = NAMES[`${netfn}/${cmd}`] ?? 'unknown';
    if (this.hang === name) return new Promise(() => undefined);
    if (this.timeOut === name) return Promise.reject(Object.assign(new Error('ETIMEDOUT: connection timed out, poll'), { code: 'ETIMEDOUT', syscall: 'poll' }));
    const f = this.failures.find((x) => x.command === name && (x.times === undefined || x.times > 0) && (x.when?.(data) ?? true));
    if (f) {
      if (f.times !== undefined) f.times--;
      return Promise.resolve({ completionCode: f.cc, data: Buffer.alloc(0) });
    }
    return Promise.resolve(this.answer(name, data));
  }

  private answer(name: string, d: Buffer): IpmiResponse {
    const ok = (bytes: number[] | Buffer) => ({ completionCode: 0, data: Buffer.from(bytes) });
    const cc = (code: number) => ({ completionCode: code, data: Buffer.alloc(0) });
    switch (name) {
      case 'Get Channel Info': {
        if (d.length < 1) return cc(0xc7);
        const medium = this.channels.get(d[0]! & 0x0f);
        if (medium === undefined) return cc(0xcb);
        return ok([d[0]! & 0x0f, medium, 0x01, 0x81, 0xf2, 0x1b, 0x00, 0x00, 0x00]);
      }
      case 'Get LAN Configuration Parameters': {
        if (d.length < 4) return cc(0xc7);
        if (this.channels.get(d[0]! & 0x0f) !== 0x04) return cc(0xcc);
        if (d[1] === 3) return ok([0x11, ...this.address]);
        if (d[1] === 4) return ok([0x11, this.addressSource]);
        return cc(0x80); // parameter not supported
      }
      case 'Get User Access': {
        if (d.length < 2) return cc(0xc7);
        const id = d[1]! & 0x3f;
        if (id === 0 || id > this.maxUsers) return cc(0xcc);
        const u = this.users.get(id);
        const a = u?.access.get(d[0]! & 0x0f);
        const enabled = [...this.users.values()].filter((x) => x.enabled).length;
        return ok([this.maxUsers, enabled, this.fixedNames, (a?.messaging ? 0x10 : 0) | (a?.privilege ?? 0x0f)]);
      }
      case 'Get User Name': {
        const id = (d[0] ?? 0) & 0x3f;
        if (id === 0 || id > this.maxUsers) return cc(0xcc);
        return ok(pad(this.users.get(id)?.name ?? '', 16));
      }
      case 'Set User Name': {
        if (d.length < 17) return cc(0xc7);
        const id = d[0]! & 0x3f;
        if (id <= Math.max(1, this.fixedNames) || id > this.maxUsers) return cc(0xcc);
        const raw = d.subarray(1, 17);
        const end = raw.indexOf(0);
        this.user(id).name = raw.subarray(0, end < 0 ? 16 : end).toString('latin1');
        return ok([]);
      }
      case 'Set User Password': {
        if (d.length < 2) return cc(0xc7);
        const twenty = (d[0]! & 0x80) !== 0;
        const id = d[0]! & 0x3f;
        if (id === 0 || id > this.maxUsers) return cc(0xcc);
        const op = d[1]! & 0x03;
        if (op === 0 || op === 1) {
          this.user(id).enabled = op === 1;
          return ok([]);
        }
        if (twenty && this.only16) return cc(0xc7);
        const bytes = twenty ? 20 : 16;
        if (d.length !== 2 + bytes) return cc(0xc7);
        if (op === 2) this.user(id).password = pad(d.subarray(2, 2 + bytes), 20);
        else if (!this.user(id).password.equals(pad(d.subarray(2, 2 + bytes), 20))) return cc(0x80);
        return ok([]);
      }
      case 'Set User Access': {
        if (d.length < 3) return cc(0xc7);
        const ch = d[0]! & 0x0f;
        const id = d[1]! & 0x3f;
        const priv = d[2]! & 0x0f;
        if (id === 0 || id > this.maxUsers || (priv > 5 && priv !== 0x0f)) return cc(0xcc);
        if (this.ignoreAccess) return ok([]);
        const u = this.user(id);
        const before = u.access.get(ch) ?? { privilege: 0x0f, messaging: false };
        u.access.set(ch, { privilege: priv, messaging: (d[0]! & 0x80) !== 0 ? (d[0]! & 0x10) !== 0 : before.messaging });
        return ok([]);
      }
      default:
        return cc(0xc1);
    }
  }

  private user(id: number): FakeUser {
    let u = this.users.get(id);
    if (!u) {
      u = { name: '', password: Buffer.alloc(20), enabled: false, access: new Map() };
      this.users.set(id, u);
    }
    return u;
  }
}

/** `v` NUL-padded (or cut) to `n` bytes. */
export function pad(v: string | Buffer, n: number): Buffer {
  const b = Buffer.alloc(n);
  (typeof v === 'string' ? Buffer.from(v, 'latin1') : v).copy(b, 0, 0, n);
  return b;
}
