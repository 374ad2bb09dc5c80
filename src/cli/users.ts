// `metalbox users create|list|delete|passwd`: the users of the API and the console, from the appliance's
// shell. The first admin comes from here (`metalbox users create NAME --admin`): the API has no way in
// without a user. Like every command that touches the store, it goes through the running metalbox's control
// socket when one runs (root's only: 0600 in the 0700 state dir), and opens the store otherwise.
//
// Passwords never come from argv (every user sees it in ps and /proc): from --password-file FILE (`-` is
// standard input), from METALBOX_PASSWORD, or from a prompt (typed twice, no echo) on a terminal.
import { readFile, stat } from 'node:fs/promises';
import type { Config } from '../config/schema.ts';
import { MetalboxError } from '../lib/errors.ts';
import type { Store } from '../store/types.ts';
import { EventLog } from '../core/events.ts';
import { createAuthCore, type AuthCore } from '../core/auth.ts';
import { auditAs, checkPassword, checkRole, checkUsername, type Role, type UserView } from '../core/users.ts';
import { callControl, type ControlHandler } from '../services/control.ts';
import type { CliIo } from './commands.ts';
import { cliActor, readHidden } from './terminal.ts';

/** parseArgs options of `metalbox users` besides --password-file, which BMC_OPTIONS already declares. */
export const USER_OPTIONS = {
  role: { type: 'string' },
  admin: { type: 'boolean' },
} as const;

export interface UserFlags {
  role?: string;
  admin?: boolean;
  'password-file'?: string;
  /** Only to refuse it with a useful message. */
  password?: string;
  /** METALBOX_PASSWORD, read by main. */
  passwordEnv?: string;
}

/** The flags of `metalbox users` in parseArgs' values (main passes them through untouched). */
export function pickUserFlags(values: Record<string, unknown>, passwordEnv: string | undefined): UserFlags {
  const out: UserFlags = {};
  if (typeof values.role === 'string') out.role = values.role;
  if (values.admin === true) out.admin = true;
  if (typeof values['password-file'] === 'string') out['password-file'] = values['password-file'];
  if (typeof values.password === 'string') out.password = values.password;
  if (passwordEnv !== undefined) out.passwordEnv = passwordEnv;
  return out;
}

export const USERS_USAGE = `usage: metalbox users create NAME --role admin|operator|viewer | --admin [--password-file FILE|-]
       metalbox users list
       metalbox users delete NAME
       metalbox users passwd NAME [--password-file FILE|-]      set a new password (ends their sessions)
  the password comes from --password-file, METALBOX_PASSWORD or a prompt`;

type Ops = {
  create(username: string, role: Role, password: string, actor: string): Promise<UserView>;
  list(): Promise<UserView[]>;
  remove(ref: string, actor: string): Promise<UserView>;
  passwd(ref: string, password: string, actor: string): Promise<UserView>;
};

function userOps(core: AuthCore): Ops {
  return {
    create: (username, role, password, actor) => core.users.create({ username, role, password }, auditAs(actor, { via: 'cli', address: 'local' })),
    list: () => core.users.list(),
    remove: (ref, actor) => core.users.delete(ref, auditAs(actor, { via: 'cli', address: 'local' })),
    passwd: (ref, password, actor) => core.users.update(ref, { password }, auditAs(actor, { via: 'cli', address: 'local' })),
  };
}

/** Control handlers for `users`, given the server's auth core. The actor comes from the CLI (the socket is root's only). */
export function userControlHandlers(core: AuthCore): Record<string, ControlHandler> {
  const ops = userOps(core);
  const actor = (req: Record<string, unknown>) => (typeof req.actor === 'string' && /^cli:[\w.-]{1,64}$/.test(req.actor) ? req.actor : 'cli');
  const ref = (req: Record<string, unknown>) => {
    if (typeof req.ref !== 'string' || req.ref === '') throw new MetalboxError('CLI_USAGE', 'a user name is needed');
    return req.ref;
  };
  return {
    'users.create': async (req) => ops.create(checkUsername(req.username), checkRole(req.role), checkPassword(req.password), actor(req)),
    'users.list': async () => ops.list(),
    'users.delete': async (req) => ops.remove(ref(req), actor(req)),
    'users.passwd': async (req) => ops.passwd(ref(req), checkPassword(req.password), actor(req)),
  };
}

