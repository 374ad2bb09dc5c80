// A self-signed X.509 v3 certificate for the HTTPS console and API, made at first start without openssl:
// node:crypto makes the ECDSA P-256 key and the signature, and this file writes the DER around them
// (RFC 5280 §4.1; X.690 DER). The operator checks the certificate by its SHA-256 fingerprint, which
// `metalbox status` and the CLI print (trust on first use), so no CA is involved.
import { createHash, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';

export interface SelfSignedOptions {
  /** Subject common name, e.g. the appliance's host name. */
  commonName: string;
  /** DNS names and IP addresses for subjectAltName (RFC 5280 §4.2.1.6); clients match the host against these. */
  altNames: string[];
  /** Validity start; default now minus 1 h (clock skew between appliance and browser). */
  notBefore?: Date;
  /** Days of validity; default 3650 (the operator pins the fingerprint; expiry would only break the pin). */
  days?: number;
}

export interface SelfSigned {
  certPem: string;
  keyPem: string;
  /** SHA-256 of the DER certificate, "AB:CD:..." upper-case hex (what browsers and `openssl x509 -fingerprint -sha256` show). */
  fingerprint: string;
}

// --- DER (X.690 §8, §10) -------------------------------------------------------------------------------

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
}

const seq = (...c: Buffer[]) => tlv(0x30, ...c);
const set = (...c: Buffer[]) => tlv(0x31, ...c);
const explicit = (n: number, c: Buffer) => tlv(0xa0 | n, c);

function integer(bytes: Buffer): Buffer {
  // Minimal two's complement, positive: strip leading zeros, then add one if the top bit is set.
  let b = bytes;
  while (b.length > 1 && b[0] === 0 && (b[1]! & 0x80) === 0) b = b.subarray(1);
  if ((b[0]! & 0x80) !== 0) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [40 * parts[0]! + parts[1]!];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, 'utf8'));
const bitString = (b: Buffer) => tlv(0x03, Buffer.from([0]), b);
const octetString = (b: Buffer) => tlv(0x04, b);
const boolean = (v: boolean) => tlv(0x01, Buffer.from([v ? 0xff : 0]));

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. */
function time(d: Date): Buffer {
  const iso = d.toISOString(); // 2026-11-23T04:00:00.000Z
  const digits = iso.slice(0, 19).replace(/[-:T]/g, '');
  return d.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(`${digits.slice(2)}Z`)) : tlv(0x18, Buffer.from(`${digits}Z`));
}

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  subjectKeyIdentifier: '2.5.29.14',
} as const;

function altName(name: string): Buffer {
  const family = isIP(name);
  if (family === 4) return tlv(0x87, Buffer.from(name.split('.').map(Number))); // [7] iPAddress
  if (family === 6) {
    const groups = expandIPv6(name);
    const b = Buffer.alloc(16);
    groups.forEach((g, i) => b.writeUInt16BE(g, 2 * i));
    return tlv(0x87, b);
  }
  if (!/^(\*\.)?[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(name)) {
    throw new TypeError(`subjectAltName: ${JSON.stringify(name)} is neither an IP address nor a DNS name`);
  }
  return tlv(0x82, Buffer.from(name, 'ascii')); // [2] dNSName
}

function expandIPv6(text: string): number[] {
  const [head, tail] = text.includes('::') ? text.split('::') as [string, string] : [text, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const fill = tail === undefined ? [] : new Array<string>(8 - h.length - t.length).fill('0');
  return [...h, ...fill, ...t].map((g) => Number.parseInt(g, 16));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return seq(oid(id), ...(critical ? [boolean(true)] : []), octetString(value));
}

/** Makes a new key pair and a self-signed server certificate for it. */
export function createSelfSigned(options: SelfSignedOptions): SelfSigned {
  if (options.altNames.length === 0) throw new TypeError('createSelfSigned: at least one subjectAltName');
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const cert = certificateFor(privateKey, publicKey, options);
  return {
    certPem: new X509Certificate(cert).toString(),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    fingerprint: fingerprintOf(cert),
  };
}

function certificateFor(privateKey: KeyObject, publicKey: KeyObject, o: SelfSignedOptions): Buffer {
  const notBefore = o.notBefore ?? new Date(Date.now() - 3600_000);
  const notAfter = new Date(notBefore.getTime() + (o.days ?? 3650) * 86_400_000);
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const name = seq(set(seq(oid(OID.commonName), utf8(o.commonName))));
  const algorithm = seq(oid(OID.ecdsaWithSha256));
  // RFC 5280 §4.2.1.2: the key identifier is the SHA-1 of the subjectPublicKey BIT STRING's value (method 1).
  const keyBits = spki.subarray(spki.length - 65);
  const extensions = seq(
    extension(OID.basicConstraints, true, seq()),
    extension(OID.keyUsage, true, tlv(0x03, Buffer.from([7, 0x80]))), // digitalSignature
    extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth))),
    extension(OID.subjectKeyIdentifier, false, octetString(createHash('sha1').update(keyBits).digest())),
    extension(OID.subjectAltName, false, seq(...o.altNames.map(altName))),
  );
  const serial = randomBytes(16);
  serial[0]! &= 0x7f; // positive, at most 20 octets (§4.1.2.2)
  const tbs = seq(
    explicit(0, integer(Buffer.from([2]))), // v3
    integer(serial),
    algorithm,
    name,
    seq(time(notBefore), time(notAfter)),
    name,
    Buffer.from(spki),
    explicit(3, extensions),
  );
  const signature = sign('sha256', tbs, { key: privateKey, dsaEncoding: 'der' });
  return seq(tbs, algorithm, bitString(signature));
}

/** SHA-256 fingerprint of a DER or PEM certificate, "AB:CD:..." */
export function fingerprintOf(cert: Buffer | string): string {
  const der = typeof cert === 'string' ? new X509Certificate(cert).raw : cert;
  return createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g)!.join(':');
}
