// The HTTPS certificate: the operator's (https.certFile/keyFile), or a self-signed one made at first start in
// <stateDir>/tls and kept there, so its fingerprint - which operators and the CLI pin - survives restarts.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { hostname, networkInterfaces } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../config/schema.ts';
import { errnoCode, MetalboxError } from '../lib/errors.ts';
import { createSelfSigned, fingerprintOf } from '../lib/x509.ts';

export interface TlsMaterial {
  cert: string;
  key: string;
  /** SHA-256 of the (first) certificate, "AB:CD:..." */
  fingerprint: string;
  source: 'configured' | 'self-signed';
  certFile: string;
  /** Set when this start made the certificate. */
  created: boolean;
  validTo: string;
}

export async function loadTls(config: Config): Promise<TlsMaterial> {
  if (config.https.certFile !== undefined && config.https.keyFile !== undefined) {
    const cert = await readPem(config.https.certFile, 'https.certFile');
    const key = await readPem(config.https.keyFile, 'https.keyFile');
    return { ...checkPair(cert, key, config.https.certFile), source: 'configured', certFile: config.https.certFile, created: false };
  }
  const dir = join(config.stateDir, 'tls');
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  const existing = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw unusable(`${dir} cannot be read: ${errnoCode(err) ?? (err as Error).message}`, err);
  });
  if (existing) return { ...checkPair(existing[0], existing[1], certFile), source: 'self-signed', certFile, created: false };

  const made = createSelfSigned({ commonName: hostname() || 'metalbox', altNames: altNames() });
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // Key first: a cert.pem without its key.pem would be refused at the next start; the reverse is re-made.
    await writeAtomic(keyFile, made.keyPem, 0o600);
    await writeAtomic(certFile, made.certPem, 0o644);
  } catch (err) {
    throw unusable(`cannot write the self-signed certificate in ${dir}: ${errnoCode(err) ?? (err as Error).message}`, err);
  }
  return { ...checkPair(made.certPem, made.keyPem, certFile), source: 'self-signed', certFile, created: true };
}

/** Names a browser or the CLI may use for this box: its host name, localhost, and its IPv4 addresses. */
function altNames(): string[] {
  const names = new Set<string>(['localhost', '127.0.0.1']);
  const h = hostname();
  if (/^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(h)) names.add(h);
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4') names.add(a.address);
  }
  return [...names];
}

async function readPem(file: string, key: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new MetalboxError('TLS_UNUSABLE', `${key}: ${file} cannot be read (${errnoCode(err) ?? (err as Error).message})`, { cause: err, details: { key, file } });
  }
}

function checkPair(cert: string, key: string, certFile: string): { cert: string; key: string; fingerprint: string; validTo: string } {
  let x: X509Certificate;
  try {
    x = new X509Certificate(cert);
  } catch (err) {
    throw unusable(`${certFile} is not a PEM certificate`, err);
  }
  let ok = false;
  try {
    ok = x.checkPrivateKey(createPrivateKey(key));
  } catch (err) {
    throw unusable(`the private key for ${certFile} is not a PEM private key (or is encrypted)`, err);
  }
  if (!ok) throw unusable(`the private key does not belong to the certificate ${certFile}`);
  return { cert, key, fingerprint: fingerprintOf(x.raw), validTo: new Date(x.validTo).toISOString() };
}

async function writeAtomic(file: string, text: string, mode: number): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

function unusable(message: string, cause?: unknown): MetalboxError {
  return new MetalboxError('TLS_UNUSABLE', message, cause === undefined ? undefined : { cause });
}
