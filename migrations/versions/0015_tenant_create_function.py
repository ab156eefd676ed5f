"""a new tenant and its audit event in one statement: ``tenant_create``

``create_tenant`` named who acts, inserted the row and appended ``operator.created`` as three
statements in a transaction of their own: with ``BEGIN`` and ``COMMIT``, five round trips to
Postgres while the request waited, and most of its cost above the old inline write. This
function does the same three steps, in the same order, inside one statement: called in
autocommit, it is one round trip and one transaction. The order matters and is kept: the
row's trigger writes ``tenant.created`` when the insert ends, then ``operator.created``
follows with the next ``seq``, and both carry the actor and route set first. A tenant that
exists raises ``unique_violation`` and writes nothing, as the insert did.

The row's values are those ``worker.store.create`` wrote: ``active``, ``pending``, queued now
(the request publishes right after the commit; the reconciler covers a publish that fails).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE = """
CREATE FUNCTION tenant_create(
    p_tenant text, p_name text, p_retention text, p_actor text, p_route text, p_data jsonb
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- For this transaction's events, the trigger's included (events.acting does the same).
    PERFORM set_config('tenant_provisioner.actor', p_actor, true),
            set_config('tenant_provisioner.route', p_route, true);
    INSERT INTO tenants (
        tenant_id, name, status, influxdb_state, influxdb_retention_period, influxdb_enqueued_at
    ) VALUES (p_tenant, p_name, 'active', 'pending', p_retention, now());
    PERFORM tenant_events_append(p_tenant, 'operator.created', p_data);
END
$$
"""


def upgrade() -> None:
    op.execute(CREATE)


def downgrade() -> None:
    op.execute("DROP FUNCTION tenant_create(text, text, text, text, text, jsonb)")
