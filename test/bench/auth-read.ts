// Cost of an authenticated API request's credential check on the LevelDB store: the token and its owner read
// from the resident copy (the default) against reads from LevelDB (resident: leases only), same process, same
// requests. Not a timed test: node --import tsx test/bench/auth-read.ts [--requests N] [--rounds R]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildApp } from '../../src/api/app.ts';
import { createAuthCore } from '../../src/core/auth.ts';
import { EventLog } from '../../src/core/events.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { openLevelStore } from '../../src/store/level-store.ts';
import { auditAs } from '../../src/core/users.ts';
import { median } from '../helpers/bench-util.ts';

const { values } = parseArgs({ options: { requests: { type: 'string', default: '3000' }, rounds: { type: 'string', default: '3' } } });
const requests = Number(values.requests);

async function run(resident: 'memory' | 'leveldb'): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-auth-read-'));
  const store = await openLevelStore(dir, resident === 'memory' ? {} : { resident: ['leases'] });
  try {
    const events = new EventLog(store);
    await events.init();
    const auth = createAuthCore({ store, events }, { hasher: { params: { ln: 10, r: 8, p: 1 } } });
    await auth.users.create({ username: 'bench', role: 'admin', password: 'bench-password-1' }, auditAs('bench'));
    const { token } = await auth.tokens.create((await auth.users.find('bench'))!, { name: 'bench' }, auditAs('bench'));
    const app = await buildApp({ logger: createLogger('silent'), metrics: createMetrics(), version: '0', instanceId: () => 'x', readiness: () => ({ phase: 'running', services: {} }), auth });
    const headers = { authorization: `Bearer ${token}` };
    for (let i = 0; i < 300; i++) await app.inject({ method: 'GET', url: '/api/v1/version', headers });
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < requests; i++) {
      const res = await app.inject({ method: 'GET', url: '/api/v1/version', headers });
      if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}: ${res.body}`);
    }
    const us = Number(process.hrtime.bigint() - t0) / 1000 / requests;
    await app.close();
    return us;
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const memory: number[] = [];
const disk: number[] = [];
for (let r = 0; r < Number(values.rounds); r++) {
  // Alternate the order so the machine's drift hits both.
  if (r % 2 === 0) { memory.push(await run('memory')); disk.push(await run('leveldb')); }
  else { disk.push(await run('leveldb')); memory.push(await run('memory')); }
}
console.log(`authenticated GET /api/v1/version (inject, ${requests} requests x ${values.rounds} rounds): tokens and users resident ${median(memory).toFixed(1)} µs, read from LevelDB ${median(disk).toFixed(1)} µs per request; ratio ${(median(memory) / median(disk)).toFixed(2)}x`);
