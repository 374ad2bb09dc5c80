// The API commands of the CLI (`metalbox login`, `machines ...`, `tokens ...`, `completion bash`) run for real
// against a running `metalbox serve` over HTTPS with its self-signed certificate: trust on first use, the pinned
// fingerprint, --json output parsed, the documented exit codes.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, runSource } from '../helpers/process.ts';

t.test('metalbox login, machines, tokens and logout against a running server', { timeout: 240_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-api-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const httpsPort = await freePort();
  const config = join(dir, 'metalbox.yaml');
  writeFileSync(config, `stateDir: ${join(dir, 'state')}\nhttp: { listen: "127.0.0.1:${await freePort()}" }\nhttps: { listen: "127.0.0.1:${httpsPort}" }\nbmc: { pollSeconds: 0 }\n`);
  const cliFile = join(dir, 'home', 'cli.json');
  const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({ ...process.env, NOTIFY_SOCKET: '', METALBOX_CLI_FILE: cliFile, METALBOX_URL: '', METALBOX_TOKEN: '', ...extra });
  const mbx = async (args: string[], extra: NodeJS.ProcessEnv = {}) => {
    const r = runSource(args, { env: env(extra) });
    const code = await r.exited;
    return { code, out: r.stdout(), err: r.stderr() };
  };
  const pw = join(dir, 'pw');
  writeFileSync(pw, 'operator-password-1\n');
  t.equal((await mbx(['users', 'create', 'ops', '--role', 'operator', '--password-file', pw, '--config', config])).code, 0);
  writeFileSync(join(dir, 'viewer-pw'), 'viewer-password-1\n');
  t.equal((await mbx(['users', 'create', 'eve', '--role', 'viewer', '--password-file', join(dir, 'viewer-pw'), '--config', config])).code, 0);

  const server = runSource(['serve', '--config', config], { env: env() });
  t.teardown(() => { server.child.kill('SIGKILL'); });
  await server.waitFor(/"msg":"metalbox ready"/);
  const fingerprint = (/"fingerprint":"([0-9A-F:]{95})"/.exec(server.stdout()) ?? [])[1]!;
  const url = `https://127.0.0.1:${httpsPort}`;

  // Not a terminal and no fingerprint: refuse rather than trust blindly.
  const blind = await mbx(['login', '--url', url, '--user', 'ops', '--password-file', pw]);
  t.equal(blind.code, 2, blind.err);
  t.match(blind.err, new RegExp(fingerprint), 'it shows the fingerprint to compare');
  t.notOk(existsSync(cliFile));
  // A wrong pin is refused before anything is sent.
  const wrong = await mbx(['login', '--url', url, '--user', 'ops', '--password-file', pw, '--fingerprint', 'AA'.repeat(32)]);
  t.equal(wrong.code, 3);
  t.match(wrong.err, /TLS_UNUSABLE/);
  // Wrong password: exit 3 (not authenticated).
  writeFileSync(join(dir, 'bad'), 'not-the-password\n');
  const denied = await mbx(['login', '--url', url, '--user', 'ops', '--password-file', join(dir, 'bad'), '--fingerprint', fingerprint]);
  t.equal(denied.code, 3, denied.err);
  t.match(denied.err, /AUTH_INVALID/);

  const login = await mbx(['login', '--url', url, '--user', 'ops', '--password-file', pw, '--fingerprint', fingerprint.replace(/:/g, '').toLowerCase()]);
  t.equal(login.code, 0, login.err);
  t.equal(statSync(cliFile).mode & 0o777, 0o600, 'the login file holds a token: 0600');
  const saved = JSON.parse(readFileSync(cliFile, 'utf8')) as { url: string; token: string; fingerprint: string };
  t.equal(saved.fingerprint, fingerprint);
  t.match(saved.token, /^mbx_/);

  // Machines: create, list (table and JSON), show, actions with the lifecycle's rules.
  const created = await mbx(['machines', 'create', '--mac', '52:54:00:aa:00:01', '--hostname', 'node-one', '--tag', 'rack1', '--json']);
  t.equal(created.code, 0, created.err);
  const machine = JSON.parse(created.out) as { id: string; state: string; hostname: string };
  t.equal(machine.hostname, 'node-one');
  t.equal(machine.state, 'New');
  t.equal((await mbx(['machines', 'create', '--mac', '52:54:00:aa:00:02', '--json'])).code, 0);
  const dup = await mbx(['machines', 'create', '--mac', '52:54:00:aa:00:01']);
  t.equal(dup.code, 5, 'a MAC taken: conflict');
  const list = JSON.parse((await mbx(['machines', 'list', '--json'])).out) as { items: { id: string }[]; total: number };
  t.equal(list.total, 2);
  const table = await mbx(['machines', 'list', '--tag', 'rack1']);
  t.equal(table.code, 0);
  t.match(table.out, /^ID\s+HOSTNAME\s+STATE/);
  t.match(table.out, /node-one\s+New/);
  t.equal(table.out.trim().split('\n').length, 2, 'header and the one machine tagged rack1');
  const all = JSON.parse((await mbx(['machines', 'list', '--limit', '1', '--all', '--json'])).out) as { items: unknown[] };
  t.equal(all.items.length, 2, '--all follows the cursor through the pages');
  t.equal(JSON.parse((await mbx(['machines', 'show', machine.id, '--json'])).out).id, machine.id);
  const missing = await mbx(['machines', 'show', 'no-such-machine']);
  t.equal(missing.code, 4, missing.err);
  const broken = await mbx(['machines', 'mark-broken', machine.id, '--reason', 'fan noise', '--json']);
  t.equal(broken.code, 0, broken.err);
  t.equal((JSON.parse(broken.out) as { machine: { state: string } }).machine.state, 'Broken');
  const illegal = await mbx(['machines', 'deploy', machine.id]);
  t.equal(illegal.code, 5, 'an illegal lifecycle transition: 409');
  t.match(illegal.err, /LIFECYCLE_INVALID_TRANSITION/);
  // deploy's and release's own options reach the API (a bad image name is refused by its schema, 400 -> 6).
  writeFileSync(join(dir, 'keys.pub'), '# the team\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2eTestKeyForTheCliOnly000000000000000 ops@x\n\n');
  const withKeys = await mbx(['machines', 'deploy', machine.id, '--image', 'debian-12', '--disk', 'auto', '--ssh-key-file', join(dir, 'keys.pub')]);
  t.equal(withKeys.code, 6, `the options pass the API's schema; the image named is checked: ${withKeys.err}`);
  t.match(withKeys.err, /IMAGE_INVALID: no image "debian-12"/);
  const badImage = await mbx(['machines', 'deploy', machine.id, '--image', 'Not An Image']);
  t.equal(badImage.code, 6, `--image is sent: the API refuses the name (${badImage.err.trim()})`);
  t.match(badImage.err, /VALIDATION_FAILED/);
  const misplaced = await mbx(['machines', 'deploy', machine.id, '--erase', 'quick']);
  t.equal(misplaced.code, 2, '--erase goes with release only');
  t.equal((await mbx(['machines', 'release', machine.id, '--ssh-key-file', join(dir, 'keys.pub')])).code, 2, '--ssh-key-file goes with deploy and rescue only');
  const badErase = await mbx(['machines', 'release', machine.id, '--erase', 'some']);
  t.equal(badErase.code, 2, '--erase none|quick|full');
  const events = JSON.parse((await mbx(['machines', 'events', machine.id, '--json'])).out) as { items: { type: string; actor: string }[] };
  t.ok(events.items.some((e) => e.actor === 'ops'), 'the events name who acted');

  // Tokens: listed without secrets; a viewer cannot act (exit 3).
  const tokens = await mbx(['tokens', 'list', '--json']);
  t.equal(tokens.code, 0, tokens.err);
  t.notMatch(tokens.out, new RegExp(saved.token), 'no secret in the list');
  t.equal((await mbx(['login', '--url', url, '--user', 'eve', '--password-file', join(dir, 'viewer-pw'), '--fingerprint', fingerprint], { METALBOX_CLI_FILE: join(dir, 'eve.json') })).code, 0);
  const viewerAct = await mbx(['machines', 'mark-fixed', machine.id], { METALBOX_CLI_FILE: join(dir, 'eve.json') });
  t.equal(viewerAct.code, 3, viewerAct.err);
  t.match(viewerAct.err, /AUTH_FORBIDDEN/);
  // A token from the environment wins over the file; a bad one is exit 3.
  const bogus = await mbx(['machines', 'list'], { METALBOX_URL: url, METALBOX_TOKEN: 'mbx_bogus', METALBOX_FINGERPRINT: fingerprint });
  t.equal(bogus.code, 3);

  // images and users go over the API when a login is saved (else they work on the local state dir).
  const images = await mbx(['images', 'list', '--json']);
  t.equal(images.code, 0, images.err);
  t.same((JSON.parse(images.out) as { images: unknown[] }).images, []);
  const usersAsOperator = await mbx(['users', 'list']);
  t.equal(usersAsOperator.code, 3, 'managing users needs admin: refused by the API');
  t.match(usersAsOperator.err, /AUTH_FORBIDDEN/);

  // Logout revokes the token on the server.
  t.equal((await mbx(['logout'])).code, 0);
  t.notOk(existsSync(cliFile));
  const revoked = await mbx(['machines', 'list'], { METALBOX_URL: url, METALBOX_TOKEN: saved.token, METALBOX_FINGERPRINT: fingerprint });
  t.equal(revoked.code, 3, 'the token is revoked');
  const noLogin = await mbx(['machines', 'list', '--url', url]);
  t.equal(noLogin.code, 2, 'no token: usage');

  // Bash completion: a valid script that completes our commands.
  const completion = await mbx(['completion', 'bash']);
  t.equal(completion.code, 0);
  const script = join(dir, 'completion.bash');
  writeFileSync(script, completion.out);
  execFileSync('bash', ['-n', script]);
  const words = execFileSync('bash', ['-c', `source ${script}; COMP_WORDS=(metalbox mach); COMP_CWORD=1; _metalbox; echo "\${COMPREPLY[@]}"`], { encoding: 'utf8' });
  t.equal(words.trim(), 'machines');
  const verbs = execFileSync('bash', ['-c', `source ${script}; COMP_WORDS=(metalbox machines dep); COMP_CWORD=2; _metalbox; echo "\${COMPREPLY[@]}"`], { encoding: 'utf8' });
  t.equal(verbs.trim(), 'deploy');
});
