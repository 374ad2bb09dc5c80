// The appliance end to end: image/appliance/build.sh makes the Debian 12 image (cached by content hash), QEMU
// (TCG) boots it with two NICs (management on QEMU user networking; provisioning on a tap in a bridge in a
// network namespace this test makes and removes), the test answers `metalbox setup` on the serial console,
// then from a client namespace on the bridge: the console over HTTPS (the certificate is the one whose
// fingerprint setup printed), the admin logs in, busybox udhcpc gets a lease from the appliance, and dig
// resolves the lease's name through the appliance's DNS.
// Then the upgrade: the VM powers off, image/appliance/upgrade.sh writes the image's boot and root partitions
// over the disk (the state partition stays), and the disk boots again, this time under UEFI (OVMF, the ESP):
// no setup runs, the same certificate and admin answer, DHCP serves again.
// Printed: build time, image sizes (raw, used, qcow2), boot -> setup prompt, setup -> ready, boot -> ready.
import t, { type Test } from 'tap';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { APPLIANCE_UPGRADE, bootVm, ensureAppliance, type Vm } from '../helpers/appliance.ts';
import { canBuildLab, Lab, sh } from '../helpers/netns.ts';
import { nsFetch } from '../helpers/ns-http.ts';

const run = promisify(execFile);
const PROV_MAC = '52:54:00:ab:0a:02';
const MGMT_MAC = '52:54:00:ab:0a:01';
const PASSWORD = 'appliance e2e password';
const ADDRESS = '10.77.0.1';

