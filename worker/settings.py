"""Typed settings, read from the environment once, failing fast with the variable's name.

Every process (worker, beat, operator API, CLI) calls :func:`get_settings`; nothing else in the
code base reads ``os.environ`` for configuration. Each variable is declared once, in
``worker.settings_table`` (name, field, type, default, bounds, help); the README's table is
printed from there. The node pool's JSON and the checks across settings live here.
"""

from __future__ import annotations

import functools
import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from worker.settings_rules import Broker, broker_of
from worker.settings_table import (
    RETENTION_PERIOD,
    RETENTION_PERIOD_RULE,
    SettingsError,
    http_url,
    read_declared,
    read_secret,
)

# SettingsError, Broker and the retention rule are re-exported: callers import them from here.
__all__ = [
    "RETENTION_PERIOD",
    "RETENTION_PERIOD_RULE",
    "Broker",
    "NodeConfig",
    "Settings",
    "SettingsError",
    "get_settings",
    "parse_nodes",
    "read_nodes_file",
]

MIN_TOKEN_LENGTH = 32  # OPERATOR_TOKEN, LOCATIONS_TOKEN: 32 random hex characters are 128 bits
_NODE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


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
        token_key, file_key = f"{where}.token", f"{where}.token_file"
        given = {token_key: entry.get("token"), file_key: entry.get("token_file")}
        token = read_secret({k: str(v) for k, v in given.items() if v}, token_key, file_key)
        nodes.append(NodeConfig(name, http_url(url, f"{where}.url"), token, limit))
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise SettingsError(f"{source}: node names must be unique")
    return tuple(nodes)


