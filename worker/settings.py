"""Typed settings, read from the environment once, failing fast with the variable's name.

Every process (worker, beat, operator API, CLI) calls :func:`get_settings`; nothing else in the
code base reads ``os.environ`` for configuration. The README lists every variable.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

_T = TypeVar("_T", int, float)

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tenant_provisioner"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_INFLUXDB_URL = "http://127.0.0.1:8181"

# InfluxDB 3 names: first character a letter or digit, then letters, digits, '_' or '-'.
_INFLUX_NAME_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


_NODE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
# Retention periods as InfluxDB 3 Core's configure API takes them: one number and one unit of
# h, d, w, mo (30 days) or y (365 days) - no minutes, no compound values (../shared docs).
# Zero is refused on purpose: Core accepts "0d" and then hides every point at query time.
RETENTION_PERIOD = re.compile(r"\A[1-9][0-9]{0,5}(?:h|d|w|mo|y)\Z")
RETENTION_PERIOD_RULE = "a positive number (at most 6 digits) followed by h, d, w, mo or y"
_HARD_DELETE = re.compile(
    r"^(now|never|default|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))$"
)


class SettingsError(ValueError):
    """A configuration variable is missing or invalid; the message names it."""


@dataclass(frozen=True)
class NodeConfig:
    """One InfluxDB server of the pool."""

    name: str
    url: str
    token: str | None = field(default=None, repr=False)
    database_limit: int = 5


def parse_nodes(text: str, source: str) -> tuple[NodeConfig, ...]:
    """Nodes from JSON: ``[{"name", "url", "token"? | "token_file"?, "database_limit"?}]``.

    ``source`` names the variable or file in every error message.
    """
    try:
        entries = json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(entries, list) or not entries:
        raise SettingsError(f"{source}: must be a non-empty JSON list of nodes")
    nodes: list[NodeConfig] = []
    for index, entry in enumerate(entries):
        where = f"{source}[{index}]"
        if not isinstance(entry, dict):
            raise SettingsError(f"{where}: must be an object with name and url")
        unknown = set(entry) - {"name", "url", "token", "token_file", "database_limit"}
        if unknown:
            raise SettingsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name, url, limit = entry.get("name"), entry.get("url"), entry.get("database_limit", 5)
        if not isinstance(name, str) or not _NODE_NAME.match(name):
            raise SettingsError(f"{where}: name must match {_NODE_NAME.pattern}")
        if not isinstance(url, str):
            raise SettingsError(f"{where}: url must be a string")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise SettingsError(f"{where}: database_limit must be a positive integer")
        token_env = {
            k: str(v) for k, v in (("T", entry.get("token")), ("F", entry.get("token_file"))) if v
        }
        token = _Reader(token_env).secret("T", "F") if token_env else None
        nodes.append(NodeConfig(name, _http_url(url, f"{where}.url"), token, limit))
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise SettingsError(f"{source}: node names must be unique")
    return tuple(nodes)


@dataclass(frozen=True)
class Settings:
    """Configuration of every tenant-provisioner process."""

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    influxdb_url: str = DEFAULT_INFLUXDB_URL
    influxdb_token: str | None = field(default=None, repr=False)
    influxdb_database_prefix: str = "telemetry_"
    influxdb_telemetry_table: str = "telemetry"
    influxdb_database_limit: int = 5
    influxdb_nodes: tuple[NodeConfig, ...] = ()
    influxdb_nodes_file: str | None = None
    influxdb_retention_period: str | None = None
    influxdb_hard_delete_at: str | None = None
    influxdb_connect_timeout: float = 3.0
    influxdb_read_timeout: float = 10.0
    live_check_timeout: float = 2.0
    backoff_base_seconds: float = 2.0
    backoff_cap_seconds: float = 300.0
    max_attempts: int = 10
    task_soft_time_limit: int = 60
    task_time_limit: int = 90
    broker_visibility_timeout: int = 3600
    broker_publish_timeout: float = 2.0
    reconcile_interval_seconds: float = 60.0
    reconcile_batch_size: int = 500
    reconcile_requeue_after_seconds: float = 60.0
    operator_token: str | None = field(default=None, repr=False)
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raise SettingsError."""
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        interval = reader.number("RECONCILE_INTERVAL_SECONDS", float, 60.0, minimum=1.0)
        nodes_json = env.get("INFLUXDB_NODES", "").strip()
        nodes_file = env.get("INFLUXDB_NODES_FILE", "").strip() or None
        if nodes_json and nodes_file:
            raise SettingsError("set either INFLUXDB_NODES or INFLUXDB_NODES_FILE, not both")
        nodes = parse_nodes(nodes_json, "INFLUXDB_NODES") if nodes_json else ()
        if nodes_file:
            nodes = read_nodes_file(nodes_file)
        settings = cls(
            database_url=_psycopg_url(reader.text("DATABASE_URL", DEFAULT_DATABASE_URL)),
            broker_url=reader.text("CELERY_BROKER_URL", DEFAULT_BROKER_URL),
            influxdb_url=_http_url(reader.text("INFLUXDB_URL", DEFAULT_INFLUXDB_URL)),
            influxdb_token=reader.secret("INFLUXDB_TOKEN", "INFLUXDB_TOKEN_FILE"),
            influxdb_database_prefix=reader.text("INFLUXDB_DATABASE_PREFIX", "telemetry_"),
            influxdb_telemetry_table=reader.text("INFLUXDB_TELEMETRY_TABLE", "telemetry"),
            influxdb_database_limit=reader.number("INFLUXDB_DATABASE_LIMIT", int, 5, minimum=1),
            influxdb_nodes=nodes,
            influxdb_nodes_file=nodes_file,
            influxdb_retention_period=reader.pattern(
                "INFLUXDB_RETENTION_PERIOD",
                RETENTION_PERIOD,
                f"a retention period such as 30d or 12h: {RETENTION_PERIOD_RULE}",
            ),
            influxdb_hard_delete_at=reader.pattern(
                "INFLUXDB_HARD_DELETE_AT", _HARD_DELETE, "now, never, default or an RFC 3339 time"
            ),
            influxdb_connect_timeout=reader.number(
                "INFLUXDB_CONNECT_TIMEOUT", float, 3.0, minimum=0.1
            ),
            influxdb_read_timeout=reader.number("INFLUXDB_READ_TIMEOUT", float, 10.0, minimum=0.1),
            live_check_timeout=reader.number("LIVE_CHECK_TIMEOUT", float, 2.0, minimum=0.1),
            backoff_base_seconds=reader.number(
                "PROVISION_BACKOFF_BASE_SECONDS", float, 2.0, minimum=0.01
            ),
            backoff_cap_seconds=reader.number(
                "PROVISION_BACKOFF_CAP_SECONDS", float, 300.0, minimum=0.01
            ),
            max_attempts=reader.number("PROVISION_MAX_ATTEMPTS", int, 10, minimum=1),
            task_soft_time_limit=reader.number("PROVISION_SOFT_TIME_LIMIT", int, 60, minimum=1),
            task_time_limit=reader.number("PROVISION_TIME_LIMIT", int, 90, minimum=2),
            broker_visibility_timeout=reader.number(
                "CELERY_VISIBILITY_TIMEOUT", int, 3600, minimum=10
            ),
            broker_publish_timeout=reader.number("CELERY_PUBLISH_TIMEOUT", float, 2.0, minimum=0.1),
            reconcile_interval_seconds=interval,
            reconcile_batch_size=reader.number("RECONCILE_BATCH_SIZE", int, 500, minimum=1),
            reconcile_requeue_after_seconds=reader.number(
                "RECONCILE_REQUEUE_AFTER_SECONDS", float, interval, minimum=0.0
            ),
            operator_token=reader.secret("OPERATOR_TOKEN", "OPERATOR_TOKEN_FILE"),
            log_level=reader.choice(
                "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check relations between settings; raise SettingsError naming the variables."""
        if not _INFLUX_NAME_PREFIX.match(self.influxdb_database_prefix):
            raise SettingsError(
                "INFLUXDB_DATABASE_PREFIX must start with a letter or digit and contain only "
                f"letters, digits, '_' or '-' (got {self.influxdb_database_prefix!r})"
            )
        if len(self.influxdb_database_prefix) > 10:
            raise SettingsError(
                "INFLUXDB_DATABASE_PREFIX is at most 10 characters, so that prefix + a "
                "54-character tenant id stays within InfluxDB's 64-byte name limit"
            )
        if self.task_soft_time_limit >= self.task_time_limit:
            raise SettingsError("PROVISION_SOFT_TIME_LIMIT must be below PROVISION_TIME_LIMIT")
        # Two InfluxDB calls must fit inside the soft limit, or healthy-but-slow runs get killed.
        worst_call = self.influxdb_connect_timeout + self.influxdb_read_timeout
        if 2 * worst_call >= self.task_soft_time_limit:
            raise SettingsError(
                "PROVISION_SOFT_TIME_LIMIT must exceed twice INFLUXDB_CONNECT_TIMEOUT + "
                "INFLUXDB_READ_TIMEOUT (one create and one write)"
            )
        if self.backoff_base_seconds > self.backoff_cap_seconds:
            raise SettingsError(
                "PROVISION_BACKOFF_BASE_SECONDS must not exceed PROVISION_BACKOFF_CAP_SECONDS"
            )
        # A retry waits in the worker as an unacknowledged ETA message; Redis re-delivers it after
        # the visibility timeout, so the longest wait plus a run must stay well inside it.
        if 2 * (self.backoff_cap_seconds + self.task_time_limit) > self.broker_visibility_timeout:
            raise SettingsError(
                "CELERY_VISIBILITY_TIMEOUT must be at least twice PROVISION_BACKOFF_CAP_SECONDS + "
                "PROVISION_TIME_LIMIT, or Redis re-delivers waiting retries"
            )

    def default_nodes(self) -> tuple[NodeConfig, ...]:
        """The pool at start-up: INFLUXDB_NODES[_FILE], else INFLUXDB_URL as a pool of one."""
        if self.influxdb_nodes:
            return self.influxdb_nodes
        return (
            NodeConfig(
                "default", self.influxdb_url, self.influxdb_token, self.influxdb_database_limit
            ),
        )

    def database_name(self, tenant_id: str) -> str:
        """The InfluxDB database that belongs to ``tenant_id``."""
        return f"{self.influxdb_database_prefix}{tenant_id}"

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for redaction of logs and stored errors."""
        values = [self.influxdb_token, self.operator_token]
        values += [node.token for node in self.influxdb_nodes]
        for url in (self.database_url, self.broker_url):
            try:
                values.append(make_url(url).password)
            except ArgumentError:
                continue
        return tuple(v for v in values if v)


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        value = self._env.get(name, "").strip()
        return value or default

    def pattern(self, name: str, regex: re.Pattern[str], what: str) -> str | None:
        value = self._env.get(name, "").strip()
        if value and not regex.match(value):
            raise SettingsError(f"{name} must be {what} (got {value!r})")
        return value or None

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).upper()
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)} (got {value!r})")
        return value

    def number(self, name: str, kind: Callable[[str], _T], default: _T, *, minimum: _T) -> _T:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number (got {raw!r})") from None
        if value < minimum:
            raise SettingsError(f"{name} must be at least {minimum} (got {raw!r})")
        return value

    def secret(self, name: str, file_name: str) -> str | None:
        value = self._env.get(name, "").strip()
        path = self._env.get(file_name, "").strip()
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


def _psycopg_url(url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SettingsError("DATABASE_URL is not a valid SQLAlchemy URL") from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise SettingsError(
        "DATABASE_URL must be a PostgreSQL URL for psycopg 3 (postgresql+psycopg://...), "
        f"got driver {parsed.drivername!r}"
    )


def _http_url(url: str, name: str = "INFLUXDB_URL") -> str:
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must start with http:// or https:// (got {url!r})")
    return url.rstrip("/")


def read_nodes_file(path: str) -> tuple[NodeConfig, ...]:
    """Nodes from the JSON file at ``path`` (INFLUXDB_NODES_FILE)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"INFLUXDB_NODES_FILE: cannot read {path}: {exc.strerror}") from None
    return parse_nodes(text, f"INFLUXDB_NODES_FILE ({path})")


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()
