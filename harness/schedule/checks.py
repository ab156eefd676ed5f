"""The invariants, judged from what is: the tenants' rows and slot counts in Postgres, and the
databases, markers and points on every server (read in this process, whatever the server's
faults). Each check returns violations as sentences; the runner stops at the first one.

Always (after every step):

- ``slots``: every server's slot count equals the tenants that name it (one statement);
- ``limit``: no server holds more tenants, or databases, than its limit;
- ``one-database``: a tenant's database exists on no server but its recorded one (databases
  we made by hand aside);
- ``identity``: a provisioned tenant's database is on its server and its ``_init`` marker
  carries the tenant's incarnation (and, unless an operator adopted it, no other marker);
- ``isolation``: a provisioned tenant's database holds no point of another tenant or of an
  earlier incarnation of its id (hand-made points only after an operator's adopt);
- ``orphan``: no database of no tenant exists, except hand-made ones.

At a quiet point, once faults have stopped (``settled``): every tenant in a final state
within the bound, exactly the ids the schedule created and did not delete have rows (a
deletion settles with the row gone), and ``waiting_for_capacity`` only while no configured
server has room.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.schedule.system import LIMIT, System

PREFIX = "telemetry_"
RESUMABLE = ("unreachable", "timeout", "server_error")
FINAL = ("provisioned", "waiting_for_capacity")


@dataclass(frozen=True)
class Row:
    tenant: str
    state: str
    node: str | None
    incarnation: str
    adopt: str | None
    reason: str | None

    @property
    def database(self) -> str:
        return PREFIX + self.tenant

    @property
    def final(self) -> bool:
        return self.state in FINAL or (self.state == "failed" and self.reason not in RESUMABLE)


@dataclass
class World:
    """One look at everything: servers first, then Postgres (see ``confirmed``)."""

    databases: dict[str, dict[str, tuple[list[dict[str, object]], list[dict[str, object]]]]]
    rows: dict[str, Row]
    slots: list[tuple[str, int, int]]  # node, our count, the real count


def look(system: System) -> World:
    databases = {
        name: {db: (server.rows(db, "_init"), server.rows(db, "telemetry")) for db in dbs}
        for name, server in system.nodes.items()
        for dbs in [server.databases()]
    }
    rows = {
        r[0]: Row(*r)
        for r in system.query(
            "SELECT tenant_id, influxdb_state, influxdb_node, influxdb_incarnation, "
            "influxdb_adopt, influxdb_error_reason FROM tenants"
        )
    }
    slots = [
        (str(name), int(placed), int(real))
        for name, placed, real in system.query(
            "SELECT coalesce(n.name, t.node), coalesce(n.placed, 0), coalesce(t.real, 0) "
            "FROM influxdb_nodes n FULL JOIN (SELECT influxdb_node AS node, count(*) AS real "
            "FROM tenants WHERE influxdb_node IS NOT NULL GROUP BY influxdb_node) t "
            "ON t.node = n.name"
        )
    ]
    return World(databases, rows, slots)


def always(
    world: World, handmade: set[tuple[str, str]], adopted: set[tuple[str, str]]
) -> list[str]:
    """The invariants that hold at every moment, faults or not. ``adopted``: (tenant,
    incarnation) an operator's adopt was accepted for - its database may hold hand-made
    points and the hand-made marker beside the tenant's own."""
    found: list[str] = []
    for node, placed, real in world.slots:
        if placed != real:
            found.append(f"slots: node {node} counts {placed} slots, {real} tenants hold one")
        if real > LIMIT:
            found.append(f"limit: node {node} holds {real} tenants, over its limit {LIMIT}")
    for node, dbs in world.databases.items():
        if len(dbs) > LIMIT:
            found.append(f"limit: node {node} has {len(dbs)} databases, over its limit {LIMIT}")
        for db in dbs:
            if (node, db) in handmade:
                continue
            owner = world.rows.get(db.removeprefix(PREFIX)) if db.startswith(PREFIX) else None
            if owner is None:
                found.append(f"orphan: {db} on node {node} belongs to no tenant")
            elif owner.node != node:
                found.append(
                    f"one-database: {db} is on node {node}, but tenant {owner.tenant} "
                    f"({owner.state}) is recorded on {owner.node}"
                )
    for row in world.rows.values():
        if row.state == "provisioned":
            found.extend(_provisioned(world, row, handmade, adopted))
    return found


def _provisioned(
    world: World, row: Row, handmade: set[tuple[str, str]], adoptions: set[tuple[str, str]]
) -> Iterable[str]:
    held = world.databases.get(row.node or "", {}).get(row.database)
    if held is None:
        yield f"identity: provisioned tenant {row.tenant} has no database on node {row.node}"
        return
    markers, points = held
    incarnations = {str(m.get("incarnation")) for m in markers}
    adopted = row.adopt == "any" or (row.tenant, row.incarnation) in adoptions
    if row.incarnation not in incarnations:
        yield (
            f"identity: tenant {row.tenant}'s database on {row.node} does not carry its "
            f"incarnation {row.incarnation} (markers: {sorted(incarnations)})"
        )
    elif not adopted and incarnations != {row.incarnation}:
        others = sorted(incarnations - {row.incarnation})
        yield (
            f"identity: tenant {row.tenant} (incarnation {row.incarnation}) is provisioned on "
            f"a database on {row.node} that also carries another's marker (incarnation(s) "
            f"{', '.join(others)}; None: made by hand or by the inline code)"
        )
    for point in points:
        own = point.get("tenant") == row.tenant and point.get("inc") == row.incarnation
        if not own and not (adopted and point.get("inc") == "handmade"):
            yield (
                f"isolation: tenant {row.tenant} (incarnation {row.incarnation}) reads a point "
                f"of tenant {point.get('tenant')} incarnation {point.get('inc')} on {row.node}"
            )
            return
    if (row.node, row.database) in handmade and not adopted:
        yield f"identity: tenant {row.tenant} was given a hand-made database on {row.node}"


def settled(world: World, live: set[str], listed: set[str]) -> list[str]:
    """The invariants of a quiet point, after ``always``."""
    found: list[str] = []
    for row in sorted(world.rows.values(), key=lambda r: r.tenant):
        if not row.final:
            reason = f"/{row.reason}" if row.reason else ""
            found.append(f"settle: tenant {row.tenant} still {row.state}{reason}")
    rows = set(world.rows)
    for tenant in sorted(live - rows):
        found.append(f"lost: tenant {tenant} was created and never deleted, but has no row")
    for tenant in sorted(rows - live):
        state = world.rows[tenant].state
        found.append(f"lost: tenant {tenant} was deleted (or never created), has a row ({state})")
    waiting = sorted(r.tenant for r in world.rows.values() if r.state == "waiting_for_capacity")
    if waiting:
        for node in sorted(listed):
            homed = {r.database for r in world.rows.values() if r.node == node}
            occupied = len(set(world.databases[node]) | homed)
            if occupied < LIMIT:
                found.append(
                    f"capacity: {', '.join(waiting)} wait(s) for capacity while node {node} "
                    f"has room ({occupied} of {LIMIT} used)"
                )
    return found


def not_final(world: World) -> list[Row]:
    return [row for row in world.rows.values() if not row.final]


def fingerprint(world: World) -> tuple[Any, ...]:
    rows = tuple(sorted((r.tenant, r.state, r.node, r.reason) for r in world.rows.values()))
    dbs = tuple(sorted((n, tuple(sorted(d))) for n, d in world.databases.items()))
    return rows, dbs
