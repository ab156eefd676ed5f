"""Placement: which InfluxDB server holds a tenant's database, with capacity as a first-class fact.

A tenant holds a slot on a node while ``tenants.influxdb_node`` names it. Each node's row in
``influxdb_nodes`` counts its slots (``placed``), kept by a trigger in the transaction that takes
or frees one (migration 0007). Placing reads one row per node - never the tenants - and locks
only the node it reserves on, re-checking its count under that lock: two workers never over-fill
a node, and placements on different nodes do not wait for each other (a node another placer
holds is skipped for the next least-used one). A run places and starts its attempt in one
statement when a node with room is free at once (:func:`start_on_free_node`), else goes the long
way (:func:`choose_node`, which waits for a node another placer holds). Room is our count under
the nodes file's limit. A node marked full (a 422) is skipped; one marked unavailable (its
listing failed, or it refused our token or a connection) comes after every answering node with
room. The marks, and what clears them, are ``worker.node_marks``; the reconciler also repairs a
count that differs from the real one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    Text,
    all_,
    and_,
    any_,
    bindparam,
    case,
    column,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import TableValuedAlias

from worker import store
from worker.models import influxdb_nodes, tenants
from worker.node_config import NodeConfig
from worker.states import RESERVED_ONLY

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeUsage:
    """One node's slots as placement sees them."""

    node: NodeConfig
    used: int  # tenants holding a slot on it, by our count
    full: bool  # marked full by a 422 and not seen with room since
    unavailable: bool = False  # its listing failed or it refused us; not listed well since
    refused_limit: int | None = None  # the limit it named in its last 422
    others: int = 0  # databases not ours its last listing saw there: slots taken all the same

    @property
    def free(self) -> int:
        return 0 if self.full else max(0, self.node.database_limit - self.used - self.others)

    @property
    def overstated(self) -> int | None:
        """The limit the server named, where the nodes file says more (for operators)."""
        named = self.refused_limit
        return named if named is not None and named < self.node.database_limit else None


def node_rows(conn: Connection) -> dict[str, Row[Any]]:
    """Every server's row in ``influxdb_nodes`` by name: its slot count, its marks and what
    the last listing saw there (one small read for reports that need several of them)."""
    return {row.name: row for row in conn.execute(select(influxdb_nodes))}


def usage(
    conn: Connection, nodes: Iterable[NodeConfig], rows: dict[str, Row[Any]] | None = None
) -> list[NodeUsage]:
    """Slots used and free per configured node, from the nodes' counts (no lock); ``rows``
    when the caller has already read them (``node_rows``)."""
    known = node_rows(conn) if rows is None else rows
    return [
        NodeUsage(
            node,
            row.placed,
            row.full_since is not None,
            row.unavailable_since is not None,
            row.refused_limit,
            row.other_databases or 0,
        )
        if (row := known.get(node.name)) is not None
        else NodeUsage(node, 0, False)
        for node in nodes
    ]


def place_tenant(
    conn: Connection, tenant_id: str, nodes: Iterable[NodeConfig], exclude: set[str]
) -> str | None:
    """Reserve a slot for ``tenant_id`` on the least-used node with room (ties: by name), if
    it is still pending and not placed (else nothing is reserved).

    Commits. Returns the node's name, or None when no node outside ``exclude`` has room.
    """
    name = choose_node(conn, nodes, exclude)
    if name is not None:
        store.reserve_slot(conn, tenant_id, name)  # the trigger counts it
        conn.commit()  # releases the node's row with the reservation made
    return name


def reserved_only(row: Any) -> bool:
    """The tenant's node is a slot the un-wait reserved (``worker.node_marks``), and nothing of
    it was sent there since (``states.RESERVED_ONLY``; asked to delete such a tenant, the store
    lets the slot go at once)."""
    values = RESERVED_ONLY.items()
    return row.influxdb_node is not None and all(getattr(row, k) == v for k, v in values)


def has_room(conn: Connection, node: NodeConfig) -> bool:
    """Whether ``node`` has a slot free by our count (ours and the others' databases) under
    this process's limit, whatever its full mark (a deletion there has just freed one)."""
    taken = conn.execute(select(_TAKEN).where(_NODE.name == node.name)).scalar()
    return taken is not None and taken < node.database_limit


