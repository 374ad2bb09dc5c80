import t from 'tap';
import {
  ACTIONS, BOOT_SCRIPT_BY_STATE, PHASE_FAILED, PHASE_STATES, PHASE_TIMEOUTS_MS, STATES, TRANSITIONS, USER_ACTIONS,
  actionsFrom, deadlineOf, expire, isPhaseState, ruleFor, transition, type Action, type Effect, type State,
} from '../../src/core/lifecycle.ts';
import { isMetalboxError } from '../../src/lib/errors.ts';
import type { MachineRecord } from '../../src/store/types.ts';

const NOW = Date.parse('2025-03-01T12:00:00.000Z');

function machine(state: string, extra: Record<string, unknown> = {}): MachineRecord {
  return {
    id: 'abcd2345', hostname: 'node-770010', macs: ['52:54:00:77:00:10'], state, tags: ['rack1'],
    createdAt: '2025-01-01T00:00:00.000Z', updatedAt: '2025-01-01T00:00:00.000Z', ...extra,
  };
}

// The expected table, written out independently of src/core/lifecycle.ts: state -> action -> target.
// 'R' = the state remembered when entering Rescue; 'C' = Ready if commissioned else New.
const EXPECTED: Record<State, Partial<Record<Action, State | 'R' | 'C'>>> = {
  New: { commission: 'Commissioning', 'mark-broken': 'Broken' },
  Commissioning: { 'commission-done': 'Ready', 'commission-failed': 'FailedCommissioning', timeout: 'FailedCommissioning', abort: 'New', 'mark-broken': 'Broken' },
  Ready: { commission: 'Commissioning', allocate: 'Allocated', deploy: 'Deploying', rescue: 'Rescue', 'mark-broken': 'Broken' },
  Allocated: { deploy: 'Deploying', release: 'Ready', rescue: 'Rescue', 'mark-broken': 'Broken' },
  Deploying: { 'deploy-done': 'Deployed', 'deploy-failed': 'FailedDeployment', timeout: 'FailedDeployment', abort: 'Allocated', 'mark-broken': 'Broken' },
  Deployed: { release: 'Releasing', rescue: 'Rescue', 'mark-broken': 'Broken' },
  Releasing: { 'release-done': 'Ready', 'release-failed': 'FailedReleasing', timeout: 'FailedReleasing', abort: 'FailedReleasing', 'mark-broken': 'Broken' },
  Rescue: { 'exit-rescue': 'R' },
  Broken: { commission: 'Commissioning', rescue: 'Rescue', 'mark-fixed': 'C' },
  FailedCommissioning: { commission: 'Commissioning', rescue: 'Rescue', 'mark-broken': 'Broken' },
  FailedDeployment: { deploy: 'Deploying', release: 'Releasing', rescue: 'Rescue', 'mark-broken': 'Broken' },
  FailedReleasing: { release: 'Releasing', rescue: 'Rescue', 'mark-broken': 'Broken' },
};

t.test('every (state, action) pair: legal ones go where the table says, the rest are LIFECYCLE_INVALID_TRANSITION', async (t) => {
  let legal = 0;
  let illegal = 0;
  for (const state of STATES) {
    for (const action of ACTIONS) {
      const want = EXPECTED[state][action];
      const m = machine(state, state === 'Rescue' ? { rescueReturn: 'Deployed' } : {});
      if (want === undefined) {
        illegal++;
        t.equal(ruleFor(state, action), undefined, `${state} x ${action}: no rule`);
        t.throws(() => transition(m, action, { actor: 'alice', now: NOW }), { code: 'LIFECYCLE_INVALID_TRANSITION' }, `${state} x ${action} refused`);
        continue;
      }
      legal++;
      const r = transition(m, action, { actor: 'alice', now: NOW });
      const to = want === 'R' ? 'Deployed' : want === 'C' ? 'New' : want;
      t.equal(r.state, to, `${state} x ${action} -> ${to}`);
      t.equal(r.machine.state, to);
      t.equal(r.from, state);
      t.equal(r.event.type, 'machine.state');
      t.equal(r.event.actor, 'alice');
      t.equal(r.event.subject, 'abcd2345');
      t.match(r.event.data, { from: state, to, action });
      // Exactly one boot script, first, and the one the new state serves.
      t.same(r.effects[0], { kind: 'bootScript', script: BOOT_SCRIPT_BY_STATE[to] });
      t.equal(r.effects.filter((e) => e.kind === 'bootScript').length, 1);
      // A phase gets its deadline and a timeout effect; nothing else has either.
      const timeouts = r.effects.filter((e) => e.kind === 'timeout');
      if (isPhaseState(to)) {
        t.same(timeouts, [{ kind: 'timeout', ms: PHASE_TIMEOUTS_MS[to] }]);
        t.equal(r.machine.phaseDeadline, new Date(NOW + PHASE_TIMEOUTS_MS[to]).toISOString());
      } else {
        t.same(timeouts, []);
        t.equal(r.machine.phaseDeadline, undefined);
      }
      // The boot device is set before any power action.
      const kinds = r.effects.map((e) => e.kind);
      if (kinds.includes('bootDevice') && kinds.includes('power')) t.ok(kinds.indexOf('bootDevice') < kinds.indexOf('power'));
    }
  }
  t.equal(legal + illegal, STATES.length * ACTIONS.length);
  t.equal(legal, Object.values(EXPECTED).reduce((n, row) => n + Object.keys(row).length, 0), 'the table has no rule the test does not expect');
  t.equal(TRANSITIONS.reduce((n, r) => n + r.from.length, 0), legal, 'one rule per legal pair');
});

