"""a notification on channel ``tenant_events`` when a transaction that wrote events commits

Readers of the live stream (``GET /operator/events``, the console's timeline) ``LISTEN`` on
``tenant_events`` instead of polling the table. The table stays the truth: a notification only
says "look again"; its payload is the writing transaction's id (``pg_current_xact_id()``), the
same value as the events' ``xid``. Postgres delivers a notification only if its transaction
commits, after it commits, and folds identical ones of a transaction into one: one notification
per committing transaction that wrote events, however many it wrote.

A statement trigger on ``tenant_events`` (not a change to ``tenant_events_append``) so that
every insert, by whatever path, is announced.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "tenant_events"


def upgrade() -> None:
    op.execute(
        "CREATE FUNCTION tenant_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN PERFORM pg_notify('{CHANNEL}', pg_current_xact_id()::text); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER tenant_events_notify AFTER INSERT ON tenant_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION tenant_events_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tenant_events_notify ON tenant_events")
    op.execute("DROP FUNCTION tenant_events_notify()")
