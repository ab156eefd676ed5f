"""Databases the servers hold that nobody placed there: reported, never deleted.

InfluxDB 3 creates a database on the first write to a name it does not know. A writer that
sends a tenant's points to the wrong server makes a *stray* there (the tenant's database off
its home); a stale writer that outlived a deletion makes an *orphan* (a ``telemetry_*``
database of no tenant). Either may hold data someone wants, so the worker only reports them;
an operator moves or exports the data, then deletes by hand (docs/operating.md, "Strays").

They are found from the reconcile run's own listings (``worker.listings``), set-based in SQL:
no InfluxDB call of its own, and a server that did not answer keeps what was last seen there.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, text

from worker.listings import LISTED_TABLE, big_joins
from worker.models import influxdb_strays
from worker.states import Adoption

logger = logging.getLogger(__name__)


class StrayKind(enum.StrEnum):
    """What a database nobody placed is (``influxdb_strays.kind``)."""

    STRAY = "stray"  # a tenant's database on a server that is not its home
    ORPHAN = "orphan"  # a database of the tenant prefix whose tenant does not exist


# Per listed database of the prefix (the run's table holds the lists of the servers that
# answered, nothing else): its tenant, if any, and whether it is a stray or an orphan; NULL
# kind: neither. A stray is not the tenant's home, is not
# where our own unanswered create went (the worker owns that case), and is not the database of
# a row from before the worker that has not been located yet, in any state (the reconciler
# adopts it). Neither is judged for a tenant that changed after the listing started (deleted,
# created again, moved): the list predates the change.
_FOUND = f"""
    SELECT
        l.node, l.database, t.tenant_id, t.influxdb_node AS home_node,
        CASE
            -- The tenant changed (state, server, deleted, created again) after the listing
            -- began: the list may predate it; the next run judges it.
            WHEN changed.tenant_id IS NOT NULL THEN NULL
            WHEN t.tenant_id IS NOT NULL THEN
                CASE WHEN t.influxdb_node IS DISTINCT FROM l.node
                      AND t.influxdb_create_sent_to IS DISTINCT FROM l.node
                      -- (a row from before the worker, not located yet, is no stray)
                      AND NOT (t.influxdb_node IS NULL
                               AND t.influxdb_adopt IS NOT DISTINCT FROM
                                   '{Adoption.UNMARKED.value}')
                     THEN '{StrayKind.STRAY.value}' END
            -- (the run's table holds active databases only: soft-deleted ones are listed
            -- apart, so a name ending like a deletion stamp is a tenant id's, e.g.
            -- trial-20250101T120000)
            ELSE '{StrayKind.ORPHAN.value}'
        END AS kind
    FROM {LISTED_TABLE} l
    LEFT JOIN tenants t ON t.tenant_id = substr(l.database, length(:prefix) + 1)
    -- (only the few changed since: joining all of tenant_locations hashed every tenant's row,
    -- a second of a million-tenant run)
    LEFT JOIN (
        SELECT tenant_id FROM tenant_locations WHERE pending OR version > :listed_version
    ) changed ON changed.tenant_id = substr(l.database, length(:prefix) + 1)
    WHERE starts_with(l.database, :prefix) AND length(l.database) > length(:prefix)
"""  # noqa: S608 - constant names and vocabulary; values are bound parameters

# One statement: upsert what was found (first_seen_at kept, unless the kind changed), delete
# what an answering server no longer holds, and return what is new. Both parts read one
# snapshot and touch disjoint rows; the run's advisory lock keeps other runs out.
_RECORD = f"""
    WITH listed AS MATERIALIZED (SELECT * FROM ({_FOUND}) l WHERE kind IS NOT NULL),
    found AS (
        SELECT DISTINCT ON (f.node, f.database)
            f.*, (old.node IS NULL OR old.kind <> f.kind) AS new
        FROM listed f
        LEFT JOIN influxdb_strays old ON old.node = f.node AND old.database = f.database
    ),
    kept AS (
        INSERT INTO influxdb_strays AS s
            (node, database, kind, tenant_id, home_node, first_seen_at, last_seen_at)
        SELECT node, database, kind, tenant_id, home_node, :now, :now FROM found
        ON CONFLICT (node, database) DO UPDATE
        SET kind = excluded.kind, tenant_id = excluded.tenant_id,
            home_node = excluded.home_node, last_seen_at = excluded.last_seen_at,
            first_seen_at = CASE WHEN s.kind = excluded.kind THEN s.first_seen_at
                                 ELSE excluded.first_seen_at END
    ),
    gone AS (
        DELETE FROM influxdb_strays s
        WHERE NOT s.node = ANY(:configured)  -- a server that left the pool is listed no more
           OR (s.node = ANY(:answered) AND NOT EXISTS
                (SELECT 1 FROM found f WHERE f.node = s.node AND f.database = s.database))
    )
    SELECT node, database, kind, tenant_id, home_node FROM found WHERE new
    ORDER BY node, database
"""  # noqa: S608 - constant SQL


@dataclass(frozen=True)
class StrayCounts:
    """What the servers that answered hold that nobody placed, after one run."""

    strays: int = 0
    orphans: int = 0


def record_strays(
    conn: Connection,
    answered: Collection[str],
    configured: Collection[str],
    prefix: str,
    listed_version: int,
    now: datetime,
) -> StrayCounts:
    """Replace, for every server in ``answered``, its rows of ``influxdb_strays`` with what
    the run's listings (begun at location version ``listed_version``: a tenant changed since
    is not judged) show there, stamped ``now`` (the run's clock); the other ``configured``
    servers' rows stay as last seen, those of servers no longer configured go. Logs each new
    one. Commits."""
    params = {
        "answered": list(answered),
        "configured": list(configured),
        "prefix": prefix,
        "listed_version": listed_version,
        "now": now,
    }
    # (The run's table has its statistics: RunListings.copying takes them.)
    big_joins(conn)
    new = conn.execute(text(_RECORD), params).all()
    counts: dict[str, int] = dict(
        conn.execute(
            select(influxdb_strays.c.kind, func.count())
            .where(influxdb_strays.c.node.in_(list(answered)))
            .group_by(influxdb_strays.c.kind)
        ).all()
    )
    conn.commit()
    for row in new:
        logger.warning(
            "database nobody placed: node=%s database=%s kind=%s tenant=%s home=%s "
            "(reported, never deleted: see tenantctl strays)",
            row.node,
            row.database,
            row.kind,
            row.tenant_id or "-",
            row.home_node or "-",
        )
    return StrayCounts(counts.get(StrayKind.STRAY, 0), counts.get(StrayKind.ORPHAN, 0))


def stray_rows(conn: Connection) -> list[Any]:
    """Every stray and orphan recorded, by server and name (the CLI and the console)."""
    return list(
        conn.execute(
            select(influxdb_strays).order_by(influxdb_strays.c.node, influxdb_strays.c.database)
        ).all()
    )


def counts_by_node(conn: Connection) -> dict[tuple[str, str], int]:
    """How many strays and orphans each server holds, by ``(node, kind)`` (``/metrics``)."""
    rows = conn.execute(
        select(influxdb_strays.c.node, influxdb_strays.c.kind, func.count()).group_by(
            influxdb_strays.c.node, influxdb_strays.c.kind
        )
    ).all()
    return {(node, kind): count for node, kind, count in rows}
