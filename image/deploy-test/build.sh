#!/usr/bin/env bash
# Builds a small deployable Debian 12 disk image with cloud-init: what metalbox's deploy path writes to a
# machine's disk in the tests (see image/deploy-test/README.md). Nothing but Debian's archive is fetched.
#
# The image: GPT with a BIOS boot partition (GRUB's core.img), an EFI system partition (GRUB as
# EFI/BOOT/BOOTX64.EFI, the removable-media path firmware boots without NVRAM entries) and an ext4 root as the
# LAST partition (cloud-init's growpart grows it to the disk on first boot). The root is made by
# `mkfs.ext4 -d` straight into the image file, GRUB's boot code written into it the way grub-bios-setup
# does: no loop device and no mount (only the chroot's /proc, /sys, /dev).
# Serial console on ttyS0 (GRUB and kernel). Shipped compressed (gzip by default: Node's zlib inflates it
# natively; zstd and xz are options).
#
# The result is cached under a key made of everything that goes into it (this script, the candidate versions
# of the main packages, the debootstrap and GRUB versions, the options), like image/ephemeral/build.sh: a
# second run with the same inputs is a lookup; builders of one key are serialised with flock.
#
# Needs root (debootstrap, chroot) and: debootstrap, grub-pc-bin + grub-common (grub-mkimage, boot.img),
# grub-efi-amd64-bin (grub-mkimage x86_64-efi), mtools + dosfstools (the ESP, no mount), e2fsprogs >= 1.43
# (mkfs.ext4 -d), fdisk (sfdisk), util-linux (flock), gzip/zstd/xz.
#
# Output: progress and figures on stderr; on stdout lines a caller can parse:
#   key=<cache key>  image=<compressed disk image>  compression=gzip|zstd|xz|none  raw_bytes=<N>
#   kernel=<vmlinuz>  initrd=<initrd.img>  (the image's own kernel and initrd, for `metalbox images add`)
set -euo pipefail
MB_NAME=deploy-test
# The shared preamble: strict shell, die/log, the cache lock, debootstrap + apt, GRUB written into the image.
# shellcheck source=../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/common.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$MB_REPO"

usage() {
  cat <<EOF
Usage: image/deploy-test/build.sh [OPTIONS] [OUTDIR]

Builds disk.img.<ext> + vmlinuz + initrd.img (cached in the cache dir) and, with OUTDIR, copies them there.

  --mirror URL          Debian mirror for debootstrap (default: $DEFAULT_MIRROR)
  --suite SUITE         suite (default: bookworm)
  --kernel-package PKG  kernel meta package (default: linux-image-cloud-amd64; linux-image-amd64 for real
                        hardware drivers, about 300 MB more)
  --compress KIND       gzip (default), zstd, xz or none
  --no-uefi             BIOS boot only (no ESP, no grub-efi)
  --cache DIR           cache root (default: REPO/.cache/deploy-test)
  --no-cache            build even when the cache holds this key (the result replaces the cached one)
  --print-key           print the cache key and exit (no download, no build)
  -h, --help            this text
EOF
}

DEFAULT_MIRROR="http://deb.debian.org/debian"
MIRROR="$DEFAULT_MIRROR"
SUITE="bookworm"
KERNEL_META="linux-image-cloud-amd64"
COMPRESS="gzip"
UEFI=1
CACHE="$REPO/.cache/deploy-test"
USE_CACHE=1
PRINT_KEY=0
OUTDIR=""

while [ $# -gt 0 ]; do
  case "$1" in
    --mirror) MIRROR="${2:?--mirror needs a URL}"; shift 2 ;;
    --suite) SUITE="${2:?--suite needs a name}"; shift 2 ;;
    --kernel-package) KERNEL_META="${2:?--kernel-package needs a name}"; shift 2 ;;
    --compress) COMPRESS="${2:?--compress needs gzip, zstd, xz or none}"; shift 2 ;;
    --no-uefi) UEFI=0; shift ;;
    --cache) CACHE="${2:?--cache needs a directory}"; shift 2 ;;
    --no-cache) USE_CACHE=0; shift ;;
    --print-key) PRINT_KEY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) [ -z "$OUTDIR" ] || die "one OUTDIR only"; OUTDIR="$1"; shift ;;
  esac
done

case "$COMPRESS" in
  gzip) EXT=.gz; COMPRESSOR=(gzip -6 -n -c) ;;
  zstd) EXT=.zst; COMPRESSOR=(zstd -q -T0 -12 -c) ;;
  xz) EXT=.xz; COMPRESSOR=(xz -T0 -6 -c) ;;
  none) EXT=""; COMPRESSOR=(cat) ;;
  *) die "--compress must be gzip, zstd, xz or none" ;;
