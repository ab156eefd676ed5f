"""Every 4xx answer is ``{"detail": "<message>"}`` - FastAPI's own validation errors included,
and also when the UI mounts the router in an app of its own.

In-process (TestClient), without Redis or a worker: every request here is refused before
anything is looked up, but for the last ones, which read rows of the test's Postgres.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, HTTPException, Query
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from api_hooks.app import create_app
from api_hooks.bodies import MAX_BODY_BYTES
from api_hooks.dropin import check_tenant_influxdb
from api_hooks.router import operator_router
from api_hooks.status import tenant_influxdb_status, tenant_stats
from tests.conftest import OPERATOR_TOKEN

AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
JSON_CONTENT = {"Content-Type": "application/json"}
TENANT_ROUTES = [
    ("GET", "/operator/tenants/{}/stats"),
    ("DELETE", "/operator/tenants/{}"),
    ("POST", "/operator/tenants/{}/influxdb/retry"),
    ("POST", "/operator/tenants/{}/influxdb/adopt"),
]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(), headers=AUTH) as test_client:
        yield test_client


@pytest.fixture
def anonymous() -> Iterator[TestClient]:
    # An app of its own per test: failed credentials are throttled per app and address.
    with TestClient(create_app()) as test_client:
        yield test_client


def error_detail(response: Any, status: int) -> str:
    """The message of a 4xx answer, after checking it is exactly ``{"detail": str}``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["detail"], body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body["detail"]


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Basic b3BlcmF0b3I6eA==", f"Token {OPERATOR_TOKEN}"]
)
@pytest.mark.parametrize(("method", "path"), [("POST", "/operator/tenants"), *TENANT_ROUTES])
def test_401_without_the_operator_token(anonymous, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = anonymous.request(method, path.format("acme"), headers=headers)
    assert "Authorization: Bearer" in error_detail(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), TENANT_ROUTES)
def test_404_for_a_malformed_tenant_id_names_the_rule(client, db, method, path):
    response = client.request(method, path.format("no.dots"))
    detail = error_detail(response, 404)
    assert detail.startswith("no such tenant: tenant_id may contain only")


def test_an_older_row_whose_id_breaks_the_rule_is_shown_not_found_and_not_looked_for(
    client, db, influx
):
    # Given a row the UI made before this worker, its id one no InfluxDB database can be
    # named after, which its run failed
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_error_reason) "
        "VALUES ('acme.corp', 'Acme', 'failed', 'invalid_name')"
    )
    calls = influx.request_count()

    # When its stats are asked for, as the UI's stats page and the drop-in check ask
    response = client.get("/operator/tenants/acme.corp/stats")
    check = check_tenant_influxdb("acme.corp")

    # Then they are shown (not 404), with the rule it breaks, and InfluxDB is not asked
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["tenant_id"], body["influxdb"]["state"]) == ("acme.corp", "failed")
    assert body["influxdb"]["live"]["exists"] is None
    assert "cannot name an InfluxDB database" in body["influxdb"]["live"]["error"]
    assert (check["state"], check["exists"]) == ("failed", None)
    assert influx.request_count() == calls
    # And its changes still answer 404 with the rule: nothing can be done for it here
    assert error_detail(client.post("/operator/tenants/acme.corp/influxdb/retry"), 404)
    # And an id no row has, or no row could have, is not found as before
    assert error_detail(client.get("/operator/tenants/globex.corp/stats"), 404).startswith(
        "no such tenant: tenant_id may contain only"
    )


@pytest.mark.parametrize("value", ["maybe", "", "2"])
def test_422_for_a_bad_query_parameter_is_one_plain_message(client, value):
    response = client.get(f"/operator/tenants/acme/stats?live={value}")
    detail = error_detail(response, 422)
    assert detail.startswith("query parameter live: "), detail
    assert "valid boolean" in detail


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body must be JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested at most"),
        (b'{"tenant_id": "a", "name": Infinity}', "body must be JSON"),
        (b'{"tenant_id": "a"}', "missing field(s): name"),
        (b'{"tenant_id": "a", "name": "n", "extra": 1}', "unknown field(s): extra"),
        (b'{"tenant_id": "a", "tenant_id": "b", "name": "n"}', "body names 'tenant_id' twice"),
        (b'{"tenant_id": "-a", "name": "n"}', "must start with an ASCII letter or digit"),
        (b'{"tenant_id": "a", "name": "n", "retention_period": "90m"}', "h, d, w, mo or y"),
    ],
)
def test_422_for_a_bad_create_body_is_one_plain_message(client, body, message):
    response = client.post("/operator/tenants", content=body, headers=JSON_CONTENT)
    assert message in error_detail(response, 422)


