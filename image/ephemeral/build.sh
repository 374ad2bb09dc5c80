#!/usr/bin/env bash
# Builds metalbox's ephemeral boot environment: Debian's kernel (vmlinuz) and a small busybox-static
# initramfs (initrd.img) whose /init brings up the NIC, tells metalbox it is up and powers off
# (see image/ephemeral/README.md). Nothing but Debian's archive is fetched, through apt.
#
# The result is cached under a key made of everything that goes into it (this script, the files it
# packs, the package versions apt would install, the options), so a second run with the same inputs
# is a lookup. The initramfs is reproducible: sorted cpio, owner 0:0, every mtime SOURCE_DATE_EPOCH,
# gzip without a name or time stamp.
#
# Output: progress and figures on stderr; on stdout three lines a caller can parse:
#   key=<cache key>  kernel=<path>  initrd=<path>
set -euo pipefail
MB_NAME=ephemeral
# The shared preamble: strict shell (PATH with sbin: depmod and modprobe), die/log, the cache lock, apt candidates.
# shellcheck source=../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/common.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$MB_REPO"

usage() {
  cat <<EOF
Usage: image/ephemeral/build.sh [OPTIONS] [OUTDIR]

Builds vmlinuz + initrd.img (cached in the cache dir) and, with OUTDIR, copies them there.

  --mirror URL          take packages from this Debian mirror (a private apt state under the cache dir)
                        instead of the sources apt is configured with
  --suite SUITE         suite for --mirror (default: bookworm)
  --keyring FILE        archive keyring for --mirror (default: /usr/share/keyrings/debian-archive-keyring.gpg)
  --kernel-package PKG  meta package whose linux-image-* dependency is the kernel (default: linux-image-amd64)
  --modules "M ..."     kernel modules to carry, with their dependencies, loaded in this order at boot
                        (default: $DEFAULT_MODULES)
  --agent               the agent: agent-hook.sh as the hook (it fetches metalbox from the appliance and runs
                        "metalbox agent") and the C runtime that binary needs (the shared libraries of the node
                        binary it is made from: \$METALBOX_NODE, else node in PATH); and dropbear, the SSH
                        server of a rescue boot (dropbear and dropbearkey of this machine's dropbear-bin, with
                        their shared libraries)
  --hook FILE           a program /init runs after the network check, before power-off; its environment
                        has every metalbox.NAME=VALUE of the kernel command line as METALBOX_NAME (URL, TOKEN,
                        MODE, ...) and what /init found: METALBOX_MAC, METALBOX_IF, METALBOX_IP
  --add SRC:DEST        put file SRC at DEST (absolute path) in the initramfs, mode kept; repeatable
  --cache DIR           cache root (default: REPO/.cache/ephemeral)
  --no-cache            build even when the cache holds this key (the result replaces the cached one)
  --print-key           print the cache key and exit (no download, no build)
  -h, --help            this text

Environment: SOURCE_DATE_EPOCH sets the mtimes in the initramfs (default: 1704067200).
EOF
}

# ext4 for the agent, which mounts a deployed root to write its cloud-init seed, with crc32c_generic: ext4's
# metadata checksums need crc32c, a soft dependency that modprobe --show-depends does not follow. ipmi_si and
# ipmi_devintf give the agent the machine's own BMC as /dev/ipmi0 (src/agent/bmc.ts).
DEFAULT_MODULES="e1000 e1000e virtio_net virtio_pci virtio_blk ata_piix sd_mod ahci nvme virtio_scsi ext4 crc32c_generic ipmi_si ipmi_devintf"
MIRROR=""
SUITE="bookworm"
KEYRING="/usr/share/keyrings/debian-archive-keyring.gpg"
KERNEL_META="linux-image-amd64"
MODULES="$DEFAULT_MODULES"
HOOK=""
AGENT=0
ADDS=()
CACHE="$REPO/.cache/ephemeral"
USE_CACHE=1
PRINT_KEY=0
OUTDIR=""
EPOCH="${SOURCE_DATE_EPOCH:-1704067200}"

