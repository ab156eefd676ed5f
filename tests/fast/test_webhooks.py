"""Webhooks in-process on real Postgres, to a real HTTP receiver that verifies every signature
with the Standard Webhooks library: the fan-out from the event log (new endpoints start now,
filters, each tenant in tenantseq order even against the global order), delivery in order per
tenant, retries of every kind of failure with nothing lost, disabling after the window and
re-enabling, one dispatcher per endpoint, no secret anywhere, and the CLI and console views.

Every time compared here comes from the injected clock (the dispatcher's ``clock``), never from
Postgres' ``now()``."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import urllib3
from fastapi.testclient import TestClient

from api_hooks.app import create_app
from api_hooks.cli import main as cli_main
from harness.console import sign_in
from tests.conftest import OPERATOR_TOKEN, ROOT, wait_for
from tests.fast.conftest import SEED, Clock, insert
from tests.webhook_receiver import Answer, Receiver
from worker import webhook_sending
from worker.db import advisory_lock, get_engine
from worker.settings import get_settings
from worker.tasks import dispatch_webhooks
from worker.webhook_config import Endpoint, parse_endpoints
from worker.webhook_dispatch import Policy, Summary, dispatch, enable, lock_key
from worker.webhook_sending import CLOUDEVENTS_JSON, Attempt, Sender, signed_headers

SECRET = "whsec_" + base64.b64encode(b"s3cr3t-key-for-the-tests-" + b"x" * 7).decode()
POLICY = Policy(read_timeout=0.5, backoff_cap=60.0, disable_after=timedelta(hours=24))


@pytest.fixture
def receiver(db: psycopg.Connection[Any]) -> Iterator[Receiver]:
    """A receiver on loopback answering 204, and no webhook endpoint in the database yet."""
    db.execute("TRUNCATE webhook_endpoints CASCADE")
    started = Receiver(SECRET, check_time=False).start()
    yield started
    started.down()


def endpoint_for(receiver: Receiver, name: str = "ui", **extra: Any) -> Endpoint:
    entry = {"name": name, "url": receiver.url, "secret": SECRET, **extra}
    (endpoint,) = parse_endpoints(json.dumps([entry]), "test")
    return endpoint


def run(clock: Clock, *endpoints: Endpoint, policy: Policy = POLICY) -> Summary:
    with get_engine().connect() as conn:
        return dispatch(conn, endpoints, policy, clock=clock, rng=random.Random(SEED))


def move(db: psycopg.Connection[Any], tenant_id: str, *states: str) -> None:
    for state in states:
        db.execute(
            "UPDATE tenants SET influxdb_state = %s WHERE tenant_id = %s", (state, tenant_id)
        )


def readable(db: psycopg.Connection[Any]) -> None:
    """Wait until every event written so far is below the log's horizon (another session's
    open transaction holds it back for a moment)."""
    (last,) = db.execute("SELECT max(xid)::text FROM tenant_events").fetchone()

    def below() -> bool:
        (xmin,) = db.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
        return last is None or int(xmin) > int(last)

    wait_for(below, timeout=20, what="the events to be below the horizon")


def arrivals(receiver: Receiver, tenant_id: str) -> list[str]:
    """The event types the tenant's first arrivals carried, in arrival order."""
    return [
        r.event["type"].removeprefix("io.tenant-provisioner.")
        for r in receiver.first_arrivals()
        if r.event.get("subject") == tenant_id
    ]


