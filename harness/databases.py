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


def migrate_in_process() -> None:
    """Upgrade the database of this process's DATABASE_URL to head, in this process: the
    ``alembic`` command's own start (a Python process importing the whole stack) is about 2
    CPU-s on a slow 2-core machine, paid once per test process. Logging is left as it is."""
    from alembic import command  # noqa: PLC0415 - only the processes that migrate need it
    from alembic.config import Config  # noqa: PLC0415

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False  # migrations/env.py: keep the caller's logging
    command.upgrade(config, "head")


def migrate(env: Mapping[str, str] | None = None) -> None:
    """Upgrade the database of ``env``'s DATABASE_URL to head; RuntimeError with Alembic's
    output if it fails."""
    result = alembic("upgrade", "head", env=env)
    if result.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{result.stderr}")
