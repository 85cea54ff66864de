"""What every role shares: Kopf's own settings and the login to the API server."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from virtualpod.core.spec import API_GROUP
from virtualpod.kube.api import REPORTING_COMPONENT, reporting_instance

FINALIZER = f"{API_GROUP}/finalizer"


def configure(settings: kopf.OperatorSettings, instance: str) -> None:
    """Kopf's own features: annotations for progress, a named finalizer, Event posting.

    Handler Events say who acted, like the ones posted outside handlers: component
    `virtualpod`, this host as the instance (`kubectl describe`: `From: virtualpod, HOST`).
    """
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
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
