"""How one setting's value is checked, and what it accepts in words (docs/settings.md's
"accepted" column): URLs, secrets read from a variable or a file, retention periods as InfluxDB
3 Core takes them, database name prefixes, hard-delete times, tokens."""

from __future__ import annotations

import enum
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# As InfluxDB 3 Core's configure API takes them (docs/settings.md, "Rules"): one number, one
# unit. Core counts a period in signed 64-bit nanoseconds: past 2^63 ns (292 years) it wraps
# round and hides the data it should keep (999y). The most of each unit under that (a month
# and a year as long as Core may count them: 30.44 and 365.25 days):
RETENTION_PERIOD = re.compile(r"\A([1-9][0-9]{0,6})(h|d|w|mo|y)\Z")
RETENTION_LIMITS = {"h": 2562047, "d": 106751, "w": 15250, "mo": 3506, "y": 292}
RETENTION_PERIOD_RULE = (
    "a positive number followed by h, d, w, mo or y, at most 292 years "
    "(2562047h, 106751d, 15250w, 3506mo or 292y)"
)


def retention_period_ok(text: str) -> bool:
    """Whether ``text`` is a retention period Core takes and keeps data for."""
    match = RETENTION_PERIOD.match(text)
    return match is not None and int(match[1]) <= RETENTION_LIMITS[match[2]]


def _retention(value: str | None) -> str | None:
    if value is not None and not retention_period_ok(value):
        raise ValueError(f"must be {RETENTION_PERIOD_RULE}")
    return value


class SettingsError(ValueError):
    """A configuration variable is missing or invalid; the message names it."""


class Broker(enum.StrEnum):
    """Which kind of server CELERY_BROKER_URL names: the options and checks differ."""

    REDIS = "redis"
    RABBITMQ = "rabbitmq"


# The URL schemes kombu maps to each broker (amqp is the pure-Python py-amqp client).
BROKER_SCHEMES = dict.fromkeys(("redis", "rediss"), Broker.REDIS)
BROKER_SCHEMES |= dict.fromkeys(("amqp", "amqps", "pyamqp"), Broker.RABBITMQ)
BROKER_URL_RULE = "a `redis://`, `rediss://`, `amqp://`, `amqps://` or `pyamqp://` URL"


def show(value: object) -> str:
    """``value`` as the docs and the error messages write it (2.0 as ``2``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


MAX_FILE_BYTES = 4 * 1024 * 1024  # a secret, a nodes or webhooks file: far less


def read_file(variable: str, path: str, error: type[SettingsError] = SettingsError) -> str:
    """The UTF-8 text of the file at ``path``, named by ``variable`` (a setting or a file's
    entry); ``error`` names both, never the content (a secret), when it cannot be used."""
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)  # /dev/zero ends here
    except OSError as exc:
        raise error(f"{variable}: cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise error(f"{variable}: {path} is larger than {MAX_FILE_BYTES // 2**20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # its message would quote the bytes
        raise error(f"{variable}: {path} is not UTF-8 text (saved as UTF-16?)") from None


def read_secret(env: Mapping[str, str], name: str, file_name: str) -> str | None:
    """``env[name]``, or the stripped text of the file ``env[file_name]``; never both."""
    value, path = env.get(name, "").strip(), env.get(file_name, "").strip()
    if value and path:
        raise SettingsError(f"set either {name} or {file_name}, not both")
    if path:
        value = read_file(file_name, path).strip()
        if not value:
            raise SettingsError(f"{file_name}: {path} is empty")
    return value or None


# The checks of one value: their errors follow the variable's name (never the value: a password).
def broker_url(url: str) -> str:
    """A Redis or RabbitMQ URL, by its scheme."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("is not a valid URL") from None
    scheme = parts.scheme if "://" in url else ""  # "redis:6379" is a host and port
    if scheme.lower() not in BROKER_SCHEMES:
        got = f"scheme {scheme!r}" if scheme else "no scheme"
        raise ValueError(f"must be {BROKER_URL_RULE.replace('`', '')} (got {got})")
    return url


def psycopg_url(url: str) -> str:
    """A PostgreSQL URL for psycopg 3 (``postgresql://`` is rewritten)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ValueError("is not a valid SQLAlchemy URL") from None
    if parsed.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValueError(
            "must be a PostgreSQL URL for psycopg 3 (postgresql+psycopg://...), "
            f"got driver {parsed.drivername!r}"
        )
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


# The types of the values in words (the last item): docs/settings.md's "accepted" column.
PostgresUrl = Annotated[str, AfterValidator(psycopg_url), "a PostgreSQL URL"]
BrokerUrl = Annotated[str, AfterValidator(broker_url), BROKER_URL_RULE]
NoSlash = AfterValidator(lambda url: url and url.rstrip("/"))  # None stays None
HttpUrl = Annotated[  # the API's paths are appended: a query would swallow them
    str,
    Field(pattern=re.compile(r"\Ahttps?://[^?#]*\Z")),
    NoSlash,
    "an http:// or https:// URL, no ?query or #fragment",
]
LinkUrl = Annotated[
    str | None,
    Field(pattern=re.compile(r"\Ahttps?://[^/@]*(?:/|\Z)")),  # no user:password@ (put in pages)
    NoSlash,
    "an http(s) URL without credentials",
]
Token = Annotated[str | None, Field(min_length=32)]  # 32 random hex characters: 128 bits
NodesFile = Annotated[str | None, "a file holding that JSON"]
DatabasePrefix = Annotated[
    str,
    Field(pattern=re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,9}\Z")),  # + a 54-byte id: 64 bytes
    "1 to 10 letters, digits, `_` or `-`, the first a letter or digit",
]
Retention = Annotated[
    str | None,
    AfterValidator(_retention),
    f"a retention period such as 30d or 12h: {RETENTION_PERIOD_RULE}",
]
HardDelete = Annotated[
    str | None,
    Field(
        pattern=re.compile(
            r"\A(now|never|default|"  # or an RFC 3339 time:
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))\Z"
        )
    ),
    "now, never, default or an RFC 3339 time",
]
EventsSource = Annotated[  # CloudEvents: a non-empty URI-reference
    str,
    Field(
        pattern=re.compile(
            r"\A(?=.{1,255}\Z)(?:[A-Za-z0-9_.~:/?#\[\]@!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+\Z"
        )
    ),
    "a URI reference such as `https://ops.example.com/eu` or `urn:acme:eu`, in RFC 3986's "
    "characters (no spaces; `%` only as in `%2F`), at most 255",
]
Level = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogLevel = Annotated[Level, BeforeValidator(str.upper)]  # any case