def deliveries(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM webhook_deliveries ORDER BY tenant_id, seq").fetchall()


def endpoint_row(db: psycopg.Connection[Any], name: str = "ui") -> dict[str, Any]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM webhook_endpoints WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return row


def test_a_new_endpoint_gets_what_happens_from_then_on_signed_and_in_order(db, receiver):
    clock = Clock()
    ui = endpoint_for(receiver)
    # Given a tenant created before the endpoint was configured
    insert(db, "before", state="pending")
    readable(db)
    assert run(clock, ui).served == ["ui"]
    # When another tenant is created and provisioned
    insert(db, "acme", state="pending")
    move(db, "acme", "provisioning", "provisioned")
    readable(db)
    summary = run(clock, ui)
    # Then its three events arrive in order, each verified; nothing of the history
    assert arrivals(receiver, "acme") == [
        "tenant.created",
        "tenant.provisioning_started",
        "tenant.provisioned",
    ]
    assert all(r.verified for r in receiver.snapshot())
    # as CloudEvents' structured mode names them (HTTP binding 3.2.1)
    assert {r.content_type for r in receiver.snapshot()} == {CLOUDEVENTS_JSON}
    assert arrivals(receiver, "before") == []
    assert [r.event["tenantseq"] for r in receiver.snapshot()] == [1, 2, 3]
    assert (summary.delivered, summary.failed) == (3, 0)
    # and nothing waits; the endpoint counted them, by the injected clock
    assert deliveries(db) == []
    row = endpoint_row(db)
    assert (row["delivered"], row["last_success_at"], row["failing_since"]) == (3, clock(), None)


def test_a_deployment_s_own_source_is_on_every_event_it_sends_and_serves(db, receiver, monkeypatch):
    # Given a deployment named by its own CloudEvents source (a receiver taking two deployments'
    # events tells them apart by source and id: the ids alone may repeat)
    monkeypatch.setenv("EVENTS_SOURCE", "https://ops.example.com/provisioner/eu")
    get_settings.cache_clear()
    try:
        clock, ui = Clock(), endpoint_for(receiver)
        assert run(clock, ui).served == ["ui"]
        # When a tenant is created
        insert(db, "acme", state="pending")
        readable(db)
        run(clock, ui)
        # Then its event carries that source, as delivered and as served by the API
        assert {r.event["source"] for r in receiver.snapshot()} == {
            "https://ops.example.com/provisioner/eu"
        }
        with TestClient(create_app()) as api:
            api.headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
            page = api.get("/operator/tenants/acme/events").json()
        assert [e["source"] for e in page["events"]] == ["https://ops.example.com/provisioner/eu"]
    finally:
        monkeypatch.delenv("EVENTS_SOURCE")
        get_settings.cache_clear()


def test_a_filter_sends_only_its_types_and_the_cursor_passes_the_rest(db, receiver):
    clock = Clock()
    ui = endpoint_for(receiver, types=["tenant.provisioned", "tenant.failed"])
    run(clock, ui)
    start = endpoint_row(db)["cursor_xid"]
    insert(db, "acme", state="pending")
    move(db, "acme", "provisioning", "provisioned")
    readable(db)
    run(clock, ui)
    assert arrivals(receiver, "acme") == ["tenant.provisioned"]
    # A second run finds nothing new: the cursor moved past what the filter dropped
    assert int(endpoint_row(db)["cursor_xid"]) > int(start)
    run(clock, ui)
    assert len(receiver.snapshot()) == 1
    assert deliveries(db) == []


def test_a_tenants_failing_event_holds_back_its_later_ones_but_not_other_tenants(db, receiver):
    clock = Clock()
    ui = endpoint_for(receiver)
    run(clock, ui)
    receiver.answer_with(
        lambda r: Answer(500) if r.event.get("subject") == "alpha" else Answer(204)
    )
    for tenant in ("alpha", "beta"):
        insert(db, tenant, state="pending")
    for tenant in ("alpha", "beta"):
        move(db, tenant, "provisioning", "provisioned")
    readable(db)

    run(clock, ui)
    # beta's three went; alpha's first failed once, and its later two were not sent
    assert arrivals(receiver, "beta") == [
        "tenant.created",
        "tenant.provisioning_started",
        "tenant.provisioned",
    ]
    assert [r.event["type"] for r in receiver.snapshot() if r.event["subject"] == "alpha"] == [
        "io.tenant-provisioner.tenant.created"
    ]
    waiting = deliveries(db)
    assert [(d["tenant_id"], d["seq"], d["attempts"]) for d in waiting] == [
        ("alpha", 1, 1),
        ("alpha", 2, 0),
        ("alpha", 3, 0),
    ]
    head = waiting[0]
    assert head["next_attempt_at"] > clock() and head["first_failed_at"] == clock()
    assert head["last_error"] == "HTTP 500 Internal Server Error"
    assert endpoint_row(db)["failing_since"] == clock()

    # Not due yet: nothing is sent
    run(clock, ui)
    assert len(receiver.snapshot()) == 4

    # When the receiver recovers and the backoff has passed, alpha's arrive, in order
    receiver.answer_with(Answer(204))
    clock.advance(POLICY.backoff_cap + 1)
    run(clock, ui)
    assert arrivals(receiver, "alpha") == [
        "tenant.created",
        "tenant.provisioning_started",
        "tenant.provisioned",
    ]
    assert deliveries(db) == []
    assert endpoint_row(db)["failing_since"] is None


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("redirect", "HTTP 302: a redirect, not followed"),
        ("error", "HTTP 503 Service Unavailable"),
        ("slow", "no answer within 3s / 0.5s"),
        ("down", "connection failed: ConnectionRefusedError"),
    ],
)
def test_every_failure_is_retried_later_and_nothing_is_lost(db, receiver, fault, error):
    clock = Clock()
    ui = endpoint_for(receiver)
    elsewhere = Receiver(SECRET, check_time=False).start()
    run(clock, ui)
    insert(db, "acme", state="pending")
    readable(db)
    # Given a receiver that redirects, fails, answers too late, or is down
    if fault == "redirect":
        receiver.answer_with(Answer(302, headers=(("location", elsewhere.url),)))
    elif fault == "error":
        receiver.answer_with(Answer(503, headers=(("retry-after", "30"),)))
    elif fault == "slow":
        receiver.answer_with(Answer(204, delay=POLICY.read_timeout + 0.5))
    else:
        receiver.down()
    summary = run(clock, ui)

    # Then the delivery is kept, due again later; the redirect was not followed
    assert (summary.delivered, summary.failed) == (0, 1)
    (kept,) = deliveries(db)
    assert kept["attempts"] == 1 and kept["next_attempt_at"] > clock()
    assert kept["last_error"].startswith(error), kept["last_error"]
    if fault == "error":  # Retry-After is honoured (within the cap)
        assert kept["next_attempt_at"] >= clock() + timedelta(seconds=30)
    assert elsewhere.snapshot() == []
    assert endpoint_row(db)["failing_since"] == clock()

    # When the receiver answers again and the retry is due, it is delivered
    if fault == "down":
        receiver.start()
    receiver.answer_with(Answer(200))
    clock.advance(POLICY.backoff_cap + 1)
    run(clock, ui)
    assert arrivals(receiver, "acme") == ["tenant.created"]
    assert any(r.answered == 200 for r in receiver.snapshot())
    assert deliveries(db) == [] and endpoint_row(db)["failing_since"] is None
    elsewhere.down()


