#!/usr/bin/env bash
# Build a one-sector boot disk (scripts/disk-guest.S) as a 1 MiB raw image, for tests of
# VMs that boot from a disk on a host path. The guest tells on its serial port whether
# it booted and whether its disk took a write.
#
#   scripts/disk-guest.sh OUT_FILE
#
# Prints GUEST_DISK=OUT_FILE. Needs: binutils (as, ld).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:?usage: disk-guest.sh OUT_FILE}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

as --32 -o "$WORK/disk.o" "$HERE/disk-guest.S"
ld -m elf_i386 -Ttext 0x7c00 -e _start --oformat binary -o "$WORK/disk.bin" "$WORK/disk.o"
[[ "$(stat -c %s "$WORK/disk.bin")" == 512 ]] || { echo "disk-guest.sh: not one sector" >&2; exit 1; }
truncate -s 1M "$WORK/disk.bin"
mv "$WORK/disk.bin" "$OUT"
echo "GUEST_DISK=$OUT"
