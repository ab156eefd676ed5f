"""The runnable operator API: ``uvicorn api_hooks.app:app`` or ``python -m api_hooks``.

It needs OPERATOR_TOKEN (or OPERATOR_TOKEN_FILE) and refuses to start without it.
"""

from __future__ import annotations

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api_hooks.router import bearer_token_auth, operator_router
from worker.db import get_engine
from worker.metrics import ProvisioningCollector
from worker.nodes import shared_pool
from worker.settings import Settings, SettingsError, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """The operator API with bearer-token auth from the settings."""
    settings = settings or get_settings()
    if not settings.operator_token:
        raise SettingsError("OPERATOR_TOKEN (or OPERATOR_TOKEN_FILE) must be set for the API")
    application = FastAPI(title="tenant-provisioner operator API")
    application.include_router(operator_router(bearer_token_auth(settings.operator_token)))

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProvisioningCollector(get_engine(), shared_pool()))

    @application.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        # Prometheus scrapes without the operator token; nothing here names a tenant.
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @application.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return application


app = create_app()
