"""The framework's limit: a bare Kopf operator that only patches status on create.

`kopf run --standalone -A bench/bare_kopf.py` (login from the kubeconfig). The cluster
benchmark runs it side by side with virtualpod: what any Kopf operator needs to get a
created VirtualPod to `phase: Running` on the same emulator and machine. With the
garbage collector tuned as `virtualpod run` tunes it, so the comparison is of the
operators, not of the interpreter's settings.
"""

from __future__ import annotations

from typing import Any

import kopf

from virtualpod.kube.interpreter import tune_gc

tune_gc()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="bench.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="bench.dev")
    settings.persistence.finalizer = "bench.dev/finalizer"


@kopf.on.create("virtualpod.dev", "v1alpha1", "virtualpods")
def running(patch: kopf.Patch, **_: Any) -> None:
    patch.status["phase"] = "Running"