while [ $# -gt 0 ]; do
  case "$1" in
    --mirror) MIRROR="${2:?--mirror needs a URL}"; shift 2 ;;
    --suite) SUITE="${2:?--suite needs a name}"; shift 2 ;;
    --keyring) KEYRING="${2:?--keyring needs a file}"; shift 2 ;;
    --kernel-package) KERNEL_META="${2:?--kernel-package needs a name}"; shift 2 ;;
    --modules) MODULES="${2:?--modules needs a list}"; shift 2 ;;
    --hook) HOOK="${2:?--hook needs a file}"; shift 2 ;;
    --agent) AGENT=1; shift ;;
    --add) ADDS+=("${2:?--add needs SRC:DEST}"); shift 2 ;;
    --cache) CACHE="${2:?--cache needs a directory}"; shift 2 ;;
    --no-cache) USE_CACHE=0; shift ;;
    --print-key) PRINT_KEY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) [ -z "$OUTDIR" ] || die "one OUTDIR only"; OUTDIR="$1"; shift ;;
  esac
done

[[ "$EPOCH" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be a number of seconds"
if [ "$AGENT" = 1 ]; then
  [ -z "$HOOK" ] || die "--agent brings its own hook: not with --hook"
  HOOK="$HERE/agent-hook.sh"
  # The agent is metalbox's single binary: a copy of this node with the bundle injected, dynamically linked
  # against glibc and libstdc++, which a busybox-static initramfs lacks. Carried at the paths ldd names
  # (the dynamic loader's default search path needs no ld.so.cache).
  NODE_BIN="${METALBOX_NODE:-$(command -v node || true)}"
  if [ -z "$NODE_BIN" ] || [ ! -x "$NODE_BIN" ]; then die "--agent: no node binary (set METALBOX_NODE)"; fi
  command -v ldd >/dev/null || die "ldd is missing (package libc-bin)"
  # Rescue (src/agent/rescue.ts): dropbear and dropbearkey, Debian's dynamically linked builds (libtomcrypt,
  # libtommath, libgmp, zlib, libcrypt), carried the same way.
  DROPBEAR="$(command -v dropbear || echo /usr/sbin/dropbear)"
  DROPBEARKEY="$(command -v dropbearkey || echo /usr/bin/dropbearkey)"
  if [ ! -x "$DROPBEAR" ] || [ ! -x "$DROPBEARKEY" ]; then
    die "--agent: dropbear is missing (package dropbear-bin; the rescue boot's SSH server)"
  fi
  ADDS+=("$DROPBEAR:/usr/sbin/dropbear" "$DROPBEARKEY:/usr/bin/dropbearkey")
  declare -A SEEN=()
  while read -r lib; do
    if [ -n "${SEEN[$lib]:-}" ]; then continue; fi
    SEEN[$lib]=1
    ADDS+=("$(readlink -f "$lib"):$lib")
  # (With several files ldd heads each one's list with "FILE:", which is not a library.)
  done < <(ldd "$NODE_BIN" "$DROPBEAR" "$DROPBEARKEY" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }')
fi
[ -z "$HOOK" ] || [ -f "$HOOK" ] || die "--hook $HOOK: no such file"
for a in "${ADDS[@]+"${ADDS[@]}"}"; do
  src="${a%%:*}"; dest="${a#*:}"
  if [ "$src" = "$a" ] || [ ! -f "$src" ]; then die "--add $a: want SRC:DEST with SRC an existing file"; fi
  [[ "$dest" == /* ]] || die "--add $a: DEST must be an absolute path"
done
for tool in apt-get apt-cache dpkg-deb modprobe depmod cpio gzip sha256sum flock; do
  command -v "$tool" >/dev/null || die "$tool is missing (packages: apt, dpkg, kmod, cpio, gzip, coreutils, util-linux)"
done

CACHE="$(mb_cache_init "$CACHE")"

# --- apt: the configured sources, or a private state for --mirror --------------------------------------
APT=()
# Downloads as root would otherwise go through the _apt sandbox user, who cannot write to the cache.
[ "$(id -u)" != 0 ] || APT+=(-o "APT::Sandbox::User=root")
if [ -n "$MIRROR" ]; then
  [ -f "$KEYRING" ] || die "--keyring $KEYRING: no such file"
  APTDIR="$CACHE/apt/$(printf '%s %s %s' "$MIRROR" "$SUITE" "$KEYRING" | sha256sum | cut -c1-16)"
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
  echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" >"$APTDIR/sources.list"
  APT+=(-o "Dir::Etc::SourceList=$APTDIR/sources.list" -o "Dir::Etc::SourceParts=$APTDIR/none"
       -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache" -o "Dir::State::status=/dev/null"
       -o "APT::Architecture=amd64" -o "APT::Architectures=amd64")
  if ! compgen -G "$APTDIR/lists/*_Packages*" >/dev/null; then
    log "apt-get update for $MIRROR $SUITE"
    apt-get "${APT[@]}" -qq update >&2
  fi
fi

# Each apt-cache call reads every package list (Debian's images keep no binary cache): ask twice only.
policy() {  # PKG... -> "PKG CANDIDATE" lines
  mb_apt_candidates "${APT[@]}" -- "$@"
}
candidates() {
  local c
  c="$(policy "$KERNEL_META" busybox-static)"
  KERNEL_META_VERSION="$(awk -v p="$KERNEL_META" '$1 == p { print $2 }' <<<"$c")"
  BUSYBOX_VERSION="$(awk '$1 == "busybox-static" { print $2 }' <<<"$c")"
  [ -n "$KERNEL_META_VERSION" ] && [ -n "$BUSYBOX_VERSION" ]
}
if ! candidates; then
  # A fresh machine (or container) may have no package lists yet: fetch them once, as root.
  [ "$(id -u)" = 0 ] || die "apt knows no candidate for $KERNEL_META or busybox-static: run apt-get update as root"
  log "apt knows no $KERNEL_META or busybox-static: apt-get update"
  apt-get "${APT[@]}" -qq update >&2
  candidates || die "apt knows no candidate for $KERNEL_META or busybox-static (after apt-get update)"
fi
# The kernel: the linux-image-<ver> package the meta package's candidate depends on, at the version it pins.
KERNEL_DEP="$(apt-cache "${APT[@]}" show "$KERNEL_META=$KERNEL_META_VERSION" 2>/dev/null |
  sed -n 's/^Depends: //p' | head -n1 | tr ',|' '\n' | sed 's/^ *//' | grep -m1 '^linux-image-' || true)"
KERNEL_PKG="${KERNEL_DEP%% *}"
[ -n "$KERNEL_PKG" ] || die "$KERNEL_META $KERNEL_META_VERSION depends on no linux-image-* package"
if [[ "$KERNEL_DEP" =~ \(=\ ([^\)]+)\) ]]; then KERNEL_VERSION="${BASH_REMATCH[1]}"
else KERNEL_VERSION="$(policy "$KERNEL_PKG" | awk '{ print $2 }')"; fi
[ -n "$KERNEL_VERSION" ] || die "apt knows no candidate for $KERNEL_PKG"
KVER="${KERNEL_PKG#linux-image-}"

# --- the cache key: every input ------------------------------------------------------------------------
filehash() { mb_hash_file "$1"; }
KEY="$({
  echo "metalbox-ephemeral 1"
  for f in build.sh init udhcpc.script; do echo "$f $(filehash "$HERE/$f")"; done
  echo "common.sh $(filehash "$MB_LIB/common.sh")"
  echo "kernel $KERNEL_PKG $KERNEL_VERSION"
  echo "busybox-static $BUSYBOX_VERSION"
  echo "modules $MODULES"
  echo "epoch $EPOCH"
  [ -z "$HOOK" ] || echo "hook $(filehash "$HOOK")"
  for a in "${ADDS[@]+"${ADDS[@]}"}"; do echo "add ${a#*:} $(filehash "${a%%:*}") $(stat -c %a "${a%%:*}")"; done
} | sha256sum | cut -c1-16)"

if [ "$PRINT_KEY" = 1 ]; then echo "key=$KEY"; exit 0; fi

DEST="$CACHE/$KEY"
finish() {
  if [ -n "$OUTDIR" ]; then
    mkdir -p "$OUTDIR"
    cp "$DEST/vmlinuz" "$DEST/initrd.img" "$OUTDIR/"
    echo "key=$KEY"; echo "kernel=$(cd "$OUTDIR" && pwd)/vmlinuz"; echo "initrd=$(cd "$OUTDIR" && pwd)/initrd.img"
  else
    echo "key=$KEY"; echo "kernel=$DEST/vmlinuz"; echo "initrd=$DEST/initrd.img"
  fi
}
cached() { [ "$USE_CACHE" = 1 ] && [ -f "$DEST/manifest" ] && [ -f "$DEST/vmlinuz" ] && [ -f "$DEST/initrd.img" ]; }

report() {  # the figures of a cached build
  local v i b
  v="$(stat -c %s "$DEST/vmlinuz")"; i="$(stat -c %s "$DEST/initrd.img")"; b="$(sed -n 's/^build_seconds=//p' "$DEST/manifest")"
  log "$1 $KEY: vmlinuz $v bytes ($KERNEL_PKG $KERNEL_VERSION), initrd.img $i bytes (busybox-static $BUSYBOX_VERSION); built in $b s"
}
if cached; then report cached; finish; exit 0; fi

# One builder per key at a time; whoever waited finds the result of the one before. (Builds of other keys,
# say with another hook, run beside it; they share only the package downloads, which have their own lock.)
# (mb_cache_lock also removes what a killed builder of this key left.)
mb_cache_lock "$CACHE" "$KEY"
if cached; then report "cached (built meanwhile)"; finish; exit 0; fi

START=$(mb_now)
WORK="$(mktemp -d "$CACHE/.build-$KEY.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- packages: downloaded once per version, verified by apt against the signed index ------------------
DEBS="$CACHE/debs"
mkdir -p "$DEBS"
fetch() {  # PKG VERSION -> path of the .deb
  local f
  exec 8>"$DEBS/.lock"
  flock 8
  f="$(compgen -G "$DEBS/${1}_*${2#*:}_amd64.deb" | head -n1 || true)"
  if [ -z "$f" ]; then
    log "apt-get download $1=$2"
    # Into a scratch dir first: a download cut short must not pass for the package next time.
    local tmp
    tmp="$(mktemp -d "$DEBS/.download.XXXXXX")"
    (cd "$tmp" && apt-get "${APT[@]}" -qq download "$1=$2" >&2) || { rm -rf "$tmp"; die "apt-get download $1=$2 failed"; }
    mv "$tmp"/*.deb "$DEBS/"
    rm -rf "$tmp"
    f="$(compgen -G "$DEBS/${1}_*${2#*:}_amd64.deb" | head -n1 || true)"
    [ -n "$f" ] || die "apt-get download $1=$2 left no .deb in $DEBS"
  fi
  exec 8>&-
  echo "$f"
}
KERNEL_DEB="$(fetch "$KERNEL_PKG" "$KERNEL_VERSION")"
BUSYBOX_DEB="$(fetch busybox-static "$BUSYBOX_VERSION")"

dpkg-deb -x "$KERNEL_DEB" "$WORK/kernel"
dpkg-deb -x "$BUSYBOX_DEB" "$WORK/busybox"
# usr-merged packages put modules under usr/lib; this kernel package uses lib/.
if [ -d "$WORK/kernel/lib/modules/$KVER" ]; then KROOT="$WORK/kernel"
elif [ -d "$WORK/kernel/usr/lib/modules/$KVER" ]; then KROOT="$WORK/kernel/usr"
else die "$KERNEL_PKG has no lib/modules/$KVER"; fi
[ -f "$WORK/kernel/boot/vmlinuz-$KVER" ] || die "$KERNEL_PKG has no boot/vmlinuz-$KVER"

# --- modules: the requested ones and what they depend on -------------------------------------------------
depmod -b "$KROOT" "$KVER"
# shellcheck disable=SC2086 # the list is words
DEPS="$(modprobe -d "$KROOT" -S "$KVER" --show-depends -a $MODULES)"
STAGE="$WORK/initrd"
MODDIR="lib/modules/$KVER"
mkdir -p "$STAGE/$MODDIR"
nmod=0
while read -r what path _; do
  case "$what" in
    insmod)
      rel="${path#"$KROOT/$MODDIR/"}"
      if [ ! -f "$STAGE/$MODDIR/$rel" ]; then
        mkdir -p "$STAGE/$MODDIR/$(dirname "$rel")"
        cp "$path" "$STAGE/$MODDIR/$rel"
        nmod=$((nmod + 1))
      fi ;;
    builtin) ;;  # compiled into this kernel: nothing to carry
    softdep) ;;
    *) [ -z "$what" ] || die "modprobe --show-depends said: $what $path" ;;
  esac
done <<<"$DEPS"
cp "$KROOT/$MODDIR/modules.order" "$KROOT/$MODDIR/modules.builtin" "$KROOT/$MODDIR/modules.builtin.modinfo" "$STAGE/$MODDIR/"
depmod -b "$STAGE" "$KVER"

# --- busybox, /init and its files -------------------------------------------------------------------------
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,etc/udhcpc,etc/metalbox,proc,sys,dev,run,tmp,root}
install -m 0755 "$WORK/busybox/bin/busybox" "$STAGE/bin/busybox"
while read -r applet; do
  [ "$applet" = bin/busybox ] || [ -e "$STAGE/$applet" ] || ln -s /bin/busybox "$STAGE/$applet"
done < <("$STAGE/bin/busybox" --list-full)
install -m 0755 "$HERE/init" "$STAGE/init"
install -m 0755 "$HERE/udhcpc.script" "$STAGE/etc/udhcpc/default.script"
echo "$MODULES" >"$STAGE/etc/metalbox/modules"
cat >"$STAGE/etc/metalbox/build" <<EOF
key=$KEY
kernel=$KERNEL_PKG $KERNEL_VERSION
busybox=busybox-static $BUSYBOX_VERSION
EOF
[ -z "$HOOK" ] || install -m 0755 "$HOOK" "$STAGE/etc/metalbox/hook"
for a in "${ADDS[@]+"${ADDS[@]}"}"; do
  src="${a%%:*}"; dest="${a#*:}"
  mkdir -p "$STAGE$(dirname "$dest")"
  install -m "$(stat -c %a "$src")" "$src" "$STAGE$dest"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$STAGE/etc/passwd"
printf 'root:x:0:\n' >"$STAGE/etc/group"
# dropbear (rescue) lets a user in only with a shell listed here (getusershell(3)).
printf '/bin/sh\n/bin/ash\n' >"$STAGE/etc/shells"
chmod 1777 "$STAGE/tmp"

# --- a reproducible archive ---------------------------------------------------------------------------------
# Modes are whatever umask gave: normalise them, then every mtime, then pack in sorted order.
find "$STAGE" -type d -exec chmod go-w,a+rx {} +
chmod 1777 "$STAGE/tmp"
find "$STAGE" -type f -exec chmod go-w,a+r {} +
find "$STAGE" -exec touch -h -d "@$EPOCH" {} +
OUT="$WORK/out"
mkdir -p "$OUT"
(cd "$STAGE" && find . -mindepth 1 -printf '%P\n' | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9 -n >"$OUT/initrd.img"
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$OUT/vmlinuz"

END=$(mb_now)
SECS="$(mb_secs "$START" "$END")"
size() { stat -c %s "$1"; }
{
  echo "key=$KEY"
  echo "kernel=$KERNEL_PKG $KERNEL_VERSION"
  echo "kver=$KVER"
  echo "busybox=busybox-static $BUSYBOX_VERSION"
  echo "modules=$MODULES"
  echo "module_files=$nmod"
  echo "vmlinuz_bytes=$(size "$OUT/vmlinuz")"
  echo "vmlinuz_sha256=$(filehash "$OUT/vmlinuz")"
  echo "initrd_bytes=$(size "$OUT/initrd.img")"
  echo "initrd_sha256=$(filehash "$OUT/initrd.img")"
  echo "build_seconds=$SECS"
} >"$OUT/manifest"

rm -rf "$DEST"
mv "$OUT" "$DEST"
log "built $KEY in ${SECS} s: vmlinuz $(size "$DEST/vmlinuz") bytes ($KERNEL_PKG $KERNEL_VERSION), initrd.img $(size "$DEST/initrd.img") bytes ($nmod modules, busybox-static $BUSYBOX_VERSION)"
finish
