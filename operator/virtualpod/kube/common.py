"""What every role shares: Kopf's own settings and the login to the API server."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

import kopf

from virtualpod.core.binding import FINALIZER
from virtualpod.kube.api import REPORTING_COMPONENT, reporting_instance

#: Where Kopf keeps its handlers' progress and the last handled spec (the CRD preserves
#: `status.kopf`).
KOPF_STATUS = "kopf"
PROGRESS_FIELD = f"status.{KOPF_STATUS}.progress"
DIFFBASE_FIELD = f"status.{KOPF_STATUS}.last-handled-configuration"


#: The only metadata in Kopf's essence of an object; its status is not in it at all.
ESSENCE_METADATA = ("labels", "annotations")
_DROPPED = ("status", "metadata")


class SpecDiffBase(kopf.StatusDiffBaseStorage):
    """Kopf's last handled spec in `status.kopf`, built without copying what it drops.

    Kopf deep-copies the whole object, then drops its status and all metadata but
    labels and annotations; status is most of a VirtualPod, and the agent's own status
    write brings each object back once more. Unless a handler diffs another field, those
    parts are left out before the copy: the same essence, less copying.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        fields = list(extra_fields or ())
        if not fields:
            metadata = body.get("metadata") or {}
            kept: dict[str, Any] = {k: v for k, v in body.items() if k not in _DROPPED}
            kept["metadata"] = {k: metadata[k] for k in ESSENCE_METADATA if k in metadata}
            body = kopf.Body(cast(kopf.RawBody, kept))
        return super().build(body=body, extra_fields=fields)


def configure(settings: kopf.OperatorSettings, instance: str) -> None:
    """Kopf's own features: its bookkeeping in status, a named finalizer, Event posting.

    Handler progress and the last handled spec go into `status.kopf` (which the CRD
    preserves), not annotations: a handler's status and Kopf's bookkeeping are then one
    write, one watch event for every watcher, instead of a status PATCH and a metadata
    PATCH per handled change.

    Kopf's own Events (a handler that failed) say who acted, like the operator's own
    (`kube.poster`): component `virtualpod`, this host as the instance (`kubectl
    describe`: `From: virtualpod, HOST`).
    """
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field=PROGRESS_FIELD)
    settings.persistence.diffbase_storage = SpecDiffBase(field=DIFFBASE_FIELD)
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.reporting_instance = reporting_instance(instance)
    settings.posting.event_name_prefix = f"{REPORTING_COMPONENT}-"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = [0.5, 1, 2, 5]


async def login(memo: Any, logger: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """The emulator's URL when running against it; else service account or kubeconfig."""
    api_url: str | None = getattr(memo, "api_url", None)
    if api_url:
        return kopf.ConnectionInfo(server=api_url, insecure=True, scheme="Bearer")
    return kopf.login_with_service_account(logger=logger, **kwargs) or kopf.login_with_kubeconfig(
        logger=logger, **kwargs
    )


def register(registry: kopf.OperatorRegistry) -> None:
    """The handlers every role needs: the login."""
    kopf.on.login(registry=registry)(login)
