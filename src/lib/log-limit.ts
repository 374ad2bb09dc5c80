// Rate-limited logging for per-packet problems: a flood of bad packets must not become a flood of log
// lines. Each key logs at most `burst` lines per `intervalMs`; what was suppressed is counted and
// reported with the next line that gets through.
import type { Logger } from './logger.ts';

export type LimitedLog = (level: 'debug' | 'info' | 'warn' | 'error', key: string, fields: Record<string, unknown>, msg: string) => void;

export function limitedLogger(logger: Logger, options: { intervalMs?: number; burst?: number; now?: () => number } = {}): LimitedLog {
  const intervalMs = options.intervalMs ?? 10_000;
  const burst = options.burst ?? 5;
  const now = options.now ?? Date.now;
  const windows = new Map<string, { start: number; count: number; suppressed: number }>();
  return (level, key, fields, msg) => {
    if (!logger.isLevelEnabled(level)) return;
    const t = now();
    let w = windows.get(key);
    if (!w || t - w.start >= intervalMs) {
      const suppressed = w?.suppressed ?? 0;
      // Bounded: keys are a fixed set of reasons; drop old windows if a caller misuses it.
      if (!w && windows.size >= 1000) windows.clear();
      w = { start: t, count: 0, suppressed: 0 };
      windows.set(key, w);
      if (suppressed > 0) fields = { ...fields, suppressed };
    }
    if (w.count >= burst) { w.suppressed++; return; }
    w.count++;
    logger[level](fields, msg);
  };
}