class NoFreeNode(Exception):
    """No node with room was free at once (none has room, or another placer holds each one
    that has): the caller goes the long way, :func:`choose_node` and then the start alone."""


def start_on_free_node(conn: Connection, start: Update, nodes: Sequence[NodeConfig]) -> str | None:
    """``start`` (an attempt's start: ``store.update_statement``) with the tenant placed on
    the least-used of the answering ``nodes`` (this process's) that has room and that no other
    placer holds, in one statement. The node's name; None when ``start``'s guard failed
    (nothing is placed, whatever the room). Raises NoFreeNode (then a marked node may be
    chosen)."""
    # Room by this process's limits too, not only by the rows, which another process may
    # have written from another nodes file: the file joined as two arrays, one parameter each
    # whatever the number of nodes (a CASE or an IN list of 1,000 nodes cost ~5 ms a run).
    names, limits = [n.name for n in nodes], [n.database_limit for n in nodes]
    file = _file(names, limits)
    mine = select(_NODE.name).join_from(influxdb_nodes, file, file.c.name == _NODE.name)
    free = (
        _least_used(mine.where(~_UNAVAILABLE, file.c.file_limit > _TAKEN))
        .limit(1)
        # Locked as found; its room is checked again on the row as it is once locked.
        .with_for_update(skip_locked=True, of=influxdb_nodes)
        .cte("free")
    )
    chosen = select(free.c.name).scalar_subquery()  # the CTE runs once, however often read
    placed = start.values(influxdb_node=chosen, influxdb_create_sent_to=chosen)
    placed = placed.where(select(free.c.name).exists()).add_cte(free)
    name = conn.execute(placed.returning(tenants.c.influxdb_node)).scalar()
    if name is not None:
        return cast(str, name)
    # Nothing placed: no node was free, or the guard failed. Asked again, the guard tells
    # which: it cannot fail and then hold (a chain handed on, an adoption, a home recorded by
    # the reconciler, a deletion asked: never reverted but by this run).
    # (A SELECT that read both from one WITH grew the worker's memory by ~300 B per run.)
    guard = cast(ColumnElement[bool], start.whereclause)  # every start names its tenant
    if conn.execute(select(tenants.c.tenant_id).where(guard)).first():
        raise NoFreeNode
    return None


def choose_node(conn: Connection, nodes: Iterable[NodeConfig], exclude: set[str]) -> str | None:
    """The least-used node with room outside ``exclude`` (ties: by name), its row locked in
    the open transaction: the caller writes the tenant's ``influxdb_node`` (the trigger counts
    the slot) and commits, or rolls back. None (committed, nothing held) when none has room.
    """
    nodes = tuple(nodes)
    sync_nodes(conn, nodes)
    resynced = False
    # Only this process's nodes: the rows may say what another's file says (a one-off
    # tenantctl run with other settings wrote it down), and a tenant must not be placed
    # where this worker cannot reach it.
    limits = {node.name: node.database_limit for node in nodes}
    mine = {"names": sorted(limits), "exclude": sorted(exclude)}
    for _ in range(ROUNDS):
        candidates = conn.execute(_CANDIDATES, mine).all()
        conn.commit()
        if not candidates and not resynced:
            # Before answering "no room": the rows may have been emptied behind this
            # process's back (a restore, a truncate); write the nodes file down again.
            sync_nodes(conn, nodes, force=True)
            resynced = True
            continue
        if not candidates:
            return None
        # Answering nodes, then the others (only if every answering one filled meanwhile). In
        # each: first pass, skip nodes another placer holds; second, wait for them.
        groups = [[c for c in candidates if c.unavailable == marked] for marked in (False, True)]
        for group, wait in ((group, wait) for group in groups for wait in (False, True)):
            for candidate in group:
                row = conn.execute(
                    select(
                        _TAKEN.label("taken"), _NODE.full_since, _UNAVAILABLE.label("unavailable")
                    )
                    .where(_NODE.name == candidate.name)
                    .with_for_update(skip_locked=not wait)
                ).first()
                if row is None:
                    continue  # held by another placer (first pass)
                limit = limits.get(candidate.name, candidate.database_limit)  # this file's
                room = row.full_since is None and row.taken < limit
                if room and row.unavailable <= candidate.unavailable:  # not marked meanwhile
                    return str(candidate.name)  # still locked: the caller reserves
                conn.commit()  # filled or marked: let it go before locking another (no cycles)
    return None  # every candidate filled under our eyes, round after round


