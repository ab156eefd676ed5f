"""The stats endpoint's live check never counts a database of the tenant's name that cannot be
its own (docs/integrating.md, ``tenant_influxdb_status``)."""

from __future__ import annotations

import pytest

from api_hooks.status import tenant_influxdb_status
from tests.conftest import existing_database
from tests.fast.conftest import T0, insert
from worker import store
from worker.db import get_engine


@pytest.mark.parametrize(
    ("columns", "why"),
    [
        ({"state": "waiting_for_capacity"}, "waiting for capacity"),
        # A name_taken tenant, deleted: its reason is cleared, the database is another's
        ({"state": "deprovisioning", "node": "default"}, "never proven"),
        # created, its run not come yet (a broker down): the pool of one is not asked
        ({"state": "pending"}, "not placed on a node yet"),
        ({"state": "retrying", "error_reason": "unreachable"}, "not placed on a node yet"),
        # its wait for capacity over, a slot reserved on the server, its run not come yet
        ({"state": "pending", "node": "default", "error_reason": "database_limit"}, "reserved"),
    ],
)
def test_a_database_of_its_name_that_cannot_be_its_own_is_not_counted(db, influx, columns, why):
    # Given someone else's database of the tenant's name, holding 2 points, on the one server
    existing_database(influx, "acme", points=2, incarnation="someone-else")
    insert(db, "acme", **columns)

    # Then the live check neither counts it nor says it exists, and says why
    live = tenant_influxdb_status("acme")["live"]
    assert (live["exists"], live["telemetry_count"]) == (None, None)
    assert why in live["error"]


def test_a_tenant_provisioned_and_being_deleted_is_still_counted(db, influx):
    existing_database(influx, "acme", points=2)
    insert(db, "acme", state="deprovisioning", node="default", provisioned_at=T0)

    live = tenant_influxdb_status("acme")["live"]
    assert (live["exists"], live["telemetry_count"], live["error"]) == (True, 2, None)


def test_a_name_taken_tenant_once_provisioned_is_not_counted_once_it_is_deleted(db, influx):
    # Given a tenant provisioned once, whose database of its name later proved someone else's
    existing_database(influx, "acme", points=2, incarnation="someone-else")
    insert(db, "acme", state="failed", node="default", provisioned_at=T0, error_reason="name_taken")

    # When it is deleted (its reason is cleared)
    with get_engine().begin() as conn:
        assert store.request_deletion(conn, "acme", T0)

    # Then the other's database is neither counted nor said to exist
    status = tenant_influxdb_status("acme")
    assert (status["state"], status["error_reason"]) == ("deprovisioning", None)
    live = status["live"]
    assert (live["exists"], live["telemetry_count"]) == (None, None)
    assert "never proven" in live["error"]


@pytest.mark.parametrize(
    ("state", "reason", "provisioned_at"),
    [
        ("retrying", "timeout", None),
        ("failed", "timeout", None),
        ("provisioning", None, None),
        # provisioned once elsewhere, moved here since (a 422 there): that proved nothing here
        ("retrying", "timeout", T0),
    ],
)
def test_a_database_on_its_server_not_yet_proven_its_own_is_shown_not_counted(
    db, influx, state, reason, provisioned_at
):
    # Given a tenant placed on the server, whose create found a database of its name there
    # (409) and whose run could not read its contents yet: someone else's, with 2 points
    existing_database(influx, "acme", points=2, incarnation="someone-else")
    insert(
        db, "acme", state=state, node="default", error_reason=reason, provisioned_at=provisioned_at
    )

    # Then the live check says the name exists there, but counts none of its rows as the
    # tenant's, and says why
    live = tenant_influxdb_status("acme")["live"]
    assert (live["exists"], live["telemetry_count"]) == (True, None)
    assert "not yet proven this tenant's" in live["error"]


@pytest.mark.parametrize("columns", [{"adopt": "any"}, {"adopt": "remade", "provisioned_at": T0}])
def test_a_tenant_retrying_on_a_database_declared_its_own_is_counted(db, influx, columns):
    existing_database(influx, "acme", points=2)
    insert(db, "acme", state="retrying", node="default", error_reason="timeout", **columns)

    live = tenant_influxdb_status("acme")["live"]
    assert (live["exists"], live["telemetry_count"], live["error"]) == (True, 2, None)


@pytest.mark.parametrize("state", ["pending", "retrying", "provisioning"])
def test_a_name_taken_tenant_retried_by_an_operator_is_not_counted(db, influx, state):
    # Given someone else's database of the tenant's name, and the tenant retried after it
    # stopped name_taken (the reason stays until an attempt ends)
    existing_database(influx, "acme", points=2, incarnation="someone-else")
    insert(db, "acme", state=state, node="default", error_reason="name_taken")

    live = tenant_influxdb_status("acme")["live"]
    assert (live["exists"], live["telemetry_count"]) == (None, None)
    assert "not this tenant's" in live["error"]


@pytest.mark.parametrize(
    "columns",
    [
        {"state": "pending", "adopt": "unmarked"},  # from before the worker: its data is there
        {"state": "provisioned", "provisioned_at": T0},  # provisioned before the pool existed
    ],
)
def test_a_tenant_on_no_node_that_may_hold_a_database_is_looked_for_on_a_pool_of_one(
    db, influx, columns
):
    existing_database(influx, "acme", points=2)
    insert(db, "acme", **columns)

    live = tenant_influxdb_status("acme")["live"]
    assert (live["exists"], live["telemetry_count"], live["error"]) == (True, 2, None)
