"""The process's SQLAlchemy engine, created lazily so that forked Celery children get their own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, text

from worker.settings import get_settings

_engine: Engine | None = None
_engine_pid: int | None = None


def get_engine() -> Engine:
    """This process's engine (a new one after a fork: connections must not cross processes)."""
    global _engine, _engine_pid  # noqa: PLW0603 - one engine per process, by design
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            _engine.dispose(close=False)  # the parent's connections stay the parent's
        _engine = create_engine(
            get_settings().database_url,
            pool_pre_ping=True,  # survive Postgres restarts and terminated backends
            pool_size=5,
            max_overflow=5,
            connect_args={
                "connect_timeout": 5,
                "application_name": "tenant-provisioner",
                # A worker host that vanishes (power loss, partition) holds its tenants'
                # advisory locks until Postgres notices: keepalives make that about a minute.
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
            },
        )
        _engine_pid = os.getpid()
    return _engine


@contextmanager
def advisory_lock(conn: Connection, key: int) -> Iterator[bool]:
    """Hold a session-level Postgres advisory lock for the block; yields False if it is taken.

    The lock belongs to the Postgres session, not a transaction: it outlives the commits made
    inside the block, and Postgres frees it by itself if the process dies or the connection is
    cut - a crashed holder never blocks anyone for long.
    """
    acquired = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
    conn.commit()
    try:
        yield acquired
    finally:
        if acquired:
            try:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
            except Exception:
                # Never hand a pooled connection back while it may still hold the lock.
                conn.invalidate()
                raise
