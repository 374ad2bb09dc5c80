// The HTTPS certificate: made once at first start (key 0600), kept across restarts, or the operator's own pair;
// unusable files fail with TLS_UNUSABLE naming the file.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { defaultConfig } from '../../src/config/load.ts';
import { createSelfSigned } from '../../src/lib/x509.ts';
import { loadTls } from '../../src/services/tls-files.ts';

function dir(t: { teardown(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'mbx-tls-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

t.test('self-signed: made at first start, private key 0600, the same pair after a restart', async (t) => {
  const state = join(dir(t), 'state');
  const config = defaultConfig(state);
  const first = await loadTls(config);
  t.equal(first.created, true);
  t.equal(first.source, 'self-signed');
  t.equal(statSync(join(state, 'tls', 'key.pem')).mode & 0o777, 0o600);
  t.equal(statSync(join(state, 'tls')).mode & 0o777, 0o700);
  const x = new X509Certificate(readFileSync(join(state, 'tls', 'cert.pem')));
  t.equal(x.fingerprint256, first.fingerprint);
  t.match(x.subjectAltName, /DNS:localhost/);
  t.match(x.subjectAltName, /IP Address:127\.0\.0\.1/);
  const again = await loadTls(config);
  t.equal(again.created, false);
  t.equal(again.fingerprint, first.fingerprint);
  t.equal(again.key, first.key);
});

t.test("the operator's pair is served as given; a mismatched or unreadable pair is TLS_UNUSABLE", async (t) => {
  const d = dir(t);
  const a = createSelfSigned({ commonName: 'ops', altNames: ['metalbox.example.org'] });
  const b = createSelfSigned({ commonName: 'other', altNames: ['other.example.org'] });
  writeFileSync(join(d, 'a.crt'), a.certPem);
  writeFileSync(join(d, 'a.key'), a.keyPem);
  writeFileSync(join(d, 'b.key'), b.keyPem);
  writeFileSync(join(d, 'junk.crt'), 'not a certificate');
  const config = (cert: string, key: string) => ({ ...defaultConfig(join(d, 'state')), https: { listen: '127.0.0.1:0', certFile: join(d, cert), keyFile: join(d, key) } });
  const ok = await loadTls(config('a.crt', 'a.key'));
  t.same({ source: ok.source, fingerprint: ok.fingerprint, created: ok.created }, { source: 'configured', fingerprint: a.fingerprint, created: false });
  await t.rejects(loadTls(config('a.crt', 'b.key')), { code: 'TLS_UNUSABLE', message: /does not belong to the certificate .*a\.crt/ });
  await t.rejects(loadTls(config('junk.crt', 'a.key')), { code: 'TLS_UNUSABLE', message: /junk\.crt is not a PEM certificate/ });
  await t.rejects(loadTls(config('missing.crt', 'a.key')), { code: 'TLS_UNUSABLE', message: /https\.certFile: .*missing\.crt cannot be read \(ENOENT\)/ });
  await t.rejects(loadTls(config('a.crt', 'a.crt')), { code: 'TLS_UNUSABLE', message: /not a PEM private key/ });
});
