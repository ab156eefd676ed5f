"""Who may use the console, and how its forms stay the operator's own.

- ``ConsoleSessions``: the standalone app's sign-in. The operator token is typed into a form
  once; the browser then holds a signed, expiring, HttpOnly, SameSite=Strict cookie (Secure
  behind HTTPS). The signing key is derived from the deployment's secret and the token, so
  changing the token signs every session out. The token itself is never in a cookie, a URL
  or a page.
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
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import HTTPException, Request, status

SESSION_COOKIE = "tp_console_session"
CSRF_COOKIE = "tp_console_csrf"
CSRF_FIELD = "csrf_token"


def _key(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, b"tenant-provisioner console: " + purpose.encode(), "sha256").digest()


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class ConsoleSessions:
    """Sign-in sessions of the standalone app (see the module docstring)."""

    def __init__(
        self,
        operator_token: str,
        minutes: int,
        clock: Callable[[], float] = time.time,
        secret: Callable[[], bytes] = lambda: b"",
    ) -> None:
        self._token = operator_token.encode()
        self._secret = secret
        self._signing_key: bytes | None = None
        self.max_age = minutes * 60
        self._clock = clock

    @property
    def _key(self) -> bytes:
        # The deployment's secret and the token: a captured cookie tells nothing about the
        # token, and a new token still signs every session out. Read on first use.
        if self._signing_key is None:
            self._signing_key = _key(self._secret() + self._token, "session")
        return self._signing_key

    def token_matches(self, supplied: str) -> bool:
        """The operator token, compared in constant time."""
        return hmac.compare_digest(supplied.encode(), self._token)

    def issue(self) -> str:
        """A new session cookie value: expiry and a random id, signed."""
        payload = f"{int(self._clock()) + self.max_age}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{_mac(self._key, payload)}"

    def valid(self, cookie: str | None) -> bool:
        """The cookie was issued here, is untouched and has not expired."""
        if not cookie or cookie.count(".") != 2:
            return False
        payload, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac, _mac(self._key, payload)):
            return False
        expires = payload.split(".", 1)[0]
        return expires.isdigit() and int(expires) > self._clock()

    def dependency(self, sign_in_route: str) -> Callable[[Request], None]:
        """A ``require_operator`` for the console: without a valid session, a redirect to
        the sign-in page that comes back to the page asked for."""

        def require_console_session(request: Request) -> None:
            if self.valid(request.cookies.get(SESSION_COOKIE)):
                return
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            sign_in = request.url_for(sign_in_route).path
            raise HTTPException(
                status.HTTP_303_SEE_OTHER,
                detail="sign in first",
                headers={"Location": f"{sign_in}?next={quote(target, safe='/')}"},
            )

        return require_console_session


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
            self._csrf_key = _key(secret, "csrf")
        return self._csrf_key

    def _mac_of(self, nonce: str) -> str:
        return _mac(self._key, nonce)

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
        fetched_from = request.headers.get("sec-fetch-site", "same-origin")
        if fetched_from not in ("same-origin", "none"):
            return f"refused: the form was sent from another origin ({fetched_from})"
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
            return "refused: the form was sent from another origin"
        nonce = request.cookies.get(CSRF_COOKIE)
        supplied = form.get(CSRF_FIELD)
        if not nonce or not isinstance(supplied, str):
            return "refused: the form has no security token; reload the page and try again"
        if not hmac.compare_digest(supplied, self._mac_of(nonce)):
            return "refused: the form's security token is not valid; reload the page"
        return None


def safe_next(target: str | None, base: str) -> str:
    """Where to go after signing in: a path inside the console, never another site."""
    if target and target.startswith(base) and not target.startswith("//"):
        parsed = urlsplit(target)
        if not parsed.scheme and not parsed.netloc:
            return target
    return base
