"""the tenant event log and the operator audit trail, written in the transaction of the change

``tenant_events``: one row per event - every state transition of a tenant (written by the
trigger ``tenants_write_event`` on ``tenants``) and every operator action (written by the hooks
through ``tenant_events_append``) - in the transaction that makes the change: an event is never
written for a change that rolled back, and never missing for one that committed (a
transactional outbox).

Columns: ``tenant_id`` (NULL for events of the deployment, e.g. a console sign-in); ``seq``, the
tenant's own sequence (1, 2, 3, ...), handed out under ``pg_advisory_xact_lock`` keyed on the
tenant id and held until commit, so a tenant's events commit in ``seq`` order without gaps, and
a re-created id continues its predecessor's sequence (pruning keeps each tenant's last event);
``type``; ``time`` (``clock_timestamp()``); ``actor`` and ``route``, read from the transaction's
settings ``tenant_provisioner.actor`` / ``tenant_provisioner.route`` that our code sets (unset:
no actor, route ``worker``; an INSERT into ``tenants`` without them, route ``external``: the
UI's own INSERT); ``data`` (jsonb: state, previous_state, reason, error as stored - secrets
already removed -, node, incarnation, ... as each type needs); ``xid``, the writing
transaction's id (``pg_current_xact_id()``, 64 bits, never wraps).

The global order (the cursor of a stream over every tenant) is ``(xid, id)``, and a reader only
returns events with ``xid < pg_snapshot_xmin(pg_current_snapshot())``. Ids alone would not do:
they are taken from a sequence *before* commit, so id 8 can commit before id 7, and a reader
that saw 8 and moved its cursor past it would never see 7. Below the snapshot's xmin every
transaction has ended - committed (its events are visible) or rolled back (they never will
be) - and every transaction still to write gets an xid at or above it (xids are handed out in
increasing order when a transaction first writes). So the events below xmin are final: reading
them in ``(xid, id)`` order and resuming after the last one read misses none and repeats none.
The price: an event becomes readable once every transaction older than its own has ended (a
long transaction anywhere in the cluster delays the stream, it loses nothing). Read on the
primary. Per tenant, ``seq`` is enough: it commits in order.

Indexes: ``(tenant_id, seq)`` (unique: a tenant's pages), ``(xid, id)`` (the global cursor),
``(time)`` (pruning by age), and the operator actions by id (the audit page).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


class Xid8(sa.types.UserDefinedType[str]):
    """Postgres' 64-bit transaction id (SQLAlchemy has no such type)."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "xid8"


# The two-int advisory lock space (key 1 = this constant) never meets the bigint keys of the
# tenants' run locks: an operator's request never waits for a run's InfluxDB calls.
APPEND = """
CREATE FUNCTION tenant_events_append(
    p_tenant text, p_type text, p_data jsonb, p_route text DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    next_seq integer;
    written bigint;
BEGIN
    IF p_tenant IS NOT NULL THEN
        -- Held until commit: the tenant's next event waits, then reads this one's seq.
        PERFORM pg_advisory_xact_lock(1702129518, hashtext(p_tenant));
        SELECT coalesce(max(seq), 0) + 1 INTO next_seq
        FROM tenant_events WHERE tenant_id = p_tenant;
    END IF;
    INSERT INTO tenant_events (tenant_id, seq, type, actor, route, data)
    VALUES (
        p_tenant,
        next_seq,
        p_type,
        nullif(current_setting('tenant_provisioner.actor', true), ''),
        coalesce(nullif(current_setting('tenant_provisioner.route', true), ''), p_route, 'worker'),
        coalesce(p_data, '{}'::jsonb)
    )
    RETURNING id INTO written;
    RETURN written;
END
$$
"""

