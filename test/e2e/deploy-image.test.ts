// The deployable test image (image/deploy-test) on its own, without network boot: QEMU boots the built disk
// (virtio, SeaBIOS) with the cloud-init NoCloud seed the agent would write (src/agent/seed.ts, from the
// appliance's deploy task), and cloud-init must phone home to a real appliance on loopback (QEMU user
// networking: the host is 10.0.2.2), which makes the machine Deployed. Then the same disk boots through
// iPXE's local-disk script (sanboot --drive 0x80) for a Deployed machine, and under UEFI (OVMF) to its kernel.
// Times are printed: build, image sizes, QEMU start -> phone-home.
import t from 'tap';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildApp } from '../../src/api/app.ts';
import { newBootToken } from '../../src/core/boot-tokens.ts';
import { EventLog } from '../../src/core/events.ts';
import { MachineRegistry } from '../../src/core/machines.ts';
import { createLogger } from '../../src/lib/logger.ts';
import { createMetrics } from '../../src/lib/metrics.ts';
import { AssetStore, IpxeBinaries, parseSource } from '../../src/store/assets.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import { buildSeed } from '../../src/agent/seed.ts';
import { parseTask } from '../../src/agent/task.ts';
import { ensureDeployImage, partitions, rawDisk, writeNoCloudSeed } from '../helpers/deploy-image.ts';
import { secs, watchConsole } from '../helpers/ephemeral.ts';

const MAC = '52:54:00:5e:00:31';
const SSH_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMetalboxDeployTestKeyOnlyForTheTest0000 test@metalbox';

// A cold build is debootstrap from Debian's mirror (4-5 minutes here); then two TCG boots.
t.setTimeout(1_500_000);

