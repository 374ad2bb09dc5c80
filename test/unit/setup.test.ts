// metalbox setup: the wizard driven through streams (bad answers asked again, with the config key named), the
// atomic config write, a second run that edits the config with the current values as defaults, and the
// non-interactive flags. The machine-facing actions (network, users, systemctl) are recorded, not run.
import t, { type Test } from 'tap';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { parse } from 'yaml';
import { loadConfigFile } from '../../src/config/load.ts';
import {
  checkAnswers, configObject, defaultRange, LineReader, runSetup, runWizard, subnetOf, writeFileAtomic,
  type Nic, type SetupActions, type SetupPaths,
} from '../../src/cli/setup.ts';

const NICS: Nic[] = [
  { name: 'ens3', mac: '52:54:00:12:34:56', up: true, addresses: ['10.0.2.15/24'], defaultRoute: true },
  { name: 'ens4', mac: '52:54:00:77:00:02', up: true, addresses: [], defaultRoute: false },
];
const PASSWORD = 'correct horse battery';

function scratch(t: Test): SetupPaths {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-setup-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return {
    config: join(dir, 'etc/metalbox.yaml'), stateDir: join(dir, 'state'), networkDir: join(dir, 'network'),
    runtimeNetworkDir: join(dir, 'run-network'), sshDir: join(dir, 'etc/ssh'), ephemeralDir: join(dir, 'none'),
  };
}

interface Recorded { calls: string[]; users: Map<string, string> }
function fakeActions(): SetupActions & Recorded {
  const calls: string[] = [];
  const users = new Map<string, string>();
  return {
    calls, users,
    hasUser: async (_dir, name) => users.has(name),
    network: async (iface, address) => { calls.push(`network ${iface} ${address}`); },
    admin: async (name, password) => {
      calls.push(`admin ${name} ${password === undefined ? 'keep' : 'set'}`);
      if (password === undefined) return 'kept';
      const existed = users.has(name);
      users.set(name, password);
      return existed ? 'updated' : 'created';
    },
    ephemeral: async (name) => { calls.push(`ephemeral ${name}`); },
    ssh: async (key) => { calls.push(`ssh ${key === '' ? 'off' : 'on'}`); },
    fingerprint: async () => 'AB:CD:EF',
    start: async () => { calls.push('start'); },
  };
}

/** Runs `metalbox setup` with these lines typed, one at a time as each prompt appears; returns what it printed. */
async function wizard(paths: SetupPaths, actions: SetupActions, lines: string[], argv: string[] = []): Promise<{ code: number; out: string; prompts: number }> {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  let out = '';
  let prompts = 0;
  const queue = [...lines];
  stdout.on('data', (c: Buffer) => {
    out += c.toString();
    // A prompt ends with ": " and nothing after it: answer it.
    if (/: $/.test(out)) {
      prompts++;
      const next = queue.shift();
      if (next === undefined) { stdin.end(); return; }
      out += `${next}\r\n`; // the terminal's echo
      stdin.write(`${next}\r`);
    }
  });
  const code = await runSetup(['--config', paths.config, ...argv], {
    io: { out: (s) => { out += s; }, err: (s) => { out += s; } }, env: {}, stdin, stdout, paths, actions, nics: async () => NICS,
  });
  return { code, out, prompts };
}

t.test('helpers: subnet of an address, default DHCP range', async (t) => {
  t.equal(subnetOf('10.77.0.1/24'), '10.77.0.0/24');
  t.equal(subnetOf('192.168.10.130/25'), '192.168.10.128/25');
  t.equal(subnetOf('10.77.0.1'), undefined);
  t.equal(subnetOf('10.77.0.1/31'), undefined);
  t.equal(defaultRange('10.77.0.1/24'), '10.77.0.100-10.77.0.199');
  t.equal(defaultRange('10.77.0.1/16'), '10.77.0.100-10.77.0.199');
  t.equal(defaultRange('192.168.1.1/26'), '192.168.1.32-192.168.1.62');
});

