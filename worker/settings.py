"""Typed settings, read from the environment once, failing fast with the variable's name.

Every process calls :func:`get_settings`; nothing else reads ``os.environ`` for configuration.
Each variable is one field of ``Settings``, its help the docstring below it; docs/settings.md
explains them, in a table printed from the fields by ``python -m worker.settings_doc``.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from worker import settings_rules as rules
from worker.node_config import MAX_LIMIT, NodeConfig, parse_nodes, read_nodes_file
from worker.settings_rules import RETENTION_PERIOD, RETENTION_PERIOD_RULE, Broker, SettingsError

# SettingsError, Broker and the retention rule are re-exported: callers import them from here.
__all__ = ["RETENTION_PERIOD", "RETENTION_PERIOD_RULE", "Broker", "Settings", "SettingsError"]
__all__ += ["get_settings"]


def var(name: str, default: Any = None, ge: float | None = None, unit: str = "", **doc: Any) -> Any:
    """The field of variable ``name``; ``file=True``: or of the file ``name_FILE`` (and out of
    repr); ``default_from``: unset, that earlier variable's value."""
    extra: dict[str, Any] = {"unit": unit, "file": False, "default_from": None} | doc
    return Field(default, alias=name, ge=ge, repr=not extra["file"], json_schema_extra=extra)


def facts(info: Any) -> dict[str, Any]:
    """What ``var`` noted of a field (unit, file, default_from) and what it accepts, in words."""
    accepted = next((m for m in info.metadata if isinstance(m, str)), "")
    return {"accepted": accepted, **info.json_schema_extra}


Nodes = BeforeValidator(lambda v: parse_nodes(v, "INFLUXDB_NODES") if isinstance(v, str) else v)
Pool = Annotated[tuple[NodeConfig, ...], NoDecode, Nodes, "a JSON list of nodes"]


