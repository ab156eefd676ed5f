"""Failure drills: real processes, real faults, and a check that nothing was lost.

Each drill says what it injected and what it verified (printed even under output capture).
They run in the README's test command and in CI; select them alone with ``-m drill``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import statistics
import subprocess
import threading
import time
from typing import Any

import psycopg
import pytest
import requests

from harness import processes
from tests.conftest import (
    INFLUX_TOKEN,
    OPERATOR_TOKEN,
    TEST_ENV,
    concurrent_reconciles,
    new_tenant_id,
    start_api,
    start_beat,
    start_worker,
    stop_consuming,
    stop_process,
    tenant_row,
    wait_for,
    wait_for_state,
)
from worker import app
from worker.queues import PROVISIONING_QUEUE
from worker.tasks import provision_tenant_influxdb

pytestmark = pytest.mark.drill

INTERVAL = float(TEST_ENV["RECONCILE_INTERVAL_SECONDS"])
BASE = float(TEST_ENV["PROVISION_BACKOFF_BASE_SECONDS"])
CAP = float(TEST_ENV["PROVISION_BACKOFF_CAP_SECONDS"])
TIME_LIMIT = float(TEST_ENV["PROVISION_TIME_LIMIT"])
# Enough attempts to ride out the drills' faults (the backoff itself stays the tests', cap 1 s),
# and a server with room for every tenant of a drill.
PATIENT = {"PROVISION_MAX_ATTEMPTS": "100", "INFLUXDB_DATABASE_LIMIT": "1000"}


def create(api: Any, tenant_ids: list[str]) -> None:
    for tenant_id in tenant_ids:
        response = api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "drill"})
        assert response.status_code == 201, response.text


def count_in_state(db: psycopg.Connection[Any], tenant_ids: list[str], state: str) -> int:
    (count,) = db.execute(
        "SELECT count(*) FROM tenants WHERE tenant_id = ANY(%s) AND influxdb_state = %s",
        (tenant_ids, state),
    ).fetchone()
    return int(count)


def wait_all_provisioned(db: psycopg.Connection[Any], ids: list[str], timeout: float) -> float:
    started = time.monotonic()
    try:
        processes.wait_until(
            lambda: count_in_state(db, ids, "provisioned") == len(ids),
            timeout,
            f"all {len(ids)} tenants provisioned",
            0.2,
        )
    except TimeoutError as exc:
        pytest.fail(f"{exc}; not provisioned: {stragglers(db, ids)}")
    return time.monotonic() - started


def stragglers(db: psycopg.Connection[Any], ids: list[str]) -> str:
    """The tenants still short of provisioned, as a failed drill's message names them."""
    rows = db.execute(
        "SELECT tenant_id, influxdb_state, influxdb_attempts, influxdb_last_error FROM tenants "
        "WHERE tenant_id = ANY(%s) AND influxdb_state <> 'provisioned' "
        "ORDER BY influxdb_attempts DESC LIMIT 5",
        (ids,),
    ).fetchall()
    return "; ".join(f"{t} {state} after {n} attempts ({error})" for t, state, n, error in rows)


def assert_created_once(influx: Any, tenant_ids: list[str]) -> None:
    databases = set(influx.databases())
    for tenant_id in tenant_ids:
        database = f"telemetry_{tenant_id}"
        assert database in databases
        assert influx.creations(database) == 1, f"{database} was created more than once"


def test_worker_killed_inside_the_influxdb_call(api, db, influx, custom_worker, tmp_path, report):
    # Given a worker whose InfluxDB calls take 2 s, and 12 tenants being onboarded
    influx.set_database_limit(100)
    influx.set_latency(2.0)
    victim = custom_worker(concurrency=4, **PATIENT)
    tenant_ids = [new_tenant_id("kill") for _ in range(12)]
    create(api, tenant_ids)
    wait_for(lambda: count_in_state(db, tenant_ids, "provisioning") >= 3, what="calls in flight")
    in_flight = count_in_state(db, tenant_ids, "provisioning")

    # When the worker (main process and children) is killed with SIGKILL mid-call
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait(timeout=10)
    report(f"injected: SIGKILL of the worker with {in_flight} tenants inside the InfluxDB call")
    influx.set_latency(0.0)

    # Then a new worker and the reconciler bring every tenant to provisioned
    custom_worker(concurrency=4, **PATIENT)
    beat = start_beat(tmp_path / "beat.log", tmp_path / "schedule")
    try:
        took = wait_all_provisioned(db, tenant_ids, timeout=TIME_LIMIT + 4 * INTERVAL + 20)
    finally:
        stop_process(beat)

    # And each database was created exactly once
    assert_created_once(influx, tenant_ids)
    report(
        f"verified: all {len(tenant_ids)} provisioned {took:.1f}s after restart "
        f"(stuck attempts re-queued after the {TIME_LIMIT:g}s time limit); each database "
        "created once"
    )


