// Toy code under test for the engine's own test (test/unit/fuzz-engine.test.ts). No imports: it is bundled and
// instrumented on its own.

/**
 * A nested magic-byte condition: each byte is one branch deeper, so a coverage-guided fuzzer climbs it one
 * byte at a time, while blind mutation would have to guess all eight bytes at once (about 2^-64 per input).
 */
export function magic(b: Uint8Array): number {
  if (b.length < 8) return 0;
  if (b[0] !== 0x4d) return 1; // M
  if (b[1] !== 0x42) return 2; // B
  if (b[2] !== 0x58) return 3; // X
  if (b[3] !== 0xf0) return 4;
  if (b[4] !== 0x0d) return 5;
  if (b[5] !== 0x7a) return 6;
  if (b[6] !== 0x7a) return 7;
  if (b[7] !== 0x21) return 8;
  throw new Error('toy: the magic input was reached');
}

/** Never returns for an input that starts with "H!" (a hang the worker's watchdog must catch). */
export function spin(b: Uint8Array): number {
  let n = 0;
  if (b.length >= 2 && b[0] === 0x48 && b[1] === 0x21) for (;;) n++;
  return n;
}

/** Takes about `ms` milliseconds for an input that starts with "S" (a slow input). */
export function slow(b: Uint8Array, ms: number): number {
  if (b.length === 0 || b[0] !== 0x53) return 0;
  const end = performance.now() + ms;
  let n = 0;
  while (performance.now() < end) n++;
  return n;
}
