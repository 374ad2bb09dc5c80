// Golden captures: each test/golden/dns/*.bin is a DNS message a real peer sent (capture.sh records dig's
// queries over UDP and TCP, and dnsmasq's compressed answers); the .txt beside it is formatDns's dump, checked
// in and reviewed. METALBOX_UPDATE_GOLDEN=1 rewrites the .txt files.
import t from 'tap';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { decodeDns, encodeDns, formatDns } from '../../src/protocols/dns/index.ts';

const DIR = fileURLToPath(new URL('../golden/dns/', import.meta.url));
const UPDATE = process.env.METALBOX_UPDATE_GOLDEN === '1';
const EXPECTED = ['dig-edns-a-query', 'dig-noedns-txt-query', 'dig-axfr-query', 'dnsmasq-srv-answer', 'dnsmasq-mx-answer', 'dnsmasq-nxdomain-answer'];
const captures = readdirSync(DIR).filter((f) => f.endsWith('.bin')).map((f) => f.slice(0, -4)).sort();

t.same(EXPECTED.filter((e) => !captures.includes(e)), [], 'every expected capture is checked in');

for (const name of captures) {
  t.test(name, async (t) => {
    const bin = readFileSync(join(DIR, `${name}.bin`));
    const m = decodeDns(bin);
    const text = formatDns(m);
    const txtPath = join(DIR, `${name}.txt`);
    if (UPDATE) writeFileSync(txtPath, text);
    t.ok(existsSync(txtPath), `${name}.txt exists (run with METALBOX_UPDATE_GOLDEN=1 to create it)`);
    if (existsSync(txtPath)) t.equal(text, readFileSync(txtPath, 'utf8'), 'decoded dump matches the golden text');
    const again = encodeDns(m);
    t.same(decodeDns(again), m, 're-encoded capture decodes to the same message');
    t.ok(again.length <= bin.length, `our compression is no worse than the peer's (${again.length} <= ${bin.length})`);
    if (name.startsWith('dig-')) t.ok(again.equals(bin), 'a query re-encodes byte for byte');
  });
}
