#!/usr/bin/env bash
# Builds the metalbox appliance: a bootable x86-64 disk image (raw and qcow2; BIOS and UEFI) that runs metalbox
# from systemd, configured at first boot by `metalbox setup` on the serial console (see image/appliance/README.md).
#
# Two cached stages, each under a key of everything that goes into it:
#   base     debootstrap + apt-get of the distribution, console, network, SSH off, modules pruned
#            (image/appliance/rootfs.sh): minutes, rebuilt only when the distribution or that script changes;
#   image    a copy of the base + the metalbox binary, the ephemeral environment and the units, written into a
#            GPT disk (BIOS boot, ESP, root, state) without a mount, then converted to qcow2: about a minute.
# Builders of one key are serialised with flock; a second run with the same inputs is a lookup.
#
# Needs root (debootstrap, chroot) and: debootstrap, grub-pc-bin + grub-common, grub-efi-amd64-bin, mtools +
# dosfstools, e2fsprogs >= 1.43 (mkfs.ext4 -d), fdisk (sfdisk), qemu-utils (qemu-img), util-linux (flock), kmod.
#
# Output: progress and figures on stderr; on stdout lines a caller can parse:
#   key=<cache key>  raw=<disk.raw>  qcow2=<disk.qcow2>  raw_bytes=<N>  used_bytes=<N>  qcow2_bytes=<N>
set -euo pipefail
MB_NAME=appliance
# shellcheck source=../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/common.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$MB_REPO"

usage() {
  cat <<USAGE
Usage: image/appliance/build.sh [OPTIONS]

  --distro ubuntu|debian  target distribution (default: ubuntu)
  --suite SUITE           suite (default: noble for ubuntu, bookworm for debian)
  --mirror URL            archive (default: http://archive.ubuntu.com/ubuntu, http://deb.debian.org/debian)
  --keyring FILE          archive keyring for debootstrap (default: debootstrap's for the distribution;
                          Ubuntu from a Debian host: /usr/share/keyrings/ubuntu-archive-keyring.gpg)
  --packages "P ..."      more packages in the image (firmware, tools)
  --binary FILE           the metalbox single binary (default: dist/metalbox; npm run build:binary)
  --ephemeral DIR         vmlinuz + initrd.img of the ephemeral environment (image/ephemeral/build.sh --agent);
                          registered by metalbox setup (default: none)
  --root-size MIB         root partition (default: 2048; fixed, so that an upgrade can replace it in place)
  --state-size MIB        state partition in the image (default: 512; grown to the disk at first boot)
  --out DIR               copy disk.raw, disk.qcow2 and manifest there
  --cache DIR             cache root (default: REPO/.cache/appliance)
  --no-cache              build the image stage even when cached (the base stays cached)
  --print-key             print the cache key and exit
  -h, --help              this text
USAGE
}

DISTRO=ubuntu
SUITE=""
MIRROR=""
KEYRING=""
EXTRA_PACKAGES=""
BINARY="$REPO/dist/metalbox"
EPHEMERAL=""
ROOT_MIB=2048
STATE_MIB=512
OUTDIR=""
CACHE="$REPO/.cache/appliance"
USE_CACHE=1
PRINT_KEY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --distro) DISTRO="${2:?--distro needs ubuntu or debian}"; shift 2 ;;
    --suite) SUITE="${2:?--suite needs a name}"; shift 2 ;;
    --mirror) MIRROR="${2:?--mirror needs a URL}"; shift 2 ;;
    --keyring) KEYRING="${2:?--keyring needs a file}"; shift 2 ;;
    --packages) EXTRA_PACKAGES="${2?--packages needs a list}"; shift 2 ;;
    --binary) BINARY="${2:?--binary needs a file}"; shift 2 ;;
    --ephemeral) EPHEMERAL="${2:?--ephemeral needs a directory}"; shift 2 ;;
    --root-size) ROOT_MIB="${2:?--root-size needs MiB}"; shift 2 ;;
    --state-size) STATE_MIB="${2:?--state-size needs MiB}"; shift 2 ;;
    --out) OUTDIR="${2:?--out needs a directory}"; shift 2 ;;
    --cache) CACHE="${2:?--cache needs a directory}"; shift 2 ;;
    --no-cache) USE_CACHE=0; shift ;;
    --print-key) PRINT_KEY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
  esac
done
case "$DISTRO" in
  ubuntu) : "${SUITE:=noble}"; : "${MIRROR:=http://archive.ubuntu.com/ubuntu}" ;;
  debian) : "${SUITE:=bookworm}"; : "${MIRROR:=http://deb.debian.org/debian}" ;;
  *) die "--distro must be ubuntu or debian" ;;
