"""Who did it: each entry point records its actor and route with the operator's action, in the
transaction of the change; the events read back over HTTP as CloudEvents 1.0, page by page,
from the CLI, and on the console's tenant and Audit pages (escaped: no script but the console's)."""

from __future__ import annotations

import asyncio
import gc
import getpass
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.testclient import TestClient
from psycopg.rows import dict_row

from api_hooks import (
    InvalidCursor,
    audit_trail,
    create_tenant,
    request_provisioning,
    stream,
    tenant_events,
)
from api_hooks.actors import actor_of
from api_hooks.app import create_app
from api_hooks.cli import main as cli_main
from api_hooks.console import console_router, live
from api_hooks.console.render import TIMELINE_JS
from api_hooks.router import operator_router
from harness.console import form_token
from harness.console import sign_in as console_sign_in
from tests.conftest import OPERATOR_TOKEN, wait_for
from tests.fast.conftest import insert

CONSOLE = "/operator/console"
HOSTILE = "<script>alert(1)</script>\u202e"
CE_EXTENSION = re.compile(r"[a-z0-9]{1,20}")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


@pytest.fixture
def queue(broker: Any) -> Iterator[Any]:
    """The hooks publish to the test run's own Redis DB; nobody consumes it here."""
    yield broker
    broker.flushdb()


def audit_rows(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT tenant_id, seq, type, actor, route, data FROM tenant_events "
            "WHERE type LIKE 'operator.%' ORDER BY id"
        ).fetchall()


def who(db: psycopg.Connection[Any], tenant_id: str | None) -> list[tuple[str, Any, Any]]:
    """(type, actor, route) of the tenant's events (None: the deployment's), in order."""
    with db.cursor() as cur:
        rows = cur.execute(
            "SELECT type, actor, route FROM tenant_events WHERE tenant_id IS NOT DISTINCT FROM %s "
            "ORDER BY id",
            (tenant_id,),
        ).fetchall()
    return [tuple(r) for r in rows]


# -- the UI's require_operator_admin: what it returns is the actor ----------------------------


@dataclass
class Admin:
    """An identity object as a UI's auth dependency returns it."""

    id: int
    username: str | None
    email: str


