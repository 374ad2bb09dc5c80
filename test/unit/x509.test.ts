// The self-signed certificate writer (src/lib/x509.ts): read back by node:crypto and by openssl (the
// reference DER parser), its signature verifies, and a real TLS handshake accepts it for the names it lists.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { connect, createServer } from 'node:tls';
import { createSelfSigned, fingerprintOf } from '../../src/lib/x509.ts';

t.test('node and openssl read it; the signature and the fingerprint check out', async (t) => {
  const c = createSelfSigned({ commonName: 'metalbox-test', altNames: ['localhost', '127.0.0.1', '::1', 'mbx.rack.internal'] });
  const x = new X509Certificate(c.certPem);
  t.equal(x.subject, 'CN=metalbox-test');
  t.equal(x.issuer, 'CN=metalbox-test');
  t.ok(x.verify(x.publicKey), 'self-signature verifies');
  t.equal(x.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:mbx.rack.internal');
  t.equal(x.fingerprint256, c.fingerprint);
  t.equal(fingerprintOf(c.certPem), c.fingerprint);
  t.equal(x.ca, false);
  t.ok(Date.parse(x.validTo) - Date.now() > 3600 * 86_400_000 * 0.99, 'about ten years');
  const dir = mkdtempSync(join(tmpdir(), 'mbx-x509-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'c.pem'), c.certPem);
  writeFileSync(join(dir, 'k.pem'), c.keyPem);
  const text = execFileSync('openssl', ['x509', '-in', join(dir, 'c.pem'), '-noout', '-text', '-fingerprint', '-sha256'], { encoding: 'utf8' });
  t.match(text, /Version: 3 \(0x2\)/);
  t.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
  t.match(text, /CA:FALSE/);
  t.match(text, /TLS Web Server Authentication/);
  t.match(text, new RegExp(`sha256 Fingerprint=${c.fingerprint}`));
  t.match(execFileSync('openssl', ['verify', '-CAfile', join(dir, 'c.pem'), join(dir, 'c.pem')], { encoding: 'utf8' }), /OK/);
  // The key belongs to the certificate.
  const certKey = execFileSync('openssl', ['x509', '-in', join(dir, 'c.pem'), '-noout', '-pubkey'], { encoding: 'utf8' });
  const keyPub = execFileSync('openssl', ['pkey', '-in', join(dir, 'k.pem'), '-pubout'], { encoding: 'utf8' });
  t.equal(certKey, keyPub);
});

t.test('every certificate is new: its own key, serial and fingerprint', async (t) => {
  const a = createSelfSigned({ commonName: 'a', altNames: ['localhost'] });
  const b = createSelfSigned({ commonName: 'a', altNames: ['localhost'] });
  t.not(a.fingerprint, b.fingerprint);
  t.not(new X509Certificate(a.certPem).serialNumber, new X509Certificate(b.certPem).serialNumber);
  t.not(a.keyPem, b.keyPem);
});

t.test('dates: UTCTime before 2050, GeneralizedTime after (RFC 5280 §4.1.2.5); long DER lengths', async (t) => {
  const c = createSelfSigned({ commonName: 'x'.repeat(300), altNames: Array.from({ length: 40 }, (_, i) => `host-${i}.example.org`), notBefore: new Date('2049-06-01T00:00:00Z'), days: 730 });
  const x = new X509Certificate(c.certPem);
  t.equal(new Date(x.validFrom).toISOString(), '2049-06-01T00:00:00.000Z');
  t.equal(new Date(x.validTo).toISOString(), '2051-06-01T00:00:00.000Z');
  t.equal(x.subject, `CN=${'x'.repeat(300)}`);
  t.equal(x.subjectAltName?.split(', ').length, 40);
});

t.test('bad alt names are caller bugs', async (t) => {
  t.throws(() => createSelfSigned({ commonName: 'a', altNames: [] }), TypeError);
  t.throws(() => createSelfSigned({ commonName: 'a', altNames: ['bad name'] }), TypeError);
  t.throws(() => createSelfSigned({ commonName: 'a', altNames: ['-x.example'] }), TypeError);
});

t.test('a TLS handshake accepts it for its names and refuses it for others', async (t) => {
  const c = createSelfSigned({ commonName: 'metalbox', altNames: ['localhost', '127.0.0.1'] });
  const server = createServer({ cert: c.certPem, key: c.keyPem }, (s) => s.end('hello'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const talk = (servername: string | undefined) => new Promise<string>((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca: c.certPem, ...(servername ? { servername } : {}) }, () => {
      let data = '';
      s.on('data', (d) => { data += d; }).on('end', () => resolve(data));
    });
    s.on('error', reject);
  });
  t.equal(await talk('localhost'), 'hello');
  t.equal(await talk(undefined), 'hello', 'by IP address (127.0.0.1 in subjectAltName)');
  await t.rejects(talk('other.example'), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
});
