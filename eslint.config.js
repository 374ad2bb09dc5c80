// Lint: typescript-eslint's recommended rules plus the layer boundaries of STYLE.md.
// Arrows point down only: protocols import only lib; core imports lib and the store interfaces.
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

const NODE_IO = ['dgram', 'net', 'fs', 'fs/promises', 'child_process', 'http', 'https', 'worker_threads', 'cluster']
  .flatMap((m) => [m, `node:${m}`]);

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', '.tap/**', '.metalbox/**', '.cache/**', 'src/native/build/**'] },
  ...tseslint.configs.recommended,
  {
    plugins: { 'import-x': importX },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-restricted-syntax': ['error', { selector: 'TSEnumDeclaration', message: 'use an `as const` object or a union, not enum (STYLE.md)' }],
      'import-x/no-restricted-paths': ['error', {
        zones: [
          { target: './src/protocols', from: './src', except: ['./lib', './protocols'], message: 'protocols are pure codecs: import only src/lib' },
          { target: './src/lib', from: './src', except: ['./lib'], message: 'src/lib is the bottom layer' },
          { target: './src/core', from: './src', except: ['./lib', './core', './protocols', './store/types.ts'], message: 'core imports lib and the store interfaces only' },
          { target: './src/store', from: './src', except: ['./lib', './store'], message: 'the store depends on lib only' },
          { target: './src/services', from: './src/api' , message: 'services must not import the API; main wires them' },
          { target: './src/services', from: './src/cli' },
          { target: './src/api', from: './src/cli' },
          { target: './src', from: './src/main.ts', message: 'nothing imports main' },
        ],
      }],
    },
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
