"""The runnable operator API: ``uvicorn api_hooks.app:create_app --factory`` or
``python -m api_hooks``.

It needs OPERATOR_TOKEN (or OPERATOR_TOKEN_FILE) and refuses to start without it; the app is
built by the factory only, so importing this module needs no settings.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from typing import Any

from fastapi import Depends, FastAPI, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.routing import BaseRoute

from api_hooks.auth import bearer_auth
from api_hooks.console import standalone_console
from api_hooks.headers import SecurityHeaders
from api_hooks.http_errors import (
    UNREACHABLE,
    error_responses,
    plain_validation_error,
    registry_unavailable_error,
)
from api_hooks.locations import locations_router, locations_token_auth
from api_hooks.router import bearer_token_auth, operator_router
from api_hooks.schemas import Health
from api_hooks.throttle import THROTTLED
from worker.db import get_engine, serve_requests
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
    },
    **error_responses({401: "The scrape credential is missing or wrong", 429: THROTTLED}),
}
# One scrape runs about six queries: answers within this many seconds of each other share one.
METRICS_CACHE_SECONDS = 1.0


def create_app(settings: Settings | None = None) -> FastAPI:
    """The operator API with bearer-token auth from the settings (the uvicorn factory)."""
    settings = settings or get_settings()
    if not settings.operator_token:
        raise SettingsError("OPERATOR_TOKEN (or OPERATOR_TOKEN_FILE) must be set for the API")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProvisioningCollector(get_engine(), shared_pool()))
    application = _assemble(
        settings.operator_token,
        registry,
        settings.locations_token,
        metrics_token=settings.metrics_token or settings.operator_token,
        behind_tls=settings.behind_tls,
    )
    # The operator console: HTML pages behind a sign-in with the same token (not in OpenAPI).
    application.router.routes.extend(
        _console_routes(
            settings.operator_token,
            settings.console_session_minutes,
            settings.console_session_idle_minutes,
            settings.behind_tls,
        )
    )
    return application


def serve() -> FastAPI:
    """The API process's app (``uvicorn api_hooks.app:serve --factory``): :func:`create_app`,
    with this process's waits for a Postgres lock or pooled connection bounded (503, not a hang:
    ``worker.db.serve_requests``)."""
    serve_requests()
    return create_app()


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the app; describing it needs no token and no database."""
    registry = CollectorRegistry(auto_describe=False)
    return _assemble("not-served", registry, None, metrics_token=None).openapi()


def render_openapi(document: dict[str, Any]) -> str:
    """The document as committed in ``docs/openapi.json``: sorted keys, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _assemble(
    operator_token: str,
    registry: CollectorRegistry,
    locations_token: str | None,
    metrics_token: str | None,
    behind_tls: bool = False,
) -> FastAPI:
    # No /docs or /redoc: Swagger UI would load scripts from a CDN and invite operators to
    # paste the token into a third party's page. The document is /openapi.json (and
    # docs/openapi.json in the repository).
    application = FastAPI(
        title=TITLE, version=VERSION, description=DESCRIPTION, docs_url=None, redoc_url=None
    )
    application.add_middleware(SecurityHeaders, behind_tls=behind_tls)
    # The router's routes answer validation errors plainly themselves; this covers the rest.
    application.add_exception_handler(RequestValidationError, plain_validation_error)
    for unreachable in UNREACHABLE:
        application.add_exception_handler(unreachable, registry_unavailable_error)
    application.router.routes.extend(_api_routes(operator_token, locations_token))
    scrape = CachedScrape(registry)
    require_scraper = bearer_auth(
        metrics_token,
        "METRICS_TOKEN",
        "MetricsToken",
        "`Authorization: Bearer <METRICS_TOKEN>` (unset: the operator token)",
    )

    @application.get(
        "/metrics",
        tags=["monitoring"],
        summary="Prometheus metrics",
        response_class=Response,
        responses=METRICS_RESPONSES,
        dependencies=[Depends(require_scraper)],
    )
    def metrics() -> Response:
        """Provisioning metrics read from Postgres, behind the scrape credential; scrapes
        within a second of each other share one reading."""
        return Response(scrape.latest(), media_type=CONTENT_TYPE_LATEST)

    @application.get("/healthz", tags=["monitoring"], summary="Liveness")
    def healthz() -> Health:
        """Answers while the process serves requests; checks no dependency."""
        return Health(status="ok")

    return application


# The routers' routes as they were built, prefixes and dependencies included (include_router
# would build each route again), and built once per process for each set of the settings they
# read: building them is most of building an app. What they count while serving - failed
# credentials - is kept in the serving app's state (api_hooks.throttle.throttle_of), so two
# apps of one process share code, never counts. They do not see an app's dependency_overrides
# (nothing here uses them); they are added before the OpenAPI document is first built.
@functools.lru_cache(maxsize=16)
def _api_routes(operator_token: str, locations_token: str | None) -> tuple[BaseRoute, ...]:
    """``/operator`` and ``/locations`` (a read-only credential of the telemetry services)."""
    operator = operator_router(bearer_token_auth(operator_token)).routes
    return (*operator, *locations_router(locations_token_auth(locations_token)).routes)


@functools.lru_cache(maxsize=16)
def _console_routes(
    operator_token: str, session_minutes: int, idle_minutes: int, behind_tls: bool
) -> tuple[BaseRoute, ...]:
    """The console behind its sign-in (``api_hooks.console.standalone_console``)."""
    console = standalone_console(
        operator_token, session_minutes, idle_minutes, secure_cookies=behind_tls
    )
    return tuple(console.routes)


class CachedScrape:
    """The registry's exposition, computed by one caller at a time and reused for
    ``METRICS_CACHE_SECONDS``: a burst of scrapes costs Postgres one reading."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._text = b""
        self._taken = -math.inf

    def latest(self) -> bytes:
        with self._lock:
            if time.monotonic() - self._taken >= METRICS_CACHE_SECONDS:
                self._text = generate_latest(self._registry)
                self._taken = time.monotonic()
            return self._text
