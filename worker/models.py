"""The Postgres schema the worker owns: the ``tenants`` table and its provisioning columns.

Postgres is the source of truth for "is tenant X provisioned?"; Celery results are not kept.
The migration in ``migrations/versions`` creates exactly this (or adds it to the UI's table).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

from worker.states import STATES, Adoption, ProvisioningState

__all__ = [
    "STATES",
    "Base",
    "DeploymentSecret",
    "InfluxDBNode",
    "InfluxDBStray",
    "ProvisioningAttempt",
    "ProvisioningAttemptTotal",
    "ProvisioningState",
    "ReconcileStats",
    "Tenant",
    "TenantEvent",
    "TenantLocation",
    "TenantLocationMap",
    "console_sessions",
    "deployment_secrets",
    "influxdb_nodes",
    "influxdb_strays",
    "provisioning_attempt_totals",
    "provisioning_attempts",
    "reconcile_stats",
    "tenant_events",
    "tenant_location_map",
    "tenant_locations",
    "tenants",
]


STATE_CHECK = "influxdb_state IN (" + ", ".join(f"'{s}'" for s in STATES) + ")"
UNPROVISIONED = "influxdb_state NOT IN ('provisioned', 'deprovisioning')"
ADOPT_CHECK = (
    "influxdb_adopt IS NULL OR influxdb_adopt IN (" + ", ".join(f"'{a}'" for a in Adoption) + ")"
)


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint(STATE_CHECK, name="ck_tenants_influxdb_state"),
        CheckConstraint(ADOPT_CHECK, name="ck_tenants_influxdb_adopt"),
        Index("ix_tenants_influxdb_state", "influxdb_state", "tenant_id"),
        Index("ix_tenants_influxdb_node", "influxdb_node"),
        # The console's tenants page (newest change first, by keyset), its id-prefix search
        # and the overview's oldest unprovisioned tenant (migration 0005).
        Index("ix_tenants_recent", text("influxdb_updated_at DESC"), text("tenant_id DESC")),
        Index(
            "ix_tenants_state_recent",
            "influxdb_state",
            text("influxdb_updated_at DESC"),
            text("tenant_id DESC"),
        ),
        Index(
            "ix_tenants_id_prefix", "tenant_id", postgresql_ops={"tenant_id": "text_pattern_ops"}
        ),
        Index("ix_tenants_unprovisioned", "created_at", postgresql_where=text(UNPROVISIONED)),
    )

    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=text("'active'"))
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    influxdb_state: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    influxdb_attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    influxdb_last_error: Mapped[str | None] = mapped_column(Text)
    influxdb_error_reason: Mapped[str | None] = mapped_column(Text)
    influxdb_next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    influxdb_enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    influxdb_provisioned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    influxdb_updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    influxdb_node: Mapped[str | None] = mapped_column(Text)  # holds a slot there while set
    influxdb_retention_period: Mapped[str | None] = mapped_column(Text)
    # Identity (worker.identity): made with the row, carried by the database's _init marker.
    influxdb_incarnation: Mapped[str] = mapped_column(
        Text, server_default=text("gen_random_uuid()::text")
    )
    influxdb_adopt: Mapped[str | None] = mapped_column(Text)  # an Adoption, or strict (NULL)
    # A create sent to this node whose answer we never saw, or whose database is not marked yet.
    influxdb_create_sent_to: Mapped[str | None] = mapped_column(Text)
    # The message ("<task id>:<retries>") that owns the scheduled retry: one chain per tenant.
    influxdb_retry_chain: Mapped[str | None] = mapped_column(Text)
    # A deletion's earliest moment to delete the database: its location published as not
    # ready, plus the clients' maximum staleness (worker.locations).
    influxdb_delete_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The attempt under way: set at its start, cleared when its run ends (migration 0022).
    influxdb_attempt_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


tenants = cast(Table, Tenant.__table__)


class ProvisioningAttempt(Base):
    """One InfluxDB attempt of the provisioning task, as it ended."""

    __tablename__ = "provisioning_attempts"
    __table_args__ = (
        Index("ix_provisioning_attempts_tenant", "tenant_id", "attempt"),
        Index("ix_provisioning_attempts_finished", "finished_at"),  # pruning by age
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(Text)  # an AttemptOutcome
    reason: Mapped[str | None] = mapped_column(Text)
    # For a retrying outcome: when the next attempt was scheduled (the backoff as chosen).
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    node: Mapped[str | None] = mapped_column(Text)  # the server it worked on, if any
    task_id: Mapped[str | None] = mapped_column(Text)  # the Celery task that made it


class ReconcileStats(Base):
    """Running totals of the reconciler and its last run (a single row, id 1)."""

    __tablename__ = "reconcile_stats"
    __table_args__ = (CheckConstraint("id = 1", name="ck_reconcile_stats_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    runs_total: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    requeued_total: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    drift_total: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    stuck_total: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_duration_seconds: Mapped[float | None] = mapped_column(Float)
    last_scanned: Mapped[int | None] = mapped_column(BigInteger)
    last_influxdb_calls: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_findings: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # the last summary


class ProvisioningAttemptTotal(Base):
    """Attempts by outcome and reason, as running totals (``/metrics`` reads these, not the
    log): incremented with each logged attempt, never lowered by pruning the log."""

    __tablename__ = "provisioning_attempt_totals"

    outcome: Mapped[str] = mapped_column(Text, primary_key=True)
    reason: Mapped[str] = mapped_column(Text, primary_key=True, server_default=text("''"))
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)  # spreads hot rows
    total: Mapped[int] = mapped_column(BigInteger)


provisioning_attempts = cast(Table, ProvisioningAttempt.__table__)
provisioning_attempt_totals = cast(Table, ProvisioningAttemptTotal.__table__)
reconcile_stats = cast(Table, ReconcileStats.__table__)


class InfluxDBNode(Base):
    """What we learned about one InfluxDB server (its configuration lives in settings)."""

    __tablename__ = "influxdb_nodes"
    __table_args__ = (
        Index(
            "ix_influxdb_nodes_room",
            text("(unavailable_since IS NOT NULL)"),  # answering servers first (0019)
            "placed",
            "name",
            postgresql_where=text("configured AND full_since IS NULL"),
        ),
    )

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    full_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # from a 422
    observed_databases: Mapped[int | None] = mapped_column(Integer)  # at the last reconcile
    # Of those, the ones beyond the tenants placed here then: someone else's (migration 0023).
    other_databases: Mapped[int | None] = mapped_column(Integer)
    observed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Since its listing failed or it refused our token; cleared by a listing that succeeds.
    unavailable_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    unavailable_reason: Mapped[str | None] = mapped_column(Text)  # a Reason
    # Tenants holding a slot here: kept by a trigger on tenants (migration 0007).
    placed: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The nodes file as placement last wrote it: in it, and its limit.
    configured: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    database_limit: Mapped[int | None] = mapped_column(Integer)
    # The limit the server named in its last 422, for operators (migration 0020).
    refused_limit: Mapped[int | None] = mapped_column(Integer)


influxdb_nodes = cast(Table, InfluxDBNode.__table__)


class TenantLocation(Base):
    """Where a tenant's database is, as the data plane reads it (``worker.locations``): kept by
    a trigger on ``tenants`` (migration 0008). A change waits in ``next_*`` (``pending``)
    until it is published over the readable columns; a tombstone (``deleted``) outlives the
    tenant for a week."""

    __tablename__ = "tenant_locations"
    __table_args__ = (
        Index("ix_tenant_locations_version", "version", unique=True),
        Index("ix_tenant_locations_unpublished", "changed_at", postgresql_where=text("pending")),
        Index("ix_tenant_locations_tombstones", "changed_at", postgresql_where=text("deleted")),
    )

    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    state: Mapped[str | None] = mapped_column(Text)  # NULL on a tombstone
    node: Mapped[str | None] = mapped_column(Text)
    incarnation: Mapped[str | None] = mapped_column(Text)
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    version: Mapped[int | None] = mapped_column(BigInteger)  # NULL: never published yet
    next_state: Mapped[str | None] = mapped_column(Text)
    next_node: Mapped[str | None] = mapped_column(Text)
    next_incarnation: Mapped[str | None] = mapped_column(Text)
    next_deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    pending: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    changed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )


class TenantLocationMap(Base):
    """The location map's one row: the highest version of a tombstone pruned so far, and the
    map's epoch (which database it is)."""

    __tablename__ = "tenant_location_map"
    __table_args__ = (CheckConstraint("id = 1", name="ck_tenant_location_map_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    horizon: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    epoch: Mapped[str] = mapped_column(Text, server_default=text("gen_random_uuid()::text"))


class InfluxDBStray(Base):
    """A ``telemetry_*`` database the reconciler listed that nobody placed there: a tenant's
    database off its home server (``stray``), or one of no tenant (``orphan``). Reported only."""

    __tablename__ = "influxdb_strays"
    __table_args__ = (
        CheckConstraint("kind IN ('stray', 'orphan')", name="ck_influxdb_strays_kind"),
    )

    node: Mapped[str] = mapped_column(Text, primary_key=True)
    database: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    tenant_id: Mapped[str | None] = mapped_column(Text)
    home_node: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


tenant_locations = cast(Table, TenantLocation.__table__)
tenant_location_map = cast(Table, TenantLocationMap.__table__)
influxdb_strays = cast(Table, InfluxDBStray.__table__)


class DeploymentSecret(Base):
    """A random key of this deployment, shared by its processes (migration 0009)."""

    __tablename__ = "deployment_secrets"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


deployment_secrets = cast(Table, DeploymentSecret.__table__)


class ConsoleSession(Base):
    """A console sign-in, valid while its row says so (migration 0010): the cookie holds the
    session id, this table its SHA-256."""

    __tablename__ = "console_sessions"
    __table_args__ = (
        CheckConstraint("octet_length(id_hash) = 32", name="console_sessions_id_hash_sha256"),
    )

    id_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    actor: Mapped[str] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_by: Mapped[str | None] = mapped_column(Text)


console_sessions = cast(Table, ConsoleSession.__table__)


class Xid8(UserDefinedType[str]):
    """Postgres' 64-bit transaction id; read it as text (``xid::text``)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


class TenantEvent(Base):
    """One event of the log (migration 0011): a tenant's transition, written by a trigger on
    ``tenants``, or an operator's action, written by the hook - in the transaction of the
    change. ``seq`` counts per tenant; ``(xid, id)`` is the global order (``worker.events``)."""

    __tablename__ = "tenant_events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "seq", name="uq_tenant_events_tenant_seq"),
        CheckConstraint(
            "(tenant_id IS NULL) = (seq IS NULL)", name="ck_tenant_events_seq_per_tenant"
        ),
        Index("ix_tenant_events_cursor", "xid", "id"),
        Index("ix_tenant_events_time", "time"),
        Index("ix_tenant_events_operator", "id", postgresql_where=text("type LIKE 'operator.%'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(Text)  # NULL: an event of the deployment
    seq: Mapped[int | None] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(Text)
    time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )
    actor: Mapped[str | None] = mapped_column(Text)
    route: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # The writer's transaction id plus the log's shift (0 unless restored: migration 0021)
    xid: Mapped[str] = mapped_column(Xid8, server_default=func.tenant_event_xid())


tenant_events = cast(Table, TenantEvent.__table__)
