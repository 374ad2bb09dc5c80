// BMC power control of a real (virtual) machine: OpenIPMI's ipmi_sim owns a QEMU VM through its chassis_control
// script (LAB.md "A real BMC"): `set power 1` starts QEMU, `set power 0` kills it, `set reset 1` resets it over
// QMP, `get power` says whether QEMU runs. metalbox drives it with `metalbox bmc ...` (the BMC service and our
// RMCP+ driver) from the client namespace; ipmitool reads the same BMC back.
//
// The proof that "power on" of a running machine does not reset it: the VM's serial console shows one kernel
// start ("Linux version") per boot, and the QEMU process keeps its pid. A reset (done on purpose at the end)
// shows a second banner, so the check can fail.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { canBuildLab } from '../helpers/netns.ts';
import { ensureEphemeral, secs } from '../helpers/ephemeral.ts';
import { haveIpmiTools, SIM_USERS, startIpmiSims } from '../helpers/ipmi-sim.ts';
import { ROOT } from '../helpers/process.ts';
import { CHASSIS_SCRIPT } from '../../src/lab/chassis.ts';

// The VM behind the BMC: the ephemeral kernel with a shell as init (it must stay up until told otherwise),
// started, stopped and reset by metalbox lab's chassis script (src/lab/chassis.ts) from the vm.conf below.
const vmConfOf = (dir: string, kernel: string, initrd: string): string => [
  '-accel', 'tcg', '-m', '192', '-display', 'none', '-no-user-config', '-nodefaults', '-nic', 'none',
  '-kernel', kernel, '-initrd', initrd, '-append', 'console=ttyS0 rdinit=/bin/sh panic=-1',
  '-serial', `file:${join(dir, 'serial.log')}`, '-qmp', `unix:${join(dir, 'qmp.sock')},server=on,wait=off`, '',
].join('\n');

