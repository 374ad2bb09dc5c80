// iPXE scripts, as text. Pure: the route gathers the facts (plan, image, token, our URL) and this renders them.
//
// The kernel command line the ephemeral environment receives (in this order):
//   initrd=initrd                      QUIRK(firmware): iPXE under UEFI (Debian's 2019 build) hands the kernel
//                                      its initrd only when the command line names it; the name is the last
//                                      segment of the initrd URL, which is "initrd"
//   metalbox.url=http://SERVER:PORT    the appliance, as the machine reached it (the address the script
//                                      request came in on)
//   metalbox.token=TOKEN               per-boot token (43 chars base64url), for the agent API
//   metalbox.mac=aa:bb:cc:dd:ee:ff     the MAC the machine booted from (when known)
//   metalbox.uuid=UUID                 its SMBIOS UUID (when the request named it)
//   metalbox.mode=enlist|commission|deploy|release|rescue
//   metalbox.image=NAME                the boot image
//   metalbox.rootfs=URL                the image's root filesystem, when it has one
//   console=tty0 console=ttyS0,115200n8
//   ...the image's own cmdline
import type { BootPlan } from '../../core/boot-plan.ts';

export interface KernelBoot {
  /** http://SERVER:PORT, no trailing slash. */
  baseUrl: string;
  plan: BootPlan;
  imageName: string;
  hasRootfs: boolean;
  imageCmdline: string;
  token: string;
  mac?: string;
  uuid?: string;
}

export const CONSOLE_ARGS = 'console=tty0 console=ttyS0,115200n8';

/** Text safe to put in an iPXE `echo` or comment: no `${` expansion, no line breaks. */
export function ipxeText(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?').replace(/\$/g, 'S');
}

export function assetUrl(baseUrl: string, image: string, file: 'kernel' | 'initrd' | 'rootfs'): string {
  return `${baseUrl}/boot/assets/${encodeURIComponent(image)}/${file}`;
}

export function kernelArgs(b: KernelBoot): string {
  const args = [
    'initrd=initrd',
    `metalbox.url=${b.baseUrl}`,
    `metalbox.token=${b.token}`,
    ...(b.mac ? [`metalbox.mac=${b.mac}`] : []),
    ...(b.uuid ? [`metalbox.uuid=${b.uuid}`] : []),
    `metalbox.mode=${b.plan.kind}`,
    `metalbox.image=${b.imageName}`,
    ...(b.hasRootfs ? [`metalbox.rootfs=${assetUrl(b.baseUrl, b.imageName, 'rootfs')}`] : []),
    CONSOLE_ARGS,
    ...(b.imageCmdline ? [b.imageCmdline] : []),
  ];
  return args.join(' ');
}

/** Boots the image's kernel and initrd; on any failure tells the console why and reboots to try again. */
export function kernelScript(b: KernelBoot): string {
  return [
    '#!ipxe',
    `echo metalbox: ${ipxeText(b.plan.reason)}`,
    `echo metalbox: booting image ${b.imageName} (${b.plan.kind})`,
    `kernel ${assetUrl(b.baseUrl, b.imageName, 'kernel')} ${kernelArgs(b)} || goto failed`,
    `initrd ${assetUrl(b.baseUrl, b.imageName, 'initrd')} || goto failed`,
    'boot || goto failed',
    ':failed',
    `echo metalbox: could not boot image ${b.imageName}; rebooting in 10 s`,
    'sleep 10',
    'reboot',
    '',
  ].join('\n');
}

/**
 * Boots the local disk.
 * - BIOS: `sanboot --no-describe --drive 0x80` boots the first hard disk's MBR through INT 13h (iPXE docs,
 *   https://ipxe.org/cmd/sanboot, "Boot from local drive 0x80"; --no-describe: no iBFT, there is no SAN). Not
 *   `exit`: iPXE loaded from a NIC option ROM or chained from PXE returns to the BIOS, and many BIOSes then stop
 *   or boot the network again instead of trying the disk (QUIRK(firmware)).
 * - UEFI: drive 0x80 is a BIOS INT 13h number, which iPXE's EFI build cannot boot; `exit` returns to the boot
 *   manager, which tries the next boot option (UEFI 2.x §3.1.1), the disk.
 * If sanboot fails (no bootable disk), `exit` hands back to the firmware all the same.
 */
export function localDiskScript(plan: BootPlan): string {
  return [
    '#!ipxe',
    `echo metalbox: ${ipxeText(plan.reason)}`,
    'iseq ${platform} efi && exit ||',
    'sanboot --no-describe --drive 0x80 || exit',
    '',
  ].join('\n');
}

/**
 * Nothing can be booted (no ephemeral image, for example): says why on the console long enough to be read,
 * then hands back to the firmware.
 */
export function problemScript(lines: string[]): string {
  return ['#!ipxe', ...lines.map((l) => `echo metalbox: ${ipxeText(l)}`), 'sleep 30', 'exit 1', ''].join('\n');
}

/**
 * For `/boot/ipxe` without an identity (an embedded script or boot menu): chain to the script of this
 * machine, filled in by iPXE's own settings (${mac:hexhyp} is aa-bb-..., ${uuid} the SMBIOS UUID).
 */
export function chainScript(baseUrl: string): string {
  return ['#!ipxe', `chain ${baseUrl}/boot/ipxe?mac=\${mac:hexhyp}&uuid=\${uuid}`, ''].join('\n');
}
