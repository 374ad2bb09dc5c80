// Reading the kernel's view of the hardware from sysfs and procfs. Every root is a parameter, so the tests can
// point the agent at a fake tree. Missing files are normal (a VM has no DMI serial, a virtio disk no model):
// they read as undefined, never as errors.

import { readFile, readdir, readlink, stat } from 'node:fs/promises';
import path from 'node:path';

export interface Roots {
  sys: string;
  proc: string;
  dev: string;
}

export const REAL_ROOTS: Roots = { sys: '/sys', proc: '/proc', dev: '/dev' };

/** A sysfs attribute, trimmed; undefined when missing, unreadable (EINVAL on a down NIC's speed) or empty. */
export async function readAttr(file: string): Promise<string | undefined> {
  try {
    const text = (await readFile(file, 'utf8')).replace(/\0+$/, '').trim();
    return text === '' ? undefined : text;
  } catch {
    return undefined;
  }
}

export async function readBytes(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch {
    return undefined;
  }
}

export async function list(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort(naturalCompare);
  } catch {
    return [];
  }
}

export async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

/** The last component of a symlink's target (a driver's name from `device/driver`). */
export async function linkName(file: string): Promise<string | undefined> {
  try {
    return path.basename(await readlink(file));
  } catch {
    return undefined;
  }
}

/** sda < sdb < sdaa, nvme0n1 < nvme1n1 < nvme10n1: numbers compare as numbers. */
export function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** A decimal integer attribute, or undefined. */
export function int(text: string | undefined): number | undefined {
  if (text === undefined || !/^-?\d+$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}
