// Real PXE firmware under QEMU (TCG) gets the right boot file from metalbox:
//  - SeaBIOS with QEMU's iPXE NIC ROM (user class iPXE) -> the URL of its HTTP boot script, which it fetches;
//  - OVMF's own UEFI PXE (x64, arch 7) -> snponly.efi, which it fetches by TFTP from metalbox (next-server);
//  - proxyDHCP: dnsmasq on another host of the segment hands out the address, metalbox only the boot
//    information; iPXE combines them and fetches its script from metalbox.
// Three VMs is the fewest that prove the three paths; each is killed as soon as the point is made.
import t from 'tap';
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Lab, canBuildLab } from '../helpers/netns.ts';
import { ROOT } from '../helpers/process.ts';

const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE.fd';
const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS.fd';

const lab = canBuildLab();
if (!lab.ok) t.fail(`cannot build the lab: ${lab.why}`);
else if (!existsSync('/usr/bin/qemu-system-x86_64') || !existsSync(OVMF_CODE)) t.fail('qemu-system-x86, ipxe-qemu and ovmf must be installed (.ci/run installs them)');
else {
  t.test('PXE firmware gets the right boot file', { timeout: 420_000 }, async (t) => {
    const L = new Lab('mbv');
    const dir = mkdtempSync(join(tmpdir(), 'mbx-pxe-'));
    t.teardown(() => { L.destroy(); rmSync(dir, { recursive: true, force: true }); });
    const srv = L.ns('srv');
    // The rack: a bridge in the server namespace with a tap for the VM.
    L.exec(srv, 'ip', ['link', 'add', 'br0', 'type', 'bridge']);
    L.exec(srv, 'ip', ['link', 'set', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    L.exec(srv, 'ip', ['addr', 'add', '10.77.0.1/24', 'dev', 'br0']);
    L.exec(srv, 'ip', ['link', 'set', 'br0', 'up']);
    L.exec(srv, 'ip', ['tuntap', 'add', 'dev', 'tap0', 'mode', 'tap']);
    L.exec(srv, 'ip', ['link', 'set', 'tap0', 'master', 'br0']);
    L.exec(srv, 'ip', ['link', 'set', 'tap0', 'up']);

    const config = (proxy: boolean) => {
      const file = join(dir, `metalbox-${proxy ? 'proxy' : 'full'}.yaml`);
      writeFileSync(file, `
stateDir: ${join(dir, proxy ? 'state-proxy' : 'state')}
http: { listen: "0.0.0.0:5240" }
interfaces: [br0]
logLevel: debug
subnets:
  - cidr: 10.77.0.0/24
    gateway: 10.77.0.1
    ${proxy ? 'proxyDhcp: true' : 'dynamicRanges: ["10.77.0.100-10.77.0.120"]'}
dns: { enabled: false }
ntp: { enabled: false }
`);
      return file;
    };

    const serve = (file: string) => {
      const child = L.spawn(srv, process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', file], { ...process.env, NOTIFY_SOCKET: '' });
      return watch(child);
    };
    const qemu = (args: string[]) => watch(L.spawn(srv, 'qemu-system-x86_64', ['-accel', 'tcg', '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no', ...args]));

    // 1. BIOS: iPXE from the NIC ROM asks with user class iPXE and fetches its script over HTTP.
    let mbx = serve(config(false));
    await mbx.waitFor(/"msg":"metalbox ready"/, 30_000);
    const bios = qemu(['-m', '256', '-boot', 'n', '-device', 'e1000,netdev=n0,mac=52:54:00:77:00:10']);
    const fetched = await mbx.waitFor(/"url":"\/boot\/52-54-00-77-00-10\.ipxe"/, 120_000).catch((e: Error) => e.message);
    t.match(fetched, /52-54-00-77-00-10\.ipxe/, 'the BIOS VM fetched http://10.77.0.1:5240/boot/52-54-00-77-00-10.ipxe');
    t.match(mbx.output(), /"mac":"52:54:00:77:00:10","ip":"10\.77\.0\.1\d\d".*"msg":"lease bound"/, 'it took a lease from the dynamic range');
    bios.kill();

    // 2. UEFI: OVMF's own PXE fetches snponly.efi from metalbox's TFTP (from boot.ipxeDir), from its new address.
    const vars = join(dir, 'ovmf-vars.fd');
    copyFileSync(OVMF_VARS, vars);
    const uefi = qemu(['-m', '512', '-drive', `if=pflash,format=raw,readonly=on,file=${OVMF_CODE}`, '-drive', `if=pflash,format=raw,file=${vars}`,
      '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:77:00:11,romfile=']);
    const tftp = await mbx.waitFor(/"file":"snponly\.efi","client":"10\.77\.0\.1\d\d:\d+"[^\n]*"msg":"tftp transfer completed"/, 240_000).catch((e: Error) => e.message);
    t.match(tftp, /"file":"snponly\.efi","client":"10\.77\.0\.1\d\d/, 'the UEFI VM fetched snponly.efi by TFTP from metalbox, from its new address');
    uefi.kill();
    await mbx.stop();

    // 3. proxyDHCP beside dnsmasq, which serves the addresses from another host on the segment.
    const dsrv = L.ns('dns');
    L.link({ ns: srv, ifname: 'vd0' }, { ns: dsrv, ifname: 'd0', cidr: '10.77.0.2/24' });
    L.exec(srv, 'ip', ['link', 'set', 'vd0', 'master', 'br0']);
    const dnsmasq = watch(L.spawn(dsrv, 'dnsmasq', ['--no-daemon', '--port=0', '--interface=d0', '--bind-interfaces', '--dhcp-range=10.77.0.150,10.77.0.160,1h',
      `--dhcp-leasefile=${join(dir, 'dnsmasq.leases')}`, '--no-ping', '--log-dhcp', '--dhcp-authoritative']));
    mbx = serve(config(true));
    await mbx.waitFor(/"msg":"metalbox ready"/, 30_000);
    const proxied = qemu(['-m', '256', '-boot', 'n', '-device', 'e1000,netdev=n0,mac=52:54:00:77:00:12']);
    const viaProxy = await mbx.waitFor(/"url":"\/boot\/52-54-00-77-00-12\.ipxe"/, 120_000).catch((e: Error) => e.message);
    t.match(viaProxy, /52-54-00-77-00-12\.ipxe/, 'with proxyDHCP the VM fetched its script from metalbox');
    t.match(dnsmasq.output(), /DHCPACK\(d0\) 10\.77\.0\.1[56]\d 52:54:00:77:00:12/, 'and its address came from dnsmasq');
    t.notMatch(mbx.output(), /"msg":"lease bound"/, 'metalbox gave no lease in proxy mode');
    proxied.kill();
    await mbx.stop();
  });
}

function watch(child: ChildProcess) {
  let out = '';
  const waiters: (() => void)[] = [];
  const poke = () => { for (const w of waiters.splice(0)) w(); };
  child.stdout?.setEncoding('utf8').on('data', (d: string) => { out += d; poke(); });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { out += d; poke(); });
  child.on('exit', poke);
  return {
    output: () => out,
    kill: () => child.kill('SIGKILL'),
    stop: async () => { const e = new Promise((r) => child.once('exit', r)); child.kill('SIGTERM'); await e; },
    waitFor(re: RegExp, ms: number): Promise<string> {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${re}\n${out.slice(-3000)}`)), ms);
        const check = () => {
          const m = re.exec(out);
          if (m) { clearTimeout(timer); resolve(m[0]); return; }
          if (child.exitCode !== null || child.signalCode !== null) { clearTimeout(timer); reject(new Error(`exited before ${re}\n${out.slice(-3000)}`)); return; }
          waiters.push(check);
        };
        check();
      });
    },
  };
}
