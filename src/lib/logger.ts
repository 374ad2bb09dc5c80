// Structured JSON logs (pino) to stdout. One root logger, made by main; each service gets a child
// with `svc` set. Secrets never reach a line: the redact paths below censor the usual carriers.
import { pino, type Logger, type Level } from 'pino';

export type { Logger };
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const REDACT = [
  'password', '*.password', '*.*.password',
  'secret', '*.secret', '*.*.secret',
  'token', '*.token', '*.*.token',
  'authorization', '*.authorization', 'req.headers.authorization', 'req.headers.cookie',
  'kg', '*.kg',
];

export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
  const options = {
    level: level as Level | 'silent',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT, censor: '[redacted]' },
    formatters: { level: (label: string) => ({ level: label }) },
  };
  // pino.destination(1) writes synchronously to fd 1, so the last line before an exit is not lost.
  return destination ? pino(options, destination) : pino(options, pino.destination({ fd: 1, sync: true }));
}
