#!/usr/bin/env bash
# Re-captures the golden IPMI exchanges in this directory: ipmitool -I lanplus -C 3 (and rmcp_ping) talking
# to OpenIPMI's ipmi_sim, recorded by a relay in between (see LAB.md, "A real BMC").
#
#   sudo bash test/golden/ipmi/capture.sh [OUT_DIR] [SCENARIO...]
#
# Each scenario writes SCENARIO.bin: every datagram of the exchange in order, as records of a direction byte
# ('C' console -> BMC, 'B' BMC -> console), a 2-byte big-endian length and the UDP payload (capture-relay.ts).
# Then regenerate the text dumps with
#   METALBOX_UPDATE_GOLDEN=1 npx tap test/unit/ipmi-golden.test.ts
# and review the diff. CI never runs this: the golden test reads only the checked-in files.
#
# The user is admin / password, both public, so the golden test derives each session's keys (SIK, K1, K2)
# from the captured RAKP messages and decrypts and verifies every packet; nothing secret is recorded.
#
# Needs root, iproute2, openipmi (ipmi_sim, rmcp_ping), ipmitool, node with the repo's node_modules.
# Topology: one namespace <prefix>; bridge br0 holds 10.94.0.2 (the relay, where the clients send) and
# 10.94.0.10 (ipmi_sim), whose system GUID is 8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f (sent least significant
# byte first, §22.14). Everything it creates is removed on exit, also on failure or Ctrl-C.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
OUT=$(cd "${1:-$HERE}" && pwd)
shift || true
SCENARIOS=("$@")
ALL=(asf-ping power-status power-on power-soft bootdev-pxe-efi-persistent bootdev-disk bootparam-get identify mc-info mc-guid wrong-password suite17-refused)
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=("${ALL[@]}")

NS="mbx-icap-$$"
RELAY=10.94.0.2
BMC=10.94.0.10
TMP=$(mktemp -d "/tmp/$NS.XXXXXX")
SIM=""

cleanup() {
  [ -n "$SIM" ] && kill "$SIM" 2>/dev/null || true
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() { command -v "$1" >/dev/null || { echo "capture.sh: $1 is missing ($2)" >&2; exit 1; }; }
need ipmi_sim openipmi
need rmcp_ping openipmi
need ipmitool ipmitool
need node nodejs
[ "$(id -u)" = 0 ] || { echo "capture.sh: needs root (network namespaces)" >&2; exit 1; }

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add br0 type bridge
ip -n "$NS" addr add "$RELAY/24" dev br0
ip -n "$NS" addr add "$BMC/24" dev br0
ip -n "$NS" link set br0 up

# A chassis_control script that keeps the power state and boot device in files (ipmi_sim runs
# "SCRIPT DIR get power" and "SCRIPT DIR set power 1|boot pxe|identify '10 0'|...").
mkdir -p "$TMP/chassis" "$TMP/sim"
echo 0 >"$TMP/chassis/power"
echo default >"$TMP/chassis/boot"
cat >"$TMP/chassis.sh" <<'SCRIPT'
#!/bin/sh
dir=$1; shift; op=$1; shift
case $op in
get) for p in "$@"; do case $p in power) echo "power:$(cat "$dir/power")" ;; boot) echo "boot:$(cat "$dir/boot")" ;; esac; done ;;
set) while [ $# -ge 2 ]; do case $1 in power) echo "$2" >"$dir/power" ;; shutdown) echo 0 >"$dir/power" ;; boot) echo "$2" >"$dir/boot" ;; esac; shift 2; done ;;
esac
exit 0
SCRIPT
chmod +x "$TMP/chassis.sh"
cat >"$TMP/node.emu" <<'EMU'
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
EMU
cat >"$TMP/lan.conf" <<CONF
name "golden"
set_working_mc 0x20
  startlan 1
    addr $BMC 623
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid 5f4e3d2c1b0a559d7b4c0e2f526a3c8b
  endlan
  chassis_control "$TMP/chassis.sh $TMP/chassis"
  user 2 true "admin" "password" admin 10 none md2 md5 straight
CONF
ip netns exec "$NS" ipmi_sim -c "$TMP/lan.conf" -f "$TMP/node.emu" -s "$TMP/sim" -n >"$TMP/sim.log" 2>&1 </dev/null &
SIM=$!
for _ in $(seq 100); do ip netns exec "$NS" ss -Hlun | grep -q "$BMC:623" && break; sleep 0.1; done

# capture NAME CMD...: runs CMD (in the namespace, against the relay) while the relay records NAME.bin.
capture() {
  local name=$1
  shift
  local ready="$TMP/$name.ready"
  (cd "$REPO" && exec ip netns exec "$NS" node --import tsx "$HERE/capture-relay.ts" \
    --out "$OUT" --label "$name" --listen "$RELAY" --bmc "$BMC" --ready "$ready" --idle 1500) &
  local relay=$!
  for _ in $(seq 100); do [ -e "$ready" ] && break; sleep 0.1; done
  ip netns exec "$NS" "$@" >"$TMP/$name.out" 2>&1 || true
  wait "$relay" || { echo "capture.sh: $name: nothing relayed; client said:" >&2; cat "$TMP/$name.out" >&2; exit 1; }
  echo "capture.sh: $name: $(wc -c <"$OUT/$name.bin") bytes; client said: $(tr '\n' ' ' <"$TMP/$name.out" | cut -c1-100)"
}

I=(ipmitool -I lanplus -C 3 -H "$RELAY" -U admin -P password)
for s in "${SCENARIOS[@]}"; do
  case "$s" in
    asf-ping) capture "$s" rmcp_ping -t 1 "$RELAY" ;;
    power-status) capture "$s" "${I[@]}" chassis power status ;;
    power-on) capture "$s" "${I[@]}" chassis power on ;;
    power-soft) capture "$s" "${I[@]}" chassis power soft ;;
    bootdev-pxe-efi-persistent) capture "$s" "${I[@]}" chassis bootdev pxe options=efiboot,persistent ;;
    bootdev-disk) capture "$s" "${I[@]}" chassis bootdev disk ;;
    bootparam-get) capture "$s" "${I[@]}" chassis bootparam get 5 ;;
    identify) capture "$s" "${I[@]}" chassis identify 10 ;;
    mc-info) capture "$s" "${I[@]}" mc info ;;
    mc-guid) capture "$s" "${I[@]}" mc guid ;;
    wrong-password) capture "$s" ipmitool -I lanplus -C 3 -H "$RELAY" -U admin -P wrongpassword chassis power status ;;
    suite17-refused) capture "$s" ipmitool -I lanplus -C 17 -H "$RELAY" -U admin -P password chassis power status ;;
    *) echo "capture.sh: unknown scenario $s (known: ${ALL[*]})" >&2; exit 1 ;;
  esac
done
