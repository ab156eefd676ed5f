"""The location client against a real API process over HTTP: a writer finds each tenant's
server, never a default one, and keeps its last map while the service is away."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from locations_client import (
    UNKNOWN,
    AsyncLocationClient,
    Location,
    LocationClient,
    LocationServiceError,
    NotReady,
    Stale,
)
from locations_client.map import NEXT_SINCE_HEADER
from tests.conftest import (
    INFLUX_TOKEN,
    LOCATIONS_TOKEN,
    new_tenant_id,
    start_api,
    stop_process,
    wait_for,
    wait_for_state,
)
from worker import locations
from worker.db import get_engine


@pytest.fixture
def service(tmp_path: Path, db: Any) -> Any:
    process, base = start_api(tmp_path / "api.log")
    yield base
    stop_process(process)


def write_point(where: Location, value: int) -> None:
    answer = requests.post(
        f"{where.url}/api/v3/write_lp",
        params={"db": where.database, "precision": "ns"},
        data=f"telemetry,device=d1 value={value}i",
        headers={"Authorization": f"Bearer {INFLUX_TOKEN}"},
        timeout=5,
    )
    assert answer.status_code == 204, answer.text


def test_a_writer_finds_the_tenants_server_once_provisioned_and_loses_it_on_deletion(
    api, db, influx, worker_process, service
):
    # Given a writer's client, and a tenant being created
    client = LocationClient(service, LOCATIONS_TOKEN, refresh_seconds=0.1).start()
    tenant_id = new_tenant_id("loc")
    assert client.resolve(tenant_id) is UNKNOWN
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Located"})

    # When it is provisioned, the client learns where within a refresh
    wait_for_state(db, tenant_id, "provisioned")
    where = wait_for(
        lambda: isinstance(client.resolve(tenant_id), Location) and client.resolve(tenant_id),
        what="a location",
    )
    assert (where.url, where.database) == (influx.url, f"telemetry_{tenant_id}")
    write_point(where, 1)
    assert len(influx.rows(where.database, "telemetry")) == 1

    # When it is deleted, the client stops giving its server before the database goes
    api.delete(f"/operator/tenants/{tenant_id}")
    wait_for(lambda: isinstance(client.resolve(tenant_id), NotReady), what="not ready")
    wait_for(lambda: client.resolve(tenant_id) is UNKNOWN, what="forgotten")
    assert f"telemetry_{tenant_id}" not in influx.databases()
    client.close()


def test_with_the_service_down_the_client_keeps_its_map_and_says_how_stale(db, tmp_path, service):
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node) "
        "VALUES ('kept', 'n', 'provisioned', 'default')"
    )
    process, base = start_api(tmp_path / "second-api.log")
    client = LocationClient(base, LOCATIONS_TOKEN, refresh_seconds=0.1).start()
    assert isinstance(client.resolve("kept"), Location)

    # When the service goes away
    stop_process(process)
    wait_for(lambda: client.last_error is not None, what="a failed refresh")

    # Then, once the map is older than the deletion wait (the service's max_staleness_seconds,
    # 0.5 s here), a lookup fails closed: a deletion may have been published meanwhile, and
    # a write would make the database again. The map is kept, for reads that ask for it.
    stale = wait_for(
        lambda: isinstance(client.resolve("kept"), Stale) and client.resolve("kept"),
        what="the lookup to fail closed",
    )
    assert stale.tenant_id == "kept" and stale.staleness > 0.5
    assert client.staleness > 0.5
    assert isinstance(client.resolve("kept", stale_ok=True), Location)
    assert "unreachable" in (client.last_error or "")
    with pytest.raises(LocationServiceError):
        client.refresh()
    client.close()


def test_a_client_behind_pruned_tombstones_reloads_the_whole_map(db, service):
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node) VALUES "
        "('stays', 'n', 'provisioned', 'default'), ('stays-too', 'n', 'provisioned', "
        "'default'), ('goes', 'n', 'provisioned', 'default')"
    )
    # (a page a tenant: the pages of the reload start below the pruned tombstone's version)
    client = LocationClient(service, LOCATIONS_TOKEN, refresh_seconds=3600, page_size=1).start()
    assert isinstance(client.resolve("goes"), Location)

    # When "goes" is deleted and its tombstone pruned before the client looked again
    db.execute("DELETE FROM tenants WHERE tenant_id = 'goes'")
    requests.get(
        f"{service}/locations", headers={"Authorization": f"Bearer {LOCATIONS_TOKEN}"}, timeout=5
    )  # publishes the tombstone
    with get_engine().connect() as conn:
        now = conn.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
        assert locations.prune_tombstones(conn, now, 100) == 1

    # Then its next refresh answers 410, and the whole map is loaded again, page by page
    client.refresh()
    assert client.resolve("goes") is UNKNOWN
    assert isinstance(client.resolve("stays"), Location)
    assert isinstance(client.resolve("stays-too"), Location)
    # and the refresh after it asks for changes: a delta, not another whole load
    assert client.refresh() == 0
    assert client.last_error is None
    client.close()


GOOD_PAGE = {
    "locations": [
        {
            "tenant_id": "a",
            "database": "telemetry_a",
            "version": 1,
            "ready": True,
            "state": "provisioned",
            "node": "n1",
            "url": "http://n1",
            "incarnation": "i",
            "deleted": False,
        }
    ],
    "next_since": 1,
    "more": False,
    "version": 1,
    "nodes": [{"name": "n1", "url": "http://n1"}],
    "database_prefix": "telemetry_",
    "epoch": "e1",
    "refresh_seconds": 0.1,
    "max_staleness_seconds": 1,
}


@pytest.mark.parametrize("hint", ["\u00b2", "9" * 5000, "-1", ""])
def test_a_garbled_next_page_hint_is_ignored_and_the_body_read(scripted, hint):
    # Given a service (or a proxy) whose next-page header is no version: "²" is a digit to
    # str.isdigit, 5000 digits too many for int()
    scripted.headers[NEXT_SINCE_HEADER] = hint
    scripted.answer(200, json.dumps(GOOD_PAGE))

    # Then the client loads the map from the page's body, as without a hint
    client = LocationClient(scripted.url, LOCATIONS_TOKEN, refresh_seconds=60).start()
    assert isinstance(client.resolve("a"), Location)
    assert client.version == 1
    client.close()


@pytest.mark.parametrize(
    "broken",
    [
        {"next_since": "abc"},
        {"next_since": 0, "more": True},  # no progress: would loop for ever
        {"locations": [{"tenant_id": "a"}]},
        {"locations": [{**GOOD_PAGE["locations"][0], "deleted": "no"}]},
        {"nodes": [{"name": 1}]},
        {"refresh_seconds": "fast"},
        {"refresh_seconds": 10**400},  # beyond any float
        {"max_staleness_seconds": math.nan},  # (Python's json reads NaN)
        {"epoch": None},
    ],
    ids=[
        "since-text",
        "no-progress",
        "location-fields",
        "deleted-text",
        "node-name",
        "refresh-text",
        "refresh-huge",
        "staleness-nan",
        "epoch",
    ],
)
def test_a_malformed_page_changes_nothing_and_the_refresh_thread_lives_on(scripted, broken):
    # Given a client holding a map, refreshing every 0.1 s in its thread
    scripted.answer(200, json.dumps(GOOD_PAGE))
    client = LocationClient(scripted.url, LOCATIONS_TOKEN, refresh_seconds=0.1).start()
    held = client.resolve("a")
    assert isinstance(held, Location)

    # When the service answers a malformed page
    scripted.answer(
        200,
        json.dumps(
            {
                **GOOD_PAGE,
                **broken,
                "next_since": broken.get("next_since", 2),
                "more": broken.get("more", False),
            }
        ),
    )
    wait_for(lambda: client.last_error is not None, what="the refresh to fail")

    # Then nothing held changed, and once the service answers well again, refreshes resume
    assert client.resolve("a", stale_ok=True) == held and client.version == 1
    fixed = {
        **GOOD_PAGE,
        "next_since": 2,
        "locations": [{**GOOD_PAGE["locations"][0], "tenant_id": "b", "version": 2}],
    }
    scripted.answer(200, json.dumps(fixed))
    wait_for(lambda: isinstance(client.resolve("b"), Location), what="the thread still alive")
    client.close()


def test_a_lookup_fails_closed_while_the_map_is_older_than_the_deletion_wait(scripted):
    # Given a client whose service says deletions wait 0.3 s once published
    page = {**GOOD_PAGE, "max_staleness_seconds": 0.3}
    scripted.answer(200, json.dumps(page))
    client = LocationClient(scripted.url, LOCATIONS_TOKEN, refresh_seconds=0.05).start()
    assert isinstance(client.resolve("a"), Location)

    # When its refreshes fail for longer than that
    scripted.answer(503, "busy")
    wait_for(lambda: client.last_error is not None, what="a failed refresh")

    # Then every lookup answers Stale - a known tenant and an unknown one alike - while the
    # map it holds is unchanged
    wait_for(lambda: isinstance(client.resolve("a"), Stale), what="the lookup to fail closed")
    assert isinstance(client.resolve("nobody"), Stale)
    assert isinstance(client.resolve("a", stale_ok=True), Location)
    assert client.resolve("nobody", stale_ok=True) is UNKNOWN

    # And once a refresh succeeds again, lookups answer from the map again
    scripted.answer(200, json.dumps({**page, "next_since": 1, "locations": []}))
    wait_for(lambda: isinstance(client.resolve("a"), Location), what="the map fresh again")
    client.close()


def test_a_whole_load_longer_than_the_deletion_wait_is_fresh_once_loaded(scripted):
    # Given a service whose deletions wait 0.4 s, and a whole map in two pages, the first
    # answered after 0.6 s (a million locations take seconds)
    def page(tenant_id: str, since: int, more: bool) -> tuple[int, str]:
        item = {**GOOD_PAGE["locations"][0], "tenant_id": tenant_id}
        body = {**GOOD_PAGE, "locations": [item], "next_since": since, "more": more}
        return 200, json.dumps({**body, "max_staleness_seconds": 0.4})

    scripted.answer_next(page("a", 1, True), page("b", 2, False))
    scripted.next_delays = [0.6, 0.0]
    client = LocationClient(scripted.url, LOCATIONS_TOKEN, refresh_seconds=3600, page_size=1)

    # When it is loaded
    client.refresh()

    # Then it answers from the map: it holds every change visible when its last page was
    # asked for, a moment ago - not only those of when the load began, 0.6 s ago
    assert isinstance(client.resolve("a"), Location)
    assert isinstance(client.resolve("b"), Location)
    assert client.staleness < 0.4
    client.close()


def test_a_server_that_leaves_the_nodes_file_and_returns_is_served_again(scripted):
    # Given a client holding a tenant on n1
    scripted.answer(200, json.dumps(GOOD_PAGE))
    client = LocationClient(scripted.url, LOCATIONS_TOKEN, refresh_seconds=3600).start()
    assert isinstance(client.resolve("a"), Location)

    # When n1 leaves the nodes file (the service now says a is not ready there)...
    gone = {
        **GOOD_PAGE,
        "nodes": [],
        "locations": [{**GOOD_PAGE["locations"][0], "ready": False, "node": None, "url": None}],
    }
    scripted.answer(200, json.dumps(gone))
    client.refresh()
    assert isinstance(client.resolve("a"), NotReady)

    # ... and comes back with no change of the tenant's own: the whole map is loaded again
    scripted.answer(200, json.dumps(GOOD_PAGE))
    client.refresh()
    assert isinstance(client.resolve("a"), Location)
    client.close()


def test_a_whole_load_cut_short_is_loaded_whole_again_not_patched(scripted):
    # Given a client holding a and b on n1 at http://old, loaded in two pages
    def page(ids: list[str], url: str, since: int, more: bool) -> tuple[int, str]:
        items = [{**GOOD_PAGE["locations"][0], "tenant_id": i} for i in ids]
        nodes = [{"name": "n1", "url": url}]
        body = {**GOOD_PAGE, "locations": items, "nodes": nodes, "next_since": since, "more": more}
        return 200, json.dumps(body)

    scripted.answer_next(page(["a"], "http://old", 1, True), page(["b"], "http://old", 2, False))
    client = LocationClient(scripted.url, LOCATIONS_TOKEN, refresh_seconds=3600, page_size=1)
    client.refresh()
    assert client.resolve("b").url == "http://old"  # type: ignore[union-attr]

    # When n1 moves to http://new, and the whole load it causes fails at its second page
    scripted.answer_next(page([], "http://new", 3, False), page(["a"], "http://new", 1, True))
    scripted.answer_next((503, "busy"))
    with pytest.raises(LocationServiceError):
        client.refresh()
    assert client.resolve("b", stale_ok=True).url == "http://old"  # type: ignore[union-attr]

    # Then the next refresh loads it whole again (from 0), not the changes since the old map
    scripted.answer_next(page(["a"], "http://new", 1, True), page(["b"], "http://new", 3, False))
    client.refresh()
    assert "since=0&" in scripted.requests[-2][1]
    assert {client.resolve(i).url for i in "ab"} == {"http://new"}  # type: ignore[union-attr]
    client.close()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, "not json"),
        (200, '{"locations": 1}'),
        (500, "oops"),
        (401, '{"detail": "no"}'),
        (302, ""),
    ],
)
def test_garbage_from_the_service_changes_nothing_and_says_what(scripted, status, body):
    scripted.answer(status, body)
    client = LocationClient(scripted.url, LOCATIONS_TOKEN)
    with pytest.raises(LocationServiceError) as raised:
        client.refresh()
    assert client.version == 0
    assert client.resolve("anyone") is UNKNOWN
    assert LOCATIONS_TOKEN not in str(raised.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant_id", 7),
        ("deleted", "no"),
        ("ready", 1),
        ("state", ["provisioned"]),
        ("node", {"name": "n1"}),
        ("incarnation", 1.5),
    ],
)
def test_a_location_with_a_field_of_another_type_changes_nothing_and_names_it(
    scripted, field, value
):
    # Given a page whose second location has one field of the wrong type
    second = {**GOOD_PAGE["locations"][0], "tenant_id": "b", field: value}  # type: ignore[dict-item]
    body = {**GOOD_PAGE, "locations": [*GOOD_PAGE["locations"], second]}  # type: ignore[list-item]
    scripted.answer(200, json.dumps(body))
    client = LocationClient(scripted.url, LOCATIONS_TOKEN)

    # When the client loads it, then nothing of the page is taken, and the field is named
    with pytest.raises(LocationServiceError, match=f"garbage: {field} is missing or not of"):
        client.refresh()
    assert client.version == 0
    assert client.resolve("a") is UNKNOWN


def test_a_location_that_is_not_an_object_is_named(scripted):
    body = {**GOOD_PAGE, "locations": [*GOOD_PAGE["locations"], ["b"]]}  # type: ignore[list-item]
    scripted.answer(200, json.dumps(body))
    client = LocationClient(scripted.url, LOCATIONS_TOKEN)
    with pytest.raises(LocationServiceError, match="garbage: a location is missing or not of"):
        client.refresh()
    assert client.resolve("a") is UNKNOWN


def test_a_client_started_without_waiting_loads_its_map_at_once_not_an_interval_later(scripted):
    # Given a service that answers, and clients that refresh once an hour, started without
    # waiting for their first load (as a writer that must start while the service is away)
    scripted.answer(200, json.dumps({**GOOD_PAGE, "refresh_seconds": 3600}))
    client = LocationClient(scripted.url, LOCATIONS_TOKEN, refresh_seconds=3600).start(wait=False)

    # Then each knows the tenants within moments, not an hour later
    try:
        wait_for(lambda: isinstance(client.resolve("a"), Location), 5, 0.02, "the first load")
    finally:
        client.close()

    async def story() -> None:
        aclient = await AsyncLocationClient(
            scripted.url, LOCATIONS_TOKEN, refresh_seconds=3600
        ).start(wait=False)
        try:
            for _ in range(250):
                if isinstance(aclient.resolve("a"), Location):
                    return
                await asyncio.sleep(0.02)
            raise AssertionError("the async client did not load its map within 5 s")
        finally:
            await aclient.close()

    asyncio.run(story())


def test_a_token_read_with_its_newline_is_sent_without_it(scripted):
    scripted.answer(200, json.dumps(GOOD_PAGE))
    client = LocationClient(scripted.url, f"{LOCATIONS_TOKEN}\n").start()
    assert isinstance(client.resolve("a"), Location)
    assert scripted.requests[0][2]["Authorization"] == f"Bearer {LOCATIONS_TOKEN}"
    client.close()


@pytest.mark.parametrize("token", [f"{LOCATIONS_TOKEN[:16]}\n{LOCATIONS_TOKEN[16:]}", "", " "])
def test_a_token_no_header_can_carry_is_refused_at_once_and_never_shown(token):
    # (urllib's own error would quote the whole header, token and all, in every refresh's
    # warning and in last_error)
    with pytest.raises(ValueError, match="token must be printable ASCII") as raised:
        LocationClient("http://127.0.0.1:9", token)
    assert LOCATIONS_TOKEN[:16] not in str(raised.value)


def test_a_url_that_is_not_http_is_refused():
    with pytest.raises(ValueError, match="http"):
        LocationClient("file:///etc/passwd", LOCATIONS_TOKEN)


def test_the_async_client_resolves_from_memory_and_refreshes_in_a_task(db, service):
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node) "
        "VALUES ('early', 'n', 'provisioned', 'default')"
    )

    async def story() -> None:
        async with AsyncLocationClient(service, LOCATIONS_TOKEN, refresh_seconds=0.1) as client:
            assert isinstance(client.resolve("early"), Location)
            assert client.resolve("late") is UNKNOWN
            db.execute(
                "INSERT INTO tenants (tenant_id, name, influxdb_state) VALUES ('late', 'n', "
                "'pending')"
            )
            for _ in range(50):
                if isinstance(client.resolve("late"), NotReady):
                    break
                await asyncio.sleep(0.1)
            assert client.resolve("late") == NotReady("late", "pending")

    asyncio.run(story())


def test_a_writer_writing_on_through_a_deletion_does_not_bring_the_database_back(
    api, db, influx, custom_worker, service
):
    # Given a writer that writes to a tenant every 20 ms while its client says it is ready,
    # refreshing every 0.5 s, and deletions that wait 2 s once published
    custom_worker(LOCATIONS_MAX_STALENESS_SECONDS="2")
    tenant_id = new_tenant_id("loc")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Busy"})
    wait_for_state(db, tenant_id, "provisioned")
    client = LocationClient(service, LOCATIONS_TOKEN, refresh_seconds=0.5).start()
    stop, writes = threading.Event(), []

    def keep_writing() -> None:
        while not stop.is_set():
            where = client.resolve(tenant_id)
            if isinstance(where, Location):
                write_point(where, len(writes))
                writes.append(time.monotonic())
            time.sleep(0.02)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    wait_for(lambda: len(writes) > 5, what="writes")

    # When the tenant is deleted
    deleted_at = time.monotonic()
    api.delete(f"/operator/tenants/{tenant_id}")
    wait_for(
        lambda: (
            db.execute(
                "SELECT count(*) FROM tenants WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()[0]
            == 0
        ),
        what="the tenant gone",
    )
    time.sleep(1.0)  # any late write would have re-created it by now
    stop.set()
    writer.join()

    # Then the writer stopped within a refresh, and its database did not come back
    assert f"telemetry_{tenant_id}" not in influx.databases()
    assert writes[-1] - deleted_at < 1.0
    assert time.monotonic() - deleted_at >= 2.0  # the deletion outwaited the client
    client.close()
