#!/usr/bin/env bash
# `make test`: lint, type check, then pytest against the libvirt test driver and, where
# this machine can run it, a real libvirtd + QEMU (started and stopped here).
# Extra arguments go to pytest, e.g. scripts/test.sh -k qos
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${VIRTUALPOD_VENV:-$REPO/.venv}"

if [[ -z "${_VIRTUALPOD_WITH_LIBVIRTD:-}" ]]; then
    _VIRTUALPOD_WITH_LIBVIRTD=1 exec bash scripts/with-libvirtd.sh bash "$0" "$@"
fi
if [[ -z "${VIRTUALPOD_QEMU_URI:-}" && "${CI:-}" == "true" ]]; then
    echo "test.sh: CI must run the real libvirtd + QEMU tests, but libvirtd is not available" >&2
    exit 1
fi

echo "test.sh: ruff"
"$VENV/bin/ruff" check operator tests bench
"$VENV/bin/ruff" format --check operator tests bench
echo "test.sh: mypy"
"$VENV/bin/mypy"
echo "test.sh: pytest"
"$VENV/bin/pytest" "$@"
