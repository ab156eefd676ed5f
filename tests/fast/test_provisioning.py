"""The provisioning state machine, one transition per test, in-process: the clock is frozen and
the random source seeded, so every delay and timestamp is exact."""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from celery.exceptions import SoftTimeLimitExceeded

from api_hooks.errors import TenantBusy, UnknownNode
from api_hooks.tenants import adopt_database
from tests.conftest import INFLUX_TOKEN, existing_database, tenant_row, write_points
from tests.fast.conftest import SEED, World, full_with_one_waiting, insert, slot_reserved
from worker import nodes, placement, store
from worker.db import autocommit, get_engine
from worker.placement import NoFreeNode, start_on_free_node, sync_nodes
from worker.runs import Delivery, tenant_lock
from worker.states import Reason, RunResult

MESSAGE = Delivery.of("message-a", 0)
OTHER = Delivery.of("message-b", 0)


def attempt_log(db, tenant_id):
    return db.execute(
        "SELECT attempt, outcome, reason, retry_at FROM provisioning_attempts "
        "WHERE tenant_id = %s ORDER BY id",
        (tenant_id,),
    ).fetchall()


def test_a_pending_tenant_is_provisioned_with_its_incarnation_in_the_marker(db, world: World):
    server = world.add("alpha")
    row = insert(db, "acme")

    outcome = world.provision("acme", MESSAGE)

    assert (outcome.result, outcome.attempt) == (RunResult.PROVISIONED, 1)
    after = tenant_row(db, "acme")
    assert after["influxdb_state"] == "provisioned"
    assert after["influxdb_node"] == "alpha"
    assert after["influxdb_provisioned_at"] == world.clock.now
    assert after["influxdb_create_sent_to"] is None
    markers = server.rows("telemetry_acme", "_init")
    assert [m["incarnation"] for m in markers] == [row["influxdb_incarnation"]]
    assert attempt_log(db, "acme") == [(1, "provisioned", None, None)]


def test_a_transient_error_schedules_exactly_one_retry_from_the_backoff(db, world: World):
    world.add("alpha").set_faults(error_rate=1.0)
    insert(db, "acme")

    outcome = world.provision("acme", MESSAGE)

    settings = world.settings
    ceiling = min(settings.backoff_cap_seconds, settings.backoff_base_seconds)
    expected = random.Random(SEED).uniform(0, ceiling)
    assert (outcome.result, outcome.retry_in) == (RunResult.RETRYING, expected)
    row = tenant_row(db, "acme")
    assert row["influxdb_state"] == "retrying"
    assert row["influxdb_error_reason"] == "server_error"
    assert row["influxdb_next_attempt_at"] == world.clock.now + timedelta(seconds=expected)
    assert row["influxdb_retry_chain"] == MESSAGE.retry  # its own retry owns the schedule
    assert attempt_log(db, "acme") == [
        (1, "retrying", "server_error", row["influxdb_next_attempt_at"])
    ]


def test_the_backoff_ceiling_doubles_per_attempt_up_to_the_cap(db, world: World):
    world.add("alpha").set_faults(error_rate=1.0)
    world.overrides = {"max_attempts": 20}
    insert(db, "acme")
    settings = world.settings
    delivery = MESSAGE
    for attempt in range(1, 9):
        outcome = world.provision("acme", delivery, seed=attempt)
        ceiling = min(
            settings.backoff_cap_seconds, settings.backoff_base_seconds * 2 ** (attempt - 1)
        )
        assert outcome.retry_in == random.Random(attempt).uniform(0, ceiling), attempt
        delivery = Delivery(delivery.retry, delivery.retry + "'")
    assert tenant_row(db, "acme")["influxdb_attempts"] == 8


def test_another_message_is_absorbed_while_a_retry_is_scheduled(db, world: World):
    server = world.add("alpha")
    insert(db, "acme", state="retrying", retry_chain=MESSAGE.retry, node="alpha")
    before = server.request_count()

    outcome = world.provision("acme", OTHER)

    assert outcome.result == RunResult.ABSORBED
    assert server.request_count() == before
    assert tenant_row(db, "acme")["influxdb_state"] == "retrying"


def test_the_message_that_owns_the_chain_runs_the_retry(db, world: World):
    world.add("alpha")
    insert(db, "acme", state="retrying", retry_chain=MESSAGE.message, node="alpha", attempts=1)

    outcome = world.provision("acme", MESSAGE)

    assert (outcome.result, outcome.attempt) == (RunResult.PROVISIONED, 2)
    assert tenant_row(db, "acme")["influxdb_retry_chain"] is None


def test_the_last_allowed_attempt_fails_with_its_reason(db, world: World):
    world.add("alpha").set_faults(error_rate=1.0)
    attempts = world.settings.max_attempts - 1
    insert(db, "acme", state="retrying", retry_chain=MESSAGE.message, attempts=attempts)

    outcome = world.provision("acme", MESSAGE)

    assert (outcome.result, outcome.reason) == (RunResult.FAILED, "server_error")
    row = tenant_row(db, "acme")
    assert row["influxdb_state"] == "failed"
    assert row["influxdb_last_error"].startswith(f"gave up after {attempts + 1} attempts")
    assert row["influxdb_next_attempt_at"] is None


def test_a_rejected_token_fails_at_once_and_gives_the_slot_back(db, world: World):
    world.add("alpha").set_token("not-ours")
    insert(db, "acme")

    outcome = world.provision("acme", MESSAGE)

    assert (outcome.result, outcome.reason) == (RunResult.FAILED, "unauthorized")
    row = tenant_row(db, "acme")
    assert (row["influxdb_node"], row["influxdb_attempts"]) == (None, 1)


