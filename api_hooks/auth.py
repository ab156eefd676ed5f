"""Bearer-token credentials of the API: one rule for each of its tokens (operator, locations,
metrics). The token is compared in constant time; a client that keeps failing is throttled
(429, ``api_hooks.throttle``; a right token never is); every other refusal is a 401 naming
the variable that holds the token, never the token. And where a browser carries the
credential itself (the UI's cookie session, the console's), a change asked from another
site's page is refused: :func:`cross_site`.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's annotations, and
# they name this function's own ``scheme``.
import hmac
from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api_hooks.throttle import client_of, throttle_of, throttled


def bearer_auth(
    expected_token: str | None,
    variable: str,
    scheme_name: str,
    description: str = "",
    identity: str | None = None,
) -> Callable[..., str | None]:
    """A dependency accepting ``Authorization: Bearer <expected_token>`` only; with no token
    configured, nobody. ``scheme_name`` names the scheme in the OpenAPI document. It returns
    ``identity``: who the holder of this token is (``api_hooks.actors``)."""
    expected = (expected_token or "").encode()
    # auto_error=False: every refusal is ours (401 with our message), not HTTPBearer's.
    scheme = HTTPBearer(
        scheme_name=scheme_name,
        description=description or f"`Authorization: Bearer <{variable}>`",
        auto_error=False,
    )
    refusal = f"{scheme_name.removesuffix('Token').lower()} token required: "
    refusal += f"Authorization: Bearer <{variable}>"

    def require_token(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(scheme)],
    ) -> str | None:
        supplied = credentials.credentials.encode() if credentials is not None else b""
        if expected and hmac.compare_digest(supplied, expected):
            return identity  # never throttled: its address may be everyone's (a proxy's)
        if (wait := throttle_of(request, variable).refuse(client_of(request))) is not None:
            raise throttled(wait)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail=refusal, headers={"WWW-Authenticate": "Bearer"}
        )

    return require_token


def cross_site(request: Request) -> str | None:
    """Why this request came from another origin's page, by what the browser says of it
    (``Sec-Fetch-Site``, ``Origin``); None when it did not, or no browser sent it."""
    fetched_from = request.headers.get("sec-fetch-site", "same-origin")
    if fetched_from not in ("same-origin", "none"):
        return f"refused: sent from a page of another origin ({fetched_from})"
    origin = request.headers.get("origin")
    try:
        netloc = urlsplit(origin).netloc if origin else None
    except ValueError:  # "http://[": no page of ours sends it
        return "refused: the Origin header is not a URL"
    if netloc is not None and netloc != request.headers.get("host", ""):
        return "refused: sent from a page of another origin"
    return None


def refuse_cross_site_changes(request: Request) -> None:
    """403 for a change (any method but GET, HEAD, OPTIONS) asked from another origin's page:
    with the UI's cookie session, such a page could act with its visitor's credentials, and a
    POST without a body needs no CORS preflight."""
    if request.method not in ("GET", "HEAD", "OPTIONS") and (why := cross_site(request)):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=why)
