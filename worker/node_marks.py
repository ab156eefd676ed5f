"""What the servers told us, and what follows from it: marks on ``influxdb_nodes``.

- **Full**: a server refused a database (422). Nothing more goes there until a listing sees it
  with room. The limit it named ("would exceed limit of 5 databases", ``refused_limit``) is
  shown to operators where it is below the nodes file's: that file overstates it. While it is
  known, the un-wait counts that server's room by the named limit, and at least one slot: one
  waiting tenant a run probes it (refused again, or, if the limit was raised, placed, and the
  next listing, seeing more than the named limit, forgets it).
- **Unavailable**: its listing failed, or it refused our token or a connection. It comes after
  every answering server with room (``worker.placement``) until a listing succeeds.
- **What a listing saw** (``observed_databases``), and the un-wait: when room appears, as many
  tenants waiting for capacity as there are free slots (:func:`room`) go back to ``pending``,
  oldest first, each with its slot reserved (a deletion hands its own slot over before anyone
  sees it free: ``worker.deprovisioning``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from worker import store
from worker.db import autocommit
from worker.models import influxdb_nodes, tenants
from worker.node_config import NodeConfig
from worker.placement import NodeUsage, has_room, place_tenant, usage
from worker.states import ProvisioningState, Reason

logger = logging.getLogger(__name__)
_NODE = influxdb_nodes.c
_T = tenants.c
# Tenants an un-wait sent that hold no slot yet (none was left to reserve): pending or
# retrying, not placed, their reason still the wait's. A new tenant is not one: a slot freed
# goes to the oldest tenant in line, not to whichever run comes first.
_SENT_UNPLACED = (
    _T.influxdb_state.in_([ProvisioningState.PENDING, ProvisioningState.RETRYING]),
    _T.influxdb_node.is_(None),
    _T.influxdb_error_reason == Reason.DATABASE_LIMIT,
)
_ON_THEIR_WAY = select(func.count()).select_from(
    select(_T.tenant_id).where(*_SENT_UNPLACED).limit(bindparam("most")).subquery()
)
_FIRST_SENT_UNPLACED = (
    select(_T.tenant_id)
    .where(*_SENT_UNPLACED, _T.influxdb_state == ProvisioningState.PENDING)
    .order_by(_T.created_at, _T.tenant_id)
    .limit(1)
    .with_for_update(skip_locked=True)
)


# A server out of the nodes file that a listing saw this recently may be back: what it holds
# still counts (a file edited by mistake, a rename).
DEPARTED_WITHIN = timedelta(hours=1)


def departed(conn: Connection, now: datetime, listed: Collection[str]) -> tuple[str, ...]:
    """Servers out of the caller's nodes file (``listed``: the ones it has) that a listing
    saw within :data:`DEPARTED_WITHIN` (by its own file: the stored flag may lag behind)."""
    with autocommit(conn):  # (a run's connection: no transaction left open)
        return tuple(
            conn.execute(
                select(_NODE.name)
                .where(_NODE.name.not_in(list(listed)), _NODE.observed_at > now - DEPARTED_WITHIN)
                .order_by(_NODE.name)
            ).scalars()
        )


def mark_full(conn: Connection, node_name: str, now: datetime, limit: int | None = None) -> None:
    """Record that ``node_name`` refused a database (422): place nothing more there for now.
    ``limit``, the limit it named, is kept for operators (kept as it was if it named none)."""
    stmt = pg_insert(influxdb_nodes).values(name=node_name, full_since=now, refused_limit=limit)
    named = func.coalesce(stmt.excluded.refused_limit, _NODE.refused_limit)
    set_ = {"full_since": now, "refused_limit": named}
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=set_))
    conn.commit()
    logger.warning("node %s refused a new database (422, its limit: %s): full", node_name, limit)


def mark_unavailable(conn: Connection, node_name: str, reason: Reason, now: datetime) -> None:
    """Record that ``node_name`` refused our token or a connection: new tenants go to the
    answering nodes first, until a listing there succeeds. Commits."""
    stmt = pg_insert(influxdb_nodes).values(
        name=node_name, unavailable_since=now, unavailable_reason=reason
    )
    since = func.coalesce(_NODE.unavailable_since, stmt.excluded.unavailable_since)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"unavailable_since": since, "unavailable_reason": reason},
        )
    )
    conn.commit()
    logger.warning("node %s: %s; placing elsewhere first until it lists again", node_name, reason)


def hand_over(conn: Connection, node: NodeConfig, now: datetime) -> tuple[str, ...]:
    """A slot on ``node`` freed in the open transaction (the slot count's trigger holds the
    node's row to its commit: no placer sees it free) goes to the next tenant in line: the
    first an un-wait sent that got no slot, else the oldest waiting for capacity, which goes
    back to ``pending``. Commits nothing. Its id, to queue once committed; () if no room."""
    if not has_room(conn, node):
        return ()
    moved = list(conn.execute(_FIRST_SENT_UNPLACED).scalars()) or store.end_waits(conn, 1, now)
    for tenant_id in moved:
        store.reserve_slot(conn, tenant_id, node.name)
        logger.info("a slot freed on node %s goes to %s, next in line", node.name, tenant_id)
    return tuple(moved)


def slot_freed(
    conn: Connection, node: NodeConfig, nodes: Iterable[NodeConfig], now: datetime
) -> list[str]:
    """A deletion removed a database from ``node``: room at once, not at the next listing.

    Its full mark goes (a server still full answers 422 again), and its unavailable mark (it
    answered our token); then :func:`unwait` over the pool ``nodes``. Commits; returns ids."""
    marked = or_(_NODE.full_since.is_not(None), _NODE.unavailable_since.is_not(None))
    conn.execute(
        update(influxdb_nodes)
        .where(_NODE.name == node.name, marked)
        .values(full_since=None, unavailable_since=None, unavailable_reason=None)
    )
    moved = unwait(conn, nodes, now)
    if moved:
        logger.info("a slot freed on node %s: %d waiting tenant(s) go on", node.name, len(moved))
    return moved


def unwait(conn: Connection, nodes: Iterable[NodeConfig], now: datetime) -> list[str]:
    """The oldest tenants waiting for capacity go back to ``pending``, as many as the ``nodes``
    that answer have :func:`room` for by our count (one whose listing failed, or that refused
    our token, gets none), each with a slot reserved for it at once, oldest first: a tenant
    created since, whose run comes before theirs (a broker backlog), finds the room taken and
    waits behind them. A tenant sent earlier whose run has not come yet holds its slot, and is
    not sent for again. Commits. Returns their ids: the caller queues them."""
    nodes = tuple(nodes)
    free = sum(room(u) for u in usage(conn, nodes) if not u.unavailable)
    if free > 0:
        free -= conn.execute(_ON_THEIR_WAY, {"most": free}).scalar_one()
    moved = store.end_waits(conn, free, now) if free > 0 else []
    conn.commit()
    for tenant_id in moved:
        if place_tenant(conn, tenant_id, nodes, exclude=set()) is None:
            break  # the room went meanwhile: the others are placed by their own runs
    return moved


def room(slots: NodeUsage) -> int:
    """The waiting tenants a node can take: its free slots by the nodes file, but where the
    server named a lower limit in a 422, what that limit leaves by our count, and one at least.
    That one is the probe: a server whose limit was raised since shows it by taking it; one the
    file overstates refuses one tenant a reconcile run, not one for each slot the file names."""
    named = slots.overstated
    taken = slots.used + slots.others
    return slots.free if named is None else min(slots.free, max(1, named - taken))


def record_observations(
    conn: Connection,
    seen: Sequence[tuple[NodeConfig, int]],
    now: datetime,
    unanswered: Sequence[tuple[NodeConfig, Reason]] = (),
    others: Mapping[str, int] | None = None,
) -> None:
    """Store what the list calls saw, ``(node, databases)`` each, and which failed, ``(node,
    reason)``, in one statement: a node seen with room is no longer full, a node seen is
    available, one unanswered is unavailable and keeps what was last seen there; ``others``:
    per server seen, its databases that are not a tenant's placed there (kept as was where
    not given). Commits."""
    columns: tuple[str, ...] = ("name", "observed_databases", "observed_at", "full_since")
    columns += ("unavailable_since", "unavailable_reason", "other_databases")
    rows: list[tuple[Any, ...]] = []
    for n, count in seen:
        full_since = None if count < n.database_limit else now
        other = None if others is None else others.get(n.name, 0)
        rows.append((n.name, count, now, full_since, None, None, other))
    rows += [(n.name, None, None, None, now, reason, None) for n, reason in unanswered]
    if not rows:
        return
    stmt = pg_insert(influxdb_nodes)
    new, old = stmt.excluded, influxdb_nodes.c
    failed = new.unavailable_since.is_not(None)
    values = [dict(zip(columns, row, strict=True)) for row in sorted(rows, key=lambda r: r[0])]
    conn.execute(
        stmt.values(values).on_conflict_do_update(
            index_elements=["name"],
            set_={
                "observed_databases": func.coalesce(new.observed_databases, old.observed_databases),
                "observed_at": func.coalesce(new.observed_at, old.observed_at),
                "other_databases": func.coalesce(new.other_databases, old.other_databases),
                # Full: since first seen full; room: not full; unanswered: all as was (new NULL)
                "full_since": case(
                    (failed, old.full_since),
                    (new.full_since.is_(None), None),
                    else_=func.coalesce(old.full_since, new.full_since),
                ),
                # More databases than the limit it named: that limit was raised since.
                "refused_limit": case(
                    (new.observed_databases > old.refused_limit, None), else_=old.refused_limit
                ),
                "unavailable_since": case((failed, func.coalesce(old.unavailable_since, now))),
                "unavailable_reason": new.unavailable_reason,
            },
        )
    )
    conn.commit()
