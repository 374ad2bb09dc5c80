// What the agent is told: the ephemeral /init writes every `metalbox.NAME=VALUE` of the kernel command line,
// and what it found itself (METALBOX_MAC, METALBOX_IF, METALBOX_IP), to /run/metalbox/env as shell assignments
// (`METALBOX_URL='http://...'`, a quote inside as `'\''`) and also hands them to the hook as its environment.

import { AgentError } from './errors.ts';

export const AGENT_MODES = ['enlist', 'commission', 'deploy', 'rescue', 'release'] as const;
export type AgentMode = (typeof AGENT_MODES)[number];

export interface AgentConfig {
  /** metalbox's plain-HTTP base, without a trailing slash. */
  url: string;
  /** The per-boot token: sent as `Authorization: Bearer`, never printed. */
  token: string;
  /** The mode the machine was booted for (the task from the appliance decides). */
  mode: AgentMode | undefined;
  /** MAC of the interface the ephemeral environment uses (the boot NIC), lower case. */
  mac: string | undefined;
  ifname: string | undefined;
  ip: string | undefined;
  uuid: string | undefined;
  image: string | undefined;
  /** metalbox.hold=1: leave the machine running (no power-off or reboot) for a person at the console. */
  hold: boolean;
}

/**
 * Parses POSIX shell assignments, one a line: `NAME=WORD`, optionally after `export `. WORD may mix unquoted
 * text (backslash escapes one character), '...' (literal) and "..." (backslash escapes $ ` " \ and newline).
 * Comments and blank lines are skipped; a line that is not an assignment is ignored (the file is ours, but a
 * person may have edited it); the last assignment of a name wins, as when the shell sources the file.
 * No expansion is done: `$X` stays as written.
 */
export function parseShellEnv(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^\s*(export\s+)?/, '');
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=/.exec(line);
    if (!m) continue;
    const value = parseWord(line.slice(m[0].length));
    if (value !== undefined) vars.set(m[1] as string, value);
  }
  return vars;
}

/** One shell word up to unquoted white space or a comment; undefined when a quote is left open. */
function parseWord(s: string): string | undefined {
  let out = '';
  let i = 0;
  while (i < s.length) {
    const c = s[i] as string;
    if (c === ' ' || c === '\t' || c === '\r') break;
    if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) return undefined;
      out += s.slice(i + 1, end);
      i = end + 1;
    } else if (c === '"') {
      i++;
      let closed = false;
      while (i < s.length) {
        const d = s[i] as string;
        if (d === '"') { closed = true; i++; break; }
        if (d === '\\' && i + 1 < s.length && '$`"\\'.includes(s[i + 1] as string)) { out += s[i + 1]; i += 2; continue; }
        out += d;
        i++;
      }
      if (!closed) return undefined;
    } else if (c === '\\') {
      if (i + 1 < s.length) out += s[i + 1];
      i += 2;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/**
 * The agent's configuration from the env file's assignments and the process environment (which wins: someone
 * running `METALBOX_URL=... metalbox agent` by hand means it). Throws AGENT_ENV_INVALID, naming the variable,
 * never its value (the token).
 */
export function agentConfig(fileVars: ReadonlyMap<string, string>, env: NodeJS.ProcessEnv): AgentConfig {
  const get = (name: string): string | undefined => {
    const v = env[name] ?? fileVars.get(name);
    return v === undefined || v === '' ? undefined : v;
  };
  const rawUrl = get('METALBOX_URL');
  if (rawUrl === undefined) throw new AgentError('AGENT_ENV_INVALID', 'METALBOX_URL is not set (kernel argument metalbox.url)');
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    throw new AgentError('AGENT_ENV_INVALID', 'METALBOX_URL is not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new AgentError('AGENT_ENV_INVALID', 'METALBOX_URL must be http:// or https://');
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new AgentError('AGENT_ENV_INVALID', 'METALBOX_URL must not carry credentials, a query or a fragment');
  }
  const token = get('METALBOX_TOKEN');
  if (token === undefined) throw new AgentError('AGENT_ENV_INVALID', 'METALBOX_TOKEN is not set (kernel argument metalbox.token)');
  // It goes into an HTTP header: visible ASCII only (RFC 6750 §2.1 b64token is a subset of this).
  if (!/^[\x21-\x7e]+$/.test(token)) throw new AgentError('AGENT_ENV_INVALID', 'METALBOX_TOKEN holds characters a bearer token cannot have');
  const mode = get('METALBOX_MODE');
  if (mode !== undefined && !(AGENT_MODES as readonly string[]).includes(mode)) {
    throw new AgentError('AGENT_ENV_INVALID', `METALBOX_MODE "${mode}" is not one of ${AGENT_MODES.join(', ')}`);
  }
  const mac = get('METALBOX_MAC')?.toLowerCase().replaceAll('-', ':');
  return {
    url: url.href.replace(/\/+$/, ''),
    token,
    mode: mode as AgentMode | undefined,
    mac: mac !== undefined && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(mac) ? mac : undefined,
    ifname: get('METALBOX_IF'),
    ip: get('METALBOX_IP'),
    uuid: get('METALBOX_UUID'),
    image: get('METALBOX_IMAGE'),
    hold: get('METALBOX_HOLD') === '1',
  };
}
