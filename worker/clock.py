"""The one clock: Postgres'.

Every time that is stored in a row, or compared with a stored time, is read from the database
server's clock - whoever writes or compares it: the API, a worker, the reconciler, the CLI, on
any host. Workers and the reconciler run on many hosts whose clocks drift apart; the database
is the one place they all write. Were the worker's own clock used, a worker ten minutes ahead
would hide a stuck attempt, a lost retry or a deleted database from a reconciler ten minutes
behind, and one ten minutes behind would have a live attempt taken for stuck.

So:
- a row's times at insert come from the column defaults (``now()``), and afterwards from
  ``database_clock(conn)`` (the server's time read once, ``SELECT clock_timestamp()``, then
  carried forward by the process's monotonic clock, read again every ``REANCHOR_SECONDS``),
  or from ``now()`` in the SQL;
- comparisons with stored times happen in SQL against ``now()``, or in Python against a time
  read from this clock in the same run (the reconciler's ``listed_at`` and ``now``);
- the process's own clock measures only durations (``time.monotonic``: how far the database's
  time has moved since it was read) and what it shows alone (log timestamps).

The fast tests inject a ``Clock`` that moves only when told; a time they compare must then
come from it too (never a server default): see ``tests/fast/conftest.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, func, text

Clock = Callable[[], datetime]

_NOW = text("SELECT clock_timestamp()")

# The database's time as an SQL expression, for a write that needs no time of its own in Python
# (it costs no round trip).
DATABASE_NOW: ColumnElement[datetime] = func.clock_timestamp()


# A run reads the server's time once: each read is a round trip (two outside a transaction),
# and a provisioning run asks the time three or four times. Over a few seconds the process's
# monotonic clock and the server's run at the same rate to within microseconds; a clock kept
# longer (a reconcile run) reads the server again, so a step of the server's clock shows.
REANCHOR_SECONDS = 10.0


def database_clock(conn: Connection, read_at: datetime | None = None) -> Clock:
    """A clock on the database server's time, read on ``conn`` when first asked (inside the
    caller's transaction when one is open, else in one of its own that it ends at once, so a
    connection kept for a lock is never left idle in a transaction) and again once it is
    ``REANCHOR_SECONDS`` old; in between, that time plus the monotonic time since. ``read_at``:
    the time a read just returned (``DATABASE_NOW`` in its columns), saving the first read."""
    anchor = None if read_at is None else (read_at, time.monotonic())

    def now() -> datetime:
        nonlocal anchor
        if anchor is not None and time.monotonic() - anchor[1] < REANCHOR_SECONDS:
            return anchor[0] + timedelta(seconds=time.monotonic() - anchor[1])
        if conn.in_transaction():
            read = _read(conn)
        else:
            try:
                read = _read(conn)
            finally:
                conn.rollback()
        anchor = (read, time.monotonic())
        return read

    return now


def _read(conn: Connection) -> datetime:
    value: datetime = conn.execute(_NOW).scalar_one()
    return value
