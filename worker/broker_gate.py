"""Publishing while the broker is dead: one request finds out, the others do not wait.

A publish to a broker that drops packets holds one of Celery's pooled publishers (10) for
``CELERY_PUBLISH_TIMEOUT``; a burst of requests behind it waited for a publisher, then for its own
timeout, in waves: 40 operators creating tenants at once answered after 8 to 12 s, and every
other route sharing the threads stalled. Here a publish waits for a publisher at most that
timeout, and after a failure the broker counts as down: the requests that come meanwhile do not
try it (the reconciler queues what they stored), except one at a time, which finds out whether
it is back, on a thread of its own (``try_aside``: a stalled name lookup, which no timeout of
ours reaches, holds that thread, not the request). The first that succeeds ends it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from celery import Celery


class BrokerDown(Exception):
    """Not tried: the broker failed a moment ago and another request is finding out."""


class BrokerGate:
    """Per process: whether the broker failed, and who may try it meanwhile."""

    def __init__(self) -> None:
        self._down = False
        self._lock = threading.Lock()
        # While down: the turn of the one request that tries, until this monotonic time. It
        # expires, so a try that never gave it back (an exception raised into the thread, as a
        # soft time limit is) does not keep the broker "down" in this process for good.
        self._turn_until = 0.0

    @contextmanager
    def publisher(self, app: Celery, timeout: float) -> Iterator[Any]:
        """A pooled publisher to publish with, within ``timeout``; raises BrokerDown, or
        kombu's LimitExceeded when none came free in time. A failure inside marks the broker
        down; getting through marks it up."""
        probing = self._down
        # A turn outlasts the slowest try: waiting for a publisher, connecting, the answer
        # (RabbitMQ: the handshake and the confirm too), each bounded by about the timeout.
        turn = self._take_turn(5 * timeout + 2) if probing else None
        if probing and turn is None:
            raise BrokerDown("the broker failed a moment ago; another request is trying it")
        try:
            with app.producer_pool.acquire(block=True, timeout=timeout) as producer:
                if self._down and not probing:  # it failed while this one waited
                    raise BrokerDown("the broker failed while this request waited for it")
                try:
                    yield producer
                except Exception:
                    self._down = True
                    raise
                self._down = False
        finally:
            with self._lock:
                if turn is not None and self._turn_until == turn:  # still ours: given back
                    self._turn_until = 0.0

    @property
    def down(self) -> bool:
        """Whether the last publish failed (the next tries are probes, one at a time)."""
        return self._down

    def try_aside(self, send: Callable[[], None], wait: float) -> None:
        """While down: run ``send`` (which takes its turn in :meth:`publisher`) on a thread of
        its own, and wait for it at most ``wait`` s (TimeoutError past it): a try that hangs
        where no timeout of ours reaches (a stalled name lookup) holds that thread only, not the
        request; the next requests meanwhile find its turn taken and answer at once."""
        if time.monotonic() < self._turn_until:  # (publisher() checks again, under the lock)
            raise BrokerDown("the broker failed a moment ago; another request is trying it")
        done: Future[None] = Future()

        def run() -> None:
            try:
                send()
            except BaseException as exc:  # handed to the waiting request
                done.set_exception(exc)
            else:
                done.set_result(None)

        threading.Thread(target=run, name="broker-probe", daemon=True).start()
        try:
            done.result(timeout=wait)
        except TimeoutError:
            if done.done():  # its own (a socket's timeout)
                raise
            raise BrokerDown(f"no answer within {wait:g}s; the try goes on aside") from None

    def _take_turn(self, longest: float) -> float | None:
        """The turn, as its deadline; None while another request's turn lasts."""
        with self._lock:
            now = time.monotonic()
            if now < self._turn_until:
                return None
            self._turn_until = now + longest
            return self._turn_until
