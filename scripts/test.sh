#!/usr/bin/env bash
# The test suite: lint, type check, then pytest against the libvirt test driver and,
# where this machine can run it, a real libvirtd + QEMU started (and stopped) here.
# Extra arguments go to pytest, e.g. scripts/test.sh -k qos
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

if [[ -z "${VIRTUALPOD_QEMU_URI:-}" && "$(id -u)" == 0 && -x /usr/sbin/libvirtd ]]; then
    if ! bash scripts/libvirtd.sh status >/dev/null 2>&1; then
        if bash scripts/libvirtd.sh start; then
            started_libvirtd=1
        fi
    fi
    if bash scripts/libvirtd.sh status >/dev/null 2>&1; then
        export VIRTUALPOD_QEMU_URI=qemu:///system
    fi
fi
if [[ -n "${VIRTUALPOD_QEMU_URI:-}" ]]; then
    echo "test.sh: real libvirt + QEMU tests run against $VIRTUALPOD_QEMU_URI"
elif [[ "${CI:-}" == "true" ]]; then
    echo "test.sh: CI must run the real libvirtd + QEMU tests, but libvirtd did not start" >&2
    exit 1
else
    echo "test.sh: no real libvirtd here: QEMU tests are skipped (test driver only)"
fi

echo "test.sh: ruff"
"$VENV/bin/ruff" check operator tests bench
"$VENV/bin/ruff" format --check operator tests bench
echo "test.sh: mypy"
"$VENV/bin/mypy"
echo "test.sh: pytest"
"$VENV/bin/pytest" "$@"