t.test('checkAnswers names the config key of each problem', async (t) => {
  const paths = (ps: { path: string }[]) => ps.map((p) => p.path);
  t.same(checkAnswers({ interface: 'ens4', address: '10.77.0.1/24', dhcpRange: '10.77.0.100-10.77.0.199' }, {}, '/s', NICS), []);
  t.same(paths(checkAnswers({ interface: 'wlan0' }, {}, '/s', NICS)), ['interfaces[0]']);
  t.same(paths(checkAnswers({ address: '10.77.0.0/24' }, {}, '/s')), ['subnets[0].cidr']);
  t.same(paths(checkAnswers({ address: '10.77.0.1/24', dhcpRange: '10.78.0.1-10.78.0.9' }, {}, '/s')), ['subnets[0].dynamicRanges[0]']);
  t.same(paths(checkAnswers({ address: '10.77.0.1/24', dhcpRange: '10.77.0.1-10.77.0.9' }, {}, '/s')), ['subnets[0].dynamicRanges[0]']);
  t.same(paths(checkAnswers({ domain: 'not a domain' }, {}, '/s')), ['domain']);
  t.same(paths(checkAnswers({ dns: ['1.1.1.1', 'dns.example'] }, {}, '/s')), ['dns.forwarders[1]']);
  t.same(paths(checkAnswers({ adminUser: 'Root!' }, {}, '/s')), ['admin']);
});

t.test('the config keeps what setup does not own', async (t) => {
  const existing = { stateDir: '/var/lib/metalbox', logLevel: 'debug', subnets: [{ cidr: '10.77.0.0/24', leaseSeconds: 600, dynamicRanges: ['10.77.0.10-10.77.0.20'] }], dns: { ttl: 30 } };
  const same = configObject({ address: '10.77.0.1/24', dhcpRange: '10.77.0.100-10.77.0.199', dns: ['9.9.9.9'] }, existing, '/x');
  t.same(same.subnets, [{ cidr: '10.77.0.0/24', leaseSeconds: 600, dynamicRanges: ['10.77.0.100-10.77.0.199'] }]);
  t.same(same.dns, { ttl: 30, forwarders: ['9.9.9.9'] });
  t.equal(same.logLevel, 'debug');
  t.equal(same.stateDir, '/var/lib/metalbox');
  // A new subnet: what belonged to the old one goes.
  const moved = configObject({ address: '10.88.0.1/24', dhcpRange: '10.88.0.100-10.88.0.199' }, existing, '/x');
  t.same(moved.subnets, [{ cidr: '10.88.0.0/24', dynamicRanges: ['10.88.0.100-10.88.0.199'] }]);
});

t.test('writeFileAtomic replaces the file whole and leaves no temp file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-atomic-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'sub/c.yaml');
  writeFileAtomic(file, 'a: 1\n');
  writeFileAtomic(file, 'a: 2\n', 0o640);
  t.equal(readFileSync(file, 'utf8'), 'a: 2\n');
  t.same(readdirSync(join(dir, 'sub')), ['c.yaml']);
});

t.test('LineReader: CR, LF and CRLF end lines; Backspace edits a hidden line', async (t) => {
  const s = new PassThrough();
  const r = new LineReader(s);
  s.write('one\rtwo\r\nthree\nse\u007fecret\r');
  // (a lone CR at the end of a chunk ends the line: the LF of a CRLF comes in the same chunk)
  s.end('tail');
  t.equal(await r.line(), 'one');
  t.equal(await r.line(), 'two');
  t.equal(await r.line(), 'three');
  t.equal(await r.line(true), 'secret');
  t.equal(await r.line(), 'tail');
  t.equal(await r.line(), undefined);
});