esac
[[ "$ROOT_MIB" =~ ^[0-9]+$ ]] && [ "$ROOT_MIB" -ge 768 ] || die "--root-size must be at least 768 (MiB)"
[[ "$STATE_MIB" =~ ^[0-9]+$ ]] && [ "$STATE_MIB" -ge 64 ] || die "--state-size must be at least 64 (MiB)"
[ -f "$BINARY" ] && [ -x "$BINARY" ] || die "--binary $BINARY: no such executable (npm run build:binary)"
if [ -n "$EPHEMERAL" ]; then
  [ -f "$EPHEMERAL/vmlinuz" ] && [ -f "$EPHEMERAL/initrd.img" ] || die "--ephemeral $EPHEMERAL: needs vmlinuz and initrd.img"
fi
[ -z "$KEYRING" ] || [ -f "$KEYRING" ] || die "--keyring $KEYRING: no such file"
mb_need_tools "debootstrap, fdisk, e2fsprogs, util-linux, grub-pc-bin, grub-common, grub-efi-amd64-bin, mtools, dosfstools, qemu-utils, kmod" \
  debootstrap sfdisk mkfs.ext4 mkfs.fat mmd mcopy grub-mkimage flock qemu-img modprobe depmod
[ -f /usr/lib/grub/i386-pc/boot.img ] || die "/usr/lib/grub/i386-pc is missing (package grub-pc-bin)"
[ -d /usr/lib/grub/x86_64-efi ] || die "/usr/lib/grub/x86_64-efi is missing (package grub-efi-amd64-bin)"

CACHE="$(mb_cache_init "$CACHE")"
# shellcheck source=rootfs.sh
source "$HERE/rootfs.sh"

# --- keys ------------------------------------------------------------------------------------------------
# The base: the distribution and the scripts that make it; with Debian, the candidates the build machine's apt
# knows for the main packages (refreshed by apt-get update), so a point release makes a new base.
VERSIONS=""
[ "$DISTRO" != debian ] || VERSIONS="$(mb_apt_candidates linux-image-amd64 systemd openssh-server ipxe)"
BASE_KEY="$({
  echo "metalbox-appliance-base 1"
  echo "common.sh $(mb_hash_file "$MB_LIB/common.sh")"
  echo "rootfs.sh $(mb_hash_file "$HERE/rootfs.sh")"
  echo "distro $DISTRO $SUITE $MIRROR ${KEYRING:+$(mb_hash_file "$KEYRING")}"
  echo "packages $(base_packages) $(root_packages)"
  echo "$VERSIONS"
  echo "debootstrap $(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || echo unknown)"
} | sha256sum | cut -c1-16)"
UNITS=("$REPO"/systemd/*)
KEY="$({
  echo "metalbox-appliance 1"
  echo "base $BASE_KEY"
  echo "build.sh $(mb_hash_file "$HERE/build.sh")"
  echo "binary $(mb_hash_file "$BINARY")"
  for f in "${UNITS[@]}"; do echo "unit ${f##*/} $(mb_hash_file "$f")"; done
  [ -z "$EPHEMERAL" ] || echo "ephemeral $(mb_hash_file "$EPHEMERAL/vmlinuz") $(mb_hash_file "$EPHEMERAL/initrd.img")"
  echo "grub $(grub-mkimage --version | awk '{ print $NF }')"
  echo "sizes $ROOT_MIB $STATE_MIB"
} | sha256sum | cut -c1-16)"
if [ "$PRINT_KEY" = 1 ]; then echo "key=$KEY"; echo "base_key=$BASE_KEY"; exit 0; fi
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"

DEST="$CACHE/$KEY"
manifest_value() { sed -n "s/^$1=//p" "$DEST/manifest"; }
finish() {
  local dir="$DEST"
  if [ -n "$OUTDIR" ]; then
    mkdir -p "$OUTDIR"
    cp --sparse=always "$DEST/disk.raw" "$OUTDIR/"
    cp "$DEST/disk.qcow2" "$DEST/manifest" "$OUTDIR/"
    dir="$(cd "$OUTDIR" && pwd)"
  fi
  echo "key=$KEY"
  echo "raw=$dir/disk.raw"
  echo "qcow2=$dir/disk.qcow2"
  for v in raw_bytes used_bytes qcow2_bytes; do echo "$v=$(manifest_value $v)"; done
}
cached() { [ "$USE_CACHE" = 1 ] && [ -f "$DEST/manifest" ] && [ -f "$DEST/disk.raw" ] && [ -f "$DEST/disk.qcow2" ]; }
report() {
  log "$1 $KEY: raw $(manifest_value raw_bytes) bytes, root used $(manifest_value used_bytes) bytes, qcow2 $(manifest_value qcow2_bytes) bytes; built in $(manifest_value build_seconds) s (base $(manifest_value base_seconds) s)"
}
if cached; then report cached; finish; exit 0; fi