def test_an_endpoint_whose_url_cannot_be_sent_to_fails_alone(db, receiver):
    # Given an endpoint whose URL urllib3 refuses when sending (older config let it in: an
    # empty label), listed before a healthy one
    clock = Clock()
    typo = dataclasses.replace(endpoint_for(receiver, "typo"), url="http://hooks..example.com/in")
    ui = endpoint_for(receiver)
    assert run(clock, typo, ui).served == ["typo", "ui"]

    # When a tenant is created
    insert(db, "acme", state="pending")
    readable(db)
    summary = run(clock, typo, ui)

    # Then the healthy endpoint gets its event, and the other's failure is recorded, to retry
    assert arrivals(receiver, "acme") == ["tenant.created"]
    assert (summary.delivered, summary.failed) == (1, 1)
    (waiting,) = deliveries(db)
    assert waiting["endpoint"] == "typo" and "LocationParseError" in waiting["last_error"]


def post_one(receiver: Receiver, read_timeout: float) -> Attempt:
    with Sender(1) as sender:
        session, endpoint = sender.session(), endpoint_for(receiver)
        sending = sender.submit(webhook_sending.post, session, endpoint, "m1", {}, 0, read_timeout)
        return sending.result(timeout=30)


def test_a_receiver_dripping_its_answer_is_cut_at_the_deadline(receiver, monkeypatch):
    # Given a receiver sending its answer a byte every 0.1 s, for ever: never a read timeout
    receiver.answer_with(Answer(204, drip=0.1))
    monkeypatch.setattr(webhook_sending, "CONNECT_TIMEOUT", 0.2)  # deadline: 0.2 + 0.3 s

    # When one event is posted, it is not delivered (the headers, cut short by the shutdown,
    # would read as complete ones: a 204), and the receiver saw its connection shut
    assert post_one(receiver, 0.3) == Attempt(None, "no answer within 0.2s / 0.3s")
    wait_for(lambda: receiver.cut == 1, timeout=10, what="the dripping answer to be cut")