@pytest.mark.parametrize("body", [b"[]", b'{"node": 3}', b'{"nodes": "a"}'])
def test_422_for_a_bad_adopt_body(client, body):
    response = client.post(
        "/operator/tenants/acme/influxdb/adopt", content=body, headers=JSON_CONTENT
    )
    error_detail(response, 422)


@pytest.mark.parametrize("path", ["/operator/tenants", "/operator/tenants/acme/influxdb/adopt"])
@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_415_for_a_body_not_sent_as_json_and_nothing_is_done(client, db, path, content_type):
    # Given a body a page on another site could post with its visitor's cookies, no preflight
    body = b'{"tenant_id": "csrf", "name": "Forged", "node": "default"}'
    headers = {} if content_type is None else {"Content-Type": content_type}

    # Then it is refused for its media type, and no tenant is created or changed
    response = client.post(path, content=body, headers=headers)
    assert error_detail(response, 415) == "body must be sent as Content-Type: application/json"
    assert db.execute("SELECT count(*) FROM tenants").fetchone() == (0,)


@pytest.mark.parametrize("action", ["adopt", "retry"])
def test_415_for_an_empty_form_posted_to_an_action_and_nothing_is_done(client, db, action):
    # Given a failed tenant, and a form with no fields (what another site's page can post)
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_error_reason) "
        "VALUES ('acme', 'Acme', 'failed', 'name_taken')"
    )
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    # Then the action is refused for its media type, and the tenant is as it was
    response = client.post(f"/operator/tenants/acme/influxdb/{action}", content=b"", headers=form)
    assert error_detail(response, 415) == "body must be sent as Content-Type: application/json"
    assert db.execute("SELECT influxdb_state FROM tenants").fetchone() == ("failed",)
    assert db.execute(
        "SELECT count(*) FROM tenant_events WHERE type LIKE 'operator.%'"
    ).fetchone() == (0,)


def test_json_with_a_charset_is_json(client, db, broker):
    response = client.post(
        "/operator/tenants",
        content=b'{"tenant_id": "acme", "name": "Acme"}',
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("path", ["/operator/tenants", "/operator/tenants/acme/influxdb/adopt"])
def test_413_for_a_body_over_the_limit(client, path):
    response = client.post(path, content=b" " * (MAX_BODY_BYTES + 1))
    assert str(MAX_BODY_BYTES) in error_detail(response, 413)


def test_unknown_paths_and_methods_answer_in_the_same_shape(client):
    error_detail(client.get("/operator/nothing-here"), 404)
    error_detail(client.put("/operator/tenants"), 405)


def test_the_stats_body_is_the_hooks_answer_field_for_field(client, db):
    # The typed response model must neither drop nor reshape a field the hook returns.
    db.execute(
        "INSERT INTO tenants (tenant_id, name, status, influxdb_state, influxdb_node, "
        "influxdb_retention_period, influxdb_attempts, influxdb_provisioned_at) "
        "VALUES ('acme', 'Acme', 'active', 'provisioned', 'influx-a', '30d', 1, now())"
    )

    response = client.get("/operator/tenants/acme/stats?live=false")

    assert response.status_code == 200, response.text
    assert response.json() == tenant_stats("acme", live=False)
    assert response.json()["influxdb"] == tenant_influxdb_status("acme", live=False)
    assert (response.json()["name"], response.json()["status"]) == ("Acme", "active")


def test_the_stats_of_a_row_the_ui_made_without_a_name_or_status_are_served(client, db):
    # Given the UI's own table, whose name may be NULL, and a row of its with neither a name
    # nor a status
    db.execute(
        "ALTER TABLE tenants ALTER COLUMN name DROP NOT NULL, ALTER COLUMN status DROP NOT NULL"
    )
    try:
        db.execute("INSERT INTO tenants (tenant_id, name, status) VALUES ('old', NULL, NULL)")
        response = client.get("/operator/tenants/old/stats?live=false")
        hook = tenant_stats("old", live=False)
    finally:
        db.execute("DELETE FROM tenants WHERE tenant_id = 'old'")
        db.execute(
            "ALTER TABLE tenants ALTER COLUMN name SET NOT NULL, ALTER COLUMN status SET NOT NULL"
        )

    # Then the stats say so (null), as the hook does: not a 500
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["status"]) == (None, None)
    assert response.json() == hook


def test_a_create_the_uis_table_refuses_for_its_own_rule_is_not_called_exists(client, db):
    # Given the UI's table with a rule of its own: a NOT NULL column we do not fill
    db.execute("ALTER TABLE tenants ADD COLUMN plan text NOT NULL DEFAULT 'free'")
    db.execute("ALTER TABLE tenants ALTER COLUMN plan DROP DEFAULT")
    try:
        # When a new id is created, then the table's error is raised, not "already exists"
        # (a 409 would tell the UI to stop; the id is free)
        with pytest.raises(IntegrityError, match="plan"):
            client.post("/operator/tenants", json={"tenant_id": "brandnew", "name": "New"})
    finally:
        db.execute("ALTER TABLE tenants DROP COLUMN plan")
    assert db.execute("SELECT count(*) FROM tenants").fetchone() == (0,)


