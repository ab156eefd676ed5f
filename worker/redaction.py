"""Removing secrets from text before it is logged or stored."""

from __future__ import annotations

import re
import urllib.parse
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


_SECRET_QUERY_KEYS = re.compile(r"(?i)(token|password|passwd|secret|key|auth)")


def redact_url(url: str) -> str:
    """``url`` fit to print: the userinfo password and secret-looking query values replaced."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = "&".join(
        f"{key}={REDACTED}" if _SECRET_QUERY_KEYS.search(key) else f"{key}={value}"
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
