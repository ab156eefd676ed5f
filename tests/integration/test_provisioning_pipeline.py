"""The provisioning pipeline end to end: operator API -> Postgres -> Redis -> worker -> InfluxDB.

Every test runs against real Postgres, real Redis, a real Celery worker process and the
InfluxDB stand-in over HTTP. Nothing in our own code paths is mocked.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from tests.conftest import (
    INFLUX_TOKEN,
    OPERATOR_TOKEN,
    new_tenant_id,
    tenant_row,
    wait_for,
    wait_for_state,
)
from worker.identity import marker_timestamp_ns
from worker.tasks import provision_tenant_influxdb


def query_sql(influx: Any, database: str, sql: str) -> requests.Response:
    return requests.get(
        f"{influx.url}/api/v3/query_sql",
        params={"db": database, "q": sql, "format": "json"},
        headers={"Authorization": f"Bearer {INFLUX_TOKEN}"},
        timeout=5,
    )


def test_created_tenant_is_provisioned_with_marker_point(api, db, influx, worker_process):
    # Given a healthy InfluxDB
    tenant_id = new_tenant_id()

    # When the operator creates a tenant
    response = api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Acme"})

    # Then the API answers at once with a pending, queued tenant
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["tenant_id"] == tenant_id
    assert body["status"] == "created"
    assert body["influxdb"]["state"] == "pending"
    assert body["influxdb"]["queued"] is True

    # And the worker provisions it: database created once, marker written
    row = wait_for_state(db, tenant_id, "provisioned")
    assert row["influxdb_attempts"] == 1
    assert row["influxdb_provisioned_at"] is not None
    assert row["influxdb_last_error"] is None
    database = f"telemetry_{tenant_id}"
    assert database in influx.databases()
    assert influx.create_calls(database) == 1

    # And the platform's own verification query finds the marker row
    marker = query_sql(influx, database, "SELECT * FROM _init LIMIT 1")
    assert marker.status_code == 200
    rows = marker.json()
    assert len(rows) == 1
    assert rows[0]["tenant"] == tenant_id
    assert rows[0]["initialized"] == 1

    # And the stats endpoint shows the stored state next to the live check
    stats = api.get(f"/operator/tenants/{tenant_id}/stats")
    assert stats.status_code == 200
    influxdb = stats.json()["influxdb"]
    assert influxdb["state"] == "provisioned"
    assert influxdb["database"] == database
    assert influxdb["live"]["exists"] is True
    assert influxdb["live"]["telemetry_count"] == 0
    assert influxdb["live"]["error"] is None


def test_rerun_for_provisioned_tenant_changes_nothing(api, db, influx, worker_process):
    # Given a provisioned tenant
    tenant_id = new_tenant_id()
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Acme"})
    before = wait_for_state(db, tenant_id, "provisioned")
    creates = influx.create_calls()

    # When the operator asks for provisioning again
    response = api.post(f"/operator/tenants/{tenant_id}/influxdb/retry")
    assert response.status_code == 202
    assert response.json() == {"tenant_id": tenant_id, "queued": True}

    # Then the worker only verifies: no create call, no change to the row
    wait_for(
        lambda: influx.request_count("GET", "/api/v3/configure/database") >= 1,
        what="the re-run to verify the database",
    )
    time.sleep(0.5)
    assert influx.create_calls() == creates
    after = tenant_row(db, tenant_id)
    queued_again = after.pop("influxdb_enqueued_at") > before.pop("influxdb_enqueued_at")
    assert queued_again  # the retry was published and recorded ...
    assert after == before  # ... and the run itself changed nothing


def test_second_full_run_finds_409_and_overwrites_the_marker(api, db, influx, worker_process):
    # Given a provisioned tenant that Postgres believes is owed work again
    tenant_id = new_tenant_id()
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Acme"})
    row = wait_for_state(db, tenant_id, "provisioned")
    database = f"telemetry_{tenant_id}"
    db.execute("UPDATE tenants SET influxdb_state = 'pending' WHERE tenant_id = %s", (tenant_id,))

    # When provisioning runs again in full
    provision_tenant_influxdb.delay(tenant_id)
    row = wait_for(
        lambda: (
            (r := tenant_row(db, tenant_id))
            and r["influxdb_state"] == "provisioned"
            and r["influxdb_attempts"] == 2
            and r
        ),
        what="the second run",
    )

    # Then the create answered 409 (already there) and the marker was overwritten, not added
    assert influx.create_calls(database) == 2
    assert influx.databases() == [database]
    markers = query_sql(influx, database, "SELECT * FROM _init").json()
    assert len(markers) == 1
    assert marker_timestamp_ns(row["created_at"]) > 0


def test_influxdb_down_at_creation_retries_then_provisions(api, db, influx, worker_process):
    # Given InfluxDB refuses connections
    influx.set_outage(True)
    tenant_id = new_tenant_id()

    # When the operator creates a tenant, the API answers at once
    started = time.monotonic()
    response = api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Down"})
    elapsed = time.monotonic() - started
    assert response.status_code == 201
    assert elapsed < 2.0, f"create took {elapsed:.2f}s while InfluxDB was down"

    # Then the tenant is retrying, with a reason, and its attempts grow
    row = wait_for(
        lambda: (r := tenant_row(db, tenant_id)) and r["influxdb_attempts"] >= 2 and r,
        what="two failed attempts",
    )
    assert row["influxdb_state"] in ("retrying", "provisioning")
    wait_for_state(db, tenant_id, "retrying")
    row = tenant_row(db, tenant_id)
    assert row["influxdb_error_reason"] == "unreachable"
    assert "connection refused" in row["influxdb_last_error"]
    assert row["influxdb_next_attempt_at"] is not None

    # When InfluxDB comes back, the tenant ends provisioned
    influx.set_outage(False)
    row = wait_for_state(db, tenant_id, "provisioned")
    assert row["influxdb_attempts"] >= 2
    assert row["influxdb_error_reason"] is None
    assert f"telemetry_{tenant_id}" in influx.databases()


def test_sixth_tenant_on_a_full_server_waits_for_capacity(api, db, influx, worker_process):
    # Given a Core server with its 5 databases used by 5 tenants
    first_five = [new_tenant_id() for _ in range(5)]
    for tenant_id in first_five:
        assert api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "x"}).is_success
    for tenant_id in first_five:
        wait_for_state(db, tenant_id, "provisioned")

    # When a sixth tenant is created
    sixth = new_tenant_id()
    api.post("/operator/tenants", json={"tenant_id": sixth, "name": "one too many"})

    # Then it waits for capacity with the reason: no attempt, no call to the full server
    row = wait_for_state(db, sixth, "waiting_for_capacity")
    assert row["influxdb_error_reason"] == "database_limit"
    assert "no InfluxDB node has room" in row["influxdb_last_error"]
    assert row["influxdb_attempts"] == 0
    assert row["influxdb_node"] is None
    time.sleep(1.5)  # longer than the test backoff cap: a retry loop would show by now
    row = tenant_row(db, sixth)
    assert row["influxdb_state"] == "waiting_for_capacity"
    assert row["influxdb_attempts"] == 0
    assert influx.create_calls(f"telemetry_{sixth}") == 0
    assert len(influx.databases()) == 5


def test_rejected_token_fails_as_unauthorized_and_no_token_is_stored(
    api, db, influx, worker_process
):
    # Given InfluxDB expects a different token than ours
    influx.set_token("some-other-token")
    tenant_id = new_tenant_id()

    # When a tenant is created
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Locked out"})

    # Then it fails permanently as unauthorized after one attempt
    row = wait_for_state(db, tenant_id, "failed")
    assert row["influxdb_error_reason"] == "unauthorized"
    assert row["influxdb_attempts"] == 1
    assert row["influxdb_node"] is None  # the create was refused: no slot is held

    # And no token text is stored anywhere in the row, nor in the worker's log
    for value in row.values():
        assert INFLUX_TOKEN not in str(value)
        assert OPERATOR_TOKEN not in str(value)
    log = worker_process.log()
    assert tenant_id in log  # the log is the one we think it is
    assert INFLUX_TOKEN not in log
    assert OPERATOR_TOKEN not in log

    # And an operator retry after the token is fixed provisions it, with fresh attempts
    influx.set_token(INFLUX_TOKEN)
    assert api.post(f"/operator/tenants/{tenant_id}/influxdb/retry").status_code == 202
    row = wait_for_state(db, tenant_id, "provisioned")
    assert row["influxdb_attempts"] == 1


def test_concurrent_tasks_for_one_tenant_make_one_create_call(api, db, influx, worker_process):
    # Given a slow InfluxDB, so that runs overlap in the 4 worker processes
    influx.set_latency(0.3)
    tenant_id = new_tenant_id()
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Storm"})

    # When 30 more provisioning tasks for the same tenant arrive at once
    for _ in range(30):
        provision_tenant_influxdb.delay(tenant_id)

    # Then exactly one create call reached InfluxDB, and one database exists
    wait_for_state(db, tenant_id, "provisioned")
    time.sleep(3)  # let the duplicates drain
    database = f"telemetry_{tenant_id}"
    assert influx.create_calls(database) == 1
    assert influx.databases() == [database]
    assert tenant_row(db, tenant_id)["influxdb_attempts"] == 1


def test_hanging_influxdb_never_slows_the_api(api, db, influx, worker_process):
    # Given InfluxDB accepts connections and never answers
    influx.set_hang(True)
    tenant_id = new_tenant_id()

    # When the operator creates the tenant and reads its stats
    started = time.monotonic()
    created = api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Hang"})
    create_seconds = time.monotonic() - started
    # (once placed: before, the live check asks no server)
    wait_for(lambda: (r := tenant_row(db, tenant_id)) and r["influxdb_node"], what="placement")
    started = time.monotonic()
    stats = api.get(f"/operator/tenants/{tenant_id}/stats")
    stats_seconds = time.monotonic() - started

    # Then creation is immediate and the stats answer within the live-check timeout (0.5 s)
    assert created.status_code == 201
    assert create_seconds < 2.0
    assert stats.status_code == 200
    assert stats_seconds < 1.5
    live = stats.json()["influxdb"]["live"]
    assert live["exists"] is None
    assert live["error"].startswith("timeout")

    # And the worker records the timeouts as transient
    row = wait_for(
        lambda: (r := tenant_row(db, tenant_id)) and r["influxdb_error_reason"] and r,
        what="a recorded timeout",
    )
    assert row["influxdb_error_reason"] == "timeout"
    influx.set_hang(False)
    wait_for_state(db, tenant_id, "provisioned")


def test_transient_errors_give_up_after_max_attempts(api, db, influx, worker_process):
    # Given InfluxDB answers every request with a 5xx
    influx.set_faults(error_rate=1.0)
    tenant_id = new_tenant_id()

    # When a tenant is created
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Unlucky"})

    # Then it is retried up to the maximum (6 in tests), then failed with the reason
    row = wait_for_state(db, tenant_id, "failed", timeout=30)
    assert row["influxdb_attempts"] == 6
    assert row["influxdb_error_reason"] == "server_error"
    assert row["influxdb_last_error"].startswith("gave up after 6 attempts")


def test_stats_for_unknown_tenant_is_404(api, db):
    response = api.get("/operator/tenants/nobody/stats")
    assert response.status_code == 404
    assert "does not exist" in response.json()["detail"]


def test_live_check_counts_telemetry_rows(api, db, influx, worker_process):
    # Given a provisioned tenant that has sent three telemetry points
    tenant_id = new_tenant_id()
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Busy"})
    wait_for_state(db, tenant_id, "provisioned")
    database = f"telemetry_{tenant_id}"
    lines = "\n".join(f"telemetry,device=d{i} temp={20 + i} {1_700_000_000 + i}" for i in range(3))
    written = requests.post(
        f"{influx.url}/api/v3/write_lp",
        params={"db": database, "precision": "s"},
        data=lines,
        headers={"Authorization": f"Token {INFLUX_TOKEN}"},
        timeout=5,
    )
    assert written.status_code == 204

    # When the stats are read, the live check counts them
    live = api.get(f"/operator/tenants/{tenant_id}/stats").json()["influxdb"]["live"]
    assert live == {**live, "exists": True, "telemetry_count": 3, "error": None}

    # And when the database disappears, the live check says so
    influx.delete_database(database)
    live = api.get(f"/operator/tenants/{tenant_id}/stats?live=true").json()["influxdb"]["live"]
    assert live["exists"] is False
    assert live["telemetry_count"] is None


def test_operator_api_requires_the_operator_token(api, db):
    api.headers.pop("Authorization")
    assert api.post("/operator/tenants", json={"tenant_id": "a", "name": "a"}).status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert api.get("/operator/tenants/a/stats", headers=wrong).status_code == 401
    assert api.post("/operator/tenants/a/influxdb/retry", headers=wrong).status_code == 401
    with db.cursor() as cur:
        assert cur.execute("SELECT count(*) FROM tenants").fetchone() == (0,)


def test_a_threads_pool_worker_provisions_a_burst_each_database_once(
    api, db, influx, custom_worker
):
    # Given a worker running its tasks in 16 threads of one process (the pool kind the README
    # offers for I/O-bound bursts), and an InfluxDB that takes 50 ms per call
    influx.set_database_limit(1000)
    influx.set_latency(0.05)
    worker = custom_worker(concurrency=16, pool="threads", INFLUXDB_DATABASE_LIMIT="1000")
    tenant_ids = [new_tenant_id("threads") for _ in range(40)]

    # When 40 tenants are created at once
    for tenant_id in tenant_ids:
        response = api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "T"})
        assert response.status_code == 201, response.text

    # Then every one is provisioned, its database created exactly once, its marker written
    def all_provisioned() -> bool:
        rows = [tenant_row(db, t) for t in tenant_ids]
        return all(r is not None and r["influxdb_state"] == "provisioned" for r in rows)

    wait_for(all_provisioned, timeout=60, what="40 tenants provisioned by the threads pool")
    for tenant_id in tenant_ids:
        assert influx.creations(f"telemetry_{tenant_id}") == 1
    # And it was the threads pool that ran them
    assert "concurrency: 16 (thread)" in worker.log()
