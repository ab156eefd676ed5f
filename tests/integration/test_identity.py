"""One tenant, one database: the identity of a tenant's database holds through upgrades, pool
edits, deletions while a server is down, and duplicate messages - on real worker and beat
processes, one or more stand-in servers, and real Postgres and Redis."""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

from tests.conftest import (
    INTERVAL,
    cli,
    existing_database,
    legacy_row,
    new_tenant_id,
    start_beat,
    stop_process,
    telemetry_points,
    tenant_row,
    wait_for,
    wait_for_state,
)


def attempts_of(db: Any, tenant_id: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT attempt, started_at, finished_at, outcome, reason FROM provisioning_attempts "
        "WHERE tenant_id = %s ORDER BY id",
        (tenant_id,),
    ).fetchall()


# -- the identity rule on a 409 ---------------------------------------------------------------


def test_a_database_someone_else_made_is_never_handed_to_a_new_tenant(
    api, db, influx, worker_process
):
    # Given a database of the tenant's future name, made by someone else, holding 7 points
    tenant_id = new_tenant_id("taken")
    database = existing_database(influx, tenant_id)

    # When a tenant of that id is created
    assert api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "n"}).is_success

    # Then it stops as name_taken, naming the server; the foreign data is not counted as its own
    row = wait_for_state(db, tenant_id, "failed")
    assert row["influxdb_error_reason"] == "name_taken"
    assert "node default" in row["influxdb_last_error"]
    assert row["influxdb_node"] == "default"
    stats = api.get(f"/operator/tenants/{tenant_id}/stats").json()["influxdb"]
    assert stats["live"]["telemetry_count"] is None
    assert "name_taken" in stats["live"]["error"]
    assert telemetry_points(influx, database) == 7  # untouched

    # When the operator checks the data and adopts it, the tenant is provisioned with it
    assert api.post(f"/operator/tenants/{tenant_id}/influxdb/adopt").status_code == 202
    row = wait_for_state(db, tenant_id, "provisioned")
    assert telemetry_points(influx, database) == 7
    incarnations = {m.get("incarnation") for m in influx.rows(database, "_init")}
    assert row["influxdb_incarnation"] in incarnations
    assert (
        api.get(f"/operator/tenants/{tenant_id}/stats").json()["influxdb"]["live"][
            "telemetry_count"
        ]
        == 7
    )


def test_a_database_marked_for_another_incarnation_is_name_taken(api, db, influx, worker_process):
    # Given the database of an earlier tenant of the same id, marked with its incarnation
    tenant_id = new_tenant_id("again")
    database = existing_database(influx, tenant_id, incarnation="an-earlier-tenant")

    # When the id is created again, it does not inherit the earlier tenant's data
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "n"})
    row = wait_for_state(db, tenant_id, "failed")
    assert row["influxdb_error_reason"] == "name_taken"
    assert "marked for another tenant" in row["influxdb_last_error"]

    # And once the operator deletes that database and retries, the tenant starts empty
    influx.delete_database(database)
    assert api.post(f"/operator/tenants/{tenant_id}/influxdb/retry").status_code == 202
    wait_for_state(db, tenant_id, "provisioned")
    assert telemetry_points(influx, database) == 0


def test_a_409_after_our_own_unanswered_create_is_ours(api, db, influx, worker_process):
    # Given a server so slow that the worker's create times out (1.5 s) - yet the server
    # goes on and creates the database after the client gave up
    influx.set_latency(2.5)
    tenant_id = new_tenant_id("slow")
    database = f"telemetry_{tenant_id}"
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "n"})
    wait_for(lambda: database in influx.databases(), timeout=15, what="the late create")
    influx.set_latency(0)

    # Then the next create answers 409 for a database without a marker - and it is ours
    row = wait_for_state(db, tenant_id, "provisioned")
    assert row["influxdb_attempts"] >= 2
    assert influx.creations(database) == 1
    assert influx.create_calls(database) >= 2
    markers = influx.rows(database, "_init")
    assert [m["incarnation"] for m in markers] == [row["influxdb_incarnation"]]
    reasons = [a[4] for a in attempts_of(db, tenant_id)]
    assert "timeout" in reasons


