"""Who may use the console, and how its forms stay the operator's own.

- ``console.sessions.ConsoleSessions``: the standalone app's sign-in (sessions in Postgres).
  The operator token is typed into a form once; the browser then holds an HttpOnly,
  SameSite=Strict cookie (Secure behind TLS). The token is never in a cookie, a URL or a page.
- ``CsrfGuard``: every form carries a token that is an HMAC of a random nonce held in a
  cookie of its own (the "signed double submit" pattern): a cross-site page can neither read
  the token nor forge a pair, and a request whose ``Origin`` or ``Sec-Fetch-Site`` says it
  came from another site is refused before the token is even read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from api_hooks.auth import cross_site

CSRF_COOKIE = "tp_console_csrf"
CSRF_FIELD = "csrf_token"


def key_for(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, b"tenant-provisioner console: " + purpose.encode(), "sha256").digest()


def mac_of(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class CsrfGuard:
    """Tokens for the console's forms (see the module docstring)."""

    def __init__(self, secret: bytes | Callable[[], bytes]) -> None:
        """``secret``: the key, or what reads it on first use (the deployment's, from
        Postgres: a key derived from the operator token let the public sign-in form verify
        guessed tokens offline)."""
        self._secret = secret
        self._csrf_key: bytes | None = None

    @property
    def _key(self) -> bytes:
        if self._csrf_key is None:
            secret = self._secret() if callable(self._secret) else self._secret
            self._csrf_key = key_for(secret, "csrf")
        return self._csrf_key

    def _mac_of(self, nonce: str) -> str:
        return mac_of(self._key, nonce)

    def token(self, request: Request) -> tuple[str, str | None]:
        """The form token for this browser, and a new nonce to set as the cookie (or None
        when the browser already holds one)."""
        nonce = request.cookies.get(CSRF_COOKIE)
        fresh = None
        if not nonce or len(nonce) > 64:
            nonce = fresh = secrets.token_urlsafe(24)
        return self._mac_of(nonce), fresh

    def refusal(self, request: Request, form: dict[str, Any]) -> str | None:
        """Why this POST is not the operator's own doing; None when it is."""
        if why := cross_site(request):
            return why
        nonce = request.cookies.get(CSRF_COOKIE)
        supplied = form.get(CSRF_FIELD)
        if not nonce or not isinstance(supplied, str):
            return "refused: the form has no security token; reload the page and try again"
        # As bytes: compare_digest refuses (TypeError) a str that is not ASCII.
        if not hmac.compare_digest(comparable(supplied), comparable(self._mac_of(nonce))):
            return "refused: the form's security token is not valid; reload the page"
        return None


def safe_next(target: str | None, base: str) -> str:
    """Where to go after signing in: a path inside the console, never another site."""
    if target and target.startswith(base) and not target.startswith("//"):
        parsed = urlsplit(target)
        if not parsed.scheme and not parsed.netloc:
            return target
    return base


def comparable(text: str) -> bytes:
    """``text`` to compare in constant time: any str encodes (a lone surrogate as ``?``)."""
    return text.encode("utf-8", errors="replace")
