#!/usr/bin/env bash
# Re-captures the golden DNS messages in this directory from real peers (see LAB.md).
#
#   sudo bash test/golden/dns/capture.sh [OUT_DIR]
#
# In a namespace of its own: a listener (python3, below) on 127.0.0.1:5399 writes the first message each dig
# sends (UDP payload, or the TCP message without its length prefix) to <name>.bin; then dnsmasq answers an
# SRV and an MX query sent by python3, and its answers (with compression pointers) are written too. Then
# regenerate the text dumps with
#   METALBOX_UPDATE_GOLDEN=1 npx tap test/unit/dns-golden.test.ts
# and review the diff. CI never runs this: the golden test reads only the checked-in files.
# Needs root, iproute2, python3, dig (bind9-dnsutils), dnsmasq (dnsmasq-base). Everything it creates is removed on exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "${1:-$HERE}" && pwd)
NS="mbx-dcap-$$"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up

listen() { # NAME udp|tcp
  ip netns exec "$NS" python3 - "$OUT/$1.bin" "$2" <<'PY' &
import socket, sys
out, proto = sys.argv[1], sys.argv[2]
if proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 5399)); s.settimeout(10)
    data, _ = s.recvfrom(65535)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 5399)); s.listen(1); s.settimeout(10)
    c, _ = s.accept(); buf = b""
    while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
        buf += c.recv(65535)
    data = buf[2:2 + int.from_bytes(buf[:2], "big")]
open(out, "wb").write(data)
PY
  sleep 0.5
}

listen dig-edns-a-query udp
ip netns exec "$NS" dig @127.0.0.1 -p 5399 +tries=1 +time=1 Node-1.Rack.Internal A >/dev/null 2>&1 || true
wait
listen dig-noedns-txt-query udp
ip netns exec "$NS" dig @127.0.0.1 -p 5399 +tries=1 +time=1 +noedns +nocookie big.rack.internal TXT >/dev/null 2>&1 || true
wait
listen dig-axfr-query tcp
ip netns exec "$NS" dig @127.0.0.1 -p 5399 +tries=1 +time=1 rack.internal AXFR >/dev/null 2>&1 || true
wait

ip netns exec "$NS" dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --user=root --pid-file= \
  --listen-address=127.0.0.1 --bind-interfaces --port=5398 --local=/rack.internal/ \
  --srv-host=_ldap._tcp.rack.internal,ldap.rack.internal,389,0,5 --mx-host=rack.internal,mail.rack.internal,10 \
  --host-record=mail.rack.internal,10.77.0.25 --host-record=ldap.rack.internal,10.77.0.26 2>/dev/null &
PIDS+=($!)
sleep 1
ip netns exec "$NS" python3 - "$OUT" <<'PY'
import socket, struct, sys
out = sys.argv[1]
def query(qid, name, qtype):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
for qid, name, qtype, file in [(0x1111, "_ldap._tcp.rack.internal", 33, "dnsmasq-srv-answer"), (0x2222, "rack.internal", 15, "dnsmasq-mx-answer"), (0x3333, "nope.rack.internal", 1, "dnsmasq-nxdomain-answer")]:
    s.sendto(query(qid, name, qtype), ("127.0.0.1", 5398))
    data, _ = s.recvfrom(65535)
    open(f"{out}/{file}.bin", "wb").write(data)
PY
ls -l "$OUT"/*.bin
