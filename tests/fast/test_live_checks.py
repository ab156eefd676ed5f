"""Live checks are isolated per server: one server hanging or trickling its answer never slows
the checks of tenants on another, and never holds a thread past the check's deadline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from influxdb3_standin import StandIn
from tests.conftest import INFLUX_TOKEN, STOP_POLL
from worker.errors import InfluxDBTimeout
from worker.influxdb import InfluxDB3Client
from worker.live_checks import LANE_SIZE

TABLE = "telemetry"


@pytest.fixture
def servers() -> Iterator[tuple[InfluxDB3Client, InfluxDB3Client, StandIn]]:
    """A healthy server and a troubled one, each with a tenant database of two rows."""
    healthy, troubled = (
        StandIn(token=INFLUX_TOKEN, poll_interval=STOP_POLL).start() for _ in range(2)
    )
    clients = []
    for server in (healthy, troubled):
        written = requests.post(
            f"{server.url}/api/v3/write_lp",
            params={"db": "telemetry_t"},
            data="telemetry,device=a v=1i\ntelemetry,device=b v=2i",
            headers={"Authorization": f"Bearer {INFLUX_TOKEN}"},
            timeout=5,
        )
        assert written.status_code == 204, written.text
        clients.append(InfluxDB3Client(server.url, INFLUX_TOKEN, connect_timeout=0.5))
    yield clients[0], clients[1], troubled
    troubled.set_hang(False)
    troubled.set_trickle(0)
    for client in clients:
        client.close()
    healthy.stop()
    troubled.stop()


def test_a_hanging_server_never_slows_the_checks_of_another(servers):
    healthy, hanging, server = servers
    server.set_hang(True)
    with ThreadPoolExecutor(max_workers=12) as callers:
        # Given twelve stats requests stuck on the hanging server (three lanes' worth)
        stuck = [callers.submit(hanging.live_check, "telemetry_t", TABLE, 1.5) for _ in range(12)]
        time.sleep(0.2)
        # When tenants of the healthy server are checked meanwhile
        started = time.monotonic()
        checks = [healthy.live_check("telemetry_t", TABLE, 1.5) for _ in range(10)]
        took = time.monotonic() - started
        # Then they answer at once, with the real count
        assert [(c.exists, c.telemetry_count, c.error) for c in checks] == [(True, 2, None)] * 10
        assert took < 0.5, f"10 checks of the healthy server took {took:.2f}s"
        answers = [f.result() for f in stuck]
    # And the hanging server's own checks end by their deadline: timed out, or refused at once
    # because its lane was full - never queued behind one another
    assert sum(a.error.startswith("timeout") for a in answers) == LANE_SIZE
    busy = [a for a in answers if a.error.startswith("busy")]
    assert len(busy) == 12 - LANE_SIZE
    assert all(a.latency_ms < 100 for a in busy)


def test_a_trickled_answer_is_abandoned_at_the_deadline(servers):
    healthy, trickling, server = servers
    # Given a server sending its answer a byte every 0.1 s (about 2 s for the body)
    server.set_trickle(0.1)
    started = time.monotonic()
    # When a check with a 0.5 s bound asks it
    check = trickling.live_check("telemetry_t", TABLE, 0.5)
    # Then the caller has its answer by the deadline
    assert check.error is not None
    assert check.error.startswith("timeout")
    assert time.monotonic() - started < 0.8
    # And the thread behind it is freed too: the client gives up on the body at the deadline,
    # though every byte arrived within the read timeout
    started = time.monotonic()
    with pytest.raises(InfluxDBTimeout, match="not complete in time"):
        trickling.count_rows("telemetry_t", TABLE, timeout=(1.0, 1.0), deadline=started + 0.5)
    assert time.monotonic() - started < 0.8
    # And the healthy server is unaffected
    assert healthy.live_check("telemetry_t", TABLE, 0.5).telemetry_count == 2


def test_a_whole_answer_within_the_deadline_is_read_as_before(servers):
    healthy, _, _ = servers
    deadline = time.monotonic() + 2.0
    assert healthy.count_rows("telemetry_t", TABLE, deadline=deadline) == 2
    assert healthy.count_rows("telemetry_none", TABLE, deadline=deadline) is None
    assert healthy.count_rows("telemetry_t", "absent", deadline=deadline) == 0
