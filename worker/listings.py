"""One reconcile run's listings, kept in Postgres so that the fleet is judged set-based.

A healthy fleet is almost all ``provisioned`` rows whose database is on their server's list
(and was not soft-deleted there since it was provisioned: then it was made again).
Judging them one by one in Python cost a second per 100,000 tenants and held every name in
memory. Instead, each server's list is copied into a temporary table as it arrives (and
dropped from memory), and one query keeps only the rows ``worker.findings.find`` could owe
something: every row except those it provably passes over (see :data:`_PASSED_OVER`). Those
few are then read in keyset batches with, for each, the servers whose list holds its
database - all ``find`` needs to know of the listings for that row.

The temporary tables live on the run's own connection and are dropped when it ends.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from itertools import islice
from typing import Any, Protocol

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from worker.states import ProvisioningState

logger = logging.getLogger(__name__)

LISTED_TABLE = "reconcile_listed"
_DELETED = "reconcile_deleted"
_NODES = "reconcile_nodes"
_OWED = "reconcile_owed"

# A soft-deletion's stamp is whole seconds: one in the second of a provisioning may be after it.
STAMP_GRAIN_SECONDS = 1


def deleted_since(deleted_at: datetime, provisioned_at: datetime) -> bool:
    """Whether a soft-deletion stamped ``deleted_at`` (moved onto our clock) may have come
    after the provisioning at ``provisioned_at``: then the name on the list was made again.
    The one rule for the reconciler (here in SQL, and ``worker.findings``) and deletions."""
    return deleted_at + timedelta(seconds=STAMP_GRAIN_SECONDS) > provisioned_at


# Rows find() returns None for whatever else holds: on a configured server (or none, where the
# state ignores it), and either waiting for capacity, or provisioned and not contradicted by
# the listing - provisioned after the servers were listed, on a server that did not answer, or
# with its database on its server's list and not soft-deleted there since it was provisioned
# (then it was made again). (``n``: the row's server among the configured ones; ``own``: its
# database on that server's list; ``gone``: that server's latest soft-deletion of its name.
# Joins on equality, not ``= ANY(array)`` or a correlated NOT EXISTS: tested on each of
# 1,000,000 rows, either took seconds.)
_PASSED_OVER = f"""
    (t.influxdb_node IS NULL OR n.node IS NOT NULL)
    AND (
        t.influxdb_state = '{ProvisioningState.WAITING_FOR_CAPACITY.value}'
        OR (
            t.influxdb_state = '{ProvisioningState.PROVISIONED.value}'
            AND t.influxdb_node IS NOT NULL
            AND (
                t.influxdb_provisioned_at IS NULL
                OR t.influxdb_provisioned_at >= :listed_at
                OR NOT n.answered
                OR (
                    own.node IS NOT NULL
                    -- (deleted_since, above, in SQL)
                    AND NOT coalesce(
                        gone.at + interval '{STAMP_GRAIN_SECONDS} second'
                            > t.influxdb_provisioned_at,
                        false
                    )
                )
            )
        )
    )
"""
_OURS_BY_SERVER = f"""
    SELECT l.node, count(*) FROM {LISTED_TABLE} l
    JOIN tenants t
        ON t.tenant_id = substr(l.database, length(:prefix) + 1) AND t.influxdb_node = l.node
    WHERE starts_with(l.database, :prefix)
    GROUP BY l.node
