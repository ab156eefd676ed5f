"""With the broker down, the operator API still creates tenants at once, and nothing is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import requests

from tests.conftest import (
    OPERATOR_TOKEN,
    ROOT,
    free_port,
    new_tenant_id,
    stop_process,
    tenant_row,
    wait_for,
)


def test_api_process_creates_tenant_when_redis_is_down(db, influx, tmp_path):
    # Given a real operator API process whose broker address refuses connections
    port = free_port()
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "api_hooks", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "CELERY_BROKER_URL": dead_broker},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _up(base), what="the API process")
        tenant_id = new_tenant_id()

        # When the operator creates a tenant
        started = time.monotonic()
        response = requests.post(
            f"{base}/operator/tenants",
            json={"tenant_id": tenant_id, "name": "No broker"},
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
            timeout=10,
        )
        elapsed = time.monotonic() - started

        # Then it answers 201 at once, saying the tenant was not queued
        assert response.status_code == 201, response.text
        assert elapsed < 3.0, f"took {elapsed:.2f}s"
        assert response.json()["influxdb"] == {
            "state": "pending",
            "queued": False,
            "database": f"telemetry_{tenant_id}",
        }

        # And the tenant is stored as owed work that was never queued (the reconciler's cue)
        row = tenant_row(db, tenant_id)
        assert row["influxdb_state"] == "pending"
        assert row["influxdb_enqueued_at"] is None
    finally:
        stop_process(process)
        log.close()
    assert OPERATOR_TOKEN not in (tmp_path / "api.log").read_text()


def _up(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=0.5).status_code == 200
    except requests.ConnectionError:
        return False
