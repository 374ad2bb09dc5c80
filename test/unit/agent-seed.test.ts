// The NoCloud seed, read back by PyYAML's safe_load: the YAML 1.1 loader cloud-init itself uses.
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { buildSeed, SEED_DIR } from '../../src/agent/seed.ts';
import type { DeployTask } from '../../src/agent/task.ts';

/** Debian's python3 with python3-yaml (cloud-init's own YAML loader). */
function pyyaml(text: string): unknown {
  const out = execFileSync('/usr/bin/python3', ['-c', 'import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))'], { input: text, encoding: 'utf8' });
  return JSON.parse(out) as unknown;
}

const task: DeployTask = {
  imageUrl: 'http://10.77.0.1:5240/boot/assets/img/rootfs', sha256: '0'.repeat(64), compression: 'zstd', disk: 'auto',
  hostname: 'node1.rack.internal',
  sshKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example', 'ssh-rsa AAAAB3Nza no: colon # hash'],
  phoneHomeUrl: 'http://10.77.0.1:5240/boot/agent/v1/phone-home/ph-Tok_1',
  // All digits: YAML 1.1 would read an unquoted 52:54:00:12:34:56 as the base-60 integer 41135085296.
  network: { mac: '52:54:00:12:34:56' },
};

t.test('user-data is cloud-config with hostname, keys, growpart and phone_home', async (t) => {
  const seed = buildSeed(task, 'i-0001');
  t.equal(SEED_DIR, 'var/lib/cloud/seed/nocloud');
  t.ok(seed['user-data'].startsWith('#cloud-config\n'), 'first line');
  t.same(pyyaml(seed['user-data']), {
    hostname: 'node1',
    fqdn: 'node1.rack.internal',
    preserve_hostname: false,
    ssh_authorized_keys: task.sshKeys,
    growpart: { mode: 'auto', devices: ['/'] },
    resize_rootfs: true,
    phone_home: { url: task.phoneHomeUrl, post: ['instance_id', 'hostname'], tries: 10 },
  });
  t.same(pyyaml(seed['meta-data']), { 'instance-id': 'i-0001', 'local-hostname': 'node1' });
});

t.test('network-config v2: the boot NIC by MAC with DHCP, the MAC a string under YAML 1.1', async (t) => {
  const seed = buildSeed(task, 'i-0001');
  t.same(pyyaml(seed['network-config']), { version: 2, ethernets: { boot: { match: { macaddress: '52:54:00:12:34:56' }, dhcp4: true } } });
  t.same(pyyaml('m: 52:54:00:12:34:56'), { m: 41135085296 }, 'what an unquoted MAC would have become');
});

t.test('network-config v2 with a static address, gateway and DNS', async (t) => {
  const seed = buildSeed({ ...task, hostname: 'node2', network: { mac: 'aa:bb:cc:dd:ee:ff', address: '10.77.0.20/24', gateway: '10.77.0.1', nameservers: ['10.77.0.1', '10.77.0.2'], search: ['rack.internal'] } }, 'i-2');
  t.same(pyyaml(seed['network-config']), {
    version: 2,
    ethernets: {
      boot: {
        match: { macaddress: 'aa:bb:cc:dd:ee:ff' },
        dhcp4: false,
        addresses: ['10.77.0.20/24'],
        routes: [{ to: '0.0.0.0/0', via: '10.77.0.1' }],
        nameservers: { addresses: ['10.77.0.1', '10.77.0.2'], search: ['rack.internal'] },
      },
    },
  });
  const user = pyyaml(seed['user-data']) as Record<string, unknown>;
  t.equal(user.hostname, 'node2');
  t.notOk('fqdn' in user, 'no fqdn for a short name');
});

t.test('values that YAML would otherwise reinterpret stay strings', async (t) => {
  for (const hostname of ['no', 'on', 'yes', '0x1f', '1e3', 'null', '12']) {
    const user = pyyaml(buildSeed({ ...task, hostname }, 'i-3')['user-data']) as Record<string, unknown>;
    t.equal(user.hostname, hostname, hostname);
  }
});