@dataclass(frozen=True)
class Settings:
    """Configuration of every tenant-provisioner process; build it with :meth:`from_env`.

    The fields have no defaults here: each default is declared once, in ``worker.settings_table``
    (``Settings.from_env({})`` gives them all).
    """

    database_url: str
    broker_url: str
    influxdb_url: str
    influxdb_token: str | None = field(repr=False)
    influxdb_database_prefix: str
    influxdb_telemetry_table: str
    influxdb_database_limit: int
    influxdb_nodes: tuple[NodeConfig, ...]
    influxdb_nodes_file: str | None
    influxdb_retention_period: str | None
    influxdb_hard_delete_at: str | None
    influxdb_connect_timeout: float
    influxdb_read_timeout: float
    live_check_timeout: float
    backoff_base_seconds: float
    backoff_cap_seconds: float
    max_attempts: int
    task_soft_time_limit: int
    task_time_limit: int
    broker_visibility_timeout: int
    broker_consumer_timeout: int
    broker_publish_timeout: float
    reconcile_interval_seconds: float
    reconcile_batch_size: int
    reconcile_requeue_after_seconds: float
    attempts_retention_days: int
    operator_token: str | None = field(repr=False)
    locations_token: str | None = field(repr=False)
    locations_refresh_seconds: float
    locations_max_staleness_seconds: float
    console_session_minutes: int
    console_session_idle_minutes: int
    metrics_token: str | None = field(repr=False)
    api_behind_tls: str
    flower_url: str | None
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raise SettingsError."""
        env = os.environ if environ is None else environ
        nodes, nodes_file = _node_pool(env)
        settings = cls(**read_declared(env), influxdb_nodes=nodes, influxdb_nodes_file=nodes_file)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check relations between settings; raise SettingsError naming the variables."""
        if self.task_soft_time_limit >= self.task_time_limit:
            raise SettingsError("PROVISION_SOFT_TIME_LIMIT must be below PROVISION_TIME_LIMIT")
        # Two InfluxDB calls must fit inside the soft limit, or healthy-but-slow runs get killed.
        worst_call = self.influxdb_connect_timeout + self.influxdb_read_timeout
        if 2 * worst_call >= self.task_soft_time_limit:
            raise SettingsError(
                "PROVISION_SOFT_TIME_LIMIT must exceed twice INFLUXDB_CONNECT_TIMEOUT + "
                "INFLUXDB_READ_TIMEOUT (one create and one write)"
            )
        for variable, token in (
            ("OPERATOR_TOKEN", self.operator_token),
            ("LOCATIONS_TOKEN", self.locations_token),
            ("METRICS_TOKEN", self.metrics_token),
        ):
            if token is not None and len(token) < MIN_TOKEN_LENGTH:
                raise SettingsError(
                    f"{variable} must be at least {MIN_TOKEN_LENGTH} characters (it is "
                    f"{len(token)}): a short token can be guessed; e.g. `openssl rand -hex 32`"
                )
        # A client refreshes once per interval, each refresh taking up to about as long again:
        # a deletion must outwait two intervals for every client to have seen it.
        if self.locations_max_staleness_seconds < 2 * self.locations_refresh_seconds:
            raise SettingsError(
                "LOCATIONS_MAX_STALENESS_SECONDS must be at least twice "
                "LOCATIONS_REFRESH_SECONDS: a deletion must outwait every client's refresh"
            )
        if self.backoff_base_seconds > self.backoff_cap_seconds:
            raise SettingsError(
                "PROVISION_BACKOFF_BASE_SECONDS must not exceed PROVISION_BACKOFF_CAP_SECONDS"
            )
        # A retry waits in the worker as an unacknowledged ETA message, then runs before it is
        # acknowledged (late acks): the longest wait plus a run must stay well inside the time
        # the broker lets a message stay unacknowledged. Redis re-delivers it to another worker
        # after the visibility timeout; RabbitMQ closes the worker's channel after its
        # consumer_timeout, re-delivering every message the worker holds.
        held = 2 * (self.backoff_cap_seconds + self.task_time_limit)
        if self.broker is Broker.REDIS and held > self.broker_visibility_timeout:
            raise SettingsError(
                "CELERY_VISIBILITY_TIMEOUT must be at least twice PROVISION_BACKOFF_CAP_SECONDS + "
                "PROVISION_TIME_LIMIT, or Redis re-delivers waiting retries"
            )
        if self.broker is Broker.RABBITMQ and held > self.broker_consumer_timeout:
            raise SettingsError(
                "RABBITMQ_CONSUMER_TIMEOUT (the server's consumer_timeout) must be at least twice "
                "PROVISION_BACKOFF_CAP_SECONDS + PROVISION_TIME_LIMIT, or RabbitMQ closes the "
                "worker's channel while retries wait"
            )

    @property
    def behind_tls(self) -> bool:
        """API_BEHIND_TLS=1: browsers reach the API over HTTPS only."""
        return self.api_behind_tls == "1"

    @property
    def broker(self) -> Broker:
        """Redis or RabbitMQ, from the scheme of CELERY_BROKER_URL."""
        return broker_of(self.broker_url)

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
        values = [self.influxdb_token, self.operator_token, self.locations_token]
        values.append(self.metrics_token)
        values += [node.token for node in self.influxdb_nodes]
        for url in (self.database_url, self.broker_url):
            try:
                values.append(make_url(url).password)
            except ArgumentError:
                continue
            # As written in the URL too (percent-encoded), the way a client may print it.
            values.append(urllib.parse.urlsplit(url).password)
        return tuple(dict.fromkeys(v for v in values if v))


def _node_pool(env: Mapping[str, str]) -> tuple[tuple[NodeConfig, ...], str | None]:
    """The pool from INFLUXDB_NODES or INFLUXDB_NODES_FILE (not both), and the file's path."""
    nodes_json = env.get("INFLUXDB_NODES", "").strip()
    nodes_file = env.get("INFLUXDB_NODES_FILE", "").strip() or None
    if nodes_json and nodes_file:
        raise SettingsError("set either INFLUXDB_NODES or INFLUXDB_NODES_FILE, not both")
    if nodes_file:
        return read_nodes_file(nodes_file), nodes_file
    return (parse_nodes(nodes_json, "INFLUXDB_NODES") if nodes_json else ()), None


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