def test_one_thread_keeps_every_deadline_and_a_nearer_one_is_not_held_by_a_farther(
    receiver, monkeypatch
):
    # Given a receiver dripping its answers, and a request whose deadline is far (1.6 s)
    receiver.answer_with(Answer(204, drip=0.1))
    monkeypatch.setattr(webhook_sending, "CONNECT_TIMEOUT", 0.1)
    with Sender(2) as sender:
        endpoint = endpoint_for(receiver)

        def send(read_timeout: float) -> Attempt:
            return webhook_sending.post(sender.session(), endpoint, "m", {}, 0, read_timeout)

        far = sender.submit(send, 1.5)
        wait_for(lambda: len(receiver.snapshot()) == 1, timeout=10, what="the first request")
        # When a request with a nearer deadline (0.3 s) starts while the watchdog waits for it
        started = time.monotonic()
        near = sender.submit(send, 0.2)

        # Then the nearer one is cut at its own deadline, well before the farther one's (the
        # watchdog is woken: asleep until the farther deadline, it would cut both at 1.6 s)
        assert near.result(timeout=10) == Attempt(None, "no answer within 0.1s / 0.2s")
        assert time.monotonic() - started < 1.0
        assert far.result(timeout=10) == Attempt(None, "no answer within 0.1s / 1.5s")
    watchdogs = [t for t in threading.enumerate() if t.name == "webhook-deadlines"]
    assert len(watchdogs) == 1, "one watchdog thread per process, not a timer per request"


def test_a_process_forked_while_the_deadlines_are_locked_keeps_its_own(receiver, monkeypatch):
    # Given a process whose watchdog runs, forked (as a prefork pool forks) while another of its
    # threads holds the deadlines' lock: the child gets the lock held, by no thread of its own
    receiver.answer_with(Answer(204))
    assert post_one(receiver, 1.0) == Attempt(204)
    receiver.answer_with(Answer(204, drip=0.1))
    monkeypatch.setattr(webhook_sending, "CONNECT_TIMEOUT", 0.2)
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with webhook_sending._deadlines._changed:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait(5)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: post to the dripping receiver, report, leave at once
        try:
            signal.alarm(10)  # a child stuck on the inherited lock dies, and the test fails
            os.write(write, repr(post_one(receiver, 0.3)).encode())
        finally:
            os._exit(0)
    release.set()
    holder.join()

    # Then the child's request is cut at its deadline by a watchdog of its own
    os.close(write)
    try:
        with os.fdopen(read, "rb") as answer:
            reported = answer.read().decode()
    finally:
        os.waitpid(child, 0)
    assert reported == repr(Attempt(None, "no answer within 0.2s / 0.3s"))