if (!existsSync('/usr/bin/qemu-system-x86_64')) t.fail('qemu-system-x86 must be installed (.ci/run installs it)');
else if (process.getuid?.() !== 0) t.fail('this test needs root (debootstrap, loop mount of the image root)');
else {
  t.test('the deploy image boots, runs cloud-init from the agent\'s seed and phones home: Deployed', { timeout: 1_400_000 }, async (t) => {
    const img = await ensureDeployImage();
    const m = img.manifest;
    t.comment(`image ${img.key} in ${img.seconds.toFixed(1)} s (built in ${m.build_seconds} s: debootstrap+apt ${m.debootstrap_seconds}, configure ${m.configure_seconds}, `
      + `disk ${m.disk_seconds}, compress ${m.compress_seconds}): ${m.image_bytes} bytes ${img.compression}, raw ${m.raw_bytes}, root used ${m.root_used_bytes}`);
    t.ok(Number(m.raw_bytes) < 1024 ** 3, `a few hundred MB raw (${m.raw_bytes} bytes)`);

    const dir = mkdtempSync(join(tmpdir(), 'mbx-deploy-img-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));

    // The appliance: the real app on loopback, the image registered as a deploy image, a machine Deploying it.
    const store = createMemoryStore();
    const events = new EventLog(store);
    const logger = createLogger('warn');
    const registry = await MachineRegistry.open({ store, events, logger });
    const assets = new AssetStore(join(dir, 'assets'), store);
    await assets.open();
    await assets.add({ name: 'debian-12-test', files: { kernel: parseSource(img.kernel), initrd: parseSource(img.initrd), rootfs: parseSource(img.image) } }, { maxBytes: 4 * 1024 ** 3 });
    const app = await buildApp({
      logger, metrics: createMetrics({ processMetrics: false }), version: 'x', instanceId: () => 'i', readiness: () => ({ phase: 'running', services: {} }),
      boot: { store, events, assets, ipxe: new IpxeBinaries('/usr/lib/ipxe'), logger, ephemeralImage: undefined, tokenTtlMs: 3600_000, agent: { registry } },
    });
    t.teardown(() => app.close());
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as AddressInfo).port;
    const base = `http://10.0.2.2:${port}`; // the appliance as the VM reaches it

    const ctx = { actor: 'test' };
    let machine = await registry.create({ mac: MAC }, ctx);
    await registry.act(machine.id, 'commission', ctx);
    await registry.act(machine.id, 'commission-done', ctx);
    machine = (await registry.act(machine.id, 'deploy', { ...ctx, set: { deployment: { image: 'debian-12-test', disk: 'auto', sshKeys: [SSH_KEY], requestedAt: new Date().toISOString() } } })).machine;

    // What the agent does with its task: the seed from the appliance's deploy task, written into the root.
    const boot = newBootToken({ mac: MAC, machineId: machine.id, purpose: 'deploy' }, 3600_000);
    await store.write([boot.op]);
    const res = await app.inject({ url: '/boot/agent/v1/task', headers: { authorization: `Bearer ${boot.token}`, host: `10.0.2.2:${port}` } });
    t.equal(res.statusCode, 200, res.statusCode === 200 ? 'the deploy task' : res.body);
    const task = parseTask(res.json(), base);
    if (task.mode !== 'deploy') throw new Error(`task: ${res.body}`);
    t.equal(task.deploy.compression, 'gzip');
    const disk = join(dir, 'disk.raw');
    const t0 = performance.now();
    await rawDisk(img, disk, 512 * 1024 ** 2);
    const before = partitions(disk).find((p) => p.name === 'root')!;
    writeNoCloudSeed(disk, buildSeed(task.deploy, task.deploy.instanceId ?? 'i-test'));
    t.comment(`raw disk and seed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    t.equal((await app.inject({ method: 'POST', url: '/boot/agent/v1/done', headers: { authorization: `Bearer ${boot.token}` }, payload: { mode: 'deploy', ok: true } })).statusCode, 204);

    const child = spawn('qemu-system-x86_64', ['-accel', 'tcg', '-nographic', '-monitor', 'none', '-no-reboot', '-m', '1024',
      '-drive', `file=${disk},if=virtio,format=raw`, '-nic', `user,model=virtio-net-pci,mac=${MAC}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const spawnedAt = performance.now();
    const vm = watchConsole(child);
    t.teardown(() => vm.kill());

    const grub = await vm.waitFor(/Welcome to GRUB|GRUB loading/, 60_000);
    const kernel = await vm.waitFor(/Linux version \S+/, 60_000);
    t.comment(`QEMU start -> GRUB ${secs(grub.ms)} s, -> kernel ${secs(kernel.ms)} s (${kernel.text})`);
    // Phone-home: the appliance moves the machine to Deployed. Bounded: about 60-120 s under TCG here.
    const deadline = performance.now() + 300_000;
    while (registry.get(machine.id)!.state !== 'Deployed') {
      if (performance.now() > deadline) throw new Error(`no phone-home within 300 s; console tail:\n${vm.output().slice(-4000)}`);
      if (child.exitCode !== null) throw new Error(`the VM stopped before phoning home; console tail:\n${vm.output().slice(-4000)}`);
      await sleep(250);
    }
    const phoneMs = performance.now() - spawnedAt;
    const after = registry.get(machine.id)!;
    t.equal(after.state, 'Deployed', 'cloud-init phoned home: Deployed');
    t.match(after.deployment, { image: 'debian-12-test', instanceId: task.deploy.instanceId, phonedHomeAt: String });
    const ph = [];
    for await (const [, e] of store.events.entries()) if (e.type === 'boot.agent.phone-home') ph.push(e);
    t.match(ph, [{ subject: machine.id, data: { hostname: machine.hostname, instanceId: task.deploy.instanceId } }], 'with the host name cloud-init set and the instance id');
    t.comment(`QEMU start -> phone-home ${secs(phoneMs)} s (TCG, 1 GiB)`);
    await vm.waitFor(new RegExp(`${machine.hostname} login:`), 120_000, 0).catch(() => t.comment('no login prompt seen'));
    const failedUnits = vm.output().split('\n').filter((l) => /Failed to start/.test(l));
    t.same(failedUnits, [], 'no unit failed to start');
    vm.kill();
    await vm.exit(10_000);
    const grown = partitions(disk).find((p) => p.name === 'root')!;
    t.ok(grown.size > before.size + 900_000, `growpart took the root to the larger disk (${before.size} -> ${grown.size} sectors)`);

    // The same disk through the iPXE script of a Deployed machine: SeaBIOS's iPXE gets the script URL from QEMU's
    // DHCP (user networking, bootfile) and sanboots drive 0x80, whose MBR is this image's GRUB.
    const script = await app.inject(`/boot/${MAC.replaceAll(':', '-')}.ipxe`);
    t.match(script.body, /sanboot --no-describe --drive 0x80/);
    const pxe = spawn('qemu-system-x86_64', ['-accel', 'tcg', '-nographic', '-monitor', 'none', '-no-reboot', '-m', '512', '-boot', 'n',
      '-drive', `file=${disk},if=virtio,format=raw`, '-nic', `user,model=virtio-net-pci,mac=${MAC},bootfile=${base}/boot/${MAC.replaceAll(':', '-')}.ipxe`],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    const vm2 = watchConsole(pxe);
    t.teardown(() => vm2.kill());
    await vm2.waitFor(/metalbox: machine \S+ is Deployed: local-disk/, 90_000);
    const g2 = await vm2.waitFor(/GRUB loading|Welcome to GRUB/, 60_000);
    t.comment(`network boot -> iPXE local-disk script -> sanboot -> GRUB in ${secs(g2.ms)} s`);
    vm2.kill();
    await vm2.exit(10_000);

    // UEFI: OVMF boots the ESP's removable-media path (EFI/BOOT/BOOTX64.EFI), GRUB finds the root by UUID.
    const vars = join(dir, 'OVMF_VARS.fd');
    copyFileSync('/usr/share/OVMF/OVMF_VARS.fd', vars);
    const uefi = spawn('qemu-system-x86_64', ['-accel', 'tcg', '-nographic', '-monitor', 'none', '-no-reboot', '-m', '512',
      '-drive', 'if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd', '-drive', `if=pflash,format=raw,file=${vars}`,
      '-drive', `file=${disk},if=virtio,format=raw`, '-nic', 'none'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const vm3 = watchConsole(uefi);
    t.teardown(() => vm3.kill());
    await vm3.waitFor(/GNU GRUB {2}version/, 90_000);
    const k3 = await vm3.waitFor(/Linux version \S+/, 60_000);
    t.comment(`UEFI (OVMF) -> GRUB -> kernel in ${secs(k3.ms)} s`);
    vm3.kill();
  });
}
