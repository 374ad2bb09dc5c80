// The lifecycle's in-band BMC user and rescue SSH, end to end with real peers: a real `metalbox serve` (main.ts's
// wiring: the agent API, the BMC service, the lifecycle runner), a QEMU VM whose BMC is OpenIPMI's ipmi_sim
// (QEMU's ipmi-bmc-extern + isa-ipmi-kcs, so the guest sees it as /dev/ipmi0 through ipmi_si), booting the
// ephemeral image with the agent directly (-kernel/-initrd, user networking: QEMU's NAT reaches the appliance at
// its address on the client namespace's veth, which is what the iPXE script names as metalbox.url).
//
//   ns <tag>-cli: metalbox serve (HTTP 0.0.0.0:5240, HTTPS 127.0.0.1:5443), QEMU, ipmitool, ssh; 10.97.0.1
//        | veth
//   ns <tag>-bmc: ipmi_sim: LAN 10.97.0.10:623, and the VM's KCS interface on 10.97.0.10:9002 (codec VM)
//
// 1. Commission with bmcUser.create: the agent finds the LAN channel and its address in-band, makes the metalbox
//    user with a random password, reports it in done; the appliance enrols the BMC for the machine (password
//    sealed at rest, never in a log), then powers the machine through it (lifecycle effects, the API), and
//    ipmitool logs in over RMCP+ with the password unsealed from the state dir.
// 2. Rescue with SSH keys (a second, direct-kernel boot): the agent starts dropbear with the request's key; ssh
//    (QEMU hostfwd) logs in as root with it, and only with it; the appliance's timeline has the address and the
//    login.
import t from 'tap';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openSecretBox } from '../../src/bmc/secrets.ts';
import { aadOf } from '../../src/services/bmc/service.ts';
import { openLevelStore } from '../../src/store/level-store.ts';
import { ensureBinary } from '../helpers/binary.ts';
import { ensureEphemeral, secs, watchConsole, type Console } from '../helpers/ephemeral.ts';
import { haveIpmiTools, startIpmiSims, type IpmiSimLab, type SimBmc } from '../helpers/ipmi-sim.ts';
import { canBuildLab, sh } from '../helpers/netns.ts';
import { nsFetch, type NsResponse } from '../helpers/ns-http.ts';
import { ROOT } from '../helpers/process.ts';

const execFileAsync = promisify(execFile);
const MAC = '52:54:00:97:00:21';
const HTTP_PORT = 5240;
const HTTPS_PORT = 5443;
const KCS_PORT = 9002;
const SSH_FWD = 2222;
const ADMIN_PASSWORD = 'inband-admin-password-1';