"""  # noqa: S608 - a constant table name; the prefix is a bound parameter
# InfluxDB renames a soft-deleted database NAME-YYYYMMDDTHHMMSS (UTC, its own clock).
# (NAME-YYYYMMDDTHHMMSS-ID when that name is taken: the same name deleted twice in a second).
_SOFT_DELETED = re.compile(r"\A(.+)-([0-9]{8}T[0-9]{6})(?:-[0-9]+)?\Z")


def soft_deleted(name: str) -> tuple[str, datetime | None]:
    """The name a soft-deleted database had, and when it was deleted (None: not such a name)."""
    found = _SOFT_DELETED.match(name)
    if found is None:
        return name, None
    try:
        return found[1], datetime.strptime(found[2], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:  # 20261399T...: not a time
        return name, None


def clock_shift(date: str | None, now: datetime) -> timedelta | None:
    """How far a server's clock is behind ours: ``now`` (ours, as its answer arrived) minus its
    ``Date`` header; None when it sent none that reads as a time in a zone."""
    try:
        server_time = parsedate_to_datetime(date or "")
    except (TypeError, ValueError, OverflowError):  # garbage; a zone of 10**20 hours
        return None
    return now - server_time if server_time.tzinfo is not None else None  # "-0000": none said


def on_our_clock(stamp: datetime, shift: timedelta | None) -> datetime | None:
    """A server's time moved onto ours; None outside any real time (a broken server's)."""
    try:
        when = stamp + (shift or timedelta(0))
    except OverflowError:
        return None
    return when if when.year < 9999 else None  # find() adds a second to it


COPY_CHUNK_ROWS = 10_000  # a write's rows: ~0.5 MB, whatever the length of a list
# Hash joins over a million listed names want ~70 MB; with the default 4 MB they spill to disk.
WORK_MEM = "128MB"


def big_joins(conn: Connection) -> None:
    """Give the open transaction's joins over the lists :data:`WORK_MEM` (each pass's own:
    a commit between passes ends it)."""
    conn.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))


class CopyList(Protocol):
    """Copies one server's list into the run's table; ``deleted``: its soft-deleted names,
    whose stamps are its clock, ``shift`` behind the run's (the run's time minus its Date)."""

    def __call__(
        self,
        node: str,
        names: Collection[str],
        deleted: Collection[str] = (),
        shift: timedelta | None = None,
    ) -> None: ...


class RunListings:
    """The servers' lists and the rows owed a judgement, for one run on one connection."""

    def __init__(self, conn: Connection, prefix: str) -> None:
        self._conn, self._prefix = conn, prefix
        self.answered: list[str] = []
        # (server, database of the prefix) -> its latest soft-deletion there: few, kept here.
        self.deletions: dict[tuple[str, str], datetime] = {}

    @contextmanager
    def copying(self) -> Iterator[CopyList]:
        """A function that copies one server's list into the run's table, for as long as the
        block lasts: one COPY for every list (a COPY per server cost three round trips each),
        in the open transaction (a commit per server would cost a disk flush each)."""
        if not self._conn.in_transaction():
            self._conn.begin()  # SQLAlchemy owns the transaction, so its rollback reaches it
        cursor = self._conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(f"COPY {LISTED_TABLE} (node, database) FROM STDIN") as copy:

            def add(
                node: str,
                names: Collection[str],
                deleted: Collection[str] = (),
                shift: timedelta | None = None,
            ) -> None:
                for name, stamp in map(soft_deleted, deleted):
                    when = on_our_clock(stamp, shift) if stamp is not None else None
                    if when is not None and name.startswith(self._prefix) and name.isprintable():
                        key = (node, name)
                        self.deletions[key] = max(when, self.deletions.get(key, when))
                # Rows in COPY's text format, a chunk per write: two calls of psycopg's a row
                # cost a million-tenant run ~0.2 s alone and more beside the listing threads.
                # A name that is not printable is skipped: not ours, and maybe not storable
                # (NUL, a lone surrogate from a broken server). A printable one, and a node's
                # ([A-Za-z0-9_.-]), holds no tab or line break: only "\\" needs escaping.
                rows = (f"{node}\t{name}\n" for name in names if name.isprintable())
                for chunk in iter(lambda: "".join(islice(rows, COPY_CHUNK_ROWS)), ""):
                    copy.write(chunk.replace("\\", "\\\\"))
                self.answered.append(node)

            yield add
        # Statistics for every pass that reads the lists: without them the planner takes the
        # table for a few rows and probes the tenants' index once per listed name (seconds at
        # a million; the first pass, ours_by_server, took 4.4 s of a 14.6 s run).
        self._conn.execute(text(f"ANALYZE {LISTED_TABLE}"))

    def ours_by_server(self) -> dict[str, int]:
        """Per server listed, how many databases on its list are those of tenants placed
        there: the rest take its slots all the same (someone else's, strays)."""
        big_joins(self._conn)  # (the copy's transaction, still open)
        return dict(
            self._conn.execute(
                text(_OURS_BY_SERVER),
                {"prefix": self._prefix},
            ).all()
        )

    def select_owed(self, configured: Sequence[str], listed_at: datetime) -> int:
        """Keep, in one query, every row find() may owe something, with the servers listing
        its database; returns how many (commits)."""
        answered = set(self.answered)
        if configured:
            self._conn.execute(
                text(f"INSERT INTO {_NODES} VALUES (:node, :answered)"),  # noqa: S608 - constant
                [{"node": node, "answered": node in answered} for node in configured],
            )
        if self.deletions:
            self._conn.execute(
                text(f"INSERT INTO {_DELETED} VALUES (:node, :database, :at)"),  # noqa: S608
                [{"node": n, "database": d, "at": at} for (n, d), at in self.deletions.items()],
            )
        self._conn.execute(text(f"ANALYZE {_NODES}, {_DELETED}"))  # (the lists: at the copy)
        big_joins(self._conn)
        kept = self._conn.execute(
            text(f"""
                INSERT INTO {_OWED} (tenant_id, seen_on)
                SELECT c.tenant_id,
                       coalesce(array_agg(l.node) FILTER (WHERE l.node IS NOT NULL), '{{}}')
                FROM (
                    SELECT t.tenant_id FROM tenants t
                    LEFT JOIN {_NODES} n ON n.node = t.influxdb_node
                    LEFT JOIN {LISTED_TABLE} own
                        ON own.node = t.influxdb_node AND own.database = :prefix || t.tenant_id
                    LEFT JOIN {_DELETED} gone
                        ON gone.node = t.influxdb_node AND gone.database = :prefix || t.tenant_id
                    WHERE NOT ({_PASSED_OVER})
                ) c
                LEFT JOIN {LISTED_TABLE} l ON l.database = :prefix || c.tenant_id
                GROUP BY c.tenant_id
            """),  # noqa: S608 - constant table names; values are bound parameters
            {"listed_at": listed_at, "prefix": self._prefix},
        )
        self._conn.commit()
        return int(kept.rowcount)  # the rows the INSERT kept: no second pass to count them

    def batches(self, size: int, columns: Sequence[str]) -> Iterator[list[Any]]:
        """The owed rows as they are now, by id, ``size`` at a time, each with ``seen_on``
        (committed reads)."""
        wanted = ", ".join(f"t.{name}" for name in columns)
        last = ""
        while True:
            batch = self._conn.execute(
                text(f"""
                    SELECT {wanted}, o.seen_on FROM {_OWED} o
                    JOIN tenants t ON t.tenant_id = o.tenant_id
                    WHERE o.tenant_id > :last ORDER BY o.tenant_id LIMIT :size
                """),  # noqa: S608 - constant names (COLUMNS); values are bound parameters
                {"last": last, "size": size},
            ).all()
            self._conn.commit()
            if not batch:
                return
            last = batch[-1].tenant_id
            yield list(batch)

    def view_of(
        self, batch: Sequence[Any], configured: Sequence[str]
    ) -> dict[str, frozenset[str] | None]:
        """The listings as find() sees them for ``batch``: per configured server, the batch's
        databases on its list, or None where it did not answer. Exact for these rows, as
        find() only asks whether a row's own database is on a list."""
        on: dict[str, set[str]] = defaultdict(set)
        for row in batch:
            for node in row.seen_on:
                on[node].add(self._prefix + row.tenant_id)
        answered = set(self.answered)
        return {n: frozenset(on.get(n, ())) if n in answered else None for n in configured}


