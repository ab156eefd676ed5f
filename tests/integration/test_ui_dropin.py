"""The UI's side: an async UI (tests/integration/ui_app.py) swaps its inline provisioning code
for the drop-in with one import line - on a real uvicorn process, worker and stand-in."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from harness import processes
from tests.conftest import (
    INTERVAL,
    TEST_DATABASE,
    free_port,
    new_tenant_id,
    tenant_row,
    wait_for,
    wait_for_state,
)

SESSION = "ui-session-" + secrets.token_hex(8)


@pytest.fixture
def ui(database, worker_process, tmp_path) -> Iterator[requests.Session]:
    """The UI-style app under uvicorn, signed in as an operator admin; live checks bound at 2 s."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "UI_DATABASE_DSN": f"postgresql://postgres@127.0.0.1:5432/{TEST_DATABASE}",
        "UI_SESSION": SESSION,
        "LIVE_CHECK_TIMEOUT": "2",
    }
    argv = [sys.executable, "-m", "uvicorn", "tests.integration.ui_app:app", "--port", str(port)]
    process = processes.start(
        argv,
        tmp_path / "ui.log",
        ready=lambda: processes.http_ok(f"{base}/ui/ping"),
        what="ui",
        env=env,
    )
    session = requests.Session()
    session.cookies.set("session", SESSION)
    session.base = base  # type: ignore[attr-defined]
    yield session
    session.close()
    processes.stop(process)


def post(ui: Any, path: str, body: dict[str, Any]) -> requests.Response:
    return ui.post(f"{ui.base}{path}", json=body, timeout=10)


def test_create_answers_201_and_the_tenant_ends_provisioned(ui, db, influx):
    tenant_id = new_tenant_id("ui")

    created = post(ui, "/ui/tenants", {"tenant_id": tenant_id, "name": "From the UI"})

    assert created.status_code == 201
    assert created.json()["influxdb_provisioned"] is True  # accepted for provisioning
    wait_for_state(db, tenant_id, "provisioned")
    stats = ui.get(f"{ui.base}/ui/tenants/{tenant_id}/stats", timeout=10).json()["influxdb"]
    assert stats == {
        **stats,
        "exists": True,
        "telemetry_count": 0,
        "error": None,
        "state": "provisioned",
        "provisioned": True,
    }
    # The operator router behind the UI's own check answers the UI's stats body
    ours = ui.get(f"{ui.base}/operator/tenants/{tenant_id}/stats", timeout=10).json()
    assert (ours["name"], ours["status"], ours["influxdb"]["state"]) == (
        "From the UI",
        "active",
        "provisioned",
    )
    refused = requests.get(f"{ui.base}/operator/tenants/{tenant_id}/stats", timeout=10)
    assert refused.status_code == 401
    assert refused.json() == {"detail": "operator admin session required"}


def test_a_row_rolled_back_is_never_provisioned_one_committed_is(ui, db, influx, beat):
    rolled_back, committed = new_tenant_id("ui"), new_tenant_id("ui")

    lost = post(ui, "/ui/tenants", {"tenant_id": rolled_back, "name": "x", "rollback": True})
    kept = post(ui, "/ui/tenants", {"tenant_id": committed, "name": "y"})

    assert lost.json()["influxdb_provisioned"] is False
    assert kept.json()["influxdb_provisioned"] is True
    wait_for_state(db, committed, "provisioned")
    time.sleep(2 * INTERVAL)  # two reconcile runs: nothing turns up for the lost one
    assert tenant_row(db, rolled_back) is None
    assert influx.create_calls(f"telemetry_{rolled_back}") == 0


def test_while_a_stats_request_waits_on_a_hanging_influxdb_the_ui_answers_others(ui, db, influx):
    tenant_id = new_tenant_id("ui")
    post(ui, "/ui/tenants", {"tenant_id": tenant_id, "name": "z"})
    wait_for_state(db, tenant_id, "provisioned")
    influx.set_hang(True)

    # When a stats request waits on the live check (bounded at 2 s) ...
    answers: list[tuple[float, dict[str, Any]]] = []

    def stats() -> None:
        started = time.monotonic()
        body = ui.get(f"{ui.base}/ui/tenants/{tenant_id}/stats", timeout=10).json()
        answers.append((time.monotonic() - started, body))

    waiting = threading.Thread(target=stats)
    waiting.start()
    wait_for(lambda: influx.request_count("GET", "/api/v3/query_sql") >= 1, what="the check")

    # ... other requests to the same app answer at once, while it still waits
    pings = []
    while waiting.is_alive() and len(pings) < 5:
        started = time.monotonic()
        assert requests.get(f"{ui.base}/ui/ping", timeout=5).ok
        pings.append(time.monotonic() - started)
    waiting.join()
    # A blocked event loop answers the first ping only after the stats request: one ping.
    assert len(pings) == 5, f"only {len(pings)} answered while the stats request waited"
    assert sorted(pings)[2] < 0.05, pings  # the median, for a busy machine
    assert answers, "the stats request did not answer"
    took, body = answers[0]
    assert took < 3.0
    assert body["influxdb"]["error"].startswith("timeout")
    assert body["influxdb"]["state"] == "provisioned"


def test_the_drop_in_refuses_an_id_it_cannot_provision(ui):
    # Never a silent False for an id the worker could not provision: a clear error
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import asyncio; from api_hooks.aio import provision_tenant_influxdb as p; "
            "asyncio.run(p('has space'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "InvalidTenantId" in result.stderr
    assert "may contain only" in result.stderr


def test_the_console_mounted_in_the_ui_is_behind_the_uis_own_check(ui, db, influx):
    # Given a tenant made through the UI
    tenant_id = new_tenant_id("uic")
    post(ui, "/ui/tenants", {"tenant_id": tenant_id, "name": "Seen in the console"})
    wait_for_state(db, tenant_id, "provisioned")
    # Then an operator admin sees it in the console the UI mounted
    page = ui.get(f"{ui.base}/operator/console/tenants/{tenant_id}", timeout=10)
    assert page.status_code == 200
    assert "Seen in the console" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    # And nobody else does: the UI's own check answers, not the console's sign-in
    anonymous = requests.get(f"{ui.base}/operator/console/tenants/{tenant_id}", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json() == {"detail": "operator admin session required"}
    # And its forms are the operator's own: a retry without the page's token is refused
    refused = ui.post(f"{ui.base}/operator/console/tenants/{tenant_id}/retry", timeout=10)
    assert refused.status_code == 403
