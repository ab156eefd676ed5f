"""Whole reconcile runs in-process: what they change in Postgres and what they publish (the
broker is the boundary: a recorder stands in for it)."""

from __future__ import annotations

import threading
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from tests.conftest import INFLUX_TOKEN, tenant_row, wait_for, write_points
from tests.fast.conftest import (
    T0,
    Published,
    World,
    blocked_by,
    full_with_one_waiting,
    insert,
    slot_reserved,
)
from worker import store
from worker.db import get_engine
from worker.influxdb import InfluxDB3Client
from worker.placement import sync_nodes, usage
from worker.queues import Job
from worker.reconcile import reconcile
from worker.runs import Delivery
from worker.states import Reason, RunResult

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


def test_work_queued_behind_a_backlog_is_sent_again_ever_less_often_not_every_run(db, world: World):
    # Given 50 tenants created at T0 whose messages wait behind a backlog longer than the
    # grace (60 s, the run interval): no worker has reached them
    world.overrides["reconcile_requeue_after_seconds"] = 60.0
    world.add("alpha", limit=1000)
    for i in range(50):
        insert(db, f"t{i:02d}", enqueued_at=T0)

    # When the reconciler runs once a minute for 16 minutes
    sent_at = []
    for minute in range(1, 17):
        world.clock.advance(60 + (1 if minute == 1 else 0))
        published, _ = run(world)
        if published:
            assert len(published) == 50
            sent_at.append(minute)

    # Then each is sent after one grace, and again only once it has waited as long again as
    # it had when last sent (at 1 min, then 3, 7, 15): not 16 times, for a backlog fed 50
    # messages a minute would grow without end
    assert sent_at == [1, 3, 7, 15]


def test_a_message_lost_again_and_again_is_sent_at_least_every_16_graces(db, world: World):
    # Given a tenant created a day ago whose messages keep being lost (grace: 60 s)
    world.overrides["reconcile_requeue_after_seconds"] = 60.0
    world.add("alpha")
    insert(db, "acme", enqueued_at=T0, at=T0)
    world.clock.advance(24 * 3600)

    # When the reconciler has sent it once, a day late
    assert [t for t, _, _ in run(world)[0]] == ["acme"]

    # Then it is sent again within 16 graces (16 minutes), not a day later
    world.clock.advance(16 * 60 - 1)
    assert run(world)[0] == []
    world.clock.advance(2)
    assert [t for t, _, _ in run(world)[0]] == ["acme"]


def test_waiting_rows_the_ui_made_without_a_creation_time_are_un_waited_last(db, world: World):
    # Given alpha full, and two tenants waiting: one a row the UI made with no created_at
    # (its table's column may be nullable)
    world.add("alpha", limit=1)
    for tenant_id in ("acme", "undated", "dated"):
        insert(db, tenant_id, at=world.clock.advance(1))
        world.provision(tenant_id)
    db.execute("UPDATE tenants SET created_at = NULL WHERE tenant_id = 'undated'")

    # When room is added (beta, two slots) and the reconciler runs
    world.add("beta", limit=2)
    published, summary = run(world)

    # Then the run ends (it raised at every run before), and both go on, the dated one first
    assert summary["unwaited"] == 2
    assert [t for t, _, _ in published][:2] == ["dated", "undated"]


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


@pytest.mark.parametrize(
    "listing",
    ["[]", '[{"iox::database": "telemetry_elsewhere"}]'],
    ids=["nothing", "not-internal"],
)
def test_a_listing_without_internal_is_no_listing_not_every_database_deleted(
    db, world: World, scripted, listing
):
    # Given two tenants provisioned on alpha, a row from before the worker whose data is on
    # alpha too, and beta with room
    alpha = world.add("alpha")
    for tenant_id in ("acme", "globex"):
        insert(db, tenant_id, at=world.clock.advance(1))
        assert world.provision(tenant_id).result == RunResult.PROVISIONED
    write_points(alpha, "telemetry_old", "telemetry,device=d1 v=1i")
    insert(db, "old", adopt="unmarked", at=world.clock.advance(1))
    world.add("beta")
    world.clock.advance(3600)

    # When alpha's address answers a listing InfluxDB 3 never gives (it always lists
    # _internal): a server whose catalog is not loaded yet, or something else on its port
    scripted.answer(200, listing)
    world.urls["alpha"] = scripted.url
    _, summary = run(world)
    outcome = world.provision("old", Delivery.of("old-message", 0))

    # Then alpha did not answer: nothing there is drift, and the old row finds no home
    # elsewhere (a second database would split its telemetry)
    assert (summary["drift"], summary["new_home"]) == (0, 0)
    for tenant_id in ("acme", "globex"):
        assert tenant_row(db, tenant_id)["influxdb_state"] == "provisioned"
    assert outcome.result != RunResult.PROVISIONED
    assert tenant_row(db, "old")["influxdb_node"] is None
    assert world.servers["beta"].databases() == []

    # And once alpha answers again, the old row's next run finds its database there
    del world.urls["alpha"]
    world.clock.advance(outcome.retry_in or 0)
    retry = Delivery.of("old-message", 1)
    assert world.provision("old", retry).result == RunResult.PROVISIONED
    assert tenant_row(db, "old")["influxdb_node"] == "alpha"
    assert world.servers["beta"].databases() == []


