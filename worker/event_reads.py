"""The tenant event log, reading side: events as CloudEvents 1.0, a tenant's pages by ``seq``,
the global order by ``(xid, id)``, and the operator actions (the audit trail).

**A tenant's events** are read by ``seq``: handed out under a lock held until commit, a
tenant's sequence commits in order and without gaps, so ``after=<seq>`` misses nothing.

**Every tenant's events** are read by the cursor ``"<xid>-<id>"`` (:func:`events_after`): only
events whose transaction id is below the reader's snapshot xmin, in ``(xid, id)`` order. Below
that horizon every transaction has ended, and every later one gets a larger xid: the events
there are final, so resuming after the last one read misses none and repeats none (migration
0011 explains why ids alone would not do). A page that comes back short moves the cursor up
to the horizon, ``"<xmin>-0"``: filters never make a reader scan the same rows again. Both the
xids and the horizon carry the log's shift, 0 until a restore (into another cluster, or to an
earlier point of its history) would let new events take ids at or below those of the log or of
a kept cursor: then new events still sort after them, and every kept cursor stays valid
(migration 0021).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BindParameter, Connection, bindparam, text

from worker.settings import get_settings

SPECVERSION = "1.0"
TYPE_PREFIX = "io.tenant-provisioner."
MAX_LIMIT = 500
DEFAULT_LIMIT = 100
AUDIT_PAGE = 50

_COLUMNS = "id, xid::text AS xid, tenant_id, seq, type, time, actor, route, data"
_CURSOR = re.compile(r"(\d{1,20})-(\d{1,19})")
_MAX_XID = 2**64 - 1
_MAX_ID = 2**63 - 1


class BadCursor(ValueError):
    """A cursor or page size that is not one of ours; the message says why."""


@dataclass(frozen=True)
class Page:
    """Events in order, and where the next page starts; ``more``: the page was full."""

    events: list[dict[str, Any]]
    next: str
    more: bool


def cloud_event(row: Any) -> dict[str, Any]:
    """One ``tenant_events`` row as a CloudEvents 1.0 JSON event: ``id`` is the global cursor
    of the event, ``source`` the deployment's (EVENTS_SOURCE: ``source`` and ``id`` together
    are unique across deployments), ``subject`` its tenant, and the extension attributes
    ``tenantseq``, ``actor`` and ``route`` are there when known."""
    event: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": f"{row.xid}-{row.id}",
        "source": get_settings().events_source,
        "type": TYPE_PREFIX + row.type,
    }
    if row.tenant_id is not None:
        event["subject"] = row.tenant_id
    event["time"] = rfc3339(row.time)
    event["datacontenttype"] = "application/json"
    event["data"] = row.data
    if row.seq is not None:
        event["tenantseq"] = row.seq
    if row.actor is not None:
        event["actor"] = row.actor
    if row.route is not None:
        event["route"] = row.route
    return event


def rfc3339(moment: datetime) -> str:
    """UTC, microseconds, ``Z``: e.g. ``2026-12-04T07:17:07.123456Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def page_size(limit: object, default: int = DEFAULT_LIMIT) -> int:
    """A page size from a query string (None: ``default``); BadCursor unless 1 to MAX_LIMIT."""
    if limit is None or limit == "":
        return default
    if isinstance(limit, int) and not isinstance(limit, bool):
        number = limit
    elif isinstance(limit, str) and limit.isascii() and limit.isdigit() and len(limit) <= 6:
        number = int(limit)
    else:
        raise BadCursor(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    if not 1 <= number <= MAX_LIMIT:
        raise BadCursor(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return number


def sequence_cursor(after: object) -> int:
    """A tenant page's cursor: the ``seq`` of the last event read (None: from the start)."""
    if after is None or after == "":
        return 0
    if isinstance(after, int) and not isinstance(after, bool) and 0 <= after < 2**31:
        return after
    if isinstance(after, str) and after.isascii() and after.isdigit() and len(after) <= 10:
        number = int(after)
        if number < 2**31:
            return number
    raise BadCursor("after must be the sequence number (tenantseq) of an event: a whole number")


def tenant_page(
    conn: Connection, tenant_id: str, after: int = 0, limit: int = DEFAULT_LIMIT
) -> Page | None:
    """The tenant's events after ``seq`` ``after``, oldest first; None when the id never had
    an event nor a row (an unknown tenant). BadCursor for an ``after`` past its last event."""
    rows = conn.execute(
        text(
            f"SELECT {_COLUMNS} FROM tenant_events "  # noqa: S608 - our constants, bound values
            "WHERE tenant_id = :tenant_id AND seq > :after ORDER BY seq LIMIT :limit"
        ),
        {"tenant_id": tenant_id, "after": after, "limit": limit + 1},
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    if not rows:
        last, exists = conn.execute(
            text(
                "SELECT (SELECT max(seq) FROM tenant_events WHERE tenant_id = :t), "
                "EXISTS (SELECT 1 FROM tenants WHERE tenant_id = :t)"
            ),
            {"t": tenant_id},
        ).one()
        if last is None and not exists:
            return None
        if after > (last or 0):  # a tenant's sequence never goes back, even when pruned
            raise BadCursor(f"after must be at most the tenant's last tenantseq ({last or 0})")
    return Page([cloud_event(r) for r in rows], str(rows[-1].seq if rows else after), more)


def timeline(conn: Connection, tenant_id: str, count: int = 50) -> list[Any]:
    """The tenant's last ``count`` events, newest first (rows, for the console)."""
    return list(
        conn.execute(
            text(
                f"SELECT {_COLUMNS} FROM tenant_events "  # noqa: S608 - our constants only
                "WHERE tenant_id = :tenant_id ORDER BY seq DESC LIMIT :count"
            ),
            {"tenant_id": tenant_id, "count": count},
        ).all()
    )


def parse_cursor(cursor: object) -> tuple[int, int]:
    """A global cursor ``"<xid>-<id>"`` (None or empty: the start); BadCursor otherwise."""
    if cursor is None or cursor == "":
        return (0, 0)
    if isinstance(cursor, str) and cursor.isascii() and (match := _CURSOR.fullmatch(cursor)):
        xid, event_id = int(match[1]), int(match[2])
        if xid <= _MAX_XID and event_id <= _MAX_ID:
            return xid, event_id
    raise BadCursor('a cursor is an event id, "<xid>-<id>" (e.g. "1234-56")')


def horizon(conn: Connection) -> int:
    """The reader's snapshot xmin, plus the log's shift (0 unless the log was restored from
    another cluster: migration 0021): every transaction below it has ended."""
    return int(conn.execute(text("SELECT tenant_event_horizon()::text")).scalar_one())


def check_not_ahead(cursor: tuple[int, int], below: int) -> None:
    """BadCursor when ``cursor`` is past what a reader at horizon ``below`` can have been
    given: every event handed out lies below the horizon of its read, and horizons only
    grow (a cursor from another database, or a restore, is)."""
    xid, event_id = cursor
    if xid > below or (xid == below and event_id > 0):
        raise BadCursor("the cursor is ahead of the event log (another database?)")


def events_after(
    conn: Connection,
    cursor: str | None,
    limit: int = DEFAULT_LIMIT,
    tenant: str | None = None,
    types: list[str] | None = None,
) -> Page:
    """Every tenant's events after ``cursor`` in the global order, only those below the
    horizon (see the module docstring); optionally one tenant's, or only some types (the
    ``tenant.*`` names, without the CloudEvents prefix). BadCursor for a cursor that is not
    one of ours, or that is ahead of the log."""
    after_xid, after_id = parse_cursor(cursor)
    limit = page_size(limit)
    below = horizon(conn)  # one statement: the rows are read in a later snapshot, above it
    check_not_ahead((after_xid, after_id), below)
    where = ["(xid, id) > (CAST(:xid AS xid8), :id)", "xid < CAST(:below AS xid8)"]
    params: dict[str, Any] = {
        "xid": str(after_xid),
        "id": after_id,
        "below": str(below),
        "limit": limit + 1,
    }
    query_params: list[BindParameter[Any]] = []
    if tenant is not None:
        where.append("tenant_id = :tenant")
        params["tenant"] = tenant
    if types:
        where.append("type IN :types")
        params["types"] = [t.removeprefix(TYPE_PREFIX) for t in types]
        query_params.append(bindparam("types", expanding=True))
    query = text(
        # Only our own clauses are joined in; every value is a bound parameter.
        f"SELECT {_COLUMNS} FROM tenant_events WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY xid, id LIMIT :limit"
    ).bindparams(*query_params)
    rows = conn.execute(query, params).all()
    more = len(rows) > limit
    rows = rows[:limit]
    # A full page ends at its last event; a short one read everything below the horizon.
    following = f"{rows[-1].xid}-{rows[-1].id}" if more else f"{below}-0"
    return Page([cloud_event(r) for r in rows], following, more)


def audit(
    conn: Connection,
    *,
    actor: str | None = None,
    tenant: str | None = None,
    before: int | None = None,
    limit: int = AUDIT_PAGE,
) -> tuple[list[Any], int | None]:
    """Operator actions, newest first, optionally one actor's (exact) or one tenant's; paged
    by event id (``before``: the id the last page ended on). Rows, and the next ``before``
    (None on the last page)."""
    where = ["type LIKE 'operator.%'"]  # literal: the partial index's predicate
    params: dict[str, Any] = {"limit": limit + 1}
    if actor:
        where.append("actor = :actor")
        params["actor"] = actor
    if tenant:
        where.append("tenant_id = :tenant")
        params["tenant"] = tenant
    if before is not None:
        where.append("id < :before")
        params["before"] = before
    rows = conn.execute(
        text(
            # Only our own clauses are joined in; every value is a bound parameter.
            f"SELECT {_COLUMNS} FROM tenant_events WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY id DESC LIMIT :limit"
        ),
        params,
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return list(rows), (rows[-1].id if more else None)
