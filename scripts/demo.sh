#!/usr/bin/env bash
# `make demo`: run `virtualpod demo` with a real libvirtd + QEMU where this machine
# allows it (started and stopped here), else on libvirt's test driver, saying which.
# Extra arguments go to `virtualpod demo` (e.g. --kubeconfig FILE).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
exec bash scripts/with-libvirtd.sh "${VIRTUALPOD_VENV:-$REPO/.venv}/bin/virtualpod" demo "$@"
