#!/usr/bin/env bash
# Run a real virtlogd + libvirtd (QEMU driver) without systemd, for tests,
# benchmarks and CI.  Usage: scripts/libvirtd.sh start|stop|restart|status
#
#   start    idempotent; prints `export VIRTUALPOD_QEMU_URI=qemu:///system`
#            and writes the same line to $RUN_DIR/env (source it).
#   stop     stops only the daemons this script started (by its pid files).
#   restart  restarts libvirtd only (running domains survive, virtlogd stays).
#   stop-libvirtd  stops libvirtd only (tests: "daemon unreachable").
#   status   exit 0 when qemu:///system answers.
#
# Needs root.  Writes user/group root and security_driver none into
# /etc/libvirt/qemu.conf (what a systemd-less test host needs; see docs).
# When root lacks CAP_SYS_RESOURCE (RLIMIT_MEMLOCK capped, as in some CI
# containers) libvirtd runs with scripts/memlock-shim.c preloaded so domains
# with <memtune><hard_limit> can start; production hosts never need it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
RUN_DIR="${VIRTUALPOD_RUN_DIR:-$REPO/.run/libvirtd}"
URI="qemu:///system"
LIBVIRTD="${LIBVIRTD:-/usr/sbin/libvirtd}"
VIRTLOGD="${VIRTLOGD:-/usr/sbin/virtlogd}"
QEMU_CONF=/etc/libvirt/qemu.conf
START_TIMEOUT="${VIRTUALPOD_LIBVIRTD_TIMEOUT:-60}"

log() { echo "libvirtd.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# pid from a pid file, only if that process is alive and is the named program.
owned_pid() {
    local name="$1" pidfile="$RUN_DIR/$1.pid" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    [[ "$(cat "/proc/$pid/comm")" == "$name" ]] || return 1
    echo "$pid"
}

answers() { virsh -c "$URI" version >/dev/null 2>&1; }

has_cap_sys_resource() {
    local capeff
    capeff="$(awk '/^CapEff:/ {print $2}' /proc/self/status)"
    (( (16#$capeff >> 24) & 1 ))
}

ensure_user() {
    # libvirt 9 resolves its built-in user before reading qemu.conf.
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
    getent passwd libvirt-qemu >/dev/null ||
        useradd --system -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
}

ensure_qemu_conf() {
    local marker="# virtualpod: systemd-less test host"
    mkdir -p "$(dirname "$QEMU_CONF")"
    touch "$QEMU_CONF"
    grep -qF "$marker" "$QEMU_CONF" && return 0
    # Comment out conflicting active settings, then append ours.
    sed -i -E 's/^[[:space:]]*(user|group|security_driver)[[:space:]]*=/#&/' "$QEMU_CONF"
    printf '\n%s\nuser = "root"\ngroup = "root"\nsecurity_driver = "none"\n' \
        "$marker" >>"$QEMU_CONF"
}

build_shim() {
    local so="$RUN_DIR/memlock-shim.so" src="$HERE/memlock-shim.c"
    if [[ ! -s "$so" || "$src" -nt "$so" ]]; then
        command -v gcc >/dev/null || die "gcc is needed to build the memlock shim"
        gcc -shared -fPIC -O2 -Wall -o "$so" "$src" -ldl
    fi
    echo "$so"
}

wait_until() {  # wait_until SECONDS CMD...: poll a condition, 0.1 s steps
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        (( SECONDS < deadline )) || return 1
        sleep 0.1
    done
}

gone() { ! kill -0 "$1" 2>/dev/null; }

stop_one() {
    local name="$1" pid
    if pid="$(owned_pid "$name")"; then
        kill -TERM "$pid"
        wait_until 30 gone "$pid" || { log "$name $pid ignored SIGTERM; killing"; kill -KILL "$pid"; }
        log "stopped $name ($pid)"
    fi
    rm -f "$RUN_DIR/$name.pid"
}

start_virtlogd() {
    if owned_pid virtlogd >/dev/null; then return 0; fi
    if pgrep -x virtlogd >/dev/null; then
        log "using a virtlogd this script did not start"; return 0
    fi
    "$VIRTLOGD" -d -p "$RUN_DIR/virtlogd.pid"
    wait_until 10 owned_pid virtlogd >/dev/null || die "virtlogd did not start"
}

start_libvirtd() {
    if owned_pid libvirtd >/dev/null; then
        wait_until "$START_TIMEOUT" answers || die "libvirtd runs but $URI does not answer"
        return 0
    fi
    if pgrep -x libvirtd >/dev/null; then
        log "using a libvirtd this script did not start"
        wait_until "$START_TIMEOUT" answers || die "$URI does not answer"
        return 0
    fi
    cat >"$RUN_DIR/libvirtd.conf" <<CONF
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
CONF
    local preload=""
    if ! has_cap_sys_resource; then
        preload="$(build_shim)"
        log "CAP_SYS_RESOURCE missing: preloading $preload (test-only memlock shim)"
    fi
    LD_PRELOAD="$preload" "$LIBVIRTD" -d -f "$RUN_DIR/libvirtd.conf" -p "$RUN_DIR/libvirtd.pid"
    wait_until "$START_TIMEOUT" answers || die "$URI did not answer within ${START_TIMEOUT}s (see /var/log/libvirt/libvirtd.log)"
}

start() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    [[ -x "$LIBVIRTD" ]] || die "$LIBVIRTD missing: run scripts/install-deps.sh"
    mkdir -p "$RUN_DIR" /var/log/libvirt/qemu /var/lib/libvirt/qemu /run/libvirt
    ensure_user
    ensure_qemu_conf
    start_virtlogd
    start_libvirtd
    echo "export VIRTUALPOD_QEMU_URI=$URI" >"$RUN_DIR/env"
    log "$URI answers; env in $RUN_DIR/env"
    cat "$RUN_DIR/env"
}

status() {
    local name pid
    for name in virtlogd libvirtd; do
        if pid="$(owned_pid "$name")"; then echo "$name: running ($pid, started here)"
        elif pgrep -x "$name" >/dev/null; then echo "$name: running (not started here)"
        else echo "$name: stopped"; fi
    done
    if answers; then echo "$URI: answers"; else echo "$URI: does not answer"; return 1; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop_one libvirtd; stop_one virtlogd ;;
    restart) stop_one libvirtd; start ;;
    stop-libvirtd) stop_one libvirtd ;;
    status) status ;;
    *) echo "usage: $0 start|stop|restart|stop-libvirtd|status" >&2; exit 2 ;;
esac