@contextmanager
def run_listings(conn: Connection, prefix: str) -> Iterator[RunListings]:
    """The run's temporary tables on ``conn``, dropped when the run ends, however it ends."""
    _drop(conn)  # a run that died on this pooled connection may have left them
    conn.execute(text(f"CREATE TEMPORARY TABLE {LISTED_TABLE} (node text NOT NULL, database text)"))
    conn.execute(text(f"CREATE TEMPORARY TABLE {_NODES} (node text PRIMARY KEY, answered bool)"))
    conn.execute(
        text(
            f"CREATE TEMPORARY TABLE {_DELETED} "
            "(node text, database text, at timestamptz NOT NULL, PRIMARY KEY (node, database))"
        )
    )
    conn.execute(
        text(
            f"CREATE TEMPORARY TABLE {_OWED} (tenant_id text PRIMARY KEY, seen_on text[] NOT NULL)"
        )
    )
    conn.commit()
    try:
        yield RunListings(conn, prefix)
    finally:
        try:
            conn.rollback()
            _drop(conn)
        except DBAPIError:
            # Never hide why the run ended; a connection in an unknown state leaves the pool
            # (its temporary tables go with its session).
            logger.warning("could not drop the run's temporary tables", exc_info=True)
            conn.invalidate()


def _drop(conn: Connection) -> None:
    conn.execute(text(f"DROP TABLE IF EXISTS {LISTED_TABLE}, {_NODES}, {_DELETED}, {_OWED}"))
    conn.commit()
