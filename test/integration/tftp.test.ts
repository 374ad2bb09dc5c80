// TFTP against real clients in network namespaces: tftp-hpa with its defaults (no options; netascii and
// octet), atftp negotiating blksize/tsize/windowsize, a 33 MiB file (past the 16-bit block number at 512-byte
// blocks), traversal attempts, a write request, a flood of malformed datagrams, the per-client cap, the
// management interface that gets no answer, and the boot-timeline events.
//
//   ns srv: metalbox serve, interfaces [br0]; br0 10.77.0.1/24 bridges p1 and p2; m0 192.0.2.1/24 (management)
//   ns c1:  q1 <-> p1, MAC 52:54:00:aa:01:01, address from metalbox's DHCP (so its events carry its MAC)
//   ns c2:  q2 <-> p2, 10.77.0.50/24, static (no lease: its events carry its address)
//   ns mg:  n0 <-> m0, 192.0.2.2/24
import t from 'tap';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, canBuildLab } from '../helpers/netns.ts';
import { ROOT } from '../helpers/process.ts';
import { openLevelStore } from '../../src/store/level-store.ts';

const PEER = join(ROOT, 'test/helpers/tftp-peer.py');
/** A command in a namespace, without blocking the event loop (metalbox's log pipe must keep draining); stdout + stderr. */
function run(ns: string, cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', maxBuffer: 1 << 24 }, (_err, stdout, stderr) => resolve(`${stdout}${stderr}`));
  });
}
const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

