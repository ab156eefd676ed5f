"""where each tenant's database is, versioned for the data plane; strays and orphans seen

``tenant_locations``: one row per tenant (and a tombstone for a while after its deletion),
kept by a trigger on ``tenants`` in the transaction of the change, so no path can change a
tenant's server, state or incarnation without its location changing too. The change waits in
the row's ``next_*`` columns (``pending``) while the published ones stay readable;
``worker.locations.publish`` copies every pending change over with the next number of
``tenant_location_version``, in one step serialized by an advisory lock, after the change
committed. So versions are handed out in the order changes became visible, and a reader that
has seen version V has seen every change numbered below V: a client asking for the changes
since V misses none (numbers taken inside the writers' transactions would commit out of
order). ``tenant_location_map``: the highest version of a tombstone pruned so far (a client
behind it must load the whole map again) and the map's epoch (another database: reload).

``tenants.influxdb_delete_after``: when a deletion may delete the database - its tombstone
published plus the clients' maximum staleness - so that no writer still holding the old
location re-creates it.

``influxdb_strays``: what the reconciler's listings showed that nobody placed - a tenant's
database on a server that is not its home (stray: misrouted or stale writes), or a
``telemetry_*`` database of no tenant (orphan). Reported, never deleted.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE FUNCTION tenants_track_location() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.influxdb_state IS NOT DISTINCT FROM OLD.influxdb_state
       AND NEW.influxdb_node IS NOT DISTINCT FROM OLD.influxdb_node
       AND NEW.influxdb_incarnation IS NOT DISTINCT FROM OLD.influxdb_incarnation THEN
        RETURN NULL;
    END IF;
    -- The change waits in the next_* columns; the published ones stay readable until the
    -- publish step copies it over with its version.
    IF TG_OP = 'DELETE' THEN
        INSERT INTO tenant_locations AS known
            (tenant_id, next_state, next_node, next_incarnation, next_deleted, pending,
             changed_at)
        VALUES (OLD.tenant_id, NULL, NULL, OLD.influxdb_incarnation, true, true,
                clock_timestamp())
        ON CONFLICT (tenant_id) DO UPDATE
        SET next_state = NULL, next_node = NULL, next_incarnation = excluded.next_incarnation,
            next_deleted = true, pending = true, changed_at = excluded.changed_at;
    ELSE
        INSERT INTO tenant_locations AS known
            (tenant_id, next_state, next_node, next_incarnation, next_deleted, pending,
             changed_at)
        VALUES (NEW.tenant_id, NEW.influxdb_state, NEW.influxdb_node, NEW.influxdb_incarnation,
                false, true, clock_timestamp())
        ON CONFLICT (tenant_id) DO UPDATE
        SET next_state = excluded.next_state, next_node = excluded.next_node,
            next_incarnation = excluded.next_incarnation, next_deleted = false,
            pending = true, changed_at = excluded.changed_at;
    END IF;
    RETURN NULL;
END
$$
"""
TRIGGER = """
CREATE TRIGGER tenants_track_location
AFTER INSERT OR DELETE OR UPDATE OF influxdb_state, influxdb_node, influxdb_incarnation
ON tenants FOR EACH ROW EXECUTE FUNCTION tenants_track_location()
"""


def upgrade() -> None:
    # A deletion deletes the database only after this: its tombstone published, plus the
    # clients' maximum staleness (worker.deprovisioning).
    op.add_column("tenants", sa.Column("influxdb_delete_after", sa.DateTime(timezone=True)))
    op.execute("CREATE SEQUENCE tenant_location_version AS bigint")
    op.create_table(
        "tenant_locations",
        sa.Column("tenant_id", sa.Text(), primary_key=True),
        # Published: what readers see, at ``version`` (NULL: never published yet).
        sa.Column("state", sa.Text(), nullable=True),  # NULL on a tombstone
        sa.Column("node", sa.Text(), nullable=True),
        sa.Column("incarnation", sa.Text(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("version", sa.BigInteger(), nullable=True),
        # The latest change, waiting for the publish step while ``pending``.
        sa.Column("next_state", sa.Text(), nullable=True),
        sa.Column("next_node", sa.Text(), nullable=True),
        sa.Column("next_incarnation", sa.Text(), nullable=True),
        sa.Column("next_deleted", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("pending", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
    )
    op.create_index("ix_tenant_locations_version", "tenant_locations", ["version"], unique=True)
    op.create_index(
        "ix_tenant_locations_unpublished",
        "tenant_locations",
        ["changed_at"],
        postgresql_where=sa.text("pending"),
    )
    op.create_index(
        "ix_tenant_locations_tombstones",
        "tenant_locations",
        ["changed_at"],
        postgresql_where=sa.text("deleted"),
    )
    op.create_table(
        "tenant_location_map",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("horizon", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        # Which map this is: a client holding another's (a restored database) loads it whole.
        sa.Column(
            "epoch", sa.Text(), nullable=False, server_default=sa.text("gen_random_uuid()::text")
        ),
        sa.CheckConstraint("id = 1", name="ck_tenant_location_map_single_row"),
    )
    op.execute("INSERT INTO tenant_location_map (id, horizon) VALUES (1, 0)")
    # No tenant changes between the copy and the trigger: writers wait for the migration.
    op.execute("LOCK TABLE tenants IN SHARE ROW EXCLUSIVE MODE")
    # The tenants as they are: published at once, in id order.
    op.execute(
        "INSERT INTO tenant_locations (tenant_id, state, node, incarnation, version, next_state, "
        "next_node, next_incarnation) "
        "SELECT tenant_id, influxdb_state, influxdb_node, influxdb_incarnation, "
        "nextval('tenant_location_version'), influxdb_state, influxdb_node, influxdb_incarnation "
        "FROM (SELECT * FROM tenants ORDER BY tenant_id) t"
    )
    op.execute(FUNCTION)
    op.execute(TRIGGER)

    op.create_table(
        "influxdb_strays",
        sa.Column("node", sa.Text(), primary_key=True),
        sa.Column("database", sa.Text(), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False),  # stray | orphan
        sa.Column("tenant_id", sa.Text(), nullable=True),  # a stray's tenant
        sa.Column("home_node", sa.Text(), nullable=True),  # that tenant's server, if any
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('stray', 'orphan')", name="ck_influxdb_strays_kind"),
    )


def downgrade() -> None:
    op.drop_table("influxdb_strays")
    op.execute("DROP TRIGGER tenants_track_location ON tenants")
    op.execute("DROP FUNCTION tenants_track_location()")
    op.drop_table("tenant_location_map")
    op.drop_table("tenant_locations")
    op.execute("DROP SEQUENCE tenant_location_version")
    op.drop_column("tenants", "influxdb_delete_after")
