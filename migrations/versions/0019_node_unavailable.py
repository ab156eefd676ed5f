"""``influxdb_nodes.unavailable_since``: a server that did not answer us, or refused our token

Set when a reconcile listing of the server fails, or when a create there is refused for our
token (401) or cannot connect; cleared by the next listing that succeeds. Placement puts a new
tenant on such a server only when no answering server has room, and the reconciler ends
capacity waits only for room on answering servers: a server with a wrong token no longer takes
every new tenant while its neighbours have room. The room index leads with the mark, so the
least-used answering server is still the index's first row.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROOM = "configured AND full_since IS NULL"


def upgrade() -> None:
    op.add_column(
        "influxdb_nodes", sa.Column("unavailable_since", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("influxdb_nodes", sa.Column("unavailable_reason", sa.Text(), nullable=True))
    op.drop_index("ix_influxdb_nodes_room", table_name="influxdb_nodes")
    op.create_index(
        "ix_influxdb_nodes_room",
        "influxdb_nodes",
        [sa.text("(unavailable_since IS NOT NULL)"), "placed", "name"],
        postgresql_where=sa.text(_ROOM),
    )


def downgrade() -> None:
    op.drop_index("ix_influxdb_nodes_room", table_name="influxdb_nodes")
    op.create_index(
        "ix_influxdb_nodes_room",
        "influxdb_nodes",
        ["placed", "name"],
        postgresql_where=sa.text(_ROOM),
    )
    op.drop_column("influxdb_nodes", "unavailable_reason")
    op.drop_column("influxdb_nodes", "unavailable_since")