def test_a_stalled_tenant_resumes_when_its_server_answers(db, world: World):
    alpha = world.add("alpha")
    insert(db, "acme", state="failed", error_reason="unreachable", node="alpha", attempts=6)

    world.clock.advance(60)
    alpha.set_outage(True)
    published, summary = run(world)
    assert (published, summary["stalled"]) == ([], 1)

    world.clock.advance(60)
    alpha.set_outage(False)
    published, summary = run(world)
    assert (published, summary["resumed"]) == ([("acme", Job.PROVISION, None)], 1)
    row = tenant_row(db, "acme")
    assert (row["influxdb_state"], row["influxdb_attempts"]) == ("pending", 0)


def test_a_tenant_refused_for_our_token_resumes_once_the_token_is_fixed(db, world: World):
    alpha = world.add("alpha")
    alpha.set_token("not-ours")
    insert(db, "acme")
    assert world.provision("acme").reason == "unauthorized"

    world.clock.advance(60)
    published, summary = run(world)  # the listing is refused too: still the wrong token
    assert (published, summary["stalled"]) == ([], 1)

    world.clock.advance(60)
    alpha.set_token(INFLUX_TOKEN)  # an operator fixed the token
    published, summary = run(world)
    assert (published, summary["resumed"]) == ([("acme", Job.PROVISION, None)], 1)
    assert world.provision("acme").result == "provisioned"


def test_waiting_tenants_are_not_sent_to_a_server_that_does_not_answer(db, world: World):
    # Given the only room on alpha, which refuses our token, and a tenant waiting for it
    world.add("alpha").set_token("not-ours")
    world.add("beta", limit=1)
    insert(db, "placed", state="provisioned", node="beta", provisioned_at=T0)
    insert(db, "waiting", state="waiting_for_capacity")

    published, summary = run(world)

    # Then it stays waiting (placed there, it would only fail) until alpha lists again
    assert (published, summary["unwaited"]) == ([], 0)
    assert tenant_row(db, "waiting")["influxdb_state"] == "waiting_for_capacity"
    world.servers["alpha"].set_token(INFLUX_TOKEN)
    published, summary = run(world)
    assert (published, summary["unwaited"]) == ([("waiting", Job.PROVISION, None)], 1)


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


def test_a_home_found_for_an_id_deleted_and_made_again_since_is_not_recorded(db, world: World):
    # Given a row from before the worker, found on alpha by a run that then took a while: the
    # id was deleted and made again meanwhile (a new incarnation, a new tenant, no server)
    world.add("alpha")
    found_for = insert(db, "old", adopt="unmarked")["influxdb_incarnation"]
    db.execute("DELETE FROM tenants WHERE tenant_id = 'old'")
    made_again = insert(db, "old")["influxdb_incarnation"]
    assert made_again != found_for

    # When the run records the homes it found
    with get_engine().begin() as conn:
        recorded = store.record_homes(conn, {"old": ("alpha", found_for)})

    # Then the new tenant is not given the old one's server: it is placed as new
    assert recorded == [] and tenant_row(db, "old")["influxdb_node"] is None
    with get_engine().begin() as conn:
        assert store.record_homes(conn, {"old": ("alpha", made_again)}) == ["old"]


def test_a_row_found_twice_for_an_id_deleted_and_made_again_since_is_not_failed(db, world: World):
    # Given a row from before the worker, found on alpha and beta by a run that then took a
    # while: the id was deleted and made again meanwhile (a new tenant, no server)
    world.add("alpha").create_database("telemetry_old")
    world.add("beta").create_database("telemetry_old")
    found = SimpleNamespace(**insert(db, "old", adopt="unmarked"))
    db.execute("DELETE FROM tenants WHERE tenant_id = 'old'")
    insert(db, "old")
    message = "its database exists on nodes alpha, beta; adopt the right one"

    # When the run fails the row it found ambiguous
    with get_engine().begin() as conn:
        store.fail_unplaced(conn, found, Reason.NAME_TAKEN, message, world.clock.now)

    # Then the new tenant is untouched (it would be told to adopt the old one's data) ...
    assert tenant_row(db, "old")["influxdb_state"] == "pending"
    # ... while a run on the row as it stands fails it, naming both servers
    _, summary = run(world)
    assert summary["ambiguous"] == 0 and tenant_row(db, "old")["influxdb_state"] == "pending"
    db.execute("UPDATE tenants SET influxdb_adopt = 'unmarked' WHERE tenant_id = 'old'")
    _, summary = run(world)
    assert summary["ambiguous"] == 1
    assert tenant_row(db, "old")["influxdb_last_error"].startswith(message)


