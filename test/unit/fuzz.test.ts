// Coverage-guided fuzzing of every codec (test/fuzz/), for a bounded time each: DHCP (with the service's
// peekMessageType and the encapsulated options), TFTP (with path checks and option negotiation), DNS (with the
// server's answer path), NTP (with the reply) and IPMI (framing, session setup, messages, bodies, session
// crypto). Each target runs in a worker for METALBOX_FUZZ_SECONDS (default 14) from its seeds and checked-in
// corpus; any finding — a foreign error, a broken round trip, a slow input, a hang — fails the test with the
// minimised input in hex, which then becomes a row of that codec's hostile-input table. Longer campaigns:
// `npx tsx test/fuzz/run.ts <target|all> --seconds N --seed S`.
import t from 'tap';
import { runInWorker, summary } from '../fuzz/runner.ts';
import { TARGET_NAMES, TARGETS } from '../fuzz/targets/index.ts';

const SECONDS = Number(process.env.METALBOX_FUZZ_SECONDS ?? 14);
const SEED = Number(process.env.METALBOX_FUZZ_SEED ?? 1);

for (const name of TARGET_NAMES) {
  t.test(`fuzz ${name} for ${SECONDS} s`, async (t) => {
    // Generous per-input limits: CI machines are shared, and the engine re-times a slow input before it counts.
    const result = await runInWorker({ module: TARGETS[name], seed: SEED, seconds: SECONDS, slowMs: 250, hangMs: 10_000 });
    t.comment(summary(result));
    for (const f of result.found) {
      t.fail(`${name}: ${f.kind}: ${f.signature}`, { message: f.message, minimized: f.minimized, input: f.input, stack: f.stack });
    }
    t.equal(result.findings, 0, `${name}: no findings in ${result.execs} execs`);
    t.ok(result.execs > 1000 && result.corpus > 0 && result.covered > 0, `${name}: it ran (${result.execsPerSecond} exec/s, ${result.covered}/${result.counters} counters covered)`);
  });
}
