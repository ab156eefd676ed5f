"""The Alembic migration on an empty database and over the UI's existing ``tenants`` table."""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from harness import databases

PROVISIONING_COLUMNS = {
    "influxdb_state",
    "influxdb_attempts",
    "influxdb_last_error",
    "influxdb_error_reason",
    "influxdb_next_attempt_at",
    "influxdb_enqueued_at",
    "influxdb_provisioned_at",
    "influxdb_updated_at",
    "influxdb_node",
    "influxdb_retention_period",
    "influxdb_incarnation",
    "influxdb_adopt",
    "influxdb_create_sent_to",
    "influxdb_retry_chain",
    "influxdb_delete_after",
    "influxdb_attempt_started_at",
}


def alembic_unchecked(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}"}
    return databases.alembic(*args, env=env)


def alembic(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = alembic_unchecked(database, *args)
    assert result.returncode == 0, result.stderr
    return result


def columns(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'tenants'"
    ).fetchall()
    return {r[0] for r in rows}


def test_migration_creates_the_table_on_an_empty_database(scratch_database):
    alembic(scratch_database, "upgrade", "head")
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{scratch_database}") as conn:
        assert columns(conn) == {"tenant_id", "name", "status", "created_at"} | PROVISIONING_COLUMNS
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO tenants (tenant_id, name, influxdb_state) VALUES ('a', 'a', 'bogus')"
            )


def test_migration_over_the_uis_existing_tenants_table(scratch_database):
    # Given the UI's table, with tenants and naive timestamps, as it exists today
    dsn = f"postgresql://postgres@127.0.0.1:5432/{scratch_database}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tenants (tenant_id text PRIMARY KEY, name text NOT NULL, "
            "status text NOT NULL, created_at timestamp NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO tenants VALUES ('acme', 'Acme', 'active', '2026-01-02 03:04:05'), "
            "('globex', 'Globex', 'suspended', '2026-02-03 04:05:06')"
        )

    # When the migration runs (twice: the second is a no-op)
    alembic(scratch_database, "upgrade", "head")
    alembic(scratch_database, "upgrade", "head")

    # Then only the provisioning columns were added, and existing tenants start pending
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert columns(conn) == {"tenant_id", "name", "status", "created_at"} | PROVISIONING_COLUMNS
        rows = conn.execute(
            "SELECT tenant_id, name, status, created_at::text, influxdb_state, influxdb_attempts, "
            "influxdb_enqueued_at FROM tenants ORDER BY tenant_id"
        ).fetchall()
        assert rows == [
            ("acme", "Acme", "active", "2026-01-02 03:04:05", "pending", 0, None),
            ("globex", "Globex", "suspended", "2026-02-03 04:05:06", "pending", 0, None),
        ]
        # The UI's column type is left as it was
        kind = conn.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'tenants' AND column_name = 'created_at'"
        ).fetchone()
        assert kind == ("timestamp without time zone",)

    # And a downgrade removes only what the migration added, keeping the UI's data
    alembic(scratch_database, "downgrade", "base")
    with psycopg.connect(dsn) as conn:
        assert columns(conn) == {"tenant_id", "name", "status", "created_at"}
        assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (2,)


def test_downgrade_below_0003_keeps_deletions_deletions(scratch_database):
    # Given a database at head with a tenant being deleted and one waiting for capacity
    alembic(scratch_database, "upgrade", "head")
    dsn = f"postgresql://postgres@127.0.0.1:5432/{scratch_database}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenants (tenant_id, name, influxdb_state) VALUES "
            "('leaving', 'l', 'deprovisioning'), ('waiting', 'w', 'waiting_for_capacity')"
        )

    # When an operator downgrades below 0003, which has no deprovisioning state
    refused = alembic_unchecked(scratch_database, "downgrade", "0002")

    # Then the downgrade refuses, naming the tenant, and nothing changed
    assert refused.returncode != 0
    assert "being deleted (leaving)" in refused.stderr
    with psycopg.connect(dsn) as conn:
        states = dict(conn.execute("SELECT tenant_id, influxdb_state FROM tenants").fetchall())
    assert states == {"leaving": "deprovisioning", "waiting": "waiting_for_capacity"}

    # And once the deletion is done, the downgrade goes through; waiting becomes pending
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM tenants WHERE tenant_id = 'leaving'")
    alembic(scratch_database, "downgrade", "0002")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT influxdb_state FROM tenants").fetchall() == [("pending",)]


