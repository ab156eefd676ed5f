"""Advisory locks are released on every path, and a pooled connection goes back holding none:
an interrupt between taking a tenant's lock and releasing it never leaves the tenant busy."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import OperationalError

from tests.conftest import new_tenant_id
from worker.db import _drop_advisory_locks, advisory_lock, autocommit, get_engine, holds_lock
from worker.runs import advisory_lock_key, tenant_lock


def holders(db: Any, key: int) -> int:
    """How many sessions hold the advisory lock ``key`` (a bigint key: its two halves, 1)."""
    (count,) = db.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND ((classid::bigint << 32) | objid::bigint) = %s",
        (key,),
    ).fetchone()
    return int(count)


def test_a_pooled_connection_goes_back_to_the_pool_holding_no_advisory_lock(db):
    # Given a run whose lock was granted but whose release never ran (its context manager
    # abandoned, as when a generator holding it is never closed), the connection closed
    key = advisory_lock_key(new_tenant_id("lock"))
    engine = get_engine()
    with engine.connect() as conn:
        abandoned = advisory_lock(conn, key)
        assert abandoned.__enter__()
    # (the connection is back in the pool now)

    # Then no other session finds the tenant busy
    other = db.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    assert other == (True,)
    db.execute("SELECT pg_advisory_unlock(%s)", (key,))
    held = db.execute(  # in this database: other runs' locks are theirs
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid() "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    assert held == (0,)
    with contextlib.suppress(Exception):  # the abandoned release, on a connection now closed
        abandoned.__exit__(None, None, None)


def test_an_interrupt_inside_the_lock_releases_it(db):
    tenant_id = new_tenant_id("intr")
    with get_engine().connect() as conn:
        try:
            with tenant_lock(conn, tenant_id) as acquired:
                assert acquired
                raise KeyboardInterrupt  # a Ctrl-C or a soft time limit, mid-run
        except KeyboardInterrupt:
            pass
    key = advisory_lock_key(tenant_id)
    assert db.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() == (True,)
    db.execute("SELECT pg_advisory_unlock(%s)", (key,))


def test_a_clean_release_leaves_the_pool_nothing_to_drop(db):
    # Given a connection that took and released a lock, and a lock of another session's
    key = advisory_lock_key(new_tenant_id("clean"))
    with get_engine().connect() as conn:
        with advisory_lock(conn, key) as acquired:
            assert acquired
        # Then it counts no lock it may hold: its return to the pool costs no unlock_all
        assert conn.connection.info.get("tenant_provisioner.advisory_locks") == 0


def test_a_pooled_connection_postgres_dropped_is_replaced_before_use(db):
    # Given a pooled connection whose backend Postgres terminated (a restart, an operator)
    engine = get_engine()
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))

    # Then the next checkout hands out a live one, with no transaction open
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
        assert conn.connection.driver_connection.autocommit is False


def test_autocommit_commits_each_statement_alone_or_joins_the_open_transaction(db):
    visible = "SELECT count(*) FROM influxdb_nodes WHERE name = 'auto'"
    with get_engine().connect() as conn:
        # Outside a transaction: committed at once (another session sees it) ...
        with autocommit(conn):
            conn.execute(
                text("INSERT INTO influxdb_nodes (name, database_limit) VALUES ('auto', 5)")
            )
            assert db.execute(visible).fetchone() == (1,)
        assert not conn.in_transaction()
        assert conn.connection.driver_connection.autocommit is False
        # ... inside one: part of it, undone with it
        conn.execute(text("SELECT 1"))
        with autocommit(conn):
            conn.execute(text("DELETE FROM influxdb_nodes WHERE name = 'auto'"))
        conn.rollback()
    assert db.execute(visible).fetchone() == (1,)


def test_a_connection_lost_inside_autocommit_raises_its_own_error_and_does_not_reconnect(db):
    # Given a connection that Postgres terminates between two one-statement steps
    with get_engine().connect() as conn:
        with pytest.raises(OperationalError) as raised, autocommit(conn):
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
            conn.execute(text("SELECT 1"))

        # Then the error is the lost connection's, and leaving the block reconnected nothing
        # (during an outage that would wait out the connect timeout, then hide the cause)
        assert raised.value.connection_invalidated
        assert conn.invalidated
        # And the next use reconnects, in the pool's default mode: a transaction of its own
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
        assert conn.in_transaction()
        assert conn.connection.driver_connection.autocommit is False


def test_a_lock_whose_session_is_cut_ends_in_its_database_error_and_is_held_no_more(db):
    # Given a run holding a tenant's lock, and another tenant's not held
    key = advisory_lock_key(new_tenant_id("lock"))
    with get_engine().connect() as conn:
        with pytest.raises(OperationalError), advisory_lock(conn, key) as acquired:
            assert acquired and holds_lock(conn, key)
            assert not holds_lock(conn, advisory_lock_key(new_tenant_id("other")))
            # When its session is cut (a failover, an idle timeout, an operator's kill)
            pid = conn.connection.dbapi_connection.info.backend_pid
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
            # Then asking raises the database's error: the run stops there (and is retried)
            holds_lock(conn, key)
        # And that error is what the run ends with, the release's new session holding nothing
        assert not holds_lock(conn, key)


def test_a_release_on_a_session_made_again_leaves_another_run_s_lock_counted(db):
    # Given two runs sharing a pool of one: the first holds a lock, its session is cut, and its
    # connection goes back to the pool, where the second run takes it, and a lock of its own
    engine = create_engine(get_engine().url, pool_size=1, max_overflow=1, pool_pre_ping=True)
    event.listen(engine, "reset", _drop_advisory_locks)
    first_key = advisory_lock_key(new_tenant_id("first"))
    second_key = advisory_lock_key(new_tenant_id("second"))
    try:
        with engine.connect() as first:
            first_lock = advisory_lock(first, first_key)
            assert first_lock.__enter__()
            cut = first.connection.dbapi_connection.info.backend_pid
            db.execute("SELECT pg_terminate_backend(%s)", (cut,))
            with pytest.raises(OperationalError) as error:
                first.execute(text("SELECT 1"))
            second = engine.connect()
            assert second.connection.dbapi_connection.info.backend_pid != cut
            second_lock = advisory_lock(second, second_key)
            assert second_lock.__enter__()

            # When the first run's release ends, on a session it had to make again
            assert first_lock.__exit__(error.type, error.value, error.tb) is False

            # Then the second run's lock still counts: its connection, back in the pool without
            # its release (an interrupt), is made to drop it, and no session holds it any more
            second.close()
            assert holders(db, second_key) == 0
        with contextlib.suppress(Exception):  # the abandoned release, on a connection now closed
            second_lock.__exit__(None, None, None)
    finally:
        engine.dispose()
