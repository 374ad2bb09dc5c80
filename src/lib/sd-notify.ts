// systemd readiness and watchdog notifications (sd_notify(3)) for a `Type=notify` unit.
//
// systemd passes an AF_UNIX datagram socket in $NOTIFY_SOCKET ("/path" or "@abstract"). node:dgram
// cannot send to one, so the datagram goes through our native module, loaded only when the variable is
// set: outside systemd nothing native is touched and every call is a no-op.
//
// A failed notification must never take the service down: each call returns whether the datagram left
// and hands the error to `onError` (main logs it). systemd then acts on its own timeouts.
import { loadAddon } from './addon.ts';

export interface Notifier {
  /** NOTIFY_SOCKET is set: notifications are sent. */
  readonly enabled: boolean;
  /**
   * How often to call `watchdog()`: half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; undefined
   * when systemd does not watch this process (no NOTIFY_SOCKET, no WATCHDOG_USEC, or WATCHDOG_PID names
   * another process).
   */
  readonly watchdogIntervalMs: number | undefined;
  /** READY=1: start-up finished (ports bound, store open). Returns whether the datagram was sent. */
  ready(): boolean;
  /** STOPPING=1: shutdown began. */
  stopping(): boolean;
  /** WATCHDOG=1: still alive. */
  watchdog(): boolean;
  /** STATUS=<text>: one line shown by `systemctl status`. */
  status(text: string): boolean;
}

/** Sends one datagram to a NOTIFY_SOCKET address; throws on failure. */
export type NotifySender = (socketPath: string, message: string) => void;

interface NativeNotify {
  sdNotify(socketPath: string, message: string): void;
}

/**
 * `onError` receives each send failure (including a failure to load the native module); `send` replaces
 * the native sender (tests).
 */
export function createNotifier(env: NodeJS.ProcessEnv = process.env, onError?: (err: Error) => void, send?: NotifySender): Notifier {
  const socketPath = env.NOTIFY_SOCKET ? env.NOTIFY_SOCKET : undefined;
  const enabled = socketPath !== undefined;

  const notify = (message: string): boolean => {
    if (socketPath === undefined) return false;
    try {
      send ??= (loadAddon('metalbox_native') as NativeNotify).sdNotify;
      send(socketPath, message);
      return true;
    } catch (err) {
      onError?.(err instanceof Error ? err : new Error(String(err)));
      return false;
    }
  };

  return {
    enabled,
    watchdogIntervalMs: enabled ? watchdogInterval(env) : undefined,
    ready: () => notify('READY=1'),
    stopping: () => notify('STOPPING=1'),
    watchdog: () => notify('WATCHDOG=1'),
    // A newline would start a second assignment systemd would act on; STATUS= is one line.
    status: (text) => notify(`STATUS=${text.replace(/[\r\n]+/g, ' ')}`),
  };
}

/** sd_watchdog_enabled(3): WATCHDOG_USEC set (and WATCHDOG_PID, if set, is us) -> half of it, in ms. */
function watchdogInterval(env: NodeJS.ProcessEnv): number | undefined {
  // systemd writes plain decimal integers; anything else is not from systemd and is ignored.
  if (!env.WATCHDOG_USEC || !/^\d+$/.test(env.WATCHDOG_USEC)) return undefined;
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isSafeInteger(usec) || usec <= 0) return undefined;
  if (env.WATCHDOG_PID && env.WATCHDOG_PID !== String(process.pid)) return undefined;
  return Math.max(1, Math.floor(usec / 2000));
}
