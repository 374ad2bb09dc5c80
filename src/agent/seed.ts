// The cloud-init NoCloud seed the deployed system reads at its first boot from /var/lib/cloud/seed/nocloud/
// (cloud-init docs, "NoCloud": meta-data, user-data, network-config). Pure: task in, file contents out.
//
// Every string is written double-quoted: cloud-init reads YAML 1.1 (PyYAML), where an unquoted MAC made of
// digits only (52:54:00:77:00:10) is a base-60 integer, and `on`/`no` are booleans.

import { stringify } from 'yaml';
import type { DeployTask } from './task.ts';

export interface NoCloudSeed {
  'meta-data': string;
  'user-data': string;
  'network-config': string;
}

export const SEED_DIR = 'var/lib/cloud/seed/nocloud';

function yaml(value: unknown): string {
  return stringify(value, { defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN', lineWidth: 0 });
}

export function buildSeed(task: DeployTask, instanceId: string): NoCloudSeed {
  const shortName = task.hostname.split('.')[0] as string;
  const metaData = { 'instance-id': instanceId, 'local-hostname': shortName };
  const userData = {
    hostname: shortName,
    ...(task.hostname.includes('.') ? { fqdn: task.hostname } : {}),
    preserve_hostname: false,
    ssh_authorized_keys: task.sshKeys,
    // cc_growpart and cc_resizefs (defaults, stated so the image's cloud.cfg cannot leave them out silently):
    // the agent already moved the partition's end, these grow the file system into it.
    growpart: { mode: 'auto', devices: ['/'] },
    resize_rootfs: true,
    // cc_phone_home: the appliance learns that the installed system is up, and only then marks it Deployed.
    phone_home: { url: task.phoneHomeUrl, post: ['instance_id', 'hostname'], tries: 10 },
  };
  const nic: Record<string, unknown> = { match: { macaddress: task.network.mac } };
  if (task.network.address === undefined) {
    nic.dhcp4 = true;
  } else {
    nic.dhcp4 = false;
    nic.addresses = [task.network.address];
    // `routes` with `to: 0.0.0.0/0` rather than `gateway4` (deprecated in netplan) or `to: default` (newer
    // netplan only): every cloud-init renderer reads it.
    if (task.network.gateway !== undefined) nic.routes = [{ to: '0.0.0.0/0', via: task.network.gateway }];
  }
  if (task.network.nameservers !== undefined || task.network.search !== undefined) {
    nic.nameservers = {
      ...(task.network.nameservers !== undefined ? { addresses: task.network.nameservers } : {}),
      ...(task.network.search !== undefined ? { search: task.network.search } : {}),
    };
  }
  // Network config version 2 (cloud-init docs, "Networking config Version 2"): the boot NIC by MAC; its
  // kernel name in the installed system is unknown here, so the id is ours and no set-name is given.
  const networkConfig = { version: 2, ethernets: { boot: nic } };
  return {
    'meta-data': yaml(metaData),
    // The first line must be exactly this for cloud-init to take the file as cloud-config.
    'user-data': `#cloud-config\n${yaml(userData)}`,
    'network-config': yaml(networkConfig),
  };
}
