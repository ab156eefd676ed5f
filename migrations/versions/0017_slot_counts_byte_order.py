"""the slot trigger takes servers' rows in byte order, and a count never goes below zero

``tenants_count_slots`` (migration 0007) took the two servers' rows of a move in the
database's collation order, while every other write of several servers' rows
(``worker.placement.lock_nodes``, ``sync_nodes``, ``record_observations``) takes them in
Python's order, by code point. Under a locale such as en_US.utf8 the two disagree for names
that differ in case (``Beta`` before ``alpha`` by code point, after it by the locale): two
writes could then take the same two rows in opposite orders and deadlock. The trigger now
orders by ``COLLATE "C"``, byte order, which for the names the nodes file allows is code-point
order.

A server's row written before the move that frees its slot (``lock_nodes`` writes a missing
row with a count of 0, after a restore or a truncate emptied the table) went to -1; the count
now stops at 0 (``repair_counts`` recounts it from the tenants anyway).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Migration 0007's function with its ORDER and COUNT in place of the two that change.
_FUNCTION = """
CREATE OR REPLACE FUNCTION tenants_count_slots() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    freed text := CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN OLD.influxdb_node END;
    taken text := CASE WHEN TG_OP IN ('UPDATE', 'INSERT') THEN NEW.influxdb_node END;
    node text;
BEGIN
    IF freed IS NOT DISTINCT FROM taken THEN
        RETURN NULL;
    END IF;
    -- Name order: two transactions moving slots between the same servers never deadlock.
    FOR node IN SELECT n FROM unnest(ARRAY[freed, taken]) AS n WHERE n IS NOT NULL ORDER
    LOOP
        INSERT INTO influxdb_nodes AS known (name, placed)
        VALUES (node, CASE WHEN node = taken THEN 1 ELSE 0 END)
        ON CONFLICT (name) DO UPDATE
        SET placed = COUNT;
    END LOOP;
    RETURN NULL;
END
$$
"""


def _function(order: str, count: str) -> str:
    return _FUNCTION.replace(" ORDER\n", f" {order}\n").replace("= COUNT;", f"= {count};")


def upgrade() -> None:
    # Byte order, as the workers sort names; a freed slot never counts below zero.
    count = "GREATEST(known.placed + CASE WHEN node = taken THEN 1 ELSE -1 END, 0)"
    op.execute(_function('ORDER BY n COLLATE "C"', count))


def downgrade() -> None:
    count = "known.placed + CASE WHEN node = taken THEN 1 ELSE -1 END"
    op.execute(_function("ORDER BY n", count))