esac

# Packages in the image: a minbase debootstrap with what apt-get cannot install without (systemd as init,
# udev), then the rest with apt-get in the root (debootstrap's own resolver knows no virtual packages:
# python3-cryptography's python3-cffi-backend-api-* defeat it). cloud-init renders the network for
# systemd-networkd (part of systemd in bookworm): no ifupdown. grub-pc lets the deployed system update its own
# boot loader (kernel upgrades run update-grub); the boot code itself is installed by this script.
BASE_PACKAGES="systemd-sysv,udev,dbus,kmod"
PACKAGES=(initramfs-tools "$KERNEL_META" grub-pc cloud-init cloud-guest-utils fdisk gdisk openssh-server iproute2 netbase sudo ca-certificates)

MAIN_PACKAGES=("$KERNEL_META" cloud-init systemd openssh-server grub-pc python3)
for tool in debootstrap sfdisk mkfs.ext4 mount umount grub-mkimage flock sha256sum apt-cache dpkg-query; do
  command -v "$tool" >/dev/null || die "$tool is missing (packages: debootstrap, fdisk, e2fsprogs, util-linux, grub-pc-bin, grub2-common, apt, dpkg)"
done
if [ "$UEFI" = 1 ]; then
  for tool in mkfs.fat mmd mcopy; do command -v "$tool" >/dev/null || die "$tool is missing (packages: dosfstools, mtools)"; done
  [ -d /usr/lib/grub/x86_64-efi ] || die "/usr/lib/grub/x86_64-efi is missing (package grub-efi-amd64-bin), or build with --no-uefi"
fi
[ -f /usr/lib/grub/i386-pc/boot.img ] || die "/usr/lib/grub/i386-pc is missing (package grub-pc-bin)"
[ "$COMPRESS" = none ] || command -v "${COMPRESSOR[0]}" >/dev/null || die "${COMPRESSOR[0]} is missing"

CACHE="$(mb_cache_init "$CACHE")"

# --- the cache key: every input ------------------------------------------------------------------------
# debootstrap takes the newest packages the mirror has; the key follows the candidates apt knows for the main
# ones (the host's lists, refreshed by apt-get update), so a point release makes a new image.
VERSIONS="$(mb_apt_candidates "${MAIN_PACKAGES[@]}")"
KEY="$({
  echo "metalbox-deploy-test 1"
  echo "build.sh $(mb_hash_file "$HERE/build.sh")"
  echo "common.sh $(mb_hash_file "$MB_LIB/common.sh")"
  echo "mirror $MIRROR $SUITE"
  echo "packages $BASE_PACKAGES ${PACKAGES[*]}"
  echo "$VERSIONS"
  echo "debootstrap $(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || echo unknown)"
  echo "grub $(grub-mkimage --version | awk '{ print $NF }')"
  echo "compress $COMPRESS uefi $UEFI"
} | sha256sum | cut -c1-16)"

if [ "$PRINT_KEY" = 1 ]; then echo "key=$KEY"; exit 0; fi
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, losetup, mount)"

DEST="$CACHE/$KEY"
IMAGE_NAME="disk.img$EXT"
manifest_value() { sed -n "s/^$1=//p" "$DEST/manifest"; }
finish() {
  local dir="$DEST"
  if [ -n "$OUTDIR" ]; then
    mkdir -p "$OUTDIR"
    cp "$DEST/$IMAGE_NAME" "$DEST/vmlinuz" "$DEST/initrd.img" "$DEST/manifest" "$OUTDIR/"
    dir="$(cd "$OUTDIR" && pwd)"
  fi
  echo "key=$KEY"
  echo "image=$dir/$IMAGE_NAME"
  echo "compression=$COMPRESS"
  echo "raw_bytes=$(manifest_value raw_bytes)"
  echo "kernel=$dir/vmlinuz"
  echo "initrd=$dir/initrd.img"
}
cached() { [ "$USE_CACHE" = 1 ] && [ -f "$DEST/manifest" ] && [ -f "$DEST/$IMAGE_NAME" ]; }
report() {
  log "$1 $KEY: $IMAGE_NAME $(stat -c %s "$DEST/$IMAGE_NAME") bytes ($COMPRESS), raw $(manifest_value raw_bytes) bytes, root used $(manifest_value root_used_bytes) bytes; built in $(manifest_value build_seconds) s"
}
if cached; then report cached; finish; exit 0; fi

# One builder per key; what a killed builder of this key left (its chroot mounts first) is removed.
mb_cache_lock "$CACHE" "$KEY"
if cached; then report "cached (built meanwhile)"; finish; exit 0; fi

