// `metalbox dns ...` over the API against a running `metalbox serve` (loopback only): zones, add of each kind of
// record (value, MX and SRV fields), list with filters and paging, show, edit (TTL of the RRset, none), remove,
// and the exit codes of refusals (6 bad input, 5 conflict, 4 not found, 2 usage).
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, runSource } from '../helpers/process.ts';

t.test('metalbox dns against a running server', { timeout: 240_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-dns-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const httpsPort = await freePort();
  const config = join(dir, 'metalbox.yaml');
  writeFileSync(config, `stateDir: ${join(dir, 'state')}\ndomain: rack.test\nhttp: { listen: "127.0.0.1:${await freePort()}" }\nhttps: { listen: "127.0.0.1:${httpsPort}" }\nbmc: { pollSeconds: 0 }\nsubnets:\n  - cidr: 10.77.0.0/24\n`);
  const cliFile = join(dir, 'home', 'cli.json');
  const env = { ...process.env, NOTIFY_SOCKET: '', METALBOX_CLI_FILE: cliFile, METALBOX_URL: '', METALBOX_TOKEN: '' };
  const mbx = async (args: string[]) => {
    const r = runSource(args, { env });
    const code = await r.exited;
    return { code, out: r.stdout(), err: r.stderr() };
  };
  const pw = join(dir, 'pw');
  writeFileSync(pw, 'operator-password-1\n');
  t.equal((await mbx(['users', 'create', 'ops', '--role', 'operator', '--password-file', pw, '--config', config])).code, 0);
  const server = runSource(['serve', '--config', config], { env });
  t.teardown(() => { server.child.kill('SIGKILL'); });
  await server.waitFor(/"msg":"metalbox ready"/);
  const fingerprint = (/"fingerprint":"([0-9A-F:]{95})"/.exec(server.stdout()) ?? [])[1]!;
  const login = await mbx(['login', '--url', `https://127.0.0.1:${httpsPort}`, '--user', 'ops', '--password-file', pw, '--fingerprint', fingerprint]);
  t.equal(login.code, 0, login.err);

  const zones = await mbx(['dns', 'zones', '--json']);
  t.same(JSON.parse(zones.out), { forward: 'rack.test', reverse: ['0.77.10.in-addr.arpa'] });

  const add = async (args: string[]) => {
    const r = await mbx(['dns', 'add', ...args, '--json']);
    t.equal(r.code, 0, `dns add ${args.join(' ')}: ${r.err}`);
    return JSON.parse(r.out || '{}') as { id: string; value: string; ttl?: number };
  };
  const web = await add(['web.rack.test', 'A', '10.77.0.5', '--ttl', '300']);
  t.equal(web.ttl, 300);
  await add(['web.rack.test', 'AAAA', '2001:DB8::5']);
  await add(['www.rack.test', 'cname', 'web.rack.test']);
  const txt = await add(['web.rack.test', 'TXT', 'hello', 'world']);
  t.equal(txt.value, 'hello world', 'the words after the type are the value');
  t.equal((await add(['rack.test', 'MX', '--priority', '10', '--target', 'web.rack.test'])).value, '10 web.rack.test');
  t.equal((await add(['_http._tcp.rack.test', 'SRV', '--priority', '0', '--weight', '5', '--port', '80', '--target', 'web.rack.test'])).value, '0 5 80 web.rack.test');
  await add(['lab.rack.test', 'NS', 'ns1.lab.rack.test']);

  const table = await mbx(['dns', 'list', '--name', 'web.rack.test']);
  t.equal(table.code, 0, table.err);
  t.match(table.out, /^ID\s+NAME\s+TYPE\s+VALUE\s+TTL/);
  t.equal(table.out.trim().split('\n').length, 4, 'header and the three records of web.rack.test');
  t.equal(JSON.parse((await mbx(['dns', 'list', '--type', 'srv', '--json'])).out).total, 1, 'by type');
  t.equal(JSON.parse((await mbx(['dns', 'list', '--limit', '2', '--all', '--json'])).out).items.length, 7, '--all follows the pages');

  const edited = await mbx(['dns', 'edit', web.id, '--value', '10.77.0.6', '--json']);
  t.equal(edited.code, 0, edited.err);
  t.equal(JSON.parse(edited.out).value, '10.77.0.6');
  t.equal(JSON.parse((await mbx(['dns', 'edit', web.id, '--ttl', 'none', '--json'])).out).ttl, undefined, '--ttl none: back to the default');
  t.equal(JSON.parse((await mbx(['dns', 'show', web.id, '--json'])).out).value, '10.77.0.6');

  const bad = await mbx(['dns', 'add', 'x.rack.test', 'A', '10.0.0.300']);
  t.equal(bad.code, 6, 'bad input');
  t.match(bad.err, /VALIDATION_FAILED: body\.value/);
  t.equal((await mbx(['dns', 'add', 'web.rack.test', 'CNAME', 'other.rack.test'])).code, 5, 'a CNAME beside other data: conflict');
  t.equal((await mbx(['dns', 'add', 'x.rack.test', 'MX', '--priority', 'ten', '--target', 'a.rack.test'])).code, 2, 'not a number: usage');
  t.equal((await mbx(['dns', 'edit', web.id])).code, 2, 'nothing to change: usage');

  t.equal((await mbx(['dns', 'remove', web.id])).code, 0);
  t.equal((await mbx(['dns', 'show', web.id])).code, 4, 'gone');
  t.equal((await mbx(['dns', 'remove', web.id])).code, 4);
});
