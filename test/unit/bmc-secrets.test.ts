// Secrets at rest (src/bmc/secrets.ts): the key file's creation and checks, AES-256-GCM sealing with the
// record as associated data, and the loader that refuses to make a new key for a store holding secrets.
import t from 'tap';
import { chmod, lstat, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSecretBox, secretKeyPath, SecretBox } from '../../src/bmc/secrets.ts';
import { secretBoxLoader } from '../../src/services/bmc/service.ts';
import { createMemoryStore } from '../../src/store/memory-store.ts';

async function dir(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'mbx-secrets-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  return d;
}

const code = (c: string) => ({ name: 'MetalboxError', code: c });

t.test('the key is made at first use: 32 bytes, mode 0600, and the same key afterwards', async (t) => {
  const d = await dir(t);
  const box = await openSecretBox(d, { create: true });
  const st = await lstat(secretKeyPath(d));
  t.equal(st.mode & 0o777, 0o600);
  t.equal(st.size, 32);
  t.equal(box.keyFile, join(d, 'secret.key'));
  const sealed = box.seal('hunter2', 'bmc/a/password');
  const again = await openSecretBox(d, { create: true });
  t.equal(again.open(sealed, 'bmc/a/password'), 'hunter2', 'a second open reads the same key');
  t.equal((await readFile(secretKeyPath(d))).length, 32);
});

t.test('created 0600 even under a permissive umask, and no temporary file is left', async (t) => {
  const d = await dir(t);
  const old = process.umask(0);
  try {
    await openSecretBox(d, { create: true });
  } finally {
    process.umask(old);
  }
  t.equal((await lstat(secretKeyPath(d))).mode & 0o777, 0o600);
  const { readdir } = await import('node:fs/promises');
  t.same(await readdir(d), ['secret.key']);
});

t.test('concurrent first starts agree on one key', async (t) => {
  const d = await dir(t);
  const boxes = await Promise.all(Array.from({ length: 12 }, () => openSecretBox(d, { create: true })));
  const sealed = boxes[0]!.seal('same key', 'x');
  for (const b of boxes) t.equal(b.open(sealed, 'x'), 'same key');
});

t.test('a key file that is too open, the wrong size, a symlink or missing is refused', async (t) => {
  const d = await dir(t);
  await openSecretBox(d, { create: true });
  const file = secretKeyPath(d);
  for (const mode of [0o640, 0o604, 0o644, 0o660]) {
    await chmod(file, mode);
    await t.rejects(openSecretBox(d, { create: true }), code('SECRET_KEY_UNUSABLE'), `mode ${mode.toString(8)}`);
  }
  await chmod(file, 0o600);
  const key = await readFile(file);
  await writeFile(file, Buffer.concat([key, Buffer.from([0])]));
  await t.rejects(openSecretBox(d, { create: true }), /is 33 bytes; a key is 32/);
  await writeFile(file, key.subarray(0, 16));
  await t.rejects(openSecretBox(d, { create: true }), code('SECRET_KEY_UNUSABLE'));
  await rm(file);
  const elsewhere = join(d, 'other.key');
  await writeFile(elsewhere, key, { mode: 0o600 });
  await symlink(elsewhere, file);
  await t.rejects(openSecretBox(d, { create: true }), /not a regular file/);
  await rm(file);
  await t.rejects(openSecretBox(d, { create: false }), /missing, but the store holds secrets/);
});

t.test('seal: v1 format, a fresh nonce each time, bound to its associated data, tamper-evident', async (t) => {
  const d = await dir(t);
  const box = await openSecretBox(d, { create: true });
  const a = box.seal('pässwörd ✓', 'bmc/n1/password');
  const b = box.seal('pässwörd ✓', 'bmc/n1/password');
  t.match(a, /^v1:[A-Za-z0-9+/]{16}:[A-Za-z0-9+/=]+:[A-Za-z0-9+/]{22}==$/);
  t.not(a, b, 'random nonce: the same secret seals differently');
  t.equal(box.open(a, 'bmc/n1/password'), 'pässwörd ✓');
  t.notMatch(a, /p.ssw/, 'no plaintext in the sealed form');
  t.throws(() => box.open(a, 'bmc/n2/password'), code('SECRET_KEY_UNUSABLE'), 'moved to another record');
  t.throws(() => box.open(a, 'bmc/n1/kg'), code('SECRET_KEY_UNUSABLE'), 'moved to another field');
  const [v, nonce, ct, tag] = a.split(':') as [string, string, string, string];
  const flipped = Buffer.from(ct, 'base64');
  flipped[0] = flipped[0]! ^ 1;
  t.throws(() => box.open([v, nonce, flipped.toString('base64'), tag].join(':'), 'bmc/n1/password'), /another key or for another record/);
  for (const bad of ['', 'v2:a:b:c', 'v1:AAAA:AAAA', 'v1:!!:AA:AA', `v1:${nonce}:${ct}:AAAA`]) {
    t.throws(() => box.open(bad, 'bmc/n1/password'), code('SECRET_KEY_UNUSABLE'), JSON.stringify(bad));
  }
  const other = new SecretBox(Buffer.alloc(32, 7), '/elsewhere/secret.key');
  t.throws(() => other.open(a, 'bmc/n1/password'), /cannot be opened with \/elsewhere\/secret.key/);
  t.throws(() => new SecretBox(Buffer.alloc(16), 'x'), TypeError);
  t.equal(box.open(box.seal('', 'e'), 'e'), '', 'the empty string round-trips');
});

t.test('the loader creates a key only for a store that holds no sealed secret', async (t) => {
  const d = await dir(t);
  const store = createMemoryStore();
  t.teardown(() => store.close());
  await store.bmcs.put('n1', { id: 'n1', driver: 'ipmi', address: '10.0.0.1', passwordSealed: 'v1:AAAA:AAAA:AAAA', createdAt: 'x', updatedAt: 'x' });
  await t.rejects(secretBoxLoader(store, d)(), /copy secret.key from the state dir the data came from/);
  await store.bmcs.del('n1');
  await store.bmcs.put('n2', { id: 'n2', driver: 'wol', address: '52:54:00:00:00:01', createdAt: 'x', updatedAt: 'x' });
  const box = await secretBoxLoader(store, d)();
  t.equal((await lstat(box.keyFile)).mode & 0o777, 0o600);
});