const lab = canBuildLab();
const tools = haveIpmiTools();
t.setTimeout(600_000);
if (!lab.ok) t.fail(`cannot build the lab: ${lab.why}`);
else if (!tools.ok) t.fail(tools.why);
else if (!existsSync('/usr/bin/qemu-system-x86_64')) t.fail('qemu-system-x86 must be installed (.ci/run installs it)');
else {
  t.test('metalbox powers a QEMU VM through ipmi_sim; power on of a running VM leaves it running', { timeout: 540_000 }, async (t) => {
    const img = await ensureEphemeral();
    const dir = mkdtempSync(join(tmpdir(), 'mbx-bmc-vm-'));
    const script = join(dir, 'chassis.sh');
    writeFileSync(script, CHASSIS_SCRIPT, { mode: 0o755 });
    let vmDir = '';
    const sims = await startIpmiSims({
      count: 1, tag: 'mbxvm', subnet: 94,
      chassisControl: ({ chassisDir }) => {
        vmDir = chassisDir;
        writeFileSync(join(chassisDir, 'vm.conf'), vmConfOf(chassisDir, img.kernel, img.initrd));
        return `${script} ${chassisDir}`;
      },
    });
    const qemuPid = (): number | undefined => {
      const f = join(vmDir, 'qemu.pid');
      if (!existsSync(f)) return undefined;
      const pid = Number(readFileSync(f, 'utf8').trim());
      try { process.kill(pid, 0); return pid; } catch { return undefined; }
    };
    t.teardown(() => {
      const pid = qemuPid();
      if (pid) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      sims.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    const bmc = sims.bmcs[0]!;
    const serial = () => (existsSync(join(vmDir, 'serial.log')) ? readFileSync(join(vmDir, 'serial.log'), 'utf8') : '');
    const boots = () => serial().split('Linux version').length - 1;
    const waitFor = async (what: string, ok: () => boolean, ms: number) => {
      const until = Date.now() + ms;
      while (!ok()) {
        if (Date.now() > until) throw new Error(`timed out waiting for ${what}; serial:\n${serial().slice(-2000)}`);
        await sleep(200);
      }
    };

    // metalbox's CLI on its own state dir, in the client namespace (the BMC network).
    const state = join(dir, 'state');
    const config = join(dir, 'metalbox.yaml');
    writeFileSync(config, `stateDir: ${state}\nhttp: { listen: "127.0.0.1:5240" }\nbmc: { pollSeconds: 0, timeoutSeconds: 10 }\n`);
    writeFileSync(join(dir, 'pw'), `${SIM_USERS.admin.password}\n`, { mode: 0o600 });
    const mbx = (...args: string[]) => new Promise<{ code: number; out: string; err: string }>((resolve) => {
      const child = spawn('ip', ['netns', 'exec', sims.clientNs, process.execPath, '--import', 'tsx', join(ROOT, 'src/main.ts'), ...args, '--config', config], { cwd: ROOT, env: { ...process.env, NOTIFY_SOCKET: '' } });
      let out = '';
      let err = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
      child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
      child.on('exit', (code) => resolve({ code: code ?? -1, out, err }));
    });
    const must = async (...args: string[]) => {
      const r = await mbx(...args);
      t.equal(r.code, 0, `metalbox ${args.join(' ')}: ${r.err}`);
      return r.out;
    };

    await must('bmc', 'add', '--id', 'vm0', '--driver', 'ipmi', '--address', bmc.address, '--user', SIM_USERS.admin.name, '--password-file', join(dir, 'pw'));
    t.match(await must('bmc', 'power', 'vm0', 'status'), /off/);

    // Power on: QEMU starts and the kernel comes up.
    let t0 = Date.now();
    await must('bmc', 'power', 'vm0', 'on');
    await waitFor('the VM to start', () => qemuPid() !== undefined, 30_000);
    await waitFor('the kernel banner', () => boots() === 1, 120_000);
    await waitFor('the kernel to reach its init', () => /Run \/bin\/sh|Freeing unused kernel/.test(serial()), 180_000);
    t.comment(`power on -> kernel up: ${secs(Date.now() - t0)} s`);
    const pid = qemuPid();
    t.match((await sims.ipmitool(bmc, ['chassis', 'power', 'status'])).stdout, /Chassis Power is on/, 'ipmitool reads the same BMC: on');

    // Power on again: a no-op. Same QEMU process, no second kernel start.
    const again = await must('bmc', 'power', 'vm0', 'on');
    t.match(again, /noop|already on/i, 'the service says it did nothing');
    await sleep(5000);
    t.equal(qemuPid(), pid, 'the same QEMU process');
    t.equal(boots(), 1, 'no second kernel start: the VM was not reset');
    t.notMatch(readFileSync(join(vmDir, 'events'), 'utf8'), /power 1\n[\s\S]*power 1/, 'the BMC was told "power on" once');

    // Boot device, read back by ipmitool.
    await must('bmc', 'bootdev', 'vm0', 'pxe');
    t.match((await sims.ipmitool(bmc, ['chassis', 'bootparam', 'get', '5'])).stdout, /Force PXE/);

    // Reset: the VM really restarts (the check above would have seen it).
    t0 = Date.now();
    await must('bmc', 'power', 'vm0', 'reset');
    await waitFor('a second kernel start after reset', () => boots() === 2, 180_000);
    t.equal(qemuPid(), pid, 'a reset keeps the machine (same QEMU process), restarts the OS');
    t.comment(`reset -> second kernel start: ${secs(Date.now() - t0)} s`);

    // Power off: QEMU is gone; status says off through metalbox and ipmitool.
    await must('bmc', 'power', 'vm0', 'off');
    await waitFor('the VM to stop', () => qemuPid() === undefined, 30_000);
    t.match(await must('bmc', 'power', 'vm0', 'status'), /off/);
    t.match((await sims.ipmitool(bmc, ['chassis', 'power', 'status'])).stdout, /Chassis Power is off/);

    // Cycle of an off machine powers it on (BMC service rule).
    await must('bmc', 'power', 'vm0', 'cycle');
    await waitFor('the VM to start after cycle', () => qemuPid() !== undefined, 30_000);
    await must('bmc', 'power', 'vm0', 'off');
    await waitFor('the VM to stop again', () => qemuPid() === undefined, 30_000);
  });
}
