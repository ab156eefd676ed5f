"""``tenant.deprovisioned`` says where a database of the tenant's name was left in place

A deletion deletes the tenant's own database only: one of its name that is not its own (another
tenant's, made by hand, made by a writer after an earlier deletion) stays where it is. The event
said nothing of it, and its readers (webhooks, the console) took the data for deleted. The
deletion run now names those servers in the transaction that removes the row (the setting
``tenant_provisioner.kept_on``, local to it), and the trigger puts them in the event's data as
``kept_on``; absent when nothing was left.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The DELETE branch of tenants_write_event() as 0011 wrote it, and with kept_on.
BEFORE = """            'incarnation', OLD.influxdb_incarnation
        )));"""
AFTER = """            'incarnation', OLD.influxdb_incarnation,
            'kept_on', nullif(current_setting('tenant_provisioner.kept_on', true), '')
        )));"""


def _rewrite(old: str, new: str) -> str:
    """Re-create the trigger's function with ``old`` replaced by ``new``; fails if not found."""
    old_sql, new_sql = ("'" + text.replace("'", "''") + "'" for text in (old, new))
    return f"""
DO $$
DECLARE
    body text := pg_get_functiondef('tenants_write_event()'::regprocedure);
    changed text := replace(body, {old_sql}, {new_sql});
BEGIN
    IF changed = body THEN
        RAISE EXCEPTION 'tenants_write_event(): its DELETE branch is not as expected';
    END IF;
    EXECUTE changed;
END $$
"""


def upgrade() -> None:
    op.execute(_rewrite(BEFORE, AFTER))


def downgrade() -> None:
    op.execute(_rewrite(AFTER, BEFORE))