_NODE = influxdb_nodes.c
_UNAVAILABLE = _NODE.unavailable_since.is_not(None)
_TAKEN = _NODE.placed + func.coalesce(_NODE.other_databases, 0)  # slots: ours and the others'


def _least_used(query: Select[Any]) -> Select[Any]:
    """``query`` over the configured nodes with room, answering ones first, then least used
    (ties: by name): the first rows of ix_influxdb_nodes_room, whatever the number of nodes."""
    room = (_NODE.configured, _NODE.full_since.is_(None), _NODE.database_limit > _TAKEN)
    return query.where(*room).order_by(_UNAVAILABLE, _NODE.placed, _NODE.name)


_TEXTS, _INTS = ARRAY(Text), ARRAY(Integer)  # one parameter each, however many nodes


def _file(names: list[str], limits: list[int]) -> TableValuedAlias:
    """This process's nodes file as a table ``(name, file_limit)``, bound as two arrays."""
    arrays = bindparam("file_names", names, _TEXTS), bindparam("file_limits", limits, _INTS)
    columns = column("name", Text), column("file_limit", Integer)
    return func.unnest(*arrays).table_valued(*columns).render_derived(name="file")


CANDIDATES = 16  # enough for concurrent placers to pass each other by
_CANDIDATES = _least_used(
    select(_NODE.name, _NODE.database_limit, _UNAVAILABLE.label("unavailable")).where(
        _NODE.name == any_(bindparam("names", type_=_TEXTS)),
        _NODE.name != all_(bindparam("exclude", type_=_TEXTS)),
    )
).limit(CANDIDATES)
ROUNDS = 3
_synced: tuple[NodeConfig, ...] | None = None  # the nodes file this process last wrote down


def sync_nodes(conn: Connection, nodes: tuple[NodeConfig, ...], force: bool = False) -> bool:
    """Write the nodes file's names and limits into ``influxdb_nodes`` when they changed
    since this process last did (the file changes rarely; every process converges on it).
    ``force``: whatever this process last wrote - another may have written an older file
    since (the reconciler does, each run); rows that already agree are not written. True
    when a row was written (a server added, removed, or its limit changed)."""
    global _synced  # noqa: PLW0603 - a per-process cache of what was written
    if (nodes is _synced or nodes == _synced) and not force:
        return False
    written: Sequence[Any] = ()  # the rows written (a multi-row INSERT's rowcount is -1)
    # One statement, every row it changes taken in name order, as every write of several
    # nodes' rows takes them (no deadlock): the file's servers, and those that left it.
    listed = {node.name for node in nodes}
    left = conn.execute(
        select(_NODE.name).where(_NODE.configured, _NODE.name.not_in(listed))
    ).scalars()
    rows = [{"name": n.name, "database_limit": n.database_limit, "configured": True} for n in nodes]
    rows += [{"name": name, "database_limit": None, "configured": False} for name in left]
    if rows:
        upsert = pg_insert(influxdb_nodes).values(sorted(rows, key=lambda row: row["name"]))
        limit = func.coalesce(upsert.excluded.database_limit, _NODE.database_limit)
        # A limit changed in the file: the one a 422 named is learnt anew.
        changed = and_(_NODE.database_limit.is_not(None), limit != _NODE.database_limit)
        written = conn.execute(
            upsert.on_conflict_do_update(
                index_elements=["name"],
                set_={
                    "configured": upsert.excluded.configured,
                    "database_limit": limit,
                    "refused_limit": case((changed, None), else_=_NODE.refused_limit),
                },
                where=or_(
                    _NODE.configured.is_distinct_from(upsert.excluded.configured),
                    _NODE.database_limit.is_distinct_from(limit),
                ),
            ).returning(_NODE.name)
        ).all()
    conn.commit()
    _synced = nodes
    return bool(written)


def tenants_per_node(rows: dict[str, Row[Any]]) -> dict[str, int]:
    """Tenants holding a slot, per node name - configured or not (a node may have left the
    nodes file while tenants live there), from ``node_rows``."""
    return {name: row.placed for name, row in rows.items() if row.placed > 0}


