"""The tenant event log (migration 0011) on real Postgres: one event per transition, written in
the transaction of the change (never for one that rolled back, never missing for one that
committed), a gap-free sequence per tenant, a gap-free and duplicate-free global order even
when transactions commit out of id order, and pruning that keeps each tenant's last word."""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import requests
from psycopg.rows import dict_row
from sqlalchemy import create_engine, text

from api_hooks import adopt_database, create_tenant, delete_tenant, request_provisioning
from api_hooks.errors import TenantBusy, TenantExists
from tests.conftest import INFLUX_TOKEN, existing_database, restore_copy, tenant_row
from tests.fast.conftest import T0, Published, World, insert
from worker import events, store
from worker.db import get_engine, watch_server_warnings
from worker.event_reads import BadCursor, events_after, horizon
from worker.reconcile import reconcile
from worker.runs import Delivery
from worker.settings import get_settings
from worker.states import STATES
from worker.webhook_config import Endpoint
from worker.webhook_fanout import fan_out, sync_endpoints


@pytest.fixture
def queue(broker: Any) -> Iterator[Any]:
    """The hooks publish to the test run's own Redis DB; nobody consumes it here."""
    yield broker
    broker.flushdb()


def log_of(db: psycopg.Connection[Any], tenant_id: str) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, seq, type, actor, route, data FROM tenant_events WHERE tenant_id = %s "
            "ORDER BY seq",
            (tenant_id,),
        ).fetchall()


def types_of(db: psycopg.Connection[Any], tenant_id: str) -> list[str]:
    return [e["type"] for e in log_of(db, tenant_id)]


def assert_the_log_agrees_with_the_rows(db: psycopg.Connection[Any]) -> None:
    """Each tenant's sequence is 1, 2, 3, ... (none pruned here) and its last event carrying a
    state is the row's state."""
    for (tenant_id,) in db.execute("SELECT tenant_id FROM tenants").fetchall():
        log = log_of(db, tenant_id)
        assert [e["seq"] for e in log] == list(range(1, len(log) + 1)), tenant_id
        stated = [e for e in log if "state" in e["data"]]
        row = tenant_row(db, tenant_id)
        assert row is not None
        assert stated[-1]["data"]["state"] == row["influxdb_state"], (tenant_id, log)