const lab = canBuildLab();
const tools = haveIpmiTools();
const missing = ['qemu-system-x86_64', 'ssh', 'ssh-keygen', 'dropbear', 'dropbearkey'].filter((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0);

// A stale binary or image is built first (a few minutes at most), then two TCG boots.
t.setTimeout(1_500_000);
if (!lab.ok) t.fail(`cannot build the lab: ${lab.why}`);
else if (!tools.ok) t.fail(tools.why);
else if (missing.length > 0) t.fail(`missing: ${missing.join(', ')} (.ci/run installs qemu-system-x86, openssh-client, dropbear-bin)`);
else {
  t.test('in-band BMC user at commissioning, enrolled and used; rescue over SSH', { timeout: 1_400_000 }, async (t) => {
    const built = ensureBinary();
    t.comment(built === '' ? 'dist/metalbox is up to date' : built);
    const img = await ensureEphemeral({ agent: true });
    t.comment(`ephemeral image --agent ${img.key} (${img.manifest.initrd_bytes} bytes initrd) in ${img.seconds.toFixed(1)} s`);
    t.match(img.manifest.modules, /ipmi_si ipmi_devintf/, 'the image carries the IPMI drivers');

    const dir = mkdtempSync(join(tmpdir(), 'mbx-inband-'));
    const vms: Console[] = [];
    const processes: ChildProcess[] = [];
    const held: { sims?: IpmiSimLab } = {};
    // Last in, first out by hand: the VMs and metalbox before the namespaces they run in.
    t.teardown(() => {
      for (const vm of vms) vm.kill();
      for (const p of processes) if (p.exitCode === null) p.kill('SIGKILL');
      held.sims?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    // The BMC: ipmi_sim on the BMC network, its system interface for QEMU on the same address.
    const sims = held.sims = await startIpmiSims({ count: 1, tag: 'mbxib', subnet: 97, extraConfig: ({ address }) => [`  serial 15 ${address} ${KCS_PORT} codec VM`] });
    const bmc: SimBmc = sims.bmcs[0]!;
    const ns = sims.clientNs;
    // Its LAN address as an operator would have set it (ipmi_sim starts with 0.0.0.0 in parameter 3).
    for (const args of [['lan', 'set', '1', 'ipsrc', 'static'], ['lan', 'set', '1', 'ipaddr', bmc.address]]) {
      const r = await sims.ipmitool(bmc, args);
      t.equal(r.code, 0, `ipmitool ${args.join(' ')}: ${r.stderr}`);
    }
    t.match((await sims.ipmitool(bmc, ['lan', 'print', '1'])).stdout, new RegExp(`IP Address\\s+: ${bmc.address.replaceAll('.', '\\.')}`));

    // The appliance: users and the ephemeral image registered offline, then serve in the client namespace.
    const state = join(dir, 'state');
    const config = join(dir, 'metalbox.yaml');
    writeFileSync(config, [
      `stateDir: ${state}`,
      `http: { listen: "0.0.0.0:${HTTP_PORT}" }`,
      `https: { listen: "127.0.0.1:${HTTPS_PORT}" }`,
      'bmc: { pollSeconds: 0, timeoutSeconds: 10 }',
      'boot: { ephemeralImage: ephemeral }',
      '',
    ].join('\n'));
    const cli = async (...args: string[]) => {
      const r = await execFileAsync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), ...args, '--config', config],
        { cwd: ROOT, env: { ...process.env, NOTIFY_SOCKET: '', METALBOX_PASSWORD: ADMIN_PASSWORD }, timeout: 120_000 }).catch((e: { stdout?: string; stderr?: string; message: string }) => {
        throw new Error(`metalbox ${args.join(' ')}: ${e.stderr ?? e.message}`);
      });
      return r.stdout;
    };
    await cli('users', 'create', 'admin', '--admin');
    await cli('images', 'add', 'ephemeral', '--kernel', img.kernel, '--initrd', img.initrd);
    let serveOut = '';
    const serve = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', config],
      { cwd: ROOT, env: { ...process.env, NOTIFY_SOCKET: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    processes.push(serve);
    serve.stdout!.setEncoding('utf8').on('data', (d: string) => { serveOut += d; });
    serve.stderr!.setEncoding('utf8').on('data', (d: string) => { serveOut += d; });
    const until = async (what: string, ok: () => boolean | Promise<boolean>, ms: number) => {
      const end = performance.now() + ms;
      while (!(await ok())) {
        if (performance.now() > end) throw new Error(`timed out waiting for ${what}; metalbox log tail:\n${serveOut.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    };
    await until('metalbox ready', () => serveOut.includes('"msg":"metalbox ready"'), 120_000);

    // Logged in with a session (cookie + CSRF), as the console does.
    const base = `https://127.0.0.1:${HTTPS_PORT}`;
    const login = await nsFetch(ns, `${base}/api/v1/login`, { method: 'POST', body: { username: 'admin', password: ADMIN_PASSWORD } });
    t.equal(login.status, 200, login.body);
    const cookie = login.setCookie[0]!.split(';')[0]!;
    const csrf = login.json<{ csrfToken: string }>().csrfToken;
    const api = async (method: string, path: string, body?: unknown): Promise<NsResponse> =>
      nsFetch(ns, `${base}${path}`, { method, headers: { cookie, 'x-csrf-token': csrf }, ...(body !== undefined ? { body } : {}) });
    const must = async (method: string, path: string, body?: unknown) => {
      const r = await api(method, path, body);
      if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${r.body}`);
      return r.json<Record<string, unknown>>();
    };
    const events = async (id: string) => (await must('GET', `/api/v1/machines/${id}/events?limit=500`)).items as { type: string; data: Record<string, unknown> }[];

    /**
     * The kernel arguments of the machine's iPXE script (a fresh per-boot token), asked for as the machine would:
     * at the appliance's provisioning address, which the script then names as metalbox.url.
     */
    const bootArgs = async (): Promise<string> => {
      const script = await nsFetch(ns, `http://${sims.clientAddress}:${HTTP_PORT}/boot/${MAC.replaceAll(':', '-')}.ipxe`);
      const line = script.body.split('\n').find((l) => l.startsWith('kernel '));
      if (!line) throw new Error(`no kernel line in the script:\n${script.body}`);
      return line.replace(/ \|\| goto failed$/, '').split(' ').slice(2).join(' ');
    };
    const qemu = (append: string, extra: string[], nic: string): Console => {
      const child = spawn('ip', ['netns', 'exec', ns, 'qemu-system-x86_64', '-accel', 'tcg', '-nographic', '-monitor', 'none', '-no-reboot', '-m', '1024',
        '-kernel', img.kernel, '-initrd', img.initrd, '-append', append, '-nic', nic, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
      const vm = watchConsole(child);
      vms.push(vm);
      return vm;
    };

    const created = await must('POST', '/api/v1/machines', { mac: MAC });
    const id = created.id as string;

    await t.test('commission: the agent makes the BMC user in-band; the appliance enrols it and powers the machine with it', async (t) => {
      await must('POST', `/api/v1/machines/${id}/actions/commission`, {});
      const args = await bootArgs();
      t.match(args, /metalbox\.url=http:\/\/10\.97\.0\.1:5240 metalbox\.token=\S+ metalbox\.mac=52:54:00:97:00:21 metalbox\.mode=commission/);
      const vm = qemu(args, [
        '-chardev', `socket,id=ipmi0,host=${bmc.address},port=${KCS_PORT},reconnect=10`,
        '-device', 'ipmi-bmc-extern,chardev=ipmi0,id=bmc0', '-device', 'isa-ipmi-kcs,bmc=bmc0',
      ], `user,model=virtio-net-pci,mac=${MAC}`);
      const done = await vm.waitFor(/METALBOX-AGENT-DONE mode=commission ok=(true|false).*/, 300_000);
      t.equal(done.match[1], 'true', `the agent succeeded: ${done.text}\n${vm.output().split('\n').filter((l) => l.includes('metalbox-agent')).join('\n')}`);
      const made = /BMC user "metalbox" \(id (\d+)\) with ADMINISTRATOR on LAN channel 1, BMC at (\S+) in (\d+) ms/.exec(vm.output());
      t.ok(made, 'the agent says which user it made');
      t.equal(made?.[2], bmc.address, 'the address read in-band is the LAN address');
      t.equal(await vm.exit(60_000), 0, 'then it powered the VM off');
      t.comment(`QEMU start -> METALBOX-AGENT-DONE ${secs(done.ms)} s (TCG, agent download included); the BMC user in ${made?.[3]} ms`);

      // The appliance: Ready, the address in the inventory, a BMC record for the machine without a secret in sight.
      await until('the machine to be Ready', async () => (await must('GET', `/api/v1/machines/${id}`)).state === 'Ready', 30_000);
      t.match((await must('GET', `/api/v1/machines/${id}`)).inventory, { bmc: { present: true, address: bmc.address } });
      let record: Record<string, unknown> | undefined;
      await until('the BMC to be enrolled', async () => {
        record = ((await must('GET', '/api/v1/bmcs')).items as Record<string, unknown>[] | undefined)?.find((b) => b.machineId === id);
        return record !== undefined;
      }, 30_000);
      t.match(record, { driver: 'ipmi', address: bmc.address, username: 'metalbox', hasPassword: true });
      t.notOk(JSON.stringify(record).includes('Sealed'), 'the API shows no sealed secret either');

      // Power through the enrolled BMC: the API's status (an RMCP+ session with the agent's password), then on.
      t.same(await must('GET', `/api/v1/machines/${id}/power`), { state: 'off' });
      const on = await must('POST', `/api/v1/machines/${id}/power`, { action: 'on' });
      t.match(on, { result: 'done' });
      t.ok(bmc.state().events.includes('power 1'), `ipmi_sim was told to power on (${bmc.state().events.join(', ')})`);
      const timeline = await events(id);
      t.ok(timeline.some((e) => e.type === 'boot.agent.done' && (e.data.bmc as { username?: string } | undefined)?.username === 'metalbox'), 'done recorded with the BMC user (no password)');
      t.notOk(timeline.some((e) => e.type === 'boot.agent.bmc'), 'no enrolment failure');
    });

    await t.test('rescue: the agent runs dropbear with the request\'s key; root logs in with that key only', async (t) => {
      const key = join(dir, 'id_ed25519');
      sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'rescuer@lab', '-f', key]);
      const other = join(dir, 'other_ed25519');
      sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'stranger@lab', '-f', other]);
      const pub = readFileSync(`${key}.pub`, 'utf8').trim();
      const act = await must('POST', `/api/v1/machines/${id}/actions/rescue`, { sshKeys: [pub], reason: 'e2e' });
      t.match(act.machine, { state: 'Rescue', rescue: { sshKeys: [pub] } });
      // The lifecycle runner boots it through the enrolled BMC: PXE next, power cycle.
      await until('the rescue effects on the BMC', () => bmc.state().events.some((e) => e === 'boot pxe'), 60_000);

      const args = await bootArgs();
      t.match(args, /metalbox\.mode=rescue/);
      const vm = qemu(args, [], `user,model=virtio-net-pci,mac=${MAC},hostfwd=tcp:127.0.0.1:${SSH_FWD}-:22`);
      const up = await vm.waitFor(/METALBOX-AGENT-RESCUE ssh=root@(\S+) port=22 hostkey=(\S+)/, 300_000);
      t.equal(up.match[1], '10.0.2.15', 'the address the VM has');
      t.comment(`QEMU start -> rescue SSH up ${secs(up.ms)} s (TCG)`);

      const known = join(dir, 'known_hosts');
      const ssh = (identity: string, extra: string[] = []) => spawnSync('ip', ['netns', 'exec', ns, 'ssh', '-i', identity, '-p', String(SSH_FWD),
        '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${known}`, '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=30', '-o', 'IdentitiesOnly=yes',
        ...extra, 'root@127.0.0.1', 'id -u; cat /proc/cmdline'], { encoding: 'utf8', timeout: 120_000 });
      const t0 = performance.now();
      const ok = ssh(key);
      t.equal(ok.status, 0, `ssh with the rescue key: ${ok.stderr}`);
      t.match(ok.stdout, /^0\n.*metalbox\.mode=rescue/, 'a root shell in the rescue environment');
      t.comment(`ssh login and command: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      const fp = sh('ssh-keygen', ['-l', '-f', known]);
      t.ok(fp.includes(up.match[2]!), `the host key is the one the agent announced (${up.match[2]})`);
      const stranger = ssh(other);
      t.not(stranger.status, 0, 'another key is refused');
      t.match(stranger.stderr, /Permission denied \(publickey\)/, 'and only public keys are offered');

      // The appliance's timeline: where to log in, and the login.
      await until('the rescue progress events', async () => (await events(id)).filter((e) => e.type === 'boot.agent.progress' && e.data.phase === 'rescue').length >= 2, 30_000);
      const rescue = (await events(id)).filter((e) => e.type === 'boot.agent.progress' && e.data.phase === 'rescue').map((e) => String(e.data.message));
      t.ok(rescue.some((m) => m.includes('ssh root@10.0.2.15') && m.includes(up.match[2]!)), `announced: ${rescue.join(' | ')}`);
      t.ok(rescue.some((m) => /Pubkey auth succeeded for 'root'/.test(m)), 'the login is on the timeline');

      const exit = await must('POST', `/api/v1/machines/${id}/actions/exit-rescue`, {});
      t.match(exit.machine, { state: 'Ready' });
      await until('power off through the BMC', () => bmc.state().power === 0, 60_000);
    });

    // At rest: the password only sealed. Stop serve, then read the store as an operator with the key file could.
    serve.kill('SIGTERM');
    await new Promise((r) => serve.once('exit', r));
    const logs = serveOut;
    const store = await openLevelStore(state);
    let password = '';
    let sealed = '';
    try {
      for await (const [bid, r] of store.bmcs.entries()) {
        if (r.machineId !== id) continue;
        sealed = String(r.passwordSealed);
        password = (await openSecretBox(state, { create: false })).open(sealed, aadOf(bid, 'password'));
      }
    } finally {
      await store.close();
    }
    t.match(sealed, /^v1:/, 'stored sealed');
    t.match(password, /^[\x21-\x7e]{16}$/, 'a 16-character printable password');
    const leaks = readdirSync(state, { recursive: true }).map(String).filter((f) => {
      const p = join(state, f);
      return statSync(p).isFile() && readFileSync(p).includes(password);
    });
    t.same(leaks, [], 'no file of the state dir holds the password in clear');
    t.notOk(logs.includes(password), 'metalbox never logged it');
    // ipmitool, the reference client, with the user and the password the agent reported.
    const ipmitool = (pw: string) => execFileAsync('ip', ['netns', 'exec', ns, 'ipmitool', '-I', 'lanplus', '-C', '3', '-H', bmc.address, '-U', 'metalbox', '-P', pw, 'chassis', 'power', 'status'], { timeout: 60_000 })
      .then((r) => ({ code: 0, out: r.stdout }), (e: { stdout?: string; stderr?: string }) => ({ code: 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }));
    const good = await ipmitool(password);
    t.equal(good.code, 0, good.out);
    t.match(good.out, /Chassis Power is off/, 'the state the lifecycle left (exit-rescue: off)');
    t.equal((await ipmitool(`${password}x`)).code, 1, 'a wrong password is refused (the check can fail)');
    t.ok(existsSync(join(state, 'secret.key')));
  });
}
