#!/usr/bin/env node
// Development entry for `npm link`/`npx metalbox`: runs the TypeScript sources through tsx.
// The shipped artefact is the single binary `dist/metalbox` (npm run build:binary).
import { register } from 'tsx/esm/api';
register();
await import('../src/main.ts');
