"""The event log end to end: a tenant created through the API and provisioned by a real worker
process tells its story in its events, in order, and the log agrees with the row."""

from __future__ import annotations

from tests.conftest import new_tenant_id, tenant_row, wait_for, wait_for_state


def test_a_tenant_created_through_the_api_tells_its_provisioning_in_order(
    api, db, influx, worker_process
):
    # Given a healthy InfluxDB and a worker
    tenant_id = new_tenant_id()

    # When the operator creates a tenant and the worker provisions it
    created = api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Acme"})
    assert created.status_code == 201, created.text
    row = wait_for_state(db, tenant_id, "provisioned")

    # Then its events read created -> provisioning started -> provisioned, in sequence
    def provisioned_event() -> list[dict] | None:
        page = api.get(f"/operator/tenants/{tenant_id}/events").json()
        events = page["events"]
        return events if events and events[-1]["type"].endswith(".provisioned") else None

    events = wait_for(provisioned_event, what="the provisioned event")
    transitions = [
        (e["tenantseq"], e["type"].removeprefix("io.tenant-provisioner."), e.get("actor"))
        for e in events
    ]
    assert transitions == [
        (1, "tenant.created", "operator-token"),
        (2, "operator.created", "operator-token"),
        (3, "tenant.provisioning_started", None),
        (4, "tenant.provisioned", None),
    ]
    assert [e.get("route") for e in events] == ["http", "http", "worker", "worker"]
    # And the last event's state is the row's, on the server the row names
    last = events[-1]["data"]
    row = tenant_row(db, tenant_id)
    assert row is not None
    assert (last["state"], last["node"], last["incarnation"]) == (
        row["influxdb_state"],
        row["influxdb_node"],
        row["influxdb_incarnation"],
    )
    assert last["attempts"] == row["influxdb_attempts"] == 1
    # And the times run forward
    times = [e["time"] for e in events]
    assert times == sorted(times)


def test_one_statement_may_change_tens_of_thousands_of_tenants(db):
    # Given 10,000 tenants inserted by one statement (an import, a bulk change): more than
    # Postgres' lock table holds (64 x 100 connections here) were each a lock of its own
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state) "
        "SELECT 'bulk-' || i, 'x', 'pending' FROM generate_series(1, 10000) i"
    )
    # When one statement changes them all
    db.execute("UPDATE tenants SET influxdb_state = 'provisioning' WHERE tenant_id LIKE 'bulk-%'")
    # Then each has its two events, numbered 1 and 2
    counts = db.execute(
        "SELECT seq, count(*) FROM tenant_events WHERE tenant_id LIKE 'bulk-%' GROUP BY seq "
        "ORDER BY seq"
    ).fetchall()
    assert counts == [(1, 10000), (2, 10000)]
