#!/bin/sh
# The ephemeral environment's hook (build.sh --agent puts it in the initramfs with the C runtime the agent
# needs): fetches metalbox's own executable from the appliance and runs it as `metalbox agent`
# (.notes/agent-contract.md). /init runs this after the network check with METALBOX_URL, METALBOX_TOKEN,
# METALBOX_MODE, ... in the environment and in /run/metalbox/env, and prints METALBOX-EPHEMERAL-HOOK rc=N with
# our exit code. The binary (about 90 MB) goes to /run (tmpfs, half the RAM): the machine needs >= 512 MiB.
# busybox ash; the token is never printed.
BIN=/run/metalbox/metalbox
say() {
  echo "metalbox-agent-hook: $*"
  # As /init does: the marker lines must reach the serial port even when the console is a screen.
  if [ -c /dev/ttyS0 ] && ! grep -qw ttyS0 /sys/class/tty/console/active 2>/dev/null; then
    echo "metalbox-agent-hook: $*" >/dev/ttyS0 2>/dev/null
  fi
}

if [ -z "$METALBOX_URL" ]; then
  say "no metalbox.url on the kernel command line: nothing to fetch the agent from"
  exit 2
fi
URL="${METALBOX_URL%/}/boot/agent/metalbox"

# Three tries: a provisioning network that just came up may drop the first connection. The ETag is the
# file's sha-256 (the appliance's contract): a cut or damaged download is caught before it runs.
try=1
while :; do
  rm -f "$BIN.part" /run/metalbox/agent.headers
  # QUIRK(busybox 1.35 static): `wget -T N` segfaults; timeout(1) bounds the download instead.
  if timeout 600 wget -q -S -O "$BIN.part" "$URL" 2>/run/metalbox/agent.headers; then
    want="$(sed -n 's/^ *[Ee][Tt][Aa][Gg]: *"\([0-9a-f]\{64\}\)".*/\1/p' /run/metalbox/agent.headers | tail -n 1)"
    got="$(sha256sum "$BIN.part" | cut -d' ' -f1)"
    if [ -z "$want" ] || [ "$want" = "$got" ]; then break; fi
    say "GET $URL (try $try): sha-256 $got, the appliance says $want"
  else
    say "GET $URL (try $try) failed: $(grep -v '^ ' /run/metalbox/agent.headers | tail -n 2 | tr '\n' ' ')"
  fi
  if [ "$try" -ge 3 ]; then
    rm -f "$BIN.part"
    exit 3
  fi
  try=$((try + 1))
  sleep 2
done
chmod 0755 "$BIN.part"
mv "$BIN.part" "$BIN"
say "agent $(stat -c %s "$BIN") bytes from $URL"

# The agent reads /run/metalbox/env itself; its native addons are unpacked to a private dir on tmpfs.
export METALBOX_RUNTIME_DIR=/run/metalbox/runtime
exec "$BIN" agent