def repair_counts(conn: Connection) -> dict[str, tuple[int, int]]:
    """Set every node's count to the real number of tenants placed there, where they differ
    (the trigger keeps them equal; a difference means the table was changed around it, e.g.
    truncated). Each node is recounted under its row's lock. Commits; returns what changed,
    as ``{node: (counted, real)}``."""
    real = (
        select(tenants.c.influxdb_node.label("name"), func.count().label("real"))
        .where(tenants.c.influxdb_node.is_not(None))
        .group_by(tenants.c.influxdb_node)
        .subquery()
    )
    suspects = (
        conn.execute(
            select(influxdb_nodes.c.name)
            .select_from(influxdb_nodes.outerjoin(real, real.c.name == influxdb_nodes.c.name))
            .where(influxdb_nodes.c.placed != func.coalesce(real.c.real, 0))
            .union(select(real.c.name).where(real.c.name.not_in(select(influxdb_nodes.c.name))))
        )
        .scalars()
        .all()
    )
    conn.commit()
    repaired: dict[str, tuple[int, int]] = {}
    for name in suspects:
        written_down = pg_insert(influxdb_nodes).values(name=name)
        conn.execute(written_down.on_conflict_do_nothing(index_elements=["name"]))
        counted = conn.execute(
            select(influxdb_nodes.c.placed).where(influxdb_nodes.c.name == name).with_for_update()
        ).scalar_one()
        actual = conn.execute(
            select(func.count()).where(tenants.c.influxdb_node == name)
        ).scalar_one()
        if counted != actual:
            conn.execute(update(influxdb_nodes).where(_NODE.name == name).values(placed=actual))
            repaired[name] = (counted, actual)
            logger.warning("node %s: slot count %d repaired to %d", name, counted, actual)
        conn.commit()
    return repaired


def lock_nodes(conn: Connection, names: Iterable[str]) -> None:
    """Lock these nodes' rows, in name order, in the caller's transaction: before a write that
    changes several nodes' counts (through the trigger), so that it takes them in the order
    every other such write does. A node without a row yet (in the nodes file, not written
    down by a worker yet) gets it now, in that order, as the trigger would write it. The
    caller must hold no tenant's row, and must not wait for one while it holds these (see
    ``worker.reconcile``)."""
    wanted = sorted(set(names))
    if wanted:
        # One statement, rows taken in the VALUES' order; WHERE false: locked, not written.
        upsert = pg_insert(influxdb_nodes).values([{"name": name} for name in wanted])
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=["name"], set_={"name": upsert.excluded.name}, where=false()
            )
        )


def lock_for_move(conn: Connection, tenant_id: str, node: str) -> Row[Any] | None:
    """The tenant's row locked in the caller's transaction (None: no such tenant), for a
    write that moves its slot to ``node``. The slot trigger will take the rows of the servers
    it leaves and goes to: a placer holds a server's row, then writes a tenant's; a worker
    writes a tenant's row, then (the trigger) its server's. So the servers' rows are taken
    first, then the tenant's only if nobody holds it; if somebody does, everything is let go
    (a savepoint) while waiting for it. Where the tenant is, is read unlocked and checked once
    locked. After MOVE_ROUNDS rounds lost to writers of the tenant, the row is taken as it is:
    then a placer holding a server's row at that moment would make Postgres end the cycle."""
    where = tenants.c.tenant_id == tenant_id
    for _ in range(MOVE_ROUNDS):
        found = conn.execute(select(tenants.c.influxdb_node).where(where)).first()
        if found is None:
            return None
        with conn.begin_nested() as taken:
            lock_nodes(conn, [name for name in (node, found.influxdb_node) if name])
            row = store.lock_for_request(conn, tenant_id, skip=True)
            if row is not None and row.influxdb_node == found.influxdb_node:
                return row  # the savepoint is released: its locks stay with the transaction
            taken.rollback()
        if row is None:  # held: wait until it is let go, holding nothing
            with conn.begin_nested() as waited:
                store.lock_for_request(conn, tenant_id)
                waited.rollback()
    return store.lock_for_request(conn, tenant_id)


MOVE_ROUNDS = 10  # each lost only to a write of this tenant's row that committed meanwhile
