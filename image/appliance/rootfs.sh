# shellcheck shell=bash
# The appliance's base root file system (sourced by image/appliance/build.sh, which caches its result under a
# key that hashes this file): debootstrap + apt-get of the distribution, the serial console, networking,
# SSH off, no password, kernel modules pruned to what servers need, documentation out. Nothing of metalbox
# itself: build.sh adds the binary, the units and the ephemeral environment to a copy of this tree, so a new
# binary does not download the distribution again.
#
# In:  ROOT (empty dir), WORK (scratch), DISTRO (debian|ubuntu), SUITE, MIRROR, KEYRING, DEBS, EXTRA_PACKAGES.
# Out: the tree in ROOT (its /proc, /sys, /dev unmounted again), KVER.

base_packages() {  # comma list for debootstrap --include: what apt-get needs to install the rest
  echo "systemd-sysv,udev,dbus,kmod"
}
root_packages() {  # what apt-get installs in the root (no Recommends)
  local common=(initramfs-tools openssh-server iproute2 netbase ca-certificates ipxe iputils-ping procps e2fsprogs less)
  if [ "$DISTRO" = ubuntu ]; then
    # Ubuntu: the generic kernel (physical NICs and disks), netplan rendering for systemd-networkd.
    echo "${common[*]} linux-image-generic netplan.io systemd-resolved $EXTRA_PACKAGES"
  else
    echo "${common[*]} linux-image-amd64 $EXTRA_PACKAGES"
  fi
}

# Kernel modules a server appliance uses: NICs, storage, USB keyboards and BMC USB NICs, the BMC's own
# graphics for tty1, IPMI, the network stack (bridges, VLANs, bonds, nftables), the usual file systems.
# Every other module goes (wireless, sound, media, most GPUs, InfiniBand, staging, ...), then whatever the
# kept ones depend on is brought back (modprobe --show-depends).
KEEP_MODULES='^(arch|crypto|lib|mm|virt/lib)/
^fs/(ext4|jbd2|mbcache|fat|vfat|nls|isofs|overlayfs|squashfs|xfs|fuse|efivarfs|autofs|configfs|udf)/
^fs/[^/]*\.ko
^net/
^drivers/(acpi|ata|base|block|bus|char|cpufreq|crypto|dax|dca|dma|edac|firmware|hid|hwmon|i2c|idle|iommu|leds|md|message|mfd|misc|net|nvdimm|nvme|nvmem|pci|platform/x86|power|powercap|ptp|pps|rtc|scsi|target|thermal|tty|usb|vhost|video|virtio|watchdog|input/(keyboard|serio|mouse|misc|input-leds|evdev))/
^drivers/input/[^/]*\.ko
^drivers/gpu/drm/(ast|mgag200|tiny|virtio|bochs)/
^drivers/gpu/drm/[^/]*\.ko'
DROP_MODULES='^net/(wireless|mac80211|bluetooth|nfc|ieee802154|6lowpan|mac802154|can|atm|rxrpc|ceph|sunrpc|9p|rds|tipc|l2tp|dccp|sctp|smc|appletalk|x25|lapb|phonet|caif|batman-adv|hsr|mctp|qrtr|vmw_vsock)/
^drivers/net/(wireless|can|ieee802154|wwan|hamradio|arcnet|fddi|plip|ppp|slip|wan|usb/(hso|qmi_wwan|cdc_mbim|sierra_net))
^drivers/(usb/(misc|serial|gadget|typec|musb|dwc2|dwc3|cdns3|chipidea|mtu3|renesas_usbhs|isp1760|atm|image|usbip)|hid/(intel-ish-hid|amd-sfh-hid|surface-hid))/
^drivers/(scsi/(lpfc|qla2xxx|qla4xxx|bfa|be2iscsi|bnx2fc|csiostor|fnic|snic|qedf|qedi|cxgbi|libfc|fcoe)|target/(iscsi|loopback|sbp|tcm_fc))/
^drivers/net/ethernet/(qlogic/qed|chelsio/(inline_crypto|libcxgb)|huawei|cavium/liquidio|mellanox/mlxsw|netronome|pensando|fungible)/'

