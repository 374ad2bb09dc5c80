// The machines API's deploy and release bodies (src/api/routes/machines.ts): what they store on the machine for
// the agent API's task (src/services/boot-http/agent-routes.ts), and what they refuse.
import t from 'tap';
import { createMemoryStore } from '../../src/store/memory-store.ts';
import { machinesApp } from '../helpers/machines-app.ts';

const MAC = '52:54:00:77:00:40';
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyExampleKeyExampleKeyExampleKey0 ops@lab';

async function readyMachine() {
  const store = createMemoryStore();
  const f = await machinesApp(store);
  t.teardown(() => f.app.close());
  await store.images.put('debian-12', { id: 'debian-12', name: 'debian-12', files: { kernel: {}, initrd: {}, rootfs: { sha256: 'a'.repeat(64), size: 1 } } });
  await store.images.put('ephemeral', { id: 'ephemeral', name: 'ephemeral', files: { kernel: {}, initrd: {} } });
  const m = await f.registry.create({ mac: MAC }, { actor: 't' });
  await f.registry.act(m.id, 'commission', { actor: 't' });
  await f.registry.act(m.id, 'commission-done', { actor: 't' });
  const act = (action: string, payload: unknown) => f.app.inject({ method: 'POST', url: `/api/v1/machines/${m.id}/actions/${action}`, headers: f.headers.operator, payload: payload as object });
  return { f, m, act };
}

t.test('deploy {image, disk, sshKeys}: stored on the machine with the transition; shown by GET', async (t) => {
  const { f, m, act } = await readyMachine();
  const res = await act('deploy', { image: 'debian-12', disk: '/dev/vda', sshKeys: [KEY], reason: 'for the lab' });
  t.equal(res.statusCode, 200, res.body);
  t.match(res.json().machine, { state: 'Deploying', deployment: { image: 'debian-12', disk: '/dev/vda', sshKeys: [KEY], requestedBy: 'operator-user', requestedAt: String } });
  t.match(f.registry.get(m.id)!.deployment, { image: 'debian-12' });
  const shown = await f.app.inject({ url: `/api/v1/machines/${m.id}`, headers: f.headers.viewer });
  t.match(shown.json(), { deployment: { image: 'debian-12', disk: '/dev/vda' } });

  // A new deploy request replaces the last one whole: nothing of the failed attempt (writtenAt) survives.
  await f.registry.amend(m.id, { set: { deployment: { image: 'debian-12', writtenAt: 'then' } } }, { actor: 't' }, { type: 't' });
  await f.registry.act(m.id, 'deploy-failed', { actor: 'agent', reason: 'x' });
  const again = await act('deploy', {});
  t.equal(again.statusCode, 200);
  t.same(Object.keys(again.json().machine.deployment).sort(), ['disk', 'requestedAt', 'requestedBy', 'sshKeys']);
  t.equal(again.json().machine.deployment.disk, 'auto', 'the default disk');
});

t.test('deploy refuses an unknown image, an image without a disk image, and malformed disks or keys', async (t) => {
  const { f, m, act } = await readyMachine();
  const unknown = await act('deploy', { image: 'debian-13' });
  t.equal(unknown.statusCode, 400);
  t.match(unknown.json(), { code: 'IMAGE_INVALID', message: /no image "debian-13"/ });
  t.match((await act('deploy', { image: 'ephemeral' })).json(), { code: 'IMAGE_INVALID', message: /no disk image/ });
  for (const body of [{ disk: 'sda; rm -rf /' }, { disk: '' }, { sshKeys: ['ssh-ed25519 AAAA\nrm -rf /'] }, { sshKeys: [''] }, { image: '../x' }, { erase: 'full' }]) {
    const res = await act('deploy', body);
    t.equal(res.statusCode, 400, JSON.stringify(body));
    t.equal(res.json().code, 'VALIDATION_FAILED');
  }
  t.equal(f.registry.get(m.id)!.state, 'Ready', 'nothing moved');
});

t.test('release {erase}: stored with the transition (quick by default); other actions take no such fields', async (t) => {
  const { f, m, act } = await readyMachine();
  await act('deploy', { image: 'debian-12' });
  await f.registry.act(m.id, 'deploy-done', { actor: 'phone-home' });
  const res = await act('release', { erase: 'full' });
  t.equal(res.statusCode, 200, res.body);
  t.equal(res.json().machine.state, 'Releasing');
  t.match(f.registry.get(m.id)!.release, { erase: 'full', requestedAt: String });
  await f.registry.act(m.id, 'release-done', { actor: 'agent' });
  t.equal((await act('release', { erase: 'everything' })).statusCode, 400);
  t.equal((await act('allocate', { image: 'debian-12' })).statusCode, 400, 'allocate takes a reason only');
  t.equal((await act('allocate', {})).statusCode, 200);
  await act('release', {});
  t.match(f.registry.get(m.id)!.release, { erase: 'quick' });
});

t.test('rescue {sshKeys}: stored with the transition; without keys the record names none (the deployment\'s are used)', async (t) => {
  const { f, m, act } = await readyMachine();
  const res = await act('rescue', { sshKeys: [KEY], reason: 'disk check' });
  t.equal(res.statusCode, 200, res.body);
  t.match(res.json().machine, { state: 'Rescue', rescue: { sshKeys: [KEY], requestedBy: 'operator-user', requestedAt: String } });
  t.equal((await act('exit-rescue', {})).statusCode, 200);
  const bare = await act('rescue', {});
  t.equal(bare.statusCode, 200);
  t.same(Object.keys(bare.json().machine.rescue).sort(), ['requestedAt', 'requestedBy'], 'a new request replaces the last one whole');
  await act('exit-rescue', {});
  for (const body of [{ sshKeys: ['ssh-ed25519 AAAA\nrm -rf /'] }, { sshKeys: [''] }, { sshKeys: 'ssh-ed25519 AAAA' }, { image: 'debian-12' }]) {
    const bad = await act('rescue', body);
    t.equal(bad.statusCode, 400, JSON.stringify(body));
    t.equal(bad.json().code, 'VALIDATION_FAILED');
  }
  t.equal(f.registry.get(m.id)!.state, 'Ready', 'refused requests moved nothing');
});
