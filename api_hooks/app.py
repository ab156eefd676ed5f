"""The runnable operator API: ``uvicorn api_hooks.app:app`` or ``python -m api_hooks``.

It needs OPERATOR_TOKEN (or OPERATOR_TOKEN_FILE) and refuses to start without it.
"""

from __future__ import annotations

from fastapi import FastAPI

from api_hooks.router import bearer_token_auth, operator_router
from worker.settings import Settings, SettingsError, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """The operator API with bearer-token auth from the settings."""
    settings = settings or get_settings()
    if not settings.operator_token:
        raise SettingsError("OPERATOR_TOKEN (or OPERATOR_TOKEN_FILE) must be set for the API")
    application = FastAPI(title="tenant-provisioner operator API")
    application.include_router(operator_router(bearer_token_auth(settings.operator_token)))

    @application.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return application


app = create_app()
