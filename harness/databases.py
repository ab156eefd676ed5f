"""A Postgres database of a run's own: created, migrated to head with Alembic, dropped."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

import psycopg

from harness.processes import ROOT

ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def create(name: str, admin_dsn: str = ADMIN_DSN) -> None:
    """An empty database ``name``."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')


def drop(name: str, admin_dsn: str = ADMIN_DSN) -> None:
    """Drop ``name``, closing whatever connections it still has."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def alembic(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``alembic ARGS`` from the repository root (DATABASE_URL from ``env``); never raises."""
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env=dict(os.environ if env is None else env),
        check=False,
        capture_output=True,
        text=True,
    )


def migrate(env: Mapping[str, str] | None = None) -> None:
    """Upgrade the database of ``env``'s DATABASE_URL to head; RuntimeError with Alembic's
    output if it fails."""
    result = alembic("upgrade", "head", env=env)
    if result.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{result.stderr}")
