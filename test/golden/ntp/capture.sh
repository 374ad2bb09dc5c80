#!/usr/bin/env bash
# Re-captures the golden NTP packets in this directory from real peers (see LAB.md).
#
#   sudo bash test/golden/ntp/capture.sh [OUT_DIR]
#
# Writes raw UDP payloads: ntpdig-request.bin (ntpsec's ntpdig, which Debian's sntp and ntpdate run),
# chronyd-request.bin (chronyd -Q's first client request), and chrony's answers to ntpdig's request:
# chrony-reply.bin (chronyd -x with local stratum 3) and chrony-unsync-reply.bin (chronyd -x with no source:
# chrony 4.3 answers leap 3, stratum 0). chrony 4.3 sends no RATE kiss (it drops instead), so the kiss-o'-death
# packets are covered by the codec tests, not by a capture. Then regenerate the text dumps with
#   METALBOX_UPDATE_GOLDEN=1 npx tap test/unit/ntp-golden.test.ts
# and review the diff. CI never runs this: the golden test reads only the checked-in files.
#
# Needs root, chrony, ntpsec-ntpdig, python3. No chronyd here touches the host clock (-x), and each runs in its
# own namespace: <prefix>-s (10.77.0.1) and <prefix>-c (10.77.0.2) joined by a veth. Everything it creates is
# removed on exit, also on failure or Ctrl-C.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "${1:-$HERE}" && pwd)
PREFIX="mbx-ntpcap-$$"
SRV="$PREFIX-s"
CLI="$PREFIX-c"
TMP=$(mktemp -d "/tmp/$PREFIX.XXXXXX")
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip netns del "$CLI" 2>/dev/null || true
  ip netns del "$SRV" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() { command -v "$1" >/dev/null || { echo "capture.sh: $1 is missing ($2)" >&2; exit 1; }; }
need chronyd chrony
need ntpdig ntpsec-ntpdig
need python3 python3
[ "$(id -u)" = 0 ] || { echo "capture.sh: needs root (network namespaces)" >&2; exit 1; }

ip netns add "$SRV"
ip netns add "$CLI"
ip -n "$SRV" link set lo up
ip -n "$CLI" link set lo up
ip -n "$SRV" link add v0 type veth peer name v1 netns "$CLI"
ip -n "$SRV" addr add 10.77.0.1/24 dev v0
ip -n "$CLI" addr add 10.77.0.2/24 dev v1
ip -n "$SRV" link set v0 up
ip -n "$CLI" link set v1 up
PY="$HERE/capture.py"

# 1. The clients' requests, as our listener in the server namespace received them.
ip netns exec "$SRV" python3 "$PY" listen "$OUT/ntpdig-request.bin" & PIDS+=($!)
sleep 0.5
ip netns exec "$CLI" ntpdig -t 1 10.77.0.1 >/dev/null 2>&1 || true
wait "${PIDS[-1]}"
ip netns exec "$SRV" python3 "$PY" listen "$OUT/chronyd-request.bin" & PIDS+=($!)
sleep 0.5
ip netns exec "$CLI" chronyd -Q -u root -t 2 -f /dev/null 'server 10.77.0.1 iburst' >/dev/null 2>&1 || true
wait "${PIDS[-1]}"

# 2. chrony's answers to ntpdig's request.
serve() {  # NAME CONFIG_LINES...
  local name=$1; shift
  printf '%s\n' "$@" 'allow all' 'cmdport 0' 'bindcmdaddress /' "pidfile $TMP/$name.pid" > "$TMP/$name.conf"
  ip netns exec "$SRV" chronyd -x -d -u root -f "$TMP/$name.conf" >"$TMP/$name.log" 2>&1 & PIDS+=($!)
  sleep 1
}
stop_last() { kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; }
serve synced 'local stratum 3'
ip netns exec "$CLI" python3 "$PY" ask 10.77.0.1 "$OUT/ntpdig-request.bin" "$OUT/chrony-reply.bin"
stop_last
serve unsync
ip netns exec "$CLI" python3 "$PY" ask 10.77.0.1 "$OUT/ntpdig-request.bin" "$OUT/chrony-unsync-reply.bin"
stop_last
ls -l "$OUT"/*.bin
