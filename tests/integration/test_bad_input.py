"""Bad input gets a clear error and changes nothing: no row stored, no message queued."""

from __future__ import annotations

import json

import pytest

from tests.conftest import new_tenant_id, queued

INVALID_TENANT_IDS = [
    ("", "must not be empty"),
    ("-starts-with-dash", "must start with an ASCII letter or digit"),
    ("_starts_with_underscore", "must start with an ASCII letter or digit"),
    ("has space", "may contain only"),
    ("comma,breaks,line,protocol", "may contain only"),
    ("equals=sign", "may contain only"),
    ("new\nline", "may contain only"),
    ("dot.ted", "may contain only"),
    ("slash/ed", "may contain only"),
    ("uni-cödé", "may contain only"),
    ("a" * 55, "at most 54 characters"),
]


def test_valid_tenant_is_queued_while_the_worker_is_paused(api, db, paused_worker):
    # The control case: it shows that the checks below would see a queued message.
    response = api.post("/operator/tenants", json={"tenant_id": new_tenant_id(), "name": "ok"})
    assert response.status_code == 201
    assert queued(paused_worker) == 1


@pytest.mark.parametrize(("tenant_id", "rule"), INVALID_TENANT_IDS)
def test_invalid_tenant_id_is_refused_and_changes_nothing(api, db, paused_worker, tenant_id, rule):
    # When the operator submits an invalid tenant id
    response = api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "x"})

    # Then the answer is 422 naming the rule that broke
    assert response.status_code == 422
    assert rule in response.json()["detail"]

    # And nothing was stored and nothing was queued
    assert db.execute("SELECT count(*) FROM tenants").fetchone() == (0,)
    assert queued(paused_worker) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"name": "missing id"},
        {"tenant_id": "missing-name"},
        {"tenant_id": 42, "name": "not a string"},
        {"tenant_id": "ok", "name": None},
        {"tenant_id": "ok", "name": "   "},
        {"tenant_id": "ok", "name": "x" * 201},
        {"tenant_id": "ok", "name": "x", "unexpected": True},
        ["tenant_id", "name"],
    ],
)
def test_malformed_create_requests_are_refused(api, db, paused_worker, body):
    response = api.post("/operator/tenants", json=body)
    assert response.status_code == 422
    assert response.json()["detail"]
    assert db.execute("SELECT count(*) FROM tenants").fetchone() == (0,)
    assert queued(paused_worker) == 0


def test_body_that_is_not_json_is_refused(api, db, paused_worker):
    response = api.post(
        "/operator/tenants", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert db.execute("SELECT count(*) FROM tenants").fetchone() == (0,)
    assert queued(paused_worker) == 0


def test_duplicate_tenant_is_409_and_queues_nothing_more(api, db, paused_worker):
    tenant_id = new_tenant_id()
    assert api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "a"}).is_success
    response = api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "b"})
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]
    assert db.execute("SELECT name FROM tenants").fetchall() == [("a",)]
    assert queued(paused_worker) == 1


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("retention_period", "90m", "h, d, w, mo or y"),
        ("retention_period", "45s", "h, d, w, mo or y"),
        ("retention_period", "1d12h", "no compound values"),
        ("retention_period", "1h 30m", "h, d, w, mo or y"),
        ("retention_period", "30d\n", "h, d, w, mo or y"),
        ("retention_period", "0d", "positive number"),
        ("retention_period", "999y", "at most 292 years"),
        ("name", "bell\u0007", "control characters"),
        ("name", "two\u2028lines", "line breaks"),
        ("name", "evil\u202egnp.exe", "bidirectional"),
        ("name", "zero\u200bwidth", "invisible formatting"),
        ("name", "\ud800", "lone surrogate"),
    ],
)
def test_values_core_or_postgres_would_refuse_are_422(api, db, paused_worker, field, value, rule):
    # When a value is sent that InfluxDB 3 Core or Postgres would refuse later
    body = {"tenant_id": new_tenant_id(), "name": "ok", field: value}
    raw = json.dumps(body)  # keeps a lone surrogate as the \ud800 escape a client would send
    response = api.post(
        "/operator/tenants", content=raw, headers={"Content-Type": "application/json"}
    )

    # Then it is refused at once with the rule, and nothing is stored or queued
    assert response.status_code == 422, response.text
    assert rule in response.json()["detail"]
    assert db.execute("SELECT count(*) FROM tenants").fetchone() == (0,)
    assert queued(paused_worker) == 0


@pytest.mark.parametrize("period", ["12h", "30d", "2w", "3mo", "1y"])
def test_retention_periods_core_takes_are_accepted(api, db, paused_worker, period):
    body = {"tenant_id": new_tenant_id(), "name": "ok", "retention_period": period}
    assert api.post("/operator/tenants", json=body).status_code == 201


def test_names_with_emoji_sequences_are_accepted(api, db, paused_worker):
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # joined by U+200D
    body = {"tenant_id": new_tenant_id(), "name": f"Caf\u00e9 {family}"}
    response = api.post("/operator/tenants", json=body)
    assert response.status_code == 201
    assert response.json()["name"] == body["name"]


def test_a_body_nested_100000_deep_is_422(api, db, paused_worker):
    response = api.post(
        "/operator/tenants",
        content="[" * 100_000 + "]" * 100_000,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "nested" in response.json()["detail"]
    assert queued(paused_worker) == 0


def test_an_oversized_body_is_413_without_reading_it_all(api, db, paused_worker):
    name = "x" * (2 * 1024 * 1024)
    response = api.post("/operator/tenants", json={"tenant_id": new_tenant_id(), "name": name})
    assert response.status_code == 413
    assert "at most" in response.json()["detail"]
    assert db.execute("SELECT count(*) FROM tenants").fetchone() == (0,)