def test_a_server_that_refused_our_token_does_not_take_the_next_tenants(db, world: World):
    # Given alpha, the least used, refusing our token, and beta with room
    world.add("alpha").set_token("not-ours")
    world.add("beta")
    insert(db, "busy", state="provisioned", node="beta")
    for tenant_id in ("first", "second", "third"):
        insert(db, tenant_id)

    outcomes = [world.provision(t, MESSAGE).result for t in ("first", "second", "third")]

    # Then only the tenant that found out fails; the next ones go where they can be made
    assert outcomes == [RunResult.FAILED, RunResult.PROVISIONED, RunResult.PROVISIONED]
    assert [tenant_row(db, t)["influxdb_node"] for t in ("second", "third")] == ["beta"] * 2
    marks = db.execute(
        "SELECT unavailable_since, unavailable_reason FROM influxdb_nodes WHERE name = 'alpha'"
    ).fetchone()
    assert marks == (world.clock.now, "unauthorized")


def test_a_422_moves_the_tenant_to_the_next_server_in_the_same_run(db, world: World):
    alpha = world.add("alpha")
    world.add("beta")
    for i in range(5):
        alpha.create_database(f"by_hand_{i}")  # full, though our count says empty
    insert(db, "acme")

    outcome = world.provision("acme", MESSAGE)

    assert outcome.result == RunResult.PROVISIONED
    assert tenant_row(db, "acme")["influxdb_node"] == "beta"
    assert [(a, o, r) for a, o, r, _ in attempt_log(db, "acme")] == [
        (1, "node_full", "database_limit"),
        (2, "provisioned", None),
    ]
    full = db.execute("SELECT full_since FROM influxdb_nodes WHERE name = 'alpha'").fetchone()
    assert full == (world.clock.now,)


def test_no_room_anywhere_waits_for_capacity_without_an_attempt(db, world: World):
    world.add("alpha", limit=1)
    insert(db, "first", state="provisioned", node="alpha")
    insert(db, "acme", attempts=3)

    outcome = world.provision("acme", MESSAGE)

    assert outcome.result == RunResult.WAITING_FOR_CAPACITY
    row = tenant_row(db, "acme")
    assert (row["influxdb_state"], row["influxdb_attempts"]) == ("waiting_for_capacity", 0)
    assert attempt_log(db, "acme") == []


def test_a_slot_freed_while_a_run_decides_to_wait_is_not_missed(db, world: World, monkeypatch):
    # Given a full server of one slot, and a run that has just found no room for "acme"
    world.add("alpha", limit=1)
    insert(db, "first")
    assert world.provision("first").result == RunResult.PROVISIONED
    insert(db, "acme")
    choose = placement.choose_node

    def deletion_in_between(*args: object, **kwargs: object) -> str | None:
        chosen = choose(*args, **kwargs)
        if chosen is None:
            # When, before that run writes its wait down, a deletion frees the slot: its
            # un-wait finds nobody waiting yet
            db.execute(
                "UPDATE tenants SET influxdb_state = 'deprovisioning' WHERE tenant_id = 'first'"
            )
            freed = world.deprovision("first", Delivery.of("delete-first", 0))
            assert (freed.result, freed.unwaited) == (RunResult.DEPROVISIONED, ())
        return chosen

    monkeypatch.setattr(placement, "choose_node", deletion_in_between)
    outcome = world.provision("acme", MESSAGE)

    # Then the run that waited sees the room once its wait is written, and ends the wait:
    # "acme" is queued now, not a reconcile interval later
    assert (outcome.result, outcome.unwaited) == (RunResult.WAITING_FOR_CAPACITY, ("acme",))
    assert tenant_row(db, "acme")["influxdb_state"] == "pending"
    monkeypatch.undo()
    assert world.provision("acme", MESSAGE).result == RunResult.PROVISIONED


def test_a_database_of_unknown_origin_is_name_taken_and_not_used(db, world: World):
    alpha = world.add("alpha")
    existing_database(alpha, "acme", points=3)
    insert(db, "acme")

    outcome = world.provision("acme", MESSAGE)

    assert (outcome.result, outcome.reason) == (RunResult.FAILED, "name_taken")
    row = tenant_row(db, "acme")
    assert row["influxdb_node"] == "alpha"  # it stays where the name is taken
    assert "node alpha" in row["influxdb_last_error"]
    assert [m.get("incarnation") for m in alpha.rows("telemetry_acme", "_init")] == [None]


def test_an_adopted_database_is_provisioned_with_its_data(db, world: World):
    alpha = world.add("alpha")
    existing_database(alpha, "acme", points=3, incarnation="someone-else")
    row = insert(db, "acme", state="pending", node="alpha", adopt="any")

    assert world.provision("acme", MESSAGE).result == RunResult.PROVISIONED
    marks = {m.get("incarnation") for m in alpha.rows("telemetry_acme", "_init")}
    assert marks == {"someone-else", row["influxdb_incarnation"]}
    assert len(alpha.rows("telemetry_acme", "telemetry")) == 3


def test_an_adoption_goes_with_its_server_when_that_server_refuses_the_tenant(
    db, world: World, caplog
):
    # Given an adoption on alpha, which holds no database of the name and is full, and on
    # beta a database of the name marked for someone else
    alpha = world.add("alpha", limit=1)
    alpha.create_database("telemetry_other")
    beta = world.add("beta")
    existing_database(beta, "acme", points=3, incarnation="someone-else")
    insert(db, "acme", state="pending", node="alpha", adopt="any")

    # When its run meets alpha full (422) and places it on beta
    caplog.set_level(logging.INFO, logger="worker.provisioning")
    outcome = world.provision("acme", MESSAGE)

    # Then the adoption went with alpha: beta's database is a stranger's, left untouched
    assert (outcome.result, outcome.reason) == (RunResult.FAILED, "name_taken")
    assert "starting over" not in caplog.text  # the run knew what it wrote: no restart
    row = tenant_row(db, "acme")
    assert (row["influxdb_node"], row["influxdb_adopt"]) == ("beta", None)
    assert [m.get("incarnation") for m in beta.rows("telemetry_acme", "_init")] == ["someone-else"]


