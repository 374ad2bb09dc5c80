import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { agentConfig, parseShellEnv } from '../../src/agent/env.ts';
import { isAgentError } from '../../src/agent/errors.ts';
import { parseTask } from '../../src/agent/task.ts';

t.test('the env file as /init writes it reads back as the shell reads it', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agent-env-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const values = ['http://10.77.0.1:5240', "it's", "a'b'c", 'spaces  and\ttabs', '$HOME `x` "q" \\n', '', 'x=y=z', '#not-a-comment', 'ünï'];
  values.forEach((v, i) => writeFileSync(path.join(dir, `v${i}`), v));
  const file = path.join(dir, 'env');
  // /init (busybox ash) quotes verbatim so: value="$(... | sed "s/'/'\\\\''/g")"; echo "METALBOX_$name='$value'"
  for (const i of values.keys()) {
    execFileSync('busybox', ['sh', '-c', `value="$(cat ${dir}/v${i} | sed "s/'/'\\\\\\\\''/g")"; echo "V${i}='$value'" >>${file}`]);
  }
  const parsed = parseShellEnv(readFileSync(file, 'utf8'));
  for (const [i, v] of values.entries()) {
    const sourced = execFileSync('busybox', ['sh', '-c', `. ${file}; printf '%s' "$V${i}"`], { encoding: 'utf8' });
    t.equal(sourced, v, `sh reads V${i} back`);
    t.equal(parsed.get(`V${i}`), v, `parseShellEnv reads V${i} as sh does`);
  }
});

t.test('shell word forms, comments, export, later wins, broken lines ignored', async (t) => {
  const vars = parseShellEnv([
    '# a comment',
    'export A=plain',
    'B="dq \\"x\\" \\$y \\\\ \\n"',
    "C='sq'\"dq\"un\\ quoted # trailing comment",
    'D=first',
    'D=second',
    'E=\'open',
    'not an assignment',
    '  F=indented',
    'G=',
    '9H=bad-name',
  ].join('\n'));
  t.equal(vars.get('A'), 'plain');
  t.equal(vars.get('B'), 'dq "x" $y \\ \\n');
  t.equal(vars.get('C'), 'sqdqun quoted');
  t.equal(vars.get('D'), 'second');
  t.notOk(vars.has('E'), 'an unterminated quote is no value');
  t.equal(vars.get('F'), 'indented');
  t.equal(vars.get('G'), '');
  t.notOk(vars.has('9H'));
});

t.test('agentConfig: file values, environment wins, validation', async (t) => {
  const file = parseShellEnv("METALBOX_URL='http://10.77.0.1:5240/'\nMETALBOX_TOKEN='abc.DEF-123'\nMETALBOX_MODE='deploy'\nMETALBOX_MAC='52-54-00-77-00-10'\nMETALBOX_IF='eth0'\nMETALBOX_HOLD='1'\n");
  const c = agentConfig(file, {});
  t.equal(c.url, 'http://10.77.0.1:5240', 'trailing slash dropped');
  t.equal(c.token, 'abc.DEF-123');
  t.equal(c.mode, 'deploy');
  t.equal(c.mac, '52:54:00:77:00:10');
  t.equal(c.ifname, 'eth0');
  t.equal(c.hold, true);
  t.equal(agentConfig(file, { METALBOX_MODE: 'release' }).mode, 'release', 'the environment wins');
  t.equal(agentConfig(parseShellEnv("METALBOX_URL='http://a:1'\nMETALBOX_TOKEN=t"), {}).mode, undefined);

  const bad: [Record<string, string>, RegExp][] = [
    [{ METALBOX_TOKEN: 't' }, /METALBOX_URL is not set/],
    [{ METALBOX_URL: 'http://a:1' }, /METALBOX_TOKEN is not set/],
    [{ METALBOX_URL: 'not a url', METALBOX_TOKEN: 't' }, /not a URL/],
    [{ METALBOX_URL: 'ftp://a', METALBOX_TOKEN: 't' }, /http/],
    [{ METALBOX_URL: 'http://u:p@a', METALBOX_TOKEN: 't' }, /credentials/],
    [{ METALBOX_URL: 'http://a', METALBOX_TOKEN: 'sec ret' }, /bearer token/],
    [{ METALBOX_URL: 'http://a', METALBOX_TOKEN: 'secret\r\nX-Evil: 1' }, /bearer token/],
    [{ METALBOX_URL: 'http://a', METALBOX_TOKEN: 't', METALBOX_MODE: 'explode' }, /METALBOX_MODE/],
  ];
  for (const [env, re] of bad) {
    try {
      agentConfig(new Map(), env);
      t.fail(`accepted ${JSON.stringify(env)}`);
    } catch (err) {
      t.ok(isAgentError(err, 'AGENT_ENV_INVALID'), re.source);
      t.match((err as Error).message, re);
      t.notMatch((err as Error).message, /secret/, 'the token is never in a message');
    }
  }
});

const DEPLOY = {
  imageUrl: '/boot/assets/jammy/rootfs', sha256: 'A'.repeat(64), size: 1234, compression: 'zstd', disk: 'auto',
  hostname: 'node1.rack.internal', sshKeys: ['ssh-ed25519 AAAAC3Nz user@host'], phoneHomeUrl: '/boot/agent/v1/phone-home/ph-tok',
  network: { mac: '52:54:00:77:00:10', address: '10.77.0.20/24', gateway: '10.77.0.1', nameservers: ['10.77.0.1'], search: ['rack.internal'] },
  instanceId: 'i-123',
};