const lab = canBuildLab();
if (!lab.ok) {
  t.fail(`cannot build the lab: ${lab.why}`);
} else {
  t.test('tftp with real clients', { timeout: 180_000 }, async (t) => {
    const L = new Lab('mbt');
    const dir = mkdtempSync(join(tmpdir(), 'mbx-tftp-'));
    t.teardown(() => { L.destroy(); rmSync(dir, { recursive: true, force: true }); });

    const srv = L.ns('srv');
    const c1 = L.ns('c1');
    const c2 = L.ns('c2');
    const mg = L.ns('mg');
    L.exec(srv, 'ip', ['link', 'add', 'br0', 'type', 'bridge']);
    L.exec(srv, 'ip', ['link', 'set', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    L.exec(srv, 'ip', ['addr', 'add', '10.77.0.1/24', 'dev', 'br0']);
    L.exec(srv, 'ip', ['link', 'set', 'br0', 'up']);
    L.link({ ns: srv, ifname: 'p1' }, { ns: c1, ifname: 'q1' });
    L.link({ ns: srv, ifname: 'p2' }, { ns: c2, ifname: 'q2', cidr: '10.77.0.50/24' });
    for (const p of ['p1', 'p2']) L.exec(srv, 'ip', ['link', 'set', p, 'master', 'br0']);
    L.link({ ns: srv, ifname: 'm0', cidr: '192.0.2.1/24' }, { ns: mg, ifname: 'n0', cidr: '192.0.2.2/24' });
    L.exec(c1, 'ip', ['link', 'set', 'q1', 'address', '52:54:00:aa:01:01']);

    // The root: a small file, a 33 MiB one, a symlink inside and two pointing out.
    const root = join(dir, 'tftp');
    const outside = join(dir, 'outside');
    mkdirSync(join(root, 'pxelinux.cfg'), { recursive: true });
    mkdirSync(outside);
    const small = join(root, 'pxelinux.cfg', 'default');
    writeFileSync(small, Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7919) % 256)));
    const big = join(root, 'big.img');
    const chunk = createHash('sha512');
    const parts: Buffer[] = [];
    for (let i = 0; parts.length * 64 < 33 * 1024 * 1024; i++) parts.push(chunk.copy().update(String(i)).digest());
    writeFileSync(big, Buffer.concat(parts));
    writeFileSync(join(outside, 'secret'), 'outside the root');
    symlinkSync(join(outside, 'secret'), join(root, 'link-out'));
    symlinkSync('../outside', join(root, 'dir-out'));
    symlinkSync('pxelinux.cfg/default', join(root, 'link-in'));

    const config = join(dir, 'metalbox.yaml');
    writeFileSync(config, `
stateDir: ${join(dir, 'state')}
http: { listen: "0.0.0.0:5240" }
interfaces: [br0]
logLevel: debug
subnets:
  - cidr: 10.77.0.0/24
    dynamicRanges: ["10.77.0.100-10.77.0.109"]
tftp: { root: ${root}, maxTransfersPerClient: 2 }
dns: { enabled: false }
ntp: { enabled: false }
`);
    const mbx = L.spawn(srv, process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', config], { ...process.env, NOTIFY_SOCKET: '' });
    let log = '';
    mbx.stdout!.setEncoding('utf8').on('data', (d: string) => { log += d; });
    mbx.stderr!.setEncoding('utf8').on('data', (d: string) => { log += d; });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`metalbox did not start:\n${log}`)), 30_000);
      mbx.stdout!.on('data', () => { if (log.includes('"msg":"metalbox ready"')) { clearTimeout(timer); resolve(); } });
      mbx.on('exit', () => { clearTimeout(timer); reject(new Error(`metalbox exited:\n${log}`)); });
    });
    t.match(log, /"interfaces":\["br0"\],"port":69.*"msg":"tftp listening"/, 'tftp listening on br0');

    // c1 takes a lease, so the server knows its MAC.
    const script = join(dir, 'udhcpc.sh');
    writeFileSync(script, '#!/bin/sh\n[ "$1" = bound ] && echo "LEASE $ip"\nexit 0\n');
    chmodSync(script, 0o755);
    const lease = /LEASE (\S+)/.exec(await run(c1, 'busybox', ['udhcpc', '-i', 'q1', '-n', '-q', '-f', '-t', '4', '-T', '1', '-s', script]))?.[1];
    t.ok(lease, `c1 got a lease (${lease})`);
    L.exec(c1, 'ip', ['addr', 'add', `${lease}/24`, 'dev', 'q1']);

    const hpa = (ns: string, args: string[]) => run(ns, 'tftp', args);
    const out = (name: string) => join(dir, name);

    // 1. tftp-hpa, default options: netascii mode, no RFC 2347 options; the client turns CR LF back into LF.
    t.equal(await hpa(c1, ['10.77.0.1', '-c', 'get', 'pxelinux.cfg/default', out('small-ascii')]), '', 'tftp-hpa (netascii) reports no error');
    t.equal(sha256(out('small-ascii')), sha256(small), 'netascii fetch is byte-identical');
    await hpa(c1, ['-m', 'binary', '10.77.0.1', '-c', 'get', 'link-in', out('small-octet')]);
    t.equal(sha256(out('small-octet')), sha256(small), 'octet fetch through a symlink inside the root is byte-identical');

    // 2. 33 MiB at 512-byte blocks: 67,585 blocks, so the block number wraps past 65535.
    let t0 = Date.now();
    t.equal(await hpa(c1, ['-m', 'binary', '10.77.0.1', '-c', 'get', 'big.img', out('big-hpa')]), '', 'tftp-hpa fetched the big file');
    t.equal(sha256(out('big-hpa')), sha256(big), `33 MiB by tftp-hpa is byte-identical (${Date.now() - t0} ms)`);

    // 3. atftp negotiating blksize, tsize and windowsize, from the address with no lease.
    t0 = Date.now();
    await run(c2, 'atftp', ['--option', 'blksize 1468', '--option', 'tsize 0', '--option', 'windowsize 8', '-g', '-r', 'big.img', '-l', out('big-atftp'), '10.77.0.1']);
    t.equal(sha256(out('big-atftp')), sha256(big), `33 MiB by atftp with windowsize 8 is byte-identical (${Date.now() - t0} ms)`);
    const trace = await run(c2, 'atftp', ['--option', 'blksize 1468', '--option', 'tsize 0', '--option', 'windowsize 8', '--trace', '-g', '-r', 'pxelinux.cfg/default', '-l', out('small-atftp'), '10.77.0.1']);
    t.match(trace, /received OACK <[^>]*windowsize: 8[^>]*>/, 'the OACK grants windowsize 8');
    t.match(trace, /received OACK <[^>]*blksize: 1468[^>]*>/, 'and blksize 1468');
    t.match(trace, /received OACK <[^>]*tsize: 70000[^>]*>/, 'and tells the size');
    t.equal(sha256(out('small-atftp')), sha256(small));

    // 4. Traversal: every attempt gets an ERROR (the client prints it) and nothing is written.
    for (const name of ['../outside/secret', '/etc/passwd', `${outside}/secret`, '..\\outside\\secret', 'pxelinux.cfg/../../outside/secret', 'link-out', 'dir-out/secret', 'x'.repeat(300)]) {
      const o = await hpa(c1, ['-m', 'binary', '10.77.0.1', '-c', 'get', name, out('stolen')]);
      t.match(o, /Error code 2: access violation/, `${name.slice(0, 40)}: access violation`);
    }
    t.notMatch(existsSync(out('stolen')) ? readFileSync(out('stolen'), 'utf8') : '', /outside the root/, 'nothing from outside was written');
    // A NUL inside the name cannot come from a C client: send it raw.
    const nul = JSON.parse(await run(c1, 'python3', [PEER, 'probe', '10.77.0.1', '69', Buffer.from('\0\x01../outside/secret\0.txt\0octet\0', 'latin1').toString('hex')]));
    t.match(nul, { op: 'ERROR', code: 4 }, 'a NUL in the name: ERROR');
    const nulAlone = JSON.parse(await run(c1, 'python3', [PEER, 'probe', '10.77.0.1', '69', Buffer.from('\0\x01link-out\0octet\0', 'latin1').toString('hex')]));
    t.match(nulAlone, { op: 'ERROR', code: 2 }, 'raw request for a symlink pointing out: ERROR 2');
    t.match(await hpa(c1, ['-m', 'binary', '10.77.0.1', '-c', 'get', 'no-such-file', out('missing')]), /Error code 1: file not found/, 'missing file: ERROR 1');
    t.match(log, /"reason":"dot-dot".*"msg":"tftp request outside the root refused"/, 'traversal logged');
    t.match(log, /"reason":"outside-root".*"msg":"tftp request outside the root refused"/, 'symlink out logged');

    // 5. A write request is refused.
    writeFileSync(out('upload'), 'data');
    t.match(await hpa(c1, ['10.77.0.1', '-c', 'put', out('upload'), 'upload']), /Error code 2: writes are not accepted/, 'WRQ refused with ERROR 2');

    // 6. The management interface is not a provisioning interface: no answer at all.
    const mgmt = JSON.parse(await run(mg, 'python3', [PEER, 'probe', '192.0.2.1', '69', Buffer.from('\0\x01pxelinux.cfg/default\0octet\0', 'latin1').toString('hex'), '1.5']));
    t.same(mgmt, { op: 'timeout' }, 'no answer on the management network');

    // 7. 20,000 malformed datagrams, then a normal fetch still works.
    const flood = JSON.parse(await run(c2, 'python3', [PEER, 'flood', '10.77.0.1', '69', '20000']));
    t.equal(flood.sent, 20_000, `flood sent (${flood.seconds.toFixed(2)} s)`);
    await hpa(c2, ['-m', 'binary', '10.77.0.1', '-c', 'get', 'pxelinux.cfg/default', out('after-flood')]);
    t.equal(sha256(out('after-flood')), sha256(small), 'a fetch right after the flood works');
    t.match(log, /"msg":"malformed TFTP (packet dropped|request refused)"/, 'malformed datagrams logged');
    t.ok((log.match(/"msg":"malformed TFTP/g) ?? []).length < 200, 'but rate-limited');

    // 8. Per-client cap (2): two transfers held open, the third refused; once they end, a new one starts.
    const cap = (await run(c2, 'python3', [PEER, 'cap', '10.77.0.1', '69', 'big.img', '2'])).trim().split('\n').map((l) => JSON.parse(l) as Record<string, Record<string, unknown>>);
    t.match(cap[0], { held: { op: 'DATA', block: 1 } });
    t.match(cap[1], { held: { op: 'DATA', block: 1 } });
    t.match(cap[2], { extra: { op: 'ERROR', code: 0, message: 'too many transfers' } }, 'third concurrent transfer refused');
    t.match(cap[3], { after: { op: 'DATA', block: 1 } }, 'a slot frees when a transfer ends');

    // Metrics (the HTTP listener is inside the namespace), then stop.
    const metrics = await run(srv, process.execPath, ['-e', "fetch('http://127.0.0.1:5240/metrics').then((r) => r.text()).then((s) => process.stdout.write(s))"]);
    const counter = (re: RegExp) => Number(re.exec(metrics)?.[1] ?? NaN);
    // What the kernel dropped from the flood before we read it never reaches the counter (20,000 in a quarter second).
    t.ok(counter(/^metalbox_tftp_malformed_total (\d+)/m) >= 2_000, `malformed counted: ${counter(/^metalbox_tftp_malformed_total (\d+)/m)}`);
    t.comment(metrics.split('\n').filter((l) => l.startsWith('metalbox_tftp_')).join('\n'));
    t.equal(counter(/^metalbox_tftp_refused_total\{reason="busy-client"\} (\d+)/m), 1, 'the cap refusal counted');
    t.ok(counter(/^metalbox_tftp_transfers_completed_total (\d+)/m) >= 6, 'completed transfers counted');
    t.ok(counter(/^metalbox_tftp_bytes_sent_total (\d+)/m) >= 2 * 33 * 1024 * 1024, 'bytes counted');
    const exited = new Promise((r) => mbx.once('exit', r));
    mbx.kill('SIGTERM');
    await exited;
    t.notMatch(log, /"level":"(error|fatal)"/, 'no errors logged');

    const store = await openLevelStore(join(dir, 'state'));
    t.teardown(() => store.close());
    const events: { subject?: string; data?: Record<string, unknown> }[] = [];
    for await (const [, e] of store.events.entries()) if (e.type === 'boot.tftp') events.push(e);
    const big1 = events.find((e) => e.data?.file === 'big.img' && e.subject === '52:54:00:aa:01:01');
    t.match(big1, { data: { ok: true, bytes: 33 * 1024 * 1024, client: lease } }, 'c1\'s big fetch is recorded against its MAC');
    t.ok(typeof big1?.data?.ms === 'number', 'with its duration');
    t.match(events.find((e) => e.data?.file === 'big.img' && e.subject === '10.77.0.50'), { data: { ok: true, client: '10.77.0.50' } }, 'c2 (no lease) is recorded by address');
    t.match(events.find((e) => e.data?.file === '../outside/secret'), { subject: '52:54:00:aa:01:01', data: { ok: false, error: 'path-dot-dot' } }, 'refused reads are recorded too');
    t.match(events.find((e) => e.data?.file === 'no-such-file'), { data: { ok: false, error: 'not-found' } });
  });
}
