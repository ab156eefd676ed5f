"""per-server slot counts, kept by a trigger in the transaction that takes or frees a slot

``influxdb_nodes.placed``: tenants holding a slot on the server. Placement read this with a
``GROUP BY`` over every placed tenant under one global lock; it now reads one row per server and
locks only the server it reserves on, so its cost does not grow with the fleet and placements on
different servers do not wait for each other. The count is kept by a trigger on ``tenants``
(insert, delete, and updates of ``influxdb_node``), so every path that takes or frees a slot
keeps it exact, in its own transaction; two servers' rows are always locked in name order. The
reconciler compares it with the real count and repairs it (``worker.placement.repair_counts``).
Filled here from the tenants as they are. ``configured`` and ``database_limit`` mirror the nodes
file (written by placement when the file changes), so the least-used nodes with room are read
through ``ix_influxdb_nodes_room`` - the first few rows of an index - whatever the number of
servers.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE FUNCTION tenants_count_slots() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    freed text := CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN OLD.influxdb_node END;
    taken text := CASE WHEN TG_OP IN ('UPDATE', 'INSERT') THEN NEW.influxdb_node END;
    node text;
BEGIN
    IF freed IS NOT DISTINCT FROM taken THEN
        RETURN NULL;
    END IF;
    -- Name order: two transactions moving slots between the same servers never deadlock.
    FOR node IN SELECT n FROM unnest(ARRAY[freed, taken]) AS n WHERE n IS NOT NULL ORDER BY n
    LOOP
        INSERT INTO influxdb_nodes AS known (name, placed)
        VALUES (node, CASE WHEN node = taken THEN 1 ELSE 0 END)
        ON CONFLICT (name) DO UPDATE
        SET placed = known.placed + CASE WHEN node = taken THEN 1 ELSE -1 END;
    END LOOP;
    RETURN NULL;
END
$$
"""
TRIGGER = """
CREATE TRIGGER tenants_count_slots
AFTER INSERT OR DELETE OR UPDATE OF influxdb_node ON tenants
FOR EACH ROW EXECUTE FUNCTION tenants_count_slots()
"""


def upgrade() -> None:
    op.add_column(
        "influxdb_nodes",
        sa.Column("placed", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "influxdb_nodes",
        sa.Column("configured", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )
    op.add_column("influxdb_nodes", sa.Column("database_limit", sa.Integer(), nullable=True))
    op.create_index(
        "ix_influxdb_nodes_room",
        "influxdb_nodes",
        ["placed", "name"],
        postgresql_where=sa.text("configured AND full_since IS NULL"),
    )
    op.execute(
        "INSERT INTO influxdb_nodes AS known (name, placed) "
        "SELECT influxdb_node, count(*) FROM tenants WHERE influxdb_node IS NOT NULL "
        "GROUP BY influxdb_node "
        "ON CONFLICT (name) DO UPDATE SET placed = excluded.placed"
    )
    op.execute(FUNCTION)
    op.execute(TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER tenants_count_slots ON tenants")
    op.execute("DROP FUNCTION tenants_count_slots()")
    op.drop_index("ix_influxdb_nodes_room", table_name="influxdb_nodes")
    op.drop_column("influxdb_nodes", "database_limit")
    op.drop_column("influxdb_nodes", "configured")
    op.drop_column("influxdb_nodes", "placed")