START=$(mb_now)
WORK="$(mktemp -d "$CACHE/.build-$KEY.XXXXXX")"
ROOT="$WORK/root"
cleanup() {
  set +e
  mb_umount_under "$WORK"
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- the root file system -----------------------------------------------------------------------------------
DEBS="$CACHE/debs"
mkdir -p "$DEBS"
log "debootstrap $SUITE from $MIRROR (variant minbase), then apt-get install ${PACKAGES[*]}"
in_root() { mb_in_root "$ROOT" "$@"; }
# The package cache is shared by every key; one build at a time uses it.
mb_debs_lock "$DEBS"
mb_debootstrap "$ROOT" "$SUITE" "$MIRROR" "$DEBS" "$BASE_PACKAGES" "$WORK"
# Point releases' and security updates, as the build machine's own apt gets them (its candidates are the cache
# key): SUITE-updates from the mirror, SUITE-security from the mirror's debian-security sibling when it has one.
{
  echo "deb $MIRROR $SUITE main"
  echo "deb $MIRROR $SUITE-updates main"
  [[ "$MIRROR" != */debian ]] || echo "deb ${MIRROR%/debian}/debian-security $SUITE-security main"
} >"$ROOT/etc/apt/sources.list"
# grub-pc must not ask which disk to install to (there is none here: this script installs the boot code).
printf '%s\n' 'grub-pc grub-pc/install_devices multiselect' 'grub-pc grub-pc/install_devices_empty boolean true' |
  in_root debconf-set-selections
mb_apt_install "$ROOT" "$WORK" "${PACKAGES[@]}"
umount "$ROOT/var/cache/apt/archives"
mb_debs_unlock
T_DEBOOTSTRAP=$(mb_now)

KVER="$(mb_kver "$ROOT")"
# Fixed ids from the key: the same inputs give the same file systems (and grub.cfg).
ROOT_UUID="$(mb_uuid "$KEY" root)"
ESP_ID="$(printf '%s esp' "$KEY" | sha256sum | cut -c1-8)"
CMDLINE="console=tty0 console=ttyS0,115200n8"

cat >"$ROOT/etc/fstab" <<EOF
UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1
EOF
echo localhost >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"

# cloud-init: only the data sources a metalbox machine can have (the agent writes a NoCloud seed into
# /var/lib/cloud/seed/nocloud); no probing of cloud metadata services, which costs minutes on bare metal.
cat >"$ROOT/etc/cloud/cloud.cfg.d/90-metalbox.cfg" <<'EOF'
# metalbox deploy-test image (image/deploy-test/build.sh)
datasource_list: [NoCloud, ConfigDrive, None]
system_info:
  network:
    renderers: [networkd]
EOF
in_root systemctl enable systemd-networkd.service >/dev/null 2>&1
# Waiting for every link to be configured would hold boot for 2 min on a machine with unplugged NICs.
mkdir -p "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat >"$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d/metalbox.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60
EOF
# Host keys are made by cloud-init's ssh module; a boot without cloud-init (no seed) still gets sshd.
mkdir -p "$ROOT/etc/systemd/system/ssh.service.d"
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' >"$ROOT/etc/systemd/system/ssh.service.d/metalbox-host-keys.conf"
# Timers that would download package lists at first boot on a machine that may have no route out.
in_root systemctl mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true

# GRUB's own configuration, for update-grub on the deployed system (kernel upgrades).
cat >"$ROOT/etc/default/grub" <<EOF
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="$CMDLINE"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
EOF
# The first grub.cfg, by hand: update-grub would probe the build machine's devices. Both platforms read it.
mkdir -p "$ROOT/boot/grub"
mb_grub_cfg "$ROOT/boot/grub/grub.cfg" "metalbox deploy-test image; replaced by update-grub on the deployed system" 1 "Debian GNU/Linux" "$ROOT_UUID" "$KVER" "$CMDLINE"
# The kernel's initramfs with the final fstab in place (root by UUID); MODULES=most keeps disk drivers for
# hardware this build machine does not have.
in_root update-initramfs -u -k "$KVER" >"$WORK/initramfs.log" 2>&1 || { cat "$WORK/initramfs.log" >&2; die "update-initramfs failed"; }

# What each deployed machine must make for itself: machine id, SSH host keys (cloud-init makes them).
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT"/etc/ssh/ssh_host_*
# Size: documentation, man pages, translations, package lists and caches (dpkg leaves docs out from now on).
mb_slim_root "$ROOT"
# Python byte code is made again on first use; it is a fifth of cloud-init's size.
find "$ROOT/usr/lib/python3" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true

# shellcheck disable=SC2016 # dpkg-query's format, not the shell's
INSTALLED="$(in_root dpkg-query -W -f '${Package} ${Version}\n' "${MAIN_PACKAGES[@]}" 'linux-image-[0-9]*' 2>/dev/null || true)"
umount "$ROOT/dev" "$ROOT/sys" "$ROOT/proc"
T_CONFIG=$(mb_now)

# --- the disk ----------------------------------------------------------------------------------------------
# Everything is written into the image file itself: no loop device, no mount (image/lib/common.sh says why).
MiB=$MB_MiB
# GRUB's modules where its core image looks for them (prefix /boot/grub), for both platforms: the embedded
# config loads `normal`, which reads /boot/grub/grub.cfg; update-grub on the deployed system may insmod more.
if [ "$UEFI" = 1 ]; then mb_grub_modules "$ROOT" uefi; else mb_grub_modules "$ROOT"; fi
USED=$(du -s --block-size=1 --apparent-size "$ROOT" | cut -f1)
# Room for the journal, inode tables and first-boot writes; growpart takes the root to the whole disk.
ROOT_MIB=$(( (USED * 13 / 10 / MiB + 160 + 63) / 64 * 64 ))
ESP_MIB=0
[ "$UEFI" = 1 ] && ESP_MIB=32
ROOT_START_MIB=$((2 + ESP_MIB))
DISK_MIB=$((ROOT_START_MIB + ROOT_MIB + 1))  # +1: the backup GPT at the end
DISK="$WORK/disk.img"
truncate -s "${DISK_MIB}M" "$DISK"
{
  echo "label: gpt"
  echo "start=1MiB, size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name=bios"
  [ "$UEFI" = 0 ] || echo "start=2MiB, size=${ESP_MIB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp"
  echo "start=${ROOT_START_MIB}MiB, size=${ROOT_MIB}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root"
} | sfdisk -q "$DISK" >/dev/null
ROOT_PART=2
[ "$UEFI" = 0 ] || ROOT_PART=3

# The root straight into the image at its offset (e2fsprogs >= 1.43).
mkfs.ext4 -q -F -L root -U "$ROOT_UUID" -E "offset=$((ROOT_START_MIB * MiB)),hash_seed=$ROOT_UUID" -d "$ROOT" "$DISK" "$((ROOT_MIB * 1024))k"
ROOT_USED=$USED

# GRUB's core finds the root by its UUID (not by a partition number) and reads the same grub.cfg on both
# platforms. BIOS: core.img in the BIOS boot partition, boot.img's code in the MBR, as grub-bios-setup writes
# them; UEFI: GRUB as EFI/BOOT/BOOTX64.EFI in the ESP (image/lib/common.sh).
mb_grub_early_cfg "$WORK/early.cfg" "$ROOT_UUID"
mb_grub_bios "$DISK" "$WORK/early.cfg" "$WORK"
[ "$UEFI" = 0 ] || mb_grub_esp "$DISK" "$WORK/early.cfg" "$WORK" 2 "$ESP_MIB" "$ESP_ID"
T_DISK=$(mb_now)

OUT="$WORK/out"
mkdir -p "$OUT"
"${COMPRESSOR[@]}" "$DISK" >"$OUT/$IMAGE_NAME"
cp "$ROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$OUT/initrd.img"
END=$(mb_now)

secs() { mb_secs "$@"; }
filehash() { mb_hash_file "$1"; }
{
  echo "key=$KEY"
  echo "suite=$SUITE"
  echo "kernel=$KVER"
  while read -r pkg version; do [ -z "$version" ] || echo "installed_$pkg=$version"; done <<<"$INSTALLED"
  echo "root_uuid=$ROOT_UUID"
  echo "root_partition=$ROOT_PART"
  echo "uefi=$UEFI"
  echo "compression=$COMPRESS"
  echo "raw_bytes=$(stat -c %s "$DISK")"
  echo "root_used_bytes=$ROOT_USED"
  echo "image_bytes=$(stat -c %s "$OUT/$IMAGE_NAME")"
  echo "image_sha256=$(filehash "$OUT/$IMAGE_NAME")"
  echo "raw_sha256=$(filehash "$DISK")"
  echo "debootstrap_seconds=$(secs "$START" "$T_DEBOOTSTRAP")"
  echo "configure_seconds=$(secs "$T_DEBOOTSTRAP" "$T_CONFIG")"
  echo "disk_seconds=$(secs "$T_CONFIG" "$T_DISK")"
  echo "compress_seconds=$(secs "$T_DISK" "$END")"
  echo "build_seconds=$(secs "$START" "$END")"
} >"$OUT/manifest"

rm -rf "$DEST"
mv "$OUT" "$DEST"
report built
finish