# -- where the home is unknown, find it before placing ----------------------------------------


def test_a_row_from_before_the_worker_is_located_not_placed_as_new(api, db, pool, request):
    # Given two servers; the tenant's database (7 points) lives on beta, and its row, from the
    # UI's table, names no server - placement alone would pick alpha (least used, by name)
    alpha = pool.add("alpha")
    beta = pool.add("beta")
    tenant_id = new_tenant_id("old")
    database = existing_database(beta, tenant_id)
    legacy_row(db, tenant_id)

    # While beta does not answer, nothing is placed anywhere
    beta.set_outage(True)
    request.getfixturevalue("pool_processes")
    assert api.post(f"/operator/tenants/{tenant_id}/influxdb/retry").status_code == 202
    time.sleep(INTERVAL + 1)
    row = tenant_row(db, tenant_id)
    assert row["influxdb_node"] is None
    assert row["influxdb_error_reason"] == "unreachable"  # retrying, or stalled once failed
    assert alpha.create_calls() == 0

    # When beta answers again, the tenant is adopted there with its data; alpha is untouched
    beta.set_outage(False)
    row = wait_for_state(db, tenant_id, "provisioned", timeout=20)
    assert row["influxdb_node"] == "beta"
    assert row["influxdb_adopt"] is None
    assert telemetry_points(beta, database) == 7
    assert alpha.create_calls() == 0
    assert alpha.databases() == []
    assert row["influxdb_incarnation"] in {
        m.get("incarnation") for m in beta.rows(database, "_init")
    }


def test_deleting_a_located_tenant_while_its_server_is_down_waits_for_the_server(
    api, db, influx, worker_process, beat
):
    # Given a tenant from the UI's table whose database (7 points) is on the server, no node
    tenant_id = new_tenant_id("del")
    database = existing_database(influx, tenant_id)
    legacy_row(db, tenant_id)

    # When it is deleted while the server refuses connections
    influx.set_outage(True)
    assert api.delete(f"/operator/tenants/{tenant_id}").status_code == 202

    # Then the deletion does not finish: the row stays, with the reason
    time.sleep(3)
    row = tenant_row(db, tenant_id)
    assert row is not None
    assert row["influxdb_state"] == "deprovisioning"
    assert row["influxdb_error_reason"] == "unreachable"

    # When the server is back, the database is found and deleted, then the row goes
    influx.set_outage(False)
    wait_for(lambda: tenant_row(db, tenant_id) is None, timeout=20, what="the deletion")
    assert database not in influx.databases()

    # And the id created again starts empty
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "new"})
    wait_for_state(db, tenant_id, "provisioned")
    assert telemetry_points(influx, database) == 0


def test_deleting_a_name_taken_tenant_leaves_the_other_database_alone(
    api, db, influx, worker_process
):
    tenant_id = new_tenant_id("keep")
    database = existing_database(influx, tenant_id)
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "n"})
    wait_for_state(db, tenant_id, "failed")

    assert api.delete(f"/operator/tenants/{tenant_id}").status_code == 202
    wait_for(lambda: tenant_row(db, tenant_id) is None, what="the row to go")
    assert database in influx.databases()
    assert telemetry_points(influx, database) == 7


# -- a tenant whose server left the pool stays where it is ------------------------------------


