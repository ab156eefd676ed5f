"""From the event log to each endpoint's deliveries: the endpoints file mirrored into
``webhook_endpoints``, and the fan-out (migration 0013 describes the tables).

The fan-out of an endpoint reads the log after its cursor in the global order (``(xid, id)``,
only below the horizon: ``worker.event_reads.events_after``), keeps the events its ``types``
want as deliveries, and moves the cursor - in one short transaction, never across an HTTP
call (a long transaction holds the horizon back for every reader of the log).

**A tenant's order is its ``tenantseq``, not the global order.** A transaction that got its
xid first can take the tenant's lock second, so the global order may show a tenant's event 7
while its event 6, already committed, is still above the horizon. So a tenant's events are
fanned out in ``seq`` order: when a page holds one whose predecessors have not been read yet,
those are read by ``seq`` (committed: each waited for the one before), and the lane
(``webhook_lanes``: the highest ``seq`` fanned out per tenant) marks them done for when the
global order reaches them. Each event becomes one delivery, in its tenant's order.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from worker.event_reads import MAX_LIMIT, cloud_event, events_after, horizon, parse_cursor
from worker.webhook_config import Endpoint

logger = logging.getLogger(__name__)

PAGES_PER_TRANSACTION = 10  # 5,000 events at most: the transaction stays short
_COLUMNS = "id, xid::text AS xid, tenant_id, seq, type, time, actor, route, data"


def sync_endpoints(conn: Connection, endpoints: Sequence[Endpoint], now: datetime) -> None:
    """Mirror the file into ``webhook_endpoints``: a new endpoint starts at the log's horizon
    (the events from now on, not the history), a changed URL is taken, and one that left the
    file is kept as not configured (its deliveries wait for its return). Commits."""
    start = str(horizon(conn))
    for endpoint in endpoints:
        conn.execute(
            text(
                "INSERT INTO webhook_endpoints (name, url, cursor_xid, cursor_id, created_at) "
                "VALUES (:name, :url, CAST(:xid AS xid8), 0, :now) ON CONFLICT (name) DO "
                "UPDATE SET url = EXCLUDED.url, configured = true WHERE "
                "webhook_endpoints.url IS DISTINCT FROM EXCLUDED.url "
                "OR NOT webhook_endpoints.configured"
            ),
            {"name": endpoint.name, "url": endpoint.url, "xid": start, "now": now},
        )
    conn.execute(
        text(
            "UPDATE webhook_endpoints SET configured = false "
            "WHERE configured AND name <> ALL(:names)"
        ),
        {"names": [endpoint.name for endpoint in endpoints]},
    )
    conn.commit()


def fan_out(conn: Connection, endpoint: Endpoint, now: datetime) -> int:
    """Turn the endpoint's new events into deliveries and move its cursor, in one
    transaction (at most PAGES_PER_TRANSACTION pages; the next run goes on). Returns how many
    deliveries were made."""
    cursor_xid, cursor_id = conn.execute(
        text(
            "SELECT cursor_xid::text, cursor_id FROM webhook_endpoints WHERE name = :name "
            "FOR UPDATE"
        ),
        {"name": endpoint.name},
    ).one()
    cursor = f"{cursor_xid}-{cursor_id}"
    made = 0
    for _ in range(PAGES_PER_TRANSACTION):
        page = events_after(conn, cursor, MAX_LIMIT)
        made += _deliveries(conn, endpoint, cursor, page.events, now)
        cursor = page.next
        if not page.more:
            break
    xid, event_id = parse_cursor(cursor)
    conn.execute(
        text(
            "UPDATE webhook_endpoints SET cursor_xid = CAST(:xid AS xid8), cursor_id = :id "
            "WHERE name = :name"
        ),
        {"xid": str(xid), "id": event_id, "name": endpoint.name},
    )
    conn.commit()
    return made


def _deliveries(
    conn: Connection,
    endpoint: Endpoint,
    cursor: str,
    events: list[dict[str, Any]],
    now: datetime,
) -> int:
    """The deliveries of one page (read after ``cursor``), each tenant's in ``seq`` order."""
    if not events:
        return 0
    by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    chosen = [event for event in events if "subject" not in event]  # the deployment's
    for event in events:
        if "subject" in event:
            by_tenant[event["subject"]].append(event)
    done = _lanes(conn, endpoint.name, list(by_tenant))
    highest: dict[str, int] = {}
    for tenant, read in by_tenant.items():
        after = done.get(tenant)
        fresh = sorted((e for e in read if after is None or e["tenantseq"] > after), key=_seq)
        if not fresh:
            continue  # taken out of turn by an earlier page
        if _gap(after, [e["tenantseq"] for e in fresh]):
            fresh = _in_seq_order(conn, tenant, after, fresh, cursor)
        chosen += fresh
        highest[tenant] = fresh[-1]["tenantseq"]
    rows = [_row(endpoint.name, e, now) for e in chosen if endpoint.wants(e["type"])]
    if rows:
        conn.execute(
            text(
                "INSERT INTO webhook_deliveries (endpoint, event_id, tenant_id, seq, type, "
                "payload, next_attempt_at, created_at) VALUES (:endpoint, :event_id, "
                ":tenant_id, :seq, :type, :payload, :now, :now) "
                "ON CONFLICT (endpoint, event_id) DO NOTHING"
            ).bindparams(bindparam("payload", type_=JSONB)),
            rows,
        )
    if highest:
        conn.execute(
            text(
                "INSERT INTO webhook_lanes (endpoint, tenant_id, seq) VALUES (:endpoint, "
                ":tenant, :seq) ON CONFLICT (endpoint, tenant_id) DO UPDATE "
                "SET seq = greatest(webhook_lanes.seq, EXCLUDED.seq)"
            ),
            [{"endpoint": endpoint.name, "tenant": t, "seq": s} for t, s in highest.items()],
        )
    return len(rows)


