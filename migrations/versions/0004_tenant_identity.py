"""tenant identity: incarnation, adoption, unanswered creates, one retry chain

``influxdb_incarnation``: a random id made with each row; the database's ``_init`` marker carries
it, so a database of the tenant's name is known to be this tenant's (``worker.identity``).
Existing rows get one each, and ``influxdb_adopt = 'unmarked'``: they predate this worker, so
the database the inline code made for them (no incarnation in its marker) is theirs, wherever
the reconciler finds it. ``influxdb_create_sent_to``: the node of a create whose answer was not
seen. ``influxdb_retry_chain``: the message that owns the tenant's scheduled retry.
``provisioning_attempts.retry_at``: when a failed attempt scheduled the next one (the backoff,
as chosen; the next attempt's start shows whether the schedule was kept).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADOPTIONS = ("unmarked", "any")


def upgrade() -> None:
    # gen_random_uuid() is volatile: Postgres evaluates it per existing row (built in since 13).
    op.add_column(
        "tenants",
        sa.Column(
            "influxdb_incarnation",
            sa.Text(),
            nullable=False,
            server_default=sa.text("gen_random_uuid()::text"),
        ),
    )
    op.add_column("tenants", sa.Column("influxdb_adopt", sa.Text(), nullable=True))
    op.add_column("tenants", sa.Column("influxdb_create_sent_to", sa.Text(), nullable=True))
    op.add_column("tenants", sa.Column("influxdb_retry_chain", sa.Text(), nullable=True))
    op.create_check_constraint(
        "ck_tenants_influxdb_adopt",
        "tenants",
        "influxdb_adopt IS NULL OR influxdb_adopt IN ("
        + ", ".join(f"'{a}'" for a in ADOPTIONS)
        + ")",
    )
    # Every row that exists now predates incarnations: its database, if any, is unmarked.
    op.execute("UPDATE tenants SET influxdb_adopt = 'unmarked'")
    op.add_column(
        "provisioning_attempts",
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("provisioning_attempts", "retry_at")
    op.drop_constraint("ck_tenants_influxdb_adopt", "tenants", type_="check")
    op.drop_column("tenants", "influxdb_retry_chain")
    op.drop_column("tenants", "influxdb_create_sent_to")
    op.drop_column("tenants", "influxdb_adopt")
    op.drop_column("tenants", "influxdb_incarnation")
