#!/usr/bin/env bash
# Provision the Vagrant box (run as root by `vagrant up`): the project's own install
# and libvirtd scripts, single-node k3s, the CRD, the operator's two roles (controller
# and this host's agent) as systemd services (`virtualpod run` from the repository's
# venv: the box has no image registry), the demo VirtualPods, and
# `virtualpod-pressure-demo`.
# Idempotent: `vagrant provision` re-runs it.
set -euo pipefail

SRC="${VIRTUALPOD_SRC:-/vagrant}"
GUEST_DIR=/var/lib/virtualpod/guest
SETTINGS=/etc/virtualpod/settings.yaml
KUBECONFIG_FILE=/etc/rancher/k3s/k3s.yaml
export DEBIAN_FRONTEND=noninteractive

log() { echo "vagrant-provision: $*"; }

wait_until() {  # wait_until SECONDS CMD...: poll a condition once a second
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        (( SECONDS < deadline )) || return 1
        sleep 1
    done
}

log "packages (scripts/install-deps.sh)"
apt-get update -qq
apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null
bash "$SRC/scripts/install-deps.sh"

log "libvirtd as a systemd unit around scripts/libvirtd.sh"
cat >/etc/systemd/system/virtualpod-libvirtd.service <<UNIT
[Unit]
Description=libvirtd + virtlogd for virtualpod (scripts/libvirtd.sh)
After=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
Environment=VIRTUALPOD_RUN_DIR=/run/virtualpod/libvirtd
ExecStart=/bin/bash $SRC/scripts/libvirtd.sh start
ExecStop=/bin/bash $SRC/scripts/libvirtd.sh stop

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now virtualpod-libvirtd.service

log "test guest for the pressure demo (scripts/guest.sh)"
bash "$SRC/scripts/guest.sh" "$GUEST_DIR"

log "k3s (single node)"
if ! command -v k3s >/dev/null; then
    curl -sfL https://get.k3s.io |
        INSTALL_K3S_EXEC="--disable traefik --write-kubeconfig-mode 644" sh -
fi
export KUBECONFIG="$KUBECONFIG_FILE"
wait_until 300 kubectl get nodes
wait_until 300 kubectl wait --for=condition=Ready node --all --timeout=5s
install -d -o vagrant -g vagrant /home/vagrant/.kube
install -m 600 -o vagrant -g vagrant "$KUBECONFIG_FILE" /home/vagrant/.kube/config

log "CRD and PriorityClasses"
kubectl apply -f "$SRC/crds/virtualpod.dev_virtualpods.yaml"
kubectl apply -f "$SRC/manifests/priorityclasses.yaml"
kubectl wait --for=condition=Established crd/virtualpods.virtualpod.dev --timeout=60s

log "operator settings: the demo's small sizes, the VM pool as the signal"
# The pool signal with 896Mi for VMs: the demo VMs fit easily, and once the hog's guest
# (manifests/demo/pressure/hog.yaml) has filled its memory the VMs' working sets exhaust
# the pool, without starving the box itself. Admission still counts requests against
# the box's capacity - reserved, so the hog is admitted.
domain_type=qemu
[[ -r /dev/kvm && -w /dev/kvm ]] && domain_type=kvm
install -d /etc/virtualpod
cat >"$SETTINGS" <<YAML
# Written by scripts/vagrant-provision.sh; see docs/settings.md.
libvirtURI: qemu:///system
hostName: $(hostname)
domainType: $domain_type
defaultContainerSize: {cpu: 500m, memory: 128Mi}
padding: {memory: 32Mi}
hostPaths:                # the test guest of the pressure demo's hog (docs/security.md)
  allowed: [$GUEST_DIR]
eviction:
  signal: pool
  poolAllocatable: 896Mi
  hard: {memoryAvailable: 100Mi}
  pressureTransitionPeriod: 10s
  samplingInterval: 500ms
  suspendMode: Save
YAML
log "domainType: $domain_type (kvm when nested virtualization reaches the box)"

log "cluster mode: the RuntimeClass of the companion Pods, this node as a libvirt host"
kubectl apply -f "$SRC/manifests/runtimeclass.yaml"
kubectl label node "$(hostname)" virtualpod.dev/libvirt-host=true --overwrite

log "the operator's two roles as systemd services: the controller and this host's agent"
# One controller replica here, so no peering; the agent serves what is bound to this node.
ln -sf "$SRC/.venv/bin/virtualpod" /usr/local/bin/virtualpod
systemctl disable --now virtualpod-operator.service 2>/dev/null || true
rm -f /etc/systemd/system/virtualpod-operator.service
unit() {  # unit NAME DESCRIPTION ARGS...: a systemd service running `virtualpod ARGS`
    local name=$1 description=$2; shift 2
    cat >"/etc/systemd/system/$name.service" <<UNIT
[Unit]
Description=$description
After=virtualpod-libvirtd.service k3s.service
Requires=virtualpod-libvirtd.service

[Service]
Environment=KUBECONFIG=$KUBECONFIG_FILE
Environment=PYTHONUNBUFFERED=1
ExecStart=$SRC/.venv/bin/virtualpod $*
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT
}
unit virtualpod-controller "virtualpod controller (companion Pods, binding)" \
    run --role=controller --config "$SETTINGS" --standalone
unit virtualpod-agent "virtualpod agent of this host (its VMs)" \
    run --role=agent --host-name "$(hostname)" --config "$SETTINGS" --standalone
systemctl daemon-reload
for role in controller agent; do
    systemctl enable "virtualpod-$role.service"
    systemctl restart "virtualpod-$role.service"
done

log "demo VirtualPods (one per QoS class)"
kubectl apply -f "$SRC/manifests/demo/namespace.yaml"
for qos in besteffort burstable guaranteed; do
    kubectl apply -f "$SRC/manifests/demo/$qos.yaml"
done
ln -sf "$SRC/scripts/pressure-demo.sh" /usr/local/bin/virtualpod-pressure-demo
if ! wait_until 180 sh -c \
    "[ \$(kubectl get vpod -n vpod-demo -o jsonpath='{.items[*].status.phase}' | tr ' ' '\n' | grep -c '^Running$') -eq 3 ]"; then
    log "the demo VirtualPods are not all Running yet; see: journalctl -u virtualpod-controller -u virtualpod-agent"
fi
kubectl get vpod -n vpod-demo
log "done: vagrant ssh -c 'virtualpod-pressure-demo'"