export async function runUsers(positionals: string[], flags: UserFlags, config: Config, io: CliIo, controlPath: string): Promise<number> {
  const [sub, name, ...extra] = positionals;
  if (extra.length > 0) throw usage('too many arguments');
  if (flags.password !== undefined) {
    throw new MetalboxError('CLI_USAGE', '--password would show the password to every user (ps, /proc); use --password-file FILE (or - for standard input) or METALBOX_PASSWORD');
  }
  if (sub !== 'create' && (flags.role !== undefined || flags.admin !== undefined)) throw usage(`--role and --admin go with users create`);
  if (sub !== 'create' && sub !== 'passwd' && flags['password-file'] !== undefined) throw usage('--password-file goes with users create and users passwd');
  const actor = cliActor();

  /** Runs `op` through the server if it runs, else on the store opened here. */
  const viaServerOrStore = async <T>(request: Record<string, unknown> & { op: string }, direct: (ops: Ops) => Promise<T>): Promise<T> => {
    const answer = await callControl(controlPath, { ...request, actor });
    if (answer !== undefined) return answer as T;
    const { openLevelStore } = await import('../store/level-store.ts');
    const store: Store = await openLevelStore(config.stateDir);
    try {
      const events = new EventLog(store);
      await events.init();
      return await direct(userOps(createAuthCore({ store, events })));
    } finally {
      await store.close();
    }
  };

  if (sub === 'create' && name !== undefined) {
    const username = checkUsername(name);
    if (flags.admin && flags.role !== undefined && flags.role !== 'admin') throw usage('--admin and --role disagree');
    const role = checkRole(flags.admin ? 'admin' : flags.role ?? missingRole());
    const password = checkPassword(await readPassword(flags, io, `password for ${username}`));
    const user = await viaServerOrStore({ op: 'users.create', username, role, password }, (ops) => ops.create(username, role, password, actor));
    io.out(`user ${user.username} created (${user.role}, id ${user.id})\n`);
    return 0;
  }
  if (sub === 'list' && name === undefined) {
    const users = await viaServerOrStore({ op: 'users.list' }, (ops) => ops.list());
    io.out(formatUsers(users));
    return 0;
  }
  if (sub === 'delete' && name !== undefined) {
    const user = await viaServerOrStore({ op: 'users.delete', ref: name }, (ops) => ops.remove(name, actor));
    io.out(`user ${user.username} deleted, with their API tokens and sessions\n`);
    return 0;
  }
  if (sub === 'passwd' && name !== undefined) {
    const password = checkPassword(await readPassword(flags, io, `new password for ${name}`));
    const user = await viaServerOrStore({ op: 'users.passwd', ref: name, password }, (ops) => ops.passwd(name, password, actor));
    io.out(`password of ${user.username} set; their sessions have ended\n`);
    return 0;
  }
  throw usage(sub === undefined ? 'a subcommand is needed' : `unknown or incomplete: users ${sub}`);
}

export function formatUsers(users: UserView[]): string {
  if (users.length === 0) return 'no users (metalbox users create NAME --admin makes the first admin)\n';
  const rows = [['USER', 'ROLE', 'CREATED', 'PASSWORD CHANGED', 'ID'], ...users.map((u) => [u.username, u.role, u.createdAt, u.passwordChangedAt, u.id])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

function missingRole(): never {
  throw usage('users create needs --role admin|operator|viewer (or --admin)');
}

/** --password-file (`-`: standard input), else METALBOX_PASSWORD, else a prompt typed twice on a terminal. */
async function readPassword(flags: UserFlags, io: CliIo, what: string): Promise<string> {
  const file = flags['password-file'];
  if (file === '-') {
    if (process.stdin.isTTY) return promptTwice(io, what);
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return stripNewline(Buffer.concat(chunks).toString('utf8'));
  }
  if (file !== undefined) {
    try {
      const st = await stat(file);
      if ((st.mode & 0o044) !== 0) io.err(`warning: ${file} is readable by group or others (chmod 600 ${file})\n`);
      return stripNewline(await readFile(file, 'utf8'));
    } catch (err) {
      throw new MetalboxError('CLI_USAGE', `cannot read the password file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  if (flags.passwordEnv !== undefined && flags.passwordEnv !== '') return flags.passwordEnv;
  if (process.stdin.isTTY) return promptTwice(io, what);
  throw new MetalboxError('CLI_USAGE', 'no password: give --password-file FILE (or - for standard input), set METALBOX_PASSWORD, or run on a terminal');
}

async function promptTwice(io: CliIo, what: string): Promise<string> {
  const first = await prompt(io, `${what}: `);
  const again = await prompt(io, `${what} (again): `);
  if (first !== again) throw new MetalboxError('CLI_USAGE', 'the two passwords differ');
  return first;
}

function stripNewline(s: string): string {
  return s.replace(/\r?\n$/, '');
}

/** Reads a line from the terminal without echo. */
const prompt = readHidden;

function usage(why: string): MetalboxError {
  return new MetalboxError('CLI_USAGE', `${why}\n${USERS_USAGE}`);
}