def test_an_adoption_goes_with_its_server_into_a_wait_for_room(db, world: World):
    # Given an adoption on alpha, which holds no database of the name and is full
    alpha = world.add("alpha", limit=1)
    alpha.create_database("telemetry_other")
    insert(db, "acme", state="pending", node="alpha", adopt="any")

    # When its run finds no room anywhere
    outcome = world.provision("acme", MESSAGE)

    # Then it waits as a new tenant does: whatever server it gets, the strict rule holds there
    assert outcome.result == RunResult.WAITING_FOR_CAPACITY
    row = tenant_row(db, "acme")
    assert (row["influxdb_node"], row["influxdb_adopt"]) == (None, None)


def test_a_provisioned_tenant_moves_off_a_server_that_left_the_nodes_file(
    db, world: World, monkeypatch
):
    # Given a tenant provisioned on alpha, with points
    alpha, beta = world.add("alpha"), world.add("beta")
    insert(db, "acme")
    assert world.provision("acme", MESSAGE).result == RunResult.PROVISIONED
    monkeypatch.setattr(nodes, "_shared", world.pool())  # the hooks' pool is the world's
    monkeypatch.setattr(nodes, "_shared_pid", os.getpid())
    # While alpha is configured, it cannot adopt a database elsewhere
    with pytest.raises(TenantBusy, match="left the nodes file"):
        adopt_database("acme", "beta")

    # When alpha is being retired: its database copied to beta, alpha out of the nodes file,
    # and the operator adopts the copy there (runbook, "Node not configured")
    existing_database(
        beta, "acme", points=3, incarnation=tenant_row(db, "acme")["influxdb_incarnation"]
    )
    world.unlisted.add("alpha")
    monkeypatch.setattr(nodes, "_shared", world.pool())
    assert adopt_database("acme", "beta") in (True, False)  # queued, or left to the reconciler

    # Then its run provisions it on beta, with the data
    assert world.provision("acme", MESSAGE).result == RunResult.PROVISIONED
    row = tenant_row(db, "acme")
    assert (row["influxdb_node"], row["influxdb_adopt"]) == ("beta", None)
    assert len(beta.rows("telemetry_acme", "telemetry")) == 3 and alpha.create_calls() == 1


def test_a_409_after_our_own_unanswered_create_is_ours(db, world: World):
    alpha = world.add("alpha")
    alpha.create_database("telemetry_acme")  # our earlier create landed; we never saw the 200
    insert(db, "acme", state="retrying", node="alpha", create_sent_to="alpha", attempts=1)

    assert world.provision("acme").result == RunResult.PROVISIONED


def test_a_409_after_our_unanswered_create_on_a_database_writers_made_is_not_ours(db, world: World):
    # Given a database of the tenant's name that a late writer of an earlier tenant of this id
    # made (its points, no marker), on the server our create went to and never answered
    alpha = world.add("alpha")
    write_points(alpha, "telemetry_acme", "telemetry,device=d1 temp=20i")
    insert(db, "acme", state="retrying", node="alpha", create_sent_to="alpha", attempts=1)

    # When the run meets it (409 on create)
    outcome = world.provision("acme")

    # Then it is not taken for the tenant's: name_taken, no marker written into it
    assert (outcome.result, outcome.reason) == (RunResult.FAILED, Reason.NAME_TAKEN)
    assert alpha.rows("telemetry_acme", "_init") == []


def test_a_409_on_the_tenants_own_database_past_its_retention_period_is_ours(db, world: World):
    # Given the tenant's own database, made by an earlier run of it, keeping 1 h of data, and
    # its marker (the creation's time, 2 h ago by the stand-in's wall clock) hidden by that
    alpha = world.add("alpha")
    insert(db, "acme", at=datetime.now(UTC) - timedelta(hours=2), retention_period="1h")
    assert world.provision("acme", MESSAGE).result == RunResult.PROVISIONED
    assert alpha.rows("telemetry_acme", "_init")  # stored, but no query shows it
    db.execute("UPDATE tenants SET influxdb_state = 'retrying' WHERE tenant_id = 'acme'")

    # When a run meets it again (409 on create)
    outcome = world.provision("acme", OTHER)

    # Then the schema's incarnation column says it is the tenant's: not name_taken
    assert outcome.result == RunResult.PROVISIONED, tenant_row(db, "acme")["influxdb_last_error"]


def test_a_row_from_before_the_worker_is_located_on_the_server_holding_it(db, world: World):
    world.add("alpha")
    beta = world.add("beta")
    existing_database(beta, "acme", points=7)
    insert(db, "acme", adopt="unmarked")

    assert world.provision("acme", MESSAGE).result == RunResult.PROVISIONED

    row = tenant_row(db, "acme")
    assert (row["influxdb_node"], row["influxdb_adopt"]) == ("beta", None)
    assert world.servers["alpha"].create_calls() == 0
    assert len(beta.rows("telemetry_acme", "telemetry")) == 7


def test_a_silent_server_means_unknown_and_nothing_is_placed(db, world: World):
    alpha = world.add("alpha")
    world.add("beta").set_outage(True)
    insert(db, "acme", adopt="unmarked")

    outcome = world.provision("acme", MESSAGE)

    assert (outcome.result, outcome.reason) == (RunResult.RETRYING, "unreachable")
    assert tenant_row(db, "acme")["influxdb_node"] is None
    assert alpha.create_calls() == 0


