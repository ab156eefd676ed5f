"""Publishing to a dead broker: after a failure one request at a time tries it, and the first
that gets through ends it (worker.broker_gate). The burst it spares is in
tests/integration/test_broker_down.py, against a real API process and a blackholed broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from celery import Celery

from tests.conftest import REDIS_DB, REDIS_HOST, REDIS_PORT
from worker.broker_gate import BrokerDown, BrokerGate


@pytest.fixture
def app() -> Iterator[Celery]:
    """A Celery app on the test run's Redis DB: its pool of publishers is kombu's own."""
    celery = Celery(broker=f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}")
    yield celery
    celery.close()


def down_gate(app: Celery, timeout: float) -> BrokerGate:
    """A gate whose last publish failed: the broker counts as down."""
    gate = BrokerGate()
    with pytest.raises(ConnectionError), gate.publisher(app, timeout):
        raise ConnectionError("the broker dropped the connection")
    return gate


def test_after_a_failure_one_request_at_a_time_tries_the_broker_and_a_success_ends_it(
    app: Celery,
) -> None:
    gate = BrokerGate()
    with gate.publisher(app, 1.0):  # up: anyone publishes
        pass

    # Given a publish that failed
    with pytest.raises(ConnectionError), gate.publisher(app, 1.0):
        raise ConnectionError("the broker dropped the connection")

    # When one request tries the broker again
    trying, done = threading.Event(), threading.Event()

    def probe() -> None:
        with gate.publisher(app, 1.0):
            trying.set()
            done.wait(5)

    prober = threading.Thread(target=probe)
    prober.start()
    assert trying.wait(5)

    # Then another is not sent meanwhile: it does not wait on a broker found dead
    with pytest.raises(BrokerDown), gate.publisher(app, 1.0):
        pass

    # And once that request got through, everyone publishes again, several at once
    done.set()
    prober.join(5)
    with gate.publisher(app, 1.0), gate.publisher(app, 1.0):
        pass


def test_a_probe_that_fails_leaves_the_broker_down_for_the_next_one(app: Celery) -> None:
    gate = BrokerGate()
    for _ in range(2):  # the first failure, then a probe that fails too
        with pytest.raises(ConnectionError), gate.publisher(app, 1.0):
            raise ConnectionError("refused")
    # the next request is the next probe (none holds the turn): it may try, and gets through
    with gate.publisher(app, 1.0):
        pass
    with gate.publisher(app, 1.0):
        pass


def test_a_turn_never_given_back_expires(app: Celery) -> None:
    gate = down_gate(app, 0.1)
    # Given a try whose thread lost its turn without giving it back (an exception raised into
    # it between taking the turn and its cleanup, as a soft time limit is)
    assert gate._take_turn(0.3) is not None
    with pytest.raises(BrokerDown), gate.publisher(app, 0.1):
        pass
    # When the turn's time is over, the next request tries the broker, and gets through
    time.sleep(0.35)
    with gate.publisher(app, 0.1):
        pass


def test_a_try_that_outlived_its_turn_leaves_the_next_one_s_turn_alone(app: Celery) -> None:
    gate = down_gate(app, 0.1)
    # Given a try whose turn ran out while it went on, another request's turn taken since,
    # and the first try failing in the end
    with pytest.raises(ConnectionError), gate.publisher(app, 0.1):
        gate._turn_until = 0.0  # (its turn, run out)
        assert gate._take_turn(60) is not None  # the next request's
        raise ConnectionError("refused again")
    # Then it left that request's turn alone: a third request is not sent meanwhile
    with pytest.raises(BrokerDown), gate.publisher(app, 0.1):
        pass


def test_a_probe_that_hangs_where_no_timeout_reaches_holds_no_request(app: Celery) -> None:
    # Given a broker found down, and a try that hangs where no timeout of ours reaches it (a
    # stalled name lookup of the broker's host)
    gate = down_gate(app, 0.2)
    release = threading.Event()

    def stalled() -> None:
        with gate.publisher(app, 0.2):
            release.wait(5)

    # When a request tries it aside, then it answers within its wait, not when the try ends
    started = time.monotonic()
    with pytest.raises(BrokerDown, match=r"no answer within 0\.2s"):
        gate.try_aside(stalled, 0.2)
    assert time.monotonic() - started < 1
    # And the requests meanwhile answer at once: the stalled try holds the turn
    started = time.monotonic()
    with pytest.raises(BrokerDown):
        gate.try_aside(stalled, 0.2)
    assert time.monotonic() - started < 0.1
    # And once the try gets through, the broker is up for everyone
    release.set()
    deadline = time.monotonic() + 5
    while gate.down and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not gate.down


def test_a_probe_tried_aside_that_gets_through_answers_at_once(app: Celery) -> None:
    gate = down_gate(app, 1.0)

    def through() -> None:
        with gate.publisher(app, 1.0):
            pass

    gate.try_aside(through, 1.0)
    assert not gate.down
    # and one that fails says why, to the request that waited for it
    gate = down_gate(app, 1.0)

    def refused() -> None:
        with gate.publisher(app, 1.0):
            raise ConnectionError("refused")

    with pytest.raises(ConnectionError, match="refused"):
        gate.try_aside(refused, 1.0)
    assert gate.down
