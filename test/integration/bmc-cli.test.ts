// `metalbox bmc` as an operator runs it (src/main.ts from the sources), against real BMCs on loopback:
// OpenIPMI's ipmi_sim (IPMI 2.0 / RMCP+) and the Redfish simulator (test/helpers/redfish-sim.ts, HTTPS).
// The bar: a search of the state dir, a backup file and the logs for a BMC password finds nothing.
// The passwords are added (file and environment), backed up, used by a `metalbox serve` polling every
// second with logs at trace, and then looked for everywhere in every usual encoding. Then the backup is
// restored on "another box": without the key file it must refuse, with it the BMC must answer.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createDecipheriv, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import { freePort, ROOT, run, type Running } from '../helpers/process.ts';
import { makeCertificate, startRedfishSim } from '../helpers/redfish-sim.ts';

interface IpmiSim { child: ChildProcess; port: number; powerFile: string }

/**
 * ipmi_sim on 127.0.0.1:port with one admin user and a chassis whose power lives in a file (LAB.md). Not
 * test/helpers/ipmi-sim.ts: its users have fixed passwords ("password", which every "passwordSealed" key
 * would match) and it needs the CLI inside its namespace; this search needs a password found nowhere by chance.
 */
async function startIpmiSim(dir: string, user: string, password: string): Promise<IpmiSim> {
  mkdirSync(join(dir, 'state'), { recursive: true });
  const port = await freePort();
  const powerFile = join(dir, 'power');
  writeFileSync(powerFile, '0\n');
  writeFileSync(join(dir, 'node.emu'), 'mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n');
  // ipmi_sim runs `SCRIPT get power` (expects "power:0|1") and `SCRIPT set power 0|1` (also boot ...).
  writeFileSync(join(dir, 'chassis.sh'), `#!/bin/sh\ncase "$1" in\nget) echo "power:$(cat ${powerFile})";;\nset) shift; while [ $# -gt 1 ]; do [ "$1" = power ] && echo "$2" > ${powerFile}; shift 2; done;;\nesac\n`, { mode: 0o755 });
  writeFileSync(join(dir, 'lan.conf'), [
    'name "node0"', 'set_working_mc 0x20', '  startlan 1', `    addr 127.0.0.1 ${port}`, '    priv_limit admin',
    ...['callback', 'user', 'operator', 'admin'].map((p) => `    allowed_auths_${p} none md2 md5 straight`),
    '    guid a123456789abcdefa123456789abcdef', '  endlan', `  chassis_control "${join(dir, 'chassis.sh')}"`,
    `  user 2 true "${user}" "${password}" admin 10 none md2 md5 straight`, '',
  ].join('\n'));
  const child = spawn('ipmi_sim', ['-c', join(dir, 'lan.conf'), '-f', join(dir, 'node.emu'), '-s', join(dir, 'state'), '-n'], { stdio: 'ignore' });
  // Ready when ipmitool (the reference client) gets an answer.
  for (let i = 0; i < 50; i++) {
    const r = spawnSync('ipmitool', ['-I', 'lanplus', '-C', '3', '-H', '127.0.0.1', '-p', String(port), '-U', user, '-P', password, '-N', '1', '-R', '1', 'chassis', 'power', 'status'], { encoding: 'utf8' });
    if (r.status === 0 && /Chassis Power is/.test(r.stdout)) return { child, port, powerFile };
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error('ipmi_sim did not answer');
}

/** Every form a password could take in a file or a log line. */
function forms(secret: string): Buffer[] {
  const b = Buffer.from(secret, 'utf8');
  return [
    b, Buffer.from(b.toString('base64')), Buffer.from(b.toString('base64url')), Buffer.from(b.toString('base64').replace(/=+$/, '')),
    Buffer.from(b.toString('hex')), Buffer.from(b.toString('hex').toUpperCase()), Buffer.from(secret, 'utf16le'),
    Buffer.from(encodeURIComponent(secret)), Buffer.from(JSON.stringify(secret).slice(1, -1)),
  ];
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(p));
    else if (entry.isFile()) out.push(p);
  }
  return out;
}

const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

