// DNS against real clients in network namespaces: dig (A, AAAA, PTR, SRV, TXT, TCP, EDNS, a truncated answer
// retried over TCP, AXFR allowed and refused, NXDOMAIN and NODATA), a forwarded query through dnsmasq as the
// upstream resolver in a namespace of its own, REFUSED for a client outside our subnets, SERVFAIL when the
// upstream is gone, records that appear within a second of a DHCP lease taken by busybox udhcpc, a record
// added as the API adds one, and a hostile datagram counted in /metrics.
//
//   ns srv: metalbox DNS + DHCP (test/helpers/dns-server.ts, wired as main.ts wires them)
//           p0 10.77.0.1/24, p1 10.78.0.1/24, o0 192.0.2.1/24 (provisioning, no subnet), u0 10.99.0.1/24 (upstream side)
//   ns c1:  q0 10.77.0.5/24 and 10.77.0.6/24 (dig; .5 is the configured secondary)
//   ns dh:  r0 (udhcpc on 10.78.0.0/24)
//   ns out: n0 192.0.2.5/24 (a client outside our subnets)
//   ns up:  v0 10.99.0.2/24 (dnsmasq serving fwd.test)
import t from 'tap';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, canBuildLab } from '../helpers/netns.ts';
import { startDnsServer } from '../helpers/dns-child.ts';

