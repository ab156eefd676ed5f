"""Placement choices on a real Postgres: least used first, ties by name, full servers skipped."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tests.conftest import tenant_row
from tests.fast.conftest import insert
from worker import store
from worker.db import autocommit, get_engine
from worker.node_config import NodeConfig
from worker.node_marks import mark_full, mark_unavailable, record_observations, room, slot_freed
from worker.placement import (
    NodeUsage,
    NoFreeNode,
    place_tenant,
    start_on_free_node,
    sync_nodes,
    usage,
)
from worker.states import Reason

ALPHA = NodeConfig("alpha", "http://a", None, 3)
BETA = NodeConfig("beta", "http://b", None, 3)
GAMMA = NodeConfig("gamma", "http://c", None, 1)
NOW = datetime(2026, 11, 28, tzinfo=UTC)


def place(tenant_id, nodes, exclude=frozenset()):
    with get_engine().connect() as conn:
        return place_tenant(conn, tenant_id, nodes, exclude=set(exclude))


def place_and_start(tenant_id, nodes, exclude=frozenset()):
    """As a run places a new tenant when a node is free at once: with its start, in one
    statement (it goes the long way, ``place``, only when none is)."""
    with get_engine().connect() as conn:
        sync_nodes(conn, tuple(nodes), force=True)  # each test empties influxdb_nodes
        start = store.update_statement(tenant_id, influxdb_state="provisioning")
        mine = [node for node in nodes if node.name not in exclude]
        with autocommit(conn):
            try:
                return start_on_free_node(conn, start, mine)
            except NoFreeNode:
                return None


def given_placed(db, **per_node: int) -> None:
    for node, count in per_node.items():
        for i in range(count):
            insert(db, f"{node}-{i}", state="provisioned", node=node)


@pytest.mark.parametrize(
    ("placed", "exclude", "expected"),
    [
        ({}, (), "alpha"),  # a tie goes to the first by name
        ({"alpha": 1}, (), "beta"),  # the least used
        ({"alpha": 2, "beta": 1}, (), "gamma"),  # used, not free: gamma holds none yet
        ({"alpha": 1, "beta": 1}, (), "gamma"),  # gamma has 1 slot, used 0
        ({"alpha": 3, "beta": 3, "gamma": 1}, (), None),  # every slot taken
        ({}, ("alpha",), "beta"),  # refused a moment ago in this run
        ({"alpha": 3, "beta": 2, "gamma": 1}, (), "beta"),  # only beta has room
    ],
)
@pytest.mark.parametrize("way", [place, place_and_start])
def test_the_least_used_server_with_room_is_chosen(db, placed, exclude, expected, way):
    given_placed(db, **placed)
    insert(db, "acme")

    chosen = way("acme", [GAMMA, BETA, ALPHA], exclude)

    assert chosen == expected
    assert tenant_row(db, "acme")["influxdb_node"] == expected  # reserved in the same step


def test_a_server_that_answered_422_is_skipped_until_seen_with_room(db):
    insert(db, "acme")
    insert(db, "globex")
    with get_engine().connect() as conn:
        mark_full(conn, "alpha", NOW)
    assert place("acme", [ALPHA, BETA]) == "beta"

    with get_engine().connect() as conn:
        record_observations(conn, [(ALPHA, 1)], now=NOW)  # the reconciler saw room
    assert place("globex", [ALPHA, BETA]) == "alpha"


def test_usage_counts_placed_tenants_and_free_slots(db):
    given_placed(db, alpha=2, gone=4)  # a node that left the pool is not looked up
    with get_engine().connect() as conn:
        slots = {u.node.name: (u.used, u.free, u.full) for u in usage(conn, [ALPHA, BETA])}
    assert slots == {"alpha": (2, 1, False), "beta": (0, 3, False)}


def node_marks(db, name):
    return db.execute(
        "SELECT unavailable_since, unavailable_reason, observed_databases, full_since "
        "FROM influxdb_nodes WHERE name = %s",
        (name,),
    ).fetchone()


@pytest.mark.parametrize("way", [place, place_and_start])
def test_a_server_that_did_not_answer_comes_after_every_answering_one_with_room(db, way):
    given_placed(db, beta=2)  # alpha is the least used, by far
    for tenant_id in ("acme", "globex", "initech"):
        insert(db, tenant_id)
    with get_engine().connect() as conn:
        record_observations(conn, [(BETA, 2)], NOW, unanswered=[(ALPHA, Reason.UNAUTHORIZED)])

    assert way("acme", [ALPHA, BETA]) == "beta"  # the last slot of the one that answers
    # No answering one has room: placed all the same, the long way (the one-statement start
    # takes answering nodes only)
    assert place_and_start("globex", [ALPHA, BETA]) is None
    assert place("globex", [ALPHA, BETA]) == "alpha"

    with get_engine().connect() as conn:
        record_observations(conn, [(ALPHA, 1), (BETA, 3)], NOW)  # its token works again
    assert node_marks(db, "alpha")[:2] == (None, None)


def test_a_failed_listing_keeps_what_was_seen_and_the_first_time_it_failed(db):
    later = NOW + timedelta(minutes=5)
    with get_engine().connect() as conn:
        record_observations(conn, [(ALPHA, 3)], NOW)  # seen full
        record_observations(conn, [], NOW, unanswered=[(ALPHA, Reason.UNREACHABLE)])
        mark_unavailable(conn, "alpha", Reason.UNAUTHORIZED, later)
    assert node_marks(db, "alpha") == (NOW, "unauthorized", 3, NOW)

    with get_engine().connect() as conn:
        record_observations(conn, [(ALPHA, 2)], later)
    assert node_marks(db, "alpha") == (None, None, 2, None)


def test_usage_tells_which_servers_did_not_answer(db):
    with get_engine().connect() as conn:
        mark_unavailable(conn, "beta", Reason.UNREACHABLE, NOW)
        flags = {u.node.name: u.unavailable for u in usage(conn, [ALPHA, BETA])}
    assert flags == {"alpha": False, "beta": True}


def test_a_deletion_that_freed_a_slot_clears_the_unavailable_mark(db):
    # A server that did not list a minute ago answered our deletion: it is back
    with get_engine().connect() as conn:
        record_observations(conn, [], NOW, unanswered=[(ALPHA, Reason.UNAUTHORIZED)])
        slot_freed(conn, ALPHA, [ALPHA], NOW)
    assert node_marks(db, "alpha")[:2] == (None, None)


def one_statement(tenant_id, nodes):
    """The one-statement start alone, on rows already written down (no sync that would wait)."""
    with get_engine().connect() as conn:
        start = store.update_statement(tenant_id, influxdb_state="provisioning")
        with autocommit(conn):
            try:
                return start_on_free_node(conn, start, nodes)
            except NoFreeNode:
                return "long way"


@pytest.mark.parametrize(("way", "expected"), [(place, "alpha"), (one_statement, "long way")])
def test_an_answering_server_held_by_another_placer_is_not_passed_over(db, way, expected):
    # Given alpha answering with room, beta marked (wrong token), and alpha's row held for a
    # moment by another placer
    insert(db, "acme")
    with get_engine().connect() as conn:
        sync_nodes(conn, (ALPHA, BETA), force=True)
        record_observations(conn, [(ALPHA, 0)], NOW, unanswered=[(BETA, Reason.UNAUTHORIZED)])
    held, release = threading.Event(), threading.Event()

    def hold_alpha() -> None:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1 FROM influxdb_nodes WHERE name = 'alpha' FOR UPDATE"))
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold_alpha)
    holder.start()
    held.wait(5)
    threading.Timer(0.3, release.set).start()

    # Then the long way waits for alpha; the one-statement start, which never waits, leaves
    # the tenant to the long way. Neither puts it on beta.
    chosen = way("acme", [ALPHA, BETA])
    holder.join()
    assert chosen == expected


def test_a_server_marked_while_a_placer_waits_for_its_row_is_not_taken(db):
    # Given alpha and beta answering with room (alpha the less used), each row held for a
    # moment by another run: alpha's by one that finds it refuses our token and marks it
    given_placed(db, beta=1)
    insert(db, "acme")
    with get_engine().connect() as conn:
        sync_nodes(conn, (ALPHA, BETA), force=True)
    held = threading.Barrier(3)

    def hold(name: str, then_mark: bool) -> None:
        with get_engine().connect() as conn:
            conn.execute(
                text("SELECT 1 FROM influxdb_nodes WHERE name = :n FOR UPDATE"), {"n": name}
            )
            held.wait(5)
            threading.Event().wait(0.3 if then_mark else 0.6)  # the placer waits for alpha
            if then_mark:
                mark_unavailable(conn, name, Reason.UNAUTHORIZED, NOW)  # and commits
            conn.rollback()

    holders = [threading.Thread(target=hold, args=a) for a in (("alpha", True), ("beta", False))]
    for holder in holders:
        holder.start()
    held.wait(5)

    # When the long way places acme: both rows held, it waits for alpha's, the less used
    chosen = place("acme", [ALPHA, BETA])
    for holder in holders:
        holder.join()

    # Then alpha, marked by the time its row is free, is let go: acme goes to beta, which
    # answers (taking alpha would have sent acme to a server refusing our token)
    assert chosen == "beta"


def test_a_limit_named_before_the_nodes_file_was_written_down_is_kept(db):
    # A 422 writes the server's row first (no limit of the file's yet)
    with get_engine().connect() as conn:
        mark_full(conn, "alpha", NOW, 1)
        sync_nodes(conn, (ALPHA,), force=True)
        (slots,) = usage(conn, [ALPHA])
    assert (slots.node.database_limit, slots.refused_limit, slots.overstated) == (3, 1, 1)


@pytest.mark.parametrize(
    ("used", "full", "named", "expected"),
    [
        (1, False, None, 9),  # no limit named: the file's
        (1, False, 10, 9),  # the file's limit named: the file's
        (3, False, 5, 2),  # a lower limit named: what it leaves
        (5, False, 5, 1),  # none left by it: one, the probe
        (9, False, 5, 1),  # the file leaves one: one
        (10, False, 5, 0),  # the file leaves none: none
        (3, True, 5, 0),  # marked full: none
    ],
)
def test_the_room_an_un_wait_counts_on_a_server(used, full, named, expected):
    slots = NodeUsage(NodeConfig("alpha", "http://a", None, 10), used, full, refused_limit=named)
    assert room(slots) == expected


def test_a_tenant_is_placed_only_on_this_process_s_servers_whatever_the_rows_say(db):
    # Given this worker has written its nodes file down (alpha), and a one-off tenantctl run
    # in a shell with other settings wrote its own since (a "default" server, alpha gone)
    with get_engine().connect() as conn:
        sync_nodes(conn, (ALPHA,), force=True)
    db.execute("UPDATE influxdb_nodes SET configured = false")
    db.execute(
        "INSERT INTO influxdb_nodes (name, configured, database_limit) VALUES ('default', true, 5)"
    )
    insert(db, "acme")

    # When the worker places a tenant, then it goes to alpha, a server this worker can reach
    assert place("acme", (ALPHA,)) == "alpha"
    assert tenant_row(db, "acme")["influxdb_node"] == "alpha"


def test_a_tenant_started_at_once_is_placed_by_this_process_s_limit_whatever_the_rows_say(db):
    # Given alpha, 3 databases by this worker's nodes file, holding 3 tenants, and a row another
    # process wrote from another file since (limit 10)
    with get_engine().connect() as conn:
        sync_nodes(conn, (ALPHA,), force=True)
    for number in range(3):
        insert(db, f"p{number}", state="provisioned", node="alpha")
    db.execute("UPDATE influxdb_nodes SET database_limit = 10 WHERE name = 'alpha'")
    insert(db, "acme")

    # When the worker places a tenant with its start, in one statement: none is free at once
    with get_engine().connect() as conn:
        sync_nodes(conn, (ALPHA,))  # (this file written down before: not again)
        start = store.update_statement("acme", influxdb_state="provisioning")
        with autocommit(conn), pytest.raises(NoFreeNode):
            start_on_free_node(conn, start, [ALPHA])
    assert tenant_row(db, "acme")["influxdb_node"] is None
