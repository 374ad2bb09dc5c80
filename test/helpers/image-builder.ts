// Runs one of image/'s cached builders (image/ephemeral/build.sh, image/deploy-test/build.sh): they print
// `name=value` lines on stdout (key, the built files) and write a `manifest` of the same form beside them.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ROOT } from './process.ts';

export interface BuilderResult {
  /** The builder's stdout lines, by name (`required` are all present). */
  out: Record<string, string>;
  /** The manifest beside the file named by `out[manifestOf]`. */
  manifest: Record<string, string>;
  /** What the builder said on stderr (figures, "cached ..."). */
  log: string;
  /** Wall time of this call. */
  seconds: number;
}

export function runBuilder(script: string, args: string[], opts: { timeoutMs: number; required: string[]; manifestOf: string }): Promise<BuilderResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    execFile('bash', [script, ...args], { cwd: ROOT, timeout: opts.timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) { reject(new Error(`${script} failed: ${err.message}\n${stderr}`)); return; }
      const out = parseLines(stdout);
      const missing = opts.required.filter((k) => !out[k]);
      if (missing.length > 0) { reject(new Error(`${script} printed no ${missing.join('/')}:\n${stdout}\n${stderr}`)); return; }
      const manifest = parseLines(readFileSync(join(dirname(out[opts.manifestOf]!), 'manifest'), 'utf8'));
      resolve({ out, manifest, log: stderr.trim(), seconds: (performance.now() - started) / 1000 });
    });
  });
}

export function parseLines(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}
