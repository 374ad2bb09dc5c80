#!/usr/bin/env bash
# Upgrades a metalbox appliance disk in place with a newer image, keeping its state: writes the new image's
# BIOS boot, EFI system and root partitions over the old ones and leaves the partition table and the state
# partition (METALBOX-STATE: config, store, certificate, SSH keys, backups) as they are.
#
#   image/appliance/upgrade.sh NEW_IMAGE(.raw|.qcow2) DISK
#
# DISK is the appliance's disk while the appliance is NOT running from it: a block device (the appliance booted
# from a USB stick with the new image, or the disk attached to another machine) or a VM's raw disk file (for a
# qcow2 VM disk, `qemu-img convert` it to raw and back, or attach it with qemu-nbd). The partitions 1-3 of
# both must have the same start and size (build.sh keeps them fixed: --root-size); the script checks that.
# Root; needs sfdisk (fdisk), qemu-img (qemu-utils) for a qcow2 image, dd, fallocate (util-linux).
set -euo pipefail
MB_NAME=upgrade
# shellcheck source=../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/common.sh"

[ $# -eq 2 ] || { echo "usage: image/appliance/upgrade.sh NEW_IMAGE DISK" >&2; exit 2; }
NEW="$1"
DISK="$2"
[ -f "$NEW" ] || die "$NEW: no such image"
[ -e "$DISK" ] || die "$DISK: no such disk"
mb_need_tools "fdisk, util-linux, coreutils" sfdisk dd fallocate
if grep -q "^$(readlink -f "$DISK")" /proc/mounts; then die "$DISK is mounted: upgrade a disk the appliance is not running from"; fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
SRC="$NEW"
if [ "$(head -c 4 "$NEW")" = "$(printf 'QFI\373')" ]; then
  mb_need_tools qemu-utils qemu-img
  log "converting $NEW to raw"
  qemu-img convert -f qcow2 -O raw "$NEW" "$WORK/new.raw"
  SRC="$WORK/new.raw"
fi

# "start size name" of partitions 1-4 (sectors).
layout() { sfdisk -d "$1" | sed -n 's/^[^ ]* : start= *\([0-9]*\), size= *\([0-9]*\),.*name="\([^"]*\)".*/\1 \2 \3/p'; }
layout "$SRC" >"$WORK/new"
layout "$DISK" >"$WORK/old"
[ "$(sed -n 4p "$WORK/old" | cut -d' ' -f3)" = metalbox-state ] || die "$DISK: partition 4 is not metalbox-state: not a metalbox appliance disk"
for i in 1 2 3; do
  a="$(sed -n "${i}p" "$WORK/new")"; b="$(sed -n "${i}p" "$WORK/old")"
  [ -n "$a" ] && [ "$a" = "$b" ] || die "partition $i differs (new: ${a:-none}; disk: ${b:-none}): this image cannot upgrade this disk in place"
done

# The MBR's boot code (not its partition table) and partitions 1-3. A regular file gets its old bytes punched out
# first, so that the copy may stay sparse; a device is written whole.
dd if="$SRC" of="$DISK" bs=440 count=1 conv=notrunc status=none
while read -r start size name; do
  [ "$name" != metalbox-state ] || break
  log "writing $name ($((size / 2048)) MiB)"
  if [ -f "$DISK" ]; then
    fallocate -p -o $((start * 512)) -l $((size * 512)) "$DISK"
    dd if="$SRC" of="$DISK" bs=1M iflag=skip_bytes,count_bytes oflag=seek_bytes skip=$((start * 512)) seek=$((start * 512)) count=$((size * 512)) conv=notrunc,sparse status=none
  else
    dd if="$SRC" of="$DISK" bs=4M iflag=skip_bytes,count_bytes oflag=seek_bytes skip=$((start * 512)) seek=$((start * 512)) count=$((size * 512)) conv=notrunc,fsync status=none
  fi
done <"$WORK/new"
sync
log "upgraded $DISK from $NEW; the state partition was not touched"
