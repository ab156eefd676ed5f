"""The runnable operator API: ``uvicorn api_hooks.app:create_app --factory`` or
``python -m api_hooks``.

It needs OPERATOR_TOKEN (or OPERATOR_TOKEN_FILE) and refuses to start without it; the app is
built by the factory only, so importing this module needs no settings.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api_hooks.console import standalone_console
from api_hooks.http_errors import plain_validation_error
from api_hooks.locations import locations_router, locations_token_auth
from api_hooks.router import bearer_token_auth, operator_router
from api_hooks.schemas import Health
from worker.db import get_engine
from worker.metrics import ProvisioningCollector
from worker.nodes import shared_pool
from worker.settings import Settings, SettingsError, get_settings

TITLE = "tenant-provisioner operator API"
VERSION = "1.0.0"
DESCRIPTION = (
    "Create, inspect, retry, adopt and delete tenants' InfluxDB 3 databases. Requests never "
    "wait for InfluxDB: the work is queued for the provisioning worker. Every 4xx answer is "
    '`{"detail": "<message>"}`.'
)
METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format; no tenant ids in it",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The operator API with bearer-token auth from the settings (the uvicorn factory)."""
    settings = settings or get_settings()
    if not settings.operator_token:
        raise SettingsError("OPERATOR_TOKEN (or OPERATOR_TOKEN_FILE) must be set for the API")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProvisioningCollector(get_engine(), shared_pool()))
    application = _assemble(settings.operator_token, registry, settings.locations_token)
    # The operator console: HTML pages behind a sign-in with the same token (not in OpenAPI).
    application.include_router(
        standalone_console(settings.operator_token, settings.console_session_minutes)
    )
    return application


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the app; describing it needs no token and no database."""
    return _assemble("not-served", CollectorRegistry(auto_describe=False), None).openapi()


def render_openapi(document: dict[str, Any]) -> str:
    """The document as committed in ``docs/openapi.json``: sorted keys, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _assemble(
    operator_token: str, registry: CollectorRegistry, locations_token: str | None
) -> FastAPI:
    application = FastAPI(title=TITLE, version=VERSION, description=DESCRIPTION)
    # The router's routes answer validation errors plainly themselves; this covers the rest.
    application.add_exception_handler(RequestValidationError, plain_validation_error)
    application.include_router(operator_router(bearer_token_auth(operator_token)))
    # For the services that write and read telemetry: a read-only credential of their own.
    application.include_router(locations_router(locations_token_auth(locations_token)))

    @application.get(
        "/metrics",
        tags=["monitoring"],
        summary="Prometheus metrics",
        response_class=Response,
        responses=METRICS_RESPONSES,
    )
    def metrics() -> Response:
        """Provisioning metrics read from Postgres; no auth, so Prometheus can scrape it."""
        # Without the operator token on purpose: nothing here names a tenant.
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @application.get("/healthz", tags=["monitoring"], summary="Liveness")
    def healthz() -> Health:
        """Answers while the process serves requests; checks no dependency."""
        return Health(status="ok")

    return application
