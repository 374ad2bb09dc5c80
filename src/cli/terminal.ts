// Terminal input shared by the CLI commands: secrets are read without echo, and the actor of a change made from
// the command line names the local user.
import { userInfo } from 'node:os';
import { MetalboxError } from '../lib/errors.ts';
import type { CliIo } from './commands.ts';

/** Reads a line from the terminal without echo (raw mode; Backspace edits, Ctrl-C cancels with CLI_USAGE). */
export async function readHidden(io: CliIo, prompt: string): Promise<string> {
  const stdin = process.stdin;
  io.err(prompt);
  stdin.setRawMode(true);
  stdin.resume();
  stdin.setEncoding('utf8');
  try {
    return await new Promise<string>((resolve, reject) => {
      let line = '';
      const onData = (chunk: string) => {
        for (const ch of chunk) {
          if (ch === '\r' || ch === '\n' || ch === '\u0004') { stdin.off('data', onData); io.err('\n'); resolve(line); return; }
          if (ch === '\u0003') { stdin.off('data', onData); io.err('\n'); reject(new MetalboxError('CLI_USAGE', 'cancelled')); return; }
          if (ch === '\u007f' || ch === '\b') line = line.slice(0, -1);
          else line += ch;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
}

/** The actor of a change made from this command line: `cli:<local user>`. */
export function cliActor(): string {
  try { return `cli:${userInfo().username}`; } catch { return `cli:uid${process.getuid?.() ?? '?'}`; }
}
