// Worker entry (runner.ts): worker threads do not inherit the parent's module hooks, so tsx is registered here
// before the TypeScript worker is imported.
import { register } from 'tsx/esm/api';

register();
await import(new URL('./worker.ts', import.meta.url).href);