t.test('parseTask: every mode, relative URLs resolved against the appliance', async (t) => {
  const base = 'http://10.77.0.1:5240';
  t.same(parseTask({ mode: 'none' }, base), { mode: 'none' });
  t.same(parseTask({ mode: 'rescue' }, base), { mode: 'rescue', rescue: { sshKeys: [] } }, 'an older appliance: no keys');
  t.same(parseTask({ mode: 'rescue', rescue: { sshKeys: ['ssh-ed25519 AAAA a@b'] } }, base), { mode: 'rescue', rescue: { sshKeys: ['ssh-ed25519 AAAA a@b'] } });
  t.throws(() => parseTask({ mode: 'rescue', rescue: { sshKeys: 'ssh-ed25519 AAAA' } }, base), { code: 'AGENT_TASK_INVALID', message: /rescue\.sshKeys must be a list/ });
  t.throws(() => parseTask({ mode: 'rescue', rescue: [] }, base), { code: 'AGENT_TASK_INVALID', message: /rescue must be an object/ });
  t.same(parseTask({ mode: 'commission' }, base), { mode: 'commission' });
  t.same(parseTask({ mode: 'commission', bmcUser: { create: true } }, base), { mode: 'commission', bmcUser: { create: true } });
  t.same(parseTask({ mode: 'release' }, base), { mode: 'release', release: { erase: 'none' } });
  t.same(parseTask({ mode: 'release', release: { erase: 'full' } }, base), { mode: 'release', release: { erase: 'full' } });
  const d = parseTask({ mode: 'deploy', deploy: DEPLOY }, base);
  t.equal(d.mode, 'deploy');
  if (d.mode !== 'deploy') return;
  t.equal(d.deploy.imageUrl, 'http://10.77.0.1:5240/boot/assets/jammy/rootfs');
  t.equal(d.deploy.phoneHomeUrl, 'http://10.77.0.1:5240/boot/agent/v1/phone-home/ph-tok');
  t.equal(d.deploy.sha256, 'a'.repeat(64), 'lower-cased');
  t.same(d.deploy.network, DEPLOY.network);
  const minimal = parseTask({ mode: 'deploy', deploy: { ...DEPLOY, size: undefined, compression: undefined, sshKeys: undefined, instanceId: undefined, network: { mac: '52-54-00-77-00-10' } } }, base);
  if (minimal.mode !== 'deploy') return;
  t.equal(minimal.deploy.compression, 'none');
  t.same(minimal.deploy.sshKeys, []);
  t.same(minimal.deploy.network, { mac: '52:54:00:77:00:10' });
  t.notOk('size' in minimal.deploy);
});

t.test('parseTask refuses what it cannot do safely', async (t) => {
  const base = 'http://a';
  const deploy = (patch: Record<string, unknown>) => ({ mode: 'deploy', deploy: { ...DEPLOY, ...patch } });
  const cases: [unknown, RegExp][] = [
    [null, /body/], [[], /body/], [{ mode: 'format-c' }, /mode/], [{}, /mode/],
    [{ mode: 'release', release: { erase: 'shred' } }, /release.erase/],
    [{ mode: 'commission', bmcUser: { create: 'yes' } }, /bmcUser/],
    [{ mode: 'deploy' }, /deploy must be an object/],
    [deploy({ sha256: 'abc' }), /sha256/],
    [deploy({ size: -1 }), /size/], [deploy({ size: 1.5 }), /size/],
    [deploy({ compression: 'bzip2' }), /compression/],
    [deploy({ hostname: 'bad_name' }), /hostname/], [deploy({ hostname: '-x' }), /hostname/],
    [deploy({ sshKeys: ['ok', 'two\nlines'] }), /sshKeys\[1\]/], [deploy({ sshKeys: 'ssh-rsa x' }), /sshKeys/],
    [deploy({ imageUrl: 'file:///etc/shadow' }), /imageUrl/], [deploy({ phoneHomeUrl: 'gopher://x' }), /phoneHomeUrl/],
    [deploy({ disk: '' }), /disk/],
    [deploy({ network: {} }), /network.mac/], [deploy({ network: { mac: 'zz' } }), /network.mac/],
    [deploy({ network: { mac: '52:54:00:77:00:10', address: '10.0.0.300/24' } }), /address/],
    [deploy({ network: { mac: '52:54:00:77:00:10', address: '10.0.0.3' } }), /address/],
    [deploy({ network: { mac: '52:54:00:77:00:10', gateway: 'gw' } }), /gateway/],
    [deploy({ network: { mac: '52:54:00:77:00:10', nameservers: ['x'] } }), /nameservers\[0\]/],
    [deploy({ instanceId: 'has space' }), /instanceId/],
  ];
  for (const [body, re] of cases) {
    try {
      parseTask(body, base);
      t.fail(`accepted ${JSON.stringify(body)}`);
    } catch (err) {
      t.ok(isAgentError(err, 'AGENT_TASK_INVALID'), re.source);
      t.match((err as Error).message, re);
    }
  }
});

