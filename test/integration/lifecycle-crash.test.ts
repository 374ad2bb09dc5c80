// kill -9 between a state change and its effects: a child process (test/helpers/lifecycle-crash-child.ts, the
// real store, registry, BMC service and IPMI driver) commissions a machine whose BMC is an ipmi_sim in a
// namespace; its runner sets the boot device on the BMC and then hangs in the power cycle, and is killed there.
// A second process, started as metalbox starts, carries out what was left (the power cycle, not the boot device
// again) on the same BMC, and records that it re-ran it after a restart.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canBuildLab } from '../helpers/netns.ts';
import { haveIpmiTools, SIM_USERS, startIpmiSims } from '../helpers/ipmi-sim.ts';
import { ROOT, run } from '../helpers/process.ts';
import { openLevelStore } from '../../src/store/level-store.ts';
import type { EventRecord, MachineRecord } from '../../src/store/types.ts';

const CHILD = join(ROOT, 'test/helpers/lifecycle-crash-child.ts');

const lab = canBuildLab();
const tools = haveIpmiTools();
if (!lab.ok || !tools.ok) {
  t.fail(`cannot build the IPMI lab: ${lab.ok ? '' : lab.why}${tools.ok ? '' : tools.why}`);
} else {
  t.test('effects left by a kill -9 are carried out by the next start', { timeout: 120_000 }, async (t) => {
    const sims = await startIpmiSims({ count: 1, tag: 'mbxlc', subnet: 94 });
    const dir = mkdtempSync(join(tmpdir(), 'mbx-lifecycle-crash-'));
    t.teardown(() => { sims.stop(); rmSync(dir, { recursive: true, force: true }); });
    const bmc = sims.bmcs[0]!;
    const child = (args: string[]) => run('ip', ['netns', 'exec', sims.clientNs, process.execPath, '--import', 'tsx', CHILD, dir, ...args]);

    const first = child(['transition', bmc.address, SIM_USERS.admin.name, SIM_USERS.admin.password]);
    const id = /machine (\S+)/.exec(await first.waitFor(/machine \S+\n/, 60_000))![1]!;
    await first.waitFor(/hung power cycle/, 60_000);
    t.same(bmc.state().events, ['boot pxe'], 'the first process set the boot device, and powered nothing');
    // `ip netns exec` execs the command: this is node itself.
    first.child.kill('SIGKILL');
    t.equal(await first.exited, 'SIGKILL', 'killed, not finished');

    const store = await openLevelStore(dir);
    const left = (await store.machines.get(id)) as MachineRecord & { pendingEffects?: { action: string; effects: unknown[] } };
    await store.close();
    t.equal(left.state, 'Commissioning', 'the state change is on disk');
    t.match(left.pendingEffects, { action: 'commission', effects: [{ kind: 'power', action: 'cycle' }] }, 'and the effect it did not carry out');

    const started = performance.now();
    const second = child(['resume']);
    const line = await second.waitFor(/result .*\n/, 60_000);
    t.equal(await second.exited, 0, `the second process exits cleanly${second.stderr() ? `: ${second.stderr()}` : ''}`);
    t.comment(`second start: effects carried out and recorded in ${Math.round(performance.now() - started)} ms (process start included)`);
    const result = JSON.parse(line.slice('result '.length)) as { machines: (MachineRecord & { pendingEffects?: unknown })[]; events: EventRecord[] };
    // cycle of a machine that is off: the BMC service powers it on (BmcService planPower).
    t.same(bmc.state().events, ['boot pxe', 'power 1'], 'the power cycle reached the BMC; the boot device was not set twice');
    t.equal(bmc.state().power, 1, 'the machine is on');
    const m = result.machines.find((x) => x.id === id)!;
    t.equal(m.state, 'Commissioning', 'still commissioning');
    t.equal(m.pendingEffects, undefined, 'nothing is left');
    t.match(result.events.filter((e) => e.subject === id).map((e) => e.data), [
      { action: 'commission', effect: 'bootdev pxe', result: 'done' },
      { action: 'commission', resumed: true, result: 'resumed', effects: ['power cycle'], message: /re-run after a restart/ },
      { action: 'commission', resumed: true, effect: 'power cycle', result: 'done', message: /powered on/ },
    ], 'the events say what was re-run, and why');
  });
}