def dsn_of(database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{database}"


def append_sql(tenant: str) -> str:
    return f"SELECT tenant_events_append('{tenant}', 'operator.retry', '{{}}'::jsonb)"


def cursor_of(event: dict[str, Any]) -> tuple[int, int]:
    xid, event_id = event["id"].split("-")
    return int(xid), int(event_id)


def settle(conn: Any, timeout: float = 15.0) -> None:
    """Wait until every event written so far is below the horizon: a transaction of another
    test run on the same server (the horizon is the cluster's) may hold it back a moment."""
    newest = conn.exec_driver_sql("SELECT max(xid)::text FROM tenant_events").scalar()
    conn.commit()
    deadline = time.monotonic() + timeout
    while newest is not None and horizon(conn) <= int(newest):
        conn.commit()
        assert time.monotonic() < deadline, "the horizon did not pass the newest event"
        time.sleep(0.02)
    conn.commit()


def run_reconcile(world: World) -> Any:
    return reconcile(get_engine(), world.pool(), world.settings, Published(), clock=world.clock)


# -- what is written --------------------------------------------------------------------------


def test_a_tenants_life_is_told_in_its_own_sequence(db, world: World, queue):
    world.add("alpha")

    create_tenant("acme", "Acme")
    world.provision("acme")
    delete_tenant("acme", actor="ops-script")
    world.deprovision("acme")
    create_tenant("acme", "Acme again")  # the same id: its sequence goes on

    log = log_of(db, "acme")
    assert [(e["seq"], e["type"], e["actor"], e["route"]) for e in log] == [
        (1, "tenant.created", "python", "python"),
        (2, "operator.created", "python", "python"),
        (3, "tenant.provisioning_started", None, "worker"),
        (4, "tenant.provisioned", None, "worker"),
        (5, "tenant.deletion_requested", "ops-script", "python"),
        (6, "operator.delete", "ops-script", "python"),
        (7, "tenant.deprovisioned", None, "worker"),
        (8, "tenant.created", "python", "python"),
        (9, "operator.created", "python", "python"),
    ]
    provisioned = log[3]["data"]
    incarnation = provisioned["incarnation"]
    assert provisioned == {
        "state": "provisioned",
        "previous_state": "provisioning",
        "node": "alpha",
        "incarnation": incarnation,
        "attempts": 1,
    }
    assert log[1]["data"] == {"name": "Acme", "database": "telemetry_acme"}
    assert log[6]["data"] == {
        "previous_state": "deprovisioning",
        "node": "alpha",
        "incarnation": incarnation,
    }
    assert log[7]["data"]["incarnation"] != incarnation  # a new tenant of the same id
    assert_the_log_agrees_with_the_rows(db)


def test_retries_failures_and_resumes_name_their_reason_and_who_moved_them(db, world: World):
    alpha = world.add("alpha")
    insert(db, "flaky")
    insert(db, "stalled")
    alpha.set_outage(True)

    world.provision("flaky")  # a transient failure: a retry is scheduled
    world.overrides["max_attempts"] = 1
    world.provision("stalled")  # the budget used up: failed, stalled on alpha
    alpha.set_outage(False)
    world.clock.advance(60)
    run_reconcile(world)  # the server answers again: resumed by the reconciler

    flaky = log_of(db, "flaky")
    assert [e["type"] for e in flaky] == [
        "tenant.created",
        "tenant.provisioning_started",
        "tenant.retry_scheduled",
    ]
    assert flaky[0]["route"] == "external"  # inserted by SQL of its own, as the UI does
    retry = flaky[2]["data"]
    assert (retry["reason"], retry["node"], retry["state"]) == ("unreachable", "alpha", "retrying")
    assert retry["next_attempt_at"] and retry["error"]
    stalled = log_of(db, "stalled")
    assert [e["type"] for e in stalled] == [
        "tenant.created",
        "tenant.provisioning_started",
        "tenant.failed",
        "tenant.resumed",
    ]
    assert (stalled[2]["data"]["reason"], stalled[2]["data"]["state"]) == ("unreachable", "failed")
    assert (stalled[3]["route"], stalled[3]["actor"]) == ("reconciler", None)
    assert (stalled[3]["data"]["previous_state"], stalled[3]["data"]["attempts"]) == ("failed", 0)
    assert_the_log_agrees_with_the_rows(db)


def test_drift_capacity_and_a_missing_server_are_events(db, world: World, queue):
    alpha = world.add("alpha", limit=1)
    insert(db, "first")
    insert(db, "second")
    insert(db, "elsewhere", node="gone")
    world.provision("first")
    world.provision("second")  # alpha is full
    world.provision("elsewhere")  # its server left the nodes file

    # Someone deletes first's database behind our back: the reconciler finds the drift
    deleted = requests.delete(
        f"{alpha.url}/api/v3/configure/database",
        params={"db": "telemetry_first"},
        headers={"Authorization": f"Bearer {INFLUX_TOKEN}"},
        timeout=5,
    )
    assert deleted.status_code == 200, deleted.text
    world.clock.advance(60)
    run_reconcile(world)

    assert types_of(db, "first")[-1] == "tenant.drift_found"
    drift = log_of(db, "first")[-1]
    assert (drift["route"], drift["data"]["reason"]) == ("reconciler", "drift")
    assert types_of(db, "second")[-1] == "tenant.waiting_for_capacity"
    assert log_of(db, "second")[-1]["data"]["reason"] == "database_limit"
    assert types_of(db, "elsewhere") == ["tenant.created", "tenant.waiting_for_node"]

    # A deletion frees the slot: the waiting tenant goes back to work (requeued by the worker)
    delete_tenant("first")
    world.deprovision("first")
    assert types_of(db, "second")[-1] == "tenant.requeued"
    assert log_of(db, "second")[-1]["data"]["previous_state"] == "waiting_for_capacity"
    assert_the_log_agrees_with_the_rows(db)


def test_an_adoption_and_an_operator_retry_are_events_with_their_actions(db, world: World, queue):
    alpha = world.add("alpha")
    existing_database(alpha, "taken", incarnation="someone-else")
    insert(db, "taken", node="alpha")
    world.provision("taken")  # another incarnation's database: name_taken
    assert types_of(db, "taken")[-1] == "tenant.failed"

    request_provisioning("taken", actor="alice")  # a failed tenant starts again
    world.provision("taken")
    adopt_database("taken", actor="alice")
    world.provision("taken")

    assert types_of(db, "taken")[3:] == [
        "tenant.retry_requested",
        "operator.retry",
        "tenant.provisioning_started",
        "tenant.failed",
        "tenant.adopted",
        "operator.adopt",
        "tenant.provisioning_started",
        "tenant.provisioned",
    ]
    log = log_of(db, "taken")
    assert log[4]["data"] == {"previous_state": "failed", "job": "provision"}
    assert log[7]["data"]["adopt"] == "any"
    assert log[8]["data"] == {"node": "alpha", "previous_state": "failed"}
    assert {(e["actor"], e["route"]) for e in log[3:5] + log[7:9]} == {("alice", "python")}
    assert_the_log_agrees_with_the_rows(db)


def test_a_change_of_no_transition_writes_nothing(db):
    insert(db, "quiet")
    before = types_of(db, "quiet")
    db.execute("UPDATE tenants SET influxdb_attempts = 3, name = 'x' WHERE tenant_id = 'quiet'")
    db.execute("UPDATE tenants SET influxdb_state = 'pending' WHERE tenant_id = 'quiet'")
    db.execute("UPDATE tenants SET influxdb_node = 'alpha' WHERE tenant_id = 'quiet'")  # placed
    assert types_of(db, "quiet") == before == ["tenant.created"]


# -- one transaction with the change ----------------------------------------------------------


def test_a_change_that_rolls_back_takes_its_event_with_it(db, database):
    insert(db, "acme")
    with psycopg.connect(dsn_of(database)) as conn:
        conn.execute("UPDATE tenants SET influxdb_state = 'failed' WHERE tenant_id = 'acme'")
        inside = conn.execute(
            "SELECT type FROM tenant_events WHERE tenant_id = 'acme' ORDER BY seq"
        ).fetchall()
        assert inside == [("tenant.created",), ("tenant.failed",)]  # the transaction sees it
        conn.rollback()
    assert types_of(db, "acme") == ["tenant.created"]
    # and the sequence has no hole where the rolled-back event was
    db.execute("UPDATE tenants SET influxdb_state = 'provisioned' WHERE tenant_id = 'acme'")
    assert [e["seq"] for e in log_of(db, "acme")] == [1, 2]


def test_a_writer_killed_before_its_commit_leaves_neither_change_nor_event(db, database):
    insert(db, "acme")
    writer = psycopg.connect(dsn_of(database))
    writer.execute("UPDATE tenants SET influxdb_state = 'failed' WHERE tenant_id = 'acme'")
    pid = writer.info.backend_pid
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        writer.execute("COMMIT")
    writer.close()
    assert tenant_row(db, "acme")["influxdb_state"] == "pending"
    assert types_of(db, "acme") == ["tenant.created"]


def test_a_refused_operator_action_writes_nothing(db, queue):
    create_tenant("acme", "Acme")
    with pytest.raises(TenantExists):
        create_tenant("acme", "Acme")
    db.execute("UPDATE tenants SET influxdb_state = 'provisioned' WHERE tenant_id = 'acme'")
    with pytest.raises(TenantBusy):
        adopt_database("acme", "default")
    assert types_of(db, "acme") == ["tenant.created", "operator.created", "tenant.provisioned"]


def test_who_created_a_tenant_is_not_left_on_the_connection_for_the_next_writer(db):
    # Given a tenant created by alice, in one statement on a connection
    with get_engine().connect() as conn:
        store.create(conn, "acme", "Acme", None, actor="alice", route="http", data={})

        # When the next transaction on that same connection changes another tenant, naming
        # nobody
        insert(db, "beta", state="pending")
        with conn.begin():
            left = conn.execute(
                text(
                    "SELECT current_setting('tenant_provisioner.actor', true), "
                    "current_setting('tenant_provisioner.route', true)"
                )
            ).one()
            conn.execute(
                text("UPDATE tenants SET influxdb_state = 'failed' WHERE tenant_id = 'beta'")
            )

    # Then alice is named only where she acted: the settings ended with her statement
    assert [(e["type"], e["actor"], e["route"]) for e in log_of(db, "acme")] == [
        ("tenant.created", "alice", "http"),
        ("operator.created", "alice", "http"),
    ]
    assert tuple(value or None for value in left) == (None, None)
    assert [(e["actor"], e["route"]) for e in log_of(db, "beta")][-1] == (None, "worker")


def test_every_committed_transition_has_its_event_and_no_rolled_back_one_has(db, database):
    # Given five tenants, and 300 transactions each changing one's state, a third rolled back
    rng = random.Random(21)
    ids = [f"t{i}" for i in range(5)]
    for tenant_id in ids:
        insert(db, tenant_id)
    committed = dict.fromkeys(ids, 1)  # the created events
    state = dict.fromkeys(ids, "pending")
    with psycopg.connect(dsn_of(database)) as conn:
        for _ in range(300):
            tenant_id, new = rng.choice(ids), rng.choice(STATES)
            conn.execute(
                "UPDATE tenants SET influxdb_state = %s WHERE tenant_id = %s", (new, tenant_id)
            )
            if rng.random() < 1 / 3:
                conn.rollback()
                continue
            conn.commit()
            committed[tenant_id] += new != state[tenant_id]
            state[tenant_id] = new

    # Then each tenant has exactly one event per committed change, and its last is its state
    for tenant_id in ids:
        assert len(log_of(db, tenant_id)) == committed[tenant_id], tenant_id
    assert_the_log_agrees_with_the_rows(db)


def test_concurrent_writers_of_one_tenant_get_consecutive_numbers(db, database):
    insert(db, "busy")
    flip = (
        "UPDATE tenants SET influxdb_state = CASE WHEN influxdb_state = 'pending' "
        "THEN 'provisioning' ELSE 'pending' END WHERE tenant_id = 'busy'"
    )

    def writer(index: int) -> None:
        with psycopg.connect(dsn_of(database), autocommit=True) as conn:
            for step in range(15):
                if (index + step) % 3 == 0:  # an operator's event, no row change
                    conn.execute(
                        "SELECT tenant_events_append('busy', 'operator.retry', '{}'::jsonb)"
                    )
                else:
                    conn.execute(flip)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    log = log_of(db, "busy")
    assert [e["seq"] for e in log] == list(range(1, 92))
    assert [e["id"] for e in log] == sorted(e["id"] for e in log)  # committed in seq order
    assert_the_log_agrees_with_the_rows(db)


# -- the global order -------------------------------------------------------------------------


def test_the_global_cursor_waits_for_an_older_transaction_and_then_misses_nothing(db, database):
    with get_engine().connect() as reader:
        settle(reader)
        start = events_after(reader, None).next
        reader.commit()
        a = psycopg.connect(dsn_of(database))
        b = psycopg.connect(dsn_of(database))
        c = psycopg.connect(dsn_of(database))
        try:
            # A takes the smaller id, B a larger one, and B commits first
            a_id = a.execute(append_sql("a")).fetchone()[0]
            a_xid = int(a.execute("SELECT pg_current_xact_id()::text").fetchone()[0])
            b_id = b.execute(append_sql("b")).fetchone()[0]
            c.execute(append_sql("c"))  # C will roll back
            b.commit()
            assert a_id < b_id
            # (ordered by id, a reader would hand out b now and pass over a for ever)
            assert db.execute("SELECT max(id) FROM tenant_events").fetchone() == (b_id,)

            # While A runs, B's event is held back; the cursor stays below A
            early = events_after(reader, start)
            reader.commit()
            assert early.events == []
            assert int(early.next.split("-")[0]) <= a_xid

            a.commit()
            c.rollback()
        finally:
            for conn in (a, b, c):
                conn.close()
        settle(reader)
        late = events_after(reader, early.next)
        again = events_after(reader, late.next)
        reader.commit()

    assert [e["subject"] for e in late.events] == ["a", "b"]  # A's first: its xid is older
    assert again.events == []  # nothing twice
    assert [cursor_of(e) for e in late.events] == sorted(cursor_of(e) for e in late.events)


def test_a_reader_polling_during_concurrent_writers_sees_each_committed_event_once(db, database):
    # Given four writers committing and rolling back, each holding its transaction open a while
    stop = threading.Event()
    committed: list[int] = []
    lock = threading.Lock()

    def writer(index: int) -> None:
        rng = random.Random(index)
        with psycopg.connect(dsn_of(database)) as conn:
            for _ in range(40):
                written = conn.execute(append_sql(f"w{index}")).fetchone()[0]
                time.sleep(rng.random() * 0.004)
                if rng.random() < 0.25:
                    conn.rollback()
                    continue
                conn.commit()
                with lock:
                    committed.append(written)

    seen: list[dict[str, Any]] = []

    def reader() -> None:
        cursor = None
        with get_engine().connect() as conn:
            while True:
                done = stop.is_set()
                if done:
                    settle(conn)  # then one last pass reads everything committed
                page = events_after(conn, cursor, limit=7)
                conn.commit()
                seen.extend(page.events)
                cursor = page.next
                if done and not page.more:
                    return

    # When a reader pages through the log all along, 7 events at a time
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    polling = threading.Thread(target=reader)
    polling.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    polling.join(timeout=30)

    # Then it saw every committed event exactly once, in (xid, id) order
    ids = [int(e["id"].split("-")[1]) for e in seen]
    assert sorted(ids) == sorted(committed)
    assert len(ids) == len(set(ids))
    assert [cursor_of(e) for e in seen] == sorted(cursor_of(e) for e in seen)


def test_filters_pass_over_other_events_and_still_move_the_cursor(db):
    insert(db, "a")
    insert(db, "b")
    db.execute("UPDATE tenants SET influxdb_state = 'failed' WHERE tenant_id = 'b'")
    with get_engine().connect() as conn:
        settle(conn)
        only_b = events_after(conn, None, tenant="b")
        failed = events_after(conn, None, types=["io.tenant-provisioner.tenant.failed"])
        later = events_after(conn, only_b.next, tenant="b")
    assert [e["type"] for e in only_b.events] == [
        "io.tenant-provisioner.tenant.created",
        "io.tenant-provisioner.tenant.failed",
    ]
    assert [e["subject"] for e in failed.events] == ["b"]
    assert later.events == [] and not only_b.more


@pytest.mark.parametrize(
    "cursor",
    ["abc", "1-", "-1-2", "1-2-3", "1_2", "99999999999999999999999-1", "\u0661-\u0662", " 1-2"],
)
def test_a_cursor_that_is_not_ours_is_refused(db, cursor):
    with get_engine().connect() as conn, pytest.raises(BadCursor):
        events_after(conn, cursor)


def test_a_cursor_ahead_of_the_log_is_refused(db):
    with get_engine().connect() as conn:
        ahead = horizon(conn) + 1000
        with pytest.raises(BadCursor, match="ahead"):
            events_after(conn, f"{ahead}-0")
        with pytest.raises(BadCursor):
            events_after(conn, "1-1", limit=0)


# -- a restore into another cluster ------------------------------------------------------------

OLD_CLUSTER_AHEAD = 10**12  # how far the old cluster's transaction ids were ahead of this one's


def test_a_log_restored_into_another_cluster_keeps_its_order_and_every_cursor(
    db, scratch_database, caplog
):
    # Given events of a and b, read by a client and passed by a webhook endpoint's fan-out,
    # then events of c and d, read by nobody yet
    db.execute("TRUNCATE webhook_endpoints CASCADE")  # (another test's "ui" keeps its cursor)
    endpoint = Endpoint("ui", "http://127.0.0.1:9/hook", (b"k" * 32,))
    late = Endpoint("late", "http://127.0.0.1:9/late", (b"k" * 32,))
    with get_engine().connect() as conn:
        for tenant in ("a", "b"):
            conn.exec_driver_sql(append_sql(tenant))
        conn.commit()
        settle(conn)
        kept = events_after(conn, None).next
        sync_endpoints(conn, [endpoint], T0)
        for tenant in ("c", "d"):
            conn.exec_driver_sql(append_sql(tenant))
        conn.commit()
        settle(conn)
        # (an endpoint added now: its cursor, the horizon, is past the log's newest event)
        sync_endpoints(conn, [endpoint, late], T0)

        # When the database is dumped, and after the dump another client reads an event
        # that the backup will not hold
        url = restore_copy(db.info.dbname, scratch_database)
        conn.exec_driver_sql(append_sql("lost"))
        conn.commit()
        settle(conn)
        read = events_after(conn, kept)
        *_, lost = read.events
        # (what was read, should another writer of the cluster ever make this fail again)
        shown = [(e["subject"], e["id"]) for e in read.events], read.next, horizon(conn)
        assert lost["subject"] == "lost", shown
        past = events_after(conn, lost["id"]).next
        conn.commit()

    # ... and the dump is restored into another cluster, whose transaction ids are far behind
    # the old one's (here: the copy's ids moved ahead by as much, and the clock's cluster is
    # the old one: the same state)
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as copy:
        for table, column in (("tenant_events", "xid"), ("webhook_endpoints", "cursor_xid")):
            ahead = f"({column}::text::numeric + {OLD_CLUSTER_AHEAD})::text::xid8"
            copy.execute(f"UPDATE {table} SET {column} = {ahead}")
        copy.execute("UPDATE tenant_event_clock SET cluster = '7000000000000000001.00000001'")
    kept, past = (moved_ahead(cursor) for cursor in (kept, past))
    engine = create_engine(url)
    watch_server_warnings(engine)
    try:
        with engine.connect() as conn:
            # Then the first client's cursor is valid, and gives what it had not read, before
            # any write (once the transactions running elsewhere in the cluster have ended)
            settle(conn)
            restored = events_after(conn, kept)
            assert [e["subject"] for e in restored.events] == ["c", "d"]
            assert events_after(conn, past).events == []  # what it read is gone with the backup
            conn.commit()

            # When a tenant's event is written in the restored database
            conn.exec_driver_sql(append_sql("e"))
            conn.commit()
            settle(conn)

            # Then it comes after the restored ones, for both clients: nothing twice or missed
            assert [e["subject"] for e in events_after(conn, restored.next).events] == ["e"]
            assert [e["subject"] for e in events_after(conn, past).events] == ["e"]
            everything = events_after(conn, None)
            assert [e["subject"] for e in everything.events] == ["a", "b", "c", "d", "e"]
            order = [cursor_of(e) for e in everything.events]
            assert order == sorted(order)

            # And the fan-out goes on from its restored cursors: c, d and e, none lost
            assert (fan_out(conn, endpoint, T0), fan_out(conn, late, T0)) == (3, 1)
            sent = conn.exec_driver_sql(
                "SELECT endpoint, tenant_id FROM webhook_deliveries ORDER BY endpoint, id"
            )
            assert [tuple(row) for row in sent] == [
                ("late", "e"),
                ("ui", "c"),
                ("ui", "d"),
                ("ui", "e"),
            ]
            clock = conn.exec_driver_sql("SELECT shift, cluster FROM tenant_event_clock").one()
            assert clock.shift > 2**40
            assert not clock.cluster.startswith("7000000000000000001.")
            # (operators are told, in our log as in Postgres')
            assert "Postgres: the event log's ids are shifted by" in caplog.text
    finally:
        engine.dispose()

    # And the log the copy was made from, in its own cluster, was never shifted
    assert db.execute("SELECT shift FROM tenant_event_clock").fetchone() == (0,)


def test_a_restored_log_is_shifted_before_pruning_takes_its_newest_event(db, scratch_database):
    # Given a log restored from another cluster whose newest event is an old sign-in, far past
    # the tenant's (the old cluster was busy meanwhile)
    db.execute(append_sql("a"))
    db.execute("SELECT tenant_events_append(NULL, 'operator.sign_in', '{}'::jsonb)")
    url = restore_copy(db.info.dbname, scratch_database)
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as copy:
        ahead = f"(xid::text::numeric + {OLD_CLUSTER_AHEAD})"
        copy.execute(f"UPDATE tenant_events SET xid = {ahead}::text::xid8")
        copy.execute(
            f"UPDATE tenant_events SET xid = ({ahead} + 10^6)::text::xid8 WHERE seq IS NULL"
        )
        copy.execute("UPDATE tenant_events SET time = %s", (T0 - timedelta(days=400),))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            # When a reader is given a cursor (its check is not stored: it rolls back), and the
            # hourly prune then deletes the sign-in
            given = events_after(conn, None).next
            conn.rollback()
            events.prune(conn, T0, batch_size=100, stop=lambda: False)
            assert [e["type"] for e in events_after(conn, None).events] == [
                "io.tenant-provisioner.operator.retry"
            ]
            conn.commit()

            # Then a new event still comes after the reader's cursor
            conn.exec_driver_sql(append_sql("b"))
            conn.commit()
            settle(conn)
            assert [e["subject"] for e in events_after(conn, given).events] == ["b"]
    finally:
        engine.dispose()


def test_a_role_refused_the_cluster_s_identity_follows_a_failover_too(db, scratch_database):
    # Given a log whose clock last saw another WAL timeline (as after a failover, or a
    # point-in-time recovery), where a role that writes events - the UI's own, say - is
    # refused what identifies the cluster, and has no right on the clock
    db.execute(append_sql("a"))
    restore_copy(db.info.dbname, scratch_database)
    role = f"tp_plain_{secrets.token_hex(4)}"
    newest = "SELECT max(xid)::text::numeric FROM tenant_events"
    with psycopg.connect(dsn_of(scratch_database), autocommit=True) as copy:
        (before,) = copy.execute(newest).fetchone()
        copy.execute("UPDATE tenant_event_clock SET cluster = cluster || '-before'")
        copy.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
        copy.execute(f"CREATE ROLE {role} LOGIN")
        copy.execute(f"GRANT SELECT, INSERT, UPDATE ON tenants, tenant_events TO {role}")
    try:
        with psycopg.connect(f"postgresql://{role}@127.0.0.1:5432/{scratch_database}") as plain:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                plain.execute("SELECT pg_control_system()")
            plain.rollback()

            # When that role writes the first event since
            plain.execute(append_sql("b"))
            (own,) = plain.execute("SELECT pg_current_xact_id()::text::numeric").fetchone()
            (written,) = plain.execute(newest).fetchone()
            plain.commit()

        # Then it is shifted past the old history, as any other writer's would be
        with psycopg.connect(dsn_of(scratch_database), autocommit=True) as copy:
            (shift,) = copy.execute("SELECT shift FROM tenant_event_clock").fetchone()
        assert shift >= 2**40
        assert written == own + shift > before + 2**40
    finally:
        with psycopg.connect(dsn_of(scratch_database), autocommit=True) as copy:
            copy.execute(f"DROP OWNED BY {role}")
        db.execute(f"DROP ROLE {role}")


def test_a_callers_temporary_table_never_stands_in_for_the_log(db, database):
    # Given a role with no right on anything, and its temporary table named as the log,
    # holding an id far ahead of the cluster
    role = f"tp_plain_{secrets.token_hex(4)}"
    db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with psycopg.connect(f"postgresql://{role}@127.0.0.1:5432/{database}") as evil:
            evil.execute("CREATE TEMP TABLE tenant_events (xid xid8)")
            evil.execute("INSERT INTO tenant_events VALUES ('100000000000')")

            # When it runs the check, which runs as the role that migrated
            assert evil.execute("SELECT tenant_event_check()").fetchone() == (0,)
            # (dropped here: a backend that ends drops its temporary tables while DROP ROLE looks)
            evil.execute("DROP TABLE pg_temp.tenant_events")
            evil.commit()
    finally:
        db.execute(f"DROP ROLE {role}")

    # Then the check read the log, not the caller's table: nothing is shifted
    assert db.execute("SELECT shift FROM tenant_event_clock").fetchone() == (0,)


def test_a_log_restored_in_its_own_cluster_keeps_its_ids(db, scratch_database):
    # Given an event, and its log dumped and restored into another database of the cluster
    db.execute(append_sql("a"))
    url = restore_copy(db.info.dbname, scratch_database)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            # When an event is written there
            conn.exec_driver_sql(append_sql("b"))
            conn.commit()
            settle(conn)
            written, own = conn.exec_driver_sql(
                "SELECT max(xid)::text, pg_current_xact_id()::text FROM tenant_events"
            ).one()

            # Then nothing is shifted: the same cluster, the same history
            assert conn.exec_driver_sql("SELECT shift FROM tenant_event_clock").scalar() == 0
            assert int(written) < int(own)
            assert [e["subject"] for e in events_after(conn, None).events] == ["a", "b"]
    finally:
        engine.dispose()


def moved_ahead(cursor: str) -> str:
    xid, event_id = cursor_of({"id": cursor})
    return f"{xid + OLD_CLUSTER_AHEAD}-{event_id}"


# -- pruning ----------------------------------------------------------------------------------


def test_pruning_deletes_old_events_in_batches_and_keeps_each_tenants_last(db):
    for tenant_id in ("old", "busy"):
        insert(db, tenant_id)
        for state in ("provisioning", "retrying", "provisioning", "provisioned"):
            db.execute(
                "UPDATE tenants SET influxdb_state = %s WHERE tenant_id = %s", (state, tenant_id)
            )
    db.execute("SELECT tenant_events_append(NULL, 'operator.sign_in', '{}'::jsonb)")
    # Everything is 40 days old but busy's last two events
    db.execute("UPDATE tenant_events SET time = time - interval '40 days'")
    db.execute(
        "UPDATE tenant_events SET time = time + interval '40 days' "
        "WHERE tenant_id = 'busy' AND seq >= 4"
    )

    with get_engine().connect() as conn:
        cutoff = conn.exec_driver_sql("SELECT now() - interval '30 days'").scalar()
        deleted = events.prune(conn, cutoff, batch_size=2, stop=lambda: False)

    assert deleted == 4 + 3 + 1  # old's first four, busy's first three, the sign-in
    assert [e["seq"] for e in log_of(db, "old")] == [5]  # its last word stays
    assert [e["seq"] for e in log_of(db, "busy")] == [4, 5]
    # and the next event continues the sequence
    db.execute("UPDATE tenants SET influxdb_state = 'failed' WHERE tenant_id = 'old'")
    assert [e["seq"] for e in log_of(db, "old")] == [5, 6]


def test_pruning_keeps_what_a_configured_webhook_endpoint_has_not_had(db):
    # Given a tenant's events, all 40 days old, and an endpoint that had the first two only
    # (its dispatcher stopped, or its webhooks file unusable, for longer than the retention)
    insert(db, "acme")
    for state in ("provisioning", "retrying", "provisioning", "provisioned"):
        db.execute("UPDATE tenants SET influxdb_state = %s WHERE tenant_id = 'acme'", (state,))
    db.execute("UPDATE tenant_events SET time = time - interval '40 days'")
    had = db.execute("SELECT xid, id FROM tenant_events WHERE tenant_id = 'acme' AND seq = 2")
    db.execute(
        "INSERT INTO webhook_endpoints (name, url, cursor_xid, cursor_id, created_at) "
        "VALUES ('ui', 'http://ui.example/hooks', %s, %s, now())",
        had.fetchone(),
    )

    def prune(held_for: str = "60 days") -> int:
        with get_engine().connect() as conn:
            cutoff, held = conn.exec_driver_sql(
                f"SELECT now() - interval '30 days', now() - interval '{held_for}'"
            ).one()
            return events.prune(conn, cutoff, 2, stop=lambda: False, held_before=held)

    # When the log is pruned, only what the endpoint had goes
    assert prune() == 2
    assert [e["seq"] for e in log_of(db, "acme")] == [3, 4, 5]

    # And what it has not had is held one retention longer, no more (a dispatcher gone for
    # good must not keep the whole log)
    db.execute("UPDATE tenant_events SET time = time - interval '30 days' WHERE seq = 3")
    assert prune() == 1
    assert [e["seq"] for e in log_of(db, "acme")] == [4, 5]

    # And once the endpoint is out of the file, the rest goes too (the last word stays)
    db.execute("UPDATE webhook_endpoints SET configured = false")
    assert prune() == 1
    assert [e["seq"] for e in log_of(db, "acme")] == [5]


def test_the_hourly_prune_task_prunes_events_past_the_retention(db):
    from worker.tasks import prune_attempt_log  # noqa: PLC0415 - imports the Celery app

    insert(db, "acme")
    db.execute("UPDATE tenants SET influxdb_state = 'failed' WHERE tenant_id = 'acme'")
    db.execute(
        "UPDATE tenant_events SET time = time - make_interval(days => %s)",
        (get_settings().events_retention_days + 1,),
    )
    result = prune_attempt_log()
    assert result["events"] == 1
    assert types_of(db, "acme") == ["tenant.failed"]


def test_pruning_stops_when_told(db):
    insert(db, "acme")
    db.execute("UPDATE tenant_events SET time = time - interval '90 days'")
    with get_engine().connect() as conn:
        assert events.prune(conn, conn_now(conn), batch_size=1, stop=lambda: True) == 0


def conn_now(conn: Any) -> Any:
    return conn.exec_driver_sql("SELECT now()").scalar() + timedelta(seconds=1)


def test_a_deletion_that_fails_says_why_and_one_that_ends_says_so(db, world: World, queue):
    alpha = world.add("alpha")
    insert(db, "leaving")
    world.provision("leaving")
    delete_tenant("leaving")
    alpha.set_outage(True)
    world.deprovision("leaving", Delivery.of("delete-leaving", 0))
    alpha.set_outage(False)
    world.deprovision("leaving", Delivery.of("delete-leaving", 1))  # its own retry

    assert types_of(db, "leaving")[-4:] == [
        "tenant.deletion_requested",
        "operator.delete",
        "tenant.deletion_failed",
        "tenant.deprovisioned",
    ]
    assert log_of(db, "leaving")[-2]["data"]["reason"] == "unreachable"
