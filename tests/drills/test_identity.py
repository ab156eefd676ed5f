"""Failure drills for the identity of a tenant's database (one tenant, one database), on real
worker and beat processes and two or more stand-in servers. Each says what it injected and
what it verified. Select them alone with ``-m drill``."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import databases
from tests.conftest import (
    INTERVAL,
    ROOT,
    Pool,
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

pytestmark = pytest.mark.drill

PATIENT = {"PROVISION_MAX_ATTEMPTS": "100"}


def states(db: Any, tenant_ids: list[str]) -> Counter[str]:
    rows = db.execute(
        "SELECT influxdb_state FROM tenants WHERE tenant_id = ANY(%s)", (tenant_ids,)
    ).fetchall()
    return Counter(r[0] for r in rows)


def homes(pool: Pool, database: str) -> list[str]:
    """The servers (listed or not) holding an active database of that name."""
    return [name for name, node in pool.nodes.items() if database in node.databases()]


def test_upgrade_with_a_second_server_adopts_every_tenant_where_its_data_is(
    scratch_database, pool, custom_worker, report
):
    # Given the UI's own tenants table (before this worker), 4 tenants whose databases the
    # inline code made on the old server, each holding 7 points; and a 5th whose inline
    # provisioning silently failed (no database anywhere)
    dsn = f"postgresql://postgres@127.0.0.1:5432/{scratch_database}"
    old = pool.add("old", limit=5)
    tenant_ids = [new_tenant_id("ui") for _ in range(4)]
    never_made = new_tenant_id("ui")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tenants (tenant_id text PRIMARY KEY, name text NOT NULL, "
            "status text NOT NULL, created_at timestamp NOT NULL DEFAULT now())"
        )
        for tenant_id in [*tenant_ids, never_made]:
            conn.execute("INSERT INTO tenants VALUES (%s, 'UI', 'active', now())", (tenant_id,))
    for tenant_id in tenant_ids:
        existing_database(old, tenant_id)

    # When a second, empty server is added, the schema is migrated and a reconcile runs
    new = pool.add("new", limit=5)
    env = {**pool.env(), "DATABASE_URL": dsn.replace("postgresql://", "postgresql+psycopg://")}
    migrated = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    report("injected: upgrade of the UI's table (4 tenants with data on 'old'), 'new' added")
    custom_worker(concurrency=4, **env)
    summary = cli(None, "reconcile", env=env)
    assert summary["adopted"] == 4
    assert summary["new_home"] == 1
    assert summary["influxdb_calls"] == 2  # one listing per server

    # Then every tenant is adopted on the old server with its 7 points; none is made on new
    with psycopg.connect(dsn, autocommit=True) as conn:
        wait_for(
            lambda: states(conn, [*tenant_ids, never_made]) == {"provisioned": 5},
            what="all five provisioned",
        )
        nodes = dict(conn.execute("SELECT tenant_id, influxdb_node FROM tenants").fetchall())
    for tenant_id in tenant_ids:
        assert nodes[tenant_id] == "old"
        assert telemetry_points(old, f"telemetry_{tenant_id}") == 7
        assert old.creations(f"telemetry_{tenant_id}") == 0
    assert new.databases() == [f"telemetry_{never_made}"]  # the one without a database
    assert new.create_calls() == 1
    report(
        "verified: 4 adopted on 'old' with 7/7 points each, by one listing per server; "
        "the tenant without a database got a new one on 'new'; nothing else made there"
    )


def test_deletions_while_the_server_is_down_finish_only_when_the_databases_are_gone(
    api, db, influx, worker_process, beat, report
):
    # Given five tenants from the UI's table whose databases hold data, server unrecorded
    tenant_ids = [new_tenant_id("gone") for _ in range(5)]
    for tenant_id in tenant_ids:
        existing_database(influx, tenant_id)
        legacy_row(db, tenant_id, state="provisioned")

    # When all five are deleted while the server refuses connections
    influx.set_outage(True)
    for tenant_id in tenant_ids:
        assert api.delete(f"/operator/tenants/{tenant_id}").status_code == 202
    report("injected: 5 deletions while the only server refuses connections, for 2 intervals")
    time.sleep(2 * INTERVAL)

    # Then none has finished: the rows stay, the databases too
    assert states(db, tenant_ids) == {"deprovisioning": 5}

    # When the server answers again, each database is deleted and then its row
    influx.set_outage(False)
    wait_for(lambda: not states(db, tenant_ids), timeout=30, what="the five deletions")
    for tenant_id in tenant_ids:
        assert f"telemetry_{tenant_id}" not in influx.databases()

    # And the ids created again all start empty
    for tenant_id in tenant_ids:
        api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "again"})
    wait_for(lambda: states(db, tenant_ids) == {"provisioned": 5}, what="re-created")
    counts = [telemetry_points(influx, f"telemetry_{t}") for t in tenant_ids]
    assert counts == [0] * 5
    report("verified: deletions waited for the server; re-created ids hold 0 of the old points")


def test_servers_leaving_and_returning_to_the_nodes_file_never_duplicate_a_database(
    db, pool, request, report
):
    # Given two servers with two tenants each, and a fifth tenant retrying on alpha (refused)
    alpha = pool.add("alpha")
    beta = pool.add("beta")
    request.getfixturevalue("pool_processes")
    tenant_ids = [new_tenant_id("edit") for _ in range(4)]
    for tenant_id in tenant_ids:
        db.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, 'e')", (tenant_id,))
        cli(pool, "retry", tenant_id)
        wait_for_state(db, tenant_id, "provisioned")
    alpha.set_outage(True)
    fifth = new_tenant_id("edit")
    # Placed on alpha (as when alpha went down under its run): a new tenant would now go to
    # beta, the server that answers
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_node) VALUES (%s, 'e', 'alpha')", (fifth,)
    )
    cli(pool, "retry", fifth)
    wait_for(lambda: tenant_row(db, fifth)["influxdb_error_reason"] == "unreachable", what="5th")
    assert tenant_row(db, fifth)["influxdb_node"] == "alpha"

    # When alpha leaves the nodes file and the operator retries every tenant, twice
    pool.unlist("alpha")
    report("injected: alpha removed from the nodes file; 2 operator retries of all 5 tenants")
    for _ in range(2):
        for tenant_id in [*tenant_ids, fifth]:
            cli(pool, "retry", tenant_id)
        time.sleep(INTERVAL)

    # Then nothing is created on beta for alpha's tenants; the fifth waits for its server
    row = tenant_row(db, fifth)
    assert (row["influxdb_node"], row["influxdb_error_reason"]) == ("alpha", "node_not_configured")
    for tenant_id in [*tenant_ids, fifth]:
        assert len(homes(pool, f"telemetry_{tenant_id}")) <= 1

    # When alpha comes back (listed and answering), everything ends with one database each
    alpha.set_outage(False)
    pool.relist("alpha")
    wait_for_state(db, fifth, "provisioned", timeout=INTERVAL + 15)
    for tenant_id in [*tenant_ids, fifth]:
        assert len(homes(pool, f"telemetry_{tenant_id}")) == 1, tenant_id
    placed = Counter(tenant_row(db, t)["influxdb_node"] for t in [*tenant_ids, fifth])
    assert placed == {"alpha": 3, "beta": 2}
    assert beta.create_calls() == 2
    report("verified: no second database anywhere; the waiting tenant finished on alpha")


def test_every_worker_child_sees_the_nodes_file_as_it_is_when_it_first_looks(
    api, db, pool, custom_worker, report
):
    # Given a worker of 4 children started with alpha alone in the nodes file, alpha full
    alpha = pool.add("alpha", limit=2)
    for i in range(2):
        alpha.create_database(f"telemetry_full{i}")
        db.execute(
            "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node) "
            "VALUES (%s, 'f', 'provisioned', 'alpha')",
            (f"full{i}",),
        )
    custom_worker(concurrency=4, **pool.env())

    # When beta is added and 8 tenants arrive at once (most children look for the first time)
    pool.add("beta", limit=10)
    tenant_ids = [new_tenant_id("look") for _ in range(8)]
    for tenant_id in tenant_ids:
        api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "n"})
    report("injected: beta added to the nodes file after the worker started; 8 tenants")

    # Then every one of them is placed on beta: no child answers from the pool it started with
    wait_for(lambda: states(db, tenant_ids) == {"provisioned": 8}, what="8 provisioned")
    nodes = {tenant_row(db, t)["influxdb_node"] for t in tenant_ids}
    assert nodes == {"beta"}
    report("verified: 8/8 on beta; none waited for capacity")


_OWNER = re.compile(r"tenant_id=(\S+) task_id=(\S+)\] attempt failed")


def test_a_duplicate_storm_during_an_outage_keeps_one_chain_per_tenant(
    db, influx, custom_worker, tmp_path, report
):
    # Given a 15 s outage (5xx), 10 tenants, and a budget one chain would not spend in 15 s
    env = {
        "PROVISION_MAX_ATTEMPTS": "30",
        "PROVISION_BACKOFF_BASE_SECONDS": "0.5",
        "PROVISION_BACKOFF_CAP_SECONDS": "4",
        "RECONCILE_REQUEUE_AFTER_SECONDS": "0",  # the reconciler re-publishes at every run
        "INFLUXDB_DATABASE_LIMIT": "100",
    }
    influx.set_database_limit(100)
    worker = custom_worker(concurrency=4, **env)
    beat = start_beat(tmp_path / "beat.log", tmp_path / "schedule", env)
    influx.set_faults(error_rate=1.0)
    tenant_ids = [new_tenant_id("storm") for _ in range(10)]
    for tenant_id in tenant_ids:
        db.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, 's')", (tenant_id,))

    # When each gets five operator retries and the reconciler re-publishes with no grace
    try:
        for _ in range(5):
            subprocess.run(
                [sys.executable, "-m", "worker", "retry", "--state", "retrying"],
                cwd=ROOT,
                env={**os.environ, **env},
                capture_output=True,
                check=False,
            )
            time.sleep(3)
        report("injected: 15 s of 5xx; 5 operator retries of all 10; re-publish every 2 s")
        influx.set_faults()
        wait_for(lambda: states(db, tenant_ids) == {"provisioned": 10}, timeout=30, what="all")
    finally:
        stop_process(beat)

    # Then nobody failed, and each tenant's attempts came from one message at a time
    failed = db.execute(
        "SELECT count(*) FROM provisioning_attempts WHERE tenant_id = ANY(%s) "
        "AND outcome = 'failed'",
        (tenant_ids,),
    ).fetchone()
    assert failed == (0,)
    attempts = [
        r[0]
        for r in db.execute(
            "SELECT influxdb_attempts FROM tenants WHERE tenant_id = ANY(%s)", (tenant_ids,)
        )
    ]
    owners: dict[str, list[str]] = {}
    for line in worker.log().splitlines():
        if match := _OWNER.search(line):
            owners.setdefault(match.group(1), []).append(match.group(2))
    for tenant_id in tenant_ids:
        blocks = [k for k, _ in itertools.groupby(owners.get(tenant_id, []))]
        assert len(blocks) == len(set(blocks)), f"{tenant_id}: chains interleaved {blocks}"
    report(
        f"verified: 10/10 provisioned, none failed; attempts per tenant max {max(attempts)} "
        f"of 30; no two chains of one tenant interleaved"
    )


def test_a_tenant_whose_worker_keeps_dying_fails_as_worker_lost(
    api, db, influx, custom_worker, report
):
    from worker.db import get_engine  # noqa: PLC0415
    from worker.nodes import NodePool  # noqa: PLC0415
    from worker.reconcile import reconcile  # noqa: PLC0415
    from worker.settings import get_settings  # noqa: PLC0415
    from worker.tasks import publish  # noqa: PLC0415

    # Given a tenant whose every attempt is cut short by the death of its worker (the last
    # allowed one is followed by one more, to find out whether it did its work unsaid)
    influx.set_latency(5.0)
    tenant_id = new_tenant_id("dies")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "n"})
    # "stuck" after 1 s, for the drill
    settings = get_settings().model_copy(update={"task_time_limit": 1})
    budget = {"PROVISION_MAX_ATTEMPTS": "4"}
    kills = 0
    for _ in range(5):
        worker = custom_worker(concurrency=1, **budget)
        wait_for(
            lambda: (r := tenant_row(db, tenant_id))["influxdb_state"] != "pending" and r,
            what="an attempt to start",
        )
        if tenant_row(db, tenant_id)["influxdb_state"] == "failed":
            break
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=10)
        kills += 1
        time.sleep(1.2)
        reconcile(get_engine(), NodePool(settings), settings, publish)
    report(f"injected: the worker SIGKILLed inside {kills} attempts in a row (budget 4 + 1)")

    # Then the tenant ends failed as worker_lost, instead of being re-queued without end
    influx.set_latency(0)
    if tenant_row(db, tenant_id)["influxdb_state"] != "failed":
        custom_worker(concurrency=1, **budget)
    row = wait_for_state(db, tenant_id, "failed")
    assert row["influxdb_error_reason"] == "worker_lost"
    assert row["influxdb_attempts"] == 5
    assert influx.create_calls(f"telemetry_{tenant_id}") <= 5
    report(f"verified: failed/worker_lost after {row['influxdb_attempts']} counted attempts")


_NAMES = st.one_of(
    st.text(min_size=1, max_size=40),  # anything, control and format characters included
    st.from_regex(r"[A-Za-z0-9][ -~]{0,38}", fullmatch=True),  # plain printable names
)
_PERIODS = st.one_of(
    st.from_regex(r"\A[1-9][0-9]{0,5}(h|d|w|mo|y)\Z"),  # what Core takes
    st.from_regex(r"\A[0-9]{1,7}(h|d|w|mo|y|m|s|ms|M)?\Z"),  # near misses
    st.text(max_size=12),
)


def test_any_name_or_retention_period_is_accepted_as_core_would_or_refused(
    api, db, paused_worker, report
):
    from api_hooks.tenants import validate_tenant_name  # noqa: PLC0415
    from worker.settings import RETENTION_PERIOD  # noqa: PLC0415

    seen: Counter[str] = Counter()

    @settings(
        max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(name=_NAMES, period=_PERIODS)
    def check(name: str, period: str) -> None:
        body = {"tenant_id": new_tenant_id("hyp"), "name": name, "retention_period": period}
        response = api.post(
            "/operator/tenants",
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code in (201, 422), response.text
        seen[str(response.status_code)] += 1
        if response.status_code == 201:
            stored = db.execute(
                "SELECT name, influxdb_retention_period FROM tenants WHERE tenant_id = %s",
                (body["tenant_id"],),
            ).fetchone()
            assert stored == (validate_tenant_name(name), period)
            assert RETENTION_PERIOD.match(period)
            assert re.fullmatch(r"[1-9][0-9]{0,5}(h|d|w|mo|y)", period)
        else:
            assert response.json()["detail"]

    check()
    report(f"injected: 150 random names and retention periods; answers {dict(seen)}")
    assert seen["201"] and seen["422"]  # both paths were really exercised
    report("verified: never a 500; only Core's periods (h d w mo y, one number) are stored")


def test_the_cli_shows_no_password_after_a_full_run_through_proxied_servers(
    api, db, influx, custom_worker, tmp_path, report
):
    # Given a pool whose URL carries a password (basic auth of a proxy) and a full run
    password = "pw-" + os.urandom(6).hex()
    host = influx.url.removeprefix("http://")
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps([{"name": "proxied", "url": f"http://ops:{password}@{host}"}]))
    env = {"INFLUXDB_NODES_FILE": str(nodes)}
    worker = custom_worker(concurrency=2, **env)
    tenant_id = new_tenant_id("pw")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "n"})
    wait_for(lambda: tenant_row(db, tenant_id)["influxdb_state"] in ("provisioned", "failed"))
    report("injected: a node URL with a password; a tenant provisioned through it")

    # When operators use every command that shows the pool or a tenant
    printed = ""
    for args in (
        ["nodes"],
        ["--json", "nodes"],
        ["check-influxdb"],
        ["--json", "check-influxdb"],
        ["status", tenant_id],
        ["--json", "list"],
        ["--json", "reconcile"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "worker", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        printed += result.stdout + result.stderr

    # Then the password is nowhere: not printed, not logged, not stored
    assert "proxied" in printed
    assert password not in printed
    assert password not in worker.log()
    row = tenant_row(db, tenant_id)
    assert all(password not in str(value) for value in row.values())
    report("verified: 7 CLI commands, the worker log and the row hold no URL password")


def test_runs_cut_by_the_soft_time_limit_leave_no_tenant_busy(
    db, pool, custom_worker, tmp_path, request, report
):
    # Given tenants from the UI's table whose runs (list, create, markers, marker: calls of
    # 1.1 s each) outlast a 3 s soft time limit: every run is interrupted inside the lock
    node = pool.add("slow", limit=20)
    tenant_ids = [new_tenant_id("soft") for _ in range(6)]
    for tenant_id in tenant_ids:
        existing_database(node, tenant_id, points=1)
        legacy_row(db, tenant_id)
    node.set_latency(1.1)
    env = {
        **pool.env(),
        **PATIENT,
        "INFLUXDB_CONNECT_TIMEOUT": "0.1",
        "INFLUXDB_READ_TIMEOUT": "1.3",
        "PROVISION_SOFT_TIME_LIMIT": "3",
        "PROVISION_TIME_LIMIT": "5",
    }
    worker = custom_worker(concurrency=3, **env)
    beat = start_beat(tmp_path / "beat.log", tmp_path / "schedule", env)
    request.addfinalizer(lambda: stop_process(beat))
    for tenant_id in tenant_ids:
        cli(pool, "retry", tenant_id)

    # (inside an InfluxDB call the interrupt is recorded as the timeout it amounts to; inside
    # a Postgres call it ends the run with Celery's exception)
    def interrupted() -> int:
        log = worker.log()
        return log.count("SoftTimeLimitExceeded") + log.count("soft time limit (PROVISION_SOFT")

    wait_for(lambda: interrupted() > 0, timeout=30, what="interrupts")
    time.sleep(6)
    interrupts = interrupted()
    report(f"injected: {interrupts} soft time limit interrupts inside runs holding tenant locks")

    # When the server is fast again, every tenant finishes: no lock outlived its run
    node.set_latency(0)
    wait_for(lambda: states(db, tenant_ids) == {"provisioned": 6}, timeout=40, what="all six")
    # (A reconcile run in progress holds its own lock on an idle connection while it works: the
    # beat stops first, and a lock that outlived its run is one that never goes away.)
    stop_process(beat)

    def idle_holders() -> int:
        row = db.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND a.state = 'idle' "
            "AND a.datname = current_database()"
        ).fetchone()
        return int(row[0]) if row else -1

    wait_for(lambda: idle_holders() == 0, timeout=10, what="no idle connection holding a lock")
    report("verified: 6/6 provisioned; no idle pooled connection holds an advisory lock")


def test_migrations_up_and_down_never_turn_a_deletion_into_a_tenant(scratch_database, report):
    dsn = f"postgresql://postgres@127.0.0.1:5432/{scratch_database}"
    env = {**os.environ, "DATABASE_URL": dsn}

    def alembic(*args: str) -> subprocess.CompletedProcess[str]:
        return databases.alembic(*args, env=env)

    # Given tenants in every state, one of them being deleted
    assert alembic("upgrade", "head").returncode == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        insert = "INSERT INTO tenants (tenant_id, name, influxdb_state) VALUES (%s, 'x', %s)"
        for state in ("pending", "retrying", "provisioned", "failed", "waiting_for_capacity"):
            conn.execute(insert, (state, state))
        conn.execute(insert, ("bye", "deprovisioning"))

    # When an operator tries to go back to 0002 and up again, in every order
    refused = alembic("downgrade", "0002")
    assert alembic("downgrade", "0003").returncode == 0
    refused_again = alembic("downgrade", "0002")
    assert alembic("upgrade", "head").returncode == 0
    report("injected: downgrades to 0003 and 0002 with a deletion in flight, then upgrade")

    # Then every step below 0003 was refused, and the deletion is still a deletion
    assert refused.returncode != 0 and "being deleted (bye)" in refused.stderr
    assert refused_again.returncode != 0
    with psycopg.connect(dsn) as conn:
        rows = dict(conn.execute("SELECT tenant_id, influxdb_state FROM tenants").fetchall())
    assert rows["bye"] == "deprovisioning"
    assert len(rows) == 6
    report("verified: 2 downgrades below 0003 refused, naming 'bye'; it is still deprovisioning")


def test_an_outage_longer_than_every_budget_needs_no_person(
    api, db, influx, custom_worker, tmp_path, report
):
    # Given 20 tenants onboarding into an outage that outlasts their budget (3 attempts)
    env = {"PROVISION_MAX_ATTEMPTS": "3", "INFLUXDB_DATABASE_LIMIT": "100"}
    influx.set_database_limit(100)
    custom_worker(concurrency=4, **env)
    influx.set_outage(True)
    tenant_ids = [new_tenant_id("out") for _ in range(20)]
    for tenant_id in tenant_ids:
        api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "n"})
    wait_for(lambda: states(db, tenant_ids) == {"failed": 20}, timeout=30, what="all failed")
    metrics = api.get("/metrics").text
    assert 'tenant_provisioner_stalled_tenants{node="default"} 20.0' in metrics
    report("injected: an outage past every tenant's budget: 20/20 failed (unreachable)")

    # When the server is back, with a reconciler running and no operator
    beat = start_beat(tmp_path / "beat.log", tmp_path / "schedule", env)
    try:
        influx.set_outage(False)
        started = time.monotonic()
        wait_for(
            lambda: states(db, tenant_ids) == {"provisioned": 20},
            timeout=INTERVAL + 20,
            what="all resumed",
        )
        took = time.monotonic() - started
    finally:
        stop_process(beat)

    # Then all resumed by themselves with a fresh budget, and none is shown stalled
    assert 'tenant_provisioner_stalled_tenants{node="default"}' not in api.get("/metrics").text
    report(f"verified: 20/20 resumed and provisioned {took:.1f}s after the server came back")