def test_a_row_from_before_the_worker_waits_for_a_server_just_left_out_of_the_file(
    db, world: World
):
    # Given beta, holding the database of a row from before the worker, listed by a run and
    # then left out of the nodes file (by mistake, or in a rename)
    world.add("alpha")
    world.add("beta").create_database("telemetry_old")
    run(world)
    world.unlisted.add("beta")
    insert(db, "old", adopt="unmarked")

    # When the worker is handed it (an operator's retry) before any run has written the new
    # file down, and then a run finds its database on no server of the file
    waiting = world.provision("old")
    published, summary = run(world)

    # Then neither places it as new (an empty database, its data left behind): both wait for
    # beta, as for a server that does not answer
    assert waiting.result == RunResult.WAITING_FOR_NODE
    assert world.servers["alpha"].databases() == []
    assert (summary["new_home"], summary["unlocated"]) == (0, 1)
    assert [t for t, _, _ in published] == []
    assert tenant_row(db, "old")["influxdb_adopt"] == "unmarked"

    # And once beta has been out of the file and unlisted for over an hour, it is placed as new
    world.clock.advance(3601)
    published, summary = run(world)
    assert summary["new_home"] == 1
    assert [t for t, _, _ in published] == ["old"]


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


class _Interleaving:
    """A reconcile run in a thread, made to wait inside its batch: ``holder`` holds the row of
    "a-retry" (an overdue retry, first by id, so the run's first write waits on it)."""

    def __init__(self, db: Any, world: World) -> None:
        self.db, self.dsn = db, db.info.dsn
        insert(db, "a-retry", state="retrying", next_attempt_at=LONG_AGO, retry_chain="lost:3")
        self.holder = psycopg.connect(self.dsn)
        self.holder.execute("SELECT 1 FROM tenants WHERE tenant_id = 'a-retry' FOR UPDATE")
        self.outcome: dict[str, Any] = {}
        self.run = threading.Thread(target=self._reconcile, args=(world,))

    def _reconcile(self, world: World) -> None:
        try:
            self.outcome["summary"] = run(world)[1]
        except Exception as exc:  # a deadlock: Postgres aborted the run
            self.outcome["run"] = exc

    def blocked_by(self, pid: int) -> bool:
        return blocked_by(self.db, pid)

    def start(self) -> None:
        self.run.start()
        pid = self.holder.info.backend_pid
        wait_for(lambda: self.blocked_by(pid), timeout=10, what="the run waiting on a-retry")

    def release(self) -> None:
        self.holder.commit()
        self.holder.close()


def test_a_run_adopting_onto_a_node_does_not_deadlock_with_a_worker_placing_there(db, world: World):
    # Given a run that will adopt "b-old" onto alpha, waiting inside its batch, and a worker
    # that writes b-old's row, then (the slot trigger) alpha's - as a worker's own adoption does
    world.add("alpha").create_database("telemetry_b-old")
    insert(db, "b-old", adopt="unmarked")
    scene = _Interleaving(db, world)
    scene.start()
    worker = psycopg.connect(scene.dsn, autocommit=True)
    wrote = threading.Event()

    def worker_adopts() -> None:
        try:
            worker.execute("UPDATE tenants SET influxdb_node = 'alpha' WHERE tenant_id = 'b-old'")
            wrote.set()
        except Exception as exc:  # a deadlock: Postgres aborted the worker
            scene.outcome["worker"] = exc

    # When the worker writes while the run waits, and the run then goes on
    thread = threading.Thread(target=worker_adopts)
    thread.start()
    run_pid = scene.db.execute(
        "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
        (scene.holder.info.backend_pid,),
    ).fetchone()[0]
    wait_for(
        lambda: wrote.is_set() or scene.blocked_by(run_pid),
        timeout=10,
        what="the worker's write done, or waiting on the run",
    )
    scene.release()
    for waiting in (thread, scene.run):
        waiting.join(timeout=20)
    worker.close()

    # Then neither was aborted: the run held no node's row while it waited for a tenant's
    assert scene.outcome.keys() == {"summary"}, scene.outcome
    assert scene.outcome["summary"]["taken_over"] == 1
    assert tenant_row(db, "b-old")["influxdb_node"] == "alpha"


