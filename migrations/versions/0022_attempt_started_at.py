"""``tenants.influxdb_attempt_started_at``: when the attempt under way started, until its run ends

A provisioning run holds the tenant's lock in its Postgres session. When that session is cut
(a failover, a network cut) the lock goes with it, but the run goes on, inside its create or
its marker write, until the task's time limit ends it. A deletion that took the lock then
could finish first, and the run's late call would make the database again, with no tenant to
own it. So an attempt's start records when it started, and its end clears it - also when a
deletion asked for meanwhile refuses the outcome, since the run's session is alive to say so -
or puts back the start it replaced (a run that lost its session while another ran).
A deletion waits until that start plus the time limit while it is set: only a run that lost
its session leaves it behind.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tenants",
        sa.Column("influxdb_attempt_started_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("tenants", "influxdb_attempt_started_at")