def test_a_copy_on_one_server_is_no_home_while_another_is_silent(db, world: World):
    # Given a row from before the worker whose database (7 points) is on alpha, and a stray of
    # its name (a misrouted write) on beta, and alpha down while the run locates it
    alpha = world.add("alpha")
    beta = world.add("beta")
    existing_database(alpha, "acme", points=7)
    write_points(beta, "telemetry_acme", "telemetry,device=d1 v=1i")
    insert(db, "acme", adopt="unmarked")
    alpha.set_outage(True)

    # When the worker runs it
    outcome = world.provision("acme", MESSAGE)

    # Then it waits for alpha to answer; it does not take the stray on beta as its home
    assert (outcome.result, outcome.reason) == (RunResult.RETRYING, "unreachable")
    assert tenant_row(db, "acme")["influxdb_node"] is None

    # And once alpha answers, both copies are seen: the operator chooses (name_taken)
    alpha.set_outage(False)
    world.clock.advance(3600)
    outcome = world.provision("acme", Delivery.of(MESSAGE.task_id, 1))  # its retry
    assert (outcome.result, outcome.reason) == (RunResult.FAILED, "name_taken")
    assert len(alpha.rows("telemetry_acme", "telemetry")) == 7


def test_a_tenant_whose_name_proves_taken_no_longer_counts_as_provisioned(db, world: World):
    # Given a provisioned tenant whose database was deleted behind our back and made again by
    # someone else (their marker), and the tenant sent back to pending, as drift is
    alpha = world.add("alpha")
    insert(db, "acme")
    assert world.provision("acme", MESSAGE).result == RunResult.PROVISIONED
    alpha.delete_database("telemetry_acme")
    existing_database(alpha, "acme", points=2, incarnation="someone-else")
    db.execute("UPDATE tenants SET influxdb_state = 'pending' WHERE tenant_id = 'acme'")

    # When its run finds the name taken
    outcome = world.provision("acme", OTHER)

    # Then it is no longer taken for the owner of a database of its name: deleted or retried,
    # its stats never count the other's rows
    assert (outcome.result, outcome.reason) == (RunResult.FAILED, "name_taken")
    assert tenant_row(db, "acme")["influxdb_provisioned_at"] is None


def test_a_row_from_before_the_worker_found_nowhere_gets_a_new_home(db, world: World):
    world.add("alpha")
    insert(db, "acme", adopt="unmarked")

    assert world.provision("acme", MESSAGE).result == RunResult.PROVISIONED
    assert tenant_row(db, "acme")["influxdb_node"] == "alpha"


def test_room_added_to_the_nodes_file_goes_to_the_waiting_before_a_newer_tenant(db, world: World):
    # Given alpha, one slot, full with acme, and "waiting" waiting for room
    full_with_one_waiting(db, world)

    # When beta, one slot, joins the nodes file, and a newer tenant's run is the first to
    # write the file down (before any reconcile run)
    beta = world.add("beta", limit=1)
    insert(db, "newer", at=world.clock.advance(1))
    outcome = world.provision("newer")

    # Then that run gave beta's slot to the waiting tenant (sent on), and the newer one waits
    assert (outcome.result, outcome.unwaited) == (RunResult.WAITING_FOR_CAPACITY, ("waiting",))
    assert world.provision("waiting").result is RunResult.PROVISIONED
    assert beta.databases() == ["telemetry_waiting"]


def test_a_slot_reserved_on_a_server_that_left_the_nodes_file_is_let_go(db, world: World):
    # Given alpha full with acme, and "waiting" waiting; acme's deletion reserves its slot
    alpha = slot_reserved(db, world)
    assert tenant_row(db, "waiting")["influxdb_node"] == "alpha"

    # When alpha leaves the nodes file for beta before the waiting tenant's run comes
    world.unlisted.add("alpha")
    beta = world.add("beta")

    # Then nothing of it was ever sent to alpha: it is placed on beta, not kept waiting
    assert world.provision("waiting").result == RunResult.PROVISIONED
    assert tenant_row(db, "waiting")["influxdb_node"] == "beta"
    assert (alpha.databases(), beta.databases()) == ([], ["telemetry_waiting"])


def test_a_server_that_left_the_nodes_file_keeps_its_tenants(db, world: World):
    world.add("alpha")
    beta = world.add("beta")
    world.unlisted.add("alpha")
    insert(db, "waiting", state="retrying", node="alpha", retry_chain=MESSAGE.message)
    insert(db, "done", state="provisioned", node="alpha")

    assert world.provision("waiting", MESSAGE).result == RunResult.WAITING_FOR_NODE
    assert world.provision("done", OTHER).result == RunResult.WAITING_FOR_NODE

    waiting = tenant_row(db, "waiting")
    assert (waiting["influxdb_state"], waiting["influxdb_node"]) == ("pending", "alpha")
    assert waiting["influxdb_error_reason"] == "node_not_configured"
    assert tenant_row(db, "done")["influxdb_state"] == "provisioned"
    assert beta.create_calls() == 0


def test_attempts_used_up_by_runs_that_never_finished_end_as_worker_lost(db, world: World):
    world.add("alpha")
    attempts = world.settings.max_attempts
    insert(db, "acme", state="pending", node="alpha", attempts=attempts, error_reason="worker_lost")

    outcome = world.provision("acme", MESSAGE)

    assert (outcome.result, outcome.reason) == (RunResult.FAILED, "worker_lost")
    assert world.servers["alpha"].create_calls() == 0


def test_a_last_attempt_that_did_its_work_unsaid_is_found_out_by_one_more(db, world: World):
    # Given a tenant whose last allowed attempt sent its create and wrote its marker, and
    # whose worker died before it could say so
    alpha = world.add("alpha")
    last = world.settings.max_attempts
    insert(db, "acme", state="pending", node="alpha", attempts=last, create_sent_to="alpha")
    incarnation = tenant_row(db, "acme")["influxdb_incarnation"]
    existing_database(alpha, "acme", points=0, incarnation=incarnation)

    # When its next run comes
    outcome = world.provision("acme", MESSAGE)

    # Then one more attempt finds the work done: provisioned, not failed as worker_lost
    assert (outcome.result, outcome.attempt) == (RunResult.PROVISIONED, last + 1)

    # But past that one, a run whose worker died again gives up without a call
    insert(db, "dies", state="pending", node="alpha", attempts=last + 1, create_sent_to="alpha")
    outcome = world.provision("dies", MESSAGE)
    assert (outcome.result, outcome.reason) == (RunResult.FAILED, "worker_lost")
    assert alpha.create_calls("telemetry_dies") == 0