def test_room_added_to_the_nodes_file_goes_to_the_waiting_as_the_run_writes_it(db, world: World):
    # Given alpha, one slot, full with acme, and "waiting" waiting for room
    full_with_one_waiting(db, world)

    # When beta, one slot, joins the nodes file, a reconcile run is the first to write it down,
    # and a newer tenant's run comes while that run is still at work (inside its batch)
    beta = world.add("beta", limit=1)
    insert(db, "newer", at=world.clock.advance(1))
    scene = _Interleaving(db, world)
    scene.start()
    newer = world.provision("newer")
    scene.release()
    scene.run.join(timeout=20)

    # Then beta's slot went to the waiting tenant as the run wrote the file: the newer one waits
    assert newer.result is RunResult.WAITING_FOR_CAPACITY
    assert scene.outcome["summary"]["unwaited"] == 1
    sent = db.execute(
        "SELECT route FROM tenant_events WHERE tenant_id = 'waiting' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert sent == ("reconciler",)  # the run's own transition, as at its end
    assert world.provision("waiting").result is RunResult.PROVISIONED
    assert beta.databases() == ["telemetry_waiting"]


def test_room_is_counted_after_lost_slot_counts_are_repaired(db, world: World):
    # Given alpha, three slots, holding t1 and t2, and w1 and w2 waiting (alpha was full then)
    world.add("alpha", limit=3)
    for tenant_id in ("t1", "t2"):
        insert(db, tenant_id, at=world.clock.advance(1))
        world.provision(tenant_id)
    for tenant_id in ("w1", "w2"):
        insert(db, tenant_id, state="waiting_for_capacity", at=world.clock.advance(1))

    # When the nodes table is emptied behind our back (restored from an older backup), so the
    # next run writes the nodes file down again with no slot counted taken
    db.execute("DELETE FROM influxdb_nodes")
    published, summary = run(world)

    # Then the one free slot went to the oldest: the counts were repaired before the room
    assert (published, summary["unwaited"]) == ([("w1", Job.PROVISION, None)], 1)
    assert summary["counts_repaired"] == 1
    assert tenant_row(db, "w2")["influxdb_state"] == "waiting_for_capacity"


def test_a_tenant_the_broker_refused_twice_in_one_run_is_one_not_queued(db, world: World):
    # Given alpha full with acme, "waiting" waiting for room, and a broker refusing everything
    full_with_one_waiting(db, world)
    refused: list[str] = []

    def refusing(tenant_id: str, job: Job, task_id: str | None = None) -> bool:
        refused.append(tenant_id)
        return False

    # When beta joins the nodes file: the run un-waits "waiting" as it writes the file down,
    # then finds it owed a message again in its batch
    world.add("beta", limit=1)
    summary = reconcile(get_engine(), world.pool(), world.settings, refusing, clock=world.clock)

    # Then it is counted once among the work the broker did not take (and asked for once)
    assert (refused, summary.unwaited, summary.not_queued) == (["waiting"], 1, 1)
    assert tenant_row(db, "waiting")["influxdb_state"] == "pending"


def test_a_run_adopting_onto_two_nodes_does_not_deadlock_with_a_placer(db, world: World):
    # Given a run that will adopt "b-old" onto alpha and "c-old" onto beta, waiting inside its
    # batch, and a placer that holds beta's row, then writes b-old's (as a placement does)
    world.add("alpha").create_database("telemetry_b-old")
    world.add("beta").create_database("telemetry_c-old")
    insert(db, "b-old", adopt="unmarked")
    insert(db, "c-old", adopt="unmarked")
    scene = _Interleaving(db, world)
    scene.start()
    placer = psycopg.connect(scene.dsn, options="-c lock_timeout=5s")  # fail, never hang
    try:
        placer.execute("SELECT 1 FROM influxdb_nodes WHERE name = 'beta' FOR UPDATE")
    except psycopg.errors.LockNotAvailable as exc:  # the run holds beta while it waits
        scene.release()
        scene.run.join(timeout=20)
        raise AssertionError("the run held beta's row while waiting for a tenant's") from exc

    # When the run goes on until it waits for beta, and the placer then writes b-old
    scene.release()
    placer_pid = placer.info.backend_pid
    wait_for(
        lambda: "summary" in scene.outcome or scene.blocked_by(placer_pid),
        timeout=10,
        what="the run waiting for beta",
    )
    try:
        placer.execute("UPDATE tenants SET name = 'placed' WHERE tenant_id = 'b-old'")
        placer.commit()
    except Exception as exc:  # a deadlock (or the lock timeout): the placer was aborted
        scene.outcome["placer"] = exc
    placer.close()
    scene.run.join(timeout=20)

    # Then neither was aborted: the run took both nodes' rows before any tenant's, and took
    # the tenants' rows only once it held the nodes
    assert scene.outcome.keys() == {"summary"}, scene.outcome
    assert scene.outcome["summary"]["adopted"] == 2
    assert tenant_row(db, "c-old")["influxdb_node"] == "beta"
    assert tenant_row(db, "b-old")["name"] == "placed"


def test_a_database_deleted_behind_our_back_and_made_again_by_a_write_is_taken_back(
    db, world: World
):
    # Given a provisioned tenant on alpha, a later tenant whose database an earlier tenant of
    # its id left soft-deleted there, and a tenant whose database a person made again with
    # another tenant's marker in it
    alpha = world.add("alpha")
    alpha.create_database("telemetry_later")
    alpha.delete_database("telemetry_later")  # stamped T0, by the server's clock
    world.clock.advance(1)
    for tenant_id in ("acme", "later", "stolen"):
        insert(db, tenant_id, at=world.clock())
        assert world.provision(tenant_id).result == "provisioned"
    # When someone deletes two of them an hour later, and a writer's point makes acme's again
    world.clock.advance(3600)
    for tenant_id in ("acme", "stolen"):
        alpha.delete_database(f"telemetry_{tenant_id}")
    write_points(alpha, "telemetry_acme", "telemetry,device=d1 v=1i")
    write_points(alpha, "telemetry_stolen", '_init,tenant=other incarnation="someone-else"')
    world.clock.advance(60)
    published, summary = run(world)

    # Then both are provisioned again, the way the identity rule says
    assert summary["remade"] == 2 and summary["drift"] == 0
    assert sorted(t for t, _, _ in published) == ["acme", "stolen"]
    acme = tenant_row(db, "acme")
    assert (acme["influxdb_state"], acme["influxdb_adopt"]) == ("pending", "remade")
    assert "deleted on node alpha at " in acme["influxdb_last_error"]
    assert world.provision("acme").result == "provisioned"
    assert world.provision("stolen").result == "failed"
    # acme's database is taken back with the writer's point, and marked again: the platform's
    # `SELECT * FROM _init` finds the marker
    client = InfluxDB3Client(alpha.url, INFLUX_TOKEN)
    markers = client.read_markers("telemetry_acme")
    assert markers is not None
    assert str(tenant_row(db, "acme")["influxdb_incarnation"]) in {m.incarnation for m in markers}
    assert client.count_rows("telemetry_acme", "telemetry") == 1
    # the one holding another tenant's marker is never handed over; the later tenant is untouched
    stolen = tenant_row(db, "stolen")
    assert (stolen["influxdb_state"], stolen["influxdb_error_reason"]) == ("failed", "name_taken")
    assert tenant_row(db, "later")["influxdb_state"] == "provisioned"
    # and the next run finds nothing more to do
    world.clock.advance(60)
    published, summary = run(world)
    assert (published, summary["remade"], summary["drift"]) == ([], 0, 0)
    client.close()


def test_an_id_deleted_and_made_again_within_a_second_is_not_taken_for_drift(db, world: World):
    # Given a tenant deleted (its database soft-deleted, stamped to the second) and its id
    # made again and provisioned within that second, as a "reset tenant" flow does
    alpha = world.add("alpha")
    insert(db, "acme")
    assert world.provision("acme").result == "provisioned"
    world.clock.advance(3600.2)
    db.execute("UPDATE tenants SET influxdb_state = 'deprovisioning' WHERE tenant_id = 'acme'")
    assert world.deprovision("acme").result == "deprovisioned"
    world.clock.advance(0.05)
    insert(db, "acme", at=world.clock())
    assert world.provision("acme").result == "provisioned"
    assert [n.startswith("telemetry_acme-") for n in alpha.state()["deleted_databases"]] == [True]

    # When a reconcile run looks at it a minute later, at x.9 s: the listing's Date, in whole
    # seconds, puts the copy's stamp 0.9 s later on our clock, after the provisioning
    world.clock.advance(60.65)
    published, summary = run(world)

    # Then the earlier tenant's deletion is not read as this one's: its database holds its
    # own marker, so nothing was deleted and made again since it was provisioned
    assert (published, summary["remade"], summary["drift"]) == ([], 0, 0)
    assert tenant_row(db, "acme")["influxdb_state"] == "provisioned"

    # But a database deleted behind our back in the second it was provisioned, and made again
    # by a writer, holds no marker of its tenant's: that one is taken back
    world.clock.advance(0.4)
    insert(db, "beta", at=world.clock())
    assert world.provision("beta").result == "provisioned"
    world.clock.advance(0.3)
    alpha.delete_database("telemetry_beta")
    write_points(alpha, "telemetry_beta", "telemetry,device=d1 v=1i")
    world.clock.advance(59.6)
    published, summary = run(world)
    assert ([t for t, _, _ in published], summary["remade"]) == (["beta"], 1)


def test_a_writer_that_makes_the_database_again_after_drift_was_found_does_not_fail_it(
    db, world: World
):
    # Given a provisioned tenant whose database is deleted behind our back, and a run that
    # finds it gone before any writer makes it again
    alpha = world.add("alpha")
    insert(db, "acme")
    assert world.provision("acme").result == "provisioned"
    world.clock.advance(3600)
    alpha.delete_database("telemetry_acme")
    world.clock.advance(60)
    _, summary = run(world)
    assert (summary["drift"], tenant_row(db, "acme")["influxdb_adopt"]) == (1, "remade")

    # When a writer's point makes it again before the worker's run
    write_points(alpha, "telemetry_acme", "telemetry,device=d1 v=1i")

    # Then the run takes it back (the 409 is no stranger's database) and marks it
    assert world.provision("acme").result == "provisioned"
    row = tenant_row(db, "acme")
    assert (row["influxdb_state"], row["influxdb_adopt"]) == ("provisioned", None)
    client = InfluxDB3Client(alpha.url, INFLUX_TOKEN)
    markers = client.read_markers("telemetry_acme") or []
    assert str(row["influxdb_incarnation"]) in {m.incarnation for m in markers}
    assert client.count_rows("telemetry_acme", "telemetry") == 1
    client.close()


@pytest.mark.parametrize("skew", [-3600, 3600])
def test_a_server_whose_clock_is_an_hour_off_is_read_on_the_runs_clock(db, world: World, skew):
    # Given a server whose clock is an hour off the run's, holding the soft-deleted database
    # of an earlier tenant of the id, deleted a moment before this one was provisioned
    alpha = world.add("alpha", skew=skew)
    alpha.create_database("telemetry_acme")
    alpha.delete_database("telemetry_acme")
    world.clock.advance(5)
    insert(db, "acme", at=world.clock())
    assert world.provision("acme").result == "provisioned"

    # Then a run owes it nothing: by the server's Date, that deletion predates the tenant
    world.clock.advance(60)
    published, summary = run(world)
    assert (published, summary["remade"]) == ([], 0)

    # And when its own database is deleted and made again by a write, the run sees it
    world.clock.advance(600)
    alpha.delete_database("telemetry_acme")
    write_points(alpha, "telemetry_acme", "telemetry,device=d1 v=1i")
    world.clock.advance(60)
    published, summary = run(world)
    assert (published, summary["remade"]) == ([("acme", Job.PROVISION, None)], 1)


def test_a_remade_tenant_whose_server_refuses_it_is_placed_as_new_not_handed_a_stray(
    db, world: World
):
    # Given a tenant provisioned on alpha, alpha's one slot since taken by a hand-made database
    # after the tenant's was deleted behind our back, and a misrouted writer's stray of it on
    # beta: the reconciler sends it back to provisioning, to take back an unmarked remake
    alpha = world.add("alpha", limit=1)
    insert(db, "acme")
    assert world.provision("acme").result == "provisioned"
    beta = world.add("beta")
    world.clock.advance(3600)
    alpha.delete_database("telemetry_acme")
    alpha.create_database("telemetry_other")
    write_points(beta, "telemetry_acme", "telemetry,device=d1 v=1i")
    world.clock.advance(60)
    _, summary = run(world)
    assert (summary["drift"], tenant_row(db, "acme")["influxdb_adopt"]) == (1, "remade")

    # When its run meets alpha full (422) and places it elsewhere
    world.provision("acme")

    # Then the adoption went with alpha: beta's stray is a stranger's database, never handed over
    row = tenant_row(db, "acme")
    assert (row["influxdb_state"], row["influxdb_error_reason"]) == ("failed", "name_taken")
    assert row["influxdb_adopt"] is None and "beta" in row["influxdb_last_error"]


def test_a_limit_the_nodes_file_overstates_is_shown_until_the_file_changes_it(db, world: World):
    # Given alpha, which holds 2 databases (it says so in its 422s) while the nodes file says
    # 5, filled by "first" and a database made by hand, and "second", refused there, waiting
    alpha = world.add("alpha", limit=2)
    world.limits["alpha"] = 5
    alpha.create_database("by_hand")
    for tenant_id in ("first", "second"):
        insert(db, tenant_id)
        world.provision(tenant_id)
    assert tenant_row(db, "second")["influxdb_state"] == "waiting_for_capacity"

    # Then operators see the limit it named, beside the file's, run after run
    for _ in range(2):
        run(world)
        assert node_limits(db, "alpha") == (5, 2)
        with get_engine().connect() as conn:
            (slots,) = usage(conn, world.pool().nodes())
        assert slots.overstated == 2

    # When the operator fixes the nodes file, it is forgotten (learnt anew at the next 422)
    world.limits["alpha"] = 2
    run(world)
    assert node_limits(db, "alpha") == (2, None)


def test_a_limit_a_server_named_is_forgotten_once_it_holds_more(db, world: World):
    # Given alpha, refused at 1 database while the file says 3, and "second" waiting for it
    alpha = world.add("alpha", limit=1)
    world.limits["alpha"] = 3
    for tenant_id in ("first", "second"):
        insert(db, tenant_id)
        world.provision(tenant_id)
    assert node_limits(db, "alpha") == (3, 1)

    # When its limit is raised and a database is made there by hand: 2 databases, over 1
    alpha.set_database_limit(3)
    alpha.create_database("by_hand")
    published, summary = run(world)

    # Then the limit it named is forgotten, and the room goes to "second"
    assert node_limits(db, "alpha") == (3, None)
    assert (published, summary["unwaited"]) == ([("second", Job.PROVISION, None)], 1)
    assert world.provision("second").result == RunResult.PROVISIONED


def test_a_server_that_named_a_lower_limit_is_probed_with_one_waiting_tenant_a_run(
    db, world: World
):
    # Given alpha, which allows 1 database while the nodes file says 3: "t1" is there, "t2"
    # was refused (422: limit of 1), "t3" and "t4" wait behind it
    alpha = world.add("alpha", limit=1)
    world.limits["alpha"] = 3
    for tenant_id in ("t1", "t2", "t3", "t4"):
        insert(db, tenant_id)
        world.provision(tenant_id)
    waiting = ["t2", "t3", "t4"]
    assert [tenant_row(db, t)["influxdb_state"] for t in waiting] == ["waiting_for_capacity"] * 3

    # When reconcile runs: its listing sees 1 database, room by the file's 3
    for _ in range(2):
        published, summary = run(world)

        # Then one waiting tenant is sent, not the two the file leaves: it is refused again
        assert (published, summary["unwaited"]) == ([("t2", Job.PROVISION, None)], 1)
        assert world.provision("t2").result == RunResult.WAITING_FOR_CAPACITY
    # t1, then t2 refused three times: one 422 a run, not one for each slot the file names
    assert alpha.request_count("POST", "/api/v3/configure/database") == 4

    # When the server's limit is raised to the file's: the probe is placed there ...
    alpha.set_database_limit(3)
    published, summary = run(world)
    assert (published, summary["unwaited"]) == ([("t2", Job.PROVISION, None)], 1)
    assert world.provision("t2").result == RunResult.PROVISIONED

    # ... and the next listing, seeing 2 databases, more than the 1 it named, forgets that
    # limit: the room the file names goes to the next waiting tenant
    published, summary = run(world)
    assert node_limits(db, "alpha") == (3, None)
    assert (published, summary["unwaited"]) == ([("t3", Job.PROVISION, None)], 1)
    assert world.provision("t3").result == RunResult.PROVISIONED


def test_a_slot_a_waiting_tenant_was_sent_for_is_not_given_again_before_its_run(db, world: World):
    # Given one free slot on alpha and five tenants waiting, and no worker running meanwhile
    # (a broker down, a backlog): the tenant sent the slot does not run before the next runs
    world.add("alpha", limit=2).create_database("telemetry_first")
    insert(db, "first", state="provisioned", node="alpha", provisioned_at=T0)
    for number in range(5):
        insert(db, f"w{number}", state="waiting_for_capacity", at=T0 + timedelta(seconds=number))

    # When reconcile runs four times
    sent = []
    for _ in range(4):
        world.clock.advance(60)
        published, _ = run(world)
        sent += [tenant_id for tenant_id, _, _ in published]

    # Then one waiting tenant was sent, and counts as the slot's until it runs: the others
    # still wait
    assert sent[0] == "w0" and set(sent) == {"w0"}  # re-sent as lost work, the same one
    waiting = db.execute(
        "SELECT count(*) FROM tenants WHERE influxdb_state = 'waiting_for_capacity'"
    ).fetchone()
    assert waiting == (4,)


def test_a_run_writes_the_nodes_file_down_whatever_another_process_wrote_since(db, world: World):
    # Given this process has written the nodes file down (alpha and beta, 5 each), and then a
    # one-off process wrote an edit the operator reverted since (beta gone, alpha 10)
    world.add("alpha")
    world.add("beta")
    with get_engine().connect() as conn:
        sync_nodes(conn, world.pool().nodes())
    db.execute("UPDATE influxdb_nodes SET database_limit = 10 WHERE name = 'alpha'")
    db.execute("UPDATE influxdb_nodes SET configured = false WHERE name = 'beta'")

    # When reconcile runs here, then the rows say what the file says again
    run(world)
    rows = db.execute(
        "SELECT name, database_limit, configured FROM influxdb_nodes ORDER BY name"
    ).fetchall()
    assert rows == [("alpha", 5, True), ("beta", 5, True)]


def test_a_slot_reserved_on_a_server_that_left_the_file_is_sent_on_when_its_message_is_lost(
    db, world: World
):
    # Given a slot on alpha reserved for "waiting" by acme's deletion, whose message to it was
    # lost (a broker down), and then alpha left the nodes file for beta
    slot_reserved(db, world)
    world.unlisted.add("alpha")
    world.add("beta")

    # When reconcile runs, then it sends the tenant on (its run lets the slot go), where a
    # tenant whose database may be on alpha waits for it
    world.clock.advance(60)
    published, _ = run(world)
    assert published == [("waiting", Job.PROVISION, None)]
    assert world.provision("waiting").result == RunResult.PROVISIONED
    assert tenant_row(db, "waiting")["influxdb_node"] == "beta"


def test_databases_that_are_not_ours_take_slots_an_un_wait_does_not_count_free(db, world: World):
    # Given alpha, 5 databases at most, holding 3 made by hand and 2 tenants', and 4 tenants
    # waiting for room; a reconcile run has listed it
    alpha = world.add("alpha")
    for number in range(3):
        alpha.create_database(f"by_hand_{number}")
    for number in range(6):
        insert(db, f"t{number}", at=T0 + timedelta(seconds=number))
        world.provision(f"t{number}")
    states = [tenant_row(db, f"t{n}")["influxdb_state"] for n in range(6)]
    assert states == ["provisioned"] * 2 + ["waiting_for_capacity"] * 4
    world.clock.advance(60)
    run(world)
    assert usage_of(db, "alpha") == (2, 3)  # ours, and the others'

    # When one of the tenants is deleted: one slot is free
    with get_engine().begin() as conn:
        assert store.request_deletion(conn, "t0", world.clock())
    outcome = world.deprovision("t0")

    # Then one waiting tenant is sent, not the four the tenants' count alone leaves room for
    assert outcome.unwaited == ("t2",)
    # nor any more by the runs before its own comes (a broker down): the listing counts the
    # others, whatever our rows say, and the slot is t2's from the un-wait on
    for _ in range(3):
        world.clock.advance(60)
        _, summary = run(world)
        assert summary["unwaited"] == 0
        assert usage_of(db, "alpha") == (2, 3)
    assert world.provision("t2").result == RunResult.PROVISIONED

    # And a tenant created then waits without asking alpha for a database it has no room for
    creates = alpha.request_count("POST", "/api/v3/configure/database")
    insert(db, "t6", at=world.clock())
    assert world.provision("t6").result == RunResult.WAITING_FOR_CAPACITY
    assert alpha.request_count("POST", "/api/v3/configure/database") == creates


def test_a_limit_a_server_named_leaves_room_for_its_others_too(db, world: World):
    # Given alpha, which allows 5 while the nodes file says 10, holding 3 databases made by
    # hand and 2 tenants'; t2 was refused (422: limit of 5), t3 and t4 wait too
    alpha = world.add("alpha", limit=5)
    world.limits["alpha"] = 10
    for number in range(3):
        alpha.create_database(f"by_hand_{number}")
    for number in range(5):
        insert(db, f"t{number}", at=T0 + timedelta(seconds=number))
        world.provision(f"t{number}")
    assert node_limits(db, "alpha") == (10, 5)

    # When reconcile runs, then it sends one tenant to probe alpha, not three
    world.clock.advance(60)
    published, summary = run(world)
    assert (summary["unwaited"], [t for t, _, _ in published]) == (1, ["t2"])


def usage_of(db: Any, node: str) -> tuple[int, int]:
    row = db.execute(
        "SELECT placed, other_databases FROM influxdb_nodes WHERE name = %s", (node,)
    ).fetchone()
    return row[0], row[1]


def node_limits(db: Any, name: str) -> tuple[int | None, int | None]:
    row = db.execute(
        "SELECT database_limit, refused_limit FROM influxdb_nodes WHERE name = %s", (name,)
    ).fetchone()
    return row[0], row[1]
