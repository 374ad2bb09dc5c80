// Golden captures: each test/golden/ntp/*.bin is a UDP payload a real peer sent (capture.sh records them from
// ntpsec's ntpdig, chronyd -Q and chronyd serving, in network namespaces); its .txt beside it is formatNtp's
// dump, checked in and reviewed. METALBOX_UPDATE_GOLDEN=1 rewrites the .txt files.
import t from 'tap';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { decodeNtp, encodeNtp, formatNtp, LEAP, MODE } from '../../src/protocols/ntp/index.ts';

const DIR = fileURLToPath(new URL('../golden/ntp/', import.meta.url));
const UPDATE = process.env.METALBOX_UPDATE_GOLDEN === '1';
const EXPECTED = ['ntpdig-request', 'chronyd-request', 'chrony-reply', 'chrony-unsync-reply'];
const captures = readdirSync(DIR).filter((f) => f.endsWith('.bin')).map((f) => f.slice(0, -4)).sort();

t.same(EXPECTED.filter((e) => !captures.includes(e)), [], 'every expected capture is checked in');

for (const name of captures) {
  t.test(name, async (t) => {
    const bin = readFileSync(join(DIR, `${name}.bin`));
    const packet = decodeNtp(bin);
    const text = formatNtp(packet);
    const txtPath = join(DIR, `${name}.txt`);
    if (UPDATE) writeFileSync(txtPath, text);
    t.ok(existsSync(txtPath), `${name}.txt exists (run with METALBOX_UPDATE_GOLDEN=1 to create it)`);
    if (existsSync(txtPath)) t.equal(text, readFileSync(txtPath, 'utf8'), 'decoded dump matches the golden text');
    t.ok(encodeNtp(packet).equals(bin), 'encodes back bit for bit');
    t.equal(packet.version, 4);
    t.equal(packet.mode, name.endsWith('request') ? MODE.CLIENT : MODE.SERVER);
  });
}

t.test('what the captures say', async (t) => {
  const dig = decodeNtp(readFileSync(join(DIR, 'ntpdig-request.bin')));
  t.equal(dig.leap, LEAP.UNSYNCHRONISED, 'ntpdig asks with leap 3');
  const reply = decodeNtp(readFileSync(join(DIR, 'chrony-reply.bin')));
  t.same(reply.originTime, dig.transmitTime, 'chrony echoes the request transmit timestamp as origin');
  t.equal(reply.stratum, 3, 'chrony with "local stratum 3" answers stratum 3');
  t.equal(reply.referenceId, 0x7f7f0101, 'and reference id 127.127.1.1, as our local stratum does');
  const unsync = decodeNtp(readFileSync(join(DIR, 'chrony-unsync-reply.bin')));
  t.equal(unsync.leap, LEAP.UNSYNCHRONISED, 'unsynchronised chrony answers leap 3');
  t.equal(unsync.stratum, 0, '(chrony 4.3 says stratum 0 where metalbox says 16)');
});
