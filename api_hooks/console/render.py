"""How a console page is made: Jinja2 templates with autoescape on (tenant names are free text),
one stylesheet inlined and allowed by its hash, and the headers every page carries.

The Content-Security-Policy allows no script but the console's one (the tenant page's live
timeline) and no inline style but the console's own, each inlined and allowed by its SHA-256;
connections (the timeline's stream) and forms only to this origin; no framing.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import markupsafe
from fastapi import Request
from fastapi.responses import HTMLResponse

from api_hooks.console.guard import CSRF_COOKIE, CSRF_FIELD, CsrfGuard
from api_hooks.errors import InvalidTenantId
from api_hooks.printable import printable
from api_hooks.tenants import validate_tenant_id
from worker.states import ProvisioningState

HERE = Path(__file__).parent
CSS = (HERE / "templates" / "console.css").read_text(encoding="utf-8")
TIMELINE_JS = (HERE / "templates" / "timeline.js").read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_sha256(CSS)}'; "
    f"script-src 'sha256-{_sha256(TIMELINE_JS)}'; connect-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# A sign beside every state's name, so states read apart without color.
STATE_SIGNS = {
    ProvisioningState.PENDING: "○",
    ProvisioningState.PROVISIONING: "◐",
    ProvisioningState.RETRYING: "↻",
    ProvisioningState.PROVISIONED: "✓",
    ProvisioningState.FAILED: "✗",
    ProvisioningState.WAITING_FOR_CAPACITY: "◔",
    ProvisioningState.DEPROVISIONING: "⌫",
}


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the largest sensible unit: ``45 s``, ``12 min``, ``3 h``, ``2 d``."""
    if moment is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size * (2 if unit != "min" else 1):
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def moment(value: datetime | None) -> str:
    """A timestamp as operators read it: UTC, to the second."""
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every value escaped, whatever the template's name
    undefined=jinja2.StrictUndefined,  # a misspelt name fails the test, not the page
    trim_blocks=True,
    lstrip_blocks=True,
    # Every value shown, escaped as text first: no bidi override reorders a page
    # (api_hooks.printable); then HTML-escaped by autoescape.
    finalize=lambda value: (
        printable(value, keep="\n\t")
        if isinstance(value, str) and not isinstance(value, markupsafe.Markup)
        else value
    ),
)
_ENVIRONMENT.filters.update(age=age, moment=moment)
_ENVIRONMENT.globals.update(
    css=CSS, timeline_js=TIMELINE_JS, state_signs=STATE_SIGNS, csrf_field=CSRF_FIELD
)


class Pages:
    """Renders console pages for one router: templates, CSRF tokens, security headers."""

    def __init__(
        self, csrf: CsrfGuard, *, sign_out_route: str | None, secure_cookies: bool = False
    ) -> None:
        """``secure_cookies``: the deployment is behind TLS (``API_BEHIND_TLS``): the CSRF
        cookie is ``Secure`` whatever scheme the proxy forwarded."""
        self.csrf = csrf
        self.sign_out_route = sign_out_route
        self.secure_cookies = secure_cookies

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        """The page, with this browser's CSRF token in its forms and the security headers."""
        token, fresh_nonce = self.csrf.token(request)

        def url(name: str, /, **params: str) -> str:
            # A tenant id is one path segment, percent-encoded: the platform's rows may hold
            # any text ("a/b", "q?x#y"), shown on the lists even when no page can be its.
            quoted = {key: quote(value, safe="") for key, value in params.items()}
            return request.url_for(name, **quoted).path

        def tenant_page(tenant_id: str) -> str:
            """The tenant's page; "" for an id no tenant may have (failed/invalid_name): the
            lists show it as text, since no page answers for it."""
            try:
                validate_tenant_id(tenant_id)
            except InvalidTenantId:
                return ""
            return url("console_tenant", tenant_id=tenant_id)

        body = _ENVIRONMENT.get_template(template).render(
            url=url,
            tenant_page=tenant_page,
            csrf_token=token,
            sign_out_route=self.sign_out_route,
            notice=context.pop("notice", None),
            problem=context.pop("problem", None),
            signed_in=context.pop("signed_in", True),
            **context,
        )
        response = HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)
        if fresh_nonce:
            response.set_cookie(
                CSRF_COOKIE,
                fresh_nonce,
                path="/",
                httponly=True,
                samesite="strict",
                secure=self.secure_cookies or request.url.scheme == "https",
            )
        return response