FUNCTION = """
CREATE FUNCTION tenants_write_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    route text := nullif(current_setting('tenant_provisioner.route', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        kind := 'tenant.created';
    ELSIF TG_OP = 'DELETE' THEN
        kind := 'tenant.deprovisioned';
    ELSIF NEW.influxdb_state IS DISTINCT FROM OLD.influxdb_state THEN
        kind := CASE NEW.influxdb_state
            WHEN 'provisioning' THEN 'tenant.provisioning_started'
            WHEN 'retrying' THEN 'tenant.retry_scheduled'
            WHEN 'provisioned' THEN 'tenant.provisioned'
            WHEN 'failed' THEN 'tenant.failed'
            WHEN 'waiting_for_capacity' THEN 'tenant.waiting_for_capacity'
            WHEN 'deprovisioning' THEN 'tenant.deletion_requested'
            WHEN 'pending' THEN CASE
                WHEN NEW.influxdb_adopt = 'any' AND OLD.influxdb_adopt IS DISTINCT FROM 'any'
                    THEN 'tenant.adopted'
                WHEN OLD.influxdb_state = 'provisioned' AND NEW.influxdb_error_reason = 'drift'
                    THEN 'tenant.drift_found'
                -- Out of failed without an operator: the reconciler resumed it.
                WHEN OLD.influxdb_state = 'failed' AND coalesce(route, 'worker')
                    IN ('worker', 'reconciler') THEN 'tenant.resumed'
                WHEN OLD.influxdb_state = 'failed' THEN 'tenant.retry_requested'
                WHEN NEW.influxdb_error_reason = 'node_not_configured'
                    THEN 'tenant.waiting_for_node'
                ELSE 'tenant.requeued'
            END
            ELSE 'tenant.state_changed'
        END;
    ELSIF NEW.influxdb_adopt = 'any' AND OLD.influxdb_adopt IS DISTINCT FROM 'any' THEN
        kind := 'tenant.adopted';  -- an operator's adoption of a pending tenant
    ELSIF OLD.influxdb_node IS NULL AND NEW.influxdb_node IS NOT NULL
          AND NEW.influxdb_adopt = 'unmarked' THEN
        kind := 'tenant.adopted';  -- a row from before the worker, found on a server
    ELSIF NEW.influxdb_error_reason IS DISTINCT FROM OLD.influxdb_error_reason
          AND NEW.influxdb_error_reason = 'node_not_configured' THEN
        kind := 'tenant.waiting_for_node';
    ELSIF NEW.influxdb_error_reason IS DISTINCT FROM OLD.influxdb_error_reason
          AND NEW.influxdb_state = 'deprovisioning' AND NEW.influxdb_error_reason IS NOT NULL THEN
        kind := 'tenant.deletion_failed';
    ELSE
        RETURN NULL;  -- a placement, a cleared reason: no transition of its own
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM tenant_events_append(OLD.tenant_id, kind, jsonb_strip_nulls(jsonb_build_object(
            'previous_state', OLD.influxdb_state,
            'node', OLD.influxdb_node,
            'incarnation', OLD.influxdb_incarnation
        )));
    ELSE
        PERFORM tenant_events_append(NEW.tenant_id, kind, jsonb_strip_nulls(jsonb_build_object(
            'state', NEW.influxdb_state,
            'previous_state', CASE WHEN TG_OP = 'UPDATE' THEN OLD.influxdb_state END,
            'reason', NEW.influxdb_error_reason,
            'error', NEW.influxdb_last_error,
            'node', NEW.influxdb_node,
            'incarnation', NEW.influxdb_incarnation,
            'attempts', NEW.influxdb_attempts,
            'next_attempt_at', NEW.influxdb_next_attempt_at,
            'adopt', NEW.influxdb_adopt
        )), CASE WHEN TG_OP = 'INSERT' THEN 'external' END);
    END IF;
    RETURN NULL;
END
$$
"""
# After tenants_count_slots and tenants_track_location (triggers fire in name order): the
# node's and the location's rows are locked first, as every other writer locks them.
TRIGGER = """
CREATE TRIGGER tenants_write_event
AFTER INSERT OR DELETE OR UPDATE OF influxdb_state, influxdb_node, influxdb_adopt,
    influxdb_error_reason
ON tenants FOR EACH ROW EXECUTE FUNCTION tenants_write_event()
"""


def upgrade() -> None:
    op.create_table(
        "tenant_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("tenant_id", sa.Text(), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column(
            "time",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("route", sa.Text(), nullable=True),
        sa.Column("data", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("xid", Xid8(), nullable=False, server_default=sa.text("pg_current_xact_id()")),
        sa.UniqueConstraint("tenant_id", "seq", name="uq_tenant_events_tenant_seq"),
        sa.CheckConstraint(
            "(tenant_id IS NULL) = (seq IS NULL)", name="ck_tenant_events_seq_per_tenant"
        ),
    )
    op.create_index("ix_tenant_events_cursor", "tenant_events", ["xid", "id"])
    op.create_index("ix_tenant_events_time", "tenant_events", ["time"])
    op.create_index(
        "ix_tenant_events_operator",
        "tenant_events",
        ["id"],
        postgresql_where=sa.text("type LIKE 'operator.%'"),
    )
    op.execute(APPEND)
    op.execute(FUNCTION)
    # No tenant changes between the snapshot and the trigger: writers wait for the migration.
    op.execute("LOCK TABLE tenants IN SHARE ROW EXCLUSIVE MODE")
    # Each tenant as it is, so that from now on every tenant's last event is its state.
    op.execute(
        "INSERT INTO tenant_events (tenant_id, seq, type, route, data) "
        "SELECT tenant_id, 1, 'tenant.imported', 'migration', jsonb_strip_nulls(jsonb_build_object("
        "'state', influxdb_state, 'reason', influxdb_error_reason, 'error', influxdb_last_error, "
        "'node', influxdb_node, 'incarnation', influxdb_incarnation, "
        "'attempts', influxdb_attempts, 'adopt', influxdb_adopt)) "
        "FROM (SELECT * FROM tenants ORDER BY tenant_id) t"
    )
    op.execute(TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER tenants_write_event ON tenants")
    op.execute("DROP FUNCTION tenants_write_event()")
    op.execute("DROP FUNCTION tenant_events_append(text, text, jsonb, text)")
    op.drop_table("tenant_events")
