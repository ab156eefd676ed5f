"""The process's SQLAlchemy engine, created lazily so that forked Celery children get their own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

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
            connect_args={"connect_timeout": 5, "application_name": "tenant-provisioner"},
        )
        _engine_pid = os.getpid()
    return _engine


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(get_engine(), expire_on_commit=False) as session, session.begin():
        yield session
