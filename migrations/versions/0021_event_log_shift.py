"""the event log's order survives restores: a shift added to its xids

The global order of the log is ``(xid, id)``, the writing transaction's id (migration 0011), and
a reader returns the events below its snapshot's xmin. Transaction ids are the cluster's and
its history's, and a restore breaks them two ways:

- A dump restored into another cluster (a move to a new server, an upgrade by dump and
  restore) brings ids far ahead of the new cluster's counter. The restored events were not
  served until the counter passed them, the new ones sorted before them, and every cursor kept
  across the restore (the webhook fan-out's, a client's) was ahead of the log: the fan-out
  failed at each dispatch and the events written meanwhile were never sent.
- After a point-in-time recovery, or a failover to a replica that had not received the last
  transactions, the cluster hands out again the ids of the history it lost. A reader that had
  read events of that history holds a cursor among them: refused as ahead of the log at first,
  it then passed over the new events that took those ids.

Now an event's ``xid`` is the writing transaction's id plus the log's **shift**
(``tenant_event_clock.shift``, 0 until a restore), and the horizon is the snapshot's xmin plus
the same shift (``tenant_event_horizon()``): the argument of 0011 holds unchanged. A session,
at its first event or read of the horizon, compares the log with the cluster
(``tenant_event_check()``):

- a log holding an id (an event's, or a webhook endpoint's cursor) at or above the snapshot's
  xmax (and past the session's own transaction) plus the shift, which no transaction of this
  cluster can have written;
- a cluster (system identifier) or WAL timeline other than the one the clock last saw
  (``tenant_event_cluster()``).

Either way the shift grows by 2^40 (for a log ahead, to the log's newest id + 1 + 2^40: the
same for every session that checks the same log, whatever its snapshot): the ids the old
history handed out after the backup, held in readers' cursors, stay below every new event
(2^40 is years of ids at 10,000 a second), nothing waits for the counter, and a Postgres
WARNING says so. A shift that would pass 2^62 is refused with an error, not written. A failover that lost
nothing, or an upgrade by ``pg_upgrade``, only makes the ids jump.

The check runs as the role that migrated (SECURITY DEFINER, with a search path of our schema
and the caller's temporary schema last), so every writer - the UI's own role too - runs it with
no right on the clock, and is told the cluster's identity even where the server refuses its
functions to that writer. Its result is kept for the session (the
setting ``tenant_provisioner.event_shift``; a rollback takes it back), except on a server in
recovery, whose sessions may live on after a promotion: they check at every call. Two sessions
finding it at once agree (a row lock). A reader's check is not stored when its transaction
rolls back: the next session checks again, to the same shift, until a writer commits it (the
hourly prune commits it before deleting anything: the shift of a log ahead rests on its newest
id).

Not seen, as for the location map's epoch: a restore that starts no new timeline and leaves
the log behind the counter (a copy of the data directory started without recovery), events
written during a restore by sessions that outlive it, and, where the server refuses
``pg_control_system()`` to the role that migrated, a new cluster or timeline (only a log ahead
is seen there). The notification of 0012 carries
the shifted xid. A log whose shift is not 0 is not downgraded below this migration: new events
would sort before the shifted ones.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The cluster and its history: system identifier and WAL timeline. NULL where not known: on a
# server in recovery, or one that refuses the functions to the role that migrated.
CLUSTER = """
CREATE FUNCTION tenant_event_cluster() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF pg_is_in_recovery() THEN
        RETURN NULL;
    END IF;
    RETURN (pg_control_system()).system_identifier::text || '.'
        || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8);
EXCEPTION WHEN insufficient_privilege OR feature_not_supported THEN
    RETURN NULL;
END
$$
"""

# The check, once per session. It runs as the role that migrated (SECURITY DEFINER): every
# writer of events - the UI's own role too - can run it, needing no right on the clock, and is
# told the cluster's identity even where the server refuses its functions to that writer. Its
# search path (set below) names our schema and the caller's temporary one last: a caller's
# temporary table or function never stands in for ours.
CHECK = """
CREATE FUNCTION tenant_event_check() RETURNS numeric LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    here text;
    clock record;
    newest numeric;
    snap pg_snapshot;
    own numeric;
    ahead boolean;
    moved boolean;
    new_shift numeric;
