#!/usr/bin/env bash
# Install what the project needs on a Debian 12 machine (CI or a dev box), then
# create .venv with the project and its test extras. Idempotent; no prompts.
#
#   scripts/install-deps.sh            # apt packages (as root) + .venv
#   SKIP_APT=1 scripts/install-deps.sh # only the venv
#
# apt: real libvirtd + QEMU without libvirt-daemon-system (which drags in
# systemd and ~250 packages), libvirt-dev + gcc to build libvirt-python and the
# memlock shim, the Debian kernel + busybox-static for the TCG test guest,
# binutils for the boot-disk test guest, e2fsprogs + qemu-utils for the workload test
# image (and libvirt creates qcow2 overlays with qemu-img), ruby for a Vagrantfile syntax check.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-python3}"

APT_PACKAGES=(
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
    libvirt-dev pkg-config gcc libc6-dev binutils
    linux-image-amd64 busybox-static cpio gzip e2fsprogs qemu-utils
    ruby python3-venv procps passwd
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$pkg")
done

if [[ -n "${SKIP_APT:-}" ]]; then
    echo "install-deps: SKIP_APT set; not installing: ${missing[*]:-nothing missing}"
elif (( ${#missing[@]} )); then
    as_root=()
    if [[ $EUID -ne 0 ]]; then
        sudo -n true 2>/dev/null || {
            echo "install-deps: need root or passwordless sudo for apt: ${missing[*]}" >&2
            exit 1
        }
        as_root=(sudo -n env DEBIAN_FRONTEND=noninteractive)
    fi
    echo "install-deps: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
else
    echo "install-deps: apt packages present"
fi

if [[ ! -x "$REPO/.venv/bin/python" ]]; then
    "$PYTHON" -m venv "$REPO/.venv"
fi
"$REPO/.venv/bin/python" -m pip install -q --upgrade pip
"$REPO/.venv/bin/python" -m pip install -q -e "$REPO[test]"
"$REPO/.venv/bin/python" -c 'import libvirt; print("install-deps: libvirt-python", libvirt.getVersion())'
