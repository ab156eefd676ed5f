"""Each server's slot count is kept in the transaction that takes or frees a slot, so placement
reads one row per server and locks only the one it reserves on: eight placers at once never
over-fill a server. The reconciler repairs a count changed around the trigger."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from api_hooks import adopt_database
from tests.conftest import tenant_row, wait_for
from tests.fast.conftest import blocked_by, insert
from worker import nodes
from worker.db import get_engine
from worker.node_config import NodeConfig
from worker.placement import place_tenant, repair_counts, sync_nodes, usage

NODES = [NodeConfig(f"n{i}", f"http://n{i}", None, 20) for i in range(5)]


def counted(db) -> dict[str, int]:
    return dict(db.execute("SELECT name, placed FROM influxdb_nodes WHERE placed <> 0").fetchall())


def real(db) -> dict[str, int]:
    return dict(
        db.execute(
            "SELECT influxdb_node, count(*) FROM tenants WHERE influxdb_node IS NOT NULL GROUP BY 1"
        ).fetchall()
    )


def test_every_path_that_takes_or_frees_a_slot_keeps_the_count(db):
    # Inserted placed (a row from the UI's table), placed later, released, moved, deleted
    insert(db, "a", node="n0")
    insert(db, "b")
    insert(db, "c", node="n1")
    db.execute("UPDATE tenants SET influxdb_node = 'n0' WHERE tenant_id = 'b'")
    assert counted(db) == {"n0": 2, "n1": 1}
    db.execute("UPDATE tenants SET influxdb_node = NULL WHERE tenant_id = 'a'")
    db.execute("UPDATE tenants SET influxdb_node = 'n2' WHERE tenant_id = 'c'")
    assert counted(db) == {"n0": 1, "n2": 1}
    db.execute("UPDATE tenants SET influxdb_state = 'failed' WHERE tenant_id = 'b'")  # no slot move
    db.execute("DELETE FROM tenants WHERE tenant_id IN ('b', 'c')")
    assert counted(db) == {}
    assert counted(db) == real(db)


def test_eight_placers_at_once_never_over_fill_a_server(db):
    # Given 5 servers of 20 slots and 8 placers with 15 tenants each (120 for 100 slots)
    ids = [f"t{i:03d}" for i in range(120)]
    for tenant_id in ids:
        insert(db, tenant_id)

    def placer(batch: list[str]) -> list[str | None]:
        with get_engine().connect() as conn:
            return [place_tenant(conn, t, NODES, exclude=set()) for t in batch]

    # When they all place at once
    with ThreadPoolExecutor(max_workers=8) as placers:
        chosen = [
            n for result in placers.map(placer, [ids[i::8] for i in range(8)]) for n in result
        ]

    # Then every slot is taken, none twice, and the counts are the real ones
    assert chosen.count(None) == 20
    assert real(db) == {node.name: 20 for node in NODES}
    assert counted(db) == real(db)
    with get_engine().connect() as conn:
        assert all(u.free == 0 for u in usage(conn, NODES))


def test_the_reconciler_repairs_a_count_changed_around_the_trigger(db):
    insert(db, "a", node="n0")
    insert(db, "b", node="n0")
    db.execute("UPDATE influxdb_nodes SET placed = 7 WHERE name = 'n0'")
    db.execute("INSERT INTO influxdb_nodes (name, placed) VALUES ('gone', 3)")
    with get_engine().connect() as conn:
        assert repair_counts(conn) == {"n0": (7, 2), "gone": (3, 0)}
        assert repair_counts(conn) == {}
    assert counted(db) == {"n0": 2}


def test_eight_provisioning_runs_at_once_never_over_fill_a_server(db, world):
    # Given two servers of 3 slots and 10 new tenants (runs place them in one statement each,
    # or the long way when the row they want is held by another run)
    world.add("alpha", limit=3)
    world.add("beta", limit=3)
    ids = [f"r{i:02d}" for i in range(10)]
    for tenant_id in ids:
        insert(db, tenant_id)

    # When eight runs provision them at once
    with ThreadPoolExecutor(max_workers=8) as runs:
        results = [outcome.result.value for outcome in runs.map(world.provision, ids)]

    # Then six are provisioned, three on each server, and four wait for capacity
    assert results.count("provisioned") == 6
    assert results.count("waiting_for_capacity") == 4
    assert real(db) == {"alpha": 3, "beta": 3}
    assert counted(db) == real(db)
    for name in ("alpha", "beta"):
        assert len(world.servers[name].databases()) == 3


def placer(node: str) -> tuple[str, str]:  # a server's row, then a tenant's
    return (
        f"SELECT 1 FROM influxdb_nodes WHERE name = '{node}' FOR UPDATE",
        "UPDATE tenants SET name = 'placed' WHERE tenant_id = 'acme'",
    )


def worker(node: str) -> tuple[str, str]:  # a tenant's row, then (the slot trigger) a server's
    return (
        "UPDATE tenants SET name = 'placed' WHERE tenant_id = 'acme'",
        f"UPDATE influxdb_nodes SET placed = placed WHERE name = '{node}'",
    )


@pytest.mark.parametrize("other", [placer, worker])
@pytest.mark.parametrize(
    ("start", "held"), [(None, "beta"), ("alpha", "alpha")], ids=["unplaced", "moved"]
)
def test_an_adoption_does_not_deadlock_with_a_placer_or_a_worker(
    db, world, broker, monkeypatch, other, start, held
):
    # Given a tenant without a server (or on alpha), and another transaction that has taken
    # the first of its two rows (a placer: a server's; a worker: the tenant's)
    world.add("alpha")
    world.add("beta")
    insert(db, "acme", state="failed", node=start)
    with get_engine().connect() as conn:
        sync_nodes(conn, world.pool().nodes(), force=True)

    # When an operator adopts beta's database, moving the tenant's slot there, and the other
    # transaction then takes its second row
    outcome = adopt_while_held(db, world, monkeypatch, "beta", *other(held))

    # Then neither was aborted: the adoption never held a server's row while it waited for
    # the tenant's, nor the tenant's while it waited for a server's
    assert outcome == {"queued": True}, outcome
    row = tenant_row(db, "acme")
    assert (row["influxdb_node"], row["influxdb_adopt"], row["name"]) == ("beta", "any", "placed")
    assert counted(db) == {"beta": 1}


def test_an_adoption_onto_a_server_not_written_down_yet_does_not_deadlock_with_its_writer(
    db, world, broker, monkeypatch
):
    # Given a tenant on beta, and alpha in the nodes file but without a row yet, which a
    # worker is writing down (alpha's new row, then beta's: name order)
    world.add("alpha")
    world.add("beta")
    insert(db, "acme", state="failed", node="beta")
    writing = (
        "INSERT INTO influxdb_nodes (name, database_limit, configured) VALUES ('alpha', 5, true)",
        "UPDATE influxdb_nodes SET configured = true WHERE name = 'beta'",
    )

    # When an operator adopts alpha's database meanwhile
    outcome = adopt_while_held(db, world, monkeypatch, "alpha", *writing)

    # Then neither was aborted: the adoption took alpha's row, as new, before beta's
    assert outcome == {"queued": True}, outcome
    assert tenant_row(db, "acme")["influxdb_node"] == "alpha"
    assert counted(db) == {"alpha": 1}


def test_a_freed_slot_never_counts_below_zero(db):
    # Given a tenant on alpha whose server's row was rebuilt with no slot counted (a restore
    # emptied the table; the row was written again before the tenant's move)
    insert(db, "acme", state="failed", node="alpha")
    db.execute("UPDATE influxdb_nodes SET placed = 0 WHERE name = 'alpha'")

    # When the tenant moves to beta
    db.execute("UPDATE tenants SET influxdb_node = 'beta' WHERE tenant_id = 'acme'")

    # Then alpha counts none, not -1 (which would let placement put one more there)
    rows = db.execute("SELECT name, placed FROM influxdb_nodes ORDER BY 1").fetchall()
    assert rows == [("alpha", 0), ("beta", 1)]


def test_writing_down_the_nodes_file_takes_the_rows_in_name_order(db, world):
    # Given alpha, which left the nodes file, and beta, in it; a transaction holding alpha's
    # row that will then write beta's (as an adoption off alpha onto beta does)
    world.add("beta")
    db.execute(
        "INSERT INTO influxdb_nodes (name, database_limit, configured) "
        "VALUES ('alpha', 5, true), ('beta', 5, true)"
    )

    def write_down() -> bool:
        with get_engine().connect() as conn:
            sync_nodes(conn, world.pool().nodes(), force=True)
        return True

    # When a worker writes the nodes file down meanwhile, and the holder then writes beta
    outcome = while_held(
        db,
        ("written", write_down),
        "SELECT 1 FROM influxdb_nodes WHERE name = 'alpha' FOR UPDATE",
        "UPDATE influxdb_nodes SET placed = placed WHERE name = 'beta'",
    )

    # Then neither was aborted: the worker took alpha's row (leaving) before beta's
    assert outcome == {"written": True}, outcome
    rows = db.execute("SELECT name, configured, database_limit FROM influxdb_nodes ORDER BY 1")
    assert rows.fetchall() == [("alpha", False, 5), ("beta", True, 5)]


def adopt_while_held(db, world, monkeypatch, node: str, first: str, then: str) -> dict[str, Any]:
    """Adopt acme's database on ``node`` while another transaction holds a row (see
    :func:`while_held`); ``queued``: the adoption's answer."""
    monkeypatch.setattr(nodes, "_shared", world.pool())  # the hooks' pool is the world's
    monkeypatch.setattr(nodes, "_shared_pid", os.getpid())
    return while_held(db, ("queued", lambda: adopt_database("acme", node)), first, then)


def while_held(db, action: tuple[str, Callable[[], Any]], first: str, then: str) -> dict[str, Any]:
    """Run ``action`` (a name, a call) in a thread while another transaction, having run
    ``first``, holds a row; once the call waits for it, that transaction runs ``then`` and
    commits. What happened: the call's answer under its name, or the exception that aborted
    a side (a deadlock: ``action`` or ``other``)."""
    name, call = action
    holder = psycopg.connect(db.info.dsn)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome[name] = call()
        except Exception as exc:  # a deadlock: Postgres aborted the call
            outcome["action"] = exc

    runner = threading.Thread(target=run, daemon=True)
    try:
        holder.execute(first)
        runner.start()
        wait_for(lambda: outcome or blocked_by(db, holder.info.backend_pid), what=name)
        try:
            holder.execute(then)
            holder.commit()
        except Exception as exc:  # a deadlock: Postgres aborted the other transaction
            outcome["other"] = exc
    finally:
        holder.close()
        runner.join(timeout=20)
    return outcome
