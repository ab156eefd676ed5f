"""The pipeline end to end on each broker: operator API process -> broker -> worker process ->
InfluxDB, then the deletion the same way. No beat runs: every step is carried by the broker's
messages, none is recovered by the reconciler."""

from __future__ import annotations

import requests

from tests.conftest import (
    OPERATOR_TOKEN,
    new_tenant_id,
    start_api,
    stop_process,
    tenant_row,
    wait_for,
    wait_for_state,
)


def test_a_tenant_is_provisioned_through_a_retry_and_deleted(
    any_broker, db, influx, custom_worker, tmp_path
):
    # Given a worker and an operator API process on the broker, and InfluxDB refusing connections
    worker = custom_worker(concurrency=2, **any_broker.env())
    api, base = start_api(tmp_path / "api.log", any_broker.env())
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    tenant_id = new_tenant_id(any_broker.kind)
    database = f"telemetry_{tenant_id}"
    try:
        influx.set_outage(True)

        # When the operator creates a tenant
        created = requests.post(
            f"{base}/operator/tenants",
            json={"tenant_id": tenant_id, "name": f"On {any_broker.kind}"},
            headers=headers,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        assert created.json()["influxdb"]["queued"] is True

        # Then the worker takes the message and schedules a retry (a message with a countdown,
        # held by the worker unacknowledged until it is due)
        wait_for_state(db, tenant_id, "retrying")

        # And once InfluxDB is back, that retry provisions the tenant
        influx.set_outage(False)
        row = wait_for_state(db, tenant_id, "provisioned")
        assert row["influxdb_attempts"] >= 2
        assert influx.creations(database) == 1

        # When the operator deletes it
        deleted = requests.delete(
            f"{base}/operator/tenants/{tenant_id}", headers=headers, timeout=10
        )
        assert deleted.status_code == 202, deleted.text
        assert deleted.json()["influxdb"]["queued"] is True

        # Then the worker deletes its database, then the tenant
        wait_for(lambda: tenant_row(db, tenant_id) is None, what=f"{tenant_id} deleted")
        assert database not in influx.databases()
    finally:
        stop_process(api)
    assert "guest:guest" not in worker.log()
