"""whether the webhooks worker could read its webhooks file: ``webhook_config``

A webhooks file (``WEBHOOKS_FILE``) that cannot be used - invalid JSON, a bad URL or secret, a
secret file that cannot be read - stops every delivery. That was written to the webhooks
worker's log only: ``tenantctl webhooks``, the console and ``/metrics`` still showed each
endpoint ``ok`` while nothing was sent, and no alert fired (nothing waited: the fan-out did not
run either). One row now says so: ``error`` (the message, which names the file and the entry,
never a secret; NULL: the file was read), ``since`` (when that became so), written by the
dispatch only when it changes.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_config",
        # One row at most: its key can only be true.
        sa.Column("only_row", sa.Boolean(), primary_key=True, server_default=sa.text("true")),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("only_row", name="ck_webhook_config_one_row"),
    )


def downgrade() -> None:
    op.drop_table("webhook_config")