if (!have('ipmi_sim') || !have('ipmitool') || !have('openssl')) {
  t.fail('needs ipmi_sim and ipmitool (packages openipmi, ipmitool) and openssl');
} else {
  t.test('BMC passwords are nowhere in clear: state dir, backup, logs; a backup restores with its key', { timeout: 240_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mbx-bmc-cli-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    // Distinctive, and within IPMI 2.0's 20 bytes.
    const ipmiPassword = `Ipw-${randomBytes(7).toString('hex')}`;
    const redfishPassword = `Rpw+${randomBytes(9).toString('base64url')}/é`;
    const sim = await startIpmiSim(join(dir, 'ipmi'), 'admin', ipmiPassword);
    t.teardown(() => { sim.child.kill('SIGKILL'); });
    const rf = await startRedfishSim({ certificate: await makeCertificate(), username: 'root', password: redfishPassword, powerState: 'Off' });
    t.teardown(() => rf.close());

    const state = join(dir, 'state');
    const httpPort = await freePort();
    const config = join(dir, 'metalbox.yaml');
    writeFileSync(config, `stateDir: ${state}\nhttp: { listen: "127.0.0.1:${httpPort}" }\nhttps: { listen: "127.0.0.1:0" }\nbmc: { pollSeconds: 1, timeoutSeconds: 5 }\n`);
    const outputs: string[] = [];
    const cli = async (args: string[], opts: { env?: Record<string, string>; config?: string } = {}): Promise<Running & { code: number | string }> => {
      const r = run(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), ...args, '--config', opts.config ?? config], { env: { ...process.env, NOTIFY_SOCKET: '', ...opts.env } });
      const code = await r.exited;
      outputs.push(r.stdout(), r.stderr());
      return Object.assign(r, { code });
    };

    // --- enrolment, with no server running (the CLI opens the store itself) ---
    const pwFile = join(dir, 'ipmi.pw');
    writeFileSync(pwFile, `${ipmiPassword}\n`, { mode: 0o600 });
    const add = await cli(['bmc', 'add', '--driver', 'ipmi', '--address', '127.0.0.1', '--port', String(sim.port), '--user', 'admin', '--password-file', pwFile, '--cipher-suite', '3', '--machine', 'node1']);
    t.equal(add.code, 0, add.stderr());
    t.equal(add.stdout(), `BMC node1 added (ipmi 127.0.0.1:${sim.port}, machine node1, user admin, password set)\n`);
    t.equal(statSync(join(state, 'secret.key')).mode & 0o777, 0o600, 'the key was made at first use, mode 0600');

    const probe = await cli(['bmc', 'probe', '--driver', 'redfish', '--address', '127.0.0.1', '--port', String(rf.port)]);
    t.equal(probe.code, 0, probe.stderr());
    t.match(probe.stdout(), `TLS certificate SHA-256: ${rf.fingerprint}`, 'probe shows the fingerprint to pin');
    const addRf = await cli(['bmc', 'add', '--driver', 'redfish', '--address', '127.0.0.1', '--port', String(rf.port), '--user', 'root', '--machine', 'node2'], { env: { METALBOX_BMC_PASSWORD: redfishPassword } });
    t.equal(addRf.code, 0, addRf.stderr());
    t.match(addRf.stdout(), `pinned the TLS certificate it presents now (trust on first use): ${rf.fingerprint}`);

    const refused = await cli(['bmc', 'add', '--driver', 'ipmi', '--address', '10.0.0.9', '--user', 'admin', '--password', ipmiPassword]);
    t.equal(refused.code, 2, 'a password in argv is refused');
    t.match(refused.stderr(), /CLI_USAGE: --password would show the password to every user/);

    const test = await cli(['bmc', 'test', 'node1']);
    t.equal(test.code, 0, test.stderr());
    t.match(test.stdout(), /^BMC node1: ok in \d+ ms, power off\n/);
    t.match(test.stdout(), /protocolVersion: IPMI 2\.0/);
    const show = await cli(['bmc', 'show', 'node2', '--json']);
    t.equal(show.code, 0, show.stderr());
    t.match(JSON.parse(show.stdout()), { id: 'node2', driver: 'redfish', hasPassword: true, tlsFingerprint: rf.fingerprint });

    // The password from standard input (`--password-file -`), its trailing newline dropped: the BMC still answers.
    const fromStdin = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'bmc', 'edit', 'node1', '--password-file', '-', '--config', config], { input: `${ipmiPassword}\n`, encoding: 'utf8', env: { ...process.env, NOTIFY_SOCKET: '' } });
    outputs.push(fromStdin.stdout, fromStdin.stderr);
    t.equal(fromStdin.status, 0, fromStdin.stderr);
    t.equal(fromStdin.stdout, `BMC node1 edited (ipmi 127.0.0.1:${sim.port}, machine node1, user admin, password set)\n`);
    t.equal((await cli(['bmc', 'power', 'node1', 'status'])).stdout(), 'off\n');
    for (const [args, code, message] of [
      [['bmc', 'frob'], 2, /CLI_USAGE: unknown subcommand "frob"/],
      [['bmc', 'power', 'node1', 'explode'], 2, /needs one of on, off, soft-off, cycle, reset, status/],
      [['settings', 'list', '--driver', 'ipmi'], 2, /the options of bmc \(--driver\) go with metalbox bmc/],
      [['bmc', 'power', 'nobody', 'on'], 1, /BMC_NOT_FOUND: no BMC has id or machine "nobody"/],
      [['bmc', 'add', '--driver', 'ipmi', '--address', '10.0.0.9', '--user', 'admin'], 1, /BMC_INVALID: the ipmi driver needs a password/],
    ] as const) {
      const r = await cli([...args]);
      t.equal(r.code, code, args.join(' '));
      t.match(r.stderr(), message);
    }

    const backupFile = join(dir, 'metalbox.backup');
    const backup = await cli(['backup', backupFile]);
    t.equal(backup.code, 0, backup.stderr());
    t.match(backup.stdout(), `sealed with ${join(state, 'secret.key')}, which the backup does not contain`);

    // --- a server polling every second, logs at trace; actions through its control socket ---
    const serve = run(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', config, '--log-level', 'trace'], { env: { ...process.env, NOTIFY_SOCKET: '' } });
    t.teardown(() => { serve.child.kill('SIGKILL'); });
    await serve.waitFor(/metalbox ready/, 60_000);
    const on1 = await cli(['bmc', 'power', 'node1', 'on']);
    t.equal(on1.code, 0, on1.stderr());
    t.match(on1.stdout(), /BMC node1: power on: done: power on done \(was off/);
    t.equal(readFileSync(sim.powerFile, 'utf8').trim(), '1', 'ipmi_sim powered the chassis on');
    const again = await cli(['bmc', 'power', 'node1', 'on']);
    t.match(again.stdout(), /nothing to do: the machine is already on/);
    const on2 = await cli(['bmc', 'power', 'node2', 'on']);
    t.equal(on2.code, 0, on2.stderr());
    t.equal(rf.systems.values().next().value?.resets.at(-1), 'On');
    const boot = await cli(['bmc', 'bootdev', 'node1', 'pxe']);
    t.equal(boot.code, 0, boot.stderr());
    // A change made behind metalbox's back, seen by the poller.
    writeFileSync(sim.powerFile, '0\n');
    await serve.waitFor(/"bmc":"node1","from":"on","to":"off","actor":"bmc-poller","msg":"BMC power state changed"/, 15_000);
    const status = await cli(['status']);
    t.match(JSON.parse(status.stdout()), { bmc: { bmcs: 2, unreachable: 0 } });
    const list = await cli(['bmc', 'list']);
    t.match(list.stdout(), /node1 +node1 +ipmi +127\.0\.0\.1:\d+ +off /);
    await sleep(1500); // a few more polls of both at trace level
    serve.child.kill('SIGTERM');
    t.equal(await serve.exited, 0, serve.stderr());
    const logs = serve.stdout() + serve.stderr();
    t.match(logs, /"level":"debug".*"bmc":"node1".*BMC polled/, 'the logs did record BMC work at debug');
    t.match(logs, /"level":"debug".*redfish request/, 'and the Redfish driver at debug');

    // --- the search ---
    const places: [string, Buffer][] = [];
    for (const f of filesUnder(state)) places.push([f, readFileSync(f)]);
    const backupRaw = readFileSync(backupFile);
    places.push([backupFile, backupRaw], [`${backupFile} (gunzipped)`, gunzipSync(backupRaw)]);
    places.push(['serve logs', Buffer.from(logs)], ['CLI output', Buffer.from(outputs.join('\n'))]);
    t.ok(places.length > 6, `${places.length} places searched`);
    for (const [name, pw] of [['IPMI', ipmiPassword], ['Redfish', redfishPassword]] as const) {
      const hits = places.flatMap(([where, bytes]) => forms(pw).filter((f) => bytes.includes(f)).map((f) => `${where}: ${f.toString('latin1')}`));
      t.same(hits, [], `the ${name} password is nowhere`);
    }
    // The search can find things: the sealed forms are in the backup, and open with the key file.
    const plain = gunzipSync(backupRaw).toString('utf8');
    const sealed = [...plain.matchAll(/\{"id":"(node\d)",[^{}]*?"passwordSealed":"(v1:[^"]+)"/g)].map((m) => [m[1]!, m[2]!] as const);
    t.same(sealed.map(([id]) => id).sort(), ['node1', 'node2'], 'the backup holds both passwords, sealed');
    const key = readFileSync(join(state, 'secret.key'));
    for (const [id, value] of sealed) {
      const [, nonce, ct, tag] = value.split(':');
      const d = createDecipheriv('aes-256-gcm', key, Buffer.from(nonce!, 'base64'));
      d.setAAD(Buffer.from(`bmc/${id}/password`));
      d.setAuthTag(Buffer.from(tag!, 'base64'));
      t.equal(Buffer.concat([d.update(Buffer.from(ct!, 'base64')), d.final()]).toString('utf8'), id === 'node1' ? ipmiPassword : redfishPassword, `the key file opens ${id}'s`);
    }

    // --- restore on another box: the key file must travel with the backup ---
    const state2 = join(dir, 'state2');
    const config2 = join(dir, 'other.yaml');
    writeFileSync(config2, `stateDir: ${state2}\nhttp: { listen: "127.0.0.1:${await freePort()}" }\nhttps: { listen: "127.0.0.1:0" }\nbmc: { pollSeconds: 0, timeoutSeconds: 5 }\n`);
    const restore = await cli(['restore', backupFile], { config: config2 });
    t.equal(restore.code, 0, restore.stderr());
    const noKey = await cli(['bmc', 'power', 'node1', 'status'], { config: config2 });
    t.equal(noKey.code, 1);
    t.match(noKey.stderr(), /SECRET_KEY_UNUSABLE: the secrets key \S+state2\/secret\.key is missing, but the store holds secrets sealed with it/);
    const noServe = run(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'serve', '--config', config2], { env: { ...process.env, NOTIFY_SOCKET: '' } });
    t.equal(await noServe.exited, 1, 'serve refuses to start rather than make a new key');
    t.match(noServe.stderr(), /SECRET_KEY_UNUSABLE/);
    copyFileSync(join(state, 'secret.key'), join(state2, 'secret.key'));
    chmodSync(join(state2, 'secret.key'), 0o600);
    const withKey = await cli(['bmc', 'power', 'node1', 'status'], { config: config2 });
    t.equal(withKey.code, 0, withKey.stderr());
    t.equal(withKey.stdout(), 'off\n', 'the restored BMC answers with the restored password');
    const wrongKey = join(dir, 'state3');
    mkdirSync(wrongKey, { mode: 0o700 });
    writeFileSync(join(dir, 'three.yaml'), `stateDir: ${wrongKey}\n`);
    await cli(['restore', backupFile], { config: join(dir, 'three.yaml') });
    writeFileSync(join(wrongKey, 'secret.key'), randomBytes(32), { mode: 0o600 });
    const bad = await cli(['bmc', 'test', 'node2'], { config: join(dir, 'three.yaml') });
    t.equal(bad.code, 1);
    t.match(bad.stderr(), /SECRET_KEY_UNUSABLE: a stored secret \(bmc\/node2\/password\) cannot be opened/);
  });
}
