// The agent's failures. They travel to the appliance in `POST /boot/agent/v1/done` as `error.code` and end up
// in the machine's events, so the code is the stable contract (README, "The agent"); the message is for people.
// The agent runs on the machine, not in the appliance: these codes have no HTTP status of their own.

export const AGENT_ERROR_CODES = {
  AGENT_ENV_INVALID: 'METALBOX_URL or METALBOX_TOKEN is missing or malformed (kernel command line, /run/metalbox/env)',
  AGENT_USAGE: 'unknown option or missing value on the agent command line',
  AGENT_APPLIANCE_UNREACHABLE: 'the appliance did not answer (connection refused, reset or timed out, after retries)',
  AGENT_APPLIANCE_REFUSED: 'the appliance answered a request with an error status (401: the per-boot token is unknown or expired)',
  AGENT_TASK_INVALID: 'the task from the appliance is malformed or names something the agent cannot do',
  AGENT_INVENTORY_FAILED: 'the hardware inventory could not be collected',
  AGENT_DISK_NOT_FOUND: 'no disk matches the task (path, serial, or "auto": no non-removable disk without partitions in use)',
  AGENT_DISK_IO: 'reading or writing the target disk failed (I/O error, device gone)',
  AGENT_IMAGE_FETCH_FAILED: 'the image could not be downloaded (HTTP error, connection lost beyond the retries, no data for 60 s)',
  AGENT_IMAGE_CHECKSUM_MISMATCH: 'the image does not have the sha256 (or size) it was registered with; the disk was left unbootable',
  AGENT_IMAGE_CORRUPT: 'the image does not decompress (bad gzip/xz/zstd data, truncated stream)',
  AGENT_IMAGE_TOO_LARGE: 'the decompressed image is larger than the target disk',
  AGENT_PARTITION_TABLE_INVALID: 'the written image has no usable GPT or MBR, or its GPT was made for another sector size',
  AGENT_ROOT_NOT_FOUND: 'no partition of the written image holds a root file system the agent can mount (ext4, xfs, btrfs)',
  AGENT_SEED_FAILED: 'the cloud-init seed could not be written (mount, write or unmount failed)',
  AGENT_ERASE_FAILED: 'erasing a disk failed',
  AGENT_BMC_UNAVAILABLE: 'the in-band BMC (/dev/ipmi0) could not be opened or talked to (an ioctl failed)',
  AGENT_BMC_TIMEOUT: 'the in-band BMC did not answer a command in time (or answered "timeout", completion code 0xC3)',
  AGENT_BMC_COMMAND_FAILED: 'the in-band BMC refused a command (a completion code other than 0) or answered it malformed',
  AGENT_BMC_NO_LAN_CHANNEL: 'the BMC has no 802.3 LAN channel (Get Channel Info, channels 1-11)',
  AGENT_BMC_NO_ADDRESS: 'the BMC\'s LAN channel has no IP address (0.0.0.0) for the appliance to reach it at',
  AGENT_BMC_NO_FREE_USER: 'the BMC has no free user slot for the metalbox user (and none is named metalbox already)',
  AGENT_RESCUE_FAILED: 'the rescue SSH server could not be started or kept running (dropbear missing, host key generation failed, it kept exiting)',
  AGENT_INTERNAL: 'an unexpected failure inside the agent',
} as const;

export type AgentErrorCode = keyof typeof AGENT_ERROR_CODES;

export class AgentError extends Error {
  readonly code: AgentErrorCode;

  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AgentError';
    this.code = code;
  }
}

export function isAgentError(err: unknown, code?: AgentErrorCode): err is AgentError {
  return err instanceof AgentError && (code === undefined || err.code === code);
}

/** `code` of a Node error (ENOENT, EIO, ...), if any. */
export function errno(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/** A one-line description of any thrown value, for messages. */
export function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