t.test('effects of the phases: PXE once, power cycle; failures and aborts power off', async (t) => {
  const pxe: Effect = { kind: 'bootDevice', device: 'pxe', persistent: false };
  const cycle: Effect = { kind: 'power', action: 'cycle' };
  const off: Effect = { kind: 'power', action: 'off' };
  t.same(transition(machine('New'), 'commission', { actor: 'a', now: NOW }).effects, [
    { kind: 'bootScript', script: 'commission' }, pxe, cycle, { kind: 'timeout', ms: 30 * 60_000 },
  ]);
  t.same(transition(machine('Ready'), 'deploy', { actor: 'a', now: NOW }).effects.slice(0, 3), [{ kind: 'bootScript', script: 'deploy' }, pxe, cycle]);
  t.same(transition(machine('Deployed'), 'release', { actor: 'a', now: NOW }).effects.slice(0, 3), [{ kind: 'bootScript', script: 'release' }, pxe, cycle]);
  t.same(transition(machine('Deploying'), 'deploy-done', { actor: 'agent', now: NOW }).effects, [
    { kind: 'bootScript', script: 'local-disk' }, { kind: 'bootDevice', device: 'disk', persistent: true },
  ], 'the installed system reported itself running: disk from now on, power left alone');
  for (const [state, action] of [['Commissioning', 'commission-failed'], ['Deploying', 'abort'], ['Releasing', 'timeout'], ['Allocated', 'release']] as const) {
    t.same(transition(machine(state), action, { actor: 'a', now: NOW }).effects.slice(1), [off], `${state} ${action}`);
  }
  t.same(transition(machine('Ready'), 'rescue', { actor: 'a', now: NOW }).effects, [{ kind: 'bootScript', script: 'rescue' }, pxe, cycle]);
  t.same(transition(machine('Deployed'), 'mark-broken', { actor: 'a', now: NOW }).effects, [{ kind: 'bootScript', script: 'local-disk' }], 'broken: power left alone');
});

t.test('rescue remembers where it came from; exit-rescue returns there', async (t) => {
  for (const from of ['Ready', 'Allocated', 'Deployed', 'Broken', 'FailedCommissioning', 'FailedDeployment', 'FailedReleasing'] as const) {
    const inRescue = transition(machine(from), 'rescue', { actor: 'a', now: NOW });
    t.equal(inRescue.machine.rescueReturn, from);
    const back = transition(inRescue.machine, 'exit-rescue', { actor: 'a', now: NOW + 1000 });
    t.equal(back.state, from);
    t.equal(back.machine.rescueReturn, undefined, 'cleared on exit');
    if (from === 'Deployed') t.same(back.effects.slice(1), [{ kind: 'bootDevice', device: 'disk', persistent: true }, { kind: 'power', action: 'cycle' }]);
    else t.same(back.effects.slice(1), [{ kind: 'power', action: 'off' }]);
  }
  t.equal(transition(machine('Rescue'), 'exit-rescue', { actor: 'a', now: NOW }).state, 'Broken', 'no return state recorded: Broken, not a guess');
  t.equal(transition(machine('Rescue', { rescueReturn: 'Rescue' }), 'exit-rescue', { actor: 'a', now: NOW }).state, 'Broken');
});

t.test('mark-fixed: Ready once commissioned, else New; commission-done records commissionedAt', async (t) => {
  t.equal(transition(machine('Broken'), 'mark-fixed', { actor: 'a', now: NOW }).state, 'New');
  const done = transition(machine('Commissioning'), 'commission-done', { actor: 'agent', now: NOW });
  t.equal(done.machine.commissionedAt, new Date(NOW).toISOString());
  const broken = transition(done.machine, 'mark-broken', { actor: 'a', now: NOW + 1, reason: 'disk 2 clicks' });
  t.equal(broken.machine.stateReason, 'disk 2 clicks');
  t.equal(broken.event.data?.reason, 'disk 2 clicks');
  const fixed = transition(broken.machine, 'mark-fixed', { actor: 'a', now: NOW + 2 });
  t.equal(fixed.state, 'Ready');
  t.equal(fixed.machine.stateReason, undefined, 'the reason belongs to the state it explained');
});