t.test('first run: bad answers are asked again, the config is written and loads', async (t) => {
  const paths = scratch(t);
  const actions = fakeActions();
  const r = await wizard(paths, actions, [
    'eth9',            // not an interface here
    '2',               // ens4
    '10.77.0.0/24',    // the network address
    '10.77.0.1/24',
    '10.78.0.1-10.78.0.9', // outside the subnet
    '',                // default 10.77.0.100-10.77.0.199
    '',                // gateway: none
    'bad domain',
    'lab.example',
    '1.1.1.1, nonsense',
    '1.1.1.1,9.9.9.9',
    'pool.ntp.org',
    '',                // admin
    'short',           // too short
    PASSWORD, 'different password', // mismatch
    PASSWORD, PASSWORD,
    'not a key',
    'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBhp test@host',
  ]);
  t.equal(r.code, 0, r.out);
  t.match(r.out, /1\) ens3 .* default route/);
  t.match(r.out, /interfaces\[0\]: "eth9" is not an interface of this machine/);
  t.match(r.out, /subnets\[0\]\.cidr: 10\.77\.0\.0\/24 is the network or broadcast address/);
  t.match(r.out, /subnets\[0\]\.dynamicRanges\[0\]: 10\.78\.0\.1-10\.78\.0\.9 is not inside 10\.77\.0\.0\/24/);
  t.match(r.out, /DHCP range \(first-last\) \[10\.77\.0\.100-10\.77\.0\.199\]: /);
  t.match(r.out, /domain: "bad domain" is not a domain name/);
  t.match(r.out, /dns\.forwarders\[1\]: "nonsense" is not an IPv4 address/);
  t.match(r.out, /password must be 12 to 1024 characters/);
  t.match(r.out, /the two passwords differ/);
  t.match(r.out, /not an OpenSSH public key line/);
  t.match(r.out, /console: https:\/\/10\.77\.0\.1:5443\//);
  t.match(r.out, /AB:CD:EF/);
  t.match(r.out, /METALBOX-SETUP-DONE/);
  // Every printed line fits an 80-column terminal.
  for (const line of r.out.split(/\r?\n/)) if (!line.includes(paths.config) && !line.includes("ssh-ed25519")) t.ok(line.length <= 80, `line under 80 columns: ${line}`);
  t.same(actions.calls, ['network ens4 10.77.0.1/24', 'admin admin set', 'ssh on', 'start']);
  t.equal(actions.users.get('admin'), PASSWORD);

  const config = loadConfigFile(paths.config, '/nowhere');
  t.same(config.interfaces, ['ens4']);
  t.equal(config.subnets[0]!.cidr, '10.77.0.0/24');
  t.same(config.subnets[0]!.dynamicRanges, ['10.77.0.100-10.77.0.199']);
  t.equal(config.subnets[0]!.gateway, undefined);
  t.equal(config.domain, 'lab.example');
  t.same(config.dns.forwarders, ['1.1.1.1', '9.9.9.9']);
  t.same(config.ntp.upstream, ['pool.ntp.org']);
  t.equal(config.stateDir, paths.stateDir);
  t.equal(config.http.listen, '0.0.0.0:5240');
  t.equal(config.https.listen, '0.0.0.0:5443');
  t.notOk(readFileSync(paths.config, 'utf8').includes(PASSWORD), 'no password in the config');
  t.same(readdirSync(join(paths.config, '..')), ['metalbox.yaml'], 'no temp file left');
});

t.test('a second run edits the config: current values are the defaults, the password may be kept', async (t) => {
  const paths = scratch(t);
  const actions = fakeActions();
  await wizard(paths, actions, ['ens4', '10.77.0.1/24', '', '10.77.0.254', '', '', '', '', PASSWORD, PASSWORD, '']);
  // Something the operator added by hand survives.
  const doc = parse(readFileSync(paths.config, 'utf8')) as Record<string, unknown>;
  writeFileSync(paths.config, JSON.stringify({ ...doc, logLevel: 'debug' }));
  actions.calls.length = 0;
  // Everything by default (Enter), but the DNS servers.
  const r = await wizard(paths, actions, ['', '', '', '', '', '8.8.8.8', '', '', '', '']);
  t.equal(r.code, 0, r.out);
  t.match(r.out, /Provisioning interface \(number or name\) \[ens4\]: /);
  t.match(r.out, /\[10\.77\.0\.100-10\.77\.0\.199\]/);
  t.match(r.out, /Gateway handed to machines \(none: no route\) \[10\.77\.0\.254\]: /);
  t.match(r.out, /empty: keep/);
  const config = loadConfigFile(paths.config, '/nowhere');
  t.equal(config.logLevel, 'debug');
  t.equal(config.subnets[0]!.gateway, '10.77.0.254');
  t.same(config.dns.forwarders, ['8.8.8.8']);
  t.same(actions.calls, ['network ens4 10.77.0.1/24', 'admin admin keep', 'ssh off', 'start']);
});

