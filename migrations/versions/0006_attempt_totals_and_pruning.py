"""attempt totals kept as running counters; the attempt log pruned by age

``provisioning_attempt_totals``: attempts by outcome and reason, incremented in the transaction
that logs each attempt, so ``/metrics`` reads a few dozen rows instead of grouping the whole
log on every scrape. Each (outcome, reason) has up to 16 shards, picked at random per attempt,
so concurrent workers do not queue on one hot row; a scrape sums them. Filled here from the log
as it is. ``ix_provisioning_attempts_finished``: the pruning of rows older than
PROVISIONING_ATTEMPTS_RETENTION_DAYS reads through it, a batch at a time. Pruning never lowers
a total: Prometheus counters only go up.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provisioning_attempt_totals",
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("outcome", "reason", "shard"),
    )
    op.execute(
        "INSERT INTO provisioning_attempt_totals (outcome, reason, shard, total) "
        "SELECT outcome, coalesce(reason, ''), 0, count(*) FROM provisioning_attempts "
        "GROUP BY outcome, coalesce(reason, '')"
    )
    op.create_index("ix_provisioning_attempts_finished", "provisioning_attempts", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_provisioning_attempts_finished", table_name="provisioning_attempts")
    op.drop_table("provisioning_attempt_totals")
