// The NTP service alone, in a child process, for tests and the benchmark that run it inside a network
// namespace (`ip netns exec NS node --import tsx test/helpers/ntp-child.ts CONFIG_YAML`). The YAML goes through
// the real config loader. It prints `{"ready":true,...}` once listening; each line on stdin is a command:
// `status` prints the status JSON (GET /api/v1/ntp's body) on one line, `metrics` the Prometheus text then
// a line `# end`. SIGTERM stops it gracefully.
import { createInterface } from 'node:readline';
import { parseConfig } from '../../src/config/load.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { NtpService } from '../../src/services/ntp/server.ts';

const yaml = process.argv[2] ?? '';
const config = parseConfig(yaml, { source: 'ntp-child', defaultStateDir: '/nonexistent' });
const logger = createLogger(config.logLevel, process.stderr);
const metrics = createMetrics({ processMetrics: false });
const burst = process.env.NTP_CHILD_BURST_SECONDS;
const svc = new NtpService({ config, logger, metrics, ...(burst ? { burstIntervalSeconds: Number(burst) } : {}) });
await svc.start();
process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);

createInterface({ input: process.stdin }).on('line', (line) => {
  void (async () => {
    if (line === 'status') process.stdout.write(`${JSON.stringify(svc.status())}\n`);
    else if (line === 'metrics') process.stdout.write(`${await metrics.registry.metrics()}# end\n`);
  })();
});
process.on('SIGTERM', () => { void svc.stop().then(() => process.exit(0)); });
