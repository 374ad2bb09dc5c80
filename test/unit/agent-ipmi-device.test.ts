// The IPMI device transport (src/lib/ipmi-device.ts over the addon's ipmiOpen/ipmiRequest/ipmiClose). This
// machine has no BMC: the real ioctl path runs in test/e2e/inband-bmc.test.ts (a QEMU VM with an emulated KCS
// BMC); here the addon's failures (no device, a device that is not IPMI, bad arguments) and the wrapper's
// queueing, with a fake addon where the order of calls matters.
import t from 'tap';
import { buildNative } from '../../image/build-binary.ts';
import { loadAddon } from '../../src/lib/addon.ts';
import { openIpmiDevice, type IpmiResponse } from '../../src/lib/ipmi-device.ts';

buildNative();
interface Native {
  ipmiOpen(path: string): number;
  ipmiRequest(fd: number, netfn: number, cmd: number, data: Buffer, timeoutMs: number): Promise<IpmiResponse>;
  ipmiClose(fd: number): void;
}
const native = loadAddon('metalbox_native') as Native;

t.test('no device, and a device that is not IPMI: Node-style errors', async (t) => {
  t.throws(() => openIpmiDevice('/nonexistent/ipmi0'), { code: 'ENOENT', syscall: 'open', path: '/nonexistent/ipmi0' });
  const dev = openIpmiDevice('/dev/null');
  await t.rejects(dev.request(0x06, 0x01, Buffer.alloc(0), 1000), { code: 'ENOTTY', syscall: 'ioctl(IPMICTL_SEND_COMMAND)' });
  await dev.close();
  await t.rejects(dev.request(0x06, 0x01, Buffer.alloc(0), 1000), { code: 'EBADF' }, 'closed');
  await dev.close();
});

t.test('the addon checks its arguments (caller bugs are TypeError/RangeError)', async (t) => {
  const fd = native.ipmiOpen('/dev/null');
  t.teardown(() => native.ipmiClose(fd));
  t.throws(() => native.ipmiRequest(fd, 0x40, 1, Buffer.alloc(0), 1000), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }, 'netfn is 6 bits');
  t.throws(() => native.ipmiRequest(fd, 6, 256, Buffer.alloc(0), 1000), { name: 'RangeError' }, 'cmd is a byte');
  t.throws(() => native.ipmiRequest(fd, 6, 1, Buffer.alloc(273), 1000), { name: 'TypeError', message: /at most 272 bytes/ });
  t.throws(() => native.ipmiRequest(fd, 6, 1, 'data' as unknown as Buffer, 1000), { name: 'TypeError' });
  t.throws(() => native.ipmiRequest(fd, 6, 1, Buffer.alloc(0), -1), { name: 'RangeError' }, 'timeout');
  t.throws(() => (native.ipmiRequest as (...a: unknown[]) => unknown)(fd, 6, 1), { code: 'ERR_MISSING_ARGS' });
  t.throws(() => native.ipmiOpen(7 as unknown as string), { name: 'TypeError' });
});

t.test('requests go to the device one at a time, in order; close waits for the one in flight', async (t) => {
  const log: string[] = [];
  const pending: (() => void)[] = [];
  const fake: Native = {
    ipmiOpen: () => 42,
    ipmiRequest: (fd, netfn, cmd) => {
      log.push(`start ${cmd}`);
      return new Promise((resolve, reject) => pending.push(() => {
        log.push(`end ${cmd}`);
        if (cmd === 2) reject(Object.assign(new Error('ETIMEDOUT'), { code: 'ETIMEDOUT' }));
        else resolve({ completionCode: 0, data: Buffer.from([cmd]) });
      }));
    },
    ipmiClose: (fd) => { log.push(`close ${fd}`); },
  };
  const dev = openIpmiDevice('/dev/ipmi0', fake);
  const a = dev.request(6, 1, Buffer.alloc(0), 100);
  const b = dev.request(6, 2, Buffer.alloc(0), 100);
  const c = dev.request(6, 3, Buffer.alloc(0), 100);
  const closed = dev.close();
  const tick = () => new Promise((r) => setImmediate(r));
  await tick();
  t.same(log, ['start 1'], 'the second waits for the first');
  pending.shift()!();
  t.same((await a).data, Buffer.from([1]));
  await tick();
  pending.shift()!();
  await t.rejects(b, { code: 'ETIMEDOUT' });
  await tick();
  t.same(log, ['start 1', 'end 1', 'start 2', 'end 2', 'start 3'], 'a failed request does not stop the queue');
  pending.shift()!();
  await c;
  await closed;
  t.same(log.at(-1), 'close 42', 'closed after the last request');
});
