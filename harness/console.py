"""Signing in to the operator console as a browser does, for tests and benchmarks that speak
HTTP without one: read the sign-in form's token, post it back with the operator token."""

from __future__ import annotations

import re
from typing import Any

_FORM_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_token(page: str) -> str:
    """The CSRF token of the (first) form on ``page``; AssertionError when it has none."""
    match = _FORM_TOKEN.search(page)
    assert match, "the page has no form token"
    return match.group(1)


def sign_in(client: Any, console: str, token: str, next: str | None = None) -> Any:
    """Sign ``client`` (a ``requests.Session`` or FastAPI's TestClient) in at ``console`` (the
    console's base path or URL); the answer to the form's post (a redirect to ``next``, or the
    page saying why not)."""
    form = client.get(f"{console}/sign-in")
    fields = {"token": token, "csrf_token": form_token(form.text), "next": next or console}
    return client.post(f"{console}/sign-in", data=fields)
