"""node pool placement, per-tenant retention, deprovisioning

``tenants.influxdb_node`` is the server holding the tenant's database (a reserved slot while
set); ``influxdb_retention_period`` is passed at creation. Two new states:
``waiting_for_capacity`` (no server has room) and ``deprovisioning``. ``influxdb_nodes`` keeps
what we learned about each server: marked full by a 422, databases seen by the reconciler.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATES = ("pending", "provisioning", "retrying", "provisioned", "failed")
NEW_STATES = (*OLD_STATES, "waiting_for_capacity", "deprovisioning")
TZ = sa.DateTime(timezone=True)


def _state_check(states: tuple[str, ...]) -> str:
    return "influxdb_state IN (" + ", ".join(f"'{s}'" for s in states) + ")"


def upgrade() -> None:
    op.add_column("tenants", sa.Column("influxdb_node", sa.Text(), nullable=True))
    op.add_column("tenants", sa.Column("influxdb_retention_period", sa.Text(), nullable=True))
    op.create_index("ix_tenants_influxdb_node", "tenants", ["influxdb_node"])
    op.drop_constraint("ck_tenants_influxdb_state", "tenants", type_="check")
    op.create_check_constraint("ck_tenants_influxdb_state", "tenants", _state_check(NEW_STATES))
    op.create_table(
        "influxdb_nodes",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("full_since", TZ, nullable=True),
        sa.Column("observed_databases", sa.Integer(), nullable=True),
        sa.Column("observed_at", TZ, nullable=True),
    )


def downgrade() -> None:
    # The older schema has no "deprovisioning": turning those tenants into anything it knows
    # would bring deleted tenants back (pending) or hide unfinished deletions. Refuse instead.
    deleting = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT tenant_id FROM tenants WHERE influxdb_state = 'deprovisioning' "
                "ORDER BY tenant_id LIMIT 6"
            )
        )
        .scalars()
        .all()
    )
    if deleting:
        shown = ", ".join(deleting[:5]) + (", ..." if len(deleting) > 5 else "")
        raise RuntimeError(
            f"cannot downgrade below 0003 while tenants are being deleted ({shown}): "
            "let the worker finish the deletions (tenantctl list --state deprovisioning), "
            "then downgrade"
        )
    op.drop_table("influxdb_nodes")
    # Waiting for capacity is owed work: the older worker provisions it as pending.
    op.execute(
        "UPDATE tenants SET influxdb_state = 'pending' "
        "WHERE influxdb_state = 'waiting_for_capacity'"
    )
    op.drop_constraint("ck_tenants_influxdb_state", "tenants", type_="check")
    op.create_check_constraint("ck_tenants_influxdb_state", "tenants", _state_check(OLD_STATES))
    op.drop_index("ix_tenants_influxdb_node", table_name="tenants")
    op.drop_column("tenants", "influxdb_retention_period")
    op.drop_column("tenants", "influxdb_node")
