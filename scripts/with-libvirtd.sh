#!/usr/bin/env bash
# Run a command with a real libvirtd + QEMU where this machine allows it (root and the
# libvirt packages), exporting VIRTUALPOD_QEMU_URI for it; otherwise run it as is, on
# libvirt's test driver, and say so. Stops libvirtd afterwards only if it started it.
#   scripts/with-libvirtd.sh COMMAND [ARG...]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
started=""
cleanup() {
    if [[ -n "$started" ]]; then
        bash "$HERE/libvirtd.sh" stop >/dev/null || true
    fi
}
trap cleanup EXIT

if [[ -z "${VIRTUALPOD_QEMU_URI:-}" && "$(id -u)" == 0 && -x /usr/sbin/libvirtd ]]; then
    if ! bash "$HERE/libvirtd.sh" status >/dev/null 2>&1; then
        started=1  # set first: stop stops only what the script's pid files name
        bash "$HERE/libvirtd.sh" start >/dev/null || echo "with-libvirtd: libvirtd did not start" >&2
    fi
    if bash "$HERE/libvirtd.sh" status >/dev/null 2>&1; then
        export VIRTUALPOD_QEMU_URI=qemu:///system
    fi
fi
if [[ -n "${VIRTUALPOD_QEMU_URI:-}" ]]; then
    echo "with-libvirtd: real libvirt + QEMU at $VIRTUALPOD_QEMU_URI" >&2
else
    echo "with-libvirtd: no real libvirtd here (needs root and the libvirt packages):" \
         "libvirt's in-process test driver only" >&2
fi
"$@"
