"""webhook endpoints, their pending deliveries, and each tenant's lane per endpoint

``webhook_endpoints``: one row per endpoint of the webhooks file (``WEBHOOKS_FILE``), by name;
its URL as last configured (never its secret: the file keeps that); ``configured`` false once
it leaves the file (its deliveries wait, nothing is deleted). ``cursor_xid``/``cursor_id``: how
far its fan-out has read the event log in the global order ``(xid, id)`` (migration 0011),
started at the log's horizon when the endpoint is first seen: a new endpoint gets the events
from then on, not the history. ``failing_since``: the oldest failure not yet resolved (its
pending deliveries' ``first_failed_at``); ``disabled_at``: set once that is older than
``WEBHOOKS_DISABLE_AFTER_HOURS`` - nothing is sent until an operator re-enables it, and its
fan-out goes on (nothing is lost). ``last_*``: the last attempt (the error redacted and
capped). Only one dispatcher works an endpoint at a time: a session advisory lock, which
Postgres frees when its holder dies (no lease to wait out).

``webhook_deliveries``: one row per event still to deliver to an endpoint, deleted once the
endpoint answered 2xx. ``payload`` is the CloudEvent itself, so pruning ``tenant_events``
never loses an undelivered event; ``event_id`` (its id, the ``webhook-id``) is unique per
endpoint. A tenant's deliveries go in ``seq`` (tenantseq) order, one at a time: the index
``(endpoint, tenant_id, seq, id)`` finds each tenant's oldest (deployment events, tenant NULL,
form one lane by id).

``webhook_lanes``: per endpoint and tenant, the highest ``tenantseq`` fanned out. The global
order can put a tenant's later event before an earlier one: a transaction that got its xid
first can take the tenant's lock second. The fan-out then takes the earlier one (committed,
readable by ``seq``) out of turn, and the lane says it is done when the global order reaches
it - so a tenant's deliveries are made in ``seq`` order, each once.

Times are the database's (``worker.clock``), written by the dispatcher.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


class Xid8(sa.types.UserDefinedType[str]):
    """Postgres' 64-bit transaction id (SQLAlchemy has no such type)."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "xid8"


def _time(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _endpoint_key() -> sa.Column[object]:
    return sa.Column(
        "endpoint",
        sa.Text(),
        sa.ForeignKey("webhook_endpoints.name", ondelete="CASCADE", onupdate="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("configured", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("cursor_xid", Xid8(), nullable=False),
        sa.Column("cursor_id", sa.BigInteger(), nullable=False, server_default="0"),
        _time("created_at", nullable=False),
        _time("failing_since"),
        _time("disabled_at"),
        _time("last_attempt_at"),
        _time("last_success_at"),
        sa.Column("last_status", sa.SmallInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        _endpoint_key(),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("payload", JSONB(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        _time("next_attempt_at", nullable=False),
        _time("first_failed_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        _time("created_at", nullable=False),
        sa.UniqueConstraint("endpoint", "event_id", name="uq_webhook_deliveries_event"),
    )
    op.create_index(
        "ix_webhook_deliveries_lane", "webhook_deliveries", ["endpoint", "tenant_id", "seq", "id"]
    )
    op.create_index(
        "ix_webhook_deliveries_failing",
        "webhook_deliveries",
        ["endpoint", "first_failed_at"],
        postgresql_where=sa.text("first_failed_at IS NOT NULL"),
    )
    op.create_table(
        "webhook_lanes",
        _endpoint_key(),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("endpoint", "tenant_id", name="webhook_lanes_pkey"),
    )


def downgrade() -> None:
    op.drop_table("webhook_lanes")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
