#!/usr/bin/env bash
# Re-captures the golden DHCP client messages in this directory from real clients (see LAB.md).
#
#   sudo bash test/golden/dhcp/capture.sh [OUT_DIR] [CLIENT...]
#
# CLIENT is any of: udhcpc udhcpc-pxe dhclient udhcpc-relayed ipxe-seabios ovmf-pxe (default: all). OUT_DIR defaults to
# this directory. Each client writes <client>-discover.bin and <client>-request.bin: raw UDP payloads as the
# listener (capture-listener.ts, our own decoder and encoder) received them; it answers each DISCOVER with a
# minimal OFFER so that the client sends its REQUEST. Then regenerate the text dumps with
#   METALBOX_UPDATE_GOLDEN=1 npx tap test/unit/dhcp-golden.test.ts
# and review the diff. CI never runs this: the golden test reads only the checked-in files.
#
# Needs root, busybox, isc-dhcp-client, isc-dhcp-relay, qemu-system-x86, ipxe-qemu (NIC ROMs), ovmf, node with
# the repo's node_modules. Topology: namespace <prefix>-s holds bridge br0 (10.77.0.1/24), the listener, a tap
# for QEMU and one end of a veth whose other end is eth0 in namespace <prefix>-c, where udhcpc and dhclient run.
# For udhcpc-relayed, dhcrelay runs in <prefix>-r (up0 10.77.0.2 on the bridge, down0 10.78.0.1) and adds
# option 82 (circuit id = its interface name) for udhcpc in <prefix>-d behind it.
# Everything it creates (namespaces, VMs, listener, clients) is removed on exit, also on failure or Ctrl-C.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
OUT=$(cd "${1:-$HERE}" && pwd)
shift || true
CLIENTS=("$@")
[ ${#CLIENTS[@]} -gt 0 ] || CLIENTS=(udhcpc udhcpc-pxe dhclient udhcpc-relayed ipxe-seabios ovmf-pxe)

PREFIX="mbx-cap-$$"
SRV="$PREFIX-s"
CLI="$PREFIX-c"
RLY="$PREFIX-r"
CL2="$PREFIX-d"
TMP=$(mktemp -d "/tmp/$PREFIX.XXXXXX")
PIDS=()

# Fixed identities so a re-capture differs only where the client itself varies (xid, secs, timing).
UUID=8b3c6a52-2f0e-4c7b-9d55-0a1b2c3d4e5f
MAC_VETH=02:00:00:77:00:21
MAC_SEABIOS=52:54:00:77:00:10
MAC_OVMF=52:54:00:77:00:11

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  local ns
  for ns in "$CL2" "$RLY" "$CLI" "$SRV"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() { command -v "$1" >/dev/null || { echo "capture.sh: $1 is missing ($2)" >&2; exit 1; }; }
need busybox busybox
need dhclient isc-dhcp-client
need qemu-system-x86_64 qemu-system-x86
need dhcrelay isc-dhcp-relay
need node nodejs
[ "$(id -u)" = 0 ] || { echo "capture.sh: needs root (network namespaces)" >&2; exit 1; }

# --- the rack: bridge + listener side, and a client namespace on a veth -------------------------------
ip netns add "$SRV"
ip netns add "$CLI"
ip -n "$SRV" link set lo up
ip -n "$CLI" link set lo up
ip -n "$SRV" link add br0 type bridge
ip -n "$SRV" link set br0 type bridge stp_state 0 forward_delay 0
ip -n "$SRV" addr add 10.77.0.1/24 dev br0
ip -n "$SRV" link set br0 up
# The listener's OFFER goes to 255.255.255.255; without a default route the kernel needs to be told where.
ip -n "$SRV" route add 255.255.255.255/32 dev br0
ip -n "$SRV" link add vs0 type veth peer name eth0 netns "$CLI"
ip -n "$SRV" link set vs0 master br0
ip -n "$SRV" link set vs0 up
ip -n "$CLI" link set eth0 address "$MAC_VETH"
ip -n "$CLI" link set eth0 up
ip -n "$SRV" tuntap add dev tap0 mode tap
ip -n "$SRV" link set tap0 master br0
ip -n "$SRV" link set tap0 up

# A relay between the bridge and a second client namespace; the listener reaches 10.78.0.0/24 through it.
ip netns add "$RLY"
ip netns add "$CL2"
ip -n "$RLY" link set lo up
ip -n "$CL2" link set lo up
ip -n "$SRV" link add vs1 type veth peer name up0 netns "$RLY"
ip -n "$SRV" link set vs1 master br0
ip -n "$SRV" link set vs1 up
ip -n "$RLY" addr add 10.77.0.2/24 dev up0
ip -n "$RLY" link set up0 up
ip -n "$RLY" link add down0 type veth peer name eth0 netns "$CL2"
ip -n "$RLY" addr add 10.78.0.1/24 dev down0
ip -n "$RLY" link set down0 up
ip -n "$CL2" link set eth0 address "$MAC_VETH"
ip -n "$CL2" link set eth0 up
ip -n "$SRV" route add 10.78.0.0/24 via 10.77.0.2

# start_listener LABEL TIMEOUT: starts the listener in the rack and waits until it is bound.
start_listener() {
  local ready="$TMP/$1.ready"
  (cd "$REPO" && exec ip netns exec "$SRV" node --import tsx "$HERE/capture-listener.ts" \
    --out "$OUT" --label "$1" --offer --timeout "$2" --ready "$ready") &
  LISTENER=$!
  PIDS+=("$LISTENER")
  for _ in $(seq 100); do [ -e "$ready" ] && return 0; sleep 0.1; done
  echo "capture.sh: listener for $1 did not start" >&2
  exit 1
}

# run_client LABEL TIMEOUT CMD...: runs CMD in the background until the listener has the client's
# DISCOVER and REQUEST (or times out), then stops CMD.
run_client() {
  local label=$1 timeout=$2
  shift 2
  rm -f "$OUT/$label"-*.bin
  start_listener "$label" "$timeout"
  "$@" >"$TMP/$label.log" 2>&1 </dev/null &
  local client=$!
  PIDS+=("$client")
  local status=0
  wait "$LISTENER" || status=$?
  kill "$client" 2>/dev/null || true
  wait "$client" 2>/dev/null || true
  if [ "$status" != 0 ]; then
    echo "capture.sh: $label: no DISCOVER+REQUEST within ${timeout}s; client log:" >&2
    tail -20 "$TMP/$label.log" >&2
    exit 1
  fi
  echo "capture.sh: $label: $(cd "$OUT" && ls "$label"-*.bin | tr '\n' ' ')"
}

# Debian's default dhclient.conf request list, with a fixed host name instead of gethostname().
cat >"$TMP/dhclient.conf" <<'CONF'
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
send host-name "mbx-node";
request subnet-mask, broadcast-address, time-offset, routers,
        domain-name, domain-name-servers, domain-search, host-name,
        dhcp6.name-servers, dhcp6.domain-search, dhcp6.fqdn, dhcp6.sntp-servers,
        netbios-name-servers, netbios-scope, interface-mtu,
        rfc3442-classless-static-routes, ntp-servers;
CONF

for client in "${CLIENTS[@]}"; do
  case "$client" in
    udhcpc)
      run_client udhcpc 30 ip netns exec "$CLI" busybox udhcpc -i eth0 -n -q -t 5 -T 2 -s /bin/true ;;
    udhcpc-pxe)
      # What Tinkerbell smee's end-to-end test runs: a PXE-looking client (vendor class, arch 0).
      run_client udhcpc-pxe 30 ip netns exec "$CLI" busybox udhcpc -i eth0 -n -q -V PXEClient -x 0x5d:0000 -t 5 -T 2 -s /bin/true ;;
    dhclient)
      run_client dhclient 60 ip netns exec "$CLI" dhclient -1 -v -d -cf "$TMP/dhclient.conf" \
        -lf "$TMP/dhclient.leases" -pf "$TMP/dhclient.pid" -sf /bin/true eth0 ;;
    udhcpc-relayed)
      # dhcrelay adds option 82 and giaddr; the listener answers the relay, which passes the OFFER on.
      ip netns exec "$RLY" dhcrelay -4 -d -a -pf "$TMP/dhcrelay.pid" -iu up0 -id down0 10.77.0.1 >"$TMP/dhcrelay.log" 2>&1 </dev/null &
      PIDS+=("$!")
      sleep 1
      run_client udhcpc-relayed 30 ip netns exec "$CL2" busybox udhcpc -i eth0 -n -q -V PXEClient -x 0x5d:0007 -t 5 -T 2 -s /bin/true ;;
    ipxe-seabios)
      # SeaBIOS boots the e1000's option ROM, which is iPXE (package ipxe-qemu): user class "iPXE", option 175.
      run_client ipxe-seabios 120 ip netns exec "$SRV" qemu-system-x86_64 -accel tcg -m 256 \
        -display none -monitor none -serial "file:$TMP/seabios.serial" -uuid "$UUID" \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device "e1000,netdev=n0,mac=$MAC_SEABIOS" -boot n ;;
    ovmf-pxe)
      # OVMF's own PXE (empty romfile: no iPXE ROM): firmware PXE, arch 7 (x64 UEFI). Slow under TCG.
      cp /usr/share/OVMF/OVMF_VARS.fd "$TMP/ovmf-vars.fd"
      run_client ovmf-pxe 240 ip netns exec "$SRV" qemu-system-x86_64 -accel tcg -m 512 \
        -display none -monitor none -serial "file:$TMP/ovmf.serial" -uuid "$UUID" \
        -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd \
        -drive "if=pflash,format=raw,file=$TMP/ovmf-vars.fd" \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
        -device "virtio-net-pci,netdev=n0,mac=$MAC_OVMF,romfile=" ;;
    *)
      echo "capture.sh: unknown client $client" >&2
      exit 1 ;;
  esac
done
