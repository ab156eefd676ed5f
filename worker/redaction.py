"""Removing secrets from text before it is logged or stored."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

# Whatever follows an auth scheme is a credential, even one we were never told about.
_AUTH_HEADER_VALUE = re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=:-]{6,}")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s/]+@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with each known secret, auth header value and URL password replaced."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    text = _AUTH_HEADER_VALUE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
