// End to end on metalbox's own DHCP + TFTP + HTTP boot, in a namespace lab: two QEMU machines that
// metalbox has never seen network-boot the ephemeral environment (image/ephemeral, registered with
// `metalbox images add` and named by boot.ephemeralImage) and print its marker on their serial console.
//  1. SeaBIOS + QEMU's e1000 iPXE ROM: DHCP (user class iPXE) -> HTTP script -> kernel + initrd over HTTP.
//  2. OVMF with its own UEFI PXE (virtio-net, romfile=): DHCP (arch 7) -> TFTP snponly.efi -> iPXE ->
//     DHCP again -> HTTP script -> kernel + initrd.
// Two VMs is the fewest that prove both firmware paths. Each one powers itself off after the marker; the
// time from QEMU's start to the marker is printed.
import t from 'tap';
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, canBuildLab } from '../helpers/netns.ts';
import { RA_SENDER } from '../../src/lab/rack.ts';
import { ROOT, run } from '../helpers/process.ts';
import { MARKER, ensureEphemeral, secs, watchConsole, type Console } from '../helpers/ephemeral.ts';

const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE.fd';
const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS.fd';
const IPXE_DIR = '/usr/lib/ipxe';
const SERVER = '10.77.0.1';
const PORT = 5240;
const URL = `http://${SERVER}:${PORT}`;

// iPXE's IPv6 wait: the lab's router advertisement sender (src/lab/rack.ts RA_SENDER, QUIRK(firmware) there).

// A cold image build (the kernel package is ~70 MB) plus two TCG boots, on a machine busy with other tests.
t.setTimeout(900_000);

