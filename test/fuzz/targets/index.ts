// The fuzz targets by name: the module that builds each (runner.ts loads it in a worker).
export const TARGETS = {
  dhcp: new URL('./dhcp.ts', import.meta.url).href,
  tftp: new URL('./tftp.ts', import.meta.url).href,
  dns: new URL('./dns.ts', import.meta.url).href,
  ntp: new URL('./ntp.ts', import.meta.url).href,
  ipmi: new URL('./ipmi.ts', import.meta.url).href,
} as const;

export type TargetName = keyof typeof TARGETS;

export const TARGET_NAMES = Object.keys(TARGETS) as TargetName[];
