"""``influxdb_nodes.refused_limit``: the database limit a server named when it refused one (422)

A nodes file can overstate a server's limit (InfluxDB 3 Core's is 5, whatever the file says).
Before, a listing that saw fewer databases than the file's limit cleared the full mark, the
oldest waiting tenant was sent there, refused again, and so on once per reconcile run. Now the
limit the server named in its 422 ("would exceed limit of 5 databases") bounds the server with
the file's: placement, the un-wait and the listing's full mark read the lower of the two until
``refused_until``. Named once, it goes at the next listing (a refusal may be passing); named
again after that, it holds 1, 3, 7 ... reconcile intervals, at most 63 (``refusals`` counts
the times); a server whose limit was raised is tried again by then. A change of that server's
limit in the nodes file forgets it at once.

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
    op.add_column(
        "influxdb_nodes", sa.Column("refused_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "influxdb_nodes",
        sa.Column("refusals", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("influxdb_nodes", "refusals")
    op.drop_column("influxdb_nodes", "refused_until")
    op.drop_column("influxdb_nodes", "refused_limit")
