"""The location map: versions in the order changes became visible, ``/locations`` for the data
plane (its own credential, 400/401/404/410), and a deletion that outwaits the clients."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, text

from api_hooks.app import create_app
from harness import databases
from tests.conftest import LOCATIONS_TOKEN, OPERATOR_TOKEN, restore_copy, tenant_row
from tests.fast.conftest import T0, World, insert
from worker import locations
from worker.db import get_engine
from worker.runs import Delivery
from worker.states import RunResult

AUTH = {"Authorization": f"Bearer {LOCATIONS_TOKEN}"}


@pytest.fixture
def service(db: Any) -> Iterator[TestClient]:
    with TestClient(create_app(), headers=AUTH) as client:
        yield client


def page(service: TestClient, since: int | str = 0, **params: Any) -> dict[str, Any]:
    answer = service.get("/locations", params={"since": since, **params})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def by_tenant(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {loc["tenant_id"]: loc for loc in body["locations"]}


def test_a_tenant_is_given_its_server_only_once_provisioned(db, service):
    # Given a pending tenant and one provisioned on the default server (the stand-in)
    insert(db, "waiting")
    insert(db, "ready", state="provisioned", node="default")

    # When the data plane reads the map
    body = page(service)

    # Then only the provisioned one has a server, with its URL and database
    seen = by_tenant(body)
    assert seen["waiting"] | {"version": 0} == {
        "tenant_id": "waiting",
        "database": "telemetry_waiting",
        "version": 0,
        "ready": False,
        "state": "pending",
        "node": None,
        "url": None,
        "incarnation": tenant_row(db, "waiting")["influxdb_incarnation"],
        "deleted": False,
    }
    assert (seen["ready"]["ready"], seen["ready"]["node"]) == (True, "default")
    assert seen["ready"]["url"] == body["nodes"][0]["url"]
    assert body["database_prefix"] == "telemetry_"
    assert body["version"] == body["next_since"] == max(v["version"] for v in seen.values())
    assert service.get("/locations/ready").json()["url"] == seen["ready"]["url"]
    assert service.get("/locations/waiting").json()["node"] is None


def test_failed_deleting_and_unconfigured_tenants_get_no_server(db, service):
    insert(db, "failed", state="failed", node="default", error_reason="unreachable")
    insert(db, "deleting", state="deprovisioning", node="default")
    insert(db, "elsewhere", state="provisioned", node="gone-from-the-nodes-file")

    seen = by_tenant(page(service))

    for tenant_id in ("failed", "deleting", "elsewhere"):
        assert (seen[tenant_id]["ready"], seen[tenant_id]["url"]) == (False, None), tenant_id


def test_only_the_changes_since_a_version_are_read_and_an_unchanged_map_answers_empty(db, service):
    insert(db, "a")
    insert(db, "b")
    first = page(service)

    # Unchanged: an empty page at once, the same version
    again = page(service, first["version"])
    assert (again["locations"], again["more"], again["version"]) == ([], False, first["version"])

    # One change: only it, at a higher version
    db.execute(
        "UPDATE tenants SET influxdb_state = 'provisioned', influxdb_node = 'default' "
        "WHERE tenant_id = 'b'"
    )
    changed = page(service, first["version"])
    assert [loc["tenant_id"] for loc in changed["locations"]] == ["b"]
    assert changed["locations"][0]["version"] > first["version"]

    # A change of a column the map does not carry is no change
    db.execute("UPDATE tenants SET influxdb_attempts = 3 WHERE tenant_id = 'a'")
    assert page(service, changed["version"])["locations"] == []


def test_the_whole_map_comes_in_pages_in_version_order(db, service):
    for i in range(7):
        insert(db, f"t{i}")
    since, seen, pages = 0, [], 0
    while True:
        body = page(service, since, limit=3)
        seen += [loc["version"] for loc in body["locations"]]
        since, pages = body["next_since"], pages + 1
        if not body["more"]:
            break
    assert (len(seen), pages) == (7, 3)
    assert seen == sorted(seen)
    # Where the next page starts is in the headers too (a client fetches it while parsing)
    first = service.get("/locations", params={"since": 0, "limit": 3})
    assert first.headers["X-Locations-Next-Since"] == str(first.json()["next_since"])
    last = service.get("/locations", params={"since": seen[-2], "limit": 3})
    assert "X-Locations-Next-Since" not in last.headers


def test_versions_follow_the_order_changes_became_visible(db, service, database):
    # Given a writer whose transaction changed tenant "slow" but has not committed yet
    insert(db, "slow")
    insert(db, "fast")
    start = page(service)["version"]
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as slow_writer:
        slow_writer.execute(
            "UPDATE tenants SET influxdb_state = 'provisioning' WHERE tenant_id = 'slow'"
        )
        # When another change commits and a client reads past it
        db.execute("UPDATE tenants SET influxdb_state = 'provisioning' WHERE tenant_id = 'fast'")
        seen = page(service, start)
        assert [loc["tenant_id"] for loc in seen["locations"]] == ["fast"]
        slow_writer.commit()

    # Then the slow change, committed later, is numbered after what the client saw
    later = page(service, seen["next_since"])
    assert [loc["tenant_id"] for loc in later["locations"]] == ["slow"]
    assert later["locations"][0]["state"] == "provisioning"


def test_a_deleted_tenant_leaves_a_tombstone_and_a_pruned_one_sends_clients_back_to_zero(
    db, service
):
    insert(db, "gone", state="provisioned", node="default")
    before = page(service)["version"]
    db.execute("DELETE FROM tenants WHERE tenant_id = 'gone'")

    tombstone = page(service, before)["locations"]
    assert [(t["tenant_id"], t["deleted"], t["ready"], t["url"]) for t in tombstone] == [
        ("gone", True, False, None)
    ]
    assert service.get("/locations/gone").status_code == 404

    # When the tombstone is pruned, a client from before it must reload the map
    with get_engine().connect() as conn:
        assert locations.prune_tombstones(conn, T0 + timedelta(days=3650), 100) == 1
    answer = service.get("/locations", params={"since": before})
    assert answer.status_code == 410, answer.text
    assert "load the map again" in answer.json()["detail"]
    assert page(service, 0)["locations"] == []


@pytest.mark.parametrize("limit", [1, 100])
def test_a_map_loaded_after_its_newest_change_was_pruned_is_followed_by_changes_not_410(
    db, service, limit
):
    # Given a map whose newest change is a deletion, its tombstone since pruned: the horizon
    # is above every row left
    insert(db, "stays")
    insert(db, "stays-too")
    insert(db, "goes")
    page(service)
    db.execute("DELETE FROM tenants WHERE tenant_id = 'goes'")
    page(service)  # (publishes the tombstone)
    with get_engine().connect() as conn:
        assert locations.prune_tombstones(conn, T0 + timedelta(days=3650), 100) == 1

    # When a client loads the whole map, page by page: every page after the first is asked
    # from a version below the horizon, which a map it held would have to load again for
    since, seen = 0, []
    while True:
        body = page(service, since, limit=limit, whole=1)
        seen += [loc["tenant_id"] for loc in body["locations"]]
        since = body["next_since"]
        if not body["more"]:
            break
    if limit == 1:
        stays = by_tenant(page(service, 0, limit=1))["stays"]["version"]
        assert service.get("/locations", params={"since": stays}).status_code == 410

    # Then the load is whole, its last page takes it to the map's version, and the next
    # refresh is a delta: left at its last row's version, below the horizon, it would be sent
    # (410) to load the whole map again at every refresh
    assert sorted(seen) == ["stays", "stays-too"]
    assert since == body["version"]
    answer = service.get("/locations", params={"since": since})
    assert answer.status_code == 200, answer.text
    assert answer.json()["locations"] == []


@pytest.mark.parametrize(
    ("since", "limit"),
    [
        ("-1", "10"),
        ("abc", "10"),
        ("1e3", "10"),
        ("99999999999", "10"),
        ("0", "0"),
        ("0", "10001"),
        ("٣", "10"),
        ("0", ""),
    ],
)
def test_a_bad_since_or_limit_answers_400_and_names_it(db, service, since, limit):
    answer = service.get("/locations", params={"since": since, "limit": limit})
    assert answer.status_code == 400, answer.text
    assert ("since" in answer.json()["detail"]) or ("limit" in answer.json()["detail"])


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {OPERATOR_TOKEN}"}],
    ids=["missing", "wrong", "operator-token"],
)
def test_a_wrong_or_missing_credential_answers_401_and_shows_nothing(db, headers):
    insert(db, "secret", state="provisioned", node="default")
    with TestClient(create_app(), headers=headers) as anonymous:
        for path in ("/locations", "/locations/secret"):
            answer = anonymous.get(path)
            assert answer.status_code == 401
            assert "secret" not in answer.text and "127.0.0.1" not in answer.text


@pytest.mark.parametrize("tenant_id", ["a%00b", "%00", "a%20b", "-a", "x" * 70])
def test_an_id_that_cannot_name_a_tenant_answers_404_with_the_rule(service, tenant_id):
    answer = service.get(f"/locations/{tenant_id}")
    assert answer.status_code == 404
    assert answer.json()["detail"].startswith("no such tenant: tenant_id ")


def test_the_locations_token_opens_no_operator_route(db):
    insert(db, "acme")
    with TestClient(create_app(), headers=AUTH) as reader:
        assert reader.get("/operator/tenants/acme/stats").status_code == 401


def test_a_deletion_deletes_the_database_only_after_the_clients_staleness(db, world: World):
    # Given a provisioned tenant, and clients that may go 5 s without a refresh
    world.add("alpha")
    world.overrides["locations_max_staleness_seconds"] = 5.0
    insert(db, "acme")
    assert world.provision("acme").result is RunResult.PROVISIONED
    db.execute("UPDATE tenants SET influxdb_state = 'deprovisioning' WHERE tenant_id = 'acme'")

    # When the deletion runs: its "not ready" is published, and it waits
    first = world.deprovision("acme")
    assert (first.result, first.retry_in) == (RunResult.WAITING_FOR_CLIENTS, 5.0)
    assert "telemetry_acme" in world.servers["alpha"].databases()
    row = tenant_row(db, "acme")
    assert row["influxdb_delete_after"] == world.clock.now + timedelta(seconds=5)
    published = db.execute(
        "SELECT version, state FROM tenant_locations WHERE tenant_id = 'acme'"
    ).fetchone()
    assert published[0] is not None and published[1] == "deprovisioning"

    # Too early still (its own retry, 1 s short): it waits on
    world.clock.advance(4)
    retry = Delivery.of(row["influxdb_retry_chain"].split(":")[0], 1)
    assert world.deprovision("acme", retry).result is RunResult.WAITING_FOR_CLIENTS

    # Then once the staleness has passed, the database and the tenant go
    world.clock.advance(1)
    row = tenant_row(db, "acme")
    retry = Delivery.of(row["influxdb_retry_chain"].split(":")[0], 2)
    assert world.deprovision("acme", retry).result is RunResult.DEPROVISIONED
    assert "telemetry_acme" not in world.servers["alpha"].databases()


def test_a_served_server_url_carries_no_credential():
    # A password, a query or a fragment may each hold a credential (the settings refuse the
    # last two; this is the last line): every location client gets scheme, host and path
    served = locations.public_url("https://ops:pw@influx-a:8181/base?token=s3cret#k=v")
    assert served == "https://influx-a:8181/base"
    assert locations.public_url("http://influx-b:8181") == "http://influx-b:8181"


def test_a_database_restored_from_a_dump_serves_another_epoch(db, service, scratch_database):
    # Given a map a client has loaded
    insert(db, "acme", state="provisioned", node="default")
    loaded = page(service)
    (stored,) = db.execute("SELECT epoch FROM tenant_location_map").fetchone()

    # When the database is dumped and restored (here: beside it, in the same cluster)
    restored_url = restore_copy(db.info.dbname, scratch_database)

    # Then the restored map holds the same stored epoch and version, yet serves another
    # epoch: a client loads it whole, not the changes after a version of another history
    restored_stored, restored = epochs(restored_url)
    assert (restored_stored, restored.current) == (stored, loaded["version"])
    assert restored.epoch.startswith(f"{stored}.") and restored.epoch != loaded["epoch"]

    # And the database it was dumped from serves its epoch unchanged, on a new connection too
    get_engine().dispose()
    assert page(service)["epoch"] == loaded["epoch"]


def test_the_database_s_identity_is_read_for_every_answer_not_once_per_connection(db, service):
    # Behind a connection pooler our connections outlive a failover or a restore: an epoch
    # remembered per connection would stay the old history's, and a client would apply the
    # new primary's reissued versions as if they were the ones it had read
    read_on: list[object] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "pg_control_system" in statement:
            read_on.append(conn.connection.dbapi_connection)

    event.listen(get_engine(), "before_cursor_execute", seen)
    try:
        first, second = page(service), page(service)
    finally:
        event.remove(get_engine(), "before_cursor_execute", seen)
    assert first["epoch"] == second["epoch"]
    assert len(read_on) == 2, "the identity must be read again for the second answer"
    assert read_on[0] is read_on[1]  # (on the one pooled connection: what a cache would keep)


def test_where_the_server_will_not_tell_the_database_s_identity_the_stored_epoch_is_served(
    db, service, caplog
):
    # Given a map served with the database's identity in its epoch
    (stored,) = db.execute("SELECT epoch FROM tenant_location_map").fetchone()
    assert page(service)["epoch"].startswith(f"{stored}.")

    # When a connection of another role is refused what identifies the database
    role = f"tp_plain_{secrets.token_hex(4)}"
    db.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
    db.execute(f"CREATE ROLE {role} LOGIN")
    db.execute(f"GRANT SELECT ON tenant_locations, tenant_location_map TO {role}")
    try:
        host = databases.ADMIN_DSN.rsplit("/", 1)[0].split("@", 1)[1]
        _, served = epochs(f"postgresql+psycopg://{role}@{host}/{db.info.dbname}")

        # Then it serves the stored epoch alone, operators are told to renew it by hand, and
        # every connection of the process serves that same epoch from then on (one change, not
        # an epoch that differs by the connection an answer takes)
        assert served.epoch == stored
        assert "after a restore, give the location map a new epoch by hand" in caplog.text
        assert page(service)["epoch"] == stored
    finally:
        locations._identity_refused.clear()
        db.execute("GRANT EXECUTE ON FUNCTION pg_control_system() TO PUBLIC")
        db.execute(f"REVOKE ALL ON tenant_locations, tenant_location_map FROM {role}")
        db.execute(f"DROP ROLE {role}")


def epochs(url: str) -> tuple[str, locations.Page]:
    """The stored epoch of the database at ``url``, and the map's first page as served."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            (stored,) = conn.execute(text("SELECT epoch FROM tenant_location_map")).one()
            return str(stored), locations.changes(conn, 0, 10, (), "telemetry_")
    finally:
        engine.dispose()
