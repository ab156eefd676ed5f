"""Where live checks run: one lane per InfluxDB server, so one server's trouble stays its own.

A lane is a few threads of its own and as many slots. A check waits for its answer at most its
deadline, whatever the server does; the thread behind it is freed by the client's whole-answer
deadline (``InfluxDB3Client.count_rows(deadline=...)``), which a server trickling its body
cannot stretch. While every slot of a lane is taken - its server hangs, and the stats page keeps
asking - a further check of that server answers at once ("busy") instead of queueing: checks of
tenants on other servers never wait behind it, and nothing piles up without bound.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

LANE_SIZE = 4  # checks of one server in flight at once


@dataclass(frozen=True)
class LiveCheck:
    """What InfluxDB says about one tenant database right now."""

    exists: bool | None
    telemetry_count: int | None
    error: str | None
    latency_ms: float


class LaneBusy(Exception):
    """Every slot of the server's lane is held by a check still waiting for it."""


class _Lane:
    def __init__(self, name: str) -> None:
        self.executor = ThreadPoolExecutor(max_workers=LANE_SIZE, thread_name_prefix=name)
        self.slots = threading.BoundedSemaphore(LANE_SIZE)


_lanes: dict[str, _Lane] = {}
_lanes_lock = threading.Lock()


def submit(server: str, call: Callable[[], T]) -> Future[T]:
    """Run ``call`` on ``server``'s lane; LaneBusy when the lane has no free slot."""
    with _lanes_lock:
        lane = _lanes.get(server)
        if lane is None:
            lane = _lanes[server] = _Lane(f"live-check-{len(_lanes)}")
    if not lane.slots.acquire(blocking=False):
        raise LaneBusy(f"{LANE_SIZE} live checks of this server are still waiting for it")

    def held() -> T:
        try:
            return call()
        finally:
            lane.slots.release()

    try:
        return lane.executor.submit(held)
    except BaseException:
        lane.slots.release()
        raise
