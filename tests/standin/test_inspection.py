"""What tests read behind the worker's back: counters, reset, connections."""

from __future__ import annotations

import requests

from influxdb3_standin import StandIn
from tests.standin.conftest import DATABASE_API, create


def test_counters_and_reset(standin: StandIn, client: requests.Session) -> None:
    create(client, standin, "acme")
    create(client, standin, "acme")
    create(client, standin, "other")
    client.get(f"{standin.url}/health", timeout=5)
    standin.set_latency(0.01)

    assert standin.create_calls() == 3
    assert standin.create_calls("acme") == 2
    assert standin.request_count("POST", DATABASE_API) == 3
    assert standin.request_count(path="/health") == 1
    assert standin.request_count() == 4

    standin.reset()

    assert standin.databases() == []
    assert standin.create_calls() == 0
    assert standin.request_count() == 0
    assert standin.state()["switches"] == {
        "latency": 0.0,
        "error_rate": 0.0,
        "hang_rate": 0.0,
        "reset_rate": 0.0,
        "hang": False,
        "trickle": 0.0,
        "outage": False,
    }
    # The token stays.
    assert requests.get(f"{standin.url}/health", timeout=5).status_code == 401


def test_keep_alive_reuses_one_connection(standin: StandIn, client: requests.Session) -> None:
    for _ in range(5):
        assert client.get(f"{standin.url}/health", timeout=5).status_code == 200
    assert standin.state()["connections_accepted"] == 1
