// Zero-copy file -> TCP socket through sendfile(2) on the native addon's background thread (src/native/
// sendfile.c). Optional: `startSendfile` returns undefined when the addon cannot be loaded or predates it,
// and the caller writes the body itself.
import { constants } from 'node:os';
import { loadAddon } from './addon.ts';

interface NativeSendfile {
  sendfileStart?(socketFd: number, fileFd: number, offset: number, length: number, done: (sent: number, errno: number) => void): number;
  sendfileCancel?(id: number): void;
}

export interface SendfileResult {
  /** Bytes the kernel took for the socket. */
  sent: number;
  /** errno name when the transfer stopped early: EPIPE/ECONNRESET (client gone), ECANCELED, ENODATA (file short). */
  error?: string;
}

export interface SendfileJob {
  done: Promise<SendfileResult>;
  /** Ends the transfer soon (ECANCELED); harmless once it has finished. */
  cancel(): void;
}

let native: Required<NativeSendfile> | null | undefined;

function addon(): Required<NativeSendfile> | null {
  if (native === undefined) {
    try {
      const m = loadAddon('metalbox_native') as NativeSendfile;
      native = typeof m.sendfileStart === 'function' && typeof m.sendfileCancel === 'function' ? (m as Required<NativeSendfile>) : null;
    } catch {
      native = null;
    }
  }
  return native;
}

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** Sends [offset, offset+length) of `fileFd` to `socketFd`; undefined when sendfile is not available here. */
export function startSendfile(socketFd: number, fileFd: number, offset: number, length: number): SendfileJob | undefined {
  const m = addon();
  if (!m) return undefined;
  let resolve!: (r: SendfileResult) => void;
  const done = new Promise<SendfileResult>((r) => { resolve = r; });
  const id = m.sendfileStart(socketFd, fileFd, offset, length, (sent, errno) => {
    resolve(errno === 0 ? { sent } : { sent, error: ERRNO_NAMES.get(errno) ?? `errno ${errno}` });
  });
  return { done, cancel: () => m.sendfileCancel(id) };
}
