"""A worker whose clock is 10 minutes off the database's, and a reconciler 10 minutes off the
other way: every decision still comes out right, because every stored and compared time is
the database's (``worker.clock``).

The skew is real: the worker and the reconciler (``python -m worker reconcile``) run under
libfaketime, so their own clocks - ``time.time()``, ``datetime.now()`` - are shifted; only the
monotonic clock, which measures durations, is left alone. Each story runs both ways: a worker
ahead of the reconciler (a late decision would show: a stuck attempt, a lost retry, a deleted
database or an answering server overlooked) and behind it (a premature decision would show: a
live attempt taken for stuck, a scheduled retry taken over).
"""

from __future__ import annotations

import glob
import os
import signal
from typing import Any

import psycopg
import pytest

from tests.conftest import cli, new_tenant_id, tenant_row, wait_for, wait_for_state

SKEWS = [
    pytest.param("+10m", "-10m", id="worker-ahead"),
    pytest.param("-10m", "+10m", id="worker-behind"),
]


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        pytest.fail("libfaketime is missing: scripts/test installs it (apt-get libfaketime)")
    return found[0]


def skewed(offset: str) -> dict[str, str]:
    """The environment of a process whose wall clock is ``offset`` off the real one."""
    return {
        "LD_PRELOAD": libfaketime(),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # durations stay real: timeouts, backoff waits
    }


def reconcile(offset: str, settings: dict[str, str]) -> dict[str, Any]:
    """One reconcile run in a process whose clock is ``offset`` off; its summary."""
    summary: dict[str, Any] = cli(None, "reconcile", env={**settings, **skewed(offset)})
    assert summary["ran"], summary
    return summary


def database_now_is_past(db: psycopg.Connection[Any], tenant_id: str, column: str, s: int) -> bool:
    """Whether the database's clock is past the row's ``column`` plus ``s`` seconds."""
    row = db.execute(
        f"SELECT clock_timestamp() > {column} + make_interval(secs => %s) "
        "FROM tenants WHERE tenant_id = %s",
        (s, tenant_id),
    ).fetchone()
    return bool(row and row[0])


def kill(worker: Any) -> None:
    """SIGKILL the worker, children and all: nothing it held is finished or given back."""
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


@pytest.mark.parametrize(("worker_skew", "reconciler_skew"), SKEWS)
def test_a_deleted_database_is_found_as_drift(
    api, db, influx, custom_worker, worker_skew, reconciler_skew
):
    # Given a tenant provisioned by a worker whose clock is off
    custom_worker(**skewed(worker_skew))
    tenant_id = new_tenant_id("skew")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Skewed"})
    wait_for_state(db, tenant_id, "provisioned")

    # When its database is deleted behind our back and a reconciler off the other way runs
    influx.delete_database(f"telemetry_{tenant_id}")
    summary = reconcile(reconciler_skew, {})

    # Then the drift is found and repaired
    assert summary["drift"] == 1, summary
    wait_for(lambda: f"telemetry_{tenant_id}" in influx.databases(), what="the database back")
    wait_for_state(db, tenant_id, "provisioned")


@pytest.mark.parametrize(("worker_skew", "reconciler_skew"), SKEWS)
def test_a_tenant_failed_by_an_outage_resumes_when_its_server_answers(
    api, db, influx, custom_worker, worker_skew, reconciler_skew
):
    # Given a tenant that failed for an outage, its failure written by a worker whose clock is off
    settings = {"PROVISION_MAX_ATTEMPTS": "2"}
    custom_worker(**settings, **skewed(worker_skew))
    influx.set_outage(True)
    tenant_id = new_tenant_id("skew")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Skewed"})
    assert wait_for_state(db, tenant_id, "failed")["influxdb_error_reason"] == "unreachable"

    # When the server answers again and a reconciler off the other way runs
    influx.set_outage(False)
    summary = reconcile(reconciler_skew, settings)

    # Then the tenant is resumed, and provisioned
    assert (summary["resumed"], summary["stalled"]) == (1, 0), summary
    wait_for_state(db, tenant_id, "provisioned")


@pytest.mark.parametrize(("worker_skew", "reconciler_skew"), SKEWS)
def test_an_attempt_is_stuck_only_once_it_outlived_the_time_limit(
    api, db, influx, custom_worker, worker_skew, reconciler_skew
):
    # Given an attempt hanging on InfluxDB, started by a worker whose clock is off
    settings = {
        "INFLUXDB_READ_TIMEOUT": "5",  # the attempt hangs this long: time to look and kill
        "PROVISION_SOFT_TIME_LIMIT": "12",
        "PROVISION_TIME_LIMIT": "13",
    }
    worker = custom_worker(**settings, **skewed(worker_skew))
    influx.set_hang(True)
    tenant_id = new_tenant_id("skew")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Skewed"})
    wait_for_state(db, tenant_id, "provisioning")

    # When a reconciler off the other way runs while the attempt is alive: it is not stuck
    assert reconcile(reconciler_skew, settings)["stuck"] == 0
    assert tenant_row(db, tenant_id)["influxdb_state"] == "provisioning"

    # When its worker is killed and the time limit passes, by the database's clock
    kill(worker)
    influx.set_hang(False)
    wait_for(lambda: database_now_is_past(db, tenant_id, "influxdb_updated_at", 13), timeout=20)

    # Then the next run finds it stuck, and a worker provisions it
    assert reconcile(reconciler_skew, settings)["stuck"] == 1
    custom_worker(**settings, **skewed(worker_skew))
    wait_for_state(db, tenant_id, "provisioned")


@pytest.mark.parametrize(("worker_skew", "reconciler_skew"), SKEWS)
def test_a_scheduled_retry_is_taken_over_only_once_its_message_is_overdue(
    api, db, influx, broker, custom_worker, worker_skew, reconciler_skew
):
    # Given a retry scheduled at least 3 s ahead by a worker whose clock is off (InfluxDB fails)
    settings = {
        "PROVISION_MAX_ATTEMPTS": "20",
        "PROVISION_BACKOFF_BASE_SECONDS": "8",
        "PROVISION_BACKOFF_CAP_SECONDS": "8",
        "RECONCILE_REQUEUE_AFTER_SECONDS": "2",
    }
    worker = custom_worker(**settings, **skewed(worker_skew))
    influx.set_faults(error_rate=1.0)
    tenant_id = new_tenant_id("skew")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Skewed"})

    def retry_due_in_3_s() -> bool:
        row = db.execute(
            "SELECT influxdb_state = 'retrying' AND influxdb_next_attempt_at > "
            "clock_timestamp() + interval '3 s' FROM tenants WHERE tenant_id = %s",
            (tenant_id,),
        ).fetchone()
        return bool(row and row[0])

    wait_for(retry_due_in_3_s, timeout=60, what="a retry scheduled 3 s ahead")

    # When a reconciler off the other way runs: the retry's message is not overdue
    assert reconcile(reconciler_skew, settings)["taken_over"] == 0

    # When the worker dies with that message and the broker loses it
    kill(worker)
    broker.flushdb()
    influx.set_faults()
    wait_for(lambda: database_now_is_past(db, tenant_id, "influxdb_next_attempt_at", 2), timeout=15)

    # Then the next run takes the chain over, and a worker provisions it
    assert reconcile(reconciler_skew, settings)["taken_over"] == 1
    custom_worker(**settings, **skewed(worker_skew))
    wait_for_state(db, tenant_id, "provisioned")
