// NTP against real peers in network namespaces: sntp and ntpdig (on Debian 12 both are ntpsec's ntpdig),
// ntpdate -q (ntpsec's wrapper script around it) and chronyd -Q as clients; chronyd -x with "local stratum 3" as metalbox's upstream. No chronyd here
// touches a clock (-x for the server, -Q for the clients), and nothing leaves the namespaces the test makes.
//
//   ns up:  v0 192.0.2.1/24       chronyd -x, local stratum 3 (started in phase B)
//   ns srv: m0 192.0.2.2/24       metalbox's NTP service (test/helpers/ntp-child.ts), upstream 192.0.2.1
//           p0 10.77.0.1/24       the provisioning interface it serves on
//   ns cl:  q0 10.77.0.50/24, 10.77.0.51/24 (the flooding address)
//
// A. upstream down: metalbox answers leap 3 / stratum 16; ntpdig and sntp refuse it, chronyd -Q will not sync.
// B. upstream up: metalbox syncs and serves stratum 4; ntpdig, sntp, ntpdate -q and chronyd -Q agree (offset < 0.5 s).
// C. a flood from 10.77.0.51 gets RATE kisses and drops while 10.77.0.50 is still answered.
// D. no upstream, ntp.localStratum 9: clients accept stratum 9.
import t, { type Test } from 'tap';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Lab, canBuildLab } from '../helpers/netns.ts';
import { ROOT } from '../helpers/process.ts';
import type { NtpStatus } from '../../src/services/ntp/server.ts';

/** A command in a namespace without blocking the event loop; exit code and stdout + stderr. */
function run(ns: string, cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

/** metalbox's NTP service in `ns`, driven over stdin/stdout (see the helper). */
async function startNtp(t: Test, ns: string, yaml: string) {
  const child: ChildProcess = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', join(ROOT, 'test/helpers/ntp-child.ts'), yaml], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const lines: string[] = [];
  const waiters: ((line: string) => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => { const w = waiters.shift(); if (w) w(l); else lines.push(l); });
  const next = (ms = 30_000) => new Promise<string>((resolve, reject) => {
    const l = lines.shift();
    if (l !== undefined) { resolve(l); return; }
    const timer = setTimeout(() => reject(new Error(`ntp child said nothing:\n${stderr}`)), ms);
    waiters.push((line) => { clearTimeout(timer); resolve(line); });
  });
  const stop = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (child.exitCode === null) child.kill('SIGKILL');
  };
  t.teardown(stop);
  const ready = JSON.parse(await next(60_000)) as { ready: boolean };
  t.ok(ready.ready, 'metalbox NTP service started');
  return {
    stop,
    stderr: () => stderr,
    async status(): Promise<NtpStatus> {
      child.stdin!.write('status\n');
      return JSON.parse(await next()) as NtpStatus;
    },
    async metrics(): Promise<string> {
      child.stdin!.write('metrics\n');
      let text = '';
      for (let l = await next(); l !== '# end'; l = await next()) text += `${l}\n`;
      return text;
    },
  };
}

/** ntpdig -j's verdict: the JSON line when it accepted the server, else its complaint. */
async function ntpdig(ns: string, server: string): Promise<{ code: number; json?: { offset: number; stratum: number; leap: string }; out: string }> {
  const r = await run(ns, 'ntpdig', ['-j', '-t', '2', server]);
  const line = r.out.split('\n').find((l) => l.startsWith('{'));
  return { ...r, ...(line ? { json: JSON.parse(line) as { offset: number; stratum: number; leap: string } } : {}) };
}

/** chronyd -Q as a client of `server`, logging its measurements: exit code, output and the measurement lines. */
async function chronyQuery(ns: string, dir: string, name: string, server: string, timeoutS: number) {
  const d = join(dir, name);
  const conf = join(dir, `${name}.conf`);
  writeFileSync(conf, `server ${server} iburst\nlogdir ${d}\nlog measurements\npidfile ${d}.pid\n`);
  const r = await run(ns, 'chronyd', ['-Q', '-u', 'root', '-t', String(timeoutS), '-f', conf]);
  const log = existsSync(join(d, 'measurements.log')) ? readFileSync(join(d, 'measurements.log'), 'utf8') : '';
  // "2026-11-23 06:59:05 192.0.2.1  N  3 111 111 1111 ..." : leap, stratum, the three test groups.
  const rows = log.split('\n').filter((l) => /^\d{4}-\d\d-\d\d /.test(l)).map((l) => {
    const f = l.trim().split(/\s+/);
    return { leap: f[3]!, stratum: Number(f[4]), tests: `${f[5]} ${f[6]} ${f[7]}`, offset: Number(f[11]) };
  });
  const wrong = /System clock wrong by (-?[\d.]+) seconds/.exec(r.out);
  return { ...r, rows, offset: wrong ? Number(wrong[1]) : undefined };
}

