// The main job, end to end, on `metalbox lab` (src/lab): one QEMU machine (TCG) behind an ipmi_sim BMC, in a
// network namespace, with metalbox serving it as it serves a rack (a second machine enlists beside it, to prove
// that simultaneous enlisting boots are told apart). Nothing is faked: the machine is registered
// by its BMC alone; metalbox sets its boot device and powers it on over RMCP+; its iPXE ROM PXE-boots the
// ephemeral environment from metalbox's DHCP/HTTP; the agent (dist/metalbox, downloaded by the VM) enlists it,
// commissions it (the inventory must match the VM's QEMU flags), deploys the test image (image/deploy-test) to
// its disk and reboots it; it boots its disk, cloud-init phones home, it is Deployed and SSH with the key given
// at deploy works; release with quick erase leaves it Ready with its disk's partition tables wiped.
// The time of each phase is printed.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { labDown, labPreflight, labUp, type Lab } from '../../src/lab/rack.ts';
import { ensureBinary } from '../helpers/binary.ts';
import { ensureDeployImage } from '../helpers/deploy-image.ts';
import { ensureEphemeral, secs } from '../helpers/ephemeral.ts';
import { freePort, ROOT } from '../helpers/process.ts';

// Cold image builds (minutes), then five TCG boots (two enlist at once; commission, deploy + disk boot, release).
t.setTimeout(2_400_000);

interface ApiMachine {
  id: string; hostname: string; state: string; macs: string[]; stateReason?: string;
  inventory?: { memoryBytes: number; firmware: string; dmi: { uuid?: string }; disks: { path: string; sizeBytes: number }[]; nics: { mac: string }[] };
}
interface ApiEvent { at: string; type: string; actor: string; data: Record<string, unknown> }

