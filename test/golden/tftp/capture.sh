#!/usr/bin/env bash
# Re-captures the golden TFTP client packets in this directory from real clients (see LAB.md).
#
#   sudo bash test/golden/tftp/capture.sh [OUT_DIR]
#
# A listener (python3, below) in namespace <prefix>-s takes each client's RRQ on 10.79.0.1:69 and writes
# its UDP payload to <name>-rrq.bin; for atftp it answers with an OACK from a new port and records the
# client's ACK 0 too, then ends the transfer with ERROR 0 "capture done". Then regenerate the text dumps with
#   METALBOX_UPDATE_GOLDEN=1 npx tap test/unit/tftp-golden.test.ts
# and review the diff. CI never runs this: the golden test reads only the checked-in files.
# Needs root, iproute2, python3, tftp-hpa, atftp. Everything it creates is removed on exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "${1:-$HERE}" && pwd)
PREFIX="mbx-tcap-$$"
SRV="$PREFIX-s"
CLI="$PREFIX-c"
LISTENER=""
cleanup() {
  [ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null || true
  ip netns del "$SRV" 2>/dev/null || true
  ip netns del "$CLI" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$SRV"; ip netns add "$CLI"
ip -n "$SRV" link add s0 type veth peer name c0 netns "$CLI"
ip -n "$SRV" addr add 10.79.0.1/24 dev s0; ip -n "$CLI" addr add 10.79.0.2/24 dev c0
ip -n "$SRV" link set s0 up; ip -n "$CLI" link set c0 up; ip -n "$SRV" link set lo up; ip -n "$CLI" link set lo up

capture() { # NAME CLIENT-COMMAND...
  local name=$1; shift
  ip netns exec "$SRV" python3 - "$OUT/$name" <<'PY' &
import socket, sys
out = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.79.0.1", 69))
s.settimeout(10)
data, peer = s.recvfrom(65535)
open(out + "-rrq.bin", "wb").write(data)
if b"blksize" in data.lower():
    t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t.bind(("10.79.0.1", 0))
    t.settimeout(5)
    t.sendto(b"\x00\x06blksize\x001468\x00tsize\x0012345\x00", peer)
    ack, _ = t.recvfrom(65535)
    open(out + "-ack.bin", "wb").write(ack)
    t.sendto(b"\x00\x05\x00\x00capture done\x00", peer)
else:
    s.sendto(b"\x00\x05\x00\x01capture done\x00", peer)
PY
  LISTENER=$!
  sleep 0.5
  ip netns exec "$CLI" "$@" >/dev/null 2>&1 || true
  wait "$LISTENER" || true
  LISTENER=""
}
capture tftp-hpa-octet tftp -m binary 10.79.0.1 -c get undionly.kpxe /dev/null
capture tftp-hpa-netascii tftp 10.79.0.1 -c get pxelinux.cfg/default /dev/null
capture atftp-options atftp --option "blksize 1468" --option "tsize 0" --option "windowsize 8" -g -r ipxe/snponly.efi -l /dev/null 10.79.0.1
ls -l "$OUT"/*.bin