const lab = canBuildLab();
if (!lab.ok) {
  t.fail(`cannot build the lab: ${lab.why}`);
} else {
  t.test('ntp with real clients and a real upstream', { timeout: 300_000 }, async (t) => {
    const L = new Lab('mbn');
    const dir = mkdtempSync(join(tmpdir(), 'mbx-ntp-'));
    t.teardown(() => { L.destroy(); rmSync(dir, { recursive: true, force: true }); });
    const up = L.ns('up');
    const srv = L.ns('srv');
    const cl = L.ns('cl');
    L.link({ ns: up, ifname: 'v0', cidr: '192.0.2.1/24' }, { ns: srv, ifname: 'm0', cidr: '192.0.2.2/24' });
    L.link({ ns: srv, ifname: 'p0', cidr: '10.77.0.1/24' }, { ns: cl, ifname: 'q0', cidr: '10.77.0.50/24' });
    L.exec(cl, 'ip', ['addr', 'add', '10.77.0.51/24', 'dev', 'q0']);
    const base = 'http: { listen: "0.0.0.0:5240" }\ninterfaces: [p0]\nlogLevel: info\n';

    // A. The upstream is not there yet: metalbox must not pretend.
    let ntp = await startNtp(t, srv, `${base}ntp: { upstream: [192.0.2.1], pollSeconds: 8 }\n`);
    let st = await ntp.status();
    t.same([st.synchronised, st.leap, st.stratum], [false, 3, 16], 'unsynchronised: leap 3, stratum 16');
    const digA = await ntpdig(cl, '10.77.0.1');
    t.not(digA.code, 0, 'ntpdig rejects an unsynchronised metalbox');
    t.equal(digA.json, undefined, 'and reports no time');
    t.match(digA.out, /10\.77\.0\.1/, `it heard the server (${digA.out.trim().replace(/\n/g, ' | ')})`);
    const sntpA = await run(cl, 'sntp', ['-t', '2', '10.77.0.1']);
    t.not(sntpA.code, 0, `sntp rejects it too (${sntpA.out.trim().replace(/\n/g, ' | ')})`);
    const answeredBefore = (await ntp.status()).requests.answered;
    const qA = await chronyQuery(cl, dir, 'qa', '10.77.0.1', 8);
    t.not(qA.code, 0, `chronyd -Q will not sync to it (${qA.out.trim().split('\n').pop()})`);
    t.equal(qA.offset, undefined, 'and reports no offset');
    // chrony logs no measurement for a packet that fails its tests: what it got is counted on our side.
    t.equal(qA.rows.length, 0, 'chrony took no measurement from the unsynchronised replies');
    st = await ntp.status();
    t.ok(st.requests.answered - answeredBefore >= 2, `chronyd was answered (${st.requests.answered - answeredBefore} replies, leap 3 / stratum 16) and refused them`);
    t.equal(st.upstreams[0]!.reach, 0, 'the upstream is unreachable');
    await ntp.stop();

    // B. chronyd upstream at stratum 3 (clock untouched: -x).
    writeFileSync(join(dir, 'up.conf'), `local stratum 3\nallow all\ncmdport 0\nbindcmdaddress /\npidfile ${join(dir, 'up.pid')}\n`);
    const chrony = L.spawn(up, 'chronyd', ['-x', '-d', '-u', 'root', '-f', join(dir, 'up.conf')]);
    let chronyLog = '';
    chrony.stderr!.setEncoding('utf8').on('data', (d: string) => { chronyLog += d; });
    chrony.stdout!.setEncoding('utf8').on('data', (d: string) => { chronyLog += d; });
    await new Promise((r) => setTimeout(r, 1000));
    t.equal(chrony.exitCode, null, `upstream chronyd runs ${chronyLog}`);

    ntp = await startNtp(t, srv, `${base}ntp: { upstream: [192.0.2.1], pollSeconds: 8 }\n`);
    for (let i = 0; i < 60 && !(st = await ntp.status()).synchronised; i++) await new Promise((r) => setTimeout(r, 500));
    t.equal(st.synchronised, true, 'metalbox synchronised to the upstream');
    t.same([st.source, st.stratum, st.leap, st.referenceId], ['upstream', 4, 0, '192.0.2.1'], 'serves stratum 4 with the upstream as reference');
    // One host clock: the true offset is 0, and a measurement errs by at most half its round trip.
    t.ok(Math.abs(st.offsetSeconds) <= st.upstreams[0]!.delaySeconds! / 2 + 1e-4, `offset to the upstream ${st.offsetSeconds} s, delay ${st.upstreams[0]!.delaySeconds} s (same host clock)`);
    t.ok(st.upstreams[0]!.reach > 0 && st.upstreams[0]!.stratum === 3, `reach ${st.upstreams[0]!.reach.toString(2)}, upstream stratum 3`);
    const metrics = await ntp.metrics();
    t.match(metrics, /metalbox_ntp_upstream_reach\{upstream="192\.0\.2\.1"\} [1-9]/, 'reach in /metrics');
    t.match(metrics, /metalbox_ntp_upstream_stratum\{upstream="192\.0\.2\.1"\} 3/, 'upstream stratum in /metrics');
    t.match(metrics, /metalbox_ntp_upstream_offset_seconds\{upstream="192\.0\.2\.1"\} /, 'offset in /metrics');
    t.match(metrics, /metalbox_ntp_stratum 4/);

    const dig = await ntpdig(cl, '10.77.0.1');
    t.equal(dig.code, 0, `ntpdig accepts it: ${dig.out.trim()}`);
    t.equal(dig.json?.stratum, 4, 'ntpdig: stratum 4');
    t.equal(dig.json?.leap, 'no-leap');
    t.ok(dig.json !== undefined && Math.abs(dig.json.offset) < 0.5, `ntpdig: offset ${dig.json?.offset} s`);
    const sntp = await run(cl, 'sntp', ['-t', '2', '10.77.0.1']);
    const sm = /([+-]\d+\.\d+) \+\/- \S+ 10\.77\.0\.1 s(\d+) no-leap/.exec(sntp.out);
    t.equal(sntp.code, 0, `sntp: ${sntp.out.trim()}`);
    t.equal(Number(sm?.[2]), 4, 'sntp: stratum 4');
    t.ok(sm && Math.abs(Number(sm[1])) < 0.5, `sntp: offset ${sm?.[1]} s`);
    const date = await run(cl, 'ntpdate', ['-q', '10.77.0.1']);
    t.equal(date.code, 0, `ntpdate -q: ${date.out.trim()}`);
    const m = /([+-]\d+\.\d+) \+\/- \S+ 10\.77\.0\.1 s(\d+) no-leap/.exec(date.out);
    t.ok(m, 'ntpdate -q printed an offset and stratum');
    t.equal(Number(m?.[2]), 4, 'ntpdate -q: stratum 4');
    t.ok(m && Math.abs(Number(m[1])) < 0.5, `ntpdate -q: offset ${m?.[1]} s`);
    const q = await chronyQuery(cl, dir, 'qb', '10.77.0.1', 20);
    t.equal(q.code, 0, `chronyd -Q synchronised to metalbox (${q.out.trim().split('\n').filter((l) => /wrong|Timeout/.test(l)).join('')})`);
    t.ok(q.offset !== undefined && Math.abs(q.offset) < 0.5, `chronyd -Q: offset ${q.offset} s`);
    t.ok(q.rows.length > 0 && q.rows.every((r) => r.stratum === 4 && r.leap === 'N'), `chronyd measured stratum 4, no leap (${q.rows.map((r) => `${r.leap} ${r.stratum} ${r.tests}`).join(', ')})`);
    t.ok(q.rows.some((r) => r.tests === '111 111 1111'), 'and every chrony packet test passed');

    // C. A flood from one address: RATE kisses, drops; the neighbour is unaffected.
    const flood = await run(cl, process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/ntp-flood.ts'), '10.77.0.51', '10.77.0.1', '300']);
    const f = JSON.parse(flood.out.split('\n').find((l) => l.startsWith('{')) ?? '{}') as { sent: number; answered: number; kisses: Record<string, number>; unmatched: number };
    t.equal(f.sent, 300, 'the flood was sent');
    t.ok(f.answered >= 1 && f.answered <= 20, `the burst (16) answered, little more (${f.answered})`);
    t.ok((f.kisses.RATE ?? 0) >= 1 && (f.kisses.RATE ?? 0) <= 3, `RATE kisses (${f.kisses.RATE ?? 0}), one a second`);
    st = await ntp.status();
    t.ok(st.requests.rateDropped >= 250, `the rest dropped (${st.requests.rateDropped})`);
    const neighbour = await ntpdig(cl, '10.77.0.1');
    t.equal(neighbour.json?.stratum, 4, 'another address is still served');
    await ntp.stop();

    // D. No upstream; the operator chose to serve the local clock at stratum 9.
    ntp = await startNtp(t, srv, `${base}ntp: { localStratum: 9 }\n`);
    st = await ntp.status();
    t.same([st.synchronised, st.source, st.stratum, st.referenceId], [true, 'local', 9, '127.127.1.1'], 'local stratum 9');
    const digD = await ntpdig(cl, '10.77.0.1');
    t.equal(digD.json?.stratum, 9, `ntpdig: stratum 9 (${digD.out.trim()})`);
    const qD = await chronyQuery(cl, dir, 'qd', '10.77.0.1', 20);
    t.equal(qD.code, 0, 'chronyd -Q accepts the local stratum');
    t.ok(qD.rows.length > 0 && qD.rows.every((r) => r.stratum === 9), 'at stratum 9');
    await ntp.stop();
    t.notMatch(ntp.stderr(), /"level":(50|60)/, 'no error logged');
  });
}
