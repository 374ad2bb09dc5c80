# shellcheck shell=bash
# The shared preamble of image/'s builders (image/ephemeral, image/deploy-test, image/appliance): strict shell,
# messages, the content-hash cache (one builder per key, flock), apt candidates for the cache key, a Debian or
# Ubuntu root made with debootstrap + apt-get, and a GPT disk made in an image file without a mount (GRUB for
# BIOS and UEFI). Sourced, never run; every function is prefixed `mb_`, every variable it sets `MB_`.
#
# The caller sets MB_NAME (the prefix of its messages) before sourcing. Its cache keys hash this file too
# (mb_hash_file "$MB_LIB/common.sh"): a change here makes new images.
set -euo pipefail
export LC_ALL=C
export PATH="$PATH:/usr/sbin:/sbin"  # debootstrap, depmod, sfdisk, mkfs.*: also for a user without sbin in PATH
umask 022

MB_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MB_REPO="$(cd "$MB_LIB/../.." && pwd)"
: "${MB_NAME:=image}"

die() { echo "build.sh: $*" >&2; exit 1; }
log() { echo "$MB_NAME: $*" >&2; }

mb_hash_file() { sha256sum "$1" | cut -d' ' -f1; }
mb_now() { date +%s.%N; }
mb_secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# mb_need_tools "packages hint" TOOL...: every tool in PATH, else die naming the packages.
mb_need_tools() {
  local hint="$1" tool
  shift
  for tool in "$@"; do command -v "$tool" >/dev/null || die "$tool is missing (packages: $hint)"; done
}

# mb_apt_candidates [APT OPTIONS --] PKG...: "PKG CANDIDATE" lines from apt-cache policy (packages apt knows no
# candidate for are left out). Each apt-cache call reads every package list: ask once for all of them.
mb_apt_candidates() {
  local opts=()
  if [[ " $* " == *" -- "* ]]; then
    while [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
  fi
  apt-cache "${opts[@]+"${opts[@]}"}" policy "$@" 2>/dev/null |
    awk '/^[^ ].*:$/ { pkg = substr($0, 1, length($0) - 1) } $1 == "Candidate:" && $2 != "(none)" { print pkg, $2 }'
}

# --- the cache: CACHE/<key>/ holds a finished build; CACHE/.build-<key>.* a build under way ----------------
# mb_cache_init DIR: creates it; prints its absolute path.
mb_cache_init() { mkdir -p "$1"; (cd "$1" && pwd); }

# mb_cache_lock CACHE KEY: one builder per key (fd 9 held until the script exits), then removes what a killed
# builder of this key left (its chroot mounts first: we hold its lock, it is gone).
mb_cache_lock() {
  local cache="$1" key="$2" old
  exec 9>"$cache/.lock-$key"
  flock 9
  for old in "$cache/.build-$key".*; do
    [ -d "$old" ] || continue
    mb_umount_under "$old" lazy
    rm -rf "$old"
  done
}

# mb_umount_under DIR [lazy]: unmounts everything mounted below DIR, deepest first.
mb_umount_under() {
  local m
  awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
    if [ "${2:-}" = lazy ]; then umount -l "$m" || true; else umount "$m" || umount -l "$m" || true; fi
  done
}

# --- a root file system: debootstrap, then apt-get inside it -------------------------------------------------
# mb_check_root ROOT: every function below deletes and writes under ROOT: never the build machine's own /.
mb_check_root() { [ -n "${1:-}" ] && [ "$(readlink -m "$1")" != / ] || die "internal: the root to build is '${1:-}'"; }

# mb_in_root ROOT CMD...: runs CMD chrooted, with a clean environment.
mb_in_root() {
  local root="$1"
  mb_check_root "$root"
  shift
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"
}

# mb_debootstrap ROOT SUITE MIRROR DEBS BASE_PACKAGES LOGDIR [KEYRING]: a minbase, usr-merged root from MIRROR
# with BASE_PACKAGES (comma list), package downloads cached in DEBS (shared by every key; the caller holds
# DEBS/.lock, see mb_debs_lock); then /proc, /sys, /dev and DEBS/apt (as apt's archive cache) mounted in it.
mb_debootstrap() {
  local root="$1" suite="$2" mirror="$3" debs="$4" base="$5" logdir="$6" keyring="${7:-}"
  local kr=()
  mb_check_root "$root"
  [ -z "$keyring" ] || kr=(--keyring="$keyring")
  DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase --merged-usr --components=main "${kr[@]+"${kr[@]}"}" \
    --cache-dir="$debs" --include="$base" "$suite" "$root" "$mirror" >"$logdir/debootstrap.log" 2>&1 || {
    tail -n 30 "$logdir/debootstrap.log" >&2
    [ ! -f "$root/debootstrap/debootstrap.log" ] || grep -v '^\(I\|W\): ' "$root/debootstrap/debootstrap.log" | tail -n 40 >&2
    die "debootstrap failed (log above)"
  }
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount --bind /dev "$root/dev"
  mkdir -p "$debs/apt/partial"
  mount --bind "$debs/apt" "$root/var/cache/apt/archives"
}

# mb_debs_lock DEBS: the package cache is shared by every key; one build at a time uses it (fd 8).
mb_debs_lock() { mkdir -p "$1"; exec 8>"$1/.lock"; flock 8; }
mb_debs_unlock() { exec 8>&-; }

# mb_apt_install ROOT LOGDIR PKG...: apt-get update + install (no Recommends) inside the root.
mb_apt_install() {
  local root="$1" logdir="$2"
  shift 2
  {
    mb_in_root "$root" apt-get -o APT::Sandbox::User=root -qq update &&
    mb_in_root "$root" apt-get -o APT::Sandbox::User=root -y -qq --no-install-recommends install "$@"
  } >"$logdir/apt.log" 2>&1 || { tail -n 40 "$logdir/apt.log" >&2; die "apt-get install in the root failed (log above)"; }
}

# mb_kver ROOT: the newest kernel version installed in the root.
mb_kver() {
  local kver
  kver="$(find "$1/usr/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n1)"
  [ -n "$kver" ] && [ -f "$1/boot/vmlinuz-$kver" ] || die "no kernel in the root (boot/vmlinuz-$kver)"
  echo "$kver"
}

