"""Signing in to the standalone app's console with the operator token, and signing out.

The UI that mounts ``console_router`` behind its own operator check does not use this.
"""

from __future__ import annotations

from math import ceil
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api_hooks.console.guard import CSRF_FIELD, safe_next
from api_hooks.console.pages import MAX_FORM_BYTES, PREFIX
from api_hooks.console.render import Pages
from api_hooks.console.sessions import SESSION_COOKIE, ConsoleSessions
from api_hooks.throttle import client_of, throttle_of

SIGN_IN_ROUTE = "console_sign_in"
SIGN_OUT_ROUTE = "console_sign_out"


def sign_in_router(
    sessions: ConsoleSessions, pages: Pages, secure_cookies: bool = False
) -> APIRouter:
    """``GET``/``POST /operator/console/sign-in`` and ``POST /operator/console/sign-out``.
    ``secure_cookies``: the deployment is behind TLS (API_BEHIND_TLS), so the session cookie is
    ``Secure`` whatever scheme the proxy forwarded; otherwise it follows the request's."""
    router = APIRouter(prefix=PREFIX, include_in_schema=False, max_body_size=MAX_FORM_BYTES)

    @router.get("/sign-in", name=SIGN_IN_ROUTE, response_class=HTMLResponse)
    def sign_in_form(
        request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
    ) -> Response:
        return pages.render(request, "sign_in.html", signed_in=False, next=safe_next(next, PREFIX))

    @router.post("/sign-in", name="console_sign_in_submit")
    def sign_in(
        request: Request,
        token: Annotated[str | None, Form(max_length=4096)] = None,
        csrf_token: Annotated[str | None, Form()] = None,
        next: Annotated[str | None, Form(max_length=2000)] = None,
    ) -> Response:
        target = safe_next(next, PREFIX)
        client = client_of(request)
        if refused := pages.csrf.refusal(request, {CSRF_FIELD: csrf_token}):
            return pages.render(
                request,
                "sign_in.html",
                status.HTTP_403_FORBIDDEN,
                signed_in=False,
                next=target,
                problem=refused,
            )
        if not token or not sessions.token_matches(token):
            # (the right token is never throttled: its address may be everyone's, a proxy's;
            # guesses of it here and at /operator are one count: one credential)
            if (wait := throttle_of(request, "OPERATOR_TOKEN").refuse(client)) is not None:
                throttled = pages.render(
                    request,
                    "sign_in.html",
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    signed_in=False,
                    next=target,
                    problem=f"Too many failed sign-ins. Try again in {ceil(wait)} s.",
                )
                throttled.headers["Retry-After"] = str(ceil(wait))
                return throttled
            return pages.render(
                request,
                "sign_in.html",
                status.HTTP_401_UNAUTHORIZED,
                signed_in=False,
                next=target,
                problem="That is not the operator token.",
            )
        response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
        response.set_cookie(
            SESSION_COOKIE,
            sessions.issue(client),
            max_age=sessions.max_age,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=secure_cookies or request.url.scheme == "https",
        )
        return response

    @router.post("/sign-out", name=SIGN_OUT_ROUTE)
    def sign_out(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> Response:
        if refused := pages.csrf.refusal(request, {CSRF_FIELD: csrf_token}):
            return pages.render(request, "refused.html", status.HTTP_403_FORBIDDEN, problem=refused)
        sessions.end(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse(
            request.url_for(SIGN_IN_ROUTE).path, status_code=status.HTTP_303_SEE_OTHER
        )
        response.delete_cookie(
            SESSION_COOKIE,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=secure_cookies or request.url.scheme == "https",
        )
        return response

    return router