# --- stage 1: the base root (cached) ----------------------------------------------------------------------
START=$(mb_now)
BASE="$CACHE/base-$BASE_KEY"
if [ ! -f "$BASE/manifest" ]; then
  mb_cache_lock "$CACHE" "base-$BASE_KEY"
  if [ ! -f "$BASE/manifest" ]; then
    WORK="$(mktemp -d "$CACHE/.build-base-$BASE_KEY.XXXXXX")"
    trap 'mb_umount_under "$WORK"; rm -rf "$WORK"' EXIT
    ROOT="$WORK/root"
    DEBS="$CACHE/debs"
    make_rootfs
    {
      echo "base_key=$BASE_KEY"
      echo "distro=$DISTRO"
      echo "suite=$SUITE"
      echo "kernel=$KVER"
      while read -r pkg version; do [ -z "$version" ] || echo "installed_$pkg=$version"; done <<<"$INSTALLED"
      echo "modules_before_mib=$MODULES_BEFORE_MIB"
      echo "modules_after_mib=$MODULES_AFTER_MIB"
      echo "debootstrap_seconds=$DEBOOTSTRAP_SECONDS"
      echo "configure_seconds=$CONFIGURE_SECONDS"
      echo "base_seconds=$(mb_secs "$START" "$(mb_now)")"
    } >"$WORK/manifest"
    mkdir -p "$WORK/base"
    mv "$WORK/root" "$WORK/manifest" "$WORK/base/"
    rm -rf "$BASE"
    mv "$WORK/base" "$BASE"
    rm -rf "$WORK"
    trap - EXIT
    log "base $BASE_KEY built in $(sed -n 's/^base_seconds=//p' "$BASE/manifest") s"
  fi
  exec 9>&-
fi
T_BASE=$(mb_now)

# --- stage 2: the image ---------------------------------------------------------------------------------
mb_cache_lock "$CACHE" "$KEY"
if cached; then report "cached (built meanwhile)"; finish; exit 0; fi
WORK="$(mktemp -d "$CACHE/.build-$KEY.XXXXXX")"
trap 'mb_umount_under "$WORK"; rm -rf "$WORK"' EXIT
ROOT="$WORK/root"
cp -a "$BASE/root" "$ROOT"
KVER="$(sed -n 's/^kernel=//p' "$BASE/manifest")"
ROOT_UUID="$(mb_uuid "$KEY" root)"
ESP_ID="$(printf '%s esp' "$KEY" | sha256sum | cut -c1-8)"
# The state file system's UUID is random per image; upgrades find it by its label.
STATE_LABEL=METALBOX-STATE
CMDLINE="console=tty0 console=ttyS0,115200n8"

# metalbox: the binary, the iPXE binaries (package ipxe, /usr/lib/ipxe = boot.ipxeDir), the ephemeral
# environment, the units.
install -m 0755 "$BINARY" "$ROOT/usr/bin/metalbox"
if [ -n "$EPHEMERAL" ]; then
  install -d "$ROOT/usr/lib/metalbox/ephemeral"
  install -m 0644 "$EPHEMERAL/vmlinuz" "$EPHEMERAL/initrd.img" "$ROOT/usr/lib/metalbox/ephemeral/"
fi
for f in "${UNITS[@]}"; do install -m 0644 "$f" "$ROOT/usr/lib/systemd/system/${f##*/}"; done
mb_in_root "$ROOT" systemctl enable metalbox.service metalbox-firstboot.service metalbox-network.service metalbox-backup.timer >/dev/null 2>&1 ||
  die "systemctl enable of the metalbox units failed"
# State and configuration live on their own partition, mounted at /var/lib/metalbox; /etc/metalbox points into
# it, so a new root (an upgrade) finds the old config, users, machines, certificate and SSH keys.
install -d -m 0700 "$ROOT/var/lib/metalbox"
rm -rf "$ROOT/etc/metalbox"
ln -s /var/lib/metalbox/etc "$ROOT/etc/metalbox"
cat >"$ROOT/etc/fstab" <<FSTAB
# metalbox appliance (image/appliance/build.sh)
UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1
LABEL=$STATE_LABEL /var/lib/metalbox ext4 defaults,x-systemd.growfs 0 2
FSTAB
# The state partition grows to the end of the disk at first boot (the image carries a small one).
mkdir -p "$ROOT/etc/repart.d"
cat >"$ROOT/etc/repart.d/50-metalbox-state.conf" <<'REPART'
# metalbox appliance: the state partition (the last one, type linux-generic) takes the rest of the disk.
[Partition]
Type=linux-generic
REPART
echo "metalbox appliance $(sed -n 's/^suite=//p' "$BASE/manifest"), image $KEY" >"$ROOT/etc/metalbox-release"