prune_modules() {  # ROOT KVER
  local root="$1" kver="$2" dir n_before n_after names
  dir="$root/usr/lib/modules/$kver"
  [ -d "$dir/kernel" ] || die "no $dir/kernel"
  n_before="$(find "$dir/kernel" -name '*.ko*' | wc -l)"
  names="$( (cd "$dir/kernel" && find . -name '*.ko*' -printf '%P\n') | grep -E -f <(echo "$KEEP_MODULES") |
    { grep -v -E -f <(echo "$DROP_MODULES") || true; } | sed 's,.*/,,; s,\.ko.*$,,' | sort -u)"
  [ -n "$names" ] || die "no kernel module matched the list to keep"
  # The kept ones and their dependencies, wherever they live (with merged /usr, ROOT/lib is ROOT/usr/lib).
  # shellcheck disable=SC2086 # module names are words
  modprobe -d "$root" -S "$kver" --show-depends -a $names 2>/dev/null | awk '$1 == "insmod" { print $2 }' |
    xargs -r realpath -e | sort -u >"$WORK/modules.keep" || true
  [ -s "$WORK/modules.keep" ] || die "modprobe --show-depends gave nothing for the kept modules"
  find "$dir/kernel" -name '*.ko*' -print0 | xargs -0 realpath -e | sort >"$WORK/modules.all"
  comm -23 "$WORK/modules.all" "$WORK/modules.keep" | xargs -r rm -f
  find "$dir/kernel" -type d -empty -delete
  depmod -b "$root" "$kver"
  n_after="$(find "$dir/kernel" -name '*.ko*' | wc -l)"
  log "kernel modules pruned: $n_before -> $n_after files, $(du -sm "$dir" | cut -f1) MiB left"
}

