"""console sessions kept server-side, so that they can end

A console cookie used to be a signed expiry: sign-out only asked the browser to forget it, and
a copy taken before still worked for up to CONSOLE_SESSION_MINUTES. Now the cookie carries a
random session id (signed); this table holds its SHA-256 with its times, and a session is
valid only while its row says so: not ended (sign-out, ``tenantctl sessions --end``), not past
its lifetime, and used within CONSOLE_SESSION_IDLE_MINUTES. Times are Postgres'.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.LargeBinary(), primary_key=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.Text(), nullable=True),
        sa.CheckConstraint("octet_length(id_hash) = 32", name="console_sessions_id_hash_sha256"),
    )


def downgrade() -> None:
    op.drop_table("console_sessions")