# GRUB: serial and screen, the same grub.cfg for both platforms.
mb_grub_modules "$ROOT" uefi
mb_grub_cfg "$ROOT/boot/grub/grub.cfg" "metalbox appliance (image/appliance/build.sh)" 2 metalbox "$ROOT_UUID" "$KVER" "$CMDLINE"
T_CONFIG=$(mb_now)

# --- the disk ------------------------------------------------------------------------------------------------
#   1 bios   1 MiB   GRUB core.img (BIOS boot partition)
#   2 esp    64 MiB  FAT16, EFI/BOOT/BOOTX64.EFI
#   3 root   ROOT_MIB ext4, the system (replaced by an upgrade)
#   4 state  the rest ext4 METALBOX-STATE at /var/lib/metalbox (kept by an upgrade)
ESP_START=2; ESP_MIB=64
ROOT_START=$((ESP_START + ESP_MIB))
STATE_START=$((ROOT_START + ROOT_MIB))
DISK_MIB=$((STATE_START + STATE_MIB + 1))  # +1: the backup GPT
USED=$(du -s --block-size=1 --apparent-size "$ROOT" | cut -f1)
[ $((USED * 12 / 10)) -lt $((ROOT_MIB * MB_MiB)) ] || die "the root ($USED bytes) does not fit --root-size $ROOT_MIB MiB"
DISK="$WORK/disk.raw"
truncate -s "${DISK_MIB}M" "$DISK"
sfdisk -q "$DISK" >/dev/null <<SFDISK
label: gpt
start=1MiB, size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name=bios
start=${ESP_START}MiB, size=${ESP_MIB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
start=${ROOT_START}MiB, size=${ROOT_MIB}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root
start=${STATE_START}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=metalbox-state
SFDISK
mkfs.ext4 -q -F -L root -U "$ROOT_UUID" -E "offset=$((ROOT_START * MB_MiB)),hash_seed=$ROOT_UUID" -d "$ROOT" "$DISK" "$((ROOT_MIB * 1024))k"
mkdir -p "$WORK/state/etc"
chmod 0700 "$WORK/state"
mkfs.ext4 -q -F -L "$STATE_LABEL" -E "offset=$((STATE_START * MB_MiB))" -d "$WORK/state" "$DISK" "$((STATE_MIB * 1024))k"
mb_grub_early_cfg "$WORK/early.cfg" "$ROOT_UUID"
mb_grub_bios "$DISK" "$WORK/early.cfg" "$WORK"
mb_grub_esp "$DISK" "$WORK/early.cfg" "$WORK" "$ESP_START" "$ESP_MIB" "$ESP_ID"
T_DISK=$(mb_now)
qemu-img convert -f raw -O qcow2 -c "$DISK" "$WORK/disk.qcow2"
END=$(mb_now)

OUT="$WORK/out"
mkdir -p "$OUT"
mv "$DISK" "$WORK/disk.qcow2" "$OUT/"
{
  cat "$BASE/manifest"
  echo "key=$KEY"
  echo "root_uuid=$ROOT_UUID"
  echo "state_label=$STATE_LABEL"
  echo "layout=bios:1:1 esp:$ESP_START:$ESP_MIB root:$ROOT_START:$ROOT_MIB state:$STATE_START:$STATE_MIB"
  echo "binary_sha256=$(mb_hash_file "$BINARY")"
  echo "raw_bytes=$(stat -c %s "$OUT/disk.raw")"
  echo "raw_allocated_bytes=$(( $(stat -c %b "$OUT/disk.raw") * $(stat -c %B "$OUT/disk.raw") ))"
  echo "used_bytes=$USED"
  echo "qcow2_bytes=$(stat -c %s "$OUT/disk.qcow2")"
  echo "image_configure_seconds=$(mb_secs "$T_BASE" "$T_CONFIG")"
  echo "disk_seconds=$(mb_secs "$T_CONFIG" "$T_DISK")"
  echo "qcow2_seconds=$(mb_secs "$T_DISK" "$END")"
  echo "build_seconds=$(mb_secs "$START" "$END")"
} >"$OUT/manifest"
rm -rf "$DEST"
mv "$OUT" "$DEST"
report built
finish