BEGIN
    here := tenant_event_cluster();
    FOR i IN 1..2 LOOP
        IF i = 1 THEN
            SELECT c.shift, c.cluster INTO clock FROM tenant_event_clock c;
        ELSE  -- once more under the lock: another session may have moved it meanwhile
            SELECT c.shift, c.cluster INTO clock FROM tenant_event_clock c FOR UPDATE;
        END IF;
        IF NOT FOUND THEN  -- a restore that has not loaded the clock yet: nothing kept
            RETURN 0;
        END IF;
        -- The newest id the log has handed out: an event's, or a kept cursor's.
        newest := greatest(
            (SELECT max(xid)::text::numeric FROM tenant_events),
            (SELECT max(cursor_xid)::text::numeric FROM webhook_endpoints)
        );
        snap := pg_current_snapshot();
        own := pg_current_xact_id_if_assigned()::text::numeric;
        -- Every id of this cluster a snapshot can see is below its xmax, or is our own.
        ahead := coalesce(
            newest >= greatest(pg_snapshot_xmax(snap)::text::numeric, own + 1) + clock.shift,
            false
        );
        moved := here IS NOT NULL AND here IS DISTINCT FROM clock.cluster;
        EXIT WHEN NOT ahead AND NOT moved;
        CONTINUE WHEN i = 1;
        new_shift := clock.shift;
        IF ahead THEN
            -- Past the log's newest id whatever this cluster's ids (every id is at least 0):
            -- the same shift for every session that checks the same log.
            new_shift := newest + 1;
        END IF;
        IF ahead OR clock.cluster IS NOT NULL THEN
            -- Another cluster or another history: the ids the old one handed out after the
            -- backup, held in readers' cursors, stay below every new event.
            new_shift := new_shift + 1099511627776;  -- 2^40: the ids of years, at 10,000/s
            IF new_shift >= 4611686018427387904 THEN  -- 2^62: no restore we know of
                RAISE EXCEPTION 'the event log''s ids would be shifted to %: not shifting', new_shift;
            END IF;
            RAISE WARNING 'the event log''s ids are shifted by % more, to % (%): restored, '
                'failed over or upgraded; new events sort after every event and cursor of '
                'before', new_shift - clock.shift, new_shift,
                concat_ws(' and ', CASE WHEN ahead THEN 'the log is ahead of this cluster' END,
                    CASE WHEN moved THEN 'another cluster or WAL timeline' END);
        END IF;
        UPDATE tenant_event_clock SET shift = new_shift, cluster = coalesce(here, cluster),
            shifted_at = CASE WHEN new_shift <> clock.shift
                THEN clock_timestamp() ELSE shifted_at END;
        clock.shift := new_shift;
    END LOOP;
    -- Kept for the session, but on a server in recovery: its sessions may outlive a promotion,
    -- so they ask at every call. A rollback takes it back too.
    IF here IS NOT NULL OR NOT pg_is_in_recovery() THEN
        PERFORM set_config('tenant_provisioner.event_shift', clock.shift::text, false);
    END IF;
    RETURN clock.shift;
END
$$
"""

SHIFT = """
CREATE FUNCTION tenant_event_shift() RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
    known text := current_setting('tenant_provisioner.event_shift', true);
BEGIN
    IF known <> '' THEN
        RETURN known::numeric;
    END IF;
    RETURN tenant_event_check();
END
$$
"""

XID = """
CREATE FUNCTION tenant_event_xid() RETURNS xid8 LANGUAGE sql AS $$
    SELECT (pg_current_xact_id()::text::numeric + tenant_event_shift())::text::xid8
$$
"""

HORIZON = """
CREATE FUNCTION tenant_event_horizon() RETURNS xid8 LANGUAGE sql AS $$
    SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::numeric
        + tenant_event_shift())::text::xid8
$$
"""


def _notify(xid: str) -> str:
    return (
        "CREATE OR REPLACE FUNCTION tenant_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN PERFORM pg_notify('tenant_events', {xid}::text); RETURN NULL; END $$"
    )


def upgrade() -> None:
    op.create_table(
        "tenant_event_clock",
        sa.Column("only_row", sa.Boolean(), primary_key=True, server_default=sa.true()),
        sa.Column("shift", sa.Numeric(20, 0), nullable=False, server_default="0"),
        sa.Column("shifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cluster", sa.Text(), nullable=True),
        sa.CheckConstraint("only_row", name="ck_tenant_event_clock_one_row"),
    )
    op.execute(CLUSTER)
    op.execute("INSERT INTO tenant_event_clock (cluster) VALUES (tenant_event_cluster())")
    op.execute(CHECK)
    op.execute(
        "DO $$ BEGIN EXECUTE format('ALTER FUNCTION tenant_event_check() "
        "SET search_path = pg_catalog, %I, pg_temp', current_schema()); END $$"
    )
    op.execute(SHIFT)
    op.execute(XID)
    op.execute(HORIZON)
    op.execute("ALTER TABLE tenant_events ALTER COLUMN xid SET DEFAULT tenant_event_xid()")
    op.execute(_notify("tenant_event_xid()"))


def downgrade() -> None:
    # Without the shift, new events would sort before the shifted ones: cursors would skip them.
    op.execute(
        "DO $$ BEGIN IF (SELECT shift FROM tenant_event_clock) <> 0 THEN RAISE EXCEPTION "
        "'the event log''s ids are shifted (it was restored): below 0021 new "
        "events would sort before them; not downgrading'; END IF; END $$"
    )
    op.execute(_notify("pg_current_xact_id()"))
    op.execute("ALTER TABLE tenant_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id()")
    op.execute("DROP FUNCTION tenant_event_horizon()")
    op.execute("DROP FUNCTION tenant_event_xid()")
    op.execute("DROP FUNCTION tenant_event_shift()")
    op.execute("DROP FUNCTION tenant_event_check()")
    op.execute("DROP FUNCTION tenant_event_cluster()")
    op.drop_table("tenant_event_clock")