def test_a_repair_after_success_starts_a_new_episode(db, world: World):
    world.add("alpha").set_faults(error_rate=0.0)
    attempts = world.settings.max_attempts - 1
    insert(db, "acme", state="provisioned", node="alpha", attempts=attempts)  # database gone

    outcome = world.provision("acme", MESSAGE)

    assert (outcome.result, outcome.attempt) == (RunResult.PROVISIONED, 1)


def test_a_provisioned_tenant_whose_database_is_there_is_only_verified(db, world: World):
    alpha = world.add("alpha")
    insert(db, "acme")
    world.provision("acme", MESSAGE)
    creates = alpha.create_calls()

    assert world.provision("acme", OTHER).result == RunResult.ALREADY_PROVISIONED
    assert alpha.create_calls() == creates


def test_a_tenant_held_by_another_run_is_left_to_it(db, world: World):
    alpha = world.add("alpha")
    insert(db, "acme")
    with get_engine().connect() as holder, tenant_lock(holder, "acme") as acquired:
        assert acquired
        busy = world.provision("acme", MESSAGE)
    # (a running tenant's chain is its run's: this message gives up, sent again it would be a
    # second chain)
    assert (busy.result, busy.retry_in) == (RunResult.BUSY, None)
    assert alpha.create_calls() == 0


def test_the_owner_of_a_scheduled_retry_comes_back_when_the_tenant_is_held(db, world: World):
    # Given a tenant whose retry is scheduled (an operator's "run now" hands it on so), and
    # another run holding the tenant when that retry arrives
    alpha = world.add("alpha")
    insert(db, "acme", state="retrying", retry_chain=MESSAGE.message, node="alpha", attempts=1)
    base = world.settings.backoff_base_seconds
    with get_engine().connect() as holder, tenant_lock(holder, "acme") as acquired:
        assert acquired
        # Then the owner hands the retry to itself sent again, and again if it finds the
        # tenant held again ...
        for owner in (MESSAGE, Delivery.of("message-a", 1)):
            busy = world.provision("acme", owner)
            assert (busy.result, busy.retry_in) == (RunResult.BUSY, base)
            assert tenant_row(db, "acme")["influxdb_retry_chain"] == owner.retry
        # ... while any other message gives up, a copy of one it replaced included (a copy of
        # the holder's own message: that run, before its attempt, now finds the chain gone)
        for other in (OTHER, MESSAGE):
            assert world.provision("acme", other).retry_in is None
    assert alpha.create_calls() == 0
    assert world.provision("acme", MESSAGE).result == RunResult.ABSORBED

    # And once the holder is done, the owner sent again runs the retry (not the reconciler)
    outcome = world.provision("acme", Delivery.of("message-a", 2))
    assert (outcome.result, outcome.attempt) == (RunResult.PROVISIONED, 2)


def test_failed_and_deleted_tenants_are_skipped(db, world: World):
    world.add("alpha")
    insert(db, "broken", state="failed", error_reason="unauthorized")
    insert(db, "leaving", state="deprovisioning")

    assert world.provision("broken").result == RunResult.SKIPPED
    assert world.provision("leaving").result == RunResult.SKIPPED
    assert world.provision("nobody").result == RunResult.NOT_FOUND


HAND_ACME_TO_OTHER = (
    "UPDATE tenants SET influxdb_retry_chain = %s WHERE tenant_id = 'acme'",
    (OTHER.message,),
)
TAKE_ALPHAS_LAST_SLOT = "UPDATE tenants SET influxdb_node = 'alpha' WHERE tenant_id = 'globex'"


def provision_while_held(db, world: World, database, holding: str, meanwhile=None):
    """Provision acme while another transaction, having run ``holding``, holds a row the run
    waits for; once it waits, that transaction runs ``meanwhile`` (if any) and commits."""
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as other:
        other.execute(holding)
        with ThreadPoolExecutor(1) as runner:
            run = runner.submit(world.provision, "acme", MESSAGE)
            wait_for_a_lock_wait(db)
            if meanwhile:
                other.execute(*meanwhile)
            other.commit()
            return run.result(timeout=30)


def one_slot_and_two_tenants(db, world: World) -> None:
    world.add("alpha", limit=1)
    insert(db, "acme")
    insert(db, "globex")
    with get_engine().connect() as conn:  # the nodes file written down, as a worker has
        sync_nodes(conn, world.pool().nodes(), force=True)


def test_a_run_that_loses_its_chain_while_placing_reserves_no_slot(db, world: World, database):
    # Given a pending tenant, and alpha's row held by another placer
    alpha = world.add("alpha")
    insert(db, "acme")
    db.execute(
        "INSERT INTO influxdb_nodes (name, database_limit, configured) VALUES ('alpha', 5, true)"
    )
    # When an operator's retry hands the tenant to another message meanwhile
    holding = "SELECT 1 FROM influxdb_nodes WHERE name = 'alpha' FOR UPDATE"
    outcome = provision_while_held(db, world, database, holding, HAND_ACME_TO_OTHER)

    # Then the run does not start: placing and starting are one transaction, so it holds
    # no slot on alpha and no node (the other message places the tenant itself)
    assert outcome.result == RunResult.ABSORBED
    assert tenant_row(db, "acme")["influxdb_node"] is None
    assert db.execute("SELECT placed FROM influxdb_nodes WHERE name = 'alpha'").fetchone() == (0,)
    assert alpha.create_calls() == 0


def test_a_slot_being_taken_by_another_transaction_is_not_taken_twice(db, world: World, database):
    # Given a server with one slot, which another transaction is taking (not yet committed)
    one_slot_and_two_tenants(db, world)
    # When a run places acme meanwhile, and the other transaction then commits
    outcome = provision_while_held(db, world, database, TAKE_ALPHAS_LAST_SLOT)

    # Then the run skipped the slot being taken, waited for it, and found the server full
    assert outcome.result == RunResult.WAITING_FOR_CAPACITY
    assert tenant_row(db, "acme")["influxdb_node"] is None
    assert db.execute("SELECT placed FROM influxdb_nodes WHERE name = 'alpha'").fetchone() == (1,)
    assert world.servers["alpha"].create_calls() == 0