def test_a_tenant_whose_server_left_the_nodes_file_stays_there(api, db, pool, request):
    # Given a tenant provisioned on alpha, and beta with room
    alpha = pool.add("alpha")
    beta = pool.add("beta")
    request.getfixturevalue("pool_processes")
    tenant_id = new_tenant_id("stay")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "n"})
    assert wait_for_state(db, tenant_id, "provisioned")["influxdb_node"] == "alpha"
    database = f"telemetry_{tenant_id}"

    # When alpha leaves the nodes file and the operator presses retry
    pool.unlist("alpha")
    assert api.post(f"/operator/tenants/{tenant_id}/influxdb/retry").status_code == 202
    time.sleep(INTERVAL + 1)

    # Then nothing is created elsewhere; the tenant stays on alpha and everything says so
    assert beta.create_calls() == 0
    row = tenant_row(db, tenant_id)
    assert (row["influxdb_state"], row["influxdb_node"]) == ("provisioned", "alpha")
    status = cli(pool, "status", tenant_id)
    assert status["node_configured"] is False
    assert "not configured" in status["live"]["error"]
    nodes = {n["node"]: n for n in cli(pool, "nodes")}
    assert nodes["alpha"]["configured"] is False
    assert nodes["alpha"]["tenants"] == 1

    # And a deletion waits for the server instead of forgetting its database
    assert api.delete(f"/operator/tenants/{tenant_id}").status_code == 202
    time.sleep(INTERVAL + 1)
    row = tenant_row(db, tenant_id)
    assert row["influxdb_state"] == "deprovisioning"
    assert row["influxdb_error_reason"] == "node_not_configured"
    assert database in alpha.databases()

    # When alpha is back, the deletion finishes by itself; nothing needed repair
    pool.relist("alpha")
    wait_for(lambda: tenant_row(db, tenant_id) is None, timeout=INTERVAL + 10, what="deletion")
    assert database not in alpha.databases()
    assert beta.create_calls() == 0


def test_a_worker_that_first_looks_after_the_nodes_file_changed_sees_the_change(
    api, db, pool, custom_worker
):
    # Given a worker started while the nodes file held only alpha, and alpha full (1 of 1)
    alpha = pool.add("alpha", limit=1)
    alpha.create_database("telemetry_someone")
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node) "
        "VALUES ('someone', 's', 'provisioned', 'alpha')"
    )
    custom_worker(concurrency=2, **pool.env())

    # When beta is added before any worker child has used the pool
    pool.add("beta")
    tenant_id = new_tenant_id("fresh")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "n"})

    # Then the new tenant lands on beta instead of waiting for capacity
    row = wait_for_state(db, tenant_id, "provisioned")
    assert row["influxdb_node"] == "beta"


# -- one retry chain per tenant ---------------------------------------------------------------

_ATTEMPT_LINE = re.compile(r"task_id=(\S+)\] attempt failed \(server_error\)")


def test_operator_retries_during_an_outage_replace_the_chain(api, db, influx, custom_worker):
    # Given InfluxDB answering 500 to everything and a worker with a large attempt budget
    worker = custom_worker(
        concurrency=4,
        PROVISION_MAX_ATTEMPTS="60",
        PROVISION_BACKOFF_BASE_SECONDS="0.5",
        PROVISION_BACKOFF_CAP_SECONDS="3",
    )
    influx.set_faults(error_rate=1.0)
    tenant_id = new_tenant_id("chain")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "n"})

    # When the operator presses retry five times during the outage
    for _ in range(5):
        time.sleep(1.5)
        assert api.post(f"/operator/tenants/{tenant_id}/influxdb/retry").status_code == 202
    time.sleep(4)

    # Then the attempts form one chain at a time: each press replaced the chain, none ran beside
    # another - a message's attempts never interleave with another message's
    owners = [
        m.group(1)
        for line in worker.log().splitlines()
        if tenant_id in line and (m := _ATTEMPT_LINE.search(line))
    ]
    blocks = [owner for i, owner in enumerate(owners) if i == 0 or owners[i - 1] != owner]
    assert len(blocks) == len(set(blocks)), f"chains interleaved: {blocks}"
    assert len(set(blocks)) <= 6  # the first message and at most one per press
    attempts = attempts_of(db, tenant_id)
    # One chain with this backoff makes about 8 attempts in 12 s, plus one per press;
    # five parallel chains made about 40.
    assert len(attempts) <= 30, len(attempts)
    for earlier, later in itertools.pairwise(attempts):
        assert later[1] >= earlier[2], "two attempts overlapped"
    influx.set_faults()
    wait_for_state(db, tenant_id, "provisioned")


# -- attempts per episode ---------------------------------------------------------------------


