"""Test support: an emulated Kubernetes API, a small client for it (or for a real
cluster) and one way to start the operator, shared by the tests, the bench and the demo.

Never imported by the product path (`virtualpod run`, `plan`); its extra dependency (KMock)
comes with the `testing` extra: `pip install 'virtualpod[testing]'`.
"""

from virtualpod.testing.client import ApiRequestError, KubeClient, vpod_path
from virtualpod.testing.emulator import KubernetesApiEmulator, serve_emulator, write_kubeconfig
from virtualpod.testing.objects import ApiError, ResourceSpec
from virtualpod.testing.operator import (
    VPODS_KEY,
    InProcessOperator,
    OperatorProcess,
    ReadyHook,
    running_operator,
)
from virtualpod.testing.waiting import WaitTimeoutError, async_wait_for

__all__ = [
    "VPODS_KEY",
    "ApiError",
    "ApiRequestError",
    "InProcessOperator",
    "KubeClient",
    "KubernetesApiEmulator",
    "OperatorProcess",
    "ReadyHook",
    "ResourceSpec",
    "WaitTimeoutError",
    "async_wait_for",
    "running_operator",
    "serve_emulator",
    "vpod_path",
    "write_kubeconfig",
]