def test_a_run_that_loses_its_chain_while_waiting_for_room_leaves_the_tenant_to_it(
    db, world: World, database
):
    # Given a server with one slot, which another transaction is taking
    one_slot_and_two_tenants(db, world)
    # When an operator's retry hands acme to another message before the slot is taken
    outcome = provision_while_held(db, world, database, TAKE_ALPHAS_LAST_SLOT, HAND_ACME_TO_OTHER)

    # Then the run finds no room but writes no wait over the other message's chain
    assert outcome.result == RunResult.ABSORBED
    row = tenant_row(db, "acme")
    assert (row["influxdb_state"], row["influxdb_retry_chain"]) == ("pending", OTHER.message)


def test_a_located_database_gone_before_the_create_is_not_asked_for_again(
    db, world: World, database
):
    # Given a row from before the worker, its database listed on beta alone, beta otherwise
    # full, and alpha with room
    alpha = world.add("alpha")
    beta = world.add("beta", limit=2)
    beta.create_database("telemetry_acme")
    beta.create_database("telemetry_other")
    insert(db, "acme", adopt="unmarked")
    # When, after its run listed the servers, the database on beta is deleted and another
    # takes its slot (the run waits on the row, held by another transaction, meanwhile)
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as other:
        other.execute("SELECT 1 FROM tenants WHERE tenant_id = 'acme' FOR UPDATE")
        with ThreadPoolExecutor(1) as runner:
            run = runner.submit(world.provision, "acme", MESSAGE)
            wait_for_a_lock_wait(db)
            beta.delete_database("telemetry_acme")
            beta.create_database("telemetry_third")
            other.commit()
            outcome = run.result(timeout=30)

    # Then beta's 422 says the name is gone from there: beta is not asked again, and the
    # tenant, confirmed absent everywhere, is placed as new on alpha
    assert outcome.result == RunResult.PROVISIONED
    row = tenant_row(db, "acme")
    assert (row["influxdb_node"], row["influxdb_adopt"], row["influxdb_attempts"]) == (
        "alpha",
        None,
        2,
    )
    assert (beta.create_calls("telemetry_acme"), alpha.create_calls("telemetry_acme")) == (1, 1)


def test_a_remade_database_refused_for_a_wrong_token_is_kept_and_taken_back_later(db, world: World):
    # Given a tenant whose database on alpha was deleted behind our back and made again by
    # its writers (the reconciler sent it back, to take it back), and alpha's token wrong
    alpha = world.add("alpha")
    existing_database(alpha, "acme", points=3, incarnation=None)
    insert(db, "acme", state="pending", node="alpha", adopt="remade")
    alpha.set_token("another")

    # When its run is refused (401)
    outcome = world.provision("acme", MESSAGE)

    # Then it fails keeping its server and the adoption: its database is still there
    assert (outcome.result, outcome.reason) == (RunResult.FAILED, "unauthorized")
    row = tenant_row(db, "acme")
    assert (row["influxdb_node"], row["influxdb_adopt"]) == ("alpha", "remade")

    # And once the token is right, the operator's retry takes it back, with its data
    alpha.set_token(INFLUX_TOKEN)
    db.execute("UPDATE tenants SET influxdb_state = 'pending', influxdb_attempts = 0")
    assert world.provision("acme", MESSAGE).result == RunResult.PROVISIONED
    assert tenant_row(db, "acme")["influxdb_node"] == "alpha"
    assert len(alpha.rows("telemetry_acme", "telemetry")) == 3


def test_a_database_made_elsewhere_keeps_its_retention_and_the_tenant_says_so(db, world: World):
    # Given two tenants of a 30-day period: one whose database was made again by a write
    # (taken back as remade), one that has none yet
    alpha = world.add("alpha")
    existing_database(alpha, "acme", points=1, incarnation=None)
    insert(db, "acme", node="alpha", adopt="remade", retention_period="30d")
    insert(db, "fresh", retention_period="30d")

    # When both are provisioned
    for tenant_id in ("acme", "fresh"):
        assert world.provision(tenant_id).result == RunResult.PROVISIONED

    # Then the one taken back keeps what it was made with (forever), and says so; the one
    # created holds its period, with nothing to say
    kept = alpha.state()["retention_seconds"]
    assert kept == {"telemetry_acme": None, "telemetry_fresh": 30 * 86400}
    note = tenant_row(db, "acme")["influxdb_last_error"]
    assert "not 30d" in note and "cannot change it" in note
    assert tenant_row(db, "fresh")["influxdb_last_error"] is None


ADOPT_BETAS_DATABASE = (  # what store.request_adoption writes
    "UPDATE tenants SET influxdb_state = 'pending', influxdb_node = 'beta', "
    "influxdb_adopt = 'any', influxdb_attempts = 0, influxdb_create_sent_to = NULL, "
    "influxdb_retry_chain = NULL WHERE tenant_id = 'acme'",
)


def test_an_adoption_made_while_the_run_places_the_tenant_is_kept(db, world: World, database):
    # Given a pending tenant without a server, every server's row held by another placer, and
    # on beta a database of the tenant's name, with data, made by someone else
    alpha = world.add("alpha")
    beta = world.add("beta")
    existing_database(beta, "acme", points=3, incarnation="someone-else")
    insert(db, "acme")
    with get_engine().connect() as conn:
        sync_nodes(conn, world.pool().nodes(), force=True)
        conn.commit()
    # When the operator adopts beta's database while the run waits to place the tenant
    holding = "SELECT 1 FROM influxdb_nodes FOR UPDATE"
    outcome = provision_while_held(db, world, database, holding, ADOPT_BETAS_DATABASE)

    # Then the run places nothing over the adoption: it starts over from the adopted row
    assert outcome.result == RunResult.PROVISIONED
    row = tenant_row(db, "acme")
    assert (row["influxdb_node"], row["influxdb_adopt"]) == ("beta", None)
    assert alpha.create_calls() == 0
    assert len(beta.rows("telemetry_acme", "telemetry")) == 3
    placed = db.execute("SELECT name, placed FROM influxdb_nodes ORDER BY name").fetchall()
    assert placed == [("alpha", 0), ("beta", 1)]