def test_a_create_refused_by_a_unique_rule_of_the_uis_own_is_not_called_exists(client, db, broker):
    # Given the UI's table with a unique rule of its own: one tenant a name
    db.execute("CREATE UNIQUE INDEX ui_unique_name ON tenants (name)")
    try:
        taken = client.post("/operator/tenants", json={"tenant_id": "first", "name": "Same"})
        assert taken.status_code == 201, taken.text
        # When a new id is created with a name taken, then the table's error is raised, not
        # "tenant 'second' already exists" (no tenant has that id)
        with pytest.raises(IntegrityError, match="ui_unique_name"):
            client.post("/operator/tenants", json={"tenant_id": "second", "name": "Same"})
    finally:
        db.execute("DROP INDEX ui_unique_name")


def ui_require_admin(session: Annotated[str, Query()]) -> None:
    """Stands for the UI's own auth dependency, with a parameter of its own."""
    if session != "admin":
        raise HTTPException(403, detail="admins only")


@pytest.fixture(scope="module")
def ui_client() -> Iterator[TestClient]:
    # The UI's app: our router, none of our exception handlers.
    app = FastAPI()
    app.include_router(operator_router(ui_require_admin), prefix="/ui")
    with TestClient(app) as test_client:
        yield test_client


def test_mounted_in_the_uis_app_validation_errors_are_still_plain(ui_client):
    response = ui_client.get("/ui/operator/tenants/acme/stats?live=maybe&session=admin")
    assert error_detail(response, 422).startswith("query parameter live: ")

    # The UI's own dependency's parameters are in the same shape too.
    response = ui_client.get("/ui/operator/tenants/acme/stats")
    assert error_detail(response, 422) == "query parameter session: Field required"

    response = ui_client.post(
        "/ui/operator/tenants?session=admin", content=b"{not json", headers=JSON_CONTENT
    )
    assert "body must be JSON" in error_detail(response, 422)
    error_detail(ui_client.get("/ui/operator/tenants/acme/stats?session=guest"), 403)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/operator/tenants/acme/influxdb/adopt"),
        ("POST", "/operator/tenants/acme/influxdb/retry"),
        ("DELETE", "/operator/tenants/acme"),
    ],
)
@pytest.mark.parametrize(
    "browser",
    [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://elsewhere.example"}],
    ids=["sec-fetch-site", "origin"],
)
def test_403_for_a_change_asked_from_another_sites_page(client, db, method, path, browser):
    # Given a failed tenant, and a request with no body and no Content-Type - what another
    # site's page can send with its visitor's cookies (fetch, mode no-cors) with no preflight
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_error_reason) "
        "VALUES ('acme', 'Acme', 'failed', 'name_taken')"
    )

    # Then it is refused for where it came from, and the tenant is as it was
    response = client.request(method, path, headers=browser)
    assert error_detail(response, 403).startswith("refused: sent from a page of another origin")
    assert db.execute("SELECT influxdb_state FROM tenants").fetchone() == ("failed",)
    assert db.execute(
        "SELECT count(*) FROM tenant_events WHERE type LIKE 'operator.%'"
    ).fetchone() == (0,)


def test_the_same_origin_and_reads_from_anywhere_are_served(client, db, broker):
    # A page of the API's own origin may change things; any page may read (answers are not
    # readable across origins without CORS, which the API does not send)
    same_origin = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    created = client.post(
        "/operator/tenants", json={"tenant_id": "acme", "name": "Acme"}, headers=same_origin
    )
    assert created.status_code == 201, created.text
    read = client.get(
        "/operator/tenants/acme/stats?live=false", headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert read.status_code == 200, read.text


def test_409_for_an_id_still_being_deleted_says_so(client, db):
    # Given a tenant being deleted, and one that is not
    for tenant_id, state in (("acme", "deprovisioning"), ("beta", "provisioned")):
        db.execute(
            "INSERT INTO tenants (tenant_id, name, influxdb_state) VALUES (%s, 'n', %s)",
            (tenant_id, state),
        )

    # When each id is created again, then the answer says why it cannot be, yet
    again = client.post("/operator/tenants", json={"tenant_id": "acme", "name": "Acme"})
    assert error_detail(again, 409) == (
        "tenant 'acme' already exists: it is being deleted; create it again once its deletion "
        "has finished"
    )
    again = client.post("/operator/tenants", json={"tenant_id": "beta", "name": "Beta"})
    assert error_detail(again, 409) == "tenant 'beta' already exists"
    assert db.execute(
        "SELECT count(*) FROM tenant_events WHERE type LIKE 'operator.%'"
    ).fetchone() == (0,)
