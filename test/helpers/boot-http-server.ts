// A child process serving HTTP boot the way `metalbox serve` does (buildApp + the boot-http plugin + the
// HTTP service, a LevelDB store and the asset store) but with a chosen read chunk size, for test/bench/http.ts.
//
//   node --import tsx test/helpers/boot-http-server.ts STATE_DIR PORT CHUNK_BYTES [sendfile|pump|stream]
//
// STATE_DIR must already hold the store with the image registered (metalbox images add). Prints
// `listening PORT` once it serves; SIGTERM stops it.
import { join } from 'node:path';
import { buildApp } from '../../src/api/app.ts';
import { EventLog } from '../../src/core/events.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { HttpService } from '../../src/services/http.ts';
import { BODY_MODES, type BodyMode } from '../../src/services/boot-http/http-file.ts';
import { AssetStore, IpxeBinaries } from '../../src/store/assets.ts';
import { openLevelStore } from '../../src/store/level-store.ts';

async function main(): Promise<void> {
  const [stateDir, port, chunk, body = 'sendfile'] = process.argv.slice(2);
  if (!(BODY_MODES as readonly string[]).includes(body)) throw new Error(`body must be one of ${BODY_MODES.join(', ')}`);
  if (!stateDir || !port || !chunk) throw new Error('usage: boot-http-server.ts STATE_DIR PORT CHUNK_BYTES');
  const store = await openLevelStore(stateDir);
  const events = new EventLog(store);
  await events.init();
  const assets = new AssetStore(join(stateDir, 'assets'), store);
  await assets.open();
  const logger = createLogger('warn');
  const app = await buildApp({
    logger, metrics: createMetrics(), version: 'bench', instanceId: () => undefined,
    readiness: () => ({ phase: 'running', services: {} }),
    boot: {
      store, events, assets, ipxe: new IpxeBinaries('/usr/lib/ipxe'), logger,
      ephemeralImage: undefined, tokenTtlMs: 3_600_000, readChunkBytes: Number(chunk), body: body as BodyMode,
    },
  });
  const http = new HttpService(app, { host: '127.0.0.1', port: Number(port) });
  await http.start();
  process.stdout.write(`listening ${http.address().port}\n`);
  process.once('SIGTERM', () => void http.stop().then(() => store.close()));
}

void main();
