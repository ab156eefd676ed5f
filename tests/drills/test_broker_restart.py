"""Broker restart drills: what a restart of the broker does to queued and running work.

Side by side: Redis here keeps nothing on disk, so its queue is empty after a restart and only
the reconciler finds the work again (late: it waits out its requeue grace); RabbitMQ keeps the
messages it confirmed (durable queues, persistent messages), so the work goes on with no
reconciler at all. The RabbitMQ drills restart the local RabbitMQ application
(``rabbitmqctl stop_app`` / ``start_app``); their messages live in the run's own vhost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from harness.brokers import RabbitMQVhost, restart_rabbitmq
from tests.conftest import (
    OPERATOR_TOKEN,
    new_tenant_id,
    start_api,
    start_beat,
    stop_process,
    wait_for,
)
from tests.drills.test_faults import PATIENT, assert_created_once, count_in_state
from worker.queues import ALL_QUEUES, PROVISIONING_QUEUE

pytestmark = pytest.mark.drill


@dataclass
class RestartableBroker:
    """A broker a drill may restart: its kind, URL, a restart, and its queue's depth."""

    kind: str
    url: str
    restart: Callable[[], None]
    queued: Callable[[], int]

    def env(self) -> dict[str, str]:
        return {"CELERY_BROKER_URL": self.url, **PATIENT}


@pytest.fixture(params=["redis", "rabbitmq"])
def restartable_broker(request: pytest.FixtureRequest) -> Iterator[RestartableBroker]:
    """Redis: a redis-server of our own (no persistence, like the machine's), killed and started
    again. RabbitMQ: the local server's application restarted; our vhost's queues emptied."""
    if request.param == "redis":
        own: dict[str, Any] = request.getfixturevalue("own_redis")
        client = redis.Redis(port=own["port"])

        def restart_redis() -> None:
            own["process"].kill()
            own["process"].wait()
            own["process"] = own["start"]()

        yield RestartableBroker(
            "redis",
            f"redis://127.0.0.1:{own['port']}/0",
            restart_redis,
            lambda: int(client.llen(PROVISIONING_QUEUE)),
        )
        client.close()
        return
    vhost: RabbitMQVhost = request.getfixturevalue("rabbitmq")
    vhost.purge(ALL_QUEUES)
    yield RestartableBroker(
        "rabbitmq", vhost.url, restart_rabbitmq, lambda: vhost.messages(PROVISIONING_QUEUE)
    )
    vhost.purge(ALL_QUEUES)


def create_through_api(base: str, tenant_ids: list[str]) -> None:
    for tenant_id in tenant_ids:
        response = requests.post(
            f"{base}/operator/tenants",
            json={"tenant_id": tenant_id, "name": "restart drill"},
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        assert response.json()["influxdb"]["queued"] is True


def test_broker_restart_with_work_queued_and_no_worker(
    restartable_broker, db, influx, custom_worker, tmp_path: Path, report
):
    broker = restartable_broker
    influx.set_database_limit(1000)
    # Given 20 tenants created through an API process while no worker consumes the broker
    api, base = start_api(tmp_path / "api.log", broker.env())
    tenant_ids = [new_tenant_id(f"restart-{broker.kind}") for _ in range(20)]
    beat = None
    try:
        create_through_api(base, tenant_ids)
        wait_for(lambda: broker.queued() == 20, what="20 messages queued")
    finally:
        stop_process(api)

    # When the broker restarts
    broker.restart()
    after = broker.queued()
    report(f"injected: {broker.kind} restarted with 20 messages queued; {after} queued after it")

    # Then RabbitMQ still holds every message; Redis (no persistence) holds none
    assert after == (20 if broker.kind == "rabbitmq" else 0)

    # And once a worker consumes again, every tenant is provisioned, each database made once -
    # on RabbitMQ by the queued messages alone; on Redis only the reconciler can find them
    started = time.monotonic()
    try:
        custom_worker(concurrency=4, **broker.env())
        if broker.kind == "redis":
            beat = start_beat(tmp_path / "beat.log", tmp_path / "schedule", broker.env())
        wait_for(
            lambda: count_in_state(db, tenant_ids, "provisioned") == 20,
            timeout=60,
            interval=0.2,
            what="all 20 tenants provisioned",
        )
    finally:
        if beat is not None:
            stop_process(beat)
    took = time.monotonic() - started
    assert_created_once(influx, tenant_ids)
    how = "by the queued messages, no reconciler running" if beat is None else "by the reconciler"
    report(f"verified: all 20 provisioned {took:.1f}s after a worker started, {how}")


def test_rabbitmq_restart_with_tasks_in_flight_and_no_reconciler(
    rabbitmq, db, influx, custom_worker, tmp_path: Path, report
):
    # Given a worker and an API process on RabbitMQ, InfluxDB answering slowly, and no beat
    rabbitmq.purge(ALL_QUEUES)
    influx.set_database_limit(1000)
    influx.set_latency(0.5)
    env = {"CELERY_BROKER_URL": rabbitmq.url, **PATIENT}
    worker = custom_worker(concurrency=2, **env)
    api, base = start_api(tmp_path / "api.log", env)
    tenant_ids = [new_tenant_id("rmq-inflight") for _ in range(30)]
    try:
        # When 30 tenants are created and RabbitMQ restarts while the worker is busy with them
        create_through_api(base, tenant_ids)
        wait_for(lambda: count_in_state(db, tenant_ids, "provisioned") >= 2, what="progress")
        at_restart = count_in_state(db, tenant_ids, "provisioned")
        restart_rabbitmq()
        report(f"injected: RabbitMQ restarted with {at_restart}/30 provisioned, tasks running")

        # Then the worker reconnects and every tenant is provisioned by the broker's messages
        # alone (those the worker held unacknowledged are delivered again), each made once
        wait_for(
            lambda: count_in_state(db, tenant_ids, "provisioned") == 30,
            timeout=90,
            interval=0.2,
            what="all 30 tenants provisioned",
        )
    finally:
        stop_process(api)
        rabbitmq.purge(ALL_QUEUES)
    assert_created_once(influx, tenant_ids)
    assert "guest:guest" not in worker.log()
    report("verified: all 30 provisioned after the restart with no reconciler; each created once")