def test_a_deadline_that_passes_while_connecting_cuts_the_answer_once_connected(
    receiver, monkeypatch
):
    # Given a receiver dripping its answer, reached only after the deadline has passed (a slow
    # name lookup, several addresses tried: the connect timeout bounds each try, not them all)
    receiver.answer_with(Answer(204, drip=0.1))
    monkeypatch.setattr(webhook_sending, "CONNECT_TIMEOUT", 0.2)  # deadline: 0.2 + 0.3 s
    connect = urllib3.util.connection.create_connection

    def slow_connect(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)
        return connect(*args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", slow_connect)

    # When one event is posted
    attempt = post_one(receiver, 0.3)

    # Then it is not delivered: the connection was shut as soon as it was made, before the
    # request went out (without that, the drip would go on, and end as a "delivered" 204)
    assert (attempt.status, attempt.error) == (None, "no answer within 0.2s / 0.3s")
    assert receiver.snapshot() == []


def test_a_tls_handshake_dripped_by_the_receiver_is_cut_at_the_deadline(monkeypatch):
    # Given an https receiver that accepts the connection, then drips its handshake: a TLS
    # record announcing 16 KiB, a byte every 0.1 s (never a wait of the connect timeout)
    listener = socket.create_server(("127.0.0.1", 0))
    cut = threading.Event()

    def drip() -> None:
        connection, _ = listener.accept()
        with connection:
            try:
                connection.sendall(b"\x16\x03\x03\x40\x00")
                for _ in range(300):  # 30 s
                    time.sleep(0.1)
                    connection.sendall(b"\x00")
            except OSError:
                cut.set()

    dripping = threading.Thread(target=drip, daemon=True)
    dripping.start()
    monkeypatch.setattr(webhook_sending, "CONNECT_TIMEOUT", 0.2)  # deadline: 0.2 + 0.3 s
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/hooks"
    (endpoint,) = parse_endpoints(json.dumps([{"name": "tls", "url": url, "secret": SECRET}]), "t")

    # When one event is posted, then it fails within its deadline, not when the handshake
    # ends: CPython bounds a handshake as a whole by the socket's timeout (the connect
    # timeout), not each wait for a byte, as the HTTP client's timeouts are
    started = time.monotonic()
    with Sender(1) as sender:
        sending = sender.submit(webhook_sending.post, sender.session(), endpoint, "m", {}, 0, 0.3)
        attempt = sending.result(timeout=30)
    assert (attempt.status, attempt.error) == (None, "no answer within 0.2s / 0.3s")
    assert time.monotonic() - started < 1.0
    assert cut.wait(10), "the receiver's connection was not shut"
    listener.close()


def test_failing_past_the_window_disables_the_endpoint_and_enabling_resumes_it(db, receiver):
    clock = Clock()
    ui = endpoint_for(receiver)
    run(clock, ui)
    receiver.answer_with(Answer(503))
    insert(db, "acme", state="pending")
    readable(db)
    run(clock, ui)
    started = clock()
    # Failing for 23 h: still retried, not disabled
    clock.advance(23 * 3600)
    run(clock, ui)
    assert endpoint_row(db)["disabled_at"] is None
    sent = len(receiver.snapshot())
    assert sent == 2
    # Past 24 h: the next failure disables it
    clock.advance(3600 + 1)
    summary = run(clock, ui)
    row = endpoint_row(db)
    assert summary.disabled == ["ui"]
    assert (row["failing_since"], row["disabled_at"]) == (started, clock())

    # While disabled nothing is sent, and new events still become deliveries (none lost)
    move(db, "acme", "provisioning")
    readable(db)
    clock.advance(3600)
    run(clock, ui)
    assert len(receiver.snapshot()) == sent + 1
    assert [d["seq"] for d in deliveries(db)] == [1, 2]

    # When an operator re-enables it and the receiver is back, both go, in order
    receiver.answer_with(Answer(204))
    with get_engine().connect() as conn:
        assert enable(conn, "ui", clock())
        assert not enable(conn, "nobody", clock())
    run(clock, ui)
    assert arrivals(receiver, "acme") == ["tenant.created", "tenant.provisioning_started"]
    row = endpoint_row(db)
    assert (row["disabled_at"], row["failing_since"], row["delivered"]) == (None, None, 2)


def test_one_event_the_receiver_keeps_refusing_does_not_disable_an_endpoint_taking_the_rest(
    db, receiver
):
    # Given a receiver that refuses every event of one tenant and takes the others'
    clock = Clock()
    ui = endpoint_for(receiver)
    run(clock, ui)
    receiver.answer_with(lambda got: Answer(422 if got.event["subject"] == "odd" else 204))
    insert(db, "odd", state="pending")
    readable(db)
    run(clock, ui)
    started = clock()

    # When, for two days, other tenants' events keep arriving while that one is refused
    for hour in range(48):
        clock.advance(3600)
        insert(db, f"t{hour}", state="pending")
        readable(db)
        assert run(clock, ui).disabled == []

    # Then the endpoint stays enabled, every other event delivered; the refused one waits,
    # retried, and shows as the endpoint's oldest failure
    row = endpoint_row(db)
    assert (row["disabled_at"], row["failing_since"], row["delivered"]) == (None, started, 48)
    assert [d["tenant_id"] for d in deliveries(db)] == ["odd"]
    assert arrivals(receiver, "t47") == ["tenant.created"]

    # And once nothing is delivered for the whole window, it is disabled after all
    receiver.answer_with(Answer(503))
    clock.advance(12 * 3600)
    assert run(clock, ui).disabled == []
    clock.advance(12 * 3600 + 1)
    assert run(clock, ui).disabled == ["ui"]


def test_an_endpoint_idle_for_days_is_not_disabled_at_its_first_failure(db, receiver):
    # Given an endpoint that delivered, then had nothing to send for 3 days
    clock = Clock()
    ui = endpoint_for(receiver)
    run(clock, ui)
    insert(db, "acme", state="pending")
    readable(db)
    run(clock, ui)
    assert endpoint_row(db)["delivered"] == 1
    clock.advance(3 * 86400)

    # When its next event fails
    receiver.answer_with(Answer(503))
    move(db, "acme", "provisioning")
    readable(db)
    summary = run(clock, ui)

    # Then it is failing from now, not disabled: the window counts failures, not idle time
    row = endpoint_row(db)
    assert summary.disabled == []
    assert (row["failing_since"], row["disabled_at"]) == (clock(), None)


def test_410_gone_disables_the_endpoint_at_once(db, receiver):
    clock = Clock()
    ui = endpoint_for(receiver)
    run(clock, ui)
    receiver.answer_with(Answer(410))
    insert(db, "acme", state="pending")
    readable(db)
    assert run(clock, ui).disabled == ["ui"]
    assert endpoint_row(db)["disabled_at"] == clock()
    assert len(deliveries(db)) == 1


def test_a_tenants_events_go_in_tenantseq_order_even_when_the_global_order_differs(
    db, receiver, database
):
    # Given a tenant whose event 2 is written by a transaction with a larger xid than its
    # event 3's, while a transaction between them stays open: the global order (xid, id)
    # shows event 3 first, and event 2 only once that transaction ends.
    clock = Clock()
    ui = endpoint_for(receiver)
    run(clock, ui)
    insert(db, "acme", state="pending")
    readable(db)
    run(clock, ui)
    dsn = f"postgresql://postgres@127.0.0.1:5432/{database}"
    with psycopg.connect(dsn) as late, psycopg.connect(dsn) as between:
        late.execute("SELECT pg_current_xact_id()")  # its xid first
        between.execute("SELECT pg_current_xact_id()")  # holds the horizon below the next
        move(db, "acme", "provisioning")  # event 2: a larger xid, committed first
        late.execute("UPDATE tenants SET influxdb_state = 'retrying' WHERE tenant_id = 'acme'")
        late.commit()  # event 3, in the smaller xid
        (event3_xid,) = db.execute(
            "SELECT xid::text FROM tenant_events WHERE tenant_id = 'acme' AND seq = 3"
        ).fetchone()

        def event3_readable() -> bool:
            (xmin,) = db.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
            return int(xmin) > int(event3_xid)

        wait_for(event3_readable, timeout=20, what="event 3 below the horizon")
        # When the dispatcher runs while event 2 is still above the horizon
        run(clock, ui)
        # Then event 2 went first anyway (read by tenantseq), then event 3
        assert arrivals(receiver, "acme") == [
            "tenant.created",
            "tenant.provisioning_started",
            "tenant.retry_scheduled",
        ]
        between.rollback()
    # And when the global order reaches event 2, it is not sent again
    readable(db)
    run(clock, ui)
    assert len(receiver.snapshot()) == 3 and deliveries(db) == []


def test_one_dispatcher_works_an_endpoint_at_a_time(db, receiver):
    clock = Clock()
    ui = endpoint_for(receiver)
    run(clock, ui)
    insert(db, "acme", state="pending")
    readable(db)
    with get_engine().connect() as other, advisory_lock(other, lock_key("ui")) as held:
        assert held
        assert run(clock, ui).served == []  # another dispatcher holds it: this run skips it
        assert receiver.snapshot() == []
    assert run(clock, ui).served == ["ui"]
    assert arrivals(receiver, "acme") == ["tenant.created"]


def test_no_secret_in_stored_errors_logs_or_the_runs_summary(db, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    ui = endpoint_for(receiver)
    run(clock, ui)
    # A receiver that echoes the secret in its status line
    receiver.answer_with(Answer(500, reason=f"bad signature for {SECRET}"))
    insert(db, "acme", state="pending")
    readable(db)
    summary = run(clock, ui)
    (kept,) = deliveries(db)
    assert "[REDACTED]" in kept["last_error"]
    stored = json.dumps([kept, endpoint_row(db)], default=str)
    for text in (stored, caplog.text, json.dumps(summary.as_dict()), repr(ui)):
        assert SECRET not in text
        assert SECRET.removeprefix("whsec_") not in text


def test_a_token_in_the_url_s_path_is_kept_out_of_stored_errors_and_listings(db, capsys):
    # Given a receiver whose URL carries its credential in the path (as Slack's do), behind a
    # proxy that quotes the path in its status line
    db.execute("TRUNCATE webhook_endpoints CASCADE")
    token = "xoxb7Q2mZt9KfA41bR0c"
    path = f"/services/T0001/B0001/{token}"
    receiver = Receiver(SECRET, check_time=False, path=path).start()
    try:
        receiver.answer_with(Answer(502, reason=f"no upstream for {path}"))
        clock, slack = Clock(), endpoint_for(receiver, "slack")
        run(clock, slack)

        # When an event fails to reach it
        insert(db, "acme", state="pending")
        readable(db)
        assert run(clock, slack).failed == 1
    finally:
        receiver.down()

    # Then the stored error and the operator's listing name the path without the token
    (kept,) = deliveries(db)
    assert kept["last_error"] == "HTTP 502 no upstream for /services/T0001/B0001/[REDACTED]"
    assert cli_main(["--json", "webhooks"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["url"] == receiver.url.replace(token, "[REDACTED]")
    assert token not in str(endpoint_row(db, "slack")["last_error"])  # (its url column has it)


def test_tenantctl_and_the_console_show_each_endpoint_and_enable_a_disabled_one(
    db, receiver, capsys
):
    clock = Clock()
    ui, ops = endpoint_for(receiver), endpoint_for(receiver, name="ops")
    run(clock, ui, ops)
    db.execute(
        "UPDATE webhook_endpoints SET disabled_at = %s, failing_since = %s, "
        "last_error = %s WHERE name = 'ops'",
        (clock(), clock(), "HTTP 500 <script>alert(1)</script>"),
    )
    assert cli_main(["--json", "webhooks"]) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed["ui"]["disabled_at"] is None and listed["ops"]["disabled_at"] is not None
    assert listed["ui"]["url"] == receiver.url and listed["ops"]["pending"] == 0
    assert cli_main(["webhooks"]) == 0
    out = capsys.readouterr()
    assert "DISABLED: ops" in out.err and "disabled" in out.out

    with TestClient(create_app(), follow_redirects=False) as browser:
        assert sign_in(browser, "/operator/console", OPERATOR_TOKEN).status_code == 303
        page = browser.get("/operator/console/webhooks")
        assert page.status_code == 200
        assert 'data-endpoint="ops" data-state="disabled"' in page.text
        assert 'data-endpoint="ui" data-state="ok"' in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert SECRET not in page.text
        assert 'href="/operator/console/webhooks"' in browser.get("/operator/console").text

    assert cli_main(["webhooks", "--enable", "ops"]) == 0
    assert endpoint_row(db, "ops")["disabled_at"] is None
    assert cli_main(["webhooks", "--enable", "nobody"]) == 3


def python_block(page: Path, heading: str) -> str:
    """The first ```python block after ``heading`` in ``page``."""
    text = page.read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1]
    return text.split("```python\n", 1)[1].split("```\n", 1)[0]


def test_the_documented_receiver_takes_a_real_delivery_and_refuses_forgeries(
    db, receiver, capsys, monkeypatch
):
    # Given the receiver of docs/webhooks.md - the README shows the same one - serving
    code = python_block(ROOT / "docs" / "webhooks.md", "## A receiver")
    assert python_block(ROOT / "README.md", "## Webhooks") == code
    serve = 'HTTPServer(("", 8080), Receiver).serve_forever()\n'
    assert code.endswith(serve)
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    namespace: dict[str, Any] = {}
    exec(compile(code.removesuffix(serve), "docs/webhooks.md", "exec"), namespace)
    server = ThreadingHTTPServer(("127.0.0.1", 0), namespace["Receiver"])
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    (documented,) = parse_endpoints(
        json.dumps([{"name": "doc", "url": url, "secret": SECRET}]), "t"
    )
    try:
        # When an event is delivered (on the database's clock: the receiver checks the time)
        with get_engine().connect() as conn:
            dispatch(conn, [documented], POLICY)
            insert(db, "acme", state="pending")
            readable(db)
            summary = dispatch(conn, [documented], POLICY)
        # Then it verified and took it
        assert (summary.delivered, summary.failed) == (1, 0)
        assert "acme io.tenant-provisioner.tenant.created pending" in capsys.readouterr().out
        # And it refuses a forged signature, a stale timestamp and missing headers
        body = json.dumps({"id": "1-1", "type": "x", "data": {}}).encode()
        now = int(time.time())
        good = signed_headers(documented, "1-1", now, body)
        for headers in (
            {**good, "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()},
            signed_headers(documented, "1-1", now - 600, body),
            {"content-type": "application/json"},
            {**good, "webhook-timestamp": "\u00b2\u00b3"},  # digits, but not ASCII ones
        ):
            assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 401
        # And takes a repeat of an id once
        for _ in range(2):
            assert requests.post(url, data=body, headers=good, timeout=5).status_code == 204
        assert capsys.readouterr().out.count(" x ") == 1
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhooks_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """WEBHOOKS_FILE for this test's settings (the process's, read again before and after)."""
    path = tmp_path / "hooks.json"
    monkeypatch.setenv("WEBHOOKS_FILE", str(path))
    get_settings.cache_clear()
    yield path
    monkeypatch.delenv("WEBHOOKS_FILE")
    get_settings.cache_clear()


def test_an_unusable_webhooks_file_is_shown_everywhere_until_it_is_fixed(
    db, receiver, webhooks_file, tmp_path, capsys
):
    # Given a webhooks file whose secret file an editor saved as UTF-16
    db.execute("TRUNCATE webhook_config")
    secret_file = tmp_path / "ui.secret"
    secret_file.write_text(SECRET, encoding="utf-16")
    entry = {"name": "ui", "url": receiver.url, "secret_file": str(secret_file)}
    webhooks_file.write_text(json.dumps([entry]))

    # When the webhooks worker's dispatch runs
    result = dispatch_webhooks()

    # Then it says why, naming the entry and never the secret
    assert "[0] (ui).secret_file" in result["error"] and "not UTF-8" in result["error"]
    # and tenantctl exits 6 saying so, the console says it above the endpoints, /metrics has 1
    assert cli_main(["webhooks"]) == 6
    said = capsys.readouterr().err
    assert "WEBHOOKS FILE UNUSABLE since " in said and "(ui).secret_file" in said
    assert unusable_metric() == 1.0
    with TestClient(create_app(), follow_redirects=False) as browser:
        assert sign_in(browser, "/operator/console", OPERATOR_TOKEN).status_code == 303
        page = browser.get("/operator/console/webhooks").text
        assert 'id="problem"' in page and "cannot use its webhooks file" in page
        assert SECRET[6:20] not in page

    # When the secret file is fixed, the next dispatch uses it, and every view says so
    secret_file.write_text(SECRET)
    assert "error" not in dispatch_webhooks()
    assert cli_main(["webhooks"]) == 0
    assert "UNUSABLE" not in capsys.readouterr().err
    assert unusable_metric() == 0.0


def unusable_metric() -> float:
    with TestClient(create_app()) as client:
        text = client.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).text
    (value,) = [
        line.split()[1]
        for line in text.splitlines()
        if line.startswith("tenant_provisioner_webhooks_file_unusable ")
    ]
    return float(value)
