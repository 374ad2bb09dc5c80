// `metalbox users ...` the way main.ts dispatches it (parseArgs with the users options, METALBOX_PASSWORD,
// the `metalbox: CODE: message` line and exit codes), for the CLI integration test: standard input and the
// environment are real here. Usage: users-cli-child.ts STATE_DIR users-args...
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { defaultConfig } from '../../src/config/load.ts';
import { isMetalboxError } from '../../src/lib/errors.ts';
import { USER_OPTIONS, pickUserFlags, runUsers } from '../../src/cli/users.ts';

const [stateDir, ...argv] = process.argv.slice(2);
const io = { out: (s: string) => process.stdout.write(s), err: (s: string) => process.stderr.write(s) };
try {
  const args = parseArgs({
    args: argv, allowPositionals: true, strict: true,
    options: { ...USER_OPTIONS, 'password-file': { type: 'string' }, password: { type: 'string' } },
  });
  const config = defaultConfig(stateDir!);
  process.exitCode = await runUsers(args.positionals, pickUserFlags(args.values, process.env.METALBOX_PASSWORD), config, io, join(config.stateDir, 'control.sock'));
} catch (err) {
  if (!isMetalboxError(err)) throw err;
  io.err(`metalbox: ${err.code}: ${err.message}\n`);
  process.exitCode = err.code === 'CLI_USAGE' ? 2 : 1;
}