t.test('transition is pure: the input record is not modified, times come from ctx', async (t) => {
  const m = machine('New');
  const before = JSON.stringify(m);
  const r = transition(m, 'commission', { actor: 'a', now: NOW });
  t.equal(JSON.stringify(m), before);
  t.not(r.machine, m);
  t.equal(r.machine.updatedAt, '2025-03-01T12:00:00.000Z');
  t.equal(r.machine.stateChangedAt, '2025-03-01T12:00:00.000Z');
  t.same(transition(m, 'commission', { actor: 'a', now: NOW }), r, 'same input, same output');
});

t.test('the refusal names the state, the action and where it is allowed', async (t) => {
  try {
    transition(machine('Deployed'), 'commission', { actor: 'a', now: NOW });
    t.fail('should throw');
  } catch (err) {
    t.ok(isMetalboxError(err, 'LIFECYCLE_INVALID_TRANSITION'));
    const e = err as Error & { details: Record<string, unknown> };
    t.match(e.message, /abcd2345 is Deployed: commission is allowed only from New, Ready, Broken, FailedCommissioning; from Deployed: release, rescue, mark-broken/);
    t.same(e.details.allowedFrom, ['New', 'Ready', 'Broken', 'FailedCommissioning']);
  }
  t.throws(() => transition(machine('New'), 'explode', { actor: 'a', now: NOW }), { code: 'LIFECYCLE_INVALID_TRANSITION', message: /unknown action "explode"/ });
  t.throws(() => transition(machine('ready'), 'commission', { actor: 'a', now: NOW }), { code: 'LIFECYCLE_INVALID_TRANSITION' }, 'states are exact');
});

t.test('per-phase timeouts: expire() moves a stuck machine to its failed state with the reason', async (t) => {
  for (const phase of PHASE_STATES) {
    const entered = transition(machine(phase === 'Commissioning' ? 'New' : phase === 'Deploying' ? 'Ready' : 'Deployed'),
      phase === 'Commissioning' ? 'commission' : phase === 'Deploying' ? 'deploy' : 'release', { actor: 'a', now: NOW });
    t.equal(entered.state, phase);
    const ms = PHASE_TIMEOUTS_MS[phase];
    t.equal(expire(entered.machine, NOW + ms - 1), undefined, `${phase}: not before the deadline`);
    const r = expire(entered.machine, NOW + ms);
    t.ok(r, `${phase}: expired at the deadline`);
    t.equal(r!.state, PHASE_FAILED[phase]);
    t.equal(r!.action, 'timeout');
    t.equal(r!.event.actor, 'lifecycle');
    t.match(r!.machine.stateReason, new RegExp(`^${phase} timed out: no report by ${new Date(NOW + ms).toISOString()} \\(entered ${new Date(NOW).toISOString()}\\)`));
    t.same(r!.effects.slice(1), [{ kind: 'power', action: 'off' }]);
  }
  t.equal(expire(machine('Ready'), NOW + 1e12), undefined, 'no deadline at rest');
  // Overrides apply to new deadlines; a phase without a stored deadline counts from stateChangedAt.
  const quick = transition(machine('New'), 'commission', { actor: 'a', now: NOW, timeouts: { Commissioning: 5000 } });
  t.equal(deadlineOf(quick.machine), NOW + 5000);
  t.ok(expire(quick.machine, NOW + 5000));
  const legacy = machine('Deploying', { stateChangedAt: new Date(NOW).toISOString() });
  t.equal(deadlineOf(legacy), NOW + PHASE_TIMEOUTS_MS.Deploying);
  t.equal(deadlineOf(machine('Releasing', { updatedAt: new Date(NOW).toISOString() }), { Releasing: 10 }), NOW + 10);
});

t.test('actionsFrom lists the operator actions of each state', async (t) => {
  t.same(actionsFrom('Ready', USER_ACTIONS), ['commission', 'allocate', 'deploy', 'rescue', 'mark-broken']);
  t.same(actionsFrom('Rescue', USER_ACTIONS), ['exit-rescue']);
  t.same(actionsFrom('Commissioning', USER_ACTIONS), ['abort', 'mark-broken']);
  t.same(actionsFrom('nonsense'), []);
  for (const s of STATES) t.ok(actionsFrom(s, USER_ACTIONS).length > 0, `${s} is not a dead end`);
});
