"""The app's Postgres role needs no superuser right: it migrates, owns and runs its database.

docker-compose.yml connects every app service as ``tenant_provisioner``, a LOGIN role without
superuser, made by ``deploy/postgres-init/10-app-role.sh`` when the postgres volume is first
initialised. Here that same script runs against a scratch database (owned by ``postgres``, as
the image creates POSTGRES_DB) for a role of the test's own; then, connected as that role and
with the URL read from a file as in compose (DATABASE_URL_FILE), ``alembic upgrade head``
builds the schema, a tenant is created through the hooks and the deployment secret is made.
Run again on a database the superuser migrated (a volume from before the role), the script
hands every object over to the role.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness import databases
from tests.conftest import PG_ADMIN_DSN, ROOT, new_tenant_id

INIT_SCRIPT = ROOT / "deploy" / "postgres-init" / "10-app-role.sh"
PG_HOST, PG_PORT = "127.0.0.1", "5432"

# Every object in `public` and its owner: relations (tables, sequences, indexes, views),
# routines (the slot-count trigger functions) and types that are not a table's row type.
OBJECTS_AND_OWNERS = """
SELECT 'relation ' || c.relname, pg_get_userbyid(c.relowner)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public'
UNION ALL
SELECT 'routine ' || p.oid::regprocedure::text, pg_get_userbyid(p.proowner)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public'
UNION ALL
SELECT 'type ' || t.typname, pg_get_userbyid(t.typowner)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = 'public' AND t.typtype <> 'c' AND t.typelem = 0
UNION ALL
SELECT 'schema public', pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'
UNION ALL
SELECT 'database ' || datname, pg_get_userbyid(datdba)
FROM pg_database WHERE datname = current_database()
"""


class AppRole:
    """A fresh non-superuser role and its scratch database, both dropped afterwards."""

    def __init__(self, directory: Path) -> None:
        suffix = secrets.token_hex(4)
        self.name = f"tp_app_{suffix}"
        self.database = f"tp_least_{suffix}"
        self.password = secrets.token_hex(16)
        self.password_file = directory / "postgres_app_password"
        self.password_file.write_text(self.password + "\n", encoding="utf-8")
        self.url_file = directory / "database_url"
        self.url_file.write_text(
            f"postgresql+psycopg://{self.name}:{self.password}@{PG_HOST}:{PG_PORT}/{self.database}\n",
            encoding="utf-8",
        )

    def run_init_script(self) -> None:
        """deploy/postgres-init/10-app-role.sh, as the postgres image runs it."""
        assert shutil.which("psql"), "the init script runs psql: install postgresql-client"
        result = subprocess.run(
            ["bash", str(INIT_SCRIPT)],
            env={
                **os.environ,
                "PGHOST": PG_HOST,
                "PGPORT": PG_PORT,
                "POSTGRES_USER": "postgres",
                "POSTGRES_DB": self.database,
                "APP_DB_USER": self.name,
                "APP_DB_PASSWORD_FILE": str(self.password_file),
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"the init script failed:\n{result.stdout}{result.stderr}"
        assert self.password not in result.stdout + result.stderr, "the script echoed the password"

    def env(self, **extra: str) -> dict[str, str]:
        """The process environment of an app service: the database URL as a file, as in compose."""
        env = {**os.environ, "DATABASE_URL_FILE": str(self.url_file), **extra}
        env.pop("DATABASE_URL", None)  # DATABASE_URL and DATABASE_URL_FILE: never both
        return env

    def admin_dsn(self) -> str:
        """The superuser's DSN for the scratch database."""
        return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + self.database

    def admin(self) -> psycopg.Connection[Any]:
        """A superuser connection to the scratch database, for looking, not for doing."""
        return psycopg.connect(self.admin_dsn(), autocommit=True)

    def connect(self) -> psycopg.Connection[Any]:
        """A connection as the app role, with its password (the local server may trust it)."""
        return psycopg.connect(
            host=PG_HOST,
            port=PG_PORT,
            user=self.name,
            password=self.password,
            dbname=self.database,
        )

    def owners(self) -> dict[str, str]:
        with self.admin() as conn:
            return dict(conn.execute(OBJECTS_AND_OWNERS).fetchall())

    def drop(self) -> None:
        databases.drop(self.database)
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{self.name}"')