def _seq(event: dict[str, Any]) -> int:
    return int(event["tenantseq"])


def _gap(after: int | None, seqs: list[int]) -> bool:
    """True when the page's events of a tenant do not follow on from what was fanned out:
    an earlier one may still be above the horizon (or, for a lane not seen yet, before it)."""
    first = 1 if after is None else after + 1
    if after is None and seqs[0] != 1:
        return True  # a tenant older than the endpoint, or one taken out of turn: ask
    return seqs != list(range(first, first + len(seqs)))


def _lanes(conn: Connection, endpoint: str, tenants: list[str]) -> dict[str, int]:
    rows = conn.execute(
        text(
            "SELECT tenant_id, seq FROM webhook_lanes "
            "WHERE endpoint = :endpoint AND tenant_id = ANY(:tenants)"
        ),
        {"endpoint": endpoint, "tenants": tenants},
    ).all()
    return {row.tenant_id: row.seq for row in rows}


def _in_seq_order(
    conn: Connection, tenant: str, after: int | None, read: list[dict[str, Any]], cursor: str
) -> list[dict[str, Any]]:
    """The tenant's events up to the last one ``read`` that the fan-out has not passed: after
    the lane's ``seq``, and after ``cursor`` in the global order (those before it were fanned
    out, or predate the endpoint) - read by ``seq``: all committed, since the last one is."""
    xid, event_id = parse_cursor(cursor)
    rows = conn.execute(
        text(
            f"SELECT {_COLUMNS} FROM tenant_events "  # noqa: S608 - our constant, bound values
            "WHERE tenant_id = :tenant AND seq > :after AND seq <= :last "
            "AND (xid, id) > (CAST(:xid AS xid8), :id) ORDER BY seq"
        ),
        {
            "tenant": tenant,
            "after": after or 0,
            "last": read[-1]["tenantseq"],
            "xid": str(xid),
            "id": event_id,
        },
    ).all()
    ahead = sorted({row.seq for row in rows} - {event["tenantseq"] for event in read})
    if ahead:
        logger.info(
            "tenant %s: events %s fanned out ahead of the global order (tenantseq order)",
            tenant,
            ahead,
            extra={"tenant_id": tenant},
        )
    return [cloud_event(row) for row in rows] or read


def _row(endpoint: str, event: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "event_id": event["id"],
        "tenant_id": event.get("subject"),
        "seq": event.get("tenantseq"),
        "type": event["type"],
        "payload": event,
        "now": now,
    }


def pending_counts(conn: Connection, names: Iterable[str]) -> dict[str, int]:
    """Deliveries waiting, per endpoint."""
    rows = conn.execute(
        text(
            "SELECT endpoint, count(*) AS n FROM webhook_deliveries "
            "WHERE endpoint = ANY(:names) GROUP BY endpoint"
        ),
        {"names": list(names)},
    ).all()
    return {row.endpoint: int(row.n) for row in rows}