def test_a_slot_only_reserved_is_no_server_to_adopt_from(db, world: World):
    # Given a tenant whose wait for capacity ended with a slot reserved on alpha, its run not
    # come yet, and on alpha a database of its name that someone else made
    alpha = world.add("alpha")
    existing_database(alpha, "acme", points=2, incarnation="someone-else")
    insert(db, "acme", state="pending", node="alpha", error_reason="database_limit")

    # When the operator adopts without naming the node, then it is told to name it: nothing
    # of the tenant's is on alpha, a database there is not its own for having a slot
    with pytest.raises(UnknownNode, match="name the node"):
        adopt_database("acme")
    assert tenant_row(db, "acme")["influxdb_adopt"] is None


def test_adopting_elsewhere_for_a_tenant_holding_a_reserved_slot_hands_the_slot_on(
    db, world: World, broker, monkeypatch
):
    # Given alpha and beta, one slot each, full; "first" and "second" waiting; acme's deletion
    # reserved alpha for "first", whose run has not come; first's data is on beta (a copy)
    alpha, beta = world.add("alpha", limit=1), world.add("beta", limit=1)
    for tenant_id in ("acme", "other", "first", "second"):
        insert(db, tenant_id, at=world.clock.advance(1))
        world.provision(tenant_id)
    with get_engine().begin() as conn:
        assert store.request_deletion(conn, "acme", world.clock())
    assert world.deprovision("acme").unwaited == ("first",)
    beta.set_database_limit(2)  # (the copy made by hand; the nodes file still says 1)
    existing_database(beta, "first", points=2)
    monkeypatch.setattr(nodes, "_shared", world.pool())  # the hooks' pool is the world's
    monkeypatch.setattr(nodes, "_shared_pid", os.getpid())

    # When the operator adopts first's database on beta
    try:
        adopt_database("first", "beta")
    finally:
        broker.flushdb()

    # Then the slot it let go of on alpha went on to "second" in the same request
    second = tenant_row(db, "second")
    assert (second["influxdb_state"], second["influxdb_node"]) == ("pending", "alpha")
    assert world.provision("second").result is RunResult.PROVISIONED
    assert alpha.databases() == ["telemetry_second"]


def test_an_adoption_made_while_the_run_waits_for_capacity_is_kept(db, world: World, database):
    # Given a pending tenant, every server full, and on beta a database of the tenant's name,
    # with data, made by someone else
    alpha = world.add("alpha", limit=1)
    beta = world.add("beta", limit=1)
    existing_database(beta, "acme", points=2, incarnation="someone-else")
    insert(db, "acme")
    insert(db, "globex", state="provisioned", node="alpha")
    insert(db, "initech", state="provisioned", node="beta")
    with get_engine().connect() as conn:
        sync_nodes(conn, world.pool().nodes(), force=True)
    # When the operator adopts beta's database as the run, finding no room, writes its wait
    holding = "SELECT 1 FROM tenants WHERE tenant_id = 'acme' FOR UPDATE"
    outcome = provision_while_held(db, world, database, holding, ADOPT_BETAS_DATABASE)

    # Then the run writes no wait over the adoption: it starts over from the adopted row
    assert outcome.result == RunResult.PROVISIONED
    row = tenant_row(db, "acme")
    assert (row["influxdb_state"], row["influxdb_node"]) == ("provisioned", "beta")
    assert alpha.create_calls() == 0
    assert len(beta.rows("telemetry_acme", "telemetry")) == 2


DELETE_ACME = (  # what store.request_deletion writes
    "UPDATE tenants SET influxdb_state = 'deprovisioning', influxdb_attempts = 0, "
    "influxdb_retry_chain = NULL, influxdb_next_attempt_at = NULL WHERE tenant_id = 'acme'",
)


@pytest.mark.parametrize(
    "holding",
    [
        pytest.param("SELECT 1 FROM influxdb_nodes FOR UPDATE", id="placing"),
        pytest.param("SELECT 1 FROM tenants WHERE tenant_id = 'acme' FOR UPDATE", id="waiting"),
    ],
)
def test_a_deletion_asked_while_the_run_places_or_waits_is_left_to_the_deletion(
    db, world: World, database, holding: str
):
    # Given a pending tenant and every server full (its wait to be written) or held by a placer
    alpha = world.add("alpha", limit=1)
    insert(db, "acme")
    insert(db, "globex", state="provisioned", node="alpha")
    with get_engine().connect() as conn:
        sync_nodes(conn, world.pool().nodes(), force=True)
        conn.commit()
    # When the operator deletes the tenant while the run waits for that row
    outcome = provision_while_held(db, world, database, holding, DELETE_ACME)

    # Then the run, reading the row again, skips it: nothing is placed, created or waited for
    assert outcome.result == RunResult.SKIPPED
    row = tenant_row(db, "acme")
    assert (row["influxdb_state"], row["influxdb_node"]) == ("deprovisioning", None)
    assert row["influxdb_attempts"] == 0
    assert alpha.create_calls() == 0
    assert db.execute("SELECT placed FROM influxdb_nodes WHERE name = 'alpha'").fetchone() == (1,)


