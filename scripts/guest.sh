#!/usr/bin/env bash
# Build a tiny TCG test guest: the host's Debian kernel + a busybox initramfs whose
# /init really touches memory, so RSS, balloon and memory-pressure tests have
# something real to measure.
#
#   scripts/guest.sh [OUT_DIR]      (default: .run/guest in the repo)
#
# Prints the kernel and initramfs paths as shell assignments (GUEST_KERNEL=...).
# Kernel command line understood by /init:
#   vp.touch=N   MiB to allocate and touch after boot (in a tmpfs; 0 = none)
#   vp.step=S    MiB per step (default: all at once); one step per second
# /init prints "VPGUEST READY balloon=yes|no" when booted (virtio_balloon loaded
# if the kernel has it as a module) and "VPGUEST TOUCHED <total MiB>" after each
# step, on the serial console (ttyS0). It then reads commands from ttyS0 (connect
# the serial port to a unix socket to send them), one per line:
#   touch N   allocate and touch N more MiB     -> "VPGUEST TOUCHED <total MiB>"
#   free      release everything touched so far -> "VPGUEST FREED"
# Needs: linux-image-amd64 (/boot/vmlinuz-*), busybox-static, cpio, gzip.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/../.run/guest}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

KERNEL="$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)"
[[ -n "$KERNEL" ]] || { echo "guest.sh: no /boot/vmlinuz-*: install linux-image-amd64" >&2; exit 1; }
KVER="${KERNEL#/boot/vmlinuz-}"
BUSYBOX="$(command -v busybox || true)"
[[ -n "$BUSYBOX" ]] && file -L "$BUSYBOX" 2>/dev/null | grep -q dynamically && BUSYBOX=""
[[ -x /bin/busybox ]] && BUSYBOX="${BUSYBOX:-/bin/busybox}"
[[ -n "$BUSYBOX" ]] || { echo "guest.sh: busybox missing: install busybox-static" >&2; exit 1; }

STAMP="$OUT/.stamp"
WANT="$KERNEL $(stat -c %Y "$KERNEL") $(sha256sum "$0" | cut -c1-16)"
if [[ -s "$OUT/initramfs.cpio.gz" && -s "$OUT/vmlinuz" && "$(cat "$STAMP" 2>/dev/null)" == "$WANT" ]]; then
    echo "GUEST_KERNEL=$OUT/vmlinuz"
    echo "GUEST_INITRD=$OUT/initramfs.cpio.gz"
    exit 0
fi

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{bin,dev,proc,sys,fill,lib/modules}
cp "$BUSYBOX" "$ROOT/bin/busybox"

# virtio_balloon and its dependencies, in load order, decompressed for busybox insmod.
MODDIR="/lib/modules/$KVER"
MODULES=""
if [[ -f "$MODDIR/modules.dep" ]]; then
    for mod in virtio_pci virtio_balloon; do
        line="$(grep -E "/$mod\.ko(\.xz|\.zst|\.gz)?:" "$MODDIR/modules.dep" || true)"
        [[ -n "$line" ]] || continue   # built in, or absent
        deps="${line#*:}"
        # modules.dep lists dependencies nearest-first; load the farthest first.
        for path in $(echo "$deps" | tr ' ' '\n' | tac) "${line%%:*}"; do
            name="$(basename "$path")"; name="${name%%.ko*}"
            case " $MODULES " in *" $name "*) continue ;; esac
            case "$path" in
                *.ko.xz) xz -dc "$MODDIR/$path" >"$ROOT/lib/modules/$name.ko" ;;
                *.ko.zst) zstd -qdc "$MODDIR/$path" >"$ROOT/lib/modules/$name.ko" ;;
                *.ko.gz) gzip -dc "$MODDIR/$path" >"$ROOT/lib/modules/$name.ko" ;;
                *) cp "$MODDIR/$path" "$ROOT/lib/modules/$name.ko" ;;
            esac
            MODULES="$MODULES $name"
        done
    done
fi
echo "$MODULES" >"$ROOT/lib/modules/order"

cat >"$ROOT/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
arg() { sed -n "s/.*\\b$1=\\([0-9]*\\).*/\\1/p" /proc/cmdline; }
TOUCH="$(arg vp.touch)"; TOUCH="${TOUCH:-0}"
STEP="$(arg vp.step)"; STEP="${STEP:-$TOUCH}"
[ "$STEP" -gt 0 ] 2>/dev/null || STEP=1
mount -t tmpfs -o size=100% tmpfs /fill
BALLOON=no; [ -d /sys/bus/virtio/drivers/virtio_balloon ] && BALLOON=yes
echo "VPGUEST READY balloon=$BALLOON" >/dev/ttyS0
total=0; i=0
touch_mib() {  # random data: neither zero pages nor mergeable, so RSS really grows
    dd if=/dev/urandom of=/fill/chunk$i bs=1M count="$1" 2>/dev/null
    total=$((total + $1)); i=$((i + 1))
    echo "VPGUEST TOUCHED $total" >/dev/ttyS0
}
while [ "$total" -lt "$TOUCH" ]; do
    n="$STEP"; [ $((total + n)) -gt "$TOUCH" ] && n=$((TOUCH - total))
    touch_mib "$n"
    [ "$total" -lt "$TOUCH" ] && sleep 1
done
stty -echo -F /dev/ttyS0 2>/dev/null
while true; do
    if read -r cmd n </dev/ttyS0; then
        case "$cmd" in
            touch) touch_mib "${n:-0}" ;;
            free) rm -f /fill/chunk*; total=0; echo "VPGUEST FREED" >/dev/ttyS0 ;;
        esac
    else
        sleep 1  # no reader attached to the port
    fi
done
INIT
chmod +x "$ROOT/init"

cp "$KERNEL" "$OUT/vmlinuz"
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT/initramfs.cpio.gz"
echo "$WANT" >"$STAMP"
echo "GUEST_KERNEL=$OUT/vmlinuz"
echo "GUEST_INITRD=$OUT/initramfs.cpio.gz"