IDENTITIES = [
    (Admin(7, "alice", "alice@example.com"), "alice"),
    (Admin(8, None, "bob@example.com"), "bob@example.com"),
    ({"sub": "u-42", "roles": ["admin"]}, "u-42"),
    ("carol", "carol"),
    (None, "unidentified"),
    (12345, "12345"),
    # Never str() of what it cannot read: bearer credentials print their token, claims theirs
    (HTTPAuthorizationCredentials(scheme="Bearer", credentials="eyJ.SECRET.jwt"), "unidentified"),
    ({"token": "eyJ.SECRET.jwt", "role": "admin"}, "unidentified"),
    (Admin(9, None, None), "9"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("identity", "actor"), IDENTITIES)
def test_actor_of_reads_the_identity_the_dependency_returned(identity, actor):
    assert actor_of(identity) == actor


def ui_app(identity: object) -> TestClient:
    """The UI's app: our router behind its own check, which returns its operator."""

    def require_operator_admin(request: Request) -> object:
        if request.headers.get("x-ui-session") != "valid":
            raise HTTPException(401, detail="sign in")
        return identity

    app = FastAPI()
    app.include_router(operator_router(require_operator_admin))
    return TestClient(app, headers={"x-ui-session": "valid"})


def test_the_uis_operator_is_the_actor_of_every_http_action(db, queue):
    with ui_app(Admin(7, "alice", "alice@example.com")) as ui:
        assert ui.post("/operator/tenants", json={"tenant_id": "acme", "name": "A"}).status_code
        assert ui.post("/operator/tenants/acme/influxdb/retry").status_code == 202
        db.execute("UPDATE tenants SET influxdb_state = 'failed' WHERE tenant_id = 'acme'")
        assert ui.post("/operator/tenants/acme/influxdb/adopt", json={"node": "default"}).json()
        assert ui.delete("/operator/tenants/acme").status_code == 202
        refused = TestClient(ui.app).delete("/operator/tenants/acme")  # no UI session
        assert refused.status_code == 401

    assert [(t, a, r) for t, a, r in who(db, "acme") if t.startswith("operator.")] == [
        ("operator.created", "alice", "http"),
        ("operator.retry", "alice", "http"),
        ("operator.adopt", "alice", "http"),
        ("operator.delete", "alice", "http"),
    ]
    # the transitions the actions caused name the same operator
    assert ("tenant.adopted", "alice", "http") in who(db, "acme")
    assert ("tenant.deletion_requested", "alice", "http") in who(db, "acme")


def test_an_actor_s_control_characters_are_stored_replaced(db, queue):
    # Given a UI whose operator name carries a line break, an escape sequence and a C1 control
    with ui_app("mallory\n\x1b[2Jroot\x85") as ui:
        # When that operator creates a tenant (a transition and an action)
        assert ui.post("/operator/tenants", json={"tenant_id": "acme", "name": "A"}).status_code

    # Then both events name the actor with each control replaced: nothing a CloudEvents
    # attribute may not hold, nothing a terminal would act on
    shown = "mallory\ufffd\ufffd[2Jroot\ufffd"
    assert who(db, "acme") == [
        ("tenant.created", shown, "http"),
        ("operator.created", shown, "http"),
    ]


def test_the_operator_token_is_recorded_as_operator_token(db, api, queue):
    assert api.post("/operator/tenants", json={"tenant_id": "acme", "name": "A"}).status_code
    assert who(db, "acme") == [
        ("tenant.created", "operator-token", "http"),
        ("operator.created", "operator-token", "http"),
    ]


def test_the_cli_records_the_os_user(db, queue, capsys):
    insert(db, "acme", state="failed", error_reason="unauthorized", node="default")
    assert cli_main(["retry", "acme"]) == 0
    assert cli_main(["adopt", "acme"]) == 0
    actor = f"cli:{getpass.getuser()}"
    assert who(db, "acme")[1:] == [
        ("tenant.retry_requested", actor, "cli"),
        ("operator.retry", actor, "cli"),
        ("tenant.adopted", actor, "cli"),
        ("operator.adopt", actor, "cli"),
    ]


def test_a_hook_called_from_python_names_its_caller(db, queue):
    create_tenant("acme", "A")
    request_provisioning("acme", actor="billing-sync")
    assert who(db, "acme") == [
        ("tenant.created", "python", "python"),
        ("operator.created", "python", "python"),
        ("operator.retry", "billing-sync", "python"),  # pending: only re-queued
    ]


# -- reading over HTTP ------------------------------------------------------------------------


def test_a_tenants_events_come_as_cloudevents_in_pages(db, api, queue):
    assert api.post("/operator/tenants", json={"tenant_id": "acme", "name": "A"}).status_code
    for state in ("provisioning", "retrying", "provisioning", "provisioned"):
        db.execute("UPDATE tenants SET influxdb_state = %s WHERE tenant_id = 'acme'", (state,))

    first = api.get("/operator/tenants/acme/events", params={"limit": 4})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["tenant_id"], body["next"], body["more"]) == ("acme", 4, True)
    rest = api.get("/operator/tenants/acme/events", params={"after": body["next"]}).json()
    assert (rest["next"], rest["more"]) == (6, False)
    events = body["events"] + rest["events"]
    assert [e["tenantseq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e["type"].removeprefix("io.tenant-provisioner.") for e in events] == [
        "tenant.created",
        "operator.created",
        "tenant.provisioning_started",
        "tenant.retry_scheduled",
        "tenant.provisioning_started",
        "tenant.provisioned",
    ]
    for event in events:
        assert_cloudevent(event)
    assert events[1]["actor"] == "operator-token" and events[1]["route"] == "http"
    assert "actor" not in events[-1] and events[-1]["route"] == "worker"  # absent, not null
    assert events[-1]["data"]["state"] == "provisioned"
    # polling at the end: an empty page that keeps the cursor
    empty = api.get("/operator/tenants/acme/events", params={"after": 6}).json()
    assert (empty["events"], empty["next"], empty["more"]) == ([], 6, False)
    # the hook gives the same
    assert tenant_events("acme", 4)["events"] == rest["events"]


def assert_cloudevent(event: dict[str, Any]) -> None:
    required = {"specversion", "id", "source", "type", "time", "datacontenttype", "data"}
    optional = {"subject", "tenantseq", "actor", "route"}
    assert required <= set(event) <= required | optional, event
    assert event["specversion"] == "1.0"
    assert re.fullmatch(r"\d+-\d+", event["id"])
    assert event["source"] == "/tenant-provisioner"
    assert event["type"].startswith("io.tenant-provisioner.")
    assert event["datacontenttype"] == "application/json"
    assert RFC3339.fullmatch(event["time"]) and datetime.fromisoformat(event["time"])
    assert isinstance(event["data"], dict)
    for name in set(event) - required:
        assert CE_EXTENSION.fullmatch(name), name  # CloudEvents attribute naming
    assert isinstance(event.get("tenantseq", 0), int)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"after": "abc"}, "after must be"),
        ({"after": "-1"}, "after must be"),
        ({"after": "1.5"}, "after must be"),
        ({"after": "99999999999"}, "after must be"),
        ({"limit": "0"}, "limit must be"),
        ({"limit": "501"}, "limit must be"),
        ({"limit": "ten"}, "limit must be"),
        ({"after": "2"}, "at most the tenant's last tenantseq (1)"),  # ahead of its events
    ],
)
def test_a_bad_cursor_or_limit_answers_400_with_the_error_shape(db, api, params, message):
    insert(db, "acme")
    answer = api.get("/operator/tenants/acme/events", params=params)
    assert answer.status_code == 400
    assert list(answer.json()) == ["detail"] and message in answer.json()["detail"]
    with pytest.raises(InvalidCursor):
        tenant_events("acme", params.get("after"), params.get("limit"))


