"""Every environment variable, declared once: name, field, type, default, bounds and help.

``Settings.from_env`` reads through this table, so its error messages name the variable; the
README's settings table is printed from it (``python -m worker.settings_doc``), and a fast test
fails when the two differ. Relations between settings are checked in ``Settings.validate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.settings_access import ACCESS
from worker.settings_rules import (
    BROKER_URL_RULE,
    DATABASE_PREFIX,
    HARD_DELETE,
    RETENTION_PERIOD,
    RETENTION_PERIOD_RULE,
    Setting,
    SettingsError,
    Value,
    broker_url,
    http_url,
    psycopg_url,
    read_secret,
    show,
)

# Re-exported: the settings module and the README generator import them from here.
__all__ = [
    "RETENTION_PERIOD",
    "RETENTION_PERIOD_RULE",
    "SETTINGS",
    "Setting",
    "SettingsError",
    "http_url",
    "read_declared",
    "read_secret",
    "show",
]


def read_declared(env: Mapping[str, str]) -> dict[str, Any]:
    """Every table-read setting from ``env``, by Settings field name."""
    by_variable: dict[str, Value | None] = {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.field is None or setting.custom:
            continue
        fallback = by_variable[setting.default_from] if setting.default_from else None
        value = setting.read(env, fallback)
        by_variable[setting.variable] = values[setting.field] = value
    return values


# README order: storage and broker, InfluxDB, provisioning, reconcile, access, Flower.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATABASE_URL",
        "database_url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/tenant_provisioner",
        normalise=psycopg_url,
        file_variable="DATABASE_URL_FILE",
        rule="a PostgreSQL URL",
        help="the tenant registry; `postgresql://` is accepted and uses psycopg 3",
    ),
    Setting(
        "CELERY_BROKER_URL",
        "broker_url",
        default="redis://127.0.0.1:6379/0",
        normalise=broker_url,
        file_variable="CELERY_BROKER_URL_FILE",
        rule=BROKER_URL_RULE,
        help='the Celery broker, Redis or RabbitMQ (see "Which broker")',
    ),
    Setting(
        "CELERY_VISIBILITY_TIMEOUT",
        "broker_visibility_timeout",
        int,
        3600,
        minimum=10,
        unit="s",
        help="Redis only: Redis re-delivers unacknowledged messages after this; "
        "at least twice `PROVISION_BACKOFF_CAP_SECONDS` + `PROVISION_TIME_LIMIT`",
    ),
    Setting(
        "RABBITMQ_CONSUMER_TIMEOUT",
        "broker_consumer_timeout",
        int,
        1800,
        minimum=10,
        unit="s",
        help="RabbitMQ only: the server's `consumer_timeout` (rabbitmq.conf; 30 min by default), "
        "for a check: at least twice `PROVISION_BACKOFF_CAP_SECONDS` + `PROVISION_TIME_LIMIT`",
    ),
    Setting(
        "CELERY_PUBLISH_TIMEOUT",
        "broker_publish_timeout",
        float,
        2.0,
        minimum=0.1,
        unit="s",
        help="how long a request may wait for the broker",
    ),
    Setting(
        "INFLUXDB_URL",
        "influxdb_url",
        default="http://127.0.0.1:8181",
        normalise=http_url,
        rule="an http:// or https:// URL",
        help="the InfluxDB server when no node pool is set",
    ),
    Setting(
        "INFLUXDB_TOKEN",
        "influxdb_token",
        file_variable="INFLUXDB_TOKEN_FILE",
        help="token of the `INFLUXDB_URL` server; no `Authorization` header when unset",
    ),
    Setting(
        "INFLUXDB_DATABASE_PREFIX",
        "influxdb_database_prefix",
        default="telemetry_",
        pattern=DATABASE_PREFIX,
        rule="1 to 10 letters, digits, `_` or `-`, the first a letter or digit",
        help="database = prefix + tenant id, within InfluxDB's 64-byte name limit",
    ),
    Setting(
        "INFLUXDB_DATABASE_LIMIT",
        "influxdb_database_limit",
        int,
        5,
        minimum=1,
        help="limit of the `INFLUXDB_URL` node (Core: 5, Enterprise default: 100)",
    ),
    Setting(
        "INFLUXDB_NODES",
        "influxdb_nodes",
        custom=True,
        rule="a JSON list of nodes",
        help='the node pool (see "The node pool"); unset: `INFLUXDB_URL` as a pool of one',
    ),
    Setting(
        "INFLUXDB_NODES_FILE",
        "influxdb_nodes_file",
        custom=True,
        rule="a file holding that JSON",
        help="instead of `INFLUXDB_NODES` (not both); re-read when it changes",
    ),
    Setting(
        "INFLUXDB_RETENTION_PERIOD",
        "influxdb_retention_period",
        pattern=RETENTION_PERIOD,
        rule=f"a retention period such as 30d or 12h: {RETENTION_PERIOD_RULE}",
        help="default retention of new databases; unset: forever",
    ),
    Setting(
        "INFLUXDB_HARD_DELETE_AT",
        "influxdb_hard_delete_at",
        pattern=HARD_DELETE,
        rule="now, never, default or an RFC 3339 time",
        help="hard-delete policy on deprovisioning; unset: the server's default (72 h)",
    ),
    Setting(
        "INFLUXDB_TELEMETRY_TABLE",
        "influxdb_telemetry_table",
        default="telemetry",
        help="the table counted by the live check",
    ),
    Setting(
        "INFLUXDB_CONNECT_TIMEOUT",
        "influxdb_connect_timeout",
        float,
        3.0,
        minimum=0.1,
        unit="s",
        help="per request of the worker",
    ),
    Setting(
        "INFLUXDB_READ_TIMEOUT",
        "influxdb_read_timeout",
        float,
        10.0,
        minimum=0.1,
        unit="s",
        help="per request of the worker; twice connect + read must stay below "
        "`PROVISION_SOFT_TIME_LIMIT`",
    ),
    Setting(
        "LIVE_CHECK_TIMEOUT",
        "live_check_timeout",
        float,
        2.0,
        minimum=0.1,
        unit="s",
        help="bound of the stats endpoint's live check",
    ),
    Setting(
        "PROVISION_BACKOFF_BASE_SECONDS",
        "backoff_base_seconds",
        float,
        2.0,
        minimum=0.01,
        unit="s",
        help="delay = uniform(0, min(cap, base * 2^(attempt-1))); at most the cap",
    ),
    Setting(
        "PROVISION_BACKOFF_CAP_SECONDS",
        "backoff_cap_seconds",
        float,
        300.0,
        minimum=0.01,
        unit="s",
        help="the longest delay between two attempts",
    ),
    Setting(
        "PROVISION_MAX_ATTEMPTS",
        "max_attempts",
        int,
        10,
        minimum=1,
        help="then `failed`",
    ),
    Setting(
        "PROVISION_SOFT_TIME_LIMIT",
        "task_soft_time_limit",
        int,
        60,
        minimum=1,
        unit="s",
        help="Celery soft time limit of one run (the worker's own settings govern; messages "
        "carry none); below `PROVISION_TIME_LIMIT`",
    ),
    Setting(
        "PROVISION_TIME_LIMIT",
        "task_time_limit",
        int,
        90,
        minimum=2,
        unit="s",
        help="Celery hard time limit of one run",
    ),
    Setting(
        "RECONCILE_INTERVAL_SECONDS",
        "reconcile_interval_seconds",
        float,
        60.0,
        minimum=1,
        unit="s",
        help="beat schedule (a missed run expires, never piles up)",
    ),
    Setting(
        "RECONCILE_REQUEUE_AFTER_SECONDS",
        "reconcile_requeue_after_seconds",
        float,
        minimum=0,
        unit="s",
        default_from="RECONCILE_INTERVAL_SECONDS",
        help="grace before queued work counts as lost (re-publishing is harmless: one chain "
        "per tenant)",
    ),
    Setting(
        "RECONCILE_BATCH_SIZE",
        "reconcile_batch_size",
        int,
        500,
        minimum=1,
        help="rows per keyset batch",
    ),
    Setting(
        "PROVISIONING_ATTEMPTS_RETENTION_DAYS",
        "attempts_retention_days",
        int,
        30,
        minimum=1,
        unit="d",
        help="how long the attempt log keeps a row (pruned hourly; the /metrics totals stay)",
    ),
    *ACCESS,
)
