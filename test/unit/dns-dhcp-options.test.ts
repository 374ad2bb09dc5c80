// DHCP points machines at metalbox's DNS and NTP (issue 8): option 6 and 42 are the subnet's dnsServers /
// ntpServers when set, else metalbox's own address (the DHCP service passes it as the default when dns.enabled /
// ntp.enabled, none otherwise); option 15 is the domain. The policy is tested on its own, with each case.
import t from 'tap';
import { decodeDhcp, encodeDhcp, MESSAGE_TYPE, type DhcpPacket } from '../../src/protocols/dhcp/index.ts';
import { handleDhcp, type PolicyContext } from '../../src/services/dhcp/policy.ts';
import { defaultBoot } from '../../src/services/dhcp/boot.ts';
import { LeasePool } from '../../src/core/lease-pool.ts';
import { parseCidr, parseRange } from '../../src/lib/ipv4.ts';
import { parseConfig } from '../../src/config/load.ts';

const MAC = '52:54:00:12:34:56';

function offer(subnetYaml: string, defaults: { dns: string[]; ntp: string[] }): DhcpPacket {
  const config = parseConfig(`interfaces: [p0]\nhttp: { listen: "0.0.0.0:5240" }\ndomain: lab.example\nsubnets:\n  - cidr: 10.77.0.0/24\n    dynamicRanges: ["10.77.0.100-10.77.0.101"]\n${subnetYaml}`, { source: 't', defaultStateDir: '/tmp/x' });
  const s = config.subnets[0]!;
  const pool = new LeasePool({ id: s.cidr, cidr: parseCidr(s.cidr)!, ranges: s.dynamicRanges.map((r) => parseRange(r)!), excluded: [], reservations: new Map() });
  const ctx: PolicyContext = {
    now: Date.now(), subnet: { config: s, cidr: parseCidr(s.cidr)!, pool }, serverIp: '10.77.0.1', domain: config.domain,
    offerSeconds: 30, declineSeconds: 600, defaultDns: defaults.dns, defaultNtp: defaults.ntp,
    boot: defaultBoot({ bios: 'undionly.kpxe', uefi: 'snponly.efi', httpBoot: 'ipxe.efi' }, 5240),
  };
  const chaddr = Buffer.alloc(16);
  Buffer.from(MAC.replace(/:/g, ''), 'hex').copy(chaddr);
  const d = handleDhcp({
    op: 1, htype: 1, hlen: 6, hops: 0, xid: 1, secs: 0, flags: 0, ciaddr: '0.0.0.0', yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr: '0.0.0.0',
    chaddr, sname: '', file: '', options: { messageType: MESSAGE_TYPE.DISCOVER, other: new Map() },
  }, MAC, ctx);
  if (d.kind !== 'reply') throw new Error(d.kind);
  return decodeDhcp(encodeDhcp(d.reply, { maxSize: 1500 }));
}

t.test('metalbox itself by default, explicit settings win, nothing when the service is off', async (t) => {
  const self = offer('', { dns: ['10.77.0.1'], ntp: ['10.77.0.1'] });
  t.same(self.options.dnsServers, ['10.77.0.1'], 'option 6: our address on the subnet');
  t.same(self.options.ntpServers, ['10.77.0.1'], 'option 42: our address on the subnet');
  t.equal(self.options.domainName, 'lab.example', 'option 15: the domain');
  const explicit = offer('    dnsServers: [10.0.0.53, 10.0.0.54]\n    ntpServers: [10.0.0.123]\n', { dns: ['10.77.0.1'], ntp: ['10.77.0.1'] });
  t.same(explicit.options.dnsServers, ['10.0.0.53', '10.0.0.54'], 'the subnet\'s dnsServers win');
  t.same(explicit.options.ntpServers, ['10.0.0.123'], 'the subnet\'s ntpServers win');
  const off = offer('', { dns: [], ntp: [] });
  t.equal(off.options.dnsServers, undefined, 'dns.enabled false: no option 6');
  t.equal(off.options.ntpServers, undefined, 'ntp.enabled false: no option 42');
  t.equal(off.options.domainName, 'lab.example', 'the domain is still handed out');
  const explicitOff = offer('    dnsServers: [10.0.0.53]\n', { dns: [], ntp: [] });
  t.same(explicitOff.options.dnsServers, ['10.0.0.53'], 'explicit servers even when metalbox serves no DNS');
});