t.setTimeout(1_800_000);
const lab = canBuildLab();
if (!lab.ok) t.fail(`this test needs root and iproute2 (CI runs as root): ${lab.why}`);
else if (!existsSync('/usr/bin/qemu-system-x86_64') || !existsSync('/usr/share/OVMF/OVMF_CODE.fd')) t.fail('qemu-system-x86 and ovmf must be installed (.ci/run installs them)');
else {
  t.test('the appliance image: build, boot, setup on the serial console, serve, upgrade', async (t) => {
    const img = await ensureAppliance();
    const m = img.manifest;
    t.comment(`appliance ${img.key} in ${img.seconds.toFixed(1)} s (this image stage ${m.build_seconds} s: configure ${m.image_configure_seconds}, disk ${m.disk_seconds}, qcow2 ${m.qcow2_seconds}; `
      + `base ${m.base_seconds} s when built: debootstrap+apt ${m.debootstrap_seconds}, configure ${m.configure_seconds})`);
    t.comment(`sizes: raw ${mb(m.raw_bytes)} (allocated ${mb(m.raw_allocated_bytes)}), root used ${mb(m.used_bytes)}, qcow2 ${mb(m.qcow2_bytes)}; kernel modules ${m.modules_before_mib} -> ${m.modules_after_mib} MiB (${m.kernel})`);
    t.ok(Number(m.used_bytes) < 500e6, `root under 500 MB used (${mb(m.used_bytes)})`);

    const dir = mkdtempSync(join(tmpdir(), 'mbx-appliance-'));
    const net = new Lab('mbxa');
    const vms: Vm[] = [];
    t.teardown(() => {
      for (const vm of vms) vm.kill();
      net.destroy();
      rmSync(dir, { recursive: true, force: true });
    });
    // The rack: a bridge with the VM's provisioning tap and a client namespace's veth; nothing on the host's NICs.
    const rack = net.ns('rack');
    const cli = net.ns('cli');
    sh('ip', ['-n', rack, 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    sh('ip', ['-n', rack, 'link', 'set', 'br0', 'up']);
    sh('ip', ['-n', rack, 'tuntap', 'add', 'dev', 'tap0', 'mode', 'tap']);
    sh('ip', ['-n', rack, 'link', 'set', 'tap0', 'master', 'br0', 'up']);
    net.link({ ns: rack, ifname: 'vc0' }, { ns: cli, ifname: 'c0', cidr: '10.77.0.2/24' });
    sh('ip', ['-n', rack, 'link', 'set', 'vc0', 'master', 'br0']);

    // The disk: a sparse raw copy, 1 GiB larger than the image (the state partition grows into it at first boot).
    const disk = join(dir, 'disk.raw');
    execFileSync('cp', ['--sparse=always', img.raw, disk]);
    execFileSync('truncate', ['-s', '+1G', disk]);
    const vmOpts = { ns: rack, disk, format: 'raw' as const, dir, tap: 'tap0', provMac: PROV_MAC, mgmtMac: MGMT_MAC };

    // --- first boot (SeaBIOS): the wizard on the serial console ---------------------------------------------
    const vm = await bootVm({ ...vmOpts, name: 'bios' });
    vms.push(vm);
    const c = vm.console;
    await c.waitFor(/Provisioning interface \(number or name\)[^\n]*: /, 300_000, 'the setup wizard');
    const promptAt = performance.now();
    const nic = new RegExp(`^\\s*(\\d+)\\) (\\S+)\\s+${PROV_MAC}`, 'm').exec(c.text);
    t.ok(nic, `the wizard lists the provisioning NIC (${nic?.[2]})`);
    t.match(c.text, /Network interfaces:/);
    c.type(nic?.[1] ?? '2');
    const answers: [RegExp, string][] = [
      [/address on it \(a\.b\.c\.d\/len\)[^\n]*: /, `${ADDRESS}/24`],
      [/DHCP range \(first-last\) \[10\.77\.0\.100-10\.77\.0\.199\]: /, ''],
      [/Gateway handed to machines[^\n]*: /, ''],
      [/DNS domain of the rack \[rack\.internal\]: /, ''],
      [/Upstream DNS servers[^\n]*: /, 'nonsense'],      // asked again
      [/dns\.forwarders\[0\]: "nonsense" is not an IPv4 address/, ''],
      [/Upstream DNS servers[^\n]*: /, ''],
      [/Upstream NTP servers[^\n]*: /, ''],
      [/Admin user name \[admin\]: /, ''],
      [/Password for admin[^\n]*: /, PASSWORD],
      [/The same password again: /, PASSWORD],
      [/SSH public key for root[^\n]*: /, ''],
    ];
    for (const [prompt, answer] of answers) {
      await c.waitFor(prompt, 60_000);
      if (!/nonsense/.test(prompt.source)) c.type(answer);
    }
    await c.waitFor(/METALBOX-SETUP-DONE/, 180_000, 'the end of setup');
    const doneAt = performance.now();
    t.notOk(c.text.includes(PASSWORD), 'the password is not echoed');
    const fp = /fingerprint:\s+((?:[0-9A-F]{2}:){31}[0-9A-F]{2})/.exec(c.text)?.[1];
    t.ok(fp, `setup printed the certificate fingerprint (${fp})`);
    t.match(c.text, /console: https:\/\/10\.77\.0\.1:5443\//);

    // --- from the client namespace: HTTPS, login, DHCP, DNS --------------------------------------------------
    const readyAt = await waitReady(cli, 180_000).catch((err: unknown) => { throw new Error(`${(err as Error).message}\nconsole:\n${c.text.slice(-4000)}`); });
    t.comment(`boot -> setup prompt ${secs(promptAt - vm.startedAt)} s, setup (answers typed) -> done ${secs(doneAt - promptAt)} s, done -> HTTPS ready ${secs(readyAt - doneAt)} s; `
      + `boot -> ready ${secs(readyAt - vm.startedAt)} s (${secs(readyAt - vm.startedAt - (doneAt - promptAt))} s without the time in the wizard)`);
    t.equal(await peerFingerprint(cli), fp, 'the HTTPS certificate is the one setup printed');
    await checkServes(t, cli, 'probe1');

    // --- upgrade: power off, new boot and root partitions, boot under UEFI: the state is kept ---------------
    await vm.powerdown();
    t.comment(`powered off after ${secs(performance.now() - vm.startedAt)} s`);
    const parts = JSON.parse(execFileSync('sfdisk', ['-J', disk], { encoding: 'utf8' })) as { partitiontable: { partitions: { size: number; name: string }[] } };
    const state = parts.partitiontable.partitions[3]!;
    t.equal(state.name, 'metalbox-state');
    t.ok(state.size * 512 > 1.2 * 1024 ** 3, `the state partition grew to the disk's end (${mb(state.size * 512)})`);
    const up = await run('bash', [APPLIANCE_UPGRADE, img.raw, disk]);
    t.match(up.stderr, /the state partition was not touched/);

    const vm2 = await bootVm({ ...vmOpts, name: 'uefi', uefi: true });
    vms.push(vm2);
    const ready2 = await waitReady(cli, 300_000).catch((err: unknown) => { throw new Error(`${(err as Error).message}\nconsole:\n${vm2.console.text.slice(-4000)}`); });
    t.comment(`UEFI boot (after the upgrade) -> ready ${secs(ready2 - vm2.startedAt)} s`);
    await vm2.console.waitFor(/login: /, 60_000, 'the login prompt');
    t.notOk(/Provisioning interface/.test(vm2.console.text), 'no setup at the second boot: the config was kept');
    t.match(vm2.console.text, /EFI|UEFI|BdsDxe/, 'booted by OVMF');
    t.equal(await peerFingerprint(cli), fp, 'the same certificate after the upgrade');
    await checkServes(t, cli, 'probe2');
    await vm2.powerdown();
  });
}

async function waitReady(ns: string, timeoutMs: number): Promise<number> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    try {
      const r = await nsFetch(ns, `https://${ADDRESS}:5443/healthz`, { timeoutMs: 5000 });
      if (r.status === 200) return performance.now();
      last = `HTTP ${r.status}`;
    } catch (err) {
      last = (err as Error).message.split('\n')[0]!;
    }
    await sleep(1000);
  }
  throw new Error(`https://${ADDRESS}:5443 not ready within ${timeoutMs / 1000} s: ${last}`);
}

/** The SHA-256 fingerprint of the certificate the appliance presents, as the client namespace sees it. */
async function peerFingerprint(ns: string): Promise<string> {
  const script = `const s = require('node:tls').connect({ host: '${ADDRESS}', port: 5443, rejectUnauthorized: false }, () => { process.stdout.write(s.getPeerCertificate().fingerprint256); s.destroy(); });`;
  const r = await run('ip', ['netns', 'exec', ns, process.execPath, '-e', script], { timeout: 30_000 });
  return r.stdout.trim();
}

async function checkServes(t: Test, ns: string, hostname: string): Promise<void> {
  const page = await nsFetch(ns, `https://${ADDRESS}:5443/`);
  t.ok(page.status < 500, `GET https://${ADDRESS}:5443/ answers (${page.status})`);
  const login = await nsFetch(ns, `https://${ADDRESS}:5443/api/v1/login`, { method: 'POST', body: { username: 'admin', password: PASSWORD } });
  t.equal(login.status, 200, `the admin setup made logs in${login.status === 200 ? '' : `: ${login.body}`}`);
  // A real DHCP client: busybox udhcpc (-s /bin/true: report the lease, do not configure it).
  const dhcp = await run('ip', ['netns', 'exec', ns, 'busybox', 'udhcpc', '-i', 'c0', '-n', '-q', '-f', '-t', '6', '-T', '3', '-s', '/bin/true', '-x', `hostname:${hostname}`], { timeout: 60_000 });
  const lease = /lease of (\d+\.\d+\.\d+\.\d+) obtained from (\d+\.\d+\.\d+\.\d+)/.exec(dhcp.stdout + dhcp.stderr);
  t.ok(lease, `udhcpc got a lease: ${lease?.[0] ?? dhcp.stderr}`);
  t.equal(lease?.[2], ADDRESS, 'from the appliance');
  t.match(lease?.[1] ?? '', /^10\.77\.0\.(1\d\d)$/, 'in the range setup offered');
  // The lease's name, through the appliance's DNS.
  const dig = await run('ip', ['netns', 'exec', ns, 'dig', '+short', '+time=2', '+tries=3', `@${ADDRESS}`, `${hostname}.rack.internal`, 'A'], { timeout: 30_000 });
  t.equal(dig.stdout.trim(), lease?.[1], `dig ${hostname}.rack.internal @${ADDRESS}: the leased address`);
}

function secs(ms: number): string { return (ms / 1000).toFixed(1); }
function mb(bytes: string | number | undefined): string { return `${(Number(bytes) / 1e6).toFixed(0)} MB`; }
