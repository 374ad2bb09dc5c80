import t from 'tap';
import { BOOT_BY_STATE, BOOT_KINDS, planBoot } from '../../src/core/boot-plan.ts';
import type { MachineRecord } from '../../src/store/types.ts';

const machine = (state: string): MachineRecord => ({
  id: 'm-1', hostname: 'node1', macs: ['52:54:00:77:00:10'], state, tags: [], createdAt: '', updatedAt: '',
});

t.test('an unknown machine enlists', async (t) => {
  t.same(planBoot(undefined).kind, 'enlist');
  t.match(planBoot(undefined).reason, /unknown machine/);
});

t.test('known states map through the table', async (t) => {
  const table: [string, string][] = [
    ['new', 'commission'], ['commissioning', 'commission'], ['deploying', 'deploy'], ['deployed', 'local-disk'],
    ['ready', 'local-disk'], ['rescue', 'rescue'], ['rescue-mode', 'rescue'], ['Deploying', 'deploy'],
  ];
  for (const [state, kind] of table) t.equal(planBoot(machine(state)).kind, kind, state);
  for (const kind of Object.values(BOOT_BY_STATE)) t.ok((BOOT_KINDS as readonly string[]).includes(kind), kind);
});

t.test('a state without a row boots the local disk, never a wipe', async (t) => {
  for (const state of ['', 'exploded', 'constructor', '__proto__', 'toString']) {
    const plan = planBoot(machine(state));
    t.equal(plan.kind, 'local-disk', JSON.stringify(state));
    t.match(plan.reason, /no network boot/);
  }
});

t.test('planBoot is pure: same input, same plan', async (t) => {
  t.same(planBoot(machine('new')), planBoot(machine('new')));
});
