#!/usr/bin/env bash
# Replay the memory-pressure demo in a cluster where the operator runs with the VM pool
# as its signal (the Vagrant box: scripts/vagrant-provision.sh). While it runs,
# `kubectl get vpod -w` shows the phases change:
#   1. a Guaranteed VM that fills 832 MiB is created (manifests/demo/pressure/hog.yaml);
#   2. the pool runs out: BestEffort `batch` is suspended, then Burstable `web`
#      (Guaranteed `database` and `hog` never are);
#   3. the hog is deleted: after the transition period `web`, then `batch`, resume.
# Usage: virtualpod-pressure-demo   (KUBECONFIG as for kubectl; ~2 minutes)
set -euo pipefail

HERE="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
NS=vpod-demo
TIMEOUT="${VIRTUALPOD_DEMO_TIMEOUT:-300s}"

phase_is() {  # phase_is NAME PHASE TIMEOUT
    kubectl wait -n "$NS" "vpod/$1" --for=jsonpath='{.status.phase}'="$2" --timeout="$3"
}

watcher=""
cleanup() {
    kubectl delete -n "$NS" vpod/hog --ignore-not-found --wait=false >/dev/null 2>&1 || true
    [[ -n "$watcher" ]] && kill "$watcher" 2>/dev/null || true
}
trap cleanup EXIT

kubectl apply -f "$REPO/manifests/demo/namespace.yaml" >/dev/null
for qos in besteffort burstable guaranteed; do
    kubectl apply -f "$REPO/manifests/demo/$qos.yaml" >/dev/null
done
for name in batch web database; do
    phase_is "$name" Running "$TIMEOUT" >/dev/null
done

echo "== kubectl get vpod -w (phase changes as they happen)"
kubectl get vpod -n "$NS" -w &
watcher=$!

echo "== creating a Guaranteed VM that fills 832 MiB of the 896Mi VM pool"
kubectl apply -f "$REPO/manifests/demo/pressure/hog.yaml" >/dev/null
phase_is batch Suspended "$TIMEOUT" >/dev/null
echo "== BestEffort batch suspended"
phase_is web Suspended "$TIMEOUT" >/dev/null
echo "== Burstable web suspended; Guaranteed database: $(kubectl get -n "$NS" vpod/database -o jsonpath='{.status.phase}')"

echo "== deleting the hog: memory comes back"
kubectl delete -n "$NS" vpod/hog --wait=true >/dev/null
phase_is web Running "$TIMEOUT" >/dev/null
phase_is batch Running "$TIMEOUT" >/dev/null
echo "== all resumed"
kubectl get vpod -n "$NS"
kubectl get events -n "$NS" --sort-by=.lastTimestamp | tail -n 20
