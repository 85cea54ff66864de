#!/usr/bin/env bash
# Build the workload test guest offline from Debian packages: a VM disk image (an ext4
# root made with `mke2fs -d`, converted to qcow2) holding busybox and an init that runs
# what the cloud-init NoCloud seed says, plus the host's Debian kernel and a small
# initramfs that mounts the root from /dev/vda (direct kernel boot).
#
#   scripts/workload-guest.sh [OUT_DIR]      (default: .run/workload-guest in the repo)
#
# Prints WORKLOAD_KERNEL=, WORKLOAD_INITRD= and WORKLOAD_IMAGE= assignments.
# The guest prints on its serial console (ttyS0):
#   VPWORKLOAD BOOTED root=/dev/vda disk=<bytes of /dev/vda>
#   VPWORKLOAD ADDRESS <ip/prefix of eth0>          (DHCP)
#   VPWORKLOAD SEED instance=<instance-id> hostname=<local-hostname>
#   ... then runs the seed's user-data (a #! script) with its output on the console.
# Needs: linux-image-amd64, busybox-static, cpio, gzip, e2fsprogs, qemu-utils.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/../.run/workload-guest}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

KERNEL="$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)"
[[ -n "$KERNEL" ]] || { echo "workload-guest.sh: no /boot/vmlinuz-*: install linux-image-amd64" >&2; exit 1; }
KVER="${KERNEL#/boot/vmlinuz-}"
BUSYBOX=/bin/busybox
file -L "$BUSYBOX" 2>/dev/null | grep -q "statically linked" ||
    { echo "workload-guest.sh: a static /bin/busybox is needed: install busybox-static" >&2; exit 1; }
for tool in mke2fs qemu-img cpio; do
    command -v "$tool" >/dev/null || { echo "workload-guest.sh: $tool missing" >&2; exit 1; }
done

STAMP="$OUT/.stamp"
WANT="$KERNEL $(stat -c %Y "$KERNEL") $(sha256sum "$0" | cut -c1-16)"
print() {
    echo "WORKLOAD_KERNEL=$OUT/vmlinuz"
    echo "WORKLOAD_INITRD=$OUT/initramfs.cpio.gz"
    echo "WORKLOAD_IMAGE=$OUT/root.qcow2"
}
if [[ -s "$OUT/root.qcow2" && -s "$OUT/initramfs.cpio.gz" && "$(cat "$STAMP" 2>/dev/null)" == "$WANT" ]]; then
    print
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
INITRD="$WORK/initrd"; ROOT="$WORK/root"
mkdir -p "$INITRD"/{bin,dev,proc,sys,newroot,lib/modules} "$ROOT"/{bin,sbin,dev,proc,sys,run,srv,tmp,etc}
cp "$BUSYBOX" "$INITRD/bin/busybox"
cp "$BUSYBOX" "$ROOT/bin/busybox"

# Modules and their dependencies, farthest first, decompressed for busybox insmod.
MODDIR="/lib/modules/$KVER"
LOADED=""
for mod in virtio_pci virtio_blk virtio_net crc32c_generic ext4 isofs; do
    line="$(grep -E "/$mod\.ko(\.xz|\.zst|\.gz)?:" "$MODDIR/modules.dep" || true)"
    [[ -n "$line" ]] || continue   # built in
    for path in $(echo "${line#*:}" | tr ' ' '\n' | tac) "${line%%:*}"; do
        name="$(basename "$path")"; name="${name%%.ko*}"
        case " $LOADED " in *" $name "*) continue ;; esac
        case "$path" in
            *.ko.xz) xz -dc "$MODDIR/$path" >"$INITRD/lib/modules/$name.ko" ;;
            *.ko.zst) zstd -qdc "$MODDIR/$path" >"$INITRD/lib/modules/$name.ko" ;;
            *.ko.gz) gzip -dc "$MODDIR/$path" >"$INITRD/lib/modules/$name.ko" ;;
            *) cp "$MODDIR/$path" "$INITRD/lib/modules/$name.ko" ;;
        esac
        LOADED="$LOADED $name"
    done
done
echo "$LOADED" >"$INITRD/lib/modules/order"

cat >"$INITRD/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 -o rw /dev/vda /newroot || { echo "VPWORKLOAD NOROOT" >/dev/ttyS0; exec sh; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
INIT
chmod +x "$INITRD/init"

cat >"$ROOT/sbin/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
exec >/dev/ttyS0 2>&1 </dev/null
echo "VPWORKLOAD BOOTED root=$(awk '$2 == "/" {print $1}' /proc/mounts) disk=$(( $(cat /sys/block/vda/size) * 512 ))"
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.script -n -q -t 20 -T 1 >/dev/null 2>&1
echo "VPWORKLOAD ADDRESS $(ip -4 -o addr show eth0 | awk '{print $4}')"
SEED="$(findfs LABEL=cidata 2>/dev/null || echo /dev/vdb)"
mkdir -p /run/seed
if mount -t iso9660 -o ro "$SEED" /run/seed; then
    value() { sed -n "s/^$1: *\"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" /run/seed/meta-data; }
    hostname "$(value local-hostname)"
    echo "VPWORKLOAD SEED instance=$(value instance-id) hostname=$(hostname)"
    cp /run/seed/user-data /run/user-data
    umount /run/seed
    if head -n 1 /run/user-data | grep -q '^#!'; then
        chmod 700 /run/user-data
        /run/user-data
        echo "VPWORKLOAD EXITED $?"
    fi
else
    echo "VPWORKLOAD NOSEED"
fi
while true; do sleep 3600; done
INIT
chmod +x "$ROOT/sbin/init"

cat >"$ROOT/etc/udhcpc.script" <<'DHCP'
#!/bin/sh
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${subnet:+$(ipcalc -p "$ip" "$subnet" | cut -d= -f2)}" dev "$interface"
        [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
        : >/etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
        ;;
esac
exit 0
DHCP
chmod +x "$ROOT/etc/udhcpc.script"

cp "$KERNEL" "$OUT/vmlinuz"
(cd "$INITRD" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT/initramfs.cpio.gz"
mke2fs -q -F -t ext4 -L root -d "$ROOT" "$WORK/root.raw" 32M >/dev/null
qemu-img convert -f raw -O qcow2 "$WORK/root.raw" "$OUT/root.qcow2"
echo "$WANT" >"$STAMP"
print
