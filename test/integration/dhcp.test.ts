// DHCP against real clients in network namespaces: busybox udhcpc and ISC dhclient, a client behind ISC
// dhcrelay, a second provisioning interface, a management interface that must get no answer, reservations, and a
// restart after which every client keeps its address.
//
//   ns srv: metalbox serve, interfaces [p0, p1, rl0], plus m0 (management, not configured)
//   ns c1:  q0 <-> p0    10.77.0.0/24 (direct), q1 <-> p1  10.78.0.0/24 (a second provisioning network)
//   ns mg:  n0 <-> m0    192.0.2.0/24 (management: no DHCP answer expected)
//   ns rly: dhcrelay; u0 <-> rl0 10.88.0.0/24 towards srv, d0 <-> e0 10.99.0.0/24 towards c3
//   ns c3:  e0 (client behind the relay)
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync, chmodSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, canBuildLab } from '../helpers/netns.ts';
import { ROOT } from '../helpers/process.ts';
import { openLevelStore } from '../../src/store/level-store.ts';

const lab = canBuildLab();
if (!lab.ok) {
  t.fail(`cannot build the lab: ${lab.why}`);
} else {
  t.test('dhcp with real clients', { timeout: 240_000 }, async (t) => {
    const L = new Lab('mbd');
    const dir = mkdtempSync(join(tmpdir(), 'mbx-dhcp-'));
    t.teardown(() => { L.destroy(); rmSync(dir, { recursive: true, force: true }); });

    const srv = L.ns('srv');
    const c1 = L.ns('c1');
    const mg = L.ns('mg');
    const rly = L.ns('rly');
    const c3 = L.ns('c3');
    L.link({ ns: srv, ifname: 'p0', cidr: '10.77.0.1/24' }, { ns: c1, ifname: 'q0' });
    // A second provisioning network. It would be a VLAN sub-interface (p0.10) on a switch port, but this
    // machine's kernel has no 802.1Q module; to the socket code a VLAN is just another netdev.
    L.link({ ns: srv, ifname: 'p1', cidr: '10.78.0.1/24' }, { ns: c1, ifname: 'q1' });
    L.link({ ns: srv, ifname: 'm0', cidr: '192.0.2.1/24' }, { ns: mg, ifname: 'n0' });
    L.link({ ns: srv, ifname: 'rl0', cidr: '10.88.0.1/24' }, { ns: rly, ifname: 'u0', cidr: '10.88.0.2/24' });
    L.link({ ns: rly, ifname: 'd0', cidr: '10.99.0.1/24' }, { ns: c3, ifname: 'e0' });
    L.exec(srv, 'ip', ['route', 'add', '10.99.0.0/24', 'via', '10.88.0.2']);
    L.exec(rly, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);

    const config = join(dir, 'metalbox.yaml');
    writeFileSync(config, `
stateDir: ${join(dir, 'state')}
http: { listen: "0.0.0.0:5240" }
interfaces: [p0, p1, rl0]
domain: rack.test
logLevel: debug
subnets:
  - cidr: 10.77.0.0/24
    gateway: 10.77.0.1
    dynamicRanges: ["10.77.0.100-10.77.0.109"]
    reservations: [{ mac: "52:54:00:aa:00:02", ip: 10.77.0.50, hostname: node-two }]
    leaseSeconds: 600
  - cidr: 10.78.0.0/24
    dynamicRanges: ["10.78.0.100-10.78.0.109"]
  - cidr: 10.88.0.0/24
  - cidr: 10.99.0.0/24
    gateway: 10.99.0.1
    dynamicRanges: ["10.99.0.200-10.99.0.209"]
dns: { enabled: false }
ntp: { enabled: false }
`);
    // The udhcpc script prints what the client was told, one key=value per line.
    const script = join(dir, 'udhcpc.sh');
    writeFileSync(script, '#!/bin/sh\n[ "$1" = bound ] && echo "LEASE ip=$ip subnet=$subnet router=$router serverid=$serverid domain=$domain hostname=$hostname boot_file=$boot_file siaddr=$siaddr lease=$lease"\nexit 0\n');
    chmodSync(script, 0o755);
    const udhcpc = (ns: string, ifname: string, extra: string[] = []) =>
      L.exec(ns, 'busybox', ['udhcpc', '-i', ifname, '-n', '-q', '-f', '-t', '4', '-T', '1', '-A', '1', '-s', script, ...extra], { allowFail: true });
    const leaseOf = (out: string) => /LEASE (.*)/.exec(out)?.[1] ?? '';
    const field = (out: string, key: string) => new RegExp(`${key}=(\\S*)`).exec(leaseOf(out))?.[1];

    const serve = () => {
      const child = L.spawn(srv, process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', config], { ...process.env, NOTIFY_SOCKET: '' });
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
      child.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
      const ready = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`metalbox did not start:\n${out}`)), 30_000);
        const check = () => { if (out.includes('"msg":"metalbox ready"')) { clearTimeout(timer); resolve(); } };
        child.stdout!.on('data', check);
        child.on('exit', () => { clearTimeout(timer); reject(new Error(`metalbox exited:\n${out}`)); });
      });
      const stop = async () => {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      };
      return { ready, stop, output: () => out };
    };

    let mbx = serve();
    await mbx.ready;

    // 1. udhcpc (PXE-like vendor class) on the direct subnet gets a dynamic address and the options.
    L.exec(c1, 'ip', ['link', 'set', 'q0', 'address', '52:54:00:aa:00:01']);
    const a = udhcpc(c1, 'q0', ['-V', 'PXEClient', '-x', '0x5d:0000']);
    t.match(leaseOf(a), /ip=10\.77\.0\.10\d /, `udhcpc got a pool address: ${leaseOf(a) || a}`);
    t.equal(field(a, 'router'), '10.77.0.1');
    t.equal(field(a, 'serverid'), '10.77.0.1');
    t.equal(field(a, 'domain'), 'rack.test');
    t.equal(field(a, 'subnet'), '255.255.255.0');
    t.equal(field(a, 'boot_file'), 'undionly.kpxe', 'BIOS PXE client gets undionly.kpxe');
    t.equal(field(a, 'siaddr'), '10.77.0.1', 'next-server is the arrival interface address');
    const firstIp = field(a, 'ip');

    // 2. The same client asks again: the same address.
    const again = udhcpc(c1, 'q0');
    t.equal(field(again, 'ip'), firstIp, 'the same client gets its address back');

    // 3. A reservation: this MAC gets its reserved address and host name.
    L.exec(c1, 'ip', ['link', 'set', 'q0', 'address', '52:54:00:aa:00:02']);
    const r = udhcpc(c1, 'q0');
    t.equal(field(r, 'ip'), '10.77.0.50', 'reserved address');
    t.equal(field(r, 'hostname'), 'node-two');

    // 4. dhclient on the second network: served from that network's subnet.
    const leases = join(dir, 'dhclient.leases');
    const dh = L.exec(c1, 'dhclient', ['-1', '-v', '-lf', leases, '-pf', join(dir, 'dhclient.pid'), '-sf', '/bin/true', 'q1'], { allowFail: true });
    const dhLease = readFileSync(leases, 'utf8');
    t.match(dhLease, /fixed-address 10\.78\.0\.10\d;/, `dhclient got an address on the second network\n${dh}`);
    t.match(dhLease, /option dhcp-server-identifier 10\.78\.0\.1;/);
    L.exec(c1, 'dhclient', ['-x', '-pf', join(dir, 'dhclient.pid'), '-lf', leases, 'q1'], { allowFail: true });

    // 5. Behind dhcrelay: an address from the relay's subnet; the reply went back through the relay.
    const relay = L.spawn(rly, 'dhcrelay', ['-d', '-4', '-id', 'd0', '-iu', 'u0', '10.88.0.1']);
    let relayOut = '';
    relay.stderr!.setEncoding('utf8').on('data', (d: string) => { relayOut += d; });
    await new Promise((res) => setTimeout(res, 1000));
    const rel = udhcpc(c3, 'e0');
    t.match(leaseOf(rel), /ip=10\.99\.0\.20\d /, `client behind the relay got a relayed-subnet address: ${leaseOf(rel) || rel}\n${relayOut}`);
    t.equal(field(rel, 'router'), '10.99.0.1');

    // 6. The management interface is not ours: no answer.
    const none = udhcpc(mg, 'n0', ['-t', '2']);
    t.equal(leaseOf(none), '', 'no answer on the management network');

    // 7. Restart: every client keeps its address.
    await mbx.stop();
    mbx = serve();
    await mbx.ready;
    L.exec(c1, 'ip', ['link', 'set', 'q0', 'address', '52:54:00:aa:00:01']);
    t.equal(field(udhcpc(c1, 'q0'), 'ip'), firstIp, 'after a restart the client keeps its address');
    t.equal(field(udhcpc(c3, 'e0'), 'ip'), field(rel, 'ip'), 'and so does the relayed client');
    relay.kill();
    const metrics = mbx.output();
    await mbx.stop();

    // Another DHCP server on this host (anything on 0.0.0.0:67) makes metalbox fail at start, loudly.
    const squatter = L.spawn(srv, process.execPath, ['-e', "require('node:dgram').createSocket('udp4').bind(67, '0.0.0.0', () => console.log('bound'))"]);
    await new Promise<void>((res) => squatter.stdout!.once('data', () => res()));
    const clash = serve();
    await t.rejects(clash.ready, /exited/);
    t.match(clash.output(), /SOCKET_OPEN_FAILED: .*67.*EADDRINUSE/, 'port 67 taken: clear error, non-zero exit');
    squatter.kill();

    // Every lease is in the store, with its event.
    const store = await openLevelStore(join(dir, 'state'));
    t.teardown(() => store.close());
    const stored = new Map<string, string>();
    for await (const [ip, rec] of store.leases.entries()) stored.set(ip, `${rec.mac} ${rec.state}`);
    t.equal(stored.get(firstIp!), '52:54:00:aa:00:01 bound');
    t.equal(stored.get('10.77.0.50'), '52:54:00:aa:00:02 bound');
    t.ok([...stored.keys()].some((ip) => ip.startsWith('10.78.0.')), 'second-network lease stored');
    t.ok([...stored.keys()].some((ip) => ip.startsWith('10.99.0.')), 'relayed lease stored');
    const events: string[] = [];
    for await (const [, e] of store.events.entries()) events.push(`${e.type} ${e.subject} ${String(e.data?.ip)}`);
    t.ok(events.includes(`lease.bound 52:54:00:aa:00:01 ${firstIp}`), 'lease events recorded');
    t.notMatch(metrics, /"level":"(error|fatal)"/, 'no errors logged');
  });
}