const lab = canBuildLab();
if (!lab.ok) {
  t.fail(`cannot build the lab: ${lab.why}`);
} else {
  t.test('dns with real clients', { timeout: 240_000 }, async (t) => {
    const L = new Lab('mbn');
    const dir = mkdtempSync(join(tmpdir(), 'mbx-dns-'));
    let stop: (() => Promise<void>) | undefined;
    t.teardown(async () => { await stop?.(); L.destroy(); rmSync(dir, { recursive: true, force: true }); });

    const srv = L.ns('srv');
    const c1 = L.ns('c1');
    const dh = L.ns('dh');
    const out = L.ns('out');
    const up = L.ns('up');
    L.link({ ns: srv, ifname: 'p0', cidr: '10.77.0.1/24' }, { ns: c1, ifname: 'q0', cidr: '10.77.0.5/24' });
    L.exec(c1, 'ip', ['addr', 'add', '10.77.0.6/24', 'dev', 'q0']);
    L.link({ ns: srv, ifname: 'p1', cidr: '10.78.0.1/24' }, { ns: dh, ifname: 'r0' });
    L.link({ ns: srv, ifname: 'o0', cidr: '192.0.2.1/24' }, { ns: out, ifname: 'n0', cidr: '192.0.2.5/24' });
    L.link({ ns: srv, ifname: 'u0', cidr: '10.99.0.1/24' }, { ns: up, ifname: 'v0', cidr: '10.99.0.2/24' });

    // The upstream resolver: dnsmasq answers fwd.test itself (TTL 300) and logs every query it gets.
    const upstream = L.spawn(up, 'dnsmasq', ['--no-daemon', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--user=root', '--pid-file=',
      '--listen-address=10.99.0.2', '--bind-interfaces', '--local=/fwd.test/', '--local-ttl=300', '--log-queries',
      '--host-record=www.fwd.test,198.51.100.7']);
    let upstreamLog = '';
    upstream.stderr!.setEncoding('utf8').on('data', (d: string) => { upstreamLog += d; });

    const config = join(dir, 'metalbox.yaml');
    writeFileSync(config, `
stateDir: ${join(dir, 'state')}
http: { listen: "0.0.0.0:5240" }
interfaces: [p0, p1, o0]
domain: rack.test
logLevel: warn
subnets:
  - cidr: 10.77.0.0/24
  - cidr: 10.78.0.0/24
    dynamicRanges: ["10.78.0.100-10.78.0.109"]
    leaseSeconds: 600
dns: { enabled: true, forwarders: [10.99.0.2], secondaries: [10.77.0.5], ttl: 60 }
tftp: { enabled: false }
ntp: { enabled: true }
`);
    const big = Array.from({ length: 40 }, (_, i) => ({ name: 'big.rack.test', type: 'A', value: `10.77.0.${100 + i}` }));
    const seed = join(dir, 'seed.json');
    writeFileSync(seed, JSON.stringify({
      records: [
        { name: 'web.rack.test', type: 'A', value: '10.77.0.50' },
        { name: 'web.rack.test', type: 'AAAA', value: '2001:db8::50' },
        { name: 'web.rack.test', type: 'TXT', value: 'hello from metalbox' },
        { name: '_http._tcp.rack.test', type: 'SRV', priority: 10, weight: 5, port: 80, target: 'web.rack.test' },
        ...big,
      ],
    }));
    const server = await startDnsServer(config, { ns: srv, seed });
    stop = server.stop;

    const dig = (ns: string, args: string[], server = '10.77.0.1') => L.exec(ns, 'dig', [`@${server}`, '+tries=1', '+time=3', ...args], { allowFail: true });
    const status = (o: string) => /status: (\w+)/.exec(o)?.[1];
    const flags = (o: string) => /;; flags: ([a-z ]*);/.exec(o)?.[1]?.split(' ') ?? [];
    const count = (o: string, section: string) => Number(new RegExp(`${section}: (\\d+)`).exec(o)?.[1] ?? -1);
    const short = (ns: string, args: string[], server?: string) => dig(ns, ['+short', ...args], server).trim();

    // 1. The record types, case-insensitive.
    t.equal(short(c1, ['Web.RACK.test', 'A']), '10.77.0.50', 'A');
    t.equal(short(c1, ['web.rack.test', 'AAAA']), '2001:db8::50', 'AAAA');
    t.equal(short(c1, ['web.rack.test', 'TXT']), '"hello from metalbox"', 'TXT');
    t.equal(short(c1, ['_http._tcp.rack.test', 'SRV']), '10 5 80 web.rack.test.', 'SRV');
    let o = dig(c1, ['web.rack.test', 'A']);
    t.ok(flags(o).includes('aa'), `authoritative: ${flags(o).join(' ')}`);
    t.ok(flags(o).includes('ra'), 'recursion available to a client in our subnets');

    // 2. NXDOMAIN and NODATA.
    o = dig(c1, ['nope.rack.test', 'A']);
    t.equal(status(o), 'NXDOMAIN', 'a name that does not exist');
    t.match(o, /rack\.test\.\s+60\s+IN\s+SOA\s+ns\.rack\.test\. hostmaster\.rack\.test\./, 'with the SOA');
    o = dig(c1, ['web.rack.test', 'MX']);
    t.equal(status(o), 'NOERROR', 'NODATA: the name exists');
    t.equal(count(o, 'ANSWER'), 0);
    t.equal(count(o, 'AUTHORITY'), 1, 'SOA in the authority section');

    // 3. TCP, several queries on one connection.
    o = dig(c1, ['+tcp', '+keepopen', 'web.rack.test', 'A', 'web.rack.test', 'AAAA', 'web.rack.test', 'TXT']);
    t.equal((o.match(/\(TCP\)/g) ?? []).length, 3, 'three answers over TCP');
    t.match(o, /web\.rack\.test\.\s+60\s+IN\s+AAAA\s+2001:db8::50/);

    // 4. EDNS and truncation: 40 A records are 667 octets.
    o = dig(c1, ['+bufsize=1232', 'big.rack.test', 'A']);
    t.equal(count(o, 'ANSWER'), 40, 'all of it with EDNS');
    t.notOk(flags(o).includes('tc'));
    t.match(o, /udp: 1232/, 'our EDNS payload size');
    o = dig(c1, ['+noedns', '+ignore', 'big.rack.test', 'A']);
    t.ok(flags(o).includes('tc'), `TC without EDNS (512 octets): ${flags(o).join(' ')}`);
    t.equal(count(o, 'ANSWER'), 0, 'no partial RRset');
    o = dig(c1, ['+noedns', 'big.rack.test', 'A']);
    t.match(o, /Truncated, retrying in TCP mode/, 'dig retried over TCP');
    t.equal(count(o, 'ANSWER'), 40, 'and got the whole answer');

    // 5. Zone transfers: to the configured secondary only.
    o = dig(c1, ['-b', '10.77.0.5', 'rack.test', 'AXFR']);
    t.equal((o.match(/\tSOA\t/g) ?? []).length, 2, `AXFR starts and ends with the SOA:\n${o.slice(0, 400)}`);
    t.match(o, /_http\._tcp\.rack\.test\.\s+60\s+IN\s+SRV/);
    t.ok(Number(/XFR size: (\d+) records/.exec(o)?.[1]) >= 46, 'every record: 40 A of big, 4 of web and SRV, SOA twice, NS');
    o = dig(c1, ['-b', '10.77.0.6', 'rack.test', 'AXFR']);
    t.match(o, /Transfer failed/, `refused to another address: ${o.slice(0, 300)}`);
    t.notMatch(o, /\tSOA\t/);
    o = dig(c1, ['-b', '10.77.0.5', '0.78.10.in-addr.arpa', 'AXFR']);
    t.equal((o.match(/\tSOA\t/g) ?? []).length, 2, 'the reverse zones transfer too');

    // 6. A record added as the API adds one: served at once, and the serial moved.
    const serial0 = Number(short(c1, ['rack.test', 'SOA']).split(' ')[2]);
    const added = await server.send({ op: 'record', input: { name: 'new.rack.test', type: 'A', value: '10.77.0.77' } });
    t.equal(added.ok, true, JSON.stringify(added));
    t.equal(short(c1, ['new.rack.test', 'A']), '10.77.0.77', 'a new record is served');
    const serial1 = Number(short(c1, ['rack.test', 'SOA']).split(' ')[2]);
    t.ok(serial1 > serial0, `the serial grew: ${serial0} -> ${serial1}`);

    // The UDP packet cache (a query without EDNS options, asked twice) forgets what a change makes stale.
    t.equal(short(c1, ['+nocookie', 'web.rack.test', 'A']), '10.77.0.50');
    t.equal(short(c1, ['+nocookie', 'web.rack.test', 'A']), '10.77.0.50', 'the same answer again (from the packet cache)');
    const second = await server.send({ op: 'record', input: { name: 'web.rack.test', type: 'A', value: '10.77.0.51' } });
    t.equal(short(c1, ['+nocookie', 'web.rack.test', 'A']).split('\n').sort().join(' '), '10.77.0.50 10.77.0.51', 'a change is served at once');
    await server.send({ op: 'delete', id: (second.record as { id: string }).id });
    t.equal(short(c1, ['+nocookie', 'web.rack.test', 'A']), '10.77.0.50', 'and so is a deletion');

    // 7. A lease taken by udhcpc: A and PTR within a second; DHCP hands out our DNS (option 6) and domain (15).
    const script = join(dir, 'udhcpc.sh');
    writeFileSync(script, '#!/bin/sh\n[ "$1" = bound ] && echo "LEASE ip=$ip dns=$dns ntpsrv=$ntpsrv domain=$domain"\nexit 0\n');
    chmodSync(script, 0o755);
    const udhcpc = (hostname?: string) => L.exec(dh, 'busybox', ['udhcpc', '-i', 'r0', '-n', '-q', '-f', '-t', '4', '-T', '1', '-A', '1', '-s', script, ...(hostname ? ['-x', `hostname:${hostname}`] : [])], { allowFail: true });
    const field = (s: string, key: string) => new RegExp(`${key}=(\\S*)`).exec(/LEASE (.*)/.exec(s)?.[1] ?? '')?.[1];
    L.exec(dh, 'ip', ['link', 'set', 'r0', 'address', '52:54:00:cc:00:01']);
    const lease = udhcpc('lab-node');
    const leased = Date.now();
    const ip = field(lease, 'ip');
    t.match(ip, /^10\.78\.0\.10\d$/, `udhcpc got a lease: ${lease}`);
    t.equal(field(lease, 'dns'), '10.78.0.1', 'option 6: metalbox itself');
    t.equal(field(lease, 'ntpsrv'), '10.78.0.1', 'option 42: metalbox itself');
    t.equal(field(lease, 'domain'), 'rack.test', 'option 15: the domain');
    let answer = '';
    while (Date.now() - leased < 5000) {
      answer = short(c1, ['lab-node.rack.test', 'A']);
      if (answer !== '') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const took = Date.now() - leased;
    t.equal(answer, ip, 'the lease\'s host name resolves to its address');
    t.ok(took < 1000, `within a second of the lease (${took} ms, dig included)`);
    t.equal(short(c1, ['-x', ip!]), 'lab-node.rack.test.', 'and the PTR');

    // A machine that owns the MAC names the lease, whatever host name the client sends.
    const made = await server.send({ op: 'machine', mac: '52:54:00:cc:00:02', hostname: 'node-m' });
    t.equal(made.ok, true, JSON.stringify(made));
    L.exec(dh, 'ip', ['link', 'set', 'r0', 'address', '52:54:00:cc:00:02']);
    const ip2 = field(udhcpc('whatever'), 'ip');
    t.equal(short(c1, ['node-m.rack.test', 'A']), ip2, 'the machine\'s host name');
    t.equal(short(c1, ['whatever.rack.test', 'A']), '', 'not the client\'s');
    await server.send({ op: 'rename', id: made.id, hostname: 'node-n' });
    t.equal(short(c1, ['node-n.rack.test', 'A']), ip2, 'a renamed machine is found by its new name at once');
    t.equal(short(c1, ['-x', ip2!]), 'node-n.rack.test.');

    // 8. Forwarding: for clients in our subnets, through the upstream, then from the cache.
    o = dig(c1, ['www.fwd.test', 'A']);
    t.equal(status(o), 'NOERROR', `forwarded: ${o.slice(0, 500)}`);
    t.match(o, /www\.fwd\.test\.\s+\d+\s+IN\s+A\s+198\.51\.100\.7/);
    t.notOk(flags(o).includes('aa'), 'not authoritative');
    t.ok(flags(o).includes('ra'));
    t.equal(status(dig(c1, ['nope.fwd.test', 'A'])), 'NXDOMAIN', 'the upstream\'s NXDOMAIN comes through');
    await new Promise((r) => setTimeout(r, 1100));
    o = dig(c1, ['WWW.fwd.test', 'A']);
    const ttl = Number(/www\.fwd\.test\.\s+(\d+)\s+IN\s+A/i.exec(o)?.[1]);
    t.ok(ttl < 300 && ttl >= 290, `answered from the cache, its TTL counting down (${ttl})`);
    t.equal((upstreamLog.match(/query\[A\] www\.fwd\.test from 10\.99\.0\.1/g) ?? []).length, 1, `the upstream was asked once:\n${upstreamLog}`);

    // 9. A client outside our subnets: authoritative answers yes, recursion no (no open resolver).
    o = dig(out, ['www.fwd.test', 'A'], '192.0.2.1');
    t.equal(status(o), 'REFUSED', `outside our subnets: ${o.slice(0, 300)}`);
    t.equal(short(out, ['web.rack.test', 'A'], '192.0.2.1'), '10.77.0.50', 'our own names are still answered');

    // 10. The upstream is gone: SERVFAIL, quickly.
    upstream.kill('SIGKILL');
    await new Promise((r) => upstream.exitCode !== null || upstream.signalCode !== null ? r(null) : upstream.once('exit', r));
    const t0 = Date.now();
    o = L.exec(c1, 'dig', ['@10.77.0.1', '+tries=1', '+time=8', 'other.fwd.test', 'A'], { allowFail: true });
    const waited = Date.now() - t0;
    t.equal(status(o), 'SERVFAIL', `no upstream: ${o.slice(0, 300)}`);
    t.ok(waited < 3500, `within the 2 s bound (${waited} ms, dig included)`);

    // 11. A hostile datagram (a compression pointer loop) is dropped and counted; the server carries on.
    L.exec(c1, 'python3', ['-c', 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(bytes.fromhex("abcd01000001000000000000c00c00010001"), ("10.77.0.1", 53))']);
    await new Promise((r) => setTimeout(r, 300));
    const metrics = String((await server.send({ op: 'metrics' })).text);
    t.match(metrics, /metalbox_dns_malformed_total\{code="DNS_BAD_POINTER"\} 1/, 'counted by its code');
    t.match(metrics, /metalbox_dns_answers_total\{transport="udp",outcome="nxdomain"\} \d+/);
    t.match(metrics, /metalbox_dns_answers_total\{transport="tcp",outcome="transfer"\} 2/);
    t.match(metrics, /metalbox_dns_truncated_total 2/, 'the two truncated answers');
    t.equal(short(c1, ['web.rack.test', 'A']), '10.77.0.50', 'still answering');

    await server.stop();
    stop = undefined;
    t.notMatch(server.stderr(), /"level":(50|60)/, 'no error logged');
  });
}
