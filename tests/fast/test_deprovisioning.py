"""Deletion in-process: only the tenant's own database goes, and the row only once it is gone."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from api_hooks.cli import main as cli_main
from api_hooks.tenants import delete_tenant, request_provisioning
from tests.conftest import existing_database, tenant_row, wait_for, write_points
from tests.fast.conftest import T0, Published, World, insert, slot_reserved
from worker import nodes, store
from worker.db import get_engine
from worker.placement import sync_nodes
from worker.reconcile import reconcile
from worker.runs import Delivery, advisory_lock_key
from worker.states import RunResult

MESSAGE = Delivery.of("delete-a", 0)


def deprovisioned_event(db, tenant_id: str) -> dict:
    (data,) = db.execute(
        "SELECT data FROM tenant_events WHERE tenant_id = %s AND type = 'tenant.deprovisioned'",
        (tenant_id,),
    ).fetchone()
    return data


def test_deleting_removes_the_tenants_own_database_then_the_row(db, world: World):
    alpha = world.add("alpha")
    insert(db, "acme")
    world.provision("acme")
    db.execute("UPDATE tenants SET influxdb_state = 'deprovisioning' WHERE tenant_id = 'acme'")

    assert world.deprovision("acme", MESSAGE).result == RunResult.DEPROVISIONED

    assert tenant_row(db, "acme") is None
    assert alpha.databases() == []
    assert any(name.startswith("telemetry_acme-") for name in alpha.state()["deleted_databases"])
    assert "kept_on" not in deprovisioned_event(db, "acme")


def test_deleting_a_tenant_older_than_its_retention_period_removes_its_database(db, world: World):
    # Given a tenant whose database keeps 1 h of data, created 2 h ago: its marker point (the
    # creation's time) is past the period, so InfluxDB hides it from every query. The stand-in
    # applies retention by the wall clock, so the creation time is taken from that clock.
    alpha = world.add("alpha")
    insert(db, "acme", at=datetime.now(UTC) - timedelta(hours=2), retention_period="1h")
    world.provision("acme")
    assert alpha.databases() == ["telemetry_acme"]
    pool = world.pool()
    alpha_client = pool.client(pool.node("alpha"))
    assert alpha_client.count_rows("telemetry_acme", "_init") == 0  # the point is hidden
    db.execute("UPDATE tenants SET influxdb_state = 'deprovisioning' WHERE tenant_id = 'acme'")

    # When it is deleted
    assert world.deprovision("acme", MESSAGE).result == RunResult.DEPROVISIONED

    # Then its database goes too, not left behind as unknown (holding a slot for good)
    assert alpha.databases() == []


def test_a_deletion_outwaits_an_attempt_whose_run_never_said_it_ended(db, world: World):
    # Given a tenant whose attempt sent a create to alpha and whose run then lost its Postgres
    # session (its lock with it; the run goes on to its time limit), and one whose run ended
    alpha = world.add("alpha")
    limit = world.settings.task_time_limit
    at = world.clock()
    row = insert(db, "acme", state="provisioning", node="alpha", attempt_started_at=at)
    insert(db, "idle", state="retrying", node="alpha", create_sent_to="alpha", retry_chain="x:1")
    with get_engine().begin() as conn:
        for tenant_id in ("acme", "idle"):
            assert store.request_deletion(conn, tenant_id, world.clock())

    # When the deletions run, then the first waits until that attempt's time limit is over;
    # the other goes at once (with no location client wait set here)
    first = world.deprovision("acme", MESSAGE)
    assert (first.result, first.retry_in) == (RunResult.WAITING_FOR_CLIENTS, limit)
    assert world.deprovision("idle", MESSAGE).result == RunResult.DEPROVISIONED

    # And a create and marker that the run's late calls land meanwhile go with the tenant
    existing_database(alpha, "acme", points=0, incarnation=str(row["influxdb_incarnation"]))
    world.clock.advance(limit)
    assert world.deprovision("acme", Delivery.of("delete-a", 1)).result == RunResult.DEPROVISIONED
    assert tenant_row(db, "acme") is None
    assert alpha.databases() == []


def test_a_second_run_that_ends_puts_back_the_start_of_one_that_never_said_it_ended(
    db, world: World
):
    # Given a tenant whose attempt's run lost its Postgres session (its start noted, its lock
    # gone, the run going on), and a second message (a redelivery, an operator retry) whose
    # run then provisions it, 5 s later
    world.add("alpha")
    limit = world.settings.task_time_limit
    insert(db, "acme", state="provisioning", node="alpha", attempt_started_at=world.clock())
    world.clock.advance(5)
    assert world.provision("acme").result == RunResult.PROVISIONED

    # When the tenant is deleted, then the deletion still waits for the first run's limit
    with get_engine().begin() as conn:
        assert store.request_deletion(conn, "acme", world.clock())
    first = world.deprovision("acme", MESSAGE)
    assert (first.result, first.retry_in) == (RunResult.WAITING_FOR_CLIENTS, limit - 5)


def test_a_run_that_ends_after_its_tenant_was_deleted_says_so_and_is_not_outwaited(
    db, world: World
):
    # Given a tenant whose create the server answers slowly
    world.add("alpha").set_latency(0.2)
    insert(db, "acme")
    with ThreadPoolExecutor(1) as runner:
        run = runner.submit(world.provision, "acme")
        wait_for(lambda: tenant_row(db, "acme")["influxdb_attempt_started_at"], 10, 0.01)

        # When the tenant is deleted during the attempt, whose outcome the row then refuses
        with get_engine().begin() as conn:
            assert store.request_deletion(conn, "acme", world.clock())
        run.result(20)

    # Then the run still said it ended, and the deletion does not wait for its time limit
    row = tenant_row(db, "acme")
    assert (row["influxdb_state"], row["influxdb_attempt_started_at"]) == ("deprovisioning", None)
    assert world.deprovision("acme", MESSAGE).result == RunResult.DEPROVISIONED


def test_a_run_cut_from_postgres_while_it_reads_the_server_deletes_nothing(db, world: World):
    # Given a provisioned tenant being deleted, on a server that answers slowly
    alpha = world.add("alpha")
    insert(db, "acme")
    world.provision("acme")
    db.execute("UPDATE tenants SET influxdb_state = 'deprovisioning' WHERE tenant_id = 'acme'")
    attempts = tenant_row(db, "acme")["influxdb_attempts"]
    alpha.set_latency(0.3)
    with ThreadPoolExecutor(1) as runner:
        run = runner.submit(world.deprovision, "acme", MESSAGE)
        # When its run's Postgres session is cut while it reads what the server holds (the
        # tenant's lock goes with it: a second run may delete the tenant, and the id be made
        # again on that server, before this run would send its delete by name)
        wait_for(lambda: tenant_row(db, "acme")["influxdb_attempts"] > attempts, 10, 0.01)
        (holder,) = db.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
        db.execute("SELECT pg_terminate_backend(%s)", (holder,))

        # Then it stops before deleting anything (to be retried, as for any lost session)
        with pytest.raises(DBAPIError):
            run.result(20)
    assert alpha.databases() == ["telemetry_acme"]
    # And the next run, holding the lock, deletes it
    alpha.set_latency(0)
    assert world.deprovision("acme", Delivery.of("delete-a", 1)).result == RunResult.DEPROVISIONED
    assert (alpha.databases(), tenant_row(db, "acme")) == ([], None)


def test_deleting_leaves_a_database_that_is_not_the_tenants(db, world: World):
    # Given a tenant whose name on its full server is another's database, and a tenant waiting
    alpha = world.add("alpha", limit=1)
    existing_database(alpha, "acme", points=2, incarnation="another-tenant")
    insert(db, "acme", state="deprovisioning", node="alpha")
    insert(db, "next", state="waiting_for_capacity")

    # When the tenant is deleted
    outcome = world.deprovision("acme", MESSAGE)

    # Then its row goes, someone else's data stays, and so does the slot it takes: nobody is
    # sent to a server that would refuse them
    assert (outcome.result, outcome.unwaited) == (RunResult.DEPROVISIONED, ())
    assert tenant_row(db, "acme") is None
    assert alpha.databases() == ["telemetry_acme"]
    assert tenant_row(db, "next")["influxdb_state"] == "waiting_for_capacity"
    # And the event says where it stays: its readers do not take that data for deleted
    assert deprovisioned_event(db, "acme")["kept_on"] == "alpha"


def test_deleting_after_an_unanswered_create_leaves_a_database_that_writers_made(db, world: World):
    # Given a tenant made again under a deleted one's id, whose create went to a server where
    # a late writer of the earlier tenant had made the database (its points, no marker), and
    # was never answered
    alpha = world.add("alpha")
    write_points(alpha, "telemetry_acme", "telemetry,device=d1 v=1i")
    insert(db, "acme", state="deprovisioning", node="alpha", create_sent_to="alpha")

    # When the tenant is deleted
    assert world.deprovision("acme", MESSAGE).result == RunResult.DEPROVISIONED

    # Then that database stays: our create made none of it
    assert alpha.databases() == ["telemetry_acme"]
    assert len(alpha.rows("telemetry_acme", "telemetry")) == 1


def test_deleting_a_tenant_whose_writers_made_its_database_again_deletes_that_one(db, world: World):
    # Given a provisioned tenant whose database was deleted behind our back an hour later, and
    # made again by a writer's point before any reconcile run took it back
    alpha = world.add("alpha")
    insert(db, "acme")
    world.provision("acme")
    world.clock.advance(3600)
    alpha.delete_database("telemetry_acme")
    write_points(alpha, "telemetry_acme", "telemetry,device=d1 v=1i")

    # When the tenant is deleted
    db.execute("UPDATE tenants SET influxdb_state = 'deprovisioning' WHERE tenant_id = 'acme'")
    assert world.deprovision("acme", MESSAGE).result == RunResult.DEPROVISIONED

    # Then that database goes with it (the tenant's, as the reconciler would have taken it
    # back), so that the id made again starts empty, not name_taken
    assert alpha.databases() == []
    insert(db, "acme")
    assert world.provision("acme").result == RunResult.PROVISIONED


def test_deleting_waits_for_a_server_that_left_the_nodes_file(db, world: World):
    alpha = world.add("alpha")
    alpha.create_database("telemetry_acme")
    world.unlisted.add("alpha")
    insert(db, "acme", state="deprovisioning", node="alpha")

    outcome = world.deprovision("acme", MESSAGE)

    assert (outcome.result, outcome.reason) == (RunResult.WAITING_FOR_NODE, "node_not_configured")
    assert tenant_row(db, "acme")["influxdb_state"] == "deprovisioning"
    assert alpha.databases() == ["telemetry_acme"]


def test_deleting_a_row_from_before_the_worker_finds_its_database_first(db, world: World):
    world.add("alpha")
    beta = world.add("beta")
    existing_database(beta, "acme")
    insert(db, "acme", state="deprovisioning", adopt="unmarked")

    assert world.deprovision("acme", MESSAGE).result == RunResult.DEPROVISIONED
    assert beta.databases() == []


def test_deleting_while_a_server_is_silent_does_not_finish(db, world: World):
    world.add("alpha").set_outage(True)
    insert(db, "acme", state="deprovisioning", adopt="unmarked")

    outcome = world.deprovision("acme", MESSAGE)

    assert (outcome.result, outcome.reason) == (RunResult.RETRYING, "unreachable")
    row = tenant_row(db, "acme")
    assert row["influxdb_retry_chain"] == MESSAGE.retry
    assert row["influxdb_next_attempt_at"] > world.clock.now


def test_deleting_while_a_server_is_silent_does_not_finish_when_another_has_it(db, world: World):
    # Given a row from before the worker, its database on alpha and beta, and beta silent
    alpha, beta = world.add("alpha"), world.add("beta")
    for server in (alpha, beta):
        existing_database(server, "acme")
    beta.set_outage(True)
    insert(db, "acme", state="deprovisioning", adopt="unmarked")

    # When it is deleted, it retries: beta's copy is not left behind, an orphan
    outcome = world.deprovision("acme", MESSAGE)
    assert (outcome.result, outcome.reason) == (RunResult.RETRYING, "unreachable")

    # And once beta answers, its retry deletes both, then the row
    beta.set_outage(False)
    retry = Delivery(MESSAGE.retry, MESSAGE.retry + "'")
    assert world.deprovision("acme", retry).result == RunResult.DEPROVISIONED
    assert (alpha.databases(), beta.databases(), tenant_row(db, "acme")) == ([], [], None)


def test_a_never_placed_tenant_is_deleted_without_asking_any_server(db, world: World):
    alpha = world.add("alpha")
    insert(db, "acme", state="deprovisioning")

    assert world.deprovision("acme", MESSAGE).result == RunResult.DEPROVISIONED
    assert alpha.request_count() == 0


def test_a_slot_freed_by_a_deletion_places_the_oldest_waiting_tenant_at_once(db, world: World):
    # Given two servers of 2 slots, full, and a reconcile run that has seen them full
    world.add("n1", limit=2)
    world.add("n2", limit=2)
    for tenant_id in ("a", "b", "c", "d"):
        insert(db, tenant_id)
        assert world.provision(tenant_id).result is RunResult.PROVISIONED
    world.clock.advance(60)
    reconcile(get_engine(), world.pool(), world.settings, Published(), clock=world.clock)
    full = db.execute("SELECT count(*) FROM influxdb_nodes WHERE full_since IS NOT NULL")
    assert full.fetchone()[0] == 2
    # ... and two tenants waiting for capacity, the older first
    insert(db, "older", at=world.clock.advance(1))
    insert(db, "newer", at=world.clock.advance(1))
    for tenant_id in ("older", "newer"):
        assert world.provision(tenant_id).result is RunResult.WAITING_FOR_CAPACITY
    on_n1 = db.execute("SELECT tenant_id FROM tenants WHERE influxdb_node = 'n1' LIMIT 1")
    deleted = on_n1.fetchone()[0]

    # When a tenant on n1 is deleted
    db.execute(
        "UPDATE tenants SET influxdb_state = 'deprovisioning' WHERE tenant_id = %s", (deleted,)
    )
    outcome = world.deprovision(deleted, MESSAGE)

    # Then n1 is no longer full, and the older waiting tenant goes on at once, to n1
    assert (outcome.result, outcome.unwaited) == (RunResult.DEPROVISIONED, ("older",))
    assert (
        db.execute("SELECT full_since FROM influxdb_nodes WHERE name = 'n1'").fetchone()[0] is None
    )
    assert tenant_row(db, "newer")["influxdb_state"] == "waiting_for_capacity"
    assert world.provision("older").result is RunResult.PROVISIONED
    assert tenant_row(db, "older")["influxdb_node"] == "n1"


def test_a_slot_freed_is_the_oldest_waiting_tenant_s_even_when_a_newer_run_comes_first(
    db, world: World
):
    # Given a server of one slot holding acme, a tenant waiting for that slot, and a tenant
    # created after it whose run has not come yet (a backlog)
    alpha = world.add("alpha", limit=1)
    for tenant_id in ("acme", "waiting"):
        insert(db, tenant_id, at=world.clock.advance(1))
        world.provision(tenant_id)
    assert tenant_row(db, "waiting")["influxdb_state"] == "waiting_for_capacity"
    insert(db, "newer", at=world.clock.advance(1))

    # When acme is deleted, and the newer tenant's run comes before the waiting one's
    with get_engine().begin() as conn:
        assert store.request_deletion(conn, "acme", world.clock())
    assert world.deprovision("acme").unwaited == ("waiting",)
    assert world.provision("newer").result is RunResult.WAITING_FOR_CAPACITY

    # Then the slot was kept for the waiting tenant, and the newer one waits behind it
    # without asking the server for a database
    assert tenant_row(db, "waiting")["influxdb_node"] == "alpha"
    assert world.provision("waiting").result is RunResult.PROVISIONED
    assert alpha.databases() == ["telemetry_waiting"]
    assert tenant_row(db, "newer")["influxdb_state"] == "waiting_for_capacity"


def test_a_slot_freed_is_never_seen_free_by_a_newer_tenant_s_run(db, world: World):
    # Given a server of one slot holding acme, a tenant waiting for it, and a newer tenant
    alpha = world.add("alpha", limit=1)
    for tenant_id in ("acme", "waiting"):
        insert(db, tenant_id, at=world.clock.advance(1))
        world.provision(tenant_id)
    insert(db, "newer", at=world.clock.advance(1))
    with get_engine().begin() as conn:
        assert store.request_deletion(conn, "acme", world.clock())

    # When the newer tenant's run comes the moment acme's row is gone (on another worker),
    # before the deletion goes on to un-wait anyone
    newer: list[RunResult] = []

    class RightAfterTheRowWent(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("tenant deprovisioned; its slot and id are free"):
                newer.append(world.provision("newer").result)

    handler, logger = RightAfterTheRowWent(), logging.getLogger("worker.deprovisioning")
    kept = logger.level, logger.disabled
    logger.disabled = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        outcome = world.deprovision("acme")
    finally:
        logger.removeHandler(handler)
        logger.disabled = kept[1]
        logger.setLevel(kept[0])

    # Then the slot was already the waiting tenant's: the newer one waits behind it
    assert newer == [RunResult.WAITING_FOR_CAPACITY]
    assert outcome.unwaited == ("waiting",)
    assert world.provision("waiting").result is RunResult.PROVISIONED
    assert alpha.databases() == ["telemetry_waiting"]


def test_a_tenant_deleted_while_it_only_holds_a_reserved_slot_is_deleted_at_once(db, world: World):
    # Given a slot on alpha reserved for "waiting" (its run has not come), and then alpha left
    # the nodes file
    alpha = slot_reserved(db, world)
    world.unlisted.add("alpha")
    world.add("beta")
    requests = alpha.request_count()

    # When the waiting tenant is deleted before its run comes
    with get_engine().begin() as conn:
        assert store.request_deletion(conn, "waiting", world.clock())

    # Then nothing of it is on any server: it is deleted without waiting for alpha or asking it
    assert world.deprovision("waiting").result == RunResult.DEPROVISIONED
    assert tenant_row(db, "waiting") is None
    assert alpha.request_count() == requests


def test_a_slot_freed_goes_first_to_a_tenant_sent_earlier_that_got_none(db, world: World):
    # Given a server of one slot holding acme; "first" was sent on by an un-wait but got no
    # slot (a newer tenant took that room), its run not come yet; "second" still waits
    world.add("alpha", limit=1)
    for tenant_id in ("acme", "first", "second"):
        insert(db, tenant_id, at=world.clock.advance(1))
        world.provision(tenant_id)
    db.execute("UPDATE tenants SET influxdb_state = 'pending' WHERE tenant_id = 'first'")
    with get_engine().begin() as conn:
        assert store.request_deletion(conn, "acme", world.clock())

    # When acme's deletion frees its slot, then it goes to "first", sent before "second"
    assert world.deprovision("acme").unwaited == ("first",)
    assert tenant_row(db, "first")["influxdb_node"] == "alpha"
    assert tenant_row(db, "second")["influxdb_state"] == "waiting_for_capacity"
    assert world.provision("first").result is RunResult.PROVISIONED


def test_deleting_a_tenant_that_only_holds_a_reserved_slot_hands_the_slot_on(db, influx, broker):
    # Given the one server ("default", 5 slots) full: four tenants, and "first", whose wait
    # for capacity ended with the last slot reserved for it, its run not come; "second" waits
    with get_engine().connect() as conn:
        sync_nodes(conn, nodes.shared_pool().nodes(), force=True)
    for number in range(4):
        insert(db, f"t{number}", state="provisioned", node="default", provisioned_at=T0)
    insert(db, "first", state="pending", node="default", error_reason="database_limit")
    insert(db, "second", state="waiting_for_capacity", at=T0 + timedelta(seconds=1))

    # When the operator deletes "first" before its run comes
    try:
        delete_tenant("first")
    finally:
        broker.flushdb()

    # Then the slot went on to "second" in the same request: a newer tenant cannot take it
    second = tenant_row(db, "second")
    assert (second["influxdb_state"], second["influxdb_node"]) == ("pending", "default")
    assert tenant_row(db, "first")["influxdb_node"] is None


def test_a_deletion_frees_the_tenant_s_lock_before_it_un_waits_others(db, world: World):
    # Given a server of one slot holding acme, two tenants waiting for room, and beta, one
    # slot, added to the nodes file since (no reconcile run has un-waited anyone for it)
    world.add("alpha", limit=1)
    for tenant_id in ("acme", "first", "waiting"):
        insert(db, tenant_id, at=world.clock.advance(1))
        world.provision(tenant_id)
    assert tenant_row(db, "waiting")["influxdb_state"] == "waiting_for_capacity"
    world.add("beta", limit=1)
    db.execute("UPDATE tenants SET influxdb_state = 'deprovisioning' WHERE tenant_id = 'acme'")

    # When acme's deletion frees its slot (handed to the first waiting tenant as the row goes)
    # and then un-waits the other for the room it sees on beta
    key, free_then = advisory_lock_key("acme"), []

    class AtTheUnwait(logging.Handler):  # where the deletion says it un-waits
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("a slot freed on node alpha: 1 waiting"):
                took = db.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                db.execute("SELECT pg_advisory_unlock(%s)", (key,))
                free_then.append(took == (True,) and tenant_row(db, "acme") is None)

    handler, logger = AtTheUnwait(), logging.getLogger("worker.node_marks")
    kept = logger.level, logger.disabled  # (a logging set-up of an earlier test may disable it)
    logger.disabled = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        outcome = world.deprovision("acme", MESSAGE)
    finally:
        logger.removeHandler(handler)
        logger.disabled = kept[1]
        logger.setLevel(kept[0])

    # Then by then the row was gone and the id's lock free: a run of a tenant made again
    # with the id is not turned away (BUSY) while the deletion un-waits others
    assert (outcome.result, outcome.unwaited) == (RunResult.DEPROVISIONED, ("first", "waiting"))
    assert free_then == [True]
    assert (
        tenant_row(db, "first")["influxdb_node"],
        tenant_row(db, "waiting")["influxdb_node"],
    ) == (
        "alpha",
        "beta",
    )


def deletion_waiting_its_turn(db: Any, world: World) -> None:
    """Given acme provisioned on alpha, then deleted: its run waits for the location clients
    (10 s), its retry scheduled as delete-a:1."""
    world.add("alpha")
    insert(db, "acme")
    world.provision("acme")
    db.execute("UPDATE tenants SET influxdb_state = 'deprovisioning' WHERE tenant_id = 'acme'")
    world.overrides["locations_max_staleness_seconds"] = 10.0
    assert world.deprovision("acme", MESSAGE).result == RunResult.WAITING_FOR_CLIENTS


def test_an_operator_retry_of_a_deletion_waiting_its_turn_takes_its_chain(db, world, broker):
    # Given a deletion whose wait for the location clients scheduled its retry (delete-a:1)
    deletion_waiting_its_turn(db, world)

    # When the operator asks for it to run now
    try:
        assert request_provisioning("acme")
    finally:
        broker.flushdb()

    # Then the operator's message carries the deletion's chain from now on, not the schedule
    chain = tenant_row(db, "acme")["influxdb_retry_chain"]
    assert chain not in (None, "delete-a:1") and chain.endswith(":0")


def test_a_deletion_sent_again_for_a_busy_lock_still_owns_its_chain(db, world: World):
    # Given a deletion whose wait for the location clients scheduled its retry (delete-a:1)
    deletion_waiting_its_turn(db, world)
    assert tenant_row(db, "acme")["influxdb_retry_chain"] == "delete-a:1"
    world.clock.advance(10)

    # When that retry found the lock busy and was sent again (Celery counts it: delete-a:2),
    # then a duplicate of an earlier delivery, or another message, is still absorbed ...
    for other in (MESSAGE, Delivery.of("delete-b", 2)):
        assert world.deprovision("acme", other).result == RunResult.ABSORBED
    # ... and the message sent again finishes the deletion, not left to the reconciler
    assert world.deprovision("acme", Delivery.of("delete-a", 2)).result == RunResult.DEPROVISIONED
    assert tenant_row(db, "acme") is None


def test_a_deletion_waiting_for_a_server_gone_for_good_is_forgotten_by_an_operator(
    db, world: World, monkeypatch
):
    # Given a tenant being deleted on a server that left the nodes file for good: it waits
    world.add("alpha")
    monkeypatch.setattr(nodes, "_shared", world.pool())
    monkeypatch.setattr(nodes, "_shared_pid", os.getpid())  # this process's pool: the world's
    insert(db, "acme", state="deprovisioning", node="gone")
    world.deprovision("acme", MESSAGE)
    assert tenant_row(db, "acme")["influxdb_error_reason"] == "node_not_configured"

    # When an operator forgets it
    assert cli_main(["forget", "acme"]) == 0

    # Then its row is gone, no server asked, and the events say who did it and where its data
    # may still be
    assert tenant_row(db, "acme") is None
    assert world.servers["alpha"].request_count() == 0
    listed = db.execute("SELECT type FROM tenant_events WHERE tenant_id = 'acme' ORDER BY id")
    types = [t for (t,) in listed]
    assert types[-2:] == ["operator.forget", "tenant.deprovisioned"]
    assert deprovisioned_event(db, "acme")["kept_on"] == "gone"

    # And a tenant whose deletion can go on (its server in this nodes file, or in the one the
    # workers last wrote down), or that is not being deleted, is refused as it is
    insert(db, "here", state="deprovisioning", node="alpha")
    db.execute(
        "INSERT INTO influxdb_nodes (name, database_limit, configured) VALUES ('theirs', 5, true)"
    )
    insert(db, "there", state="deprovisioning", node="theirs")
    db.execute(
        "INSERT INTO influxdb_nodes (name, database_limit, configured, observed_at) "
        "VALUES ('listed', 5, false, now() - interval '5 minutes')"
    )
    insert(db, "seen", state="deprovisioning", node="listed")  # (a file out of date somewhere)
    insert(db, "live", state="provisioned", node="gone")
    refused = [cli_main(["forget", t]) for t in ("here", "there", "seen", "live", "nobody")]
    assert refused == [2, 2, 2, 2, 3]
    assert [tenant_row(db, t)["influxdb_state"] for t in ("here", "there", "seen", "live")] == [
        "deprovisioning",
        "deprovisioning",
        "deprovisioning",
        "provisioned",
    ]
