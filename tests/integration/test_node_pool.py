"""Outgrowing one server: capacity-aware placement over a pool of stand-in nodes, retention,
and deprovisioning - with real worker and beat processes reading a nodes file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from tests.conftest import (
    INTERVAL,
    ROOT,
    Pool,
    cli,
    new_tenant_id,
    tenant_row,
    wait_for,
    wait_for_state,
)


def states(db: Any, tenant_ids: list[str]) -> dict[str, int]:
    rows = db.execute(
        "SELECT influxdb_state, count(*) FROM tenants WHERE tenant_id = ANY(%s) GROUP BY 1",
        (tenant_ids,),
    ).fetchall()
    return dict(rows)


def assert_never_refused(pool: Pool) -> None:
    # Every create call made a database: no node ever had to answer 422, none holds too many.
    for name, node in pool.nodes.items():
        created = sum(node.creations(d) for d in node.databases())
        assert node.create_calls() == created, f"{name} refused a create"
        assert len(node.databases()) <= pool.limits[name]


def test_three_full_nodes_then_a_fourth(api, db, pool, report, request):
    # Given three Core-like nodes with room for 5 databases each
    for name in ("node-a", "node-b", "node-c"):
        pool.add(name, limit=5)
    request.getfixturevalue("pool_processes")

    # When 20 tenants are created at once
    tenant_ids = [new_tenant_id("pool") for _ in range(20)]
    for tenant_id in tenant_ids:
        assert api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "p"}).is_success

    # Then 15 are provisioned, 5 per node, and 5 wait for capacity (neither failed nor retrying)
    wait_for(
        lambda: states(db, tenant_ids) == {"provisioned": 15, "waiting_for_capacity": 5},
        timeout=30,
        what="15 provisioned and 5 waiting",
    )
    for node in pool.nodes.values():
        assert len(node.databases()) == 5
    assert_never_refused(pool)
    waiting = db.execute(
        "SELECT max(influxdb_attempts) FROM tenants WHERE influxdb_state = 'waiting_for_capacity'"
    ).fetchone()
    assert waiting == (0,)
    report("injected: 20 tenants onto 3 nodes of limit 5; verified 5+5+5 placed, 5 waiting")

    # When a fourth node is added to the nodes file (no restart of anything)
    added_at = time.monotonic()
    pool.add("node-d", limit=5)

    # Then all 20 are provisioned within one reconcile interval (plus the work itself)
    wait_for(
        lambda: states(db, tenant_ids) == {"provisioned": 20},
        timeout=INTERVAL + 5,
        what="all 20 provisioned",
    )
    took = time.monotonic() - added_at
    assert len(pool.nodes["node-d"].databases()) == 5
    assert_never_refused(pool)
    nodes = {n["node"]: n for n in cli(pool, "nodes")}
    assert {n: nodes[n]["tenants"] for n in nodes} == dict.fromkeys(pool.nodes, 5)
    report(f"verified: node-d added, all 20 provisioned {took:.1f}s later; no node over limit")


def test_a_node_filled_by_hand_answers_422_and_the_tenant_lands_elsewhere(
    api, db, pool, request, report
):
    # Given two nodes, the first (least used, first by name) filled by hand outside the worker
    by_hand = pool.add("alpha", limit=5)
    pool.add("beta", limit=5)
    for i in range(5):
        by_hand.create_database(f"manual_{i}")
    request.getfixturevalue("pool_processes")

    # When a tenant is created
    tenant_id = new_tenant_id("hand")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "h"})

    # Then the 422 from alpha is handled: alpha is marked full, the tenant lands on beta
    row = wait_for_state(db, tenant_id, "provisioned")
    assert row["influxdb_node"] == "beta"
    assert f"telemetry_{tenant_id}" in pool.nodes["beta"].databases()
    assert by_hand.create_calls(f"telemetry_{tenant_id}") == 1
    outcomes = db.execute(
        "SELECT outcome, reason FROM provisioning_attempts WHERE tenant_id = %s ORDER BY attempt",
        (tenant_id,),
    ).fetchall()
    assert outcomes == [("node_full", "database_limit"), ("provisioned", None)]
    nodes = {n["node"]: n for n in cli(pool, "nodes")}
    assert nodes["alpha"]["full"] is True
    assert nodes["beta"]["tenants"] == 1

    # And the next tenant goes straight to beta, without asking alpha again
    second = new_tenant_id("hand")
    api.post("/operator/tenants", json={"tenant_id": second, "name": "h"})
    assert wait_for_state(db, second, "provisioned")["influxdb_node"] == "beta"
    assert by_hand.create_calls() == 1
    report("injected: node alpha filled by hand; verified 422 handled, tenants placed on beta")


def test_deleting_a_tenant_frees_its_slot_for_the_next_and_its_id(api, db, pool, request, report):
    # Given a node with room for two tenants, two provisioned and a third waiting
    node = pool.add("solo", limit=2)
    request.getfixturevalue("pool_processes")
    first, second, third = (new_tenant_id("del") for _ in range(3))
    for tenant_id in (first, second):
        api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "d"})
        wait_for_state(db, tenant_id, "provisioned")
    api.post("/operator/tenants", json={"tenant_id": third, "name": "d"})
    wait_for_state(db, third, "waiting_for_capacity")

    # When the first tenant is deleted
    response = api.delete(f"/operator/tenants/{first}")
    assert response.status_code == 202
    assert response.json()["influxdb"]["state"] == "deprovisioning"

    # Then its database is soft-deleted on its node and the tenant is gone
    wait_for(lambda: tenant_row(db, first) is None, what="the tenant row to go")
    assert f"telemetry_{first}" not in node.databases()
    deleted = node.state()["deleted_databases"]
    assert any(name.startswith(f"telemetry_{first}-") for name in deleted)

    # And the freed slot goes to the waiting tenant at once (the deletion places it)
    row = wait_for_state(db, third, "provisioned", timeout=INTERVAL + 5)
    assert row["influxdb_node"] == "solo"
    assert sorted(node.databases()) == sorted([f"telemetry_{second}", f"telemetry_{third}"])

    # And the deleted id can be created again (it waits: the node is full again)
    again = api.post("/operator/tenants", json={"tenant_id": first, "name": "back"})
    assert again.status_code == 201
    wait_for_state(db, first, "waiting_for_capacity")
    assert api.delete("/operator/tenants/nobody").status_code == 404
    report("verified: delete soft-deleted the database, freed the slot, and freed the id")


def test_a_deleted_and_recreated_tenant_takes_the_freed_slot_with_no_reconcile_run(
    api, db, pool, custom_worker, report
):
    # Given two servers of 2 slots, full, a reconcile run that has seen them full, and no beat
    pool.add("n1", limit=2)
    pool.add("n2", limit=2)
    custom_worker(concurrency=4, **pool.env())
    tenant_ids = [new_tenant_id("full") for _ in range(4)]
    for tenant_id in tenant_ids:
        api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "f"})
    wait_for(lambda: states(db, tenant_ids) == {"provisioned": 4}, what="all provisioned")
    assert cli(pool, "reconcile")["ran"]
    full = db.execute("SELECT count(*) FROM influxdb_nodes WHERE full_since IS NOT NULL")
    assert full.fetchone()[0] == 2
    runs = db.execute("SELECT runs_total FROM reconcile_stats").fetchone()[0]
    victim = next(t for t in tenant_ids if tenant_row(db, t)["influxdb_node"] == "n1")

    # When a tenant on n1 is deleted, and its id created again once the deletion is done
    api.delete(f"/operator/tenants/{victim}")
    wait_for(lambda: tenant_row(db, victim) is None, what="the deletion")
    created = time.monotonic()
    assert (
        api.post("/operator/tenants", json={"tenant_id": victim, "name": "again"}).status_code
        == 201
    )

    # Then it is provisioned on n1 within 2 s, and no reconcile run happened in between
    row = wait_for_state(db, victim, "provisioned", timeout=2.0)
    took = time.monotonic() - created
    assert row["influxdb_node"] == "n1"
    assert db.execute("SELECT runs_total FROM reconcile_stats").fetchone()[0] == runs
    report(f"verified: the re-created tenant provisioned on the freed slot in {took:.2f} s")


def test_deleting_when_the_database_is_already_gone_treats_404_as_done(
    api, db, influx, worker_process
):
    tenant_id = new_tenant_id("gone")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "g"})
    wait_for_state(db, tenant_id, "provisioned")
    influx.delete_database(f"telemetry_{tenant_id}")  # behind our back

    assert api.delete(f"/operator/tenants/{tenant_id}").status_code == 202
    wait_for(lambda: tenant_row(db, tenant_id) is None, what="the tenant row to go")
    outcome = db.execute(
        "SELECT outcome FROM provisioning_attempts WHERE tenant_id = %s ORDER BY id DESC LIMIT 1",
        (tenant_id,),
    ).fetchone()
    assert outcome == ("deprovisioned",)


def test_interrupted_deletion_is_finished_by_the_reconciler(api, db, influx, paused_worker):
    # Given a tenant marked deprovisioning whose message never reached a worker
    tenant_id = new_tenant_id("int")
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node) "
        "VALUES (%s, 'i', 'deprovisioning', 'default')",
        (tenant_id,),
    )
    influx.create_database(f"telemetry_{tenant_id}")

    # When a reconcile runs, it queues the deletion again
    result = subprocess.run(
        [sys.executable, "-m", "worker", "--json", "reconcile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    summary = json.loads(result.stdout)
    assert summary["deprovisioning"] == 1
    assert summary["requeued"] == 1
    raw = paused_worker.lrange("provisioning", 0, -1)
    assert len(raw) == 1
    assert json.loads(raw[0])["headers"]["task"] == "worker.tasks.deprovision_tenant_influxdb"


def test_retention_period_is_passed_at_creation_and_validated(api, db, influx, worker_process):
    tenant_id = new_tenant_id("ret")
    created = api.post(
        "/operator/tenants", json={"tenant_id": tenant_id, "name": "r", "retention_period": "30d"}
    )
    assert created.status_code == 201
    wait_for_state(db, tenant_id, "provisioned")
    retention = influx.state()["retention_seconds"][f"telemetry_{tenant_id}"]
    assert retention == 30 * 86400
    stats = api.get(f"/operator/tenants/{tenant_id}/stats").json()["influxdb"]
    assert stats["retention_period"] == "30d"
    assert stats["node"] == "default"

    for bad in ("thirty days", "0d", "30", "-1h", 30):
        response = api.post(
            "/operator/tenants",
            json={"tenant_id": new_tenant_id("ret"), "name": "r", "retention_period": bad},
        )
        assert response.status_code == 422, bad
        assert "retention_period" in response.json()["detail"]
    assert db.execute("SELECT count(*) FROM tenants").fetchone() == (1,)


def test_deleting_a_tenant_while_it_is_being_provisioned_wins(api, db, influx, worker_process):
    # Given a tenant whose provisioning is inside a slow InfluxDB call
    influx.set_latency(1.0)
    tenant_id = new_tenant_id("race")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "r"})
    wait_for_state(db, tenant_id, "provisioning")

    # When the operator deletes it right then (the provisioning run holds the tenant's lock)
    assert api.delete(f"/operator/tenants/{tenant_id}").status_code == 202

    # Then the provisioning run does not bring it back: the tenant and its database go
    wait_for(lambda: tenant_row(db, tenant_id) is None, timeout=30, what="the tenant row to go")
    assert f"telemetry_{tenant_id}" not in influx.databases()
    outcomes = [
        row[0]
        for row in db.execute(
            "SELECT outcome FROM provisioning_attempts WHERE tenant_id = %s ORDER BY id",
            (tenant_id,),
        )
    ]
    assert outcomes[-1] == "deprovisioned"


def test_a_provisioned_tenant_without_a_node_is_located_not_created_again(api, db, pool, request):
    # Given two nodes, and a tenant provisioned before the pool existed: no node recorded,
    # its database on the second node
    pool.add("alpha", limit=5)
    beta = pool.add("beta", limit=5)
    tenant_id = new_tenant_id("old")
    beta.create_database(f"telemetry_{tenant_id}")
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_attempts, "
        "influxdb_provisioned_at) VALUES (%s, 'old', 'provisioned', 1, now())",
        (tenant_id,),
    )
    request.getfixturevalue("pool_processes")

    # When an operator asks to provision it again
    assert api.post(f"/operator/tenants/{tenant_id}/influxdb/retry").status_code == 202

    # Then the worker finds it on beta and records that, creating nothing anywhere
    wait_for(lambda: tenant_row(db, tenant_id)["influxdb_node"] == "beta", what="the node")
    assert tenant_row(db, tenant_id)["influxdb_state"] == "provisioned"
    assert pool.nodes["alpha"].create_calls() == 0
    assert beta.create_calls() == 0
