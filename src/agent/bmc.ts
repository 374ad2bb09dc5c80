// The machine's own BMC, seen in-band. The kernel's IPMI message handler (ipmi_si + ipmi_devintf) exposes it as
// /dev/ipmi0 and /sys/class/ipmi/ipmi0. Talking to it (Get LAN Configuration Parameters for its address, Set
// User Name/Password to make a metalbox user, IPMI v2.0 §23.2, §22.28, §22.30) goes through the
// IPMICTL_SEND_COMMAND / IPMICTL_RECEIVE_MSG_TRUNC ioctls (include/uapi/linux/ipmi.h), which Node cannot issue
// without a native addon; until the addon has them the agent reports the BMC's presence only.

import path from 'node:path';
import { exists, type Roots } from './sysfs.ts';

export interface BmcInfo {
  present: boolean;
  address?: string;
}

export async function detectBmc(roots: Roots): Promise<BmcInfo> {
  for (const node of [path.join(roots.dev, 'ipmi0'), path.join(roots.dev, 'ipmi', '0'), path.join(roots.dev, 'ipmidev', '0')]) {
    if (await exists(node)) return { present: true };
  }
  return { present: await exists(path.join(roots.sys, 'class', 'ipmi', 'ipmi0')) };
}
