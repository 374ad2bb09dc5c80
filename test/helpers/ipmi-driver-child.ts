// A child process that drives src/bmc/ipmi inside a network namespace, for tests whose BMCs (ipmi_sim)
// live in one: the test process stays in the root namespace and talks to this child over stdio.
//
//   ip netns exec NS node --expose-gc --import tsx test/helpers/ipmi-driver-child.ts
//
// Commands are JSON lines on stdin, each with an `id`; each gets one reply line
// {"id":..,"ok":true,"value":..,"ms":..} or {"id":..,"ok":false,"error":{"code","message","details"},"ms":..}
// (`ms`: how long the call took). Commands:
//   create {key, endpoint, options}   a driver (createIpmiDriver) kept under `key`
//   call {key, method, args}          driver[method](...args): powerStatus, power, setBootDevice, identify, info
//   stats {key}                       driver.stats()
//   close {key}                       driver.close()
//   ping {address, options}           ipmiPing
//   sockets                           native UDP sockets allocated in this process, after a GC (leak checks)
//   exit
import readline from 'node:readline';
import { createIpmiDriver, ipmiPing, type IpmiDriver, type IpmiDriverOptions } from '../../src/bmc/ipmi/index.ts';
import type { BmcEndpoint } from '../../src/bmc/types.ts';
import { udpSocketsAllocated } from '../../src/lib/udp-socket.ts';

interface Command {
  id: number;
  op: string;
  key?: string;
  endpoint?: BmcEndpoint;
  options?: IpmiDriverOptions & Record<string, unknown>;
  method?: string;
  args?: unknown[];
  address?: string;
}

const drivers = new Map<string, IpmiDriver>();
const out = (o: unknown): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };

function driver(key: string | undefined): IpmiDriver {
  const d = drivers.get(key ?? '');
  if (d === undefined) throw new Error(`no driver ${key}`);
  return d;
}

async function handle(c: Command): Promise<unknown> {
  switch (c.op) {
    case 'create':
      drivers.set(c.key!, createIpmiDriver(c.endpoint!, c.options ?? {}));
      return null;
    case 'call': {
      const d = driver(c.key) as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
      const fn = d[c.method!];
      if (typeof fn !== 'function') throw new Error(`no method ${c.method}`);
      return (await fn.apply(d, c.args ?? [])) ?? null;
    }
    case 'stats':
      return driver(c.key).stats();
    case 'close':
      await driver(c.key).close();
      return null;
    case 'ping':
      return (await ipmiPing(c.address!, c.options as object)) ?? null;
    case 'sockets': {
      // Closed sockets are freed when collected: collect first (the child runs with --expose-gc).
      const gc = (globalThis as { gc?: () => void }).gc;
      for (let i = 0; i < 3 && gc; i++) {
        gc();
        await new Promise((resolve) => setImmediate(resolve));
      }
      return udpSocketsAllocated();
    }
    case 'exit':
      for (const d of drivers.values()) await d.close();
      setImmediate(() => process.exit(0));
      return null;
    default:
      throw new Error(`unknown op ${c.op}`);
  }
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const c = JSON.parse(line) as Command;
  const started = performance.now();
  handle(c).then(
    (value) => out({ id: c.id, ok: true, value, ms: performance.now() - started }),
    (err: { code?: string; message?: string; details?: unknown }) => out({ id: c.id, ok: false, error: { code: err.code, message: err.message, details: err.details }, ms: performance.now() - started }),
  );
});
