import t from 'tap';
import { BOOT_BY_STATE, BOOT_KINDS, planBoot } from '../../src/core/boot-plan.ts';
import { STATES } from '../../src/core/lifecycle.ts';
import type { MachineRecord } from '../../src/store/types.ts';

const machine = (state: string, extra: Partial<MachineRecord> = {}): MachineRecord => ({
  id: 'm-1', hostname: 'node1', macs: ['52:54:00:77:00:10'], state, tags: [], createdAt: '', updatedAt: '', ...extra,
});

t.test('an unknown machine enlists', async (t) => {
  t.same(planBoot(undefined).kind, 'enlist');
  t.match(planBoot(undefined).reason, /unknown machine/);
});

t.test('every lifecycle state has a row, and only those', async (t) => {
  t.same(Object.keys(BOOT_BY_STATE).sort(), [...STATES].sort());
  for (const state of STATES) {
    const kind = BOOT_BY_STATE[state];
    t.ok((BOOT_KINDS as readonly string[]).includes(kind), `${state}: ${kind}`);
    t.equal(planBoot(machine(state)).kind, kind, state);
  }
});

t.test('phases boot the ephemeral environment for their job; everything at rest boots its disk', async (t) => {
  const table: [string, string][] = [
    ['Commissioning', 'commission'], ['Deploying', 'deploy'], ['Releasing', 'release'], ['Rescue', 'rescue'],
    ['New', 'local-disk'], ['Ready', 'local-disk'], ['Allocated', 'local-disk'], ['Deployed', 'local-disk'], ['Broken', 'local-disk'],
    ['FailedCommissioning', 'local-disk'], ['FailedDeployment', 'local-disk'], ['FailedReleasing', 'local-disk'],
  ];
  for (const [state, kind] of table) t.equal(planBoot(machine(state)).kind, kind, state);
  t.match(planBoot(machine('Deploying')).reason, 'machine m-1 is Deploying: deploy');
});

t.test('a Deploying machine whose image is written boots its disk (no second deployment)', async (t) => {
  const plan = planBoot(machine('Deploying', { deployment: { image: 'debian', writtenAt: '2025-01-01T00:00:00.000Z' } }));
  t.equal(plan.kind, 'local-disk');
  t.match(plan.reason, /image is written/);
  t.equal(planBoot(machine('Deploying', { deployment: { image: 'debian' } })).kind, 'deploy', 'not written yet');
  t.equal(planBoot(machine('Deploying', { deployment: 'junk' })).kind, 'deploy', 'a malformed field changes nothing');
});

t.test('a state without a row boots the local disk, never a wipe; states match exactly', async (t) => {
  for (const state of ['', 'exploded', 'constructor', '__proto__', 'toString', 'deploying', 'COMMISSIONING']) {
    const plan = planBoot(machine(state));
    t.equal(plan.kind, 'local-disk', JSON.stringify(state));
    t.match(plan.reason, /no network boot/);
  }
  t.equal(planBoot({ ...machine('x'), state: 42 as unknown as string }).kind, 'local-disk', 'a non-string state');
});

t.test('planBoot is pure: same input, same plan', async (t) => {
  t.same(planBoot(machine('New')), planBoot(machine('New')));
});
