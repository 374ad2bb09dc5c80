// The layer rules of STYLE.md are enforced by eslint; prove the rules fire, so a config change
// cannot silently switch them off.
import t from 'tap';
import { ESLint } from 'eslint';

const eslint = new ESLint({ cwd: new URL('../..', import.meta.url).pathname });

async function messages(filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath });
  return (result?.messages ?? []).map((m) => `${m.ruleId}: ${m.message}`);
}

t.test('protocols import only lib', async (t) => {
  const got = await messages('src/protocols/fake/codec.ts', "import type { Service } from '../../services/service.ts';\nexport type X = Service;\n");
  t.match(got.join('\n'), /metalbox\/layers: .*protocols are pure codecs/);
  t.same(await messages('src/protocols/fake/codec.ts', "import { MetalboxError } from '../../lib/errors.ts';\nexport const E = MetalboxError;\n"), []);
});

t.test('protocols do no I/O', async (t) => {
  const got = await messages('src/protocols/fake/codec.ts', "import dgram from 'node:dgram';\nexport const d = dgram;\n");
  t.match(got.join('\n'), /no-restricted-imports/);
});

t.test('UDP sockets come from src/lib/udp-socket.ts, never node:dgram', async (t) => {
  t.match((await messages('src/services/x.ts', "import dgram from 'node:dgram';\nexport const d = dgram;\n")).join('\n'), /no-restricted-imports: .*openUdpSocket/);
  t.match((await messages('src/services/x.ts', "import { createSocket } from 'dgram';\nexport const c = createSocket;\n")).join('\n'), /no-restricted-imports/);
  t.same(await messages('src/services/x.ts', "import { openUdpSocket } from '../lib/udp-socket.ts';\nexport const o = openUdpSocket;\n"), []);
});

t.test('lib is the bottom layer; core sees only store interfaces', async (t) => {
  t.match((await messages('src/lib/x.ts', "import { HttpService } from '../services/http.ts';\nexport const o = HttpService;\n")).join('\n'), /metalbox\/layers/);
  t.match((await messages('src/core/x.ts', "import { HttpService } from '../services/http.ts';\nexport const o = HttpService;\n")).join('\n'), /core imports lib and the store interfaces only/);
  t.same(await messages('src/core/x.ts', "import type { Store } from '../store/types.ts';\nexport type S = Store;\n"), []);
});

t.test('only main exits the process', async (t) => {
  t.match((await messages('src/services/x.ts', 'export function f(): void { process.exit(1); }\n')).join('\n'), /only src\/main.ts calls process.exit/);
});

t.test('re-exports and dynamic imports are checked too; services may not reach the API', async (t) => {
  t.match((await messages('src/protocols/fake/codec.ts', "export { HttpService } from '../../services/http.ts';\n")).join('\n'), /metalbox\/layers/);
  t.match((await messages('src/store/x.ts', "export async function f(): Promise<unknown> { return import('../services/http.ts'); }\n")).join('\n'), /the store depends on lib only/);
  t.match((await messages('src/services/x.ts', "import { buildApp } from '../api/app.ts';\nexport const b = buildApp;\n")).join('\n'), /services must not import the API/);
  t.match((await messages('src/api/x.ts', "import '../main.ts';\n")).join('\n'), /nothing imports main/);
});
