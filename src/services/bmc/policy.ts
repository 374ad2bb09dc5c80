// BMC policy as plain functions: what a power request turns into given the state the BMC reports, and when
// the poller next reads a BMC. The service does the I/O; these decide.
import type { PowerAction, PowerState } from '../../bmc/types.ts';

export type PowerPlan =
  | { kind: 'noop'; reason: string }
  | { kind: 'act'; action: PowerAction; note?: string };

/**
 * Power on of a running machine does nothing (never a cycle), and off of an off machine likewise. Cycle or
 * reset of a machine that is off powers it on: what the asker wants is a machine that boots now, and IPMI
 * leaves "power cycle" of an off system to the implementation (IPMI v2.0 §28.3: some BMCs refuse it with a
 * completion code, some do nothing). With the state unknown (Wake-on-LAN, manual, a BMC that cannot tell),
 * the action is done as asked.
 */
export function planPower(action: PowerAction, state: PowerState): PowerPlan {
  if (action === 'on' && state === 'on') return { kind: 'noop', reason: 'the machine is already on' };
  if ((action === 'off' || action === 'soft-off') && state === 'off') return { kind: 'noop', reason: 'the machine is already off' };
  if ((action === 'cycle' || action === 'reset') && state === 'off') {
    return { kind: 'act', action: 'on', note: `the machine was off: powered on instead of ${action === 'cycle' ? 'a power cycle' : 'a reset'}` };
  }
  return { kind: 'act', action };
}

export interface PollTiming {
  pollSeconds: number;
  unreachableAfter: number;
  unreachablePollSeconds: number;
}

/**
 * Failures retrying will not cure: wrong credentials (retrying risks locking the account on BMCs that count
 * failed logins), a BMC or driver that cannot read status, a certificate that is not the pinned one, a record
 * or key that is unusable. Such a BMC is polled at the unreachable rate until someone edits it.
 */
export const PERSISTENT_FAILURES: readonly string[] = ['BMC_AUTH_FAILED', 'BMC_UNSUPPORTED', 'BMC_TLS_MISMATCH', 'BMC_INVALID', 'SECRET_KEY_UNUSABLE'];

/**
 * Milliseconds until the next poll of a BMC after `failures` consecutive failures (0 = healthy), jittered by
 * ±10% so that a rack added at once does not poll in lockstep: the interval, doubled per failure up to the
 * unreachable interval, which is also the interval once `unreachableAfter` failures are reached or the last
 * failure is persistent. Never retried forever at the normal rate; never abandoned either (a BMC that comes
 * back is noticed within `unreachablePollSeconds`).
 */
export function nextPollMs(failures: number, lastCode: string | undefined, t: PollTiming, random: () => number): number {
  const base = t.pollSeconds * 1000;
  const ceiling = Math.max(base, t.unreachablePollSeconds * 1000);
  let ms: number;
  if (failures === 0) ms = base;
  else if (failures >= t.unreachableAfter || (lastCode !== undefined && PERSISTENT_FAILURES.includes(lastCode))) ms = ceiling;
  else ms = Math.min(base * 2 ** failures, ceiling);
  return Math.round(ms * (0.9 + 0.2 * random()));
}
