// src/lib/threadpool.ts must be the entry's first import: its body then runs before any other module's, so the
// pool (started by the first file read) gets 16 threads. The thread count itself is checked on the binary
// (test/integration/binary.test.ts): run from source under tsx, the module loader has started the pool already.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ROOT } from '../helpers/process.ts';

t.test('it is the first import of the entry point', async (t) => {
  const main = readFileSync(join(ROOT, 'src/main.ts'), 'utf8');
  const first = /^import\s[^;]*;/m.exec(main)?.[0];
  t.equal(first, "import './lib/threadpool.ts';");
});
