"""The operator console: server-rendered pages that answer "which tenants are not provisioned,
why, since when, and what did the worker try?" - from Postgres, beside Flower's task view.

- ``console_router(require_operator, csrf_secret)``: the pages, for the UI to mount behind its
  own operator check (as it mounts ``api_hooks.router.operator_router``).
- ``standalone_console(operator_token, session_minutes, idle_minutes)``: the pages behind a
  sign-in with the operator token, as ``api_hooks.app`` serves them.
"""

from __future__ import annotations

from fastapi import APIRouter

from api_hooks.console.guard import CsrfGuard
from api_hooks.console.pages import PREFIX, console_router
from api_hooks.console.render import Pages
from api_hooks.console.sessions import ConsoleSessions
from api_hooks.console.sign_in import SIGN_IN_ROUTE, SIGN_OUT_ROUTE, sign_in_router
from worker.db import deployment_secret

__all__ = ["PREFIX", "console_router", "standalone_console"]


def standalone_console(
    operator_token: str, session_minutes: int, idle_minutes: int, secure_cookies: bool = False
) -> APIRouter:
    """The console behind its own sign-in: a form takes the operator token once, then a
    session (``console.sessions``) that ends on sign-out, after ``idle_minutes`` unused, or
    ``session_minutes`` after sign-in. ``secure_cookies``: the deployment is behind TLS."""

    # Random per deployment, shared by every process through Postgres, read on first use:
    # nothing to configure, and nothing about the operator token in a public form token.
    def console_secret() -> bytes:
        return deployment_secret("console")

    sessions = ConsoleSessions(operator_token, session_minutes, idle_minutes, console_secret)
    router = APIRouter()
    # The routes as built: include_router would build every one of them again (api_hooks.app).
    router.routes.extend(
        sign_in_router(
            sessions,
            Pages(CsrfGuard(console_secret), sign_out_route=None, secure_cookies=secure_cookies),
            secure_cookies,
        ).routes
    )
    router.routes.extend(
        console_router(
            sessions.dependency(SIGN_IN_ROUTE),
            console_secret,
            sign_out_route=SIGN_OUT_ROUTE,
            secure_cookies=secure_cookies,
        ).routes
    )
    return router