def test_a_home_recorded_by_the_reconciler_while_the_run_locates_the_tenant_is_kept(
    db, world: World
):
    # Given a row from before the worker whose retry this message owns, its database on
    # alpha, and beta slow to answer the run's listing
    alpha = world.add("alpha")
    beta = world.add("beta")
    existing_database(alpha, "acme", points=2)
    insert(db, "acme", state="retrying", adopt="unmarked", retry_chain=MESSAGE.message)
    beta.set_latency(1.0)
    listing = ("GET", "/api/v3/configure/database")
    # When the reconciler records alpha as its home while the run waits for beta's list
    with ThreadPoolExecutor(1) as runner:
        run = runner.submit(world.provision, "acme", MESSAGE)
        deadline = time.monotonic() + 10
        while not beta.request_count(*listing) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert beta.request_count(*listing), "the run never listed beta"
        db.execute(  # what store.record_homes writes
            "UPDATE tenants SET influxdb_node = 'alpha' "
            "WHERE tenant_id = 'acme' AND influxdb_node IS NULL"
        )
        outcome = run.result(timeout=30)

    # Then the run, still the owner of the tenant's chain, starts over from that row
    assert outcome.result == RunResult.PROVISIONED
    assert tenant_row(db, "acme")["influxdb_node"] == "alpha"
    assert len(alpha.rows("telemetry_acme", "telemetry")) == 2


def test_the_one_statement_start_tells_no_room_from_a_lost_chain(db, world: World):
    # Given a tenant whose chain another message owns, and a server with room
    world.add("alpha", limit=1)
    insert(db, "acme", retry_chain=OTHER.message)
    with get_engine().connect() as conn:
        sync_nodes(conn, world.pool().nodes(), force=True)
        conn.commit()
        start = store.update_statement("acme", expect={"influxdb_retry_chain": None})
        ours = store.update_statement("acme", expect={"influxdb_retry_chain": OTHER.message})
        with autocommit(conn):
            # When this run's start is guarded by the chain it read (None): not started there,
            # nor where no server has room (a lost chain ends the run, whatever the room)
            assert start_on_free_node(conn, start, world.pool().nodes()) is None
            assert start_on_free_node(conn, start, []) is None
            # while the chain's own run, with no server it may use, is told: no room
            with pytest.raises(NoFreeNode):
                start_on_free_node(conn, ours, [])

    # Then nothing was placed
    assert tenant_row(db, "acme")["influxdb_node"] is None
    assert db.execute("SELECT placed FROM influxdb_nodes WHERE name = 'alpha'").fetchone() == (0,)


def wait_for_a_lock_wait(db, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = db.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()[0]
        if waiting:
            return
        time.sleep(0.01)
    raise AssertionError("the run never waited for the node's row")


def test_a_run_that_gives_room_it_wrote_down_to_its_own_tenant_does_not_queue_it_again(
    db, world: World
):
    # Given alpha full, and a tenant waiting for room
    world.add("alpha", limit=1)
    insert(db, "acme", at=world.clock.advance(1))
    world.provision("acme")
    insert(db, "waiting", at=world.clock.advance(1))
    assert world.provision("waiting").result is RunResult.WAITING_FOR_CAPACITY

    # When beta is added to the file, and the first run to see it is one of the waiting
    # tenant's own messages (an operator's retry): it writes the room down, un-waits the
    # oldest waiting - its own tenant - and goes on to provision it
    world.add("beta", limit=1)
    outcome = world.provision("waiting", Delivery.of("operator-retry", 0))

    # Then the tenant is provisioned, and no second message is queued for it
    assert (outcome.result, outcome.unwaited) == (RunResult.PROVISIONED, ())
    assert tenant_row(db, "waiting")["influxdb_node"] == "beta"


def test_a_slot_given_back_by_a_refused_create_goes_to_the_oldest_waiting_not_the_next_new(
    db, world: World
):
    # Given alpha's one slot held by acme's run, whose retention period the server will refuse
    # (a row written by hand: minutes, which InfluxDB 3 takes in no form), and a tenant waiting
    world.add("alpha", limit=1)
    insert(db, "acme", at=world.clock.advance(1), retention_period="90m")
    insert(db, "waiting", at=world.clock.advance(1))
    with get_engine().connect() as conn:
        sync_nodes(conn, world.pool().nodes())
        assert placement.place_tenant(conn, "acme", world.pool().nodes(), set()) == "alpha"
        conn.commit()
    assert world.provision("waiting").result is RunResult.WAITING_FOR_CAPACITY

    # When acme's create is refused (400): it fails for good and gives its slot back
    outcome = world.provision("acme", MESSAGE)
    assert (outcome.result, outcome.reason) == (RunResult.FAILED, Reason.REJECTED)

    # Then the slot goes to the waiting tenant, queued now with the slot reserved for it
    assert outcome.unwaited == ("waiting",)
    assert tenant_row(db, "waiting")["influxdb_node"] == "alpha"
    # And a tenant created next finds no room: it waits behind the older one
    insert(db, "newer", at=world.clock.advance(1))
    assert world.provision("newer").result is RunResult.WAITING_FOR_CAPACITY
    assert world.provision("waiting").result is RunResult.PROVISIONED


def test_a_soft_time_limit_during_an_influxdb_call_is_a_timeout_retried_not_a_failure(
    db, world: World
):
    # Given a slow server (1 s an answer), and the run's soft time limit firing in the middle
    # of its create: Celery's pool child raises SoftTimeLimitExceeded from a signal handler,
    # as this one does
    world.add("alpha").set_latency(1.0)
    insert(db, "acme")

    def soft_limit(signum: int, frame: object) -> None:
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, soft_limit)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        outcome = world.provision("acme", MESSAGE)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    # Then it is a timeout (the create may have landed: its server kept), retried and
    # resumable, not an internal_error that fails the tenant for good
    assert (outcome.result, outcome.reason) == (RunResult.RETRYING, Reason.TIMEOUT)
    row = tenant_row(db, "acme")
    assert (row["influxdb_state"], row["influxdb_error_reason"]) == ("retrying", "timeout")
    assert row["influxdb_create_sent_to"] == "alpha"
    assert "soft time limit" in row["influxdb_last_error"]
