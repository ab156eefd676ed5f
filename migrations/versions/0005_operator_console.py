"""operator console: attempts name their server and task, the last run keeps its findings

``provisioning_attempts.node`` and ``.task_id``: the server an attempt worked on and the Celery
task that made it, for the console's attempt history and its links to Flower.
``reconcile_stats.last_findings``: the last run's summary (what it found and did), as JSON.
Three indexes on ``tenants`` serve the console without scanning the table: the tenants page,
newest change first, paged by keyset, with or without a state filter; its id-prefix search
(``text_pattern_ops``: a prefix ``LIKE`` whatever the collation); and the overview's oldest
tenant not provisioned yet (partial, so it stays small when nearly all are provisioned).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNPROVISIONED = "influxdb_state NOT IN ('provisioned', 'deprovisioning')"


def upgrade() -> None:
    op.add_column("provisioning_attempts", sa.Column("node", sa.Text(), nullable=True))
    op.add_column("provisioning_attempts", sa.Column("task_id", sa.Text(), nullable=True))
    op.add_column("reconcile_stats", sa.Column("last_findings", postgresql.JSONB(), nullable=True))
    op.create_index(
        "ix_tenants_recent",
        "tenants",
        [sa.text("influxdb_updated_at DESC"), sa.text("tenant_id DESC")],
    )
    op.create_index(
        "ix_tenants_state_recent",
        "tenants",
        ["influxdb_state", sa.text("influxdb_updated_at DESC"), sa.text("tenant_id DESC")],
    )
    op.create_index(
        "ix_tenants_id_prefix",
        "tenants",
        [sa.text("tenant_id text_pattern_ops")],
    )
    op.create_index(
        "ix_tenants_unprovisioned",
        "tenants",
        ["created_at"],
        postgresql_where=sa.text(UNPROVISIONED),
    )


def downgrade() -> None:
    op.drop_index("ix_tenants_unprovisioned", table_name="tenants")
    op.drop_index("ix_tenants_id_prefix", table_name="tenants")
    op.drop_index("ix_tenants_state_recent", table_name="tenants")
    op.drop_index("ix_tenants_recent", table_name="tenants")
    op.drop_column("reconcile_stats", "last_findings")
    op.drop_column("provisioning_attempts", "task_id")
    op.drop_column("provisioning_attempts", "node")
