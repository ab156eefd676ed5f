"""Core's check of the ``Authorization`` header against the admin token.

Core has admin tokens only, so a request is either let through or refused (401 for a missing or
wrong token, 400 for a header not shaped ``<scheme> <credentials>``); never 403.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from influxdb3_standin.messages import (
    MSG_MALFORMED_AUTH,
    MSG_UNAUTHENTICATED,
    Response,
    json_error,
)


def refusal(token: str | None, header: str | None) -> Response | None:
    """None if the request may proceed (or auth is off: no token), else the 401/400 answer."""
    if token is None:
        return None
    if header is None:
        return json_error(401, MSG_UNAUTHENTICATED, compact=False)
    # Core splits on single spaces and wants exactly "<scheme> <credentials>".
    parts = header.split(" ")
    if len(parts) != 2 or parts[0] not in ("Bearer", "Token", "Basic"):
        return json_error(400, MSG_MALFORMED_AUTH, compact=False)
    scheme, credentials = parts
    if scheme == "Basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return json_error(400, MSG_MALFORMED_AUTH, compact=False)
        username, colon, credentials = decoded.rpartition(":")
        if not colon or ":" in username:
            return json_error(400, MSG_MALFORMED_AUTH, compact=False)
    if not hmac.compare_digest(credentials.encode(), token.encode()):
        return json_error(401, MSG_UNAUTHENTICATED, compact=False)
    return None
