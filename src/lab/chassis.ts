// The virtual rack's hardware: what each machine's simulated BMC (OpenIPMI's ipmi_sim) runs to control its
// chassis. ipmi_sim calls the chassis_control program as `PROGRAM ARGS get power|boot` and
// `PROGRAM ARGS set power 1|0 | reset 1 | shutdown 1 | boot pxe|default|... | identify ...` (../shared/LAB.md
// "A real BMC"); this script makes that a QEMU machine: power on starts QEMU (daemonised, so that ipmi_sim's
// pipe is not held by the VM), power off kills it, reset and shutdown go through QEMU's QMP socket. The boot
// device the BMC was given picks QEMU's boot order at the next power on: network first for pxe, the disk
// first otherwise (the other one second, as a server's firmware falls through its boot list).
//
// Each machine's directory holds its `vm.conf` (the QEMU arguments but the boot order, one per line), its
// disk, `serial.log` (appended across power cycles), `qemu.pid`, `qmp.sock`, `boot` and `events` (every set
// the BMC was asked for, in order: what a test or the operator reads back).

/** The chassis_control program. Arguments: the machine's directory, then ipmi_sim's. */
export const CHASSIS_SCRIPT = `#!/bin/sh
# metalbox lab: chassis_control for ipmi_sim (src/lab/chassis.ts). $0 DIR get|set PARM [VALUE] ...
dir=$1; shift
op=$1; shift
running() { [ -f "$dir/qemu.pid" ] && kill -0 "$(cat "$dir/qemu.pid")" 2>/dev/null; }
qmp() { printf '{"execute":"qmp_capabilities"}\\n{"execute":"%s"}\\n' "$1" | socat -t 2 - "UNIX-CONNECT:$dir/qmp.sock" >/dev/null 2>&1; }
start() {
  case "$(cat "$dir/boot" 2>/dev/null)" in
    pxe) order=nc ;;
    *) order=cn ;;
  esac
  rm -f "$dir/qemu.pid"
  # One argument per line in vm.conf (paths hold no newline); no word splitting of the values.
  set --
  while IFS= read -r a; do set -- "$@" "$a"; done < "$dir/vm.conf"
  qemu-system-x86_64 "$@" -boot "order=$order" -pidfile "$dir/qemu.pid" -daemonize </dev/null >>"$dir/qemu.log" 2>&1
}
case $op in
get)
  for p in "$@"; do
    case $p in
      power) if running; then echo power:1; else echo power:0; fi ;;
      boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
      *) exit 1 ;;
    esac
  done ;;
set)
  while [ $# -ge 2 ]; do
    p=$1; v=$2; shift 2
    echo "$(date +%s) $p $v" >> "$dir/events"
    case $p in
      power)
        if [ "$v" = 1 ]; then
          running || start
        elif running; then
          kill -9 "$(cat "$dir/qemu.pid")"; rm -f "$dir/qemu.pid"
        fi ;;
      reset) running && qmp system_reset ;;
      shutdown) running && qmp system_powerdown ;;
      boot) echo "$v" > "$dir/boot" ;;
      identify) ;;
      *) exit 1 ;;
    esac
  done ;;
*) exit 1 ;;
esac
exit 0
`;

/** ipmi_sim's emulation file: one BMC at 0x20 (LAB.md). */
export const EMULATION = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
`;

export interface BmcConf {
  name: string;
  address: string;
  /** The system GUID as a UUID string; ipmi_sim is given its bytes least significant first (IPMI v2.0 §22.14). */
  uuid: string;
  chassisControl: string;
  username: string;
  password: string;
}

/** lan.conf of one machine's BMC: RMCP+ on ADDRESS:623, one administrator, the chassis script. */
export function lanConf(b: BmcConf): string {
  const auths = 'none md2 md5 straight';
  const guid = Buffer.from(b.uuid.replace(/-/g, ''), 'hex').reverse().toString('hex');
  return [
    `name "${b.name}"`,
    'set_working_mc 0x20',
    '  startlan 1',
    `    addr ${b.address} 623`,
    '    priv_limit admin',
    ...['callback', 'user', 'operator', 'admin'].map((p) => `    allowed_auths_${p} ${auths}`),
    `    guid ${guid}`,
    '  endlan',
    `  chassis_control "${b.chassisControl}"`,
    `  user 2 true "${b.username}" "${b.password}" admin 10 ${auths}`,
    '',
  ].join('\n');
}

export interface VmConf {
  name: string;
  memoryMiB: number;
  uuid: string;
  mac: string;
  tap: string;
  disk: string;
  serialLog: string;
  qmp: string;
  /** Use /dev/kvm when this host has it (else TCG). */
  kvm: boolean;
}

/** QEMU's arguments for one machine, one per line (vm.conf); the boot order is added at power on. */
export function vmConf(v: VmConf): string {
  return [
    '-name', v.name,
    '-accel', v.kvm ? 'kvm' : 'tcg',
    '-m', String(v.memoryMiB),
    '-smp', '1',
    '-display', 'none',
    '-no-user-config',
    '-nodefaults',
    '-uuid', v.uuid,
    // virtio-net: QEMU's iPXE option ROM for it (package ipxe-qemu) is the machine's PXE firmware, and both the
    // ephemeral environment and the test image's cloud kernel have its driver (the cloud kernel has no e1000).
    '-netdev', `tap,id=n0,ifname=${v.tap},script=no,downscript=no`,
    '-device', `virtio-net-pci,netdev=n0,mac=${v.mac}`,
    '-drive', `file=${v.disk},if=virtio,format=raw,cache=unsafe`,
    '-chardev', `file,id=s0,path=${v.serialLog},append=on`,
    '-serial', 'chardev:s0',
    '-qmp', `unix:${v.qmp},server=on,wait=off`,
    '',
  ].join('\n');
}
