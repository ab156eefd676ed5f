"""``GET /operator/events`` on a real API process: the Server-Sent Events stream delivers every
event as it commits, a client that drops and resumes with ``Last-Event-ID`` misses none and
sees none twice, filters hold, and bad cursors or missing credentials are refused."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests

from tests.conftest import OPERATOR_TOKEN, new_tenant_id, start_api, stop_process, wait_for

AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
SSE = {**AUTH, "Accept": "text/event-stream"}
PREFIX = "io.tenant-provisioner."


@pytest.fixture(scope="module")
def api_url(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_api(tmp_path_factory.mktemp("api") / "api.log")
    try:
        yield url
    finally:
        stop_process(process)


class Stream:
    """A Server-Sent Events client: messages as dicts (``id``, ``event``, ``data``), and the
    last event id as an EventSource keeps it (set by any message with an ``id``, data or not)."""

    def __init__(self, url: str, headers: dict[str, str], **params: Any) -> None:
        self.response = requests.get(
            f"{url}/operator/events", headers=headers, params=params, stream=True, timeout=30
        )
        self.lines = self.response.iter_lines(decode_unicode=True)
        self.last_id: str | None = None

    def next_message(self, data: bool = True) -> dict[str, str]:
        """The next message with data (``data=False``: with anything, an id-only one too)."""
        message: dict[str, str] = {}
        for line in self.lines:
            if line == "":
                self.last_id = message.get("id", self.last_id)
                if "data" in message or (not data and message):
                    return message
                message = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                message[name] = value
        raise EOFError("the stream ended")

    def close(self) -> None:
        self.response.close()


def insert_tenant(conn: psycopg.Connection[Any], tenant_id: str) -> None:
    conn.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state) VALUES (%s, 'x', 'pending')",
        (tenant_id,),
    )


def every_event_id(conn: psycopg.Connection[Any]) -> list[str]:
    query = "SELECT xid::text || '-' || id FROM tenant_events ORDER BY xid, id"
    rows = conn.execute(query).fetchall()
    return [r[0] for r in rows]


def test_a_client_that_drops_and_resumes_with_last_event_id_misses_nothing(
    api_url: str, db: psycopg.Connection[Any], database: str
) -> None:
    # Given a stream from the start of the (empty) log
    stream = Stream(api_url, SSE, after="0-0")
    received: list[dict[str, str]] = []
    # When four writers change tenants concurrently, committing out of id order
    stop = threading.Event()
    written: list[str] = []

    def writer(number: int) -> None:
        rng = random.Random(number)
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:5432/{database}", autocommit=True
        ) as conn:
            while not stop.is_set() and len(written) < 400:
                tenant_id = new_tenant_id(f"s{number}")
                with conn.transaction():
                    insert_tenant(conn, tenant_id)
                    time.sleep(rng.random() * 0.01)  # a transaction that takes its time
                    conn.execute(
                        "UPDATE tenants SET influxdb_state = 'provisioning' WHERE tenant_id = %s",
                        (tenant_id,),
                    )
                written.append(tenant_id)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    try:
        # And the client reads 150 events, then drops, waits, and resumes from the last id
        received += [stream.next_message() for _ in range(150)]
        stream.close()
        time.sleep(0.5)
        resumed = Stream(api_url, {**SSE, "Last-Event-ID": received[-1]["id"]})
        stop.set()
        for thread in writers:
            thread.join()
        expected = every_event_id(db)
        while received[-1]["id"] != expected[-1]:
            received.append(resumed.next_message())
        resumed.close()
    finally:
        stop.set()
        for thread in writers:
            thread.join()

    # Then it received every event of the log, once each, in the log's order
    ids = [m["id"] for m in received]
    assert len(ids) == len(set(ids)), "an event was sent twice"
    assert ids == expected[-len(ids) :]
    assert ids[0] == expected[0], "the first events written were missed"
    # And each message is the event: its type, and the CloudEvent with the same id
    for message in received[:5]:
        event = json.loads(message["data"])
        assert event["id"] == message["id"]
        assert message["event"] == event["type"]
        assert event["specversion"] == "1.0"


def test_a_client_that_reconnects_before_its_first_event_misses_none_committed_meanwhile(
    api_url: str, db: psycopg.Connection[Any]
) -> None:
    # Given a browser page's stream of one tenant, from now on, that drops before any event
    tenant_id = new_tenant_id("away")
    stream = Stream(api_url, SSE, tenant=tenant_id)
    assert "id" in stream.next_message(data=False)  # the start, with the retry delay
    stream.close()

    # When the tenant is created while the client is away, and its event is readable
    insert_tenant(db, tenant_id)
    page = {"tenant": tenant_id, "after": "0-0"}
    url = f"{api_url}/operator/events"
    wait_for(lambda: requests.get(url, headers=AUTH, params=page, timeout=10).json()["events"])

    # Then the EventSource's reconnect, sending back the id it holds, receives that event
    assert stream.last_id is not None
    again = Stream(api_url, {**SSE, "Last-Event-ID": stream.last_id}, tenant=tenant_id)
    event = json.loads(again.next_message()["data"])
    again.close()
    assert (event["subject"], event["type"]) == (tenant_id, PREFIX + "tenant.created")


def test_the_stream_filters_by_tenant_and_type(api_url: str, db: psycopg.Connection[Any]) -> None:
    # Given a stream of one tenant's provisioning_started events
    mine, other = new_tenant_id("mine"), new_tenant_id("other")
    stream = Stream(api_url, SSE, tenant=mine, type="tenant.provisioning_started")
    # When both tenants are created and start provisioning
    for tenant_id in (other, mine):
        insert_tenant(db, tenant_id)
        db.execute(
            "UPDATE tenants SET influxdb_state = 'provisioning' WHERE tenant_id = %s",
            (tenant_id,),
        )
    # Then the first message is that event of that tenant
    event = json.loads(stream.next_message()["data"])
    stream.close()
    assert (event["subject"], event["type"]) == (mine, PREFIX + "tenant.provisioning_started")


def test_without_event_stream_accepted_it_answers_pages_of_json(
    api_url: str, db: psycopg.Connection[Any]
) -> None:
    # Given three tenants created
    for _ in range(3):
        insert_tenant(db, new_tenant_id())
    # When a client pages from the start, two at a time
    seen: list[str] = []
    after = "0-0"
    while True:
        page = requests.get(
            f"{api_url}/operator/events", headers=AUTH, params={"after": after, "limit": 2}
        ).json()
        seen += [e["id"] for e in page["events"]]
        after = page["next"]
        if not page["more"]:
            break
    # Then it read every event once, in order
    assert seen == every_event_id(db)
    # And asking again from the last page's next finds nothing new, and moves nowhere back
    again = requests.get(f"{api_url}/operator/events", headers=AUTH, params={"after": after})
    assert again.json()["events"] == []


@pytest.mark.parametrize(
    ("params", "headers", "words"),
    [
        ({"after": "12"}, {}, "after:"),
        ({}, {"Last-Event-ID": "x-1"}, "Last-Event-ID:"),
        ({"after": f"{2**64}-1"}, {}, "cursor"),
        # ahead of the log (another database, a restore): a stream would wait, silent
        ({}, {"Last-Event-ID": f"{2**62}-1"}, "Last-Event-ID: the cursor is ahead of the event"),
        ({"after": f"{2**62}-0"}, {}, "after: the cursor is ahead of the event log"),
        ({"type": "tenant.exploded"}, {}, "unknown event type"),
        ({"tenant": "NOT A TENANT"}, {}, "tenant"),
        ({"limit": "0"}, {}, "limit"),
    ],
)
def test_a_bad_cursor_or_filter_answers_400_naming_it(
    api_url: str, params: dict[str, str], headers: dict[str, str], words: str
) -> None:
    # A stream has no pages, but a bad limit is refused there too, as the docs say
    for accept in ("application/json", "text/event-stream"):
        answer = requests.get(
            f"{api_url}/operator/events",
            headers={**AUTH, "Accept": accept, **headers},
            params=params,
            timeout=10,
        )
        assert answer.status_code == 400, answer.text
        assert words in answer.json()["detail"]


def test_the_stream_requires_the_operator_credential(api_url: str) -> None:
    for headers in ({"Accept": "text/event-stream"}, {**SSE, "Authorization": "Bearer wrong"}):
        answer = requests.get(f"{api_url}/operator/events", headers=headers, timeout=10)
        assert answer.status_code == 401


def test_a_client_that_goes_away_frees_its_stream(
    api_url: str, db: psycopg.Connection[Any]
) -> None:
    # Given 20 streams opened and dropped
    for _ in range(20):
        stream = Stream(api_url, SSE)
        stream.close()
    # Then the API still streams: a new client gets the next event
    stream = Stream(api_url, SSE)
    tenant_id = new_tenant_id()
    insert_tenant(db, tenant_id)
    event = json.loads(stream.next_message()["data"])
    stream.close()
    assert event["subject"] == tenant_id
