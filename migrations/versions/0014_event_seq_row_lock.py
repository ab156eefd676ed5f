"""a tenant's event sequence is serialized by its row lock, not by an advisory lock per tenant

Migration 0011 handed out ``tenantseq`` under ``pg_advisory_xact_lock`` keyed on the tenant,
held until commit: one lock in Postgres' shared lock table per tenant a transaction touched. A
statement that changes many tenants at once - an ``INSERT ... SELECT`` of 100,000 tenants, an
``UPDATE`` over a server's tenants - then ran out of that table ("out of shared memory",
``max_locks_per_transaction``) and failed.

A row lock does the same work and costs no shared memory (it lives in the row): the trigger
``tenants_write_event`` runs for a row its statement has just inserted, updated or deleted, so
the transaction already holds that row's lock until commit, and any other writer of the tenant
waits for the commit before it reads the sequence. So the trigger takes no lock of its own
(``tenant_events_write``), and ``tenant_events_append`` - operator actions written by the
hooks - locks the tenant's row (``SELECT ... FOR UPDATE``), falling back to the advisory lock
only for a tenant that has no row (events of a deleted tenant).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Writes the event; the caller holds whatever serializes the tenant's sequence.
WRITE = """
CREATE FUNCTION tenant_events_write(
    p_tenant text, p_type text, p_data jsonb, p_route text DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    next_seq integer;
    written bigint;
BEGIN
    IF p_tenant IS NOT NULL THEN
        SELECT coalesce(max(seq), 0) + 1 INTO next_seq
        FROM tenant_events WHERE tenant_id = p_tenant;
    END IF;
    INSERT INTO tenant_events (tenant_id, seq, type, actor, route, data)
    VALUES (
        p_tenant,
        next_seq,
        p_type,
        nullif(current_setting('tenant_provisioner.actor', true), ''),
        coalesce(nullif(current_setting('tenant_provisioner.route', true), ''), p_route, 'worker'),
        coalesce(p_data, '{}'::jsonb)
    )
    RETURNING id INTO written;
    RETURN written;
END
$$
"""

APPEND = """
CREATE OR REPLACE FUNCTION tenant_events_append(
    p_tenant text, p_type text, p_data jsonb, p_route text DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    IF p_tenant IS NOT NULL THEN
        -- Held until commit: the tenant's next event waits, then reads this one's seq.
        PERFORM 1 FROM tenants WHERE tenant_id = p_tenant FOR UPDATE;
        IF NOT FOUND THEN  -- no row (a deleted tenant): the one lock of its own
            PERFORM pg_advisory_xact_lock(1702129518, hashtext(p_tenant));
        END IF;
    END IF;
    RETURN tenant_events_write(p_tenant, p_type, p_data, p_route);
END
$$
"""


# 0011's append, for the downgrade: the advisory lock, then the write, in one function.
APPEND_0011 = (
    WRITE.replace("tenant_events_write", "tenant_events_append", 1)
    .replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    .replace(
        "    IF p_tenant IS NOT NULL THEN\n        SELECT",
        "    IF p_tenant IS NOT NULL THEN\n"
        "        PERFORM pg_advisory_xact_lock(1702129518, hashtext(p_tenant));\n        SELECT",
        1,
    )
)


def _trigger_calls(old: str, new: str) -> str:
    """Re-create the trigger's function (as 0011 wrote it) calling ``new`` instead of ``old``."""
    return (
        "DO $$ BEGIN EXECUTE replace(pg_get_functiondef('tenants_write_event()'::regprocedure), "
        f"'PERFORM {old}(', 'PERFORM {new}('); END $$"
    )


def upgrade() -> None:
    op.execute(WRITE)
    op.execute(APPEND)
    op.execute(_trigger_calls("tenant_events_append", "tenant_events_write"))


def downgrade() -> None:
    op.execute(APPEND_0011)  # 0011's: the advisory lock, then the write
    op.execute(_trigger_calls("tenant_events_write", "tenant_events_append"))
    op.execute("DROP FUNCTION tenant_events_write(text, text, jsonb, text)")
