"""``influxdb_nodes.other_databases``: databases a server's last listing held beyond ours

A server's slots are taken by its databases, ours or not: made by hand, another tool's, a
stray of a misrouted write. Counted by our tenants alone, a deletion that freed one slot on a
server holding three of someone else's looked like room for four: waiting tenants were sent,
refused (422) and sent back to wait. Each reconcile run now records how many databases on a
server's list are not those of tenants placed there (``RunListings.ours_by_server``), and
placement and the un-wait count them as taken until the next listing.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("influxdb_nodes", sa.Column("other_databases", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("influxdb_nodes", "other_databases")