const problems = labPreflight();
if (spawnSync('sh', ['-c', 'command -v ssh && command -v ssh-keygen'], { stdio: 'ignore' }).status !== 0) problems.push('ssh and ssh-keygen are missing (apt-get install openssh-client)');
if (problems.length > 0) t.fail(`cannot run the lab: ${problems.join('; ')} (.ci/run installs what it needs)`);
else {
  t.test('registered by its BMC alone: enlist, commission, deploy, SSH, release with quick erase', { timeout: 2_300_000 }, async (t) => {
    const t0 = performance.now();
    const [eph, dep] = await Promise.all([ensureEphemeral({ agent: true }), ensureDeployImage(), Promise.resolve(ensureBinary())]);
    t.comment(`images: ephemeral ${eph.key} (${eph.seconds.toFixed(1)} s), deploy ${dep.key} (${dep.seconds.toFixed(1)} s)`);

    const dir = mkdtempSync(join(tmpdir(), 'mbx-lifecycle-'));
    const key = join(dir, 'id_ed25519');
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'e2e@metalbox', '-f', key]);
    const pub = readFileSync(`${key}.pub`, 'utf8').trim();

    t.teardown(async () => {
      const keep = !t.passing() || process.env.METALBOX_KEEP_E2E;
      await labDown(join(dir, 'lab'), { purge: false }).catch(() => undefined);
      if (keep) t.comment(`lab logs, serial console and disk kept in ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    });
    const lab: Lab = await labUp({
      dir: join(dir, 'lab'), name: `mbxe${process.pid % 10000}`, machines: 2, memoryMiB: 1024, diskGiB: 4, net: 236, port: await freePort(),
      images: { ephemeral: { kernel: eph.kernel, initrd: eph.initrd }, deploy: { name: 'debian-12-test', kernel: dep.kernel, initrd: dep.initrd, image: dep.image } },
      metalbox: [process.execPath, '--import', 'tsx', join(ROOT, 'src/main.ts')],
      log: (line) => t.comment(line),
    });
    const [vm, other] = [lab.state.machines[0]!, lab.state.machines[1]!];
    const id = vm.machineId!;
    t.ok(id, `registered by its BMC (${vm.bmc.address}) alone as machine ${id}`);
    t.ok(other.machineId && other.machineId !== id, `and a second one (${other.bmc.address}) as machine ${other.machineId}`);
    const phases: [string, number][] = [['lab up (images cached, metalbox started, machine registered)', performance.now() - t0]];

    const machine = (which = id) => lab.api<ApiMachine>('GET', `/api/v1/machines/${which}`);
    const events = async () => (await lab.api<{ items: ApiEvent[] }>('GET', `/api/v1/machines/${id}/timeline?limit=1000`)).items;
    const tail = () => lab.serial(vm).split('\n').slice(-25).join('\n');
    /** Polls until `done(machine)`; a failed state or the deadline fails the test with the events and the console. */
    const until = async (what: string, timeoutMs: number, done: (m: ApiMachine) => boolean, which = id): Promise<ApiMachine> => {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const m = await machine(which);
        if (done(m)) return m;
        if (/^Failed|^Broken/.test(m.state) || performance.now() > deadline) {
          const evs = (await events()).slice(-15).map((e) => `${e.at} ${e.type} ${JSON.stringify(e.data).slice(0, 300)}`).join('\n');
          throw new Error(`${what}: machine is ${m.state}${m.stateReason ? ` (${m.stateReason})` : ''} after ${secs(timeoutMs - (deadline - performance.now()))} s\nevents:\n${evs}\nconsole:\n${tail()}`);
        }
        await sleep(1000);
      }
    };
    const phase = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
      const start = performance.now();
      const r = await fn();
      phases.push([name, performance.now() - start]);
      t.comment(`${name}: ${secs(performance.now() - start)} s`);
      return r;
    };

    // 1. Enlistment: metalbox powered both on to boot from the network at once; each agent reported its hardware,
    // and each boot was linked to the machine of its own BMC (by the system UUID the BMC reported at registration).
    const enlisted = await phase('enlist, two machines at once (power on by BMC, PXE, agent inventory, power off)', async () => {
      const [a, b] = await Promise.all([until('enlist', 600_000, (m) => m.inventory !== undefined && !lab.running(vm)),
        until('enlist of the second machine', 600_000, (m) => m.inventory !== undefined && !lab.running(other), other.machineId)]);
      t.same(b.macs, [other.mac], 'the second machine\'s boot was linked to the second BMC\'s machine');
      return a;
    });
    t.equal((await lab.api<{ total: number }>('GET', '/api/v1/machines')).total, 2, 'no extra machine was made for either boot');
    t.same(lab.bmcEvents(vm).slice(0, 2), ['boot pxe', 'power 1'], 'metalbox set boot device PXE, then powered it on, through its BMC');
    t.equal(enlisted.state, 'New', 'enlisted as New');
    t.match(enlisted.hostname, /^[a-z0-9-]+$/, `with a generated host name (${enlisted.hostname})`);
    t.same(enlisted.macs, [vm.mac], 'the enlisting boot was linked to the machine registered by its BMC (its MAC is now known)');

    // 2. Commissioning: the inventory must be the VM's QEMU flags.
    await lab.api('POST', `/api/v1/machines/${id}/actions/commission`, {});
    const ready = await phase('commission (power cycle, PXE, inventory, power off)', () => until('commission', 600_000, (m) => m.state === 'Ready'));
    const inv = ready.inventory!;
    t.equal(inv.nics.find((n) => n.mac === vm.mac)?.mac, vm.mac, 'inventory: the NIC with the MAC QEMU was given');
    t.equal(inv.dmi.uuid, vm.uuid, 'inventory: the system UUID QEMU was given (-uuid)');
    t.equal(inv.memoryBytes, vm.memoryMiB * 1024 ** 2, `inventory: ${vm.memoryMiB} MiB of memory (-m)`);
    t.same(inv.disks.map((d) => [d.path, d.sizeBytes]), [['/dev/vda', vm.diskBytes]], 'inventory: one virtio disk of the size the lab made');
    t.equal(inv.firmware, 'bios', 'inventory: BIOS firmware (SeaBIOS)');
    await until('powered off after commissioning', 60_000, () => !lab.running(vm));

    // 3. Deployment: the image onto the disk, reboot into it, cloud-init phones home.
    await lab.api('POST', `/api/v1/machines/${id}/actions/deploy`, { sshKeys: [pub] });
    const deployed = await phase('deploy (PXE, write image, reboot, disk boot, phone home)', () => until('deploy', 1_200_000, (m) => m.state === 'Deployed'));
    // The NIC's newest lease: the installed system's DHCP client (another client identifier) did not reuse the
    // ephemeral environment's.
    const lease = (await lab.api<{ items: { ip: string; mac: string; state: string; expiresAt: string }[] }>('GET', `/api/v1/leases?mac=${encodeURIComponent(vm.mac)}`)).items
      .filter((l) => l.mac === vm.mac && l.state === 'bound').sort((a, b) => b.expiresAt.localeCompare(a.expiresAt))[0];
    t.ok(lease, `the deployed system holds a lease (${lease?.ip})`);
    const ssh = await phase('ssh login with the deploy key', async () => {
      for (let i = 0; ; i++) {
        const r = spawnSync('ip', ['netns', 'exec', lab.state.ns, 'ssh', '-i', key, '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
          '-o', 'ConnectTimeout=10', `debian@${lease!.ip}`, 'hostname; cat /run/cloud-init/result.json >/dev/null && echo cloud-init-done'], { encoding: 'utf8', timeout: 60_000 });
        if (r.status === 0) return r.stdout;
        if (i >= 20) throw new Error(`ssh debian@${lease!.ip} failed (${r.status}): ${r.stderr}`);
        await sleep(3000);
      }
    });
    t.equal(ssh.split('\n')[0], deployed.hostname, 'SSH with the key given at deploy works, into the machine metalbox named');
    t.match(ssh, /cloud-init-done/, 'cloud-init finished there');
    t.ok(lab.bmcEvents(vm).includes('boot default'), 'the BMC was told to boot the disk from now on');
    // metalbox's DNS names the deployed machine (its A and PTR records come from the machine and its lease).
    const dig = (args: string[]) => lab.exec('dig', ['+short', '+time=2', '+tries=2', `@${lab.state.server}`, ...args]).trim();
    t.equal(dig([`${deployed.hostname}.rack.internal`, 'A']), lease!.ip, `dig ${deployed.hostname}.rack.internal: the lease's address`);
    t.equal(dig(['-x', lease!.ip]), `${deployed.hostname}.rack.internal.`, `dig -x ${lease!.ip}: the machine's name`);

    // 4. Release with quick erase: Ready, powered off, partition tables gone.
    await lab.api('POST', `/api/v1/machines/${id}/actions/release`, { erase: 'quick' });
    await phase('release (power cycle, PXE, quick erase, power off)', () => until('release', 600_000, (m) => m.state === 'Ready'));
    await until('powered off after release', 60_000, () => !lab.running(vm));
    const sector = (n: number): Buffer => {
      const fd = openSync(vm.disk, 'r');
      try { const b = Buffer.alloc(512); readSync(fd, b, 0, 512, n * 512); return b; } finally { closeSync(fd); }
    };
    const lastLba = vm.diskBytes / 512 - 1;
    t.notOk(sector(0).readUInt16LE(510) === 0xaa55, 'the MBR signature is gone');
    t.notOk(sector(1).subarray(0, 8).toString('latin1') === 'EFI PART', 'the primary GPT header is gone');
    t.notOk(sector(lastLba).subarray(0, 8).toString('latin1') === 'EFI PART', 'the backup GPT header is gone');
    const blkid = spawnSync('blkid', ['-p', vm.disk], { encoding: 'utf8' });
    t.equal(blkid.stdout.trim(), '', `blkid finds no signature on the disk (${blkid.stdout.trim() || 'none'})`);

    // Nothing silent: the machine's timeline has every layer of all this.
    const types = new Set((await events()).map((e) => e.type));
    for (const type of ['lease.bound', 'boot.http', 'machine.state', 'machine.state.effect', 'bmc.power', 'bmc.bootdev', 'boot.agent.task', 'boot.agent.progress', 'boot.agent.done', 'boot.agent.phone-home']) {
      t.ok(types.has(type), `the timeline has ${type} events`);
    }
    t.comment(`phase times (QEMU TCG, 1 vCPU, ${vm.memoryMiB} MiB):\n${phases.map(([n, ms]) => `  ${n.padEnd(62)} ${secs(ms).padStart(6)} s`).join('\n')}`);
  });
}
