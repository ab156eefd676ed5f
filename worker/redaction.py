"""Removing secrets from text before it is logged or stored."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

REDACTED = "[REDACTED]"

# Whatever follows an auth scheme is a credential, even one we were never told about.
_AUTH_HEADER_VALUE = re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=:-]{6,}")
# A password in a URL: ``scheme://user:PASSWORD@``. A match starts only where a scheme can
# start (not right after a scheme character) and the scheme is bounded: a pattern that could
# start anywhere in a long run of scheme characters scanned it to its end from every position -
# quadratic in the line, and log lines carry request paths anyone can send. Linear now
# (tests/fast/test_backoff_and_redaction.py times 1 MB hostile lines).
_URL_PASSWORD = re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,31}://[^:/@\s]*):[^@\s/]+@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with each known secret, auth header value and URL password replaced."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    text = _AUTH_HEADER_VALUE.sub(rf"\1 {REDACTED}", text)
    return _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)


# Longer than any secret we hold: what a first cut leaves of a secret lies past the second.
_CUT_MARGIN = 4096
# Bytes to decode for ``redact_cut(text, secrets, limit)`` with ``limit`` up to 4096: at four
# bytes a character at most, its cut then lies before the bytes' (which may split a secret).
REDACTION_WINDOW_BYTES = 4 * (4096 + _CUT_MARGIN)


def redact_cut(text: str, secrets: Iterable[str], limit: int) -> str:
    """``text`` redacted, then at most ``limit`` characters. A hostile megabyte costs no more
    than ``limit`` plus a margin longer than any secret: a longer text is cut there first.
    What that cut leaves of a secret, redaction cannot recognise; it ends what redaction
    returns, shorter than the secret, so the longest secret's length is dropped from the end
    before the cut to ``limit`` (redaction may have shortened the text in between: counting
    from the start would bring the fragment back within ``limit``)."""
    secrets = tuple(secrets)
    if len(text) <= limit + _CUT_MARGIN:  # nothing cut before redaction
        return redact(text, secrets)[:limit]
    kept = redact(text[: limit + _CUT_MARGIN], secrets)
    # The fragment, if any, is the verbatim end of ``kept``, shorter than the longest secret.
    fragment = min(max((len(secret) for secret in secrets), default=0), _CUT_MARGIN)
    return kept[: max(0, min(limit, len(kept) - fragment))]


def redact_capped(text: str, secrets: Iterable[str], limit: int) -> str:
    """``text`` redacted and at most ``limit`` characters (``redact_cut``), then ``...`` and
    how many were cut."""
    if len(text) <= limit:
        return redact(text, secrets)
    return f"{redact_cut(text, secrets, limit)}... [{len(text) - limit} characters cut]"


_SECRET_QUERY_KEYS = re.compile(r"(?i)(token|password|passwd|secret|key|auth)")
_SHORTEST_SECRET = 8
# A path segment that reads as a credential: 16+ URL characters, letters with digits or with
# both cases. Receivers put their token there (Slack's /services/T…/B…/TOKEN, Discord's
# /webhooks/ID/TOKEN, a random hook path); lowercase words (/provisioning-events) and plain
# numbers (an id) are kept.
# (Lookaheads over negated classes: each scans once, linear on a hostile segment.)
_OPAQUE_SEGMENT = re.compile(
    r"\A(?=[^A-Za-z]*[A-Za-z])(?:(?=[^0-9]*[0-9])|(?=[^a-z]*[a-z])(?=[^A-Z]*[A-Z]))"
    r"[A-Za-z0-9._~%+=-]{16,}\Z"
)


# A query value that reads as a credential whatever its key (Azure's sig=, Azure Functions'
# code=): 16+ characters of base64 or URL text (decoded: + is a space) with upper- and
# lower-case letters and digits. A name (provisioning-alerts-2024) or a UUID is kept.
_OPAQUE_VALUE = re.compile(
    r"\A(?=[^A-Z]*[A-Z])(?=[^a-z]*[a-z])(?=[^0-9]*[0-9])[A-Za-z0-9._~%+=/ -]{16,}\Z"
)


def _secret_query(key: str, value: str) -> bool:
    """A query value to hide: its key names a secret, or it reads as one whatever its key."""
    return bool(_SECRET_QUERY_KEYS.search(key) or _OPAQUE_VALUE.match(value))


def redact_url(url: str) -> str:
    """``url`` fit to print: the userinfo password, secret-looking query values and
    credential-looking path segments replaced."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    path = "/".join(REDACTED if _OPAQUE_SEGMENT.match(s) else s for s in parts.path.split("/"))
    query = "&".join(
        f"{key}={REDACTED}" if _secret_query(key, value) else f"{key}={value}"
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def url_secrets(url: str) -> tuple[str, ...]:
    """What :func:`redact_url` hides of ``url``, as :func:`redact`'s ``secrets``: for text that
    may quote the URL (a client's error)."""
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return ()
    found = [parts.password or ""]
    found += [s for s in parts.path.split("/") if _OPAQUE_SEGMENT.match(s)]
    found += [value for key, value in query if _secret_query(key, value)]
    # As written in the URL too (percent-encoded), the way an error may quote it.
    raw = (pair.partition("=") for pair in parts.query.split("&"))
    found += [value for key, _, value in raw if _secret_query(key, value)]
    # A short value (sort_key=id) is no secret worth hiding: replaced wherever it appears, it
    # would garble every error of the endpoint.
    return tuple(dict.fromkeys(s for s in found if len(s) >= _SHORTEST_SECRET))
