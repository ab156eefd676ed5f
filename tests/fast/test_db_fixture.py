"""The ``db`` fixture hands each test the process's one connection as a new one would be: what
a test left on it (a transaction, a setting, a lock, a temporary table) never reaches the next."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.conftest import _as_new


def test_what_a_test_left_on_the_connection_is_gone_for_the_next(db, held_db, database):
    # Given a test that leaves a setting, an advisory lock, a temporary table and an open
    # transaction in a failed state on its connection
    db.execute("SET statement_timeout = '1s'")
    db.execute("SELECT pg_advisory_lock(4242)")
    db.execute("CREATE TEMP TABLE leftover (x int)")
    db.autocommit = False
    with pytest.raises(psycopg.errors.DivisionByZero):
        db.execute("SELECT 1 / 0")

    # When the next test takes it
    again = _as_new(held_db, database)

    # Then it is the same backend, with none of that left
    assert again is db and again.autocommit
    assert again.execute("SHOW statement_timeout").fetchone() == ("0",)
    locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    assert again.execute(locks).fetchone() == (0,)
    assert again.execute("SELECT to_regclass('pg_temp.leftover')").fetchone() == (None,)


def test_a_connection_a_test_broke_is_replaced(db: Any, held_db, database):
    # Given a test whose connection was cut (its backend terminated)
    pid = db.info.backend_pid
    with pytest.raises(psycopg.OperationalError):
        db.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    # Then the next test gets a new one that works
    again = _as_new(held_db, database)
    assert again is not db and again.info.backend_pid != pid
    assert again.execute("SELECT 1").fetchone() == (1,)
