"""The failure switches (latency, 5xx, hangs, resets, outages) and stop() under them."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from influxdb3_standin import StandIn
from tests.standin.conftest import DATABASE_API, create


def test_latency_delays_every_answer(standin: StandIn, client: requests.Session) -> None:
    standin.set_latency(0.2)

    started = time.monotonic()
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.2

    # The control endpoints are exempt.
    started = time.monotonic()
    requests.get(f"{standin.url}/_standin/state", timeout=5)
    assert time.monotonic() - started < 0.2


def test_trickle_sends_the_body_a_byte_at_a_time(
    standin: StandIn, client: requests.Session
) -> None:
    # The switch is also set over HTTP, for a stand-in run as its own process.
    switched = requests.post(f"{standin.url}/_standin/switches", json={"trickle": 0.02}, timeout=5)
    assert switched.status_code == 200, switched.text
    state = requests.get(f"{standin.url}/_standin/state", timeout=5).json()
    assert state["switches"]["trickle"] == 0.02

    started = time.monotonic()
    with client.get(f"{standin.url}/health", timeout=5, stream=True) as response:
        first = response.raw.read1(4096)
        rest = response.raw.read()
    body = first + rest
    assert len(first) < len(body)  # it did not arrive in one piece
    assert time.monotonic() - started >= 0.02 * len(body)
    assert body == b"OK"

    standin.set_trickle(0)
    started = time.monotonic()
    assert client.get(f"{standin.url}/health", timeout=5).text == "OK"
    assert time.monotonic() - started < 0.02 * 2


def test_error_rate_one_answers_5xx_text(standin: StandIn, client: requests.Session) -> None:
    standin.set_faults(error_rate=1.0, seed=1)

    for _ in range(4):
        response = create(client, standin, "acme")
        assert response.status_code in (500, 503)
        assert "Content-Type" not in response.headers
        assert response.text
    assert standin.databases() == []

    standin.set_faults()
    assert create(client, standin, "acme").status_code == 200


def test_hang_makes_the_client_time_out_until_released(
    standin: StandIn, client: requests.Session
) -> None:
    standin.set_hang(True)
    with pytest.raises(requests.ReadTimeout):
        client.get(f"{standin.url}/health", timeout=(1, 0.3))

    standin.set_hang(False)
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200


def test_hang_rate_one_times_out(standin: StandIn, client: requests.Session) -> None:
    standin.set_faults(hang_rate=1.0)
    with pytest.raises(requests.ReadTimeout):
        client.post(f"{standin.url}{DATABASE_API}", json={"db": "acme"}, timeout=(1, 0.3))
    standin.set_faults()
    assert create(client, standin, "acme").status_code == 200


def test_reset_rate_one_resets_the_connection(standin: StandIn, client: requests.Session) -> None:
    standin.set_faults(reset_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        client.get(f"{standin.url}/health", timeout=5)
    standin.set_faults()
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200


def test_outage_refuses_connections_and_comes_back_on_the_same_port(
    standin: StandIn, client: requests.Session
) -> None:
    # Given a client with an open keep-alive connection
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200
    port = standin.port

    # When the server goes away, Then the open connection and new ones both fail
    standin.set_outage(True)
    with pytest.raises(requests.ConnectionError):
        client.get(f"{standin.url}/health", timeout=2)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{standin.url}/health", timeout=2)

    # And when it comes back, it listens on the same port with its data intact
    create_before = standin.create_calls()
    standin.set_outage(False)
    assert standin.port == port
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200
    assert standin.create_calls() == create_before


def test_stop_returns_promptly_with_a_hanging_request(standin: StandIn) -> None:
    standin.set_hang(True)
    outcome: list[str] = []

    def hanging_request() -> None:
        try:
            requests.get(f"{standin.url}/health", timeout=10)
            outcome.append("answered")
        except requests.RequestException as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=hanging_request)
    thread.start()
    deadline = time.monotonic() + 5
    while standin.request_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    started = time.monotonic()
    standin.stop()
    assert time.monotonic() - started < 1.5
    thread.join(timeout=5)
    assert outcome == ["ConnectionError"]


def test_a_request_in_flight_when_the_stand_in_is_reset_never_lands(
    standin: StandIn, client: requests.Session
) -> None:
    # Given a create sleeping in a long latency (as a killed worker's would, its client gone)
    standin.set_latency(30.0)
    answers: list[object] = []

    def send() -> None:
        try:
            answers.append(create(client, standin, "late").status_code)
        except requests.RequestException as exc:
            answers.append(type(exc).__name__)

    sent = threading.Thread(target=send, daemon=True)
    sent.start()
    deadline = time.monotonic() + 5  # counted just before its latency sleep
    while standin.request_count("POST", DATABASE_API) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)

    # When the stand-in is reset (a fresh server for the next test)
    standin.reset()
    sent.join(timeout=3)

    # Then the create is dropped unanswered at once, and the database is never made
    assert answers == ["ConnectionError"]
    time.sleep(0.2)
    assert standin.databases() == []