# mb_slim_root ROOT: documentation, man pages, translations, package lists, caches and logs out, and dpkg told
# to leave docs out of later installs.
mb_slim_root() {
  local root="$1"
  mb_check_root "$root"
  cat >"$root/etc/dpkg/dpkg.cfg.d/90-metalbox-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/debconf/*-old "$root"/var/log/* "$root"/tmp/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
}

# mb_uuid KEY WHAT: a fixed UUID derived from the cache key: the same inputs give the same file systems.
mb_uuid() { local h; h="$(printf '%s %s' "$1" "$2" | sha256sum)"; echo "${h:0:8}-${h:8:4}-4${h:13:3}-a${h:17:3}-${h:20:12}"; }

# --- the disk: GRUB for BIOS and UEFI written into an image file, no loop device, no mount -----------------
# (grub-install would need the root mounted from a loop partition, and GRUB 2.06 finds a partition's start with
# HDIO_GETGEO, which loop devices do not answer on every kernel: "cannot find a GRUB drive for /dev/loop0p3".)
MB_MiB=$((1024 * 1024))
MB_GRUB_MODULES="part_gpt part_msdos ext2 search search_fs_uuid search_label configfile normal linux echo test serial terminal terminfo gzio sleep reboot halt loadenv"

# mb_grub_modules ROOT [uefi]: GRUB's modules where its core image looks for them (prefix /boot/grub).
mb_grub_modules() {
  mkdir -p "$1/boot/grub/i386-pc"
  cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst "$1/boot/grub/i386-pc/"
  if [ "${2:-}" = uefi ]; then
    mkdir -p "$1/boot/grub/x86_64-efi"
    cp /usr/lib/grub/x86_64-efi/*.mod /usr/lib/grub/x86_64-efi/*.lst "$1/boot/grub/x86_64-efi/"
  fi
}

# mb_grub_early_cfg FILE ROOT_UUID: the config both GRUB core images carry: find the root by its UUID (not a
# partition number), then read /boot/grub/grub.cfg from it.
mb_grub_early_cfg() {
  # shellcheck disable=SC2016 # $root is GRUB's variable
  printf 'search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)/boot/grub\n' "$2" >"$1"
}

# mb_grub_cfg FILE COMMENT TIMEOUT TITLE ROOT_UUID KVER CMDLINE: the grub.cfg both platforms read: serial
# (115200) and screen, the root found by its UUID, one menu entry for the kernel KVER and its initrd.
mb_grub_cfg() {
  cat >"$1" <<GRUB
# $2
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=$3
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root $5
menuentry '$4 ($6)' {
  linux /boot/vmlinuz-$6 root=UUID=$5 ro $7
  initrd /boot/initrd.img-$6
}
GRUB
}

mb_le() {  # VALUE BYTES -> little-endian bytes on stdout
  local v=$1 n=$2 i out=''
  for ((i = 0; i < n; i++)); do out+="$(printf '\\x%02x' $(((v >> (8 * i)) & 255)))"; done
  printf '%b' "$out"
}
mb_poke() { dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }  # DISK OFFSET; the bytes on stdin

# mb_grub_bios DISK EARLY_CFG WORKDIR [CORE_LBA]: what grub-bios-setup does for a GPT disk with a BIOS boot
# partition at CORE_LBA (default 2048, 1 MiB long) (include/grub/i386/pc/boot.h, util/setup.c): core.img into
# the partition; its first sector (diskboot.img) ends with a block list naming the rest of it (start LBA,
# sector count; the load segment is preset); boot.img's code into the MBR in front of the protective MBR's disk
# signature and partition table (0x1b8), with the LBA of core.img at 0x5c, boot drive 0xff (the one the BIOS
# booted from) at 0x64, and the drive check at 0x66 replaced by two NOPs, as grub-bios-setup does for any hard
# disk (BIOSes that pass a wrong drive number).
mb_grub_bios() {
  local disk="$1" early="$2" work="$3" lba="${4:-2048}" sectors
  # shellcheck disable=SC2086 # the module list is words
  grub-mkimage -O i386-pc -o "$work/core.img" -c "$early" -p /boot/grub -d /usr/lib/grub/i386-pc biosdisk $MB_GRUB_MODULES
  sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
  [ "$sectors" -le 2048 ] || die "core.img ($sectors sectors) does not fit the 1 MiB BIOS boot partition"
  dd if="$work/core.img" of="$disk" bs=512 seek="$lba" conv=notrunc status=none
  mb_le $((lba + 1)) 8 | mb_poke "$disk" $((lba * 512 + 0x1f4))
  mb_le $((sectors - 1)) 2 | mb_poke "$disk" $((lba * 512 + 0x1fc))
  dd if=/usr/lib/grub/i386-pc/boot.img of="$disk" bs=1 count=$((0x1b8)) conv=notrunc status=none
  mb_le "$lba" 8 | mb_poke "$disk" $((0x5c))
  printf '\377' | mb_poke "$disk" $((0x64))
  printf '\220\220' | mb_poke "$disk" $((0x66))
}

# mb_grub_esp DISK EARLY_CFG WORKDIR START_MIB SIZE_MIB VOLUME_ID: FAT16 at its offset in the image (mtools) with
# GRUB as the removable-media boot file EFI/BOOT/BOOTX64.EFI: firmware without NVRAM entries for this disk boots
# it (UEFI 2.x §3.5.1.1).
mb_grub_esp() {
  local disk="$1" early="$2" work="$3" start="$4" size="$5" id="$6"
  # shellcheck disable=SC2086
  grub-mkimage -O x86_64-efi -o "$work/BOOTX64.EFI" -c "$early" -p /boot/grub -d /usr/lib/grub/x86_64-efi \
    $MB_GRUB_MODULES efi_gop efi_uga all_video
  mkfs.fat -F 16 -n ESP -i "$id" --offset=$((start * 2048)) "$disk" $((size * 1024)) >"$work/mkfs.fat.log" 2>&1 ||
    { cat "$work/mkfs.fat.log" >&2; die "mkfs.fat failed"; }
  export MTOOLS_SKIP_CHECK=1
  mmd -i "$disk@@$((start * MB_MiB))" ::/EFI ::/EFI/BOOT
  mcopy -i "$disk@@$((start * MB_MiB))" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
}
