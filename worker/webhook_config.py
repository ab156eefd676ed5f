"""The webhook endpoints, from the JSON file ``WEBHOOKS_FILE`` (docs/webhooks.md).

``[{"name": "ui", "url": "https://ui.example/hooks", "secret": "whsec_..." | "secret_file":
"/run/secrets/ui_webhook", "types": ["tenant.provisioned", ...]}]`` - ``types`` optional (every
event when absent). A secret is a Standard Webhooks symmetric key: ``whsec_`` then the base64
of 24 to 64 random bytes; several, separated by spaces, while a key is rotated (every one
signs). Checked strictly, each error naming the file and the entry; a secret is never in an
error, a log line, a ``repr`` or a task argument (the dispatcher reads the file itself).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import urllib3.util

from worker.event_reads import TYPE_PREFIX
from worker.events import EVENT_TYPES
from worker.redaction import url_secrets
from worker.settings import SettingsError
from worker.settings_rules import read_file

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix the spec gives secrets, not one
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64  # the spec: at least 192 bits
_NAME = re.compile(r"\A[a-z0-9][a-z0-9_.-]{0,62}\Z")
_KEYS = {"name", "url", "secret", "secret_file", "types"}


class WebhookConfigError(SettingsError):
    """The webhooks file is missing, unreadable or invalid; the message names the entry."""


@dataclass(frozen=True)
class Endpoint:
    """One configured receiver: where to POST, what to send it, and the keys that sign."""

    name: str
    url: str
    keys: tuple[bytes, ...] = field(repr=False)
    types: frozenset[str] | None = None  # None: every event type
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)  # for redaction

    def wants(self, event_type: str) -> bool:
        """True when events of ``event_type`` (``tenant.provisioned``, with or without the
        CloudEvents prefix) go to this endpoint."""
        return self.types is None or event_type.removeprefix(TYPE_PREFIX) in self.types


def parse_endpoints(text: str, source: str) -> tuple[Endpoint, ...]:
    """Endpoints from the file's JSON; ``source`` names the file in every error. An empty
    list is valid: no endpoint."""
    try:
        entries = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested a thousand deep
        raise WebhookConfigError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(entries, list):
        raise WebhookConfigError(f"{source}: must be a JSON list of endpoints")
    endpoints = [_endpoint(entry, f"{source}[{index}]") for index, entry in enumerate(entries)]
    names = [endpoint.name for endpoint in endpoints]
    if duplicated := sorted({name for name in names if names.count(name) > 1}):
        raise WebhookConfigError(f"{source}: endpoint names must be unique ({duplicated[0]})")
    return tuple(endpoints)


def _endpoint(entry: Any, where: str) -> Endpoint:
    if not isinstance(entry, dict):
        raise WebhookConfigError(f"{where}: must be an object with name, url and secret")
    if unknown := set(entry) - _KEYS:
        raise WebhookConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise WebhookConfigError(
            f"{where}.name must be 1 to 63 lowercase letters, digits, '_', '.' or '-', the "
            "first a letter or digit"
        )
    where = f"{where} ({name})"
    url = _url(entry.get("url"), where)
    secrets = _secrets(entry, where)
    keys = tuple(_key(s, where) for s in secrets)
    # The URL's own credentials (a token in its path or query) are hidden like the keys.
    return Endpoint(name, url, keys, _types(entry, where), (*secrets, *url_secrets(url)))


def _url(url: object, where: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise WebhookConfigError(f"{where}.url must be an http:// or https:// URL")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise WebhookConfigError(f"{where}.url is not a valid URL") from None
    if "@" in parts.netloc:
        # Never repeated: user:password@ is a credential, and the secret signs instead.
        raise WebhookConfigError(f"{where}.url must not carry credentials (user:password@)")
    if not parts.hostname or parts.fragment or any(c.isspace() for c in url):
        raise WebhookConfigError(f"{where}.url must name a host, with no space or #fragment")
    try:  # what sending does with it: "hooks..example.com" is refused only then
        urllib3.util.parse_url(url)
        parts.hostname.encode("idna")
    except ValueError:  # LocationParseError, UnicodeError: an empty or over-long label
        raise WebhookConfigError(f"{where}.url: {parts.hostname!r} is not a host name") from None
    return url


def _secrets(entry: dict[str, Any], where: str) -> tuple[str, ...]:
    given, path = entry.get("secret"), entry.get("secret_file")
    if given is not None and path is not None:
        raise WebhookConfigError(f"{where}: set either secret or secret_file, not both")
    if path is not None:
        if not isinstance(path, str) or not path:
            raise WebhookConfigError(f"{where}.secret_file must be a path")
        given = read_file(f"{where}.secret_file", path, WebhookConfigError)
    if not isinstance(given, str) or not given.strip():
        raise WebhookConfigError(f"{where}: a secret (whsec_...) or a secret_file is required")
    return tuple(given.split())


def _key(secret: str, where: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; the error never shows the secret."""
    rule = (
        f"must be {SECRET_PREFIX} followed by the base64 of {MIN_KEY_BYTES} to {MAX_KEY_BYTES} "
        'random bytes (e.g. `printf "whsec_%s" "$(openssl rand -base64 32)"`)'
    )
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookConfigError(f"{where}: the secret {rule}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookConfigError(f"{where}: the secret is not valid base64; it {rule}") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise WebhookConfigError(f"{where}: the secret is {len(key)} bytes; it {rule}")
    return key


def _types(entry: dict[str, Any], where: str) -> frozenset[str] | None:
    types = entry.get("types")
    if types is None:
        return None
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise WebhookConfigError(f"{where}.types must be a non-empty list of event types")
    names = {t.removeprefix(TYPE_PREFIX) for t in types}
    if unknown := sorted(names - set(EVENT_TYPES)):
        raise WebhookConfigError(
            f"{where}.types: unknown event type {unknown[0]!r} (docs/events.md lists them)"
        )
    return frozenset(names)


def read_endpoints_file(path: str) -> tuple[Endpoint, ...]:
    """The endpoints of the file at ``path`` (WEBHOOKS_FILE)."""
    text = read_file("WEBHOOKS_FILE", path, WebhookConfigError)
    return parse_endpoints(text, f"WEBHOOKS_FILE ({path})")


def configured_endpoints(path: str | None) -> tuple[Endpoint, ...]:
    """The endpoints of WEBHOOKS_FILE (None: none). Read at every dispatch (a small file,
    every few seconds): an edit, or a rotated secret file, needs no restart."""
    return read_endpoints_file(path) if path else ()
