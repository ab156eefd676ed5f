"""Placement: which InfluxDB server holds a tenant's database, with capacity as a first-class fact.

A tenant holds a slot on a node while ``tenants.influxdb_node`` names it. Slots are counted and
reserved under one transaction-scoped advisory lock, so two workers placing tenants at once
never over-fill a node. A node that answers 422 (its real count disagrees with ours, e.g.
databases made by hand) is marked full until the reconciler sees room on it again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from worker import store
from worker.models import influxdb_nodes, tenants
from worker.settings import NodeConfig

logger = logging.getLogger(__name__)

PLACEMENT_LOCK_KEY = 0x706C_6163_6521  # "place!"


@dataclass(frozen=True)
class NodeUsage:
    """One node's slots as placement sees them."""

    node: NodeConfig
    used: int  # tenants holding a slot on it, by our count
    full: bool  # marked full by a 422 and not seen with room since

    @property
    def free(self) -> int:
        return 0 if self.full else max(0, self.node.database_limit - self.used)


def usage(conn: Connection, nodes: Iterable[NodeConfig]) -> list[NodeUsage]:
    """Slots used and free per configured node (no lock: for reports and estimates)."""
    nodes = list(nodes)
    # Counting every placed tenant is cheaper than filtering on 100 node names; nodes that
    # left the pool are simply not looked up.
    used = tenants_per_node(conn)
    full = set(
        conn.execute(
            select(influxdb_nodes.c.name).where(influxdb_nodes.c.full_since.is_not(None))
        ).scalars()
    )
    return [NodeUsage(n, used.get(n.name, 0), n.name in full) for n in nodes]


def place_tenant(
    conn: Connection, tenant_id: str, nodes: Iterable[NodeConfig], exclude: set[str]
) -> str | None:
    """Reserve a slot for ``tenant_id`` on the least-used node with room (ties: by name).

    Commits. Returns the node's name, or None when no node outside ``exclude`` has room.
    """
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PLACEMENT_LOCK_KEY})
    candidates = [u for u in usage(conn, nodes) if u.free > 0 and u.node.name not in exclude]
    if not candidates:
        conn.commit()
        return None
    chosen = min(candidates, key=lambda u: (u.used, u.node.name)).node.name
    store.reserve_slot(conn, tenant_id, chosen)
    conn.commit()  # releases the lock with the reservation made
    return chosen


def tenants_per_node(conn: Connection) -> dict[str, int]:
    """Tenants holding a slot, per node name - configured or not (a node may have left the
    nodes file while tenants live there)."""
    return dict(
        conn.execute(
            select(tenants.c.influxdb_node, func.count())
            .where(tenants.c.influxdb_node.is_not(None))
            .group_by(tenants.c.influxdb_node)
        ).all()
    )


def mark_full(conn: Connection, node_name: str, now: datetime) -> None:
    """Record that ``node_name`` refused a database (422): place nothing more there for now."""
    conn.execute(
        pg_insert(influxdb_nodes)
        .values(name=node_name, full_since=now)
        .on_conflict_do_update(index_elements=["name"], set_={"full_since": now})
    )
    conn.commit()
    logger.warning("node %s refused a new database (422): marked full", node_name)


def record_observation(conn: Connection, node: NodeConfig, databases: int, now: datetime) -> None:
    """Store what a list call saw; a node seen with room is no longer marked full."""
    has_room = databases < node.database_limit
    values: dict[str, object] = {"observed_databases": databases, "observed_at": now}
    conn.execute(
        pg_insert(influxdb_nodes)
        .values(name=node.name, full_since=None if has_room else now, **values)
        .on_conflict_do_update(
            index_elements=["name"],
            set_={
                **values,
                "full_since": None if has_room else func.coalesce(influxdb_nodes.c.full_since, now),
            },
        )
    )
    conn.commit()
