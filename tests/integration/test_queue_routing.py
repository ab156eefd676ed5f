"""Which queue a message goes to: new work waits behind new work; a message that takes over a
scheduled retry's chain (the reconciler's take-over, an operator's retry of a retrying tenant)
goes with the chain's own backoff retries, so that a backlog of new work longer than the
reconciler's grace never holds it there until the next run takes the chain over again."""

from __future__ import annotations

import json
from typing import Any

import redis

from tests.conftest import cli, new_tenant_id, tenant_row
from worker.queues import PROVISIONING_QUEUE, RETRY_QUEUE


def messages(broker: redis.Redis, queue: str) -> list[tuple[str, str]]:
    """(task id, tenant id) of each message waiting on ``queue``."""
    found = []
    for raw in broker.lrange(queue, 0, -1):
        headers = json.loads(raw)["headers"]
        found.append((headers["id"], headers["argsrepr"].strip("(),' ")))
    return found


def test_new_work_waits_on_provisioning_and_a_chain_s_next_run_on_the_retry_queue(
    api: Any, db: Any, paused_worker: redis.Redis
) -> None:
    # Given a tenant created while nobody consumes: its message waits with new work
    tenant_id = new_tenant_id("route")
    created = api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "r"})
    assert created.status_code == 201
    assert [t for _, t in messages(paused_worker, PROVISIONING_QUEUE)] == [tenant_id]

    # When its attempt failed and its scheduled retry was lost long ago (the reconciler takes
    # the chain over)
    db.execute(
        "UPDATE tenants SET influxdb_state = 'retrying', influxdb_error_reason = 'unreachable', "
        "influxdb_attempts = 1, influxdb_retry_chain = 'lost:1', "
        "influxdb_next_attempt_at = now() - interval '1 hour' WHERE tenant_id = %s",
        (tenant_id,),
    )
    assert cli(None, "reconcile")["requeued"] == 1

    # Then the take-over waits on the retry queue, named as the chain's owner
    ((task_id, queued_for),) = messages(paused_worker, RETRY_QUEUE)
    assert queued_for == tenant_id
    assert tenant_row(db, tenant_id)["influxdb_retry_chain"] == f"{task_id}:0"

    # And an operator's retry of it goes there too, as the chain's new owner
    assert api.post(f"/operator/tenants/{tenant_id}/influxdb/retry").status_code == 202
    retried = messages(paused_worker, RETRY_QUEUE)
    assert len(retried) == 2 and tenant_row(db, tenant_id)["influxdb_retry_chain"] == (
        f"{retried[0][0]}:0"  # (LPUSH: the newest first)
    )
    assert len(messages(paused_worker, PROVISIONING_QUEUE)) == 1

    # But an operator's retry of a failed tenant is new work: it waits behind what came first
    db.execute(
        "UPDATE tenants SET influxdb_state = 'failed', influxdb_retry_chain = NULL "
        "WHERE tenant_id = %s",
        (tenant_id,),
    )
    assert api.post(f"/operator/tenants/{tenant_id}/influxdb/retry").status_code == 202
    assert [t for _, t in messages(paused_worker, PROVISIONING_QUEUE)] == [tenant_id] * 2
    assert len(messages(paused_worker, RETRY_QUEUE)) == 2