def test_rows_that_predate_the_worker_are_marked_for_adoption(scratch_database):
    # Given rows made before migration 0004 (at 0003)
    alembic(scratch_database, "upgrade", "0003")
    dsn = f"postgresql://postgres@127.0.0.1:5432/{scratch_database}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ('a', 'a'), ('b', 'b')")

    # When 0004 runs, each gets its own incarnation and is adopted where its database is found
    alembic(scratch_database, "upgrade", "head")
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT influxdb_incarnation, influxdb_adopt FROM tenants").fetchall()
        assert {adopt for _, adopt in rows} == {"unmarked"}
        assert len({incarnation for incarnation, _ in rows}) == 2
        # and rows made afterwards are new tenants: strict identity, a fresh incarnation
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ('c', 'c')")
        new = conn.execute(
            "SELECT influxdb_incarnation, influxdb_adopt FROM tenants WHERE tenant_id = 'c'"
        ).fetchone()
        assert new[0] and new[1] is None


def dsn_of(database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{database}"


# -- 0011, the event log ------------------------------------------------------------------


def test_the_migration_records_every_existing_tenant_and_downgrades_cleanly(scratch_database):
    alembic(scratch_database, "upgrade", "0010")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node) VALUES "
            "('a', 'a', 'provisioned', 'alpha'), ('b', 'b', 'failed', NULL)"
        )
    alembic(scratch_database, "upgrade", "head")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tenant_id, seq, type, route, data->>'state' FROM tenant_events "
            "ORDER BY tenant_id"
        ).fetchall()
        assert rows == [
            ("a", 1, "tenant.imported", "migration", "provisioned"),
            ("b", 1, "tenant.imported", "migration", "failed"),
        ]
        conn.execute("UPDATE tenants SET influxdb_state = 'pending' WHERE tenant_id = 'b'")
        assert conn.execute(
            "SELECT seq, type FROM tenant_events WHERE tenant_id = 'b' ORDER BY seq DESC LIMIT 1"
        ).fetchone() == (2, "tenant.resumed")
        # the model says what the migration made
        columns = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'tenant_events'"
            ).fetchall()
        )
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'tenant_events'"
            ).fetchall()
        }
    from worker.models import tenant_events  # noqa: PLC0415

    assert set(columns) == {c.name for c in tenant_events.columns}
    assert columns["xid"] == "xid8" and columns["data"] == "jsonb"
    assert {i.name for i in tenant_events.indexes} | {
        "tenant_events_pkey",
        "uq_tenant_events_tenant_seq",
    } == indexes

    alembic(scratch_database, "downgrade", "0010")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('tenant_events')").fetchone() == (None,)
        conn.execute("UPDATE tenants SET influxdb_state = 'failed' WHERE tenant_id = 'b'")


# -- 0013, webhooks -----------------------------------------------------------------------


def test_the_webhook_tables_come_and_go_with_their_migration(scratch_database):
    alembic(scratch_database, "upgrade", "head")
    tables = ("webhook_endpoints", "webhook_deliveries", "webhook_lanes")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        for table in tables:
            assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (table,)
        # An endpoint's deliveries and lanes go with it; one event is one delivery per endpoint
        conn.execute(
            "INSERT INTO webhook_endpoints (name, url, cursor_xid, created_at) "
            "VALUES ('ui', 'https://ui.example/hooks', '7', now())"
        )
        delivery = (
            "INSERT INTO webhook_deliveries (endpoint, event_id, tenant_id, seq, type, payload, "
            "next_attempt_at, created_at) VALUES ('ui', '7-1', 'a', 1, 't', '{}', now(), now())"
        )
        conn.execute(delivery)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(delivery)
        conn.execute("INSERT INTO webhook_lanes VALUES ('ui', 'a', 1)")
        conn.execute("DELETE FROM webhook_endpoints")
        assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM webhook_lanes").fetchone() == (0,)

    alembic(scratch_database, "downgrade", "0012")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        for table in tables:
            assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)
    alembic(scratch_database, "upgrade", "head")


# -- 0016, the webhooks file's status -------------------------------------------------------


def test_the_webhooks_file_status_is_one_row_and_goes_with_its_migration(scratch_database):
    alembic(scratch_database, "upgrade", "head")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        conn.execute("INSERT INTO webhook_config (error, since) VALUES ('bad', now())")
        with pytest.raises(psycopg.errors.UniqueViolation):  # one row at most
            conn.execute("INSERT INTO webhook_config (error, since) VALUES ('worse', now())")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO webhook_config VALUES (false, 'other', now())")

    alembic(scratch_database, "downgrade", "0015")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('webhook_config')").fetchone() == (None,)
    alembic(scratch_database, "upgrade", "head")