def test_unknown_tenants_are_404_and_deleted_ones_keep_their_events(db, api):
    assert api.get("/operator/tenants/nobody/events").status_code == 404
    assert api.get("/operator/tenants/bad%20id/events").status_code == 404
    insert(db, "gone")
    db.execute("DELETE FROM tenants WHERE tenant_id = 'gone'")
    answer = api.get("/operator/tenants/gone/events")
    assert answer.status_code == 200
    types = [e["type"] for e in answer.json()["events"]]
    assert types == [
        "io.tenant-provisioner.tenant.created",
        "io.tenant-provisioner.tenant.deprovisioned",
    ]
    assert (
        api.get("/operator/tenants/gone/events", headers={"Authorization": ""}).status_code == 401
    )


# -- the CLI ----------------------------------------------------------------------------------


def test_tenantctl_events_and_audit(db, queue, capsys):
    create_tenant("acme", HOSTILE[:20], actor=HOSTILE)
    db.execute("UPDATE tenants SET influxdb_state = 'failed' WHERE tenant_id = 'acme'")
    capsys.readouterr()

    assert cli_main(["events", "acme", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["tenantseq"] for e in listed] == [1, 2, 3]
    assert cli_main(["--json", "audit", "--actor", HOSTILE]) == 0
    audited = json.loads(capsys.readouterr().out)
    assert [(e["subject"], e["actor"]) for e in audited] == [("acme", HOSTILE)]

    assert cli_main(["events", "acme"]) == 0
    table = capsys.readouterr().out
    assert "tenant.failed" in table and "<script>" in table
    assert "\u202e" not in table  # a terminal never obeys what a name or actor says
    assert cli_main(["audit", "--tenant", "acme"]) == 0
    assert "operator.created" in capsys.readouterr().out
    assert cli_main(["events", "nobody"]) == 3
    assert cli_main(["events", "acme", "--after", "x"]) == 2


# -- the console ------------------------------------------------------------------------------


@pytest.fixture
def console(db: Any) -> Iterator[TestClient]:
    with TestClient(create_app(), follow_redirects=False) as client:
        assert console_sign_in(client, CONSOLE, OPERATOR_TOKEN, next=CONSOLE).status_code == 303
        yield client


def test_a_console_sign_in_and_its_actions_name_the_session(db, console, queue):
    insert(db, "acme", state="failed", error_reason="unauthorized")
    page = console.get(f"{CONSOLE}/tenants/acme")
    answer = console.post(
        f"{CONSOLE}/tenants/acme/retry", data={"csrf_token": form_token(page.text)}
    )
    assert answer.status_code == 303

    assert who(db, None) == [("operator.sign_in", "operator-token", "console")]
    assert who(db, "acme")[-2:] == [
        ("tenant.retry_requested", "operator-token", "console"),
        ("operator.retry", "operator-token", "console"),
    ]


def test_a_mounted_console_names_the_uis_operator(db, queue):
    def require_operator_admin() -> Admin:
        return Admin(1, "dora", "dora@example.com")

    app = FastAPI()
    app.include_router(console_router(require_operator_admin, b"k" * 32))
    insert(db, "acme", state="failed", error_reason="unauthorized")
    with TestClient(app, follow_redirects=False) as ui:
        page = ui.get(f"{CONSOLE}/tenants/acme")
        answer = ui.post(
            f"{CONSOLE}/tenants/acme/retry", data={"csrf_token": form_token(page.text)}
        )
    assert answer.status_code == 303
    assert who(db, "acme")[-1] == ("operator.retry", "dora", "console")


def test_the_tenant_page_shows_its_timeline_newest_first_escaped(db, console, queue):
    create_tenant("acme", "Acme", actor=HOSTILE)
    for state in ("provisioning", "retrying"):
        db.execute("UPDATE tenants SET influxdb_state = %s WHERE tenant_id = 'acme'", (state,))

    page = console.get(f"{CONSOLE}/tenants/acme")

    assert page.status_code == 200
    html = page.text
    timeline = html[html.index('id="timeline"') :]
    seqs = [int(s) for s in re.findall(r'data-seq="(\d+)"', timeline)]
    assert seqs == [4, 3, 2, 1]
    assert "tenant.retry_scheduled" in timeline
    # The one script is the console's own (the live timeline), the hostile one is text
    assert re.findall(r"<script>(.*?)</script>", html, re.S) == [TIMELINE_JS]
    assert "&lt;script&gt;" in timeline
    assert "\u202e" not in html
    assert "script-src 'sha256-" in page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


def test_a_timeline_asked_past_the_tenants_events_is_a_400_not_a_broken_stream(db, console, queue):
    # Given acme with one event, and a page that followed an earlier acme's longer timeline
    create_tenant("acme", "Acme", actor="alice")
    for cursor in ({"after": "999"}, {}):
        headers = {} if cursor else {"Last-Event-ID": "999"}
        # Then its EventSource gets a 400 naming the rule (and stops reconnecting)
        answer = console.get(f"{CONSOLE}/tenants/acme/timeline", params=cursor, headers=headers)
        assert answer.status_code == 400
        assert "tenantseq" in answer.json()["detail"]


def test_timelines_and_event_streams_share_one_budget_per_process(db, console, queue, monkeypatch):
    # Given a process that serves at most one stream, and acme's timeline open in a browser
    auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    monkeypatch.setattr(stream, "MAX_STREAMS", 1)
    create_tenant("acme", "Acme", actor="alice")
    with console.stream("GET", f"{CONSOLE}/tenants/acme/timeline") as first:
        assert first.status_code == 200
        body = first.iter_bytes()  # kept: a dropped iterator closes the stream
        assert next(body).startswith(b"retry:")  # the stream goes on in the app's thread
        wait_for(lambda: stream._open_streams == 1, 10, 0.01, "the timeline to be counted")

        # Then another timeline, and an event stream, are refused for now (503, Retry-After)
        for path, headers in (
            (f"{CONSOLE}/tenants/acme/timeline", {}),
            ("/operator/events", {"Accept": "text/event-stream", **auth}),
        ):
            refused = console.get(path, headers=headers)
            assert refused.status_code == 503, path
            assert refused.headers["Retry-After"] == "5"


def test_an_open_timeline_is_checked_again_so_a_sign_out_ends_it(db, console, queue, monkeypatch):
    # Given acme's timeline open in a browser, rechecked every 0.5 s, kept alive every 0.1 s
    monkeypatch.setattr(stream, "KEEPALIVE_SECONDS", 0.1)
    monkeypatch.setattr(live, "RECHECK_SECONDS", 0.5)
    create_tenant("acme", "Acme", actor="alice")
    timeline = f"{CONSOLE}/tenants/acme/timeline"
    # (unused for 10 minutes: the timeline's own requests are no use of it)
    db.execute("UPDATE console_sessions SET last_seen_at = last_seen_at - interval '10 minutes'")
    (seen,) = db.execute("SELECT last_seen_at FROM console_sessions").fetchone()
    with console.stream("GET", timeline) as ended:
        assert b"event: recheck" in b"".join(ended.iter_bytes())  # it ended by itself
    assert db.execute("SELECT last_seen_at FROM console_sessions").fetchone() == (seen,)
    with console.stream("GET", timeline) as opened:
        assert opened.status_code == 200
        chunks = opened.iter_bytes()
        assert next(chunks).startswith(b"retry:")
        # When the operator signs out in another tab
        page = console.get(CONSOLE)
        signed_out = console.post(f"{CONSOLE}/sign-out", data={"csrf_token": form_token(page.text)})
        assert signed_out.status_code == 303

        # Then the stream ends by itself (its event came before), its slot given back at once
        assert b"operator.created" in b"".join(chunks)
    wait_for(lambda: stream._open_streams == 0, 5, 0.01, "the timeline's slot to come back")
    # and the browser's reconnect is sent to the sign-in page, not given the stream
    again = console.get(timeline, headers={"Last-Event-ID": "1"})
    assert again.status_code == 303 and "sign-in" in again.headers["location"]


def test_an_open_timeline_is_rechecked_on_time_however_busy_the_other_tenants_are(
    db, console, queue, monkeypatch
):
    # Given quiet's timeline open, rechecked every 0.5 s, kept alive every 0.3 s, while other
    # tenants are made every 0.05 s, for 3 s at most (each wakes the stream; none is quiet's)
    monkeypatch.setattr(stream, "KEEPALIVE_SECONDS", 0.3)
    monkeypatch.setattr(live, "RECHECK_SECONDS", 0.5)
    create_tenant("quiet", "Quiet", actor="alice")
    busy_until, ended = time.monotonic() + 3, threading.Event()

    def others() -> None:
        for n in range(100):
            if ended.is_set() or time.monotonic() > busy_until:
                return
            create_tenant(f"other-{n}", "Other", actor="bob")
            time.sleep(0.05)

    feeder = threading.Thread(target=others)
    feeder.start()
    try:
        started = time.monotonic()
        with console.stream("GET", f"{CONSOLE}/tenants/quiet/timeline") as opened:
            body = b"".join(opened.iter_bytes())
        took = time.monotonic() - started
    finally:
        ended.set()
        feeder.join()

    # Then it ended for its recheck within a keepalive of it, not once the others went quiet
    # (a sign-out would otherwise hold the stream as long as the system is busy)
    assert b"event: recheck" in body
    assert took < 2, f"took {took:.1f}s"


def test_a_burst_of_stream_requests_cannot_pass_the_budget_before_any_body_starts(monkeypatch):
    # Given a process that serves at most two streams
    base = stream._open_streams  # (none, unless a test before this one left one open)
    monkeypatch.setattr(stream, "MAX_STREAMS", base + 2)
    started: list[str] = []

    async def body(name: str, slot: stream.StreamSlot) -> AsyncIterator[bytes]:
        try:
            started.append(name)
            yield b"x"
        finally:
            slot.release()

    # When three requests are answered before any of their bodies has run (a burst: each
    # body starts only once its answer is on its way)
    first = stream.reserve(lambda slot: body("first", slot))
    second = stream.reserve(lambda slot: body("second", slot))

    # Then the third is refused at once, though nothing has streamed yet
    with pytest.raises(stream.TooManyStreams):
        stream.reserve(lambda slot: body("third", slot))
    assert started == []

    # And a slot comes back once: when its body ends, or - a client gone before the first
    # byte - when the body that never ran is dropped
    async def run_to_the_end(ran: AsyncIterator[bytes]) -> None:
        assert [chunk async for chunk in ran] == [b"x"]

    asyncio.run(run_to_the_end(first))
    assert stream._open_streams == base + 1
    del first
    gc.collect()
    assert stream._open_streams == base + 1  # not given back twice
    del second
    gc.collect()
    assert stream._open_streams == base
    assert started == ["first"]


def test_a_stream_whose_start_fails_gives_its_slot_back_at_once(monkeypatch):
    # Given a stream whose start fails (the event reader cannot be started)
    base = stream._open_streams

    def no_reader() -> object:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(stream, "get_hub", no_reader)
    chosen = stream.Selection((0, 0), None, frozenset())
    body = stream.reserve(lambda slot: stream.event_stream(chosen, slot))
    assert stream._open_streams == base + 1

    async def first_chunk() -> None:
        await anext(body)

    # When its body runs, then it fails, and its slot is back at once (not when, some time
    # later, a collection on some thread finds the body)
    with pytest.raises(RuntimeError):
        asyncio.run(first_chunk())
    assert stream._open_streams == base


def test_a_filtered_stream_s_keepalive_comes_on_a_busy_log_with_its_id_past_what_it_skipped(
    db, monkeypatch
):
    # Given a stream of acme's events only, from now on, kept alive every 0.3 s
    monkeypatch.setattr(stream, "KEEPALIVE_SECONDS", 0.3)
    chosen = stream.selection(None, None, "acme", [])
    body = stream.reserve(lambda slot: stream.event_stream(chosen, slot))
    # When other tenants' events come every 50 ms: the stream is woken far more often than
    # its keepalive is due, and sends none of them
    stop = threading.Event()

    def others() -> None:
        with psycopg.connect(db.info.dsn, autocommit=True) as writer:
            for number in range(1000):
                writer.execute(
                    "INSERT INTO tenants (tenant_id, name) VALUES (%s, 'o')", (f"o{number}",)
                )
                if stop.wait(0.05):
                    return

    async def ids_sent() -> list[str]:
        ids = re.findall(r"^id: (\S+)$", (await anext(body)).decode(), re.MULTILINE)
        writing.start()
        while len(ids) < 2:
            ids += re.findall(r"^id: (\S+)$", (await anext(body)).decode(), re.MULTILINE)
        await body.aclose()  # type: ignore[attr-defined]
        return ids

    writing = threading.Thread(target=others)
    try:
        start, moved = asyncio.run(asyncio.wait_for(ids_sent(), 20))
    finally:
        stop.set()
        writing.join(10)

    # Then a keepalive came all the same, its id past the events skipped by then: a reconnect
    # from it reads none of those again, from the start it reads only others' events
    def after(cursor: str) -> list[str]:
        page = stream.events_page(stream.selection(cursor, None, None, []))
        return [event["subject"] for event in page["events"]]

    skipped, since = after(start), after(moved)
    assert skipped and "acme" not in skipped
    assert since == skipped[len(skipped) - len(since) :]
    assert len(since) < len(skipped)


def test_a_slot_given_back_by_a_collection_inside_the_budgets_lock_does_not_deadlock():
    # Given a slot whose body is collected - its finalizer gives the slot back - while the
    # same thread holds the budget's lock (a collection can run at any allocation, e.g. the
    # TooManyStreams raised inside StreamSlot.__init__)
    base = stream._open_streams
    slot = stream.StreamSlot()

    def collected_inside_the_lock() -> None:
        with stream._count_lock:
            slot.release()

    # Then it is given back, and the thread goes on
    thread = threading.Thread(target=collected_inside_the_lock, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "deadlocked on the budget's lock"
    assert stream._open_streams == base


def test_the_audit_page_lists_operator_actions_filtered_by_actor_and_tenant(db, console, queue):
    create_tenant("acme", "A", actor="alice")
    create_tenant("globex", "G", actor=HOSTILE)
    request_provisioning("acme", actor="bob")

    everything = console.get(f"{CONSOLE}/audit")
    assert everything.status_code == 200
    assert f'href="{CONSOLE}/audit"' in console.get(CONSOLE).text  # in the navigation
    rows = re.findall(r'<tr data-type="([^"]+)" data-actor="([^"]*)"', everything.text)
    assert rows == [
        ("operator.retry", "bob"),
        ("operator.created", "&lt;script&gt;alert(1)&lt;/script&gt;\\u202e"),
        ("operator.created", "alice"),
        ("operator.sign_in", "operator-token"),
    ]
    assert "<script>" not in everything.text

    by_alice = console.get(f"{CONSOLE}/audit", params={"actor": "alice"}).text
    assert re.findall(r'<tr data-type="([^"]+)"', by_alice) == ["operator.created"]
    on_acme = console.get(f"{CONSOLE}/audit", params={"tenant": "acme"}).text
    assert re.findall(r'<tr data-type="([^"]+)"', on_acme) == ["operator.retry", "operator.created"]
    bad = console.get(f"{CONSOLE}/audit", params={"tenant": "no such!"})
    assert bad.status_code == 422 and "tenant:" in bad.text
    assert console.get(f"{CONSOLE}/audit", params={"before": "x"}).status_code == 422
    # An actor Postgres cannot hold (NUL) or longer than any stored one: refused, not a 500
    for actor in ("\x00", "a\x00b", "x" * 300):
        assert console.get(f"{CONSOLE}/audit", params={"actor": actor}).status_code == 422
    with pytest.raises(InvalidCursor):
        audit_trail(actor="\x00")


def test_the_audit_page_needs_a_session(db):
    with TestClient(create_app(), follow_redirects=False) as anonymous:
        assert anonymous.get(f"{CONSOLE}/audit").status_code == 303
