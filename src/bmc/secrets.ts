// Secrets at rest: BMC passwords and Kg keys are sealed with AES-256-GCM before they reach the store, under a
// 32-byte key kept in `<stateDir>/secret.key` (mode 0600), outside the database. So the LevelDB files and a
// backup (`metalbox backup` copies the store, not this file) hold only ciphertext; restoring on another box
// needs the key file copied there too.
//
// Sealed form: `v1:<nonce>:<ciphertext>:<tag>`, each part base64 (RFC 4648 §4). The nonce is 12 random bytes
// (NIST SP 800-38D §8.2.2: random 96-bit IVs; far below the 2^32 invocations that section allows per key).
// The caller's `aad` (the record id and field, e.g. `bmc/node7/password`) is authenticated with the
// ciphertext (SP 800-38D §7.1 A), so a sealed value copied into another record or field does not open.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, lstat, mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { MetalboxError, errnoCode } from '../lib/errors.ts';

export const SECRET_KEY_FILE = 'secret.key';
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const VERSION = 'v1';
const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

export function secretKeyPath(stateDir: string): string {
  return join(stateDir, SECRET_KEY_FILE);
}

export class SecretBox {
  /** Use loadSecretKey/openSecretBox; the key arrives already checked. */
  constructor(private readonly key: Buffer, readonly keyFile: string) {
    if (key.length !== KEY_BYTES) throw new TypeError(`SecretBox: key must be ${KEY_BYTES} bytes`);
  }

  seal(plaintext: string, aad: string): string {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, nonce, { authTagLength: TAG_BYTES });
    cipher.setAAD(Buffer.from(aad, 'utf8'));
    const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [VERSION, nonce.toString('base64'), ct.toString('base64'), cipher.getAuthTag().toString('base64')].join(':');
  }

  /** The plaintext; SECRET_KEY_UNUSABLE when the value is malformed, sealed under another key or for another `aad`. */
  open(sealed: string, aad: string): string {
    const parts = sealed.split(':');
    const bad = (why: string) => new MetalboxError('SECRET_KEY_UNUSABLE', `a stored secret (${aad}) cannot be opened with ${this.keyFile}: ${why}`, { details: { keyFile: this.keyFile, aad } });
    if (parts.length !== 4 || parts[0] !== VERSION || !parts.slice(1).every((p) => B64.test(p))) throw bad('not a sealed value of format v1');
    const nonce = Buffer.from(parts[1]!, 'base64');
    const ct = Buffer.from(parts[2]!, 'base64');
    const tag = Buffer.from(parts[3]!, 'base64');
    if (nonce.length !== NONCE_BYTES || tag.length !== TAG_BYTES) throw bad('bad nonce or tag length');
    const decipher = createDecipheriv('aes-256-gcm', this.key, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(ct), decipher.final()]).toString('utf8');
    } catch {
      // GCM tag mismatch: another key (a restored store without its key file), another record, or damage.
      throw bad('it was sealed with another key or for another record');
    }
  }
}

/**
 * Reads `<stateDir>/secret.key`, or creates it when missing and `create` is true. Refuses (SECRET_KEY_UNUSABLE)
 * a key that is not a regular file owned by us, is readable or writable by group or others, or is not exactly
 * 32 bytes: a key others could read protects nothing, and a wrong-sized one is not ours.
 */
export async function openSecretBox(stateDir: string, options: { create: boolean }): Promise<SecretBox> {
  const file = secretKeyPath(stateDir);
  let key = await readKey(file);
  if (key === undefined) {
    if (!options.create) {
      throw new MetalboxError('SECRET_KEY_UNUSABLE', `the secrets key ${file} is missing, but the store holds secrets sealed with it: copy secret.key from the state dir the data came from (mode 0600)`, { details: { keyFile: file } });
    }
    await createKey(file);
    key = await readKey(file);
    if (key === undefined) throw new MetalboxError('SECRET_KEY_UNUSABLE', `the secrets key ${file} vanished after it was created`, { details: { keyFile: file } });
  }
  return new SecretBox(key, file);
}

async function readKey(file: string): Promise<Buffer | undefined> {
  const unusable = (why: string, cause?: unknown) => new MetalboxError('SECRET_KEY_UNUSABLE', `the secrets key ${file} ${why}`, { cause, details: { keyFile: file } });
  let st;
  try {
    st = await lstat(file);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw unusable(`cannot be read: ${errnoCode(err) ?? (err as Error).message}`, err);
  }
  if (!st.isFile()) throw unusable('is not a regular file (a symlink or a directory is refused)');
  if ((st.mode & 0o077) !== 0) throw unusable(`has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}; it must be 0600 (chmod 600 ${file})`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) throw unusable(`is owned by uid ${st.uid}, not by this process (uid ${uid})`);
  if (st.size !== KEY_BYTES) throw unusable(`is ${st.size} bytes; a key is ${KEY_BYTES}`);
  let key: Buffer;
  try {
    // O_NOFOLLOW: the file checked above must be the file read, not a symlink swapped in meanwhile.
    key = await readFile(file, { flag: constants.O_RDONLY | constants.O_NOFOLLOW });
  } catch (err) {
    throw unusable(`cannot be read: ${errnoCode(err) ?? (err as Error).message}`, err);
  }
  if (key.length !== KEY_BYTES) throw unusable(`is ${key.length} bytes; a key is ${KEY_BYTES}`);
  return key;
}

/**
 * Writes 32 random bytes to a private temporary file (created 0600, so the key is never readable by others, even
 * for a moment), fsyncs it, and links it into place: link(2) fails if the name exists, so two processes creating
 * the key at once cannot overwrite each other's (the loser reads the winner's key). Then fsyncs the directory.
 */
async function createKey(file: string): Promise<void> {
  const dir = dirname(file);
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      await fh.chmod(0o600); // against a umask that would not matter, and an ACL default that might
      await fh.writeFile(randomBytes(KEY_BYTES));
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(tmp, file);
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    const dh = await open(dir, 'r');
    try { await dh.sync(); } finally { await dh.close(); }
  } catch (err) {
    throw new MetalboxError('SECRET_KEY_UNUSABLE', `cannot create the secrets key ${file}: ${errnoCode(err) ?? (err as Error).message}`, { cause: err, details: { keyFile: file } });
  } finally {
    await rm(tmp, { force: true }).catch(() => undefined);
  }
}