# -- 0017, the slot trigger in byte order, never below zero -------------------------------


def test_the_slot_trigger_orders_servers_by_byte_and_goes_with_its_migration(scratch_database):
    function = "SELECT pg_get_functiondef('tenants_count_slots'::regproc)"
    alembic(scratch_database, "upgrade", "head")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        body = conn.execute(function).fetchone()[0]
        assert 'ORDER BY n COLLATE "C"' in body
        assert "GREATEST(" in body

    alembic(scratch_database, "downgrade", "0016")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        body = conn.execute(function).fetchone()[0]
        assert 'COLLATE "C"' not in body
        assert "GREATEST(" not in body
        assert "ORDER BY n" in body
    alembic(scratch_database, "upgrade", "head")


# -- 0018, 'remade': a database deleted behind our back, taken back if unmarked -------------


def test_the_remade_adoption_comes_and_goes_with_its_migration(scratch_database):
    # Given a database at head holding a tenant the reconciler sent back as remade
    alembic(scratch_database, "upgrade", "head")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node, influxdb_adopt)"
            " VALUES ('acme', 'a', 'pending', 'alpha', 'remade')"
        )

    # When an operator downgrades to 0017, which knows no 'remade'
    alembic(scratch_database, "downgrade", "0017")

    # Then the same run goes on under the old name, and the old check is back
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        adopt = conn.execute("SELECT influxdb_adopt FROM tenants").fetchone()
        assert adopt == ("unmarked",)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE tenants SET influxdb_adopt = 'remade'")
    alembic(scratch_database, "upgrade", "head")


# -- 0019, a server that did not answer comes after the answering ones -------------------


def test_the_unavailable_mark_comes_and_goes_with_its_migration(scratch_database):
    index = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_influxdb_nodes_room'"
    alembic(scratch_database, "upgrade", "head")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO influxdb_nodes (name, unavailable_since, unavailable_reason) "
            "VALUES ('alpha', now(), 'unauthorized')"
        )
        assert (
            "((unavailable_since IS NOT NULL)), placed, name" in conn.execute(index).fetchone()[0]
        )

    alembic(scratch_database, "downgrade", "0018")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        assert "(placed, name)" in conn.execute(index).fetchone()[0]
        assert conn.execute("SELECT name FROM influxdb_nodes").fetchall() == [("alpha",)]
    alembic(scratch_database, "upgrade", "head")


# -- 0021, the event log's shift ------------------------------------------------------------


def test_the_event_log_shift_comes_with_its_migration_and_a_shifted_log_is_not_downgraded(
    scratch_database,
):
    append = "SELECT tenant_events_append('acme', 'operator.retry', '{}'::jsonb)"
    newest = (
        "SELECT max(xid)::text::numeric, pg_current_xact_id()::text::numeric FROM tenant_events"
    )
    alembic(scratch_database, "upgrade", "head")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        # At head an event's xid is its transaction's while nothing was restored ...
        with conn.transaction():
            conn.execute(append)
            written, own = conn.execute(newest).fetchone()
        assert written == own
        assert conn.execute("SELECT shift FROM tenant_event_clock").fetchone() == (0,)

    # ... and the migration goes back to the plain transaction id
    alembic(scratch_database, "downgrade", "0020")
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('tenant_event_clock')").fetchone() == (None,)
        assert conn.execute("SELECT to_regproc('tenant_event_xid')").fetchone() == (None,)
        with conn.transaction():
            conn.execute(append)
            written, own = conn.execute(newest).fetchone()
        assert written == own
    alembic(scratch_database, "upgrade", "head")

    # Given a log ahead of this cluster's transaction ids (restored from another cluster)
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        conn.execute("UPDATE tenant_events SET xid = (xid::text::numeric + 10^9)::text::xid8")
        (restored,) = conn.execute("SELECT max(xid)::text::numeric FROM tenant_events").fetchone()
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as conn:
        # When an event is written: it is shifted past the restored ones
        with conn.transaction():
            conn.execute(append)
            written, own = conn.execute(newest).fetchone()
        assert written > restored > own
        (shift,) = conn.execute("SELECT shift FROM tenant_event_clock").fetchone()
        assert written == own + shift

    # Then a downgrade, which would sort new events before those, is refused
    refused = alembic_unchecked(scratch_database, "downgrade", "0020")
    assert refused.returncode != 0
    assert "the event log's ids are shifted" in refused.stderr