t.test('the input ending before the last answer is a usage error and writes nothing', async (t) => {
  const paths = scratch(t);
  await t.rejects(wizard(paths, fakeActions(), ['ens4', '10.77.0.1/24']), { code: 'CLI_USAGE' });
  t.notOk(existsSync(paths.config));
});

t.test('--non-interactive: flags, validation, --no-start', async (t) => {
  const paths = scratch(t);
  const actions = fakeActions();
  const pwFile = join(paths.stateDir, '..', 'pw');
  writeFileSync(pwFile, `${PASSWORD}\n`);
  const run = (argv: string[]) => wizard(paths, actions, [], ['--non-interactive', ...argv]);
  await t.rejects(run(['--interface', 'ens4']), { code: 'CLI_USAGE' });
  await t.rejects(run(['--interface', 'ens4', '--address', '10.77.0.1/24']), { code: 'CLI_USAGE', message: /admin-password-file/ });
  await t.rejects(run(['--interface', 'ens4', '--address', '10.77.0.1/24', '--dhcp-range', '10.77.1.1-10.77.1.2', '--admin-password-file', pwFile]),
    { code: 'CONFIG_INVALID', message: /subnets\[0\]\.dynamicRanges\[0\]/ });
  t.notOk(existsSync(paths.config));
  const r = await run(['--interface', 'ens4', '--address', '10.77.0.1/24', '--dns', '1.1.1.1', '--admin-password-file', pwFile, '--no-start', '--ssh-key', 'off']);
  t.equal(r.code, 0);
  t.same(actions.calls, ['network ens4 10.77.0.1/24', 'admin admin set', 'ssh off']);
  t.same(loadConfigFile(paths.config, '/x').subnets[0]!.dynamicRanges, ['10.77.0.100-10.77.0.199']);
  // Again, with the config's values: only what changes is given.
  actions.calls.length = 0;
  await run(['--domain', 'other.example']);
  const c = loadConfigFile(paths.config, '/x');
  t.equal(c.domain, 'other.example');
  t.same(c.dns.forwarders, ['1.1.1.1']);
  t.same(actions.calls, ['network ens4 10.77.0.1/24', 'admin admin keep', 'start']);
});

t.test('runWizard alone returns the answers', async (t) => {
  const input = new PassThrough();
  const output = new PassThrough();
  output.resume();
  input.end(['1', '192.168.5.2/24', '', 'none', '', 'none', 'none', 'ops', PASSWORD, PASSWORD, ''].join('\n') + '\n');
  const a = await runWizard({ input, output }, { nics: NICS, existing: {}, stateDir: '/s', defaults: {}, adminExists: async () => false, sshOn: false });
  t.same(a, { interface: 'ens3', address: '192.168.5.2/24', dhcpRange: '192.168.5.100-192.168.5.199', gateway: '', domain: 'rack.internal', dns: [], ntp: [], adminUser: 'ops', adminPassword: PASSWORD, sshKey: '' });
});

t.test('LineReader: Enter as a lone CR answers at once (raw mode), the next answer arrives later', async (t) => {
  const s = new PassThrough();
  const r = new LineReader(s);
  s.write('hidden\r');
  t.equal(await r.line(true), 'hidden');
  s.write('\n');  // canonical mode again: the terminal's ICRNL turned the next Enter into LF
  t.equal(await r.line(), '', 'an empty answer, not swallowed as the LF of a CRLF');
});
