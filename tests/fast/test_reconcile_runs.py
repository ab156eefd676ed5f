"""Whole reconcile runs in-process: what they change in Postgres and what they publish (the
broker is the boundary: a recorder stands in for it)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import psycopg

from tests.conftest import tenant_row, wait_for
from tests.fast.conftest import T0, Published, World, insert
from worker.db import get_engine
from worker.queues import Job
from worker.reconcile import reconcile

LONG_AGO = T0 - timedelta(hours=1)


def run(world: World) -> tuple[Published, dict]:
    published = Published()
    summary = reconcile(get_engine(), world.pool(), world.settings, published, clock=world.clock)
    return published, summary.as_dict()


def test_lost_work_is_published_once_per_run_and_recorded(db, world: World):
    world.add("alpha")
    insert(db, "never-queued")
    insert(db, "just-queued", enqueued_at=T0)

    published, summary = run(world)

    assert published == [("never-queued", Job.PROVISION, None)]
    assert summary["requeued"] == 1
    assert tenant_row(db, "never-queued")["influxdb_enqueued_at"] == T0


def test_an_overdue_retry_chain_is_taken_over_by_a_new_message(db, world: World):
    world.add("alpha")
    insert(db, "acme", state="retrying", next_attempt_at=LONG_AGO, retry_chain="lost:3")

    published, summary = run(world)

    ((tenant_id, job, task_id),) = published
    assert (tenant_id, job, summary["taken_over"]) == ("acme", Job.PROVISION, 1)
    assert tenant_row(db, "acme")["influxdb_retry_chain"] == f"{task_id}:0"


def test_drift_starts_a_new_episode_and_a_stuck_attempt_does_not(db, world: World):
    world.add("alpha")
    insert(db, "drifted", state="provisioned", node="alpha", provisioned_at=LONG_AGO, attempts=4)
    insert(db, "stuck", state="provisioning", node="alpha", updated_at=LONG_AGO, attempts=4)

    published, summary = run(world)

    assert (summary["drift"], summary["stuck"]) == (1, 1)
    assert {t for t, _, _ in published} == {"drifted", "stuck"}
    drifted, stuck = tenant_row(db, "drifted"), tenant_row(db, "stuck")
    assert (drifted["influxdb_state"], drifted["influxdb_attempts"]) == ("pending", 0)
    assert (stuck["influxdb_error_reason"], stuck["influxdb_attempts"]) == ("worker_lost", 4)


def test_a_stalled_tenant_resumes_when_its_server_answers(db, world: World):
    alpha = world.add("alpha")
    insert(db, "acme", state="failed", error_reason="unreachable", node="alpha", attempts=6)

    alpha.set_outage(True)
    published, summary = run(world)
    assert (published, summary["stalled"]) == ([], 1)

    alpha.set_outage(False)
    published, summary = run(world)
    assert (published, summary["resumed"]) == ([("acme", Job.PROVISION, None)], 1)
    row = tenant_row(db, "acme")
    assert (row["influxdb_state"], row["influxdb_attempts"]) == ("pending", 0)


def test_rows_from_before_the_worker_are_adopted_from_one_listing_per_server(db, world: World):
    world.add("alpha").create_database("telemetry_old")
    world.add("beta")
    insert(db, "old", adopt="unmarked")
    insert(db, "never-made", adopt="unmarked")

    published, summary = run(world)

    assert (summary["adopted"], summary["new_home"], summary["influxdb_calls"]) == (1, 1, 2)
    assert tenant_row(db, "old")["influxdb_node"] == "alpha"
    assert tenant_row(db, "never-made")["influxdb_adopt"] is None
    assert sorted(t for t, _, _ in published) == ["never-made", "old"]


def test_waiting_tenants_get_the_free_slots_oldest_first_with_a_fresh_budget(db, world: World):
    world.add("alpha", limit=2)
    insert(db, "placed", state="provisioned", node="alpha", provisioned_at=T0)
    for i, tenant_id in enumerate(("first", "second")):
        insert(db, tenant_id, state="waiting_for_capacity", attempts=3)
        db.execute(
            "UPDATE tenants SET created_at = %s WHERE tenant_id = %s",
            (LONG_AGO + timedelta(seconds=i), tenant_id),
        )

    published, summary = run(world)

    assert summary["unwaited"] == 1
    assert published == [("first", Job.PROVISION, None)]
    assert tenant_row(db, "first")["influxdb_attempts"] == 0
    assert tenant_row(db, "second")["influxdb_state"] == "waiting_for_capacity"


def test_a_batch_adopting_on_two_nodes_does_not_deadlock_with_a_placer(db, world: World):
    # Given a batch that adopts "a-old" onto alpha and "b-old" onto beta, and a placer that
    # holds beta's row, then writes a-old's row (as a placement does: a node's row, then a
    # tenant's row)
    world.add("alpha").create_database("telemetry_a-old")
    world.add("beta").create_database("telemetry_b-old")
    insert(db, "a-old", adopt="unmarked")
    insert(db, "b-old", adopt="unmarked")
    dsn = db.info.dsn
    holder = psycopg.connect(dsn)  # holds a-old's row: the run waits there, inside its batch
    holder.execute("SELECT 1 FROM tenants WHERE tenant_id = 'a-old' FOR UPDATE")
    outcome: dict[str, Any] = {}
    placer_has_beta, go = threading.Event(), threading.Event()

    def reconcile_run() -> None:
        try:
            outcome["summary"] = run(world)[1]
        except Exception as exc:  # a deadlock: Postgres aborted the run
            outcome["run"] = exc

    def placer() -> None:
        try:
            with psycopg.connect(dsn) as conn:
                conn.execute("SELECT 1 FROM influxdb_nodes WHERE name = 'beta' FOR UPDATE")
                placer_has_beta.set()
                go.wait(20)
                conn.execute("UPDATE tenants SET name = 'placed' WHERE tenant_id = 'a-old'")
        except Exception as exc:  # a deadlock: Postgres aborted the placer
            outcome["placer"] = exc

    def waiting_on_locks() -> int:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        ).fetchone()
        return int(row[0]) if row else 0

    # When the run waits on a-old's row, the placer takes (or waits for) beta's, a-old is let
    # go, and the placer writes a-old once the run either finished or waits for beta
    threads = [threading.Thread(target=reconcile_run), threading.Thread(target=placer)]
    threads[0].start()
    wait_for(lambda: waiting_on_locks() == 1, timeout=10, what="the run waiting on a-old")
    threads[1].start()
    wait_for(
        lambda: placer_has_beta.is_set() or waiting_on_locks() == 2,
        timeout=10,
        what="the placer holding or waiting for beta",
    )
    holder.commit()
    holder.close()
    wait_for(
        lambda: "summary" in outcome or (placer_has_beta.is_set() and waiting_on_locks() == 1),
        timeout=10,
        what="the run finished, or waiting for beta",
    )
    go.set()
    for thread in threads:
        thread.join(timeout=20)

    # Then neither was aborted: the run took both nodes' rows before any tenant's, so the
    # placer waited for beta holding nothing the run needed
    assert outcome.keys() == {"summary"}, outcome
    assert outcome["summary"]["adopted"] == 2
    assert tenant_row(db, "b-old")["influxdb_node"] == "beta"
    assert tenant_row(db, "a-old")["name"] == "placed"
