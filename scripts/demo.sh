#!/usr/bin/env bash
# `make demo`: start a real libvirtd + QEMU where this machine allows it, run
# `virtualpod demo` against it, and stop again only what was started here.
# Without root or libvirtd the demo uses libvirt's test driver and says so.
# Extra arguments go to `virtualpod demo` (e.g. --kubeconfig FILE).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${VIRTUALPOD_VENV:-$REPO/.venv}"

started_libvirtd=""
cleanup() {
    if [[ -n "$started_libvirtd" ]]; then
        bash scripts/libvirtd.sh stop || true
    fi
}
trap cleanup EXIT

if [[ "$(id -u)" == 0 && -x /usr/sbin/libvirtd ]]; then
    if ! bash scripts/libvirtd.sh status >/dev/null 2>&1; then
        started_libvirtd=1  # stop stops only what the script's pid files name
        if ! bash scripts/libvirtd.sh start >/dev/null; then
            echo "demo.sh: libvirtd did not start here: the demo uses the test driver" >&2
        fi
    fi
else
    echo "demo.sh: not root or no libvirtd: the demo uses the test driver" >&2
fi

"$VENV/bin/virtualpod" demo "$@"
