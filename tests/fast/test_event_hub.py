"""The event reader's ring, as the streams read it: what ``take`` answers after a cursor, and
what it costs a stream that keeps up (only the chunks after its cursor, not the whole ring)."""

from __future__ import annotations

import gc
import time

import pytest

from worker import event_stream
from worker.event_stream import Behind, Chunk, EventHub


def event(xid: int, event_id: int) -> dict[str, object]:
    return {"id": f"{xid}-{event_id}", "type": "t"}


def hub_with(*chunks: Chunk) -> EventHub:
    hub = EventHub("postgresql://unused")
    for chunk in chunks:
        hub._ring.add(chunk)
    return hub


def ids(events: list[dict[str, object]]) -> list[object]:
    return [e["id"] for e in events]


def test_take_answers_the_events_after_the_cursor_and_where_the_ring_ends():
    hub = hub_with(
        Chunk((0, 0), (10, 2), (event(10, 1), event(10, 2))),
        Chunk((10, 2), (12, 0), ()),  # the horizon moved on, no event
        Chunk((12, 0), (13, 5), (event(13, 4), event(13, 5))),
    )
    assert ids(hub.take((0, 0))[0]) == ["10-1", "10-2", "13-4", "13-5"]
    assert hub.take((10, 1)) == ([event(10, 2), event(13, 4), event(13, 5)], (13, 5))
    assert hub.take((12, 0)) == ([event(13, 4), event(13, 5)], (13, 5))
    assert hub.take((13, 4)) == ([event(13, 5)], (13, 5))
    assert hub.take((13, 5)) == ([], (13, 5))
    assert hub.take((20, 0)) == ([], (20, 0))  # ahead of the ring: itself


def test_a_cursor_older_than_the_ring_is_behind():
    hub = hub_with(Chunk((5, 0), (6, 1), (event(6, 1),)))
    with pytest.raises(Behind):
        hub.take((4, 9))
    with pytest.raises(Behind):
        hub_with().take((0, 0))


def test_a_stream_that_keeps_up_does_not_pay_for_the_whole_ring(monkeypatch):
    # Given a full ring of one-event chunks (the worst case: a commit per event)
    monkeypatch.setattr(event_stream, "RING_EVENTS", 20_000)
    chunks = [Chunk((i, 0), (i + 1, 0), (event(i + 1, 0),)) for i in range(20_000)]
    hub = hub_with(*chunks)
    caught_up = chunks[-2].end

    # When a stream that has read all but the last event takes, 1,000 times (1,000 streams
    # woken by one event), and a stream at the ring's start does once
    gc.disable()  # a collection of the 20,000 chunks must not land in one measure
    try:
        started = time.process_time()
        for _ in range(1000):
            assert ids(hub.take(caught_up)[0]) == ["20000-0"]
        keeping_up = time.process_time() - started
        started = time.process_time()
        assert len(hub.take((0, 0))[0]) == 20_000
        whole = time.process_time() - started
    finally:
        gc.enable()

    # Then the 1,000 takes together cost less than one read of the whole ring (about a tenth
    # here; when take copied and scanned the ring, they cost about 50 such reads)
    assert keeping_up < whole
