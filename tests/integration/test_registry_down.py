"""With Postgres unreachable, the API answers each request with a 503 in the one error shape
(``{"detail"}``, ``Retry-After``), not a bare 500: the UI and the location clients can tell
"try again" from a defect, and the database password never shows."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
import requests

from tests.conftest import LOCATIONS_TOKEN, OPERATOR_TOKEN, start_api, stop_process

REGISTRY_PASSWORD = "registry-pw-7f3a9c"  # must appear in no answer and no log


@pytest.fixture
def api_without_postgres(tmp_path: Path):  # type: ignore[no-untyped-def]
    log = tmp_path / "api.log"
    # Port 1: nothing listens there, so every connection attempt is refused at once
    url = f"postgresql+psycopg://postgres:{REGISTRY_PASSWORD}@127.0.0.1:1/registry"
    process, base = start_api(log, {"DATABASE_URL": url})
    yield base, log
    stop_process(process)


def test_every_way_in_answers_503_try_again_without_postgres(api_without_postgres):
    base, log = api_without_postgres
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    asks = [
        ("POST", "/operator/tenants", operator, {"tenant_id": "acme", "name": "Acme"}),
        ("GET", "/operator/tenants/acme/stats", operator, None),
        ("POST", "/operator/tenants/acme/influxdb/retry", operator, None),
        ("DELETE", "/operator/tenants/acme", operator, None),
        ("GET", "/operator/tenants/acme/events", operator, None),
        ("GET", "/locations", {"Authorization": f"Bearer {LOCATIONS_TOKEN}"}, None),
        ("GET", "/locations/acme", {"Authorization": f"Bearer {LOCATIONS_TOKEN}"}, None),
    ]
    for method, path, headers, body in asks:
        answer = requests.request(method, base + path, headers=headers, json=body, timeout=15)
        assert answer.status_code == 503, (path, answer.status_code, answer.text)
        assert answer.headers["Retry-After"] == "5", path
        assert "cannot be reached" in answer.json()["detail"], path
        assert REGISTRY_PASSWORD not in answer.text

    # And the log says why, once per request, without the password
    text = log.read_text(errors="replace")
    assert text.count("Postgres cannot be reached") >= len(asks)
    assert REGISTRY_PASSWORD not in text

    # A wrong token is still refused first, without a word about Postgres
    wrong = requests.get(f"{base}/locations", headers={"Authorization": "Bearer x"}, timeout=15)
    assert wrong.status_code == 401


def test_a_request_behind_a_held_table_lock_answers_503_in_seconds_not_hangs(db, tmp_path):
    # Given a real API process, and a tenant it created
    process, base = start_api(tmp_path / "api.log")
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    try:
        made = {"tenant_id": "held-1", "name": "Held"}
        created = requests.post(f"{base}/operator/tenants", json=made, headers=operator, timeout=10)
        assert created.status_code == 201, created.text

        # When a migration holds the tenants table in SHARE mode (reads go on, writes wait)
        dsn = db.info.dsn
        with psycopg.connect(dsn) as migration:
            migration.execute("LOCK TABLE tenants IN SHARE MODE")
            started = time.monotonic()
            answer = requests.post(
                f"{base}/operator/tenants",
                json={"tenant_id": "held-2", "name": "Held"},
                headers=operator,
                timeout=30,
            )
            took = time.monotonic() - started
            # A read meanwhile is not held by the writes waiting
            stats = requests.get(
                f"{base}/operator/tenants/held-1/stats?live=false", headers=operator, timeout=30
            )
            migration.rollback()

        # Then the create answers 503 "try again" within its 3 s bound, not when the lock goes
        assert answer.status_code == 503, answer.text
        assert "nothing was changed" in answer.json()["detail"]
        assert answer.headers["Retry-After"] == "5"
        assert took < 6, f"took {took:.1f}s"
        assert stats.status_code == 200, stats.text
        # And nothing was stored: the create is free to be sent again, and succeeds
        again = requests.post(
            f"{base}/operator/tenants",
            json={"tenant_id": "held-2", "name": "Held"},
            headers=operator,
            timeout=10,
        )
        assert again.status_code == 201, again.text
    finally:
        stop_process(process)
