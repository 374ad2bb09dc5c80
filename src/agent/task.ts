// The task the appliance hands the agent (GET /boot/agent/v1/task, .notes/agent-contract.md), checked field by
// field: it comes over the network and drives writes to a disk, so nothing is taken on trust.

import { AgentError } from './errors.ts';

export const COMPRESSIONS = ['none', 'gzip', 'xz', 'zstd'] as const;
export type Compression = (typeof COMPRESSIONS)[number];
export const ERASE_MODES = ['none', 'quick', 'full'] as const;
export type EraseMode = (typeof ERASE_MODES)[number];

export interface NetworkTask {
  /** The boot NIC, matched by MAC in the installed system. */
  mac: string;
  /** Static address `a.b.c.d/len`; without it the NIC uses DHCP. */
  address?: string;
  gateway?: string;
  nameservers?: string[];
  search?: string[];
}

export interface DeployTask {
  imageUrl: string;
  /** sha256 of the image as registered (the compressed stream), lower-case hex. */
  sha256: string;
  /** Size in bytes of the image as registered (the compressed stream). */
  size?: number;
  compression: Compression;
  /** '/dev/vda', a disk serial, or 'auto'. */
  disk: string;
  hostname: string;
  sshKeys: string[];
  phoneHomeUrl: string;
  network: NetworkTask;
  /** cloud-init instance-id; a fresh one is made when absent. */
  instanceId?: string;
}

export type AgentTask =
  | { mode: 'commission'; bmcUser?: { create: boolean } }
  | { mode: 'deploy'; deploy: DeployTask }
  | { mode: 'release'; release: { erase: EraseMode } }
  | { mode: 'rescue'; rescue: { sshKeys: string[] } }
  | { mode: 'none' };

const HOSTNAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function bad(field: string, why: string): never {
  throw new AgentError('AGENT_TASK_INVALID', `task: ${field} ${why}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(o: Record<string, unknown>, key: string, field: string): string {
  const v = o[key];
  if (typeof v !== 'string' || v === '') bad(field, 'must be a non-empty string');
  return v;
}

function optStr(o: Record<string, unknown>, key: string, field: string): string | undefined {
  return o[key] === undefined || o[key] === null ? undefined : str(o, key, field);
}

function strList(o: Record<string, unknown>, key: string, field: string, check: (s: string) => boolean, why: string): string[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) bad(field, 'must be a list of strings');
  return v.map((s, i) => {
    if (typeof s !== 'string' || !check(s)) bad(`${field}[${i}]`, why);
    return s;
  });
}

/** authorized_keys lines: each one non-empty line without NUL (cloud-init and the rescue write them as given). */
function sshKeyList(o: Record<string, unknown>, key: string, field: string): string[] {
  return strList(o, key, field, (k) => k.trim() !== '' && !/[\r\n\0]/.test(k), 'must be one non-empty line') ?? [];
}

function httpUrl(value: string, base: string, field: string): string {
  let url: URL;
  try {
    url = new URL(value, `${base}/`);
  } catch {
    bad(field, 'is not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') bad(field, 'must be http:// or https://');
  return url.href;
}

/** Checks the task body; relative URLs are taken relative to the appliance's base URL. */
export function parseTask(body: unknown, baseUrl: string): AgentTask {
  if (!isRecord(body)) bad('body', 'must be a JSON object');
  const mode = body.mode;
  switch (mode) {
    case 'none':
      return { mode };
    case 'rescue': {
      // The keys root may log in with over SSH (src/agent/rescue.ts); none: no SSH server.
      const r = body.rescue;
      if (r === undefined || r === null) return { mode, rescue: { sshKeys: [] } };
      if (!isRecord(r)) bad('rescue', 'must be an object');
      return { mode, rescue: { sshKeys: sshKeyList(r, 'sshKeys', 'rescue.sshKeys') } };
    }
    case 'commission': {
      const b = body.bmcUser;
      if (b === undefined || b === null) return { mode };
      if (!isRecord(b) || typeof b.create !== 'boolean') bad('bmcUser', 'must be { create: boolean }');
      return { mode, bmcUser: { create: b.create } };
    }
    case 'release': {
      const r = body.release;
      if (r === undefined || r === null) return { mode, release: { erase: 'none' } };
      if (!isRecord(r) || !(ERASE_MODES as readonly unknown[]).includes(r.erase)) bad('release.erase', `must be one of ${ERASE_MODES.join(', ')}`);
      return { mode, release: { erase: r.erase as EraseMode } };
    }
    case 'deploy':
      return { mode, deploy: parseDeploy(body.deploy, baseUrl) };
    default:
      bad('mode', `must be one of none, commission, deploy, release, rescue (got ${JSON.stringify(mode)?.slice(0, 40)})`);
  }
}

function parseDeploy(d: unknown, baseUrl: string): DeployTask {
  if (!isRecord(d)) bad('deploy', 'must be an object');
  const sha256 = str(d, 'sha256', 'deploy.sha256').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(sha256)) bad('deploy.sha256', 'must be 64 hex digits');
  const size = d.size;
  if (size !== undefined && size !== null && !(Number.isSafeInteger(size) && (size as number) >= 0)) bad('deploy.size', 'must be a byte count');
  const compression = d.compression ?? 'none';
  if (!(COMPRESSIONS as readonly unknown[]).includes(compression)) bad('deploy.compression', `must be one of ${COMPRESSIONS.join(', ')}`);
  const hostname = str(d, 'hostname', 'deploy.hostname');
  if (!HOSTNAME.test(hostname)) bad('deploy.hostname', 'is not an RFC 1123 host name');
  const sshKeys = sshKeyList(d, 'sshKeys', 'deploy.sshKeys');
  const n = d.network;
  if (!isRecord(n)) bad('deploy.network', 'must be an object');
  const mac = str(n, 'mac', 'deploy.network.mac').toLowerCase().replaceAll('-', ':');
  if (!MAC.test(mac)) bad('deploy.network.mac', 'is not a MAC address');
  const address = optStr(n, 'address', 'deploy.network.address');
  if (address !== undefined) {
    const [ip, len] = address.split('/');
    if (!IPV4.test(ip ?? '') || len === undefined || !/^\d+$/.test(len) || Number(len) > 32) bad('deploy.network.address', 'must be a.b.c.d/len');
  }
  const gateway = optStr(n, 'gateway', 'deploy.network.gateway');
  if (gateway !== undefined && !IPV4.test(gateway)) bad('deploy.network.gateway', 'is not an IPv4 address');
  const nameservers = strList(n, 'nameservers', 'deploy.network.nameservers', (s) => IPV4.test(s), 'is not an IPv4 address');
  const search = strList(n, 'search', 'deploy.network.search', (s) => HOSTNAME.test(s), 'is not a domain name');
  const instanceId = optStr(d, 'instanceId', 'deploy.instanceId');
  if (instanceId !== undefined && !/^[A-Za-z0-9._:-]{1,128}$/.test(instanceId)) bad('deploy.instanceId', 'must be 1-128 of A-Z a-z 0-9 . _ : -');
  return {
    imageUrl: httpUrl(str(d, 'imageUrl', 'deploy.imageUrl'), baseUrl, 'deploy.imageUrl'),
    sha256,
    ...(typeof size === 'number' ? { size } : {}),
    compression: compression as Compression,
    disk: str(d, 'disk', 'deploy.disk'),
    hostname,
    sshKeys,
    phoneHomeUrl: httpUrl(str(d, 'phoneHomeUrl', 'deploy.phoneHomeUrl'), baseUrl, 'deploy.phoneHomeUrl'),
    network: {
      mac,
      ...(address !== undefined ? { address } : {}),
      ...(gateway !== undefined ? { gateway } : {}),
      ...(nameservers !== undefined ? { nameservers } : {}),
      ...(search !== undefined ? { search } : {}),
    },
    ...(instanceId !== undefined ? { instanceId } : {}),
  };
}
