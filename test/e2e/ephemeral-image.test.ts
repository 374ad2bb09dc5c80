// The ephemeral environment on its own, without network boot: QEMU loads its kernel and initrd directly
// (-kernel/-initrd) with user-mode networking, where the host is 10.0.2.2 and QEMU's own DHCP server hands
// out 10.0.2.15. It must load its NIC driver, announce itself, take a lease, reach our /healthz, run the
// build's hook with the command line's metalbox.* values, and power the VM off by itself. About 10-20 s.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MARKER, ensureEphemeral, secs, watchConsole } from '../helpers/ephemeral.ts';

const MAC = '52:54:00:5e:00:01';
const TOKEN = 'tok-Zq9v_secret-never-printed-by-init-00000';

// Fixed text, so that the image built with it keeps one cache key.
const HOOK = `#!/bin/sh
echo "HOOK-ENV mode=$METALBOX_MODE if=$METALBOX_IF ip=$METALBOX_IP mac=$METALBOX_MAC token_chars=\${#METALBOX_TOKEN} url=$METALBOX_URL"
test -n "$METALBOX_TOKEN"
`;

// Possibly a cold image build (or waiting for the netboot test's), then one TCG boot.
t.setTimeout(600_000);

if (!existsSync('/usr/bin/qemu-system-x86_64')) t.fail('qemu-system-x86 must be installed (.ci/run installs it)');
else {
  t.test('the ephemeral image boots, reaches metalbox over the network and powers off', { timeout: 540_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mbx-eph-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const hook = join(dir, 'hook.sh');
    writeFileSync(hook, HOOK, { mode: 0o755 });
    const img = await ensureEphemeral({ hook });
    t.comment(`image ${img.key} in ${img.seconds.toFixed(1)} s: ${img.log.split('\n').pop()}`);
    t.ok(Number(img.manifest.initrd_bytes) < 4_000_000, `initrd.img is small (${img.manifest.initrd_bytes} bytes)`);

    let healthz = 0;
    const http = createServer((req, res) => {
      if (req.url === '/healthz') healthz++;
      res.writeHead(req.url === '/healthz' ? 200 : 404, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    t.teardown(() => new Promise<void>((r) => http.close(() => r())));
    const port = (http.address() as AddressInfo).port;
    const url = `http://10.0.2.2:${port}`;

    const append = `console=ttyS0 metalbox.url=${url} metalbox.mac=${MAC} metalbox.token=${TOKEN} metalbox.mode=commission`;
    const child = spawn('qemu-system-x86_64', ['-accel', 'tcg', '-nographic', '-monitor', 'none', '-no-reboot', '-m', '256',
      '-kernel', img.kernel, '-initrd', img.initrd, '-append', append,
      '-nic', `user,model=virtio-net-pci,mac=${MAC}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const vm = watchConsole(child);
    t.teardown(() => vm.kill());

    const up = await vm.waitFor(MARKER.up, 120_000);
    t.equal(up.match[1], MAC, 'it announces the MAC it was told to use');
    t.equal(up.match[2], url, 'and the metalbox URL');
    const http1 = await vm.waitFor(MARKER.http, 60_000);
    t.equal(http1.match[1], 'ok', 'GET /healthz answered');
    t.ok(healthz >= 1, 'our server saw the request');
    const env = await vm.waitFor(/HOOK-ENV .*/, 30_000);
    t.match(env.text, /mode=commission if=eth0 ip=10\.0\.2\.15 mac=52:54:00:5e:00:01 token_chars=43 url=http:\/\/10\.0\.2\.2:\d+/,
      'the hook gets the command line and what /init found');
    t.equal((await vm.waitFor(MARKER.hook, 30_000)).match[1], '0', 'the hook succeeded');
    await vm.waitFor(MARKER.poweroff, 30_000);
    t.equal(await vm.exit(30_000), 0, 'the VM powered itself off (QEMU exited 0)');
    const ours = vm.output().split('\n').filter((l) => /^(metalbox-ephemeral:|METALBOX-|HOOK-ENV)/.test(l));
    t.notOk(ours.some((l) => l.includes(TOKEN)), '/init never prints the token');
    t.comment(`QEMU start -> METALBOX-EPHEMERAL-UP ${secs(up.ms)} s, -> HTTP ok ${secs(http1.ms)} s (direct kernel boot, TCG)`);
  });
}
