// The part of istanbul-lib-instrument (no bundled types) that test/fuzz/coverage.ts uses.
declare module 'istanbul-lib-instrument' {
  export interface InstrumenterOptions {
    coverageVariable?: string;
    esModules?: boolean;
    compact?: boolean;
    produceSourceMap?: boolean;
    reportLogic?: boolean;
    coverageGlobalScope?: string;
    coverageGlobalScopeFunc?: boolean;
  }
  export interface Instrumenter {
    instrumentSync(code: string, filename: string): string;
  }
  export function createInstrumenter(options?: InstrumenterOptions): Instrumenter;
}
