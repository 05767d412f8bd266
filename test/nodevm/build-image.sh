#!/usr/bin/env bash
# build-image.sh: a stock Debian 12 (bookworm) node as a bootable ext4
# image, from Debian's packages only: `debootstrap --variant=minbase` with
# systemd as PID 1, Debian's kernel and initramfs, AppArmor, and what berth
# needs at run time. Nothing of berth is in it; run.sh brings berth in on a
# second disk per run.
#
# Cached under $NODEVM_CACHE/<key>/ (root.img, vmlinuz, initrd), keyed by a
# hash of this script (package list and guest configuration included): a
# change to either builds a new image. Prints the image directory on the
# last line. Needs root; installs debootstrap and e2fsprogs when missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${NODEVM_CACHE:-/var/cache/berth-nodevm}
MIRROR=${NODEVM_MIRROR:-http://deb.debian.org/debian}
SIZE=${NODEVM_ROOT_SIZE:-6G}
# sudo: critest loads its AppArmor test profiles with "sudo apparmor_parser".
# jq curl conntrack socat ethtool: what the kubelet kit's e2e and kubelet
# itself use on a node (the kit's setup installs the same on a host).
PKGS=(
  systemd systemd-sysv dbus udev kmod linux-image-amd64 apparmor
  iproute2 iptables containernetworking-plugins runc crun busybox-static
  ca-certificates procps util-linux mount libseccomp2
  sudo
  jq curl conntrack socat ethtool
)

log() { echo "[nodevm-image] $*" >&2; }
[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }

key=$( { cat "$0"; printf '%s\n' "$MIRROR" "$SIZE" "${PKGS[@]}"; } | sha256sum | cut -c1-16)
dir=$CACHE/$key
if [ -s "$dir/root.img" ] && [ -s "$dir/vmlinuz" ] && [ -s "$dir/initrd" ]; then
  log "cached image $dir"
  echo "$dir"
  exit 0
fi

missing=()
for p in debootstrap e2fsprogs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ -s "$dir/root.img" ]; then echo "$dir"; exit 0; fi   # built while we waited

t0=$(date +%s)
work=$(mktemp -d "$CACHE/build.XXXXXX")
root=$work/root
cleanup() {
  for m in proc sys dev/pts dev; do umount -l "$root/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

log "debootstrap bookworm (minbase + ${#PKGS[@]} packages) from $MIRROR"
include=$(IFS=,; echo "${PKGS[*]}")
debootstrap --variant=minbase --include="$include" bookworm "$root" "$MIRROR" > "$work/debootstrap.log" 2>&1 ||
  { tail -30 "$work/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
t1=$(date +%s)
log "debootstrap done in $((t1 - t0))s"

# --- guest configuration: a plain node, plus the hook that runs a payload.
echo nodevm > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 nodevm\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
printf '/dev/vda / ext4 rw,relatime 0 1\n' > "$root/etc/fstab"
: > "$root/etc/resolv.conf"   # the guest resolves nothing: its only peer is the host's loopback
# No login prompts on the consoles: the serial console carries the test's output.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$root/etc/systemd/system/getty@tty1.service"
# The guest must never reach a package mirror on its own.
rm -f "$root"/etc/apt/sources.list "$root"/etc/apt/sources.list.d/*
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

# berth-nodevm.service runs /usr/local/sbin/berth-nodevm-launch once after
# boot: it mounts the payload disk (label berthpay, built per run by run.sh)
# and the results disk (label berthres) and runs the payload's guest.sh,
# whose output goes to the serial console; the guest powers off after it,
# whatever its result.
install -d "$root/usr/local/sbin"
cat > "$root/usr/local/sbin/berth-nodevm-launch" <<'LAUNCH'
#!/bin/sh
set -u
mkdir -p /mnt/payload /mnt/results
mount -o ro LABEL=berthpay /mnt/payload || { echo "nodevm: no payload disk"; exit 1; }
mount LABEL=berthres /mnt/results || { echo "nodevm: no results disk"; exit 1; }
/mnt/payload/nodevm/guest.sh
rc=$?
echo "$rc" > /mnt/results/exit-code
sync
umount /mnt/results
echo "nodevm: guest.sh exited $rc"
exit 0
LAUNCH
chmod 0755 "$root/usr/local/sbin/berth-nodevm-launch"
cat > "$root/etc/systemd/system/berth-nodevm.service" <<'UNIT'
[Unit]
Description=berth node VM test payload
After=multi-user.target
Wants=dbus.service
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/berth-nodevm-launch
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/berth-nodevm.service "$root/etc/systemd/system/multi-user.target.wants/berth-nodevm.service"

# --- kernel and initramfs, as Debian installed them
cp "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)" "$work/vmlinuz"
cp "$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)" "$work/initrd"
kver=$(basename "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)" | sed 's/^vmlinuz-//')

for m in proc sys dev/pts dev; do umount -l "$root/$m" 2>/dev/null || true; done
log "writing ext4 image ($SIZE, kernel $kver)"
mkfs.ext4 -q -F -L berthroot -d "$root" "$work/root.img" "$SIZE" >/dev/null
{ echo "kernel $kver"; printf '%s\n' "${PKGS[@]}"; } > "$work/packages.txt"
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' > "$work/dpkg.txt" 2>/dev/null || true

rm -rf "$dir"; mkdir -p "$dir"
mv "$work/root.img" "$work/vmlinuz" "$work/initrd" "$work/packages.txt" "$work/dpkg.txt" "$dir/"
# Drop images of older keys: each is several hundred MB.
for old in "$CACHE"/*/; do
  old=${old%/}
  [[ $(basename "$old") =~ ^[0-9a-f]{16}$ ]] && [ "$old" != "$dir" ] && rm -rf "$old"
done
t2=$(date +%s)
log "image built in $((t2 - t0))s (debootstrap $((t1 - t0))s): $dir"
echo "$dir"
