"""Bad input drills, property-based: whatever arrives, a clear 4xx and nothing changed; whatever
InfluxDB answers, the task records a reason and never dies on an unexpected exception."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import queued
from worker.db import get_engine
from worker.node_config import NodeConfig
from worker.nodes import NodePool
from worker.provisioning import provision_tenant
from worker.settings import get_settings

pytestmark = pytest.mark.drill

VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,53}")
# Fixtures are per test, not per example: each example checks and restores state itself.
# Derandomized: the same examples on every run, so CI never depends on a lucky draw.
PROPERTY = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def stored(db: Any) -> int:
    (count,) = db.execute("SELECT count(*) FROM tenants").fetchone()
    return int(count)


def test_any_tenant_id_is_created_or_refused_with_a_reason(api, db, paused_worker, report):
    seen = {"created": 0, "refused": 0}

    @PROPERTY
    @given(tenant_id=st.one_of(st.text(max_size=70), st.from_regex(VALID_ID, fullmatch=True)))
    def check(tenant_id: str) -> None:
        response = api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "p"})
        if VALID_ID.fullmatch(tenant_id):
            assert response.status_code == 201, response.text
            assert stored(db) == 1
            assert queued(paused_worker) == 1
            db.execute("TRUNCATE tenants")
            paused_worker.delete("provisioning")
            seen["created"] += 1
        else:
            assert response.status_code == 422, response.text
            assert "tenant_id" in response.json()["detail"]
            assert stored(db) == 0
            assert queued(paused_worker) == 0
            seen["refused"] += 1

    check()
    report(f"injected: {sum(seen.values())} generated tenant ids (any unicode, up to 70 chars)")
    report(
        f"verified: {seen['created']} valid created and queued once; {seen['refused']} invalid "
        "got 422 naming the rule, nothing stored, nothing queued"
    )
    assert seen["created"] and seen["refused"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=8,
)
BODIES = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {"tenant_id": st.from_regex(VALID_ID, fullmatch=True), "name": st.text(max_size=30)}
    ),
    st.fixed_dictionaries(  # always well formed: printable names starting with a letter or digit
        {
            "tenant_id": st.from_regex(VALID_ID, fullmatch=True),
            "name": st.from_regex(r"[A-Za-z0-9][ -~]{0,29}", fullmatch=True),
        }
    ),
    st.fixed_dictionaries({"tenant_id": JSON_VALUES, "name": JSON_VALUES}),
    st.fixed_dictionaries(
        {"tenant_id": st.from_regex(VALID_ID, fullmatch=True), "name": JSON_VALUES},
        optional={"extra": JSON_VALUES},
    ),
)


def test_any_request_body_is_created_or_refused_with_a_message(api, db, paused_worker, report):
    seen = {"created": 0, "refused": 0}

    @PROPERTY
    @given(body=BODIES)
    def check(body: Any) -> None:
        response = api.post(
            "/operator/tenants",
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        if response.status_code == 201:
            # Only a well-formed body may get through.
            assert set(body) == {"tenant_id", "name"}
            assert VALID_ID.fullmatch(body["tenant_id"])
            assert isinstance(body["name"], str)
            assert body["name"].strip()
            db.execute("TRUNCATE tenants")
            paused_worker.delete("provisioning")
            seen["created"] += 1
            return
        assert response.status_code == 422, response.text
        assert response.json()["detail"]
        assert stored(db) == 0
        assert queued(paused_worker) == 0
        seen["refused"] += 1

    check()
    report(f"injected: {sum(seen.values())} generated JSON bodies for POST /operator/tenants")
    report(
        f"verified: {seen['created']} well-formed created; {seen['refused']} got 422 with a "
        "message, nothing stored, nothing queued"
    )
    assert seen["created"] and seen["refused"]  # both paths were really exercised


STATUSES = st.sampled_from(
    [200, 201, 204, 301, 400, 401, 403, 404, 409, 413, 415, 418, 422, 429, 500, 502, 503]
) | st.integers(200, 599)
RESPONSE_BODIES = st.one_of(
    st.binary(max_size=120),
    st.text(max_size=120).map(str.encode),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.just(b'{"error": "Adding a new database would exceed limit of 5 databases"}'),
)


def test_any_influxdb_answer_ends_in_a_recorded_outcome(db, scripted, report):
    outcomes: dict[str, int] = {}
    node = NodeConfig("scripted", scripted.url, "prop-token-abcdef", database_limit=5)
    settings = get_settings().model_copy(
        update={"influxdb_nodes": (node,), "influxdb_read_timeout": 2.0}
    )
    pool = NodePool(settings)

    @PROPERTY
    @given(status=STATUSES, body=RESPONSE_BODIES)
    def check(status: int, body: bytes) -> None:
        # Given a tenant owed work and an "InfluxDB" answering this status and body to all
        db.execute("TRUNCATE tenants, influxdb_nodes")
        db.execute("INSERT INTO tenants (tenant_id, name) VALUES ('prop', 'p')")
        scripted.answer(status, body)

        # When the provisioning logic runs, it returns an outcome instead of raising
        with get_engine().connect() as conn:
            outcome = provision_tenant(conn, "prop", pool, settings)

        # Then the row holds that outcome, with a reason whenever it did not succeed
        state, reason, last_error = db.execute(
            "SELECT influxdb_state, influxdb_error_reason, influxdb_last_error FROM tenants"
        ).fetchone()
        assert outcome.result in ("provisioned", "retrying", "failed", "waiting_for_capacity")
        assert state == outcome.result
        if outcome.result == "provisioned":
            assert reason is None
        else:
            assert reason == outcome.reason
            assert reason is not None
            assert last_error
            assert "prop-token-abcdef" not in last_error
        key = f"{outcome.result}/{reason or '-'}"
        outcomes[key] = outcomes.get(key, 0) + 1

    check()
    report(f"injected: {sum(outcomes.values())} random InfluxDB answers (status + body)")
    report(f"verified: never raised; every outcome recorded with its reason: {outcomes}")
