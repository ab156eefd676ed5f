"""The process's SQLAlchemy engine, created lazily so that forked Celery children get their own."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.pool import PoolResetState

from worker.models import deployment_secrets
from worker.settings import get_settings

logger = logging.getLogger(__name__)
_engine: Engine | None = None
_engine_pid: int | None = None
_pool_size = 5  # connections kept per process; a prefork child runs one task at a time
_request_wait: float | None = None  # seconds; None: a worker's waits, unbounded


def serve_requests(seconds: float = 3.0) -> None:
    """This process answers requests (the API): from its next engine on, a wait for a row or
    table lock, or for a pooled connection, gives up after ``seconds`` (a 503), so a request
    queued behind a migration's lock or a pool held by others answers instead of hanging.
    Not for workers: their placers wait on a server's row by design."""
    global _request_wait  # noqa: PLW0603 - one engine per process, by design
    _request_wait = seconds


def size_pool(connections: int) -> None:
    """Keep ``connections`` pooled per process (from the next engine on): a worker running
    its tasks in threads runs up to its concurrency at once, each with a connection."""
    global _pool_size  # noqa: PLW0603 - one engine per process, by design
    _pool_size = max(5, connections)


def get_engine() -> Engine:
    """This process's engine (a new one after a fork: connections must not cross processes)."""
    global _engine, _engine_pid  # noqa: PLW0603 - one engine per process, by design
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            _engine.dispose(close=False)  # the parent's connections stay the parent's
        _engine = create_engine(
            get_settings().database_url,
            pool_timeout=_request_wait or 30,
            # Survive Postgres restarts and terminated backends. Its ping runs in autocommit
            # (one round trip, no transaction left open), so ``autocommit`` can follow it.
            pool_pre_ping=True,
            pool_size=_pool_size,
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
        event.listen(_engine, "reset", _drop_advisory_locks)
        if _request_wait is not None:
            _bound_lock_waits(_engine, _request_wait)
        watch_server_warnings(_engine)
        _engine_pid = os.getpid()
    return _engine


def _bound_lock_waits(engine: Engine, seconds: float) -> None:
    """Each new connection's lock waits end after ``seconds`` (a SET of its own: the options
    of DATABASE_URL or PGOPTIONS, which ``connect_args`` would replace, stay as they are)."""

    def on_connect(dbapi_connection: psycopg.Connection[Any], _record: Any) -> None:
        autocommit, dbapi_connection.autocommit = dbapi_connection.autocommit, True
        dbapi_connection.execute(f"SET lock_timeout = {int(seconds * 1000)}")
        dbapi_connection.autocommit = autocommit

    event.listen(engine, "connect", on_connect)


def watch_server_warnings(engine: Engine) -> None:
    """Postgres' warnings to our sessions go to our log as well as the server's: the event
    log's shift after a restore (migration 0021) is one."""

    def on_connect(dbapi_connection: psycopg.Connection[Any], _record: Any) -> None:
        dbapi_connection.add_notice_handler(_log_warning)

    event.listen(engine, "connect", on_connect)


def _log_warning(diagnostic: psycopg.errors.Diagnostic) -> None:
    if diagnostic.severity_nonlocalized == "WARNING":  # not the NOTICEs of DDL ("skipping")
        logger.warning("Postgres: %s", diagnostic.message_primary)


@contextmanager
def autocommit(conn: Connection) -> Iterator[None]:
    """Each statement in the block commits on its own: no ``BEGIN`` and no ``COMMIT`` round
    trip, for steps that are one statement each. Within a transaction the caller has open, the
    statements join it instead (the caller's commit ends them)."""
    if conn.in_transaction():
        yield
        return
    conn.execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield
    finally:
        conn.rollback()  # ends SQLAlchemy's own marker: nothing is sent
        # A lost connection's next use reconnects, in the default mode. Resetting it here would
        # reconnect now: in an outage, wait out the connect timeout and raise that in place of
        # the error that ended the block.
        if not conn.invalidated:
            conn.execution_options(isolation_level=conn.default_isolation_level)


@contextmanager
def advisory_lock(conn: Connection, key: int) -> Iterator[bool]:
    """Hold a session-level Postgres advisory lock for the block; yields False if it is taken.

    The lock belongs to the Postgres session, not a transaction: it outlives the commits made
    inside the block, and Postgres frees it by itself if the process dies or the connection is
    cut - a crashed holder never blocks anyone for long. An exception at any point - even an
    interrupt (a soft time limit, Ctrl-C) between taking the lock and entering the block -
    releases it: the whole of it sits inside the ``try``, the unlock runs unless the lock was
    surely not taken, and the connection counts the locks it may hold, so that the pool's reset
    drops every lock it might still hold when it goes back (and skips that when it holds none).
    """
    info, session = conn.connection.info, conn.connection.dbapi_connection
    info[_ADVISORY_LOCKS] = info.get(_ADVISORY_LOCKS, 0) + 1  # counted before it may be held
    acquired: bool | None = None  # None: unknown (an interrupt landed around the query)
    try:
        conn.commit()
        with autocommit(conn):
            acquired = bool(conn.execute(_LOCK, {"k": key}).scalar())
        yield acquired
    finally:
        if acquired is not False:
            _unlock(conn, key)  # raises only after invalidating the connection
        # Surely not held now: the pool's reset need not look. Counted down only on the session
        # that counted it up: after a cut, the unlock ran on a session made again, holding none,
        # and ``info`` (cleared, or another connection's by now) is not this block's to lower.
        if not conn.invalidated and conn.connection.dbapi_connection is session:
            info[_ADVISORY_LOCKS] -= 1


def _unlock(conn: Connection, key: int) -> None:
    try:
        conn.rollback()
        # Also when unknown: an interrupt may land after Postgres took the lock but before
        # ``acquired`` was set. Unlocking a lock we do not hold only returns false.
        with autocommit(conn):
            conn.execute(_UNLOCK, {"k": key})
    except BaseException:
        # Never hand a pooled connection back while it may still hold the lock.
        conn.invalidate()
        raise


def holds_lock(conn: Connection, key: int) -> bool:
    """Whether ``conn``'s session still holds the advisory lock ``key``, before an act only its
    holder may do: raises if the session was cut (Postgres freed the lock with it), and is
    False on a session made again since, which holds nothing."""
    with autocommit(conn):  # (no transaction left open across what the holder does next)
        return bool(conn.execute(_HELD, {"k": key}).scalar())


_LOCK = text("SELECT pg_try_advisory_lock(:k)")
_UNLOCK = text("SELECT pg_advisory_unlock(:k)")
# A bigint key is held as classid (its high 32 bits) and objid (its low 32 bits), objsubid 1.
_HELD = text(
    "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND objsubid = 1"
    " AND ((classid::bigint << 32) | objid::bigint) = :k)"
)
# How many advisory locks the connection may hold (taken, or being taken, not surely released).
_ADVISORY_LOCKS = "tenant_provisioner.advisory_locks"


def _drop_advisory_locks(
    dbapi_connection: Any, connection_record: Any, reset_state: PoolResetState
) -> None:
    """Pool reset hook: a connection that may still hold an advisory lock (an unlock that never
    ran: an interrupt, a generator not closed) goes back holding none. After a clean unlock it
    holds none already, and this costs no round trip."""
    if reset_state.terminate_only or connection_record.info.pop(_ADVISORY_LOCKS, 0) <= 0:
        return
    dbapi_connection.rollback()
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock_all()")
    dbapi_connection.commit()


_secrets: dict[str, bytes] = {}


def deployment_secret(name: str) -> bytes:
    """The deployment's random key ``name``: made by the first process that asks (32 random
    bytes), the same for every process after (migration 0009); cached per process."""
    if name not in _secrets:
        table = deployment_secrets
        with get_engine().begin() as conn:
            conn.execute(
                pg_insert(table)
                .values(name=name, secret=secrets.token_bytes(32))
                .on_conflict_do_nothing(index_elements=["name"])
            )
            _secrets[name] = conn.execute(
                select(table.c.secret).where(table.c.name == name)
            ).scalar_one()
    return _secrets[name]
