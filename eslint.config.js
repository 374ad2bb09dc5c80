// Lint: typescript-eslint's recommended rules plus the layer boundaries of STYLE.md.
// Arrows point down only: protocols import only lib; core imports lib and the store interfaces.
import path from 'node:path';
import tseslint from 'typescript-eslint';

const SRC = path.join(import.meta.dirname, 'src');

/**
 * Layer zones, by directory under src/. `allow`: the only places files there may import from src/;
 * `deny`: places they must not import. Paths are relative to src/.
 */
const ZONES = [
  { target: 'protocols', allow: ['lib', 'protocols'], message: 'protocols are pure codecs: import only src/lib' },
  { target: 'lib', allow: ['lib'], message: 'src/lib is the bottom layer' },
  { target: 'core', allow: ['lib', 'core', 'protocols', 'store/types.ts'], message: 'core imports lib and the store interfaces only' },
  { target: 'store', allow: ['lib', 'store'], message: 'the store depends on lib only' },
  { target: 'services', deny: ['api', 'cli'], message: 'services must not import the API or the CLI; main wires them' },
  { target: 'api', deny: ['cli'], message: 'the API must not import the CLI' },
  { target: '', deny: ['main.ts'], message: 'nothing imports main' },
];

const within = (rel, dir) => dir === '' || rel === dir || rel.startsWith(`${dir}/`);

/** Local rule: relative imports (static, re-exports and dynamic) must respect ZONES. */
const layers = {
  meta: { type: 'problem', schema: [] },
  create(context) {
    const from = path.relative(SRC, context.filename);
    if (from.startsWith('..')) return {};
    const check = (node, spec) => {
      if (typeof spec !== 'string' || !spec.startsWith('.')) return;
      const to = path.relative(SRC, path.resolve(path.dirname(context.filename), spec));
      if (to.startsWith('..')) return;
      for (const z of ZONES) {
        if (!within(from, z.target)) continue;
        const bad = z.allow ? !z.allow.some((a) => within(to, a)) : z.deny.some((d) => within(to, d));
        if (bad) context.report({ node, message: `layers: ${spec}: ${z.message}` });
      }
    };
    return {
      ImportDeclaration: (n) => check(n.source, n.source.value),
      ExportNamedDeclaration: (n) => n.source && check(n.source, n.source.value),
      ExportAllDeclaration: (n) => check(n.source, n.source.value),
      ImportExpression: (n) => n.source.type === 'Literal' && check(n.source, n.source.value),
    };
  },
};

const NODE_IO = ['dgram', 'net', 'fs', 'fs/promises', 'child_process', 'http', 'https', 'worker_threads', 'cluster']
  .flatMap((m) => [m, `node:${m}`]);

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', '.tap/**', '.metalbox/**', '.cache/**', 'src/native/build/**'] },
  ...tseslint.configs.recommended,
  {
    plugins: { metalbox: { rules: { layers } } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-restricted-syntax': ['error', { selector: 'TSEnumDeclaration', message: 'use an `as const` object or a union, not enum (STYLE.md)' }],
      'metalbox/layers': 'error',
    },
  },
  {
    // UDP goes through src/lib/udp-socket.ts (device binding, arrival interface); node:dgram can do neither.
    // Before the protocols block: for the same rule, the later block's options replace these.
    files: ['src/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { paths: ['dgram', 'node:dgram'].map((name) => ({ name, message: 'use openUdpSocket from src/lib/udp-socket.ts, not node:dgram' })) }] },
  },
  {
    // Protocol codecs touch no sockets, files, processes or clocks (STYLE.md).
    files: ['src/protocols/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { paths: NODE_IO.map((name) => ({ name, message: 'protocols are pure: no I/O' })) }] },
  },
  {
    // Only main reads argv/env and ends the process.
    files: ['src/**/*.ts'],
    ignores: ['src/main.ts'],
    rules: {
      'no-restricted-properties': ['error',
        { object: 'process', property: 'exit', message: 'only src/main.ts calls process.exit' },
        { object: 'process', property: 'argv', message: 'only src/main.ts reads argv' },
      ],
    },
  },
  {
    files: ['test/**/*.ts', 'image/**/*.ts', '*.js', '*.mjs'],
    rules: { '@typescript-eslint/no-non-null-assertion': 'off' },
  },
);
