// Which boot file a client gets, from what its DHCP request says about it (Pixiecore's Booter idea:
// one small decision behind one interface). Later issues replace the default with a per-machine
// decision (a deployed machine boots its disk); the DHCP server only asks this function.
export interface BootRequest {
  mac: string;
  /** RFC 4578 client system architecture (option 93), first entry. */
  arch: number | undefined;
  /** Vendor class starts with PXEClient (firmware PXE). */
  pxe: boolean;
  /** Vendor class starts with HTTPClient (UEFI HTTP boot). */
  httpClient: boolean;
  /** iPXE already runs: hand it the HTTP script. */
  ipxe: boolean;
  uuid: Buffer | undefined;
}

export interface BootChoice {
  /** Boot file name (TFTP) or URL (HTTP). */
  file: string;
  /** Fetched by TFTP from us: also send option 66. */
  tftp: boolean;
  /** Vendor class to put in the reply (UEFI HTTP boot needs "HTTPClient"). */
  vendorClass?: string;
}

export interface BootFiles { bios: string; uefi: string; httpBoot: string }

/** RFC 4578 §2.1 / IANA "Processor Architecture Types". */
export const ARCH = { BIOS: 0, EFI_IA32: 6, EFI_X64: 7, EFI_BC: 9, EFI_X64_HTTP: 16 } as const;

/** The URL of a machine's iPXE script on our HTTP boot server. */
export function ipxeScriptUrl(server: string, httpPort: number, mac: string): string {
  return `http://${server}:${httpPort}/boot/${mac.replace(/:/g, '-')}.ipxe`;
}

/** The default decision: by client type and architecture, from the configured boot files. */
export type BootDecider = (req: BootRequest, serverIp: string) => BootChoice | undefined;

export function defaultBoot(files: BootFiles, httpPort: number): BootDecider {
  return (req, server) => {
    if (req.ipxe) return { file: ipxeScriptUrl(server, httpPort, req.mac), tftp: false };
    if (req.httpClient) return { file: `http://${server}:${httpPort}/boot/${files.httpBoot}`, tftp: false, vendorClass: 'HTTPClient' };
    if (!req.pxe) return undefined;
    switch (req.arch ?? ARCH.BIOS) {
      case ARCH.BIOS: return { file: files.bios, tftp: true };
      case ARCH.EFI_X64:
      case ARCH.EFI_BC: return { file: files.uefi, tftp: true };
      default: return undefined; // no loader for this architecture (IA32 EFI, ARM, ...)
    }
  };
}