def test_a_repair_after_success_starts_with_a_fresh_budget(db, custom_worker, scripted):
    # Given a server whose list works and whose create answers 500, and a provisioned tenant
    # there whose provisioning once took 5 of its 6 attempts - and whose database is gone
    scripted.answer_route(
        "GET", "/api/v3/configure/database", 200, '[{"iox::database": "_internal"}]'
    )
    scripted.answer_route("POST", "/api/v3/configure/database", 500, "WAL buffer full")
    custom_worker(concurrency=2, INFLUXDB_URL=scripted.url)
    tenant_id = new_tenant_id("budget")
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_attempts, influxdb_node, "
        "influxdb_provisioned_at) VALUES (%s, 'n', 'provisioned', 5, 'default', now())",
        (tenant_id,),
    )

    # When an operator asks for a re-verification, which finds the database missing
    cli(None, "retry", tenant_id)

    # Then the repair is a new episode: its first 500 makes it retry, it is not failed at once.
    # Read from the attempt log: with full jitter the next attempt may follow within
    # milliseconds, faster than the row can be polled.
    first = wait_for(
        lambda: db.execute(
            "SELECT attempt, outcome, reason FROM provisioning_attempts WHERE tenant_id = %s "
            "ORDER BY id LIMIT 1",
            (tenant_id,),
        ).fetchone(),
        what="the repair's first attempt",
    )
    assert first == (1, "retrying", "server_error")


def test_attempts_whose_worker_died_count_and_end_as_worker_lost(db, influx, worker_process):
    # Given a tenant whose last attempts (all 6 of its budget) never finished: its row says
    # provisioning, last touched long ago
    tenant_id = new_tenant_id("lost")
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_attempts, "
        "influxdb_updated_at, influxdb_node) "
        "VALUES (%s, 'n', 'provisioning', 6, now() - interval '1 hour', 'default')",
        (tenant_id,),
    )

    # When the reconciler recovers it, the next run does not start a 7th attempt
    summary = cli(None, "reconcile")
    assert summary["stuck"] >= 1
    row = wait_for_state(db, tenant_id, "failed")
    assert row["influxdb_error_reason"] == "worker_lost"
    assert row["influxdb_last_error"].startswith("gave up after 6 attempts")
    assert influx.create_calls(f"telemetry_{tenant_id}") == 0


# -- no outage is long enough to need a person ------------------------------------------------


def test_a_tenant_failed_by_a_long_outage_resumes_when_the_server_answers(
    api, db, influx, custom_worker, tmp_path
):
    # Given a short budget (3 attempts) and a server that refuses connections
    env = {"PROVISION_MAX_ATTEMPTS": "3"}
    custom_worker(concurrency=2, **env)
    influx.set_outage(True)
    tenant_id = new_tenant_id("long")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "n"})

    # Then it fails after its budget, and stats and metrics show it stalled on that server
    row = wait_for_state(db, tenant_id, "failed")
    assert row["influxdb_error_reason"] == "unreachable"
    stats = api.get(f"/operator/tenants/{tenant_id}/stats?live=false").json()["influxdb"]
    assert stats["stalled_on"] == "default"
    metrics = api.get("/metrics").text
    assert 'tenant_provisioner_stalled_tenants{node="default"} 1.0' in metrics

    # When the server answers again, the reconciler resumes it with a fresh budget: no person
    beat = start_beat(tmp_path / "beat.log", tmp_path / "schedule", env)
    try:
        influx.set_outage(False)
        row = wait_for_state(db, tenant_id, "provisioned", timeout=INTERVAL + 15)
    finally:
        stop_process(beat)
    assert row["influxdb_attempts"] == 1
    stats = api.get(f"/operator/tenants/{tenant_id}/stats?live=false").json()["influxdb"]
    assert stats["stalled_on"] is None


def test_a_permanent_failure_still_waits_for_an_operator(db, influx, worker_process, beat):
    # Given a tenant failed as name_taken (a permanent reason), and a server that answers
    tenant_id = new_tenant_id("perm")
    existing_database(influx, tenant_id)
    db.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, 'n')", (tenant_id,))
    cli(None, "retry", tenant_id)
    wait_for_state(db, tenant_id, "failed")

    # Then reconcile runs leave it failed
    time.sleep(INTERVAL + 1)
    row = tenant_row(db, tenant_id)
    assert (row["influxdb_state"], row["influxdb_error_reason"]) == ("failed", "name_taken")
