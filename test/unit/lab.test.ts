// metalbox lab's pure parts: the BMC and VM configuration it writes, and its refusals (before anything is built).
// The rack itself is exercised end to end by test/e2e/lifecycle.test.ts.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHASSIS_SCRIPT, lanConf, vmConf } from '../../src/lab/chassis.ts';
import { labDown, labUp, type LabOptions } from '../../src/lab/rack.ts';
import { runLab } from '../../src/cli/lab.ts';

t.test('lan.conf: the system GUID least significant byte first, one admin, the chassis script', async (t) => {
  const conf = lanConf({ name: 'm0', address: '10.251.0.10', uuid: '00112233-4455-6677-8899-aabbccddeeff', chassisControl: '/x/chassis.sh /x/m0', username: 'metalbox', password: 'pw-1' });
  t.match(conf, /^ {4}guid ffeeddccbbaa99887766554433221100$/m, 'IPMI v2.0 §22.14: GUID bytes reversed');
  t.match(conf, /^ {4}addr 10\.251\.0\.10 623$/m);
  t.match(conf, /^ {2}chassis_control "\/x\/chassis\.sh \/x\/m0"$/m);
  t.match(conf, /^ {2}user 2 true "metalbox" "pw-1" admin 10 /m);
});

t.test('vm.conf: one argument per line, TCG unless asked, the MAC, UUID and disk given', async (t) => {
  const args = vmConf({ name: 'lab-m0', memoryMiB: 1024, uuid: 'u-1', mac: '52:54:00:f0:4d:00', tap: 'tap0', disk: '/d/disk.raw', serialLog: '/d/serial.log', qmp: '/d/qmp.sock', kvm: false }).trim().split('\n');
  const after = (flag: string) => args[args.indexOf(flag) + 1];
  t.equal(after('-accel'), 'tcg');
  t.equal(after('-m'), '1024');
  t.equal(after('-uuid'), 'u-1');
  t.ok(args.includes('virtio-net-pci,netdev=n0,mac=52:54:00:f0:4d:00'), 'the NIC with the MAC');
  t.ok(args.some((a) => a.startsWith('file=/d/disk.raw,if=virtio,format=raw')), 'the disk');
  t.ok(args.includes('file,id=s0,path=/d/serial.log,append=on'), 'the serial console appended across power cycles');
  t.notOk(args.includes('-boot'), 'the boot order is the chassis script\'s to add at power on');
  t.equal(vmConf({ name: 'x', memoryMiB: 512, uuid: 'u', mac: 'm', tap: 't', disk: 'd', serialLog: 's', qmp: 'q', kvm: true }).split('\n')[3], 'kvm');
  t.match(CHASSIS_SCRIPT, /pxe\) order=nc/, 'bootdev pxe: the network first, then the disk');
});

const base = (dir: string): LabOptions => ({
  dir, name: 'mbxunit', machines: 1, memoryMiB: 1024, diskGiB: 4, net: 240, port: 1, metalbox: ['true'],
  images: { ephemeral: { kernel: join(dir, 'no-kernel'), initrd: join(dir, 'no-initrd') } },
});

t.test('labUp refuses bad options before building anything, naming the option', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-lab-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cases: [Partial<LabOptions>, RegExp][] = [
    [{ name: 'Bad_Name' }, /lab name "Bad_Name"/],
    [{ name: 'much-too-long-name' }, /at most 12 characters/],
    [{ machines: 0 }, /--machines must be 1-32/],
    [{ machines: 33 }, /--machines must be 1-32/],
    [{ net: 254 }, /--net must be 1-253/],
    [{ memoryMiB: 256 }, /--memory must be at least 512/],
    [{ diskGiB: 0 }, /--disk must be 1-1024/],
  ];
  for (const [patch, re] of cases) {
    await t.rejects(labUp({ ...base(dir), ...patch }), { code: 'CLI_USAGE', message: re }, JSON.stringify(patch));
  }
});

t.test('labDown of a directory without a lab: LAB_NOT_FOUND; lab CLI usage errors exit 2', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-lab-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await t.rejects(labDown(dir), { code: 'LAB_NOT_FOUND' });
  const io = () => { const o = { out: '', err: '' }; return { o, io: { out: (s: string) => { o.out += s; }, err: (s: string) => { o.err += s; } } }; };
  for (const argv of [['up', '--machines', 'two'], ['up', '--bogus'], ['sideways'], ['down', 'extra']]) {
    const { o, io: cli } = io();
    t.equal(await runLab([...argv, '--dir', dir], {}, cli, ['true']), 2, `lab ${argv.join(' ')}: exit 2`);
    t.match(o.err, /CLI_USAGE/);
  }
  const { o, io: cli } = io();
  t.equal(await runLab(['status', '--dir', dir], {}, cli, ['true']), 1, 'status without a lab: exit 1');
  t.match(o.err, /no lab in/);
  const help = io();
  t.equal(await runLab(['help'], {}, help.io, ['true']), 0);
  t.match(help.o.out, /metalbox lab up/);
});
