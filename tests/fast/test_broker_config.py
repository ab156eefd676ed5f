"""celeryconfig per broker: RabbitMQ gets durable queues, persistent messages and publisher
confirms; Redis keeps its own options. Its values are read from the environment at import, so
each configuration is the module executed afresh on an environment of its own, as a worker or
the API imports it; one process started for real shows a broker it cannot use stops it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT
from worker.queues import ALL_QUEUES
from worker.settings import SettingsError, get_settings


def config_for(monkeypatch: pytest.MonkeyPatch, broker_url: str) -> dict[str, Any]:
    """What celeryconfig says on ``broker_url``: the module executed in a namespace of its own
    (never the ``celeryconfig`` this process imported), on settings read again from the
    environment; the process's settings are read afresh afterwards as well."""
    monkeypatch.setenv("CELERY_BROKER_URL", broker_url)
    monkeypatch.setenv("CELERY_PUBLISH_TIMEOUT", "1.5")
    spec = importlib.util.spec_from_file_location(
        "celeryconfig_under_test", ROOT / "celeryconfig.py"
    )
    assert spec is not None and spec.loader is not None
    config = importlib.util.module_from_spec(spec)
    get_settings.cache_clear()
    try:
        spec.loader.exec_module(config)
    finally:
        get_settings.cache_clear()  # the next reader sees the environment monkeypatch restores
    return {
        "transport": config.broker_transport_options,
        "connect_timeout": config.broker_connection_timeout,
        "delivery_mode": config.task_default_delivery_mode,
        "queues": [
            {
                "name": q.name,
                "durable": q.durable,
                "exchange": q.exchange.name,
                "exchange_durable": q.exchange.durable,
                "routing_key": q.routing_key,
            }
            for q in config.task_queues
        ],
    }


def test_rabbitmq_gets_confirms_durable_queues_and_persistent_messages(monkeypatch):
    config = config_for(monkeypatch, "amqp://tp:pw@rabbit:5672/tp")

    # Publishing waits for the broker's ack, after one bounded connection attempt
    assert config["transport"] == {"confirm_publish": True, "max_retries": 0}
    assert config["connect_timeout"] == 1.5

    # Every queue and its exchange outlive a broker restart, and so do the messages in them
    assert config["delivery_mode"] == "persistent"
    assert [q["name"] for q in config["queues"]] == list(ALL_QUEUES)
    for queue in config["queues"]:
        assert queue["durable"] and queue["exchange_durable"], queue
        assert queue["exchange"] == queue["routing_key"] == queue["name"]


def test_redis_keeps_its_own_options_and_queue_order(monkeypatch):
    config = config_for(monkeypatch, "redis://127.0.0.1:6379/3")
    transport = config["transport"]
    assert transport["queue_order_strategy"] == "priority"
    assert transport["visibility_timeout"] == int(os.environ["CELERY_VISIBILITY_TIMEOUT"])
    assert transport["socket_connect_timeout"] == 1.5
    assert transport["max_retries"] == 0  # a refused connection: one try, no 2 s sleep
    assert "confirm_publish" not in transport


@pytest.mark.parametrize("broker_url", ["kafka://broker:9092", "rabbit:5672"])
def test_a_broker_it_cannot_use_is_refused_by_name(monkeypatch, broker_url):
    with pytest.raises(SettingsError, match="CELERY_BROKER_URL must be a redis://"):
        config_for(monkeypatch, broker_url)


def test_a_process_importing_the_configuration_stops_on_a_broker_it_cannot_use():
    started = subprocess.run(
        [sys.executable, "-c", "import celeryconfig"],
        cwd=ROOT,
        env={**os.environ, "CELERY_BROKER_URL": "kafka://broker:9092"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert started.returncode != 0
    assert "CELERY_BROKER_URL must be a redis://" in started.stderr


def test_webhooks_have_a_durable_queue_of_their_own_that_no_default_worker_consumes():
    # A worker started without -Q consumes task_queues: the three provisioning queues only
    import celeryconfig  # noqa: PLC0415
    from worker import app  # noqa: PLC0415
    from worker.queues import WEBHOOKS_QUEUE, WEBHOOKS_TASK  # noqa: PLC0415

    assert WEBHOOKS_QUEUE not in {q.name for q in celeryconfig.task_queues}
    # and the dispatch task goes to `webhooks`, declared like the others (durable, its own
    # exchange and routing key), for the worker started with -Q webhooks
    queue = app.amqp.router.route({}, WEBHOOKS_TASK, args=(), kwargs={})["queue"]
    assert queue.name == queue.exchange.name == queue.routing_key == WEBHOOKS_QUEUE
    assert queue.durable and queue.exchange.durable and queue.exchange.type == "direct"
    assert celeryconfig.beat_schedule["dispatch-webhooks"]["task"] == WEBHOOKS_TASK