# Once a tenant's create has landed, an attempt makes three calls (create, answered 409; read
# the markers; write the marker), each failing half the time here: about one attempt in ten
# succeeds. The longest of 200 such chains is typically 40-60 attempts, and 93 has been seen, so
# the attempts allowed (200 * 0.9**300: about 4e-12 that any tenant runs out) and the time
# allowed (about 1.1 s an attempt alone, that longest chain run end to end) are set for the tail.
FLAPPING = {**PATIENT, "PROVISION_MAX_ATTEMPTS": "300"}


@pytest.mark.timeout(900)
def test_flapping_influxdb_200_tenants(api, db, influx, custom_worker, report):
    # Given InfluxDB answering 30% 5xx, 10% hangs past the read timeout, 10% connection resets
    influx.set_database_limit(1000)
    influx.set_faults(error_rate=0.3, hang_rate=0.1, reset_rate=0.1, seed=20261127)
    report("injected: 30% 5xx, 10% hangs (> 1.5 s read timeout), 10% resets, on every call")
    custom_worker(concurrency=8, **FLAPPING)
    tenant_ids = [new_tenant_id("flap") for _ in range(200)]

    # When 200 tenants are onboarded
    create(api, tenant_ids)

    # Then all end provisioned, within the maximum attempts (a bound on waiting, not a speed
    # target: about 60 s alone on a 2-core machine, set by the longest chain of attempts, each
    # of three calls that fail half the time)
    took = wait_all_provisioned(db, tenant_ids, timeout=840)
    influx.set_faults()
    rows = db.execute(
        "SELECT max(influxdb_attempts), avg(influxdb_attempts) FROM tenants "
        "WHERE tenant_id = ANY(%s)",
        (tenant_ids,),
    ).fetchone()
    assert rows[0] <= int(FLAPPING["PROVISION_MAX_ATTEMPTS"])
    assert_created_once(influx, tenant_ids)

    # And each retry was scheduled within the backoff ceiling, with full jitter, and never
    # ran before its time (an early run would be a second chain); queueing behind hung calls
    # only ever makes a retry later than scheduled
    scheduled: dict[int, list[float]] = {}
    late: list[float] = []
    for attempt, delay, lateness in db.execute(
        "SELECT a.attempt, extract(epoch FROM a.retry_at - a.finished_at), "
        "extract(epoch FROM b.started_at - a.retry_at) "
        "FROM provisioning_attempts a JOIN provisioning_attempts b "
        "ON b.tenant_id = a.tenant_id AND b.attempt = a.attempt + 1 "
        "WHERE a.tenant_id = ANY(%s) AND a.outcome = 'retrying'",
        (tenant_ids,),
    ):
        scheduled.setdefault(attempt, []).append(float(delay))
        late.append(float(lateness))
    summary = []
    for attempt in sorted(scheduled)[:4]:
        ceiling = min(CAP, BASE * 2 ** (attempt - 1))
        values = scheduled[attempt]
        mean = statistics.mean(values)
        summary.append(
            f"after attempt {attempt}: n={len(values)} scheduled mean={mean:.2f}s "
            f"max={max(values):.2f}s (ceiling {ceiling:.2f}s, full jitter mean {ceiling / 2:.2f}s)"
        )
        assert all(0 <= d <= ceiling + 0.001 for d in values), summary[-1]
        if len(values) >= 30:  # the mean of >= 30 uniform draws sits near half the ceiling
            assert 0.3 * ceiling <= mean <= 0.7 * ceiling, summary[-1]
    assert min(late) >= -0.05, f"a retry ran {-min(late):.2f}s before its scheduled time"
    summary.append(
        f"started after schedule: median {statistics.median(late):.2f}s, max {max(late):.2f}s "
        "(queueing behind hung calls)"
    )
    report(
        f"verified: 200/200 provisioned in {took:.1f}s; attempts max {rows[0]}, "
        f"mean {float(rows[1]):.1f}; each database created once"
    )
    for line in summary:
        report("  " + line)