@pytest.fixture
def app_role(tmp_path: Path) -> Iterator[AppRole]:
    role = AppRole(tmp_path)
    databases.create(role.database)  # owned by postgres, like the image's POSTGRES_DB
    try:
        yield role
    finally:
        role.drop()


def migrate(env: dict[str, str]) -> None:
    result = databases.alembic("upgrade", "head", env=env)
    assert result.returncode == 0, f"alembic upgrade head failed:\n{result.stderr}"


def not_owned_by(role: AppRole) -> dict[str, str]:
    owners = role.owners()
    assert any(name == "relation tenants" for name in owners), "no schema was created"
    assert any(name.startswith("routine ") for name in owners), "the trigger functions are gone?"
    return {name: owner for name, owner in owners.items() if owner != role.name}


def test_the_app_role_is_an_ordinary_login_role(app_role: AppRole) -> None:
    # Given the init script run for a fresh role
    app_role.run_init_script()

    # Then the role can log in and holds no privilege beyond owning its database
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        row = admin.execute(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, "
            "rolbypassrls, rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s",
            (app_role.name,),
        ).fetchone()
        memberships = admin.execute(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            "WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            (app_role.name,),
        ).fetchall()
    assert row == (True, False, False, False, False, False, True)
    assert memberships == [], "the app role must not inherit another role's rights"

    # And it owns the database and its public schema, so it may create there
    assert app_role.owners() == {
        "schema public": app_role.name,
        f"database {app_role.database}": app_role.name,
    }


def test_migrations_and_the_provisioning_path_need_no_superuser(app_role: AppRole) -> None:
    # Given the role and its database, as the postgres volume's first start leaves them
    app_role.run_init_script()

    # When the schema is built by `alembic upgrade head` connected as that role
    migrate(app_role.env())

    # Then no migration needed a superuser right, and the role owns every object made
    assert not_owned_by(app_role) == {}
    with app_role.admin() as conn:
        applied = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    heads = databases.alembic("heads", env=app_role.env())
    assert [version for (version,) in applied] == [heads.stdout.split()[0]]

    # And the app's writes work as the role: a tenant created through the hooks (the broker
    # refused, so the reconciler's "never queued" mark is written too) and the deployment's
    # shared secret made on first use
    tenant_id = new_tenant_id("lp")
    smoke = (
        "import json, sys\n"
        "from api_hooks import create_tenant\n"
        "from worker import db\n"
        "created = create_tenant(sys.argv[1], 'Least privilege')\n"
        "print(json.dumps({'queued': created['influxdb']['queued'],"
        " 'secret': len(db.deployment_secret('least-privilege-smoke'))}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", smoke, tenant_id],
        cwd=ROOT,
        env=app_role.env(CELERY_BROKER_URL="redis://127.0.0.1:1/0"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"queued": False, "secret": 32}
    with app_role.admin() as conn:
        state = conn.execute(
            "SELECT influxdb_state FROM tenants WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()
    assert state == ("pending",)


def test_the_script_hands_a_superuser_migrated_database_over(app_role: AppRole) -> None:
    # Given a database migrated by the superuser (a volume from before the app role)
    superuser_env = {**os.environ, "DATABASE_URL": app_role.admin_dsn()}
    superuser_env.pop("DATABASE_URL_FILE", None)
    migrate(superuser_env)
    before = not_owned_by(app_role)
    assert before["relation tenants"] == "postgres"
    assert app_role.name not in before.values()

    # When the init script is run by hand on it
    app_role.run_init_script()

    # Then every object is the role's, and the role can change the schema (only an owner can)
    assert not_owned_by(app_role) == {}
    with app_role.connect() as conn:
        conn.execute("ALTER TABLE tenants ADD COLUMN least_privilege_probe integer")
        routines = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
        ).fetchall()
        for (routine,) in routines:
            conn.execute(f"COMMENT ON FUNCTION {routine} IS 'probe'")  # an owner's right
        conn.rollback()
