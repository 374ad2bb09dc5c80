// kill -9 in the middle of a stream of acknowledged writes; after reopening, every acknowledged write (and
// its index entries) is there, and the writes present are exactly a prefix of the stream. Several rounds on
// one state dir, killed after different numbers of acknowledgements.
//
// kill -9 proves the store acknowledges only what it has handed to the kernel in order and atomically (index
// entries with their records); power-loss durability rests on the {sync: true} batches, which a process kill
// cannot show.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLevelStore } from '../../src/store/level-store.ts';
import { checkCrashState } from '../helpers/store-writer.ts';

const repo = new URL('../..', import.meta.url).pathname;
const writer = join(repo, 'test/helpers/store-writer.ts');

/** Runs the writer until it has acknowledged `killAfter` writes (or `maxMs` passed), then SIGKILLs it. */
async function runAndKill(dir: string, start: number, killAfter: number, maxMs: number): Promise<{ acked: number[]; signal: string | null }> {
  const child = spawn(process.execPath, ['--import', 'tsx', writer, dir, '--start', String(start), '--concurrency', '8'], {
    cwd: repo, stdio: ['ignore', 'pipe', 'inherit'],
  });
  const acked: number[] = [];
  let buffered = '';
  const timer = setTimeout(() => child.kill('SIGKILL'), maxMs);
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines) {
      const m = /^ack (\d+)$/.exec(line);
      if (!m) throw new Error(`writer said: ${line}`);
      acked.push(Number(m[1]));
      if (acked.length === killAfter) child.kill('SIGKILL');
    }
  });
  // 'close' comes after stdout is drained: acks printed just before the kill are counted.
  const signal = await new Promise<string | null>((resolve) => child.on('close', (_code, sig) => resolve(sig)));
  clearTimeout(timer);
  return { acked, signal };
}

t.test('every acknowledged write survives kill -9', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'metalbox-crash-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  let last = -1;
  let total = 0;
  // The last round writes past LevelDB's 4 MiB write buffer, so the kill may land in a memtable compaction.
  for (const [round, killAfter] of [1, 40, 250, 1200, 5000].entries()) {
    const { acked, signal } = await runAndKill(dir, last + 1, killAfter, 20_000);
    t.equal(signal, 'SIGKILL', `round ${round}: the writer was killed, not finished`);
    t.ok(acked.length >= killAfter, `round ${round}: ${acked.length} writes acknowledged before the kill`);
    total += acked.length;

    const store = await openLevelStore(dir);
    const state = await checkCrashState(store);
    await store.close();
    t.same(state.problems, [], `round ${round}: the writes present form a complete, consistent prefix 0..${state.last}`);
    const maxAcked = Math.max(...acked);
    t.ok(state.last >= maxAcked, `round ${round}: every acknowledged write is there (last present ${state.last}, last acked ${maxAcked})`);
    t.ok(state.last > last, `round ${round}: progress`);
    last = state.last;
  }
  t.comment(`${total} acknowledged writes over 5 kills; ${last + 1} writes on disk`);
});
