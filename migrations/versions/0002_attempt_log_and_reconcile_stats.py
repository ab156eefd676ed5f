"""attempt log and reconcile statistics

``provisioning_attempts``: one row per InfluxDB attempt (when, outcome, reason), for metrics
("attempts by reason") and for reading backoff behaviour from real timestamps.
``reconcile_stats``: one row of running totals and the last run's summary, so the operator
API's /metrics can answer "are we stuck?" without talking to the worker.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "provisioning_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_index(
        "ix_provisioning_attempts_tenant", "provisioning_attempts", ["tenant_id", "attempt"]
    )
    op.create_table(
        "reconcile_stats",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("runs_total", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("requeued_total", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("drift_total", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("stuck_total", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("last_started_at", TZ, nullable=True),
        sa.Column("last_duration_seconds", sa.Float(), nullable=True),
        sa.Column("last_scanned", sa.BigInteger(), nullable=True),
        sa.Column("last_influxdb_calls", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint("id = 1", name="ck_reconcile_stats_single_row"),
    )
    op.execute("INSERT INTO reconcile_stats (id) VALUES (1)")


def downgrade() -> None:
    op.drop_table("reconcile_stats")
    op.drop_index("ix_provisioning_attempts_tenant", table_name="provisioning_attempts")
    op.drop_table("provisioning_attempts")