class Settings(BaseSettings):
    """Configuration of every tenant-provisioner process. Build it with :meth:`from_env` (which
    reads ``X_FILE`` too; ``from_env({})``: every default); copy it with ``model_copy(update=)``."""

    model_config = SettingsConfigDict(
        frozen=True, case_sensitive=True, use_attribute_docstrings=True, regex_engine="python-re"
    )

    # The table's order: storage and broker, InfluxDB, provisioning, reconcile, access, Flower.
    database_url: rules.PostgresUrl = var(
        "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/tenant_provisioner", file=True
    )
    """the tenant registry; `postgresql://` is accepted and uses psycopg 3"""
    broker_url: rules.BrokerUrl = var("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0", file=True)
    """the Celery broker, Redis or RabbitMQ (see "Which broker")"""
    broker_visibility_timeout: int = var("CELERY_VISIBILITY_TIMEOUT", 3600, 10, "s")
    """Redis only: Redis re-delivers unacknowledged messages after this (see "Rules")"""
    broker_consumer_timeout: int = var("RABBITMQ_CONSUMER_TIMEOUT", 1800, 10, "s")
    """RabbitMQ only: the server's `consumer_timeout` (rabbitmq.conf), for a check (see "Rules")"""
    broker_publish_timeout: float = var("CELERY_PUBLISH_TIMEOUT", 2.0, 0.1, "s")
    """how long a request may wait for the broker"""
    influxdb_url: rules.HttpUrl = var("INFLUXDB_URL", "http://127.0.0.1:8181")
    """the InfluxDB server when no node pool is set"""
    influxdb_token: str | None = var("INFLUXDB_TOKEN", file=True)
    """token of the `INFLUXDB_URL` server; no `Authorization` header when unset"""
    influxdb_database_prefix: rules.DatabasePrefix = var("INFLUXDB_DATABASE_PREFIX", "telemetry_")
    """database = prefix + tenant id, within InfluxDB's 64-byte name limit"""
    influxdb_database_limit: Annotated[int, Field(le=MAX_LIMIT)] = var(
        "INFLUXDB_DATABASE_LIMIT", 5, 1
    )
    """limit of the `INFLUXDB_URL` node (Core: 5, Enterprise default: 100)"""
    influxdb_nodes: Pool = var("INFLUXDB_NODES", ())
    """the node pool (see "The node pool"); unset: `INFLUXDB_URL` as a pool of one"""
    influxdb_nodes_file: rules.NodesFile = var("INFLUXDB_NODES_FILE")
    """instead of `INFLUXDB_NODES` (not both); re-read when it, or a `token_file` it names,
    changes"""
    influxdb_retention_period: rules.Retention = var("INFLUXDB_RETENTION_PERIOD")
    """default retention of new databases; unset: forever"""
    influxdb_hard_delete_at: rules.HardDelete = var("INFLUXDB_HARD_DELETE_AT")
    """hard-delete policy on deprovisioning; unset: the server's default (72 h)"""
    influxdb_telemetry_table: str = var("INFLUXDB_TELEMETRY_TABLE", "telemetry")
    """the table counted by the live check"""
    influxdb_connect_timeout: float = var("INFLUXDB_CONNECT_TIMEOUT", 3.0, 0.1, "s")
    """per request of the worker"""
    influxdb_read_timeout: float = var("INFLUXDB_READ_TIMEOUT", 10.0, 0.1, "s")
    """per request of the worker (see "Rules")"""
    live_check_timeout: float = var("LIVE_CHECK_TIMEOUT", 2.0, 0.1, "s")
    """bound of the stats endpoint's live check"""
    backoff_base_seconds: float = var("PROVISION_BACKOFF_BASE_SECONDS", 2.0, 0.01, "s")
    """delay = uniform(0, min(cap, base * 2^(attempt-1))); at most the cap"""
    backoff_cap_seconds: float = var("PROVISION_BACKOFF_CAP_SECONDS", 300.0, 0.01, "s")
    """the longest delay between two attempts"""
    max_attempts: int = var("PROVISION_MAX_ATTEMPTS", 10, 1)
    """then `failed`"""
    task_soft_time_limit: int = var("PROVISION_SOFT_TIME_LIMIT", 60, 1, "s")
    """Celery soft time limit of one run (the worker's own settings govern; messages carry none)"""
    task_time_limit: int = var("PROVISION_TIME_LIMIT", 90, 2, "s")
    """Celery hard time limit of one run"""
    reconcile_interval_seconds: float = var("RECONCILE_INTERVAL_SECONDS", 60.0, 1, "s")
    """beat schedule (a missed run expires, never piles up)"""
    reconcile_requeue_after_seconds: float = var(
        "RECONCILE_REQUEUE_AFTER_SECONDS", None, 0, "s", default_from="RECONCILE_INTERVAL_SECONDS"
    )
    """grace before queued work counts as lost; once re-sent, as long again as it had waited, at
    most 16 graces (re-publishing is harmless: one chain per tenant)"""
    reconcile_batch_size: int = var("RECONCILE_BATCH_SIZE", 500, 1)
    """rows per keyset batch"""
    attempts_retention_days: int = var("PROVISIONING_ATTEMPTS_RETENTION_DAYS", 30, 1, "d")
    """how long the attempt log keeps a row (pruned hourly; the /metrics totals stay)"""
    events_retention_days: int = var("EVENTS_RETENTION_DAYS", 30, 1, "d")
    """how long the event log keeps an event (pruned hourly; each tenant's last one stays)"""
    events_source: rules.EventsSource = var("EVENTS_SOURCE", "/tenant-provisioner")
    """every event's CloudEvents `source`; give each deployment its own when one receiver takes
    events of several (`source` and `id` together tell events apart)"""
    webhooks_file: Annotated[str | None, "a file holding a JSON list of endpoints"] = var(
        "WEBHOOKS_FILE"
    )
    """webhook endpoints and secrets (see docs/webhooks.md), read by the webhooks worker at each
    dispatch; unset: no webhooks"""
    webhooks_poll_seconds: float = var("WEBHOOKS_POLL_SECONDS", 2.0, 0.1, "s")
    """beat schedule of the webhooks dispatch (a missed run expires, never piles up)"""
    webhooks_read_timeout_seconds: float = var("WEBHOOKS_READ_TIMEOUT_SECONDS", 10.0, 0.1, "s")
    """how long a receiver may take to answer, status line and headers whole, however slowly
    they arrive; one deadline, 3 s more, bounds the whole POST, connecting included; longer is
    a failure, retried"""
    webhooks_backoff_cap_seconds: float = var("WEBHOOKS_BACKOFF_CAP_SECONDS", 300.0, 1, "s")
    """the longest delay between two attempts of a delivery (full jitter, from 1 s, doubling)"""
    webhooks_disable_after_hours: float = var("WEBHOOKS_DISABLE_AFTER_HOURS", 24.0, 0.01, "h")
    """an endpoint failing this long is disabled: nothing is sent, its deliveries are kept"""
    operator_token: rules.Token = var("OPERATOR_TOKEN", file=True)
    """required by the operator API; at least 32 characters"""
    locations_token: rules.Token = var("LOCATIONS_TOKEN", file=True)
    """`/locations`' read-only credential, 32+ characters (unset: 401 to all)"""
    locations_refresh_seconds: float = var("LOCATIONS_REFRESH_SECONDS", 2.0, 0.1, "s")
    """how often a location client asks for changes (a hint in every answer)"""
    locations_max_staleness_seconds: float = var("LOCATIONS_MAX_STALENESS_SECONDS", 10.0, 0, "s")
    """a deletion waits this long after publishing it, then deletes the database"""
    console_session_minutes: int = var("CONSOLE_SESSION_MINUTES", 480, 1, "min")
    """the longest a console sign-in lasts, however active"""
    console_session_idle_minutes: int = var("CONSOLE_SESSION_IDLE_MINUTES", 30, 1, "min")
    """a console session unused this long ends (sign-out ends it at once)"""
    metrics_token: rules.Token = var("METRICS_TOKEN", file=True)
    """the scrape credential of `/metrics`, 32+ characters (unset: the operator token)"""
    api_behind_tls: Literal["0", "1"] = var("API_BEHIND_TLS", "0")
    """`1`: HTTPS only (a TLS proxy in front): console cookies are `Secure`, answers carry HSTS"""
    flower_url: rules.LinkUrl = var("FLOWER_URL")
    """where operators open Flower; the console links each attempt to its task there"""
    log_level: rules.LogLevel = var("LOG_LEVEL", "INFO")
    """of every process's log; any case"""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` only (default ``os.environ``); raise SettingsError."""
        source = _Environ(cls, os.environ if environ is None else environ)
        try:
            # That source only (no .env; no os.environ unless given): BaseSettings' own argument.
            return cls(_build_sources=((source,), {}))  # type: ignore[call-arg]
        except ValidationError as exc:
            raise SettingsError(_message(exc.errors()[0])) from None

    @model_validator(mode="before")
    @classmethod
    def _derived(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The pool from INFLUXDB_NODES_FILE; the requeue grace's default: the interval."""
        if path := data.get("INFLUXDB_NODES_FILE"):
            if "INFLUXDB_NODES" in data:
                raise SettingsError("set either INFLUXDB_NODES or INFLUXDB_NODES_FILE, not both")
            data["INFLUXDB_NODES"] = read_nodes_file(path)
        interval = data.get(
            "RECONCILE_INTERVAL_SECONDS", cls.model_fields["reconcile_interval_seconds"].default
        )
        return {"RECONCILE_REQUEUE_AFTER_SECONDS": interval} | data

    @model_validator(mode="after")
    def _relations(self) -> Settings:
        """The rules between settings (docs/settings.md, "Rules")."""
        if self.task_soft_time_limit >= self.task_time_limit:
            raise SettingsError("PROVISION_SOFT_TIME_LIMIT must be below PROVISION_TIME_LIMIT")
        two_calls = 2 * (self.influxdb_connect_timeout + self.influxdb_read_timeout)
        if two_calls >= self.task_soft_time_limit:
            raise SettingsError(
                "PROVISION_SOFT_TIME_LIMIT must exceed twice INFLUXDB_CONNECT_TIMEOUT + "
                "INFLUXDB_READ_TIMEOUT (one create and one write)"
            )
        if self.locations_max_staleness_seconds < 2 * self.locations_refresh_seconds:
            raise SettingsError(
                "LOCATIONS_MAX_STALENESS_SECONDS must be at least twice "
                "LOCATIONS_REFRESH_SECONDS: a deletion must outwait every client's refresh"
            )
        if self.locations_token and self.locations_token == self.operator_token:
            # (METRICS_TOKEN may be: unset, the scrape takes the operator token anyway)
            raise SettingsError(
                "LOCATIONS_TOKEN must not be OPERATOR_TOKEN: writers would be operators"
            )
        if self.backoff_base_seconds > self.backoff_cap_seconds:
            raise SettingsError(
                "PROVISION_BACKOFF_BASE_SECONDS must not exceed PROVISION_BACKOFF_CAP_SECONDS"
            )
        # The longest a retry waits unacknowledged: a backoff, or a deletion's wait for clients
        wait = max(self.backoff_cap_seconds, self.locations_max_staleness_seconds)
        held, longest = 2 * (wait + self.task_time_limit), "the longer of "
        longest += "PROVISION_BACKOFF_CAP_SECONDS and LOCATIONS_MAX_STALENESS_SECONDS"
        if self.broker is Broker.REDIS and held > self.broker_visibility_timeout:
            raise SettingsError(
                f"CELERY_VISIBILITY_TIMEOUT must be at least twice {longest} + "
                "PROVISION_TIME_LIMIT, or Redis re-delivers waiting retries"
            )
        if self.broker is Broker.RABBITMQ and held > self.broker_consumer_timeout:
            raise SettingsError(
                "RABBITMQ_CONSUMER_TIMEOUT (the server's consumer_timeout) must be at least twice "
                f"{longest} + PROVISION_TIME_LIMIT, or RabbitMQ closes the worker's channel while "
                "retries wait"
            )
        return self

    @property
    def behind_tls(self) -> bool:
        """API_BEHIND_TLS=1: browsers reach the API over HTTPS only."""
        return self.api_behind_tls == "1"

    @property
    def broker(self) -> Broker:
        """Redis or RabbitMQ, from the scheme of CELERY_BROKER_URL."""
        return rules.BROKER_SCHEMES[self.broker_url.split("://", 1)[0].lower()]

    def default_nodes(self) -> tuple[NodeConfig, ...]:
        """The pool at start-up: INFLUXDB_NODES[_FILE], else INFLUXDB_URL as a pool of one."""
        token, limit = self.influxdb_token, self.influxdb_database_limit
        return self.influxdb_nodes or (NodeConfig("default", self.influxdb_url, token, limit),)

    def database_name(self, tenant_id: str) -> str:
        """The InfluxDB database that belongs to ``tenant_id``."""
        return f"{self.influxdb_database_prefix}{tenant_id}"

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for redaction of logs and stored errors."""
        values = [self.influxdb_token, self.operator_token, self.locations_token]
        values += [self.metrics_token, *(node.token for node in self.influxdb_nodes)]
        return _secret_values(tuple(values), (self.database_url, self.broker_url))


@functools.lru_cache(maxsize=32)  # every log line asks; a copy with other values is its own key
def _secret_values(values: tuple[str | None, ...], urls: tuple[str, ...]) -> tuple[str, ...]:
    found = list(values)
    for url in urls:
        try:
            found.append(make_url(url).password)
        except ArgumentError:
            continue
        # As written in the URL too (percent-encoded), the way a client may print it.
        found.append(urllib.parse.urlsplit(url).password)
    return tuple(dict.fromkeys(v for v in found if v))


class _Environ(EnvSettingsSource):
    """The variables of ``environ``, stripped (empty is unset); ``X_FILE`` read in place of X."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self.environ = environ
        super().__init__(settings_cls, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env: dict[str, str | None] = {k: v.strip() for k, v in self.environ.items() if v.strip()}
        for name in (str(f.alias) for f in Settings.model_fields.values() if facts(f)["file"]):
            env[name] = rules.read_secret(self.environ, name, f"{name}_FILE")
        return env


def _message(error: ErrorDetails) -> str:
    """A validation error as a sentence naming the variable (never a secret, URL or password)."""
    ctx, loc, kind = error.get("ctx", {}), error["loc"], error["type"]
    if isinstance(ctx.get("error"), SettingsError) or not loc:
        return str(ctx.get("error", error["msg"]))
    field = next(f for f in Settings.model_fields.values() if f.alias == loc[0])
    what = str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        what = "must be one of " + ", ".join(get_args(field.annotation))
    elif kind == "string_pattern_mismatch":
        what = f"must be {facts(field)['accepted']}"
    elif kind == "greater_than_equal":
        what = f"must be at least {rules.show(ctx['ge'])}"
    elif kind == "less_than_equal":
        what = f"must be at most {rules.show(ctx['le'])}"
    elif kind in ("int_parsing", "float_parsing"):
        what = "must be a whole number" if kind == "int_parsing" else "must be a number"
    elif kind == "string_too_short":  # a token
        what = (
            f"must be at least {ctx['min_length']} characters (it is {len(error['input'])}): "
            "a short token can be guessed; e.g. `openssl rand -hex 32`"
        )
    if facts(field)["file"] or "URL" in str(loc[0]):
        return f"{loc[0]} {what}"
    return f"{loc[0]} {what} (got {error['input']!r})"


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()
