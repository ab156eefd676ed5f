"""secrets of this deployment, made once and shared by every process through Postgres

``deployment_secrets``: random keys the API's processes must agree on without configuration -
the console's CSRF and session signing keys. The CSRF key used to be derived from the operator
token alone, which made the public sign-in form an offline oracle for guessing the token.
A row is created by the first process that needs it (``worker.db.deployment_secret``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployment_secrets",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("deployment_secrets")