make_rootfs() {
  local start pkgs
  start=$(mb_now)
  log "debootstrap $DISTRO $SUITE from $MIRROR (variant minbase), then apt-get install $(root_packages)"
  mb_debs_lock "$DEBS"
  mb_debootstrap "$ROOT" "$SUITE" "$MIRROR" "$DEBS" "$(base_packages)" "$WORK" "$KEYRING"
  if [ "$DISTRO" = ubuntu ]; then
    {
      echo "deb $MIRROR $SUITE main universe"
      echo "deb $MIRROR $SUITE-updates main universe"
      echo "deb $MIRROR $SUITE-security main universe"
    } >"$ROOT/etc/apt/sources.list"
  else
    {
      echo "deb $MIRROR $SUITE main"
      echo "deb $MIRROR $SUITE-updates main"
      [[ "$MIRROR" != */debian ]] || echo "deb ${MIRROR%/debian}/debian-security $SUITE-security main"
    } >"$ROOT/etc/apt/sources.list"
  fi
  # MODULES=most: the initramfs carries disk drivers for hardware this build machine lacks.
  mkdir -p "$ROOT/etc/initramfs-tools/conf.d"
  echo 'MODULES=most' >"$ROOT/etc/initramfs-tools/conf.d/metalbox"
  # shellcheck disable=SC2046 # the package list is words
  mb_apt_install "$ROOT" "$WORK" $(root_packages)
  umount "$ROOT/var/cache/apt/archives"
  mb_debs_unlock
  T_DEBOOTSTRAP_END=$(mb_now)
  DEBOOTSTRAP_SECONDS="$(mb_secs "$start" "$T_DEBOOTSTRAP_END")"

  KVER="$(mb_kver "$ROOT")"
  MODULES_BEFORE_MIB="$(du -sm "$ROOT/usr/lib/modules/$KVER" | cut -f1)"
  prune_modules "$ROOT" "$KVER"
  MODULES_AFTER_MIB="$(du -sm "$ROOT/usr/lib/modules/$KVER" | cut -f1)"
  # The initramfs again, from the pruned tree (MODULES=most: disk drivers for hardware this machine lacks).
  mb_in_root "$ROOT" update-initramfs -u -k "$KVER" >"$WORK/initramfs.log" 2>&1 || { cat "$WORK/initramfs.log" >&2; die "update-initramfs failed"; }

  # Serial console and tty1: the kernel's console= (the last one is /dev/console, where systemd writes) makes
  # systemd-getty-generator start serial-getty@ttyS0; getty@tty1 is enabled by default.
  echo metalbox >"$ROOT/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 metalbox\n::1 localhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
  # No default password: root's is locked ('*'); SSH is off until setup turns it on (below).
  mb_in_root "$ROOT" usermod -p '*' root
  # Management network: DHCP on every Ethernet NIC but the provisioning one, which `metalbox setup` writes a
  # lower-numbered (first-matching) file for.
  if [ "$DISTRO" = ubuntu ]; then
    mkdir -p "$ROOT/etc/netplan"
    cat >"$ROOT/etc/netplan/90-metalbox-management.yaml" <<'NETPLAN'
# metalbox appliance: DHCP on the management NICs (metalbox setup writes the provisioning interface)
network:
  version: 2
  renderer: networkd
  ethernets:
    management:
      match: { name: "e*" }
      dhcp4: true
      optional: true
NETPLAN
    chmod 600 "$ROOT/etc/netplan/90-metalbox-management.yaml"
  fi
  mkdir -p "$ROOT/etc/systemd/network"
  cat >"$ROOT/etc/systemd/network/90-metalbox-management.network" <<'NETWORK'
# metalbox appliance: every Ethernet NIC the provisioning interface file (10-metalbox-provisioning.network,
# written by metalbox setup) does not claim is a management NIC and asks DHCP for its address.
[Match]
Name=e*

[Network]
DHCP=ipv4
LinkLocalAddressing=no

[DHCPv4]
UseDomains=yes
NETWORK
  mb_in_root "$ROOT" systemctl enable systemd-networkd.service >/dev/null 2>&1
  # Waiting for every link would hold boot for 2 min with an unplugged NIC.
  mkdir -p "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d"
  printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30\n' \
    >"$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d/metalbox.conf"
  mb_in_root "$ROOT" systemctl mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true
  [ -f "$ROOT/usr/lib/systemd/system/systemd-timesyncd.service" ] && mb_in_root "$ROOT" systemctl disable systemd-timesyncd.service >/dev/null 2>&1 || true

  # SSH: off until `metalbox setup` turns it on. Its switch, host keys and authorized keys live in /etc/metalbox
  # (on the state partition), so an upgraded image keeps them.
  rm -f "$ROOT"/etc/ssh/ssh_host_*
  mkdir -p "$ROOT/etc/ssh/sshd_config.d" "$ROOT/etc/systemd/system/ssh.service.d"
  cat >"$ROOT/etc/ssh/sshd_config.d/50-metalbox.conf" <<'SSHD'
# metalbox appliance: keys only, from the state partition (see metalbox setup)
HostKey /etc/metalbox/ssh/ssh_host_ed25519_key
HostKey /etc/metalbox/ssh/ssh_host_rsa_key
AuthorizedKeysFile /etc/metalbox/ssh/authorized_keys_%u .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
SSHD
  cat >"$ROOT/etc/systemd/system/ssh.service.d/metalbox.conf" <<'SSHUNIT'
[Unit]
# metalbox setup --ssh-key turns SSH on by writing this file; without it sshd does not start.
ConditionPathExists=/etc/metalbox/ssh/enabled

[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'for t in ed25519 rsa; do [ -f /etc/metalbox/ssh/ssh_host_$${t}_key ] || ssh-keygen -q -t $$t -N "" -f /etc/metalbox/ssh/ssh_host_$${t}_key; done'
ExecStartPre=/usr/sbin/sshd -t
SSHUNIT
  rm -f "$ROOT/etc/systemd/system/sockets.target.wants/ssh.socket"
  mb_in_root "$ROOT" systemctl enable ssh.service >/dev/null 2>&1 || true

  : >"$ROOT/etc/machine-id"
  rm -f "$ROOT/var/lib/dbus/machine-id"
  mb_slim_root "$ROOT"
  find "$ROOT/usr/lib/python3" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
  # shellcheck disable=SC2016 # dpkg-query's format
  INSTALLED="$(mb_in_root "$ROOT" dpkg-query -W -f '${Package} ${Version}\n' systemd openssh-server ipxe 'linux-image-[0-9]*' 2>/dev/null || true)"
  umount "$ROOT/dev" "$ROOT/sys" "$ROOT/proc"
  CONFIGURE_SECONDS="$(mb_secs "$T_DEBOOTSTRAP_END" "$(mb_now)")"
}
