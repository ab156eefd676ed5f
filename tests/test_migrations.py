"""The Alembic migration on an empty database and over the UI's existing ``tenants`` table."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import PG_ADMIN_DSN, ROOT

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
}


@pytest.fixture
def scratch_database() -> Iterator[str]:
    name = f"tp_migration_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def alembic(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}"}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


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
