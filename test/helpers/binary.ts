// dist/metalbox (the single binary; the agent machines download) for tests: rebuilt when any of its sources is
// newer, under flock(1) so that tap's parallel test files build it once (the second waits and finds it fresh).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROOT } from './process.ts';

export const BINARY = path.join(ROOT, 'dist', 'metalbox');

/** Newest mtime of everything that goes into the binary. */
function newestSource(): number {
  let newest = 0;
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== 'build') walk(file);
      } else if (/\.(ts|js|json|c|h|gyp)$/.test(entry.name)) {
        newest = Math.max(newest, fs.statSync(file).mtimeMs);
      }
    }
  };
  walk(path.join(ROOT, 'src'));
  for (const file of ['image/build-binary.ts', 'package.json', 'package-lock.json']) {
    newest = Math.max(newest, fs.statSync(path.join(ROOT, file)).mtimeMs);
  }
  return newest;
}

const fresh = (): boolean => fs.existsSync(BINARY) && fs.statSync(BINARY).mtimeMs >= newestSource();

/**
 * Builds dist/metalbox when missing or stale. A from-scratch build takes well under a minute here; allow
 * several on a busy machine. Returns the build's figures (empty when it was fresh), or throws with its output.
 */
export function ensureBinary(): string {
  if (fresh()) return '';
  fs.mkdirSync(path.dirname(BINARY), { recursive: true });
  // Under the lock this file runs as a script: it looks again (another test file may have just built it).
  const built = spawnSync('flock', [path.join(ROOT, 'dist', '.build.lock'), process.execPath, '--import', 'tsx', fileURLToPath(import.meta.url), '--build-if-stale'],
    { cwd: ROOT, encoding: 'utf8', timeout: 8 * 60_000 });
  if (built.status !== 0) throw new Error(`npm run build:binary failed (exit ${built.status ?? built.signal}):\n${built.stdout}\n${built.stderr}`);
  return built.stdout.trim().split('\n').filter((l) => /^(bundle|blob|node|binary) /.test(l)).join('\n');
}

if (process.argv[2] === '--build-if-stale' && !fresh()) {
  const r = spawnSync('npm', ['run', 'build:binary'], { cwd: ROOT, stdio: 'inherit' });
  process.exitCode = r.status ?? 1;
}