def test_influxdb_outage_of_20s_during_onboarding(api, db, influx, custom_worker, tmp_path, report):
    # Given an InfluxDB outage (connections refused) starting now, for 20 s
    influx.set_database_limit(1000)
    custom_worker(concurrency=4, **PATIENT)
    beat = start_beat(tmp_path / "beat.log", tmp_path / "schedule")
    outage = 20.0
    influx.set_outage(True)
    started = time.monotonic()
    report(f"injected: InfluxDB refuses connections for {outage:g}s while 100 tenants onboard")
    threading.Timer(outage, influx.set_outage, args=(False,)).start()
    try:
        # When 100 tenants are onboarded during it
        tenant_ids = [new_tenant_id("outage") for _ in range(100)]
        create(api, tenant_ids)
        retrying = count_in_state(db, tenant_ids, "retrying")

        # Then all are provisioned within outage + backoff cap + one reconcile interval
        budget = outage + CAP + INTERVAL
        wait_all_provisioned(db, tenant_ids, timeout=budget + 10)
        took = time.monotonic() - started
    finally:
        stop_process(beat)
    assert took <= budget + 3.0, f"took {took:.1f}s, budget {budget:.1f}s"
    assert_created_once(influx, tenant_ids)
    report(
        f"verified: {retrying} were retrying during the outage; all 100 provisioned "
        f"{took:.1f}s after it began (budget {budget:.0f}s + 3s for the work itself)"
    )


def test_redis_restart_with_tasks_in_flight(db, influx, own_redis, tmp_path, report):
    # Given API, worker and beat processes on a Redis server of our own
    influx.set_database_limit(1000)
    influx.set_latency(0.5)
    env = {"CELERY_BROKER_URL": f"redis://127.0.0.1:{own_redis['port']}/0", **PATIENT}
    processes = []
    try:
        processes.append(
            start_worker(tmp_path / "worker.log", concurrency=2, name="redis-drill", extra_env=env)
        )
        processes.append(start_beat(tmp_path / "beat.log", tmp_path / "schedule", env))
        api, base = start_api(tmp_path / "api.log", env)
        processes.append(api)

        # When 30 tenants are created and Redis is killed and restarted mid-way
        tenant_ids = [new_tenant_id("redis") for _ in range(30)]
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        for tenant_id in tenant_ids:
            response = requests.post(
                f"{base}/operator/tenants",
                json={"tenant_id": tenant_id, "name": "r"},
                headers=headers,
                timeout=10,
            )
            assert response.status_code == 201
        wait_for(lambda: count_in_state(db, tenant_ids, "provisioned") >= 2, what="progress")
        own_redis["process"].kill()
        own_redis["process"].wait()
        lost_at = count_in_state(db, tenant_ids, "provisioned")
        report(f"injected: redis-server SIGKILL (no persistence) with {lost_at}/30 provisioned")
        time.sleep(2)
        own_redis["process"] = own_redis["start"]()
        report("injected: redis-server restarted empty on the same port")

        # Then nothing is lost: every tenant ends provisioned, by the same worker (no supervisor
        # here: a worker wedged by the lost connection, worker/broker_transport.py, fails this)
        took = wait_all_provisioned(db, tenant_ids, timeout=60)
    finally:
        for process in processes:
            stop_process(process)
    assert_created_once(influx, tenant_ids)
    assert "Unrecoverable error" not in (tmp_path / "worker.log").read_text(errors="replace")
    report(f"verified: all 30 provisioned {took:.1f}s after the restart; each created once")


