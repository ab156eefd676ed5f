"""How one setting's value is checked: retention periods as InfluxDB 3 Core takes them, URLs,
database name prefixes, hard-delete times, and secrets read from a variable or a file."""

from __future__ import annotations

import enum
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class SettingsError(ValueError):
    """A configuration variable is missing or invalid; the message names it."""


# Retention periods as InfluxDB 3 Core's configure API takes them: one number and one unit of
# h, d, w, mo (30 days) or y (365 days) - no minutes, no compound values (../shared docs).
# Zero is refused on purpose: Core accepts "0d" and then hides every point at query time.
RETENTION_PERIOD = re.compile(r"\A[1-9][0-9]{0,5}(?:h|d|w|mo|y)\Z")
RETENTION_PERIOD_RULE = "a positive number (at most 6 digits) followed by h, d, w, mo or y"
HARD_DELETE = re.compile(
    r"\A(now|never|default|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))\Z"
)
# InfluxDB 3 names start with a letter or digit; 10 + a 54-character tenant id = 64 bytes, the
# server's limit for a database name.
DATABASE_PREFIX = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,9}\Z")


def show(value: object) -> str:
    """``value`` as the README and the error messages write it (2.0 as ``2``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def http_url(url: str) -> str:
    """``url`` without a trailing slash; http(s) only."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return url.rstrip("/")


def link_url(url: str) -> str:
    """FLOWER_URL: http(s), and no password in it - the console puts it in pages."""
    if "@" in http_url(url).split("://", 1)[1].split("/", 1)[0]:
        raise SettingsError("FLOWER_URL must not carry credentials (user:password@)")
    return http_url(url)


class Broker(enum.StrEnum):
    """Which kind of server CELERY_BROKER_URL names: the options and checks differ."""

    REDIS = "redis"
    RABBITMQ = "rabbitmq"


# The URL schemes kombu maps to each broker (amqp is the pure-Python py-amqp client).
BROKER_SCHEMES = dict.fromkeys(("redis", "rediss"), Broker.REDIS)
BROKER_SCHEMES |= dict.fromkeys(("amqp", "amqps", "pyamqp"), Broker.RABBITMQ)
BROKER_URL_RULE = "a `redis://`, `rediss://`, `amqp://`, `amqps://` or `pyamqp://` URL"


def broker_url(url: str) -> str:
    """CELERY_BROKER_URL: Redis or RabbitMQ; the error never repeats the URL (its password)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise SettingsError("CELERY_BROKER_URL is not a valid URL") from None
    scheme = parts.scheme if "://" in url else ""  # "redis:6379" is a host and port
    if scheme.lower() not in BROKER_SCHEMES:
        got = f"scheme {scheme!r}" if scheme else "no scheme"
        rule = BROKER_URL_RULE.replace("`", "")
        raise SettingsError(f"CELERY_BROKER_URL must be {rule} (got {got})")
    return url


def psycopg_url(url: str) -> str:
    """DATABASE_URL for psycopg 3 (``postgresql://`` is rewritten); never repeats the URL."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise SettingsError("DATABASE_URL is not a valid SQLAlchemy URL") from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise SettingsError(
        "DATABASE_URL must be a PostgreSQL URL for psycopg 3 (postgresql+psycopg://...), "
        f"got driver {parsed.drivername!r}"
    )


def read_secret(env: Mapping[str, str], name: str, file_name: str) -> str | None:
    """``env[name]``, or the stripped text of the file ``env[file_name]``; never both."""
    value, path = env.get(name, "").strip(), env.get(file_name, "").strip()
    if value and path:
        raise SettingsError(f"set either {name} or {file_name}, not both")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{file_name}: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise SettingsError(f"{file_name}: {path} is empty")
    return value or None
