// Start-up time: spawn of `metalbox serve` to the first 200 on /healthz, for the single binary and, in the
// same run for comparison, for the TypeScript sources under tsx and the bundle under plain node.
//
//   node --import tsx test/bench/startup.ts [--runs 10] [--binary dist/metalbox]
//
// Each variant gets its own state dir; one untimed warm-up run creates the store and (for the binary)
// writes the embedded addons, so the timed runs measure an ordinary restart.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort } from '../helpers/process.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface Variant { name: string; command: string; args: string[] }

/** Milliseconds from spawn to the first 200 on /healthz; the server is stopped before returning. */
async function once(variant: Variant, dir: string): Promise<number> {
  const port = await freePort();
  const config = path.join(dir, 'metalbox.yaml');
  fs.writeFileSync(config, `http:\n  listen: "127.0.0.1:${port}"\nhttps:\n  listen: "127.0.0.1:0"\nlogLevel: warn\n`);
  const env: NodeJS.ProcessEnv = { ...process.env, METALBOX_STATE_DIR: path.join(dir, 'state'), METALBOX_RUNTIME_DIR: path.join(dir, 'run') };
  delete env.NOTIFY_SOCKET;
  const started = performance.now();
  const child = spawn(variant.command, [...variant.args, 'serve', '--config', config], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`${variant.name} exited with ${child.exitCode}: ${stderr}`);
      if (performance.now() - started > 60_000) throw new Error(`${variant.name}: no 200 on /healthz in 60 s`);
      const res = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined);
      if (res?.status === 200) return performance.now() - started;
      await sleep(2);
    }
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '10' }, binary: { type: 'string', default: 'dist/metalbox' } } });
  const runs = Number(values.runs);
  const binary = path.resolve(ROOT, values.binary);
  const variants: Variant[] = [
    { name: 'dist/metalbox (SEA)', command: binary, args: [] },
    { name: 'node --import tsx src/main.ts', command: process.execPath, args: ['--import', 'tsx', 'src/main.ts'] },
  ];
  const bundle = path.join(ROOT, 'dist', '.build', 'metalbox.cjs');
  if (fs.existsSync(bundle)) variants.push({ name: 'node dist/.build/metalbox.cjs', command: process.execPath, args: [bundle] });
  if (!fs.existsSync(binary)) throw new Error(`${binary} is missing: npm run build:binary`);

  const rows: string[] = [];
  for (const variant of variants) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mbx-bench-'));
    try {
      await once(variant, dir);
      const times: number[] = [];
      for (let i = 0; i < runs; i++) times.push(await once(variant, dir));
      times.sort((a, b) => a - b);
      rows.push(`${variant.name.padEnd(34)} median ${percentile(times, 50).toFixed(0).padStart(5)} ms   p90 ${percentile(times, 90).toFixed(0).padStart(5)} ms   min ${(times[0] as number).toFixed(0).padStart(5)} ms`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  process.stdout.write(`spawn -> first 200 on /healthz, ${runs} runs each (${os.cpus().length} cpus, node ${process.versions.node})\n${rows.join('\n')}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
