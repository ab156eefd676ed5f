"""tenants table with InfluxDB provisioning columns

Works on an empty database (creates ``tenants``) and on the UI's existing ``tenants`` table
(``tenant_id``, ``name``, ``status``, ``created_at``, with rows): only what is missing is added,
and existing tenants start ``pending`` so that the reconciler provisions them.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = ("pending", "provisioning", "retrying", "provisioned", "failed")
STATE_CHECK = "influxdb_state IN (" + ", ".join(f"'{s}'" for s in STATES) + ")"
TZ = sa.DateTime(timezone=True)

# The columns this worker owns; the UI's base columns are created only on an empty database.
PROVISIONING_COLUMNS = (
    ("influxdb_state", sa.Text(), sa.text("'pending'"), False),
    ("influxdb_attempts", sa.Integer(), sa.text("0"), False),
    ("influxdb_last_error", sa.Text(), None, True),
    ("influxdb_error_reason", sa.Text(), None, True),
    ("influxdb_next_attempt_at", TZ, None, True),
    ("influxdb_enqueued_at", TZ, None, True),
    ("influxdb_provisioned_at", TZ, None, True),
    ("influxdb_updated_at", TZ, sa.text("now()"), False),
)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("tenants"):
        op.create_table(
            "tenants",
            sa.Column("tenant_id", sa.Text(), primary_key=True),
            sa.Column("name", sa.Text(), nullable=False),
            sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'active'")),
            sa.Column("created_at", TZ, nullable=True, server_default=sa.text("now()")),
        )
        existing: set[str] = set()
    else:
        existing = {column["name"] for column in inspector.get_columns("tenants")}

    for name, type_, default, nullable in PROVISIONING_COLUMNS:
        if name not in existing:
            # A server default fills the existing rows: they start pending, 0 attempts.
            op.add_column(
                "tenants", sa.Column(name, type_, nullable=nullable, server_default=default)
            )

    constraints = {c["name"] for c in inspector.get_check_constraints("tenants")}
    if "ck_tenants_influxdb_state" not in constraints:
        op.create_check_constraint("ck_tenants_influxdb_state", "tenants", STATE_CHECK)
    indexes = {i["name"] for i in inspector.get_indexes("tenants")}
    if "ix_tenants_influxdb_state" not in indexes:
        op.create_index("ix_tenants_influxdb_state", "tenants", ["influxdb_state", "tenant_id"])


def downgrade() -> None:
    # Removes only what this revision may have added; the UI's own columns and rows stay.
    op.drop_index("ix_tenants_influxdb_state", table_name="tenants")
    op.drop_constraint("ck_tenants_influxdb_state", "tenants", type_="check")
    for name, *_ in reversed(PROVISIONING_COLUMNS):
        op.drop_column("tenants", name)