const lab = canBuildLab();
const missing = ['/usr/bin/qemu-system-x86_64', OVMF_CODE, join(IPXE_DIR, 'snponly.efi'), '/usr/bin/python3'].filter((f) => !existsSync(f));
if (!lab.ok) t.fail(`cannot build the lab: ${lab.why}`);
else if (missing.length > 0) t.fail(`missing ${missing.join(', ')}: qemu-system-x86, ipxe-qemu, ovmf, ipxe and python3 must be installed (.ci/run installs them)`);
else {
  t.test('SeaBIOS and OVMF machines network-boot the ephemeral image from metalbox', { timeout: 840_000 }, async (t) => {
    const img = await ensureEphemeral();
    t.comment(`ephemeral image ${img.key} (${img.seconds.toFixed(1)} s): vmlinuz ${img.manifest.vmlinuz_bytes} bytes, initrd.img ${img.manifest.initrd_bytes} bytes`);

    const L = new Lab('mbn');
    const dir = mkdtempSync(join(tmpdir(), 'mbx-netboot-'));
    const vms: Console[] = [];
    const logs: [string, Console][] = [];
    t.teardown(() => {
      for (const vm of vms) vm.kill();
      L.destroy();
      // The consoles and metalbox's log tell why a boot went wrong: kept when the test failed (or when asked).
      for (const [name, c] of logs) writeFileSync(join(dir, `${name}.log`), c.output());
      if (t.passing() && !process.env.METALBOX_KEEP_E2E) rmSync(dir, { recursive: true, force: true });
      else t.comment(`consoles and logs kept in ${dir}`);
    });

    // The rack: a bridge in the server namespace, one tap per machine.
    const srv = L.ns('srv');
    L.exec(srv, 'ip', ['link', 'add', 'br0', 'type', 'bridge']);
    L.exec(srv, 'ip', ['link', 'set', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    L.exec(srv, 'ip', ['addr', 'add', `${SERVER}/24`, 'dev', 'br0']);
    L.exec(srv, 'ip', ['link', 'set', 'br0', 'up']);
    for (const tap of ['tap0', 'tap1']) {
      L.exec(srv, 'ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
      L.exec(srv, 'ip', ['link', 'set', tap, 'master', 'br0']);
      L.exec(srv, 'ip', ['link', 'set', tap, 'up']);
    }

    const config = join(dir, 'metalbox.yaml');
    writeFileSync(config, `
stateDir: ${join(dir, 'state')}
http: { listen: "0.0.0.0:${PORT}" }
interfaces: [br0]
logLevel: debug
subnets:
  - cidr: 10.77.0.0/24
    gateway: ${SERVER}
    dynamicRanges: ["10.77.0.100-10.77.0.120"]
boot: { ipxeDir: ${IPXE_DIR}, ephemeralImage: ephemeral }
dns: { enabled: false }
ntp: { enabled: false }
`);

    // The image goes into the store before serve starts (the CLI opens the store itself then).
    const add = run(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'images', 'add', 'ephemeral',
      '--kernel', img.kernel, '--initrd', img.initrd, '--config', config]);
    const addCode = await add.exited;
    t.equal(addCode, 0, `metalbox images add ephemeral${addCode === 0 ? '' : `: ${add.stderr()}`}`);
    if (addCode !== 0) return;

    L.spawn(srv, 'python3', ['-c', RA_SENDER, 'br0']);
    const serve = L.spawn(srv, process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', config], { ...process.env, NOTIFY_SOCKET: '' });
    const mbx = watchConsole(serve);
    logs.push(['metalbox', mbx]);
    await mbx.waitFor(/"msg":"metalbox ready"/, 60_000);

    const qemu = (name: string, args: string[]) => {
      const vm = watchConsole(L.spawn(srv, 'qemu-system-x86_64', ['-accel', 'tcg', '-nographic', '-monitor', 'none', '-no-reboot', '-m', '512', ...args]));
      vms.push(vm);
      logs.push([name, vm]);
      return vm;
    };

    /** Waits for the markers of one machine, then for it to power off; returns [up, http] times in ms. */
    const boots = async (vm: Console, mac: string, upWithinMs: number) => {
      const up = await vm.waitFor(MARKER.up, upWithinMs);
      t.equal(up.match[1], mac, `${mac}: the ephemeral environment is up on the NIC it booted from`);
      t.equal(up.match[2], URL, `${mac}: it was told metalbox's URL`);
      const http = await vm.waitFor(MARKER.http, 60_000);
      t.equal(http.match[1], 'ok', `${mac}: it reached ${URL}/healthz`);
      await vm.waitFor(MARKER.poweroff, 30_000);
      t.equal(await vm.exit(30_000), 0, `${mac}: it powered itself off`);
      return [up.ms, http.ms] as const;
    };

    // 1. BIOS: SeaBIOS runs QEMU's iPXE NIC ROM, which fetches its script over HTTP.
    const biosMac = '52:54:00:77:00:20';
    const bios = qemu('bios', ['-boot', 'n', '-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no', '-device', `e1000,netdev=n0,mac=${biosMac}`]);
    const [biosUp, biosHttp] = await boots(bios, biosMac, 180_000);
    t.match(bios.output(), /Filename: http:\/\/10\.77\.0\.1:5240\/boot\/52-54-00-77-00-20\.ipxe/, 'the BIOS machine\'s iPXE was handed its script URL');
    t.match(mbx.output(), /"url":"\/boot\/52-54-00-77-00-20\.ipxe","status":200/, 'and fetched it');

    // 2. UEFI: OVMF's own PXE (no option ROM) loads snponly.efi by TFTP; that iPXE fetches the script.
    const uefiMac = '52:54:00:77:00:21';
    const vars = join(dir, 'ovmf-vars.fd');
    copyFileSync(OVMF_VARS, vars);
    const uefi = qemu('uefi', ['-drive', `if=pflash,format=raw,readonly=on,file=${OVMF_CODE}`, '-drive', `if=pflash,format=raw,file=${vars}`,
      '-netdev', 'tap,id=n1,ifname=tap1,script=no,downscript=no', '-device', `virtio-net-pci,netdev=n1,mac=${uefiMac},romfile=`]);
    const [uefiUp, uefiHttp] = await boots(uefi, uefiMac, 300_000);
    t.match(uefi.output(), /NBP filename is snponly\.efi[\s\S]*NBP file downloaded successfully/, 'OVMF\'s PXE loaded snponly.efi by TFTP');
    t.match(mbx.output(), /"file":"snponly\.efi".*"msg":"tftp transfer completed"/, 'from metalbox\'s TFTP');
    t.match(uefi.output(), /using SNP on/, 'snponly.efi (iPXE over the firmware\'s network driver) ran');
    t.match(mbx.output(), /"url":"\/boot\/52-54-00-77-00-21\.ipxe","status":200/, 'and fetched the machine\'s script');

    t.comment(`SeaBIOS + iPXE ROM (e1000): QEMU start -> METALBOX-EPHEMERAL-UP ${secs(biosUp)} s, -> HTTP ok ${secs(biosHttp)} s`);
    t.comment(`OVMF PXE -> snponly.efi (virtio-net): QEMU start -> METALBOX-EPHEMERAL-UP ${secs(uefiUp)} s, -> HTTP ok ${secs(uefiHttp)} s`);
    serve.kill('SIGTERM');
    t.equal(await mbx.exit(15_000), 0, 'metalbox stopped cleanly');
  });
}
