"""``influxdb_nodes.refused_limit``: the database limit a server named when it refused one (422)

A nodes file can overstate a server's limit (InfluxDB 3 Core's is 5, whatever the file says).
Then each reconcile run that lists fewer databases than the file's limit clears the server's
full mark and sends a waiting tenant there, to be refused again. The server cannot tell that
apart from a server full for a while, so nothing is held back; instead the limit it named in
its 422 ("would exceed limit of 5 databases") is kept and shown to operators (``tenantctl
nodes``, the console's overview) where the file says more. It is forgotten when the nodes file
changes that server's limit, or when a listing sees more databases than it (raised since).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("influxdb_nodes", sa.Column("refused_limit", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("influxdb_nodes", "refused_limit")