def test_postgres_connections_cut_during_provisioning(
    api, db, influx, custom_worker, tmp_path, report
):
    # Given 20 tenants provisioning against a slow InfluxDB
    influx.set_database_limit(1000)
    influx.set_latency(0.5)
    worker = custom_worker(concurrency=4, **PATIENT)
    beat = start_beat(tmp_path / "beat.log", tmp_path / "schedule")
    tenant_ids = [new_tenant_id("pgcut") for _ in range(20)]
    try:
        create(api, tenant_ids)

        # When every worker connection to Postgres is terminated, three times over
        terminated = 0
        for _ in range(3):
            wait_for(lambda: count_in_state(db, tenant_ids, "provisioning") >= 1, what="a run")
            (count,) = db.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name = 'tenant-provisioner'"
            ).fetchone()
            terminated += count
            time.sleep(0.7)
        report(f"injected: pg_terminate_backend on {terminated} connections during provisioning")

        # Then the tasks recover and no tenant is stuck
        took = wait_all_provisioned(db, tenant_ids, timeout=TIME_LIMIT + 4 * INTERVAL + 20)
    finally:
        stop_process(beat)
    assert count_in_state(db, tenant_ids, "provisioning") == 0
    # And each cut run ended in its database error, retried by its own chain: none failed
    # (a failed task waits for the reconciler's grace)
    log = worker.log_path.read_text(errors="replace")
    assert "raised unexpected" not in log, log[log.index("raised unexpected") - 2000 :][:4000]
    report(f"verified: all 20 provisioned {took:.1f}s after the last cut, none stuck or failed")


def test_duplicate_storm_reaches_influxdb_once(db, influx, worker_process, report):
    # Given a tenant owed work and a slow InfluxDB
    influx.set_latency(0.3)
    tenant_id = new_tenant_id("storm")
    db.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, 'storm')", (tenant_id,))

    # When 50 provisioning tasks and two reconcilers run for it at once
    for _ in range(50):
        provision_tenant_influxdb.delay(tenant_id)
    summaries = concurrent_reconciles(2)
    report("injected: 50 concurrent tasks + 2 concurrent reconcilers for one tenant")

    # Then exactly one create call reaches InfluxDB
    wait_for_state(db, tenant_id, "provisioned")
    time.sleep(3)  # the duplicates drain, each finding the work done
    database = f"telemetry_{tenant_id}"
    assert influx.create_calls(database) == 1
    assert tenant_row(db, tenant_id)["influxdb_attempts"] == 1
    assert sorted(s.ran for s in summaries) == [False, True]
    report("verified: 1 create call, 1 attempt recorded, 1 of 2 reconcilers ran")


def test_no_secret_anywhere_after_a_full_run(api, db, influx, worker_process, broker, report):
    # Given a full run: a provisioned tenant, one failed on a rejected token ...
    tenant_ok, tenant_denied, waiting = (new_tenant_id("sec") for _ in range(3))
    create(api, [tenant_ok])
    wait_for_state(db, tenant_ok, "provisioned")
    influx.set_token("another-token-entirely")
    create(api, [tenant_denied])
    wait_for_state(db, tenant_denied, "failed")
    # ... and one whose message waits in Redis while the worker does not consume
    name = next(iter(app.control.ping(timeout=1.0)[0]))
    stop_consuming(name, (PROVISIONING_QUEUE,))
    try:
        create(api, [waiting])
        raw = broker.lrange(PROVISIONING_QUEUE, 0, -1)
    finally:
        app.control.add_consumer(PROVISIONING_QUEUE, destination=[name], reply=True)
    report("injected: provisioned, 401-failed and queued tenants; then looked for token text")

    # Then the queued message's arguments are the tenant id only ...
    bodies = [json.loads(base64.b64decode(json.loads(m)["body"])) for m in raw]
    assert [body[0] for body in bodies] == [[waiting]]
    messages = b"".join(raw).decode() + json.dumps(bodies)
    # ... and no token text is in Postgres (every column of every table), messages or logs
    dump = subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--data-only", db.info.dbname],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert tenant_denied in dump
    log = worker_process.log()
    for secret in (INFLUX_TOKEN, OPERATOR_TOKEN):
        assert secret not in dump
        assert secret not in messages
        assert secret not in log

    # And the operator API refuses requests without the operator token
    api.headers.pop("Authorization")
    assert api.get(f"/operator/tenants/{tenant_ok}/stats").status_code == 401
    report("verified: args are [tenant_id]; no token in pg_dump, messages or worker log; API 401")
