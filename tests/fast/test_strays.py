"""Strays and orphans, found from the reconcile run's own listings: what is reported, what is
not, how the table follows the servers from run to run, and where operators read it (the CLI,
/metrics). Nothing here is ever deleted on a server."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import threading
import time
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from api_hooks.cli import main as tenantctl
from influxdb3_standin.server import StandIn
from tests.fast.conftest import T0, Published, World, insert
from worker import locations
from worker.db import get_engine
from worker.metrics import ProvisioningCollector
from worker.reconcile import reconcile


def run(world: World) -> dict[str, Any]:
    world.clock.advance(60)  # the tenants' last changes came before this run's listings
    summary = reconcile(get_engine(), world.pool(), world.settings, Published(), clock=world.clock)
    return summary.as_dict()


def stray_and_orphan_on_beta(db: psycopg.Connection[Any], world: World) -> StandIn:
    """acme at home on alpha with a stray on beta, and an orphan on beta, seen by one run."""
    world.add("alpha")
    beta = world.add("beta")
    insert(db, "acme", state="provisioned", node="alpha", provisioned_at=T0)
    beta.create_database("telemetry_acme")
    beta.create_database("telemetry_ghost")
    run(world)
    return beta


def recorded(db: psycopg.Connection[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute("SELECT * FROM influxdb_strays").fetchall()
    return {(row.pop("node"), row.pop("database")): row for row in rows}


def test_strays_and_orphans_are_reported_and_the_rest_is_not(db, world: World, caplog):
    # Given acme at home on alpha, and its points also written to beta by a misrouted writer
    world.add("alpha").create_database("telemetry_acme")
    beta = world.add("beta", limit=10)
    beta.create_database("telemetry_acme")
    insert(db, "acme", state="provisioned", node="alpha", provisioned_at=T0)
    # and on beta: a database of no tenant, a row from before the worker not located yet, our
    # own create whose answer was never seen, a soft-deleted one, a database of another prefix
    for name in ("ghost", "old", "sent", "gone"):
        beta.create_database(f"telemetry_{name}")
    beta.delete_database("telemetry_gone")  # (renamed telemetry_gone-YYYYMMDDTHHMMSS)
    beta.create_database("billing")
    insert(db, "old", adopt="unmarked")
    insert(db, "sent", create_sent_to="beta", enqueued_at=T0)

    # When the reconciler runs
    with caplog.at_level(logging.WARNING, logger="worker.strays"):
        summary = run(world)

    # Then the stray names its tenant and its home, the orphan stands alone, nothing else shows
    now = world.clock()
    assert recorded(db) == {
        ("beta", "telemetry_acme"): {
            "kind": "stray",
            "tenant_id": "acme",
            "home_node": "alpha",
            "first_seen_at": now,
            "last_seen_at": now,
        },
        ("beta", "telemetry_ghost"): {
            "kind": "orphan",
            "tenant_id": None,
            "home_node": None,
            "first_seen_at": now,
            "last_seen_at": now,
        },
    }
    assert (summary["strays"], summary["orphans"]) == (1, 1)
    # one warning per new one, naming server, database, kind and tenant
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "node=beta database=telemetry_acme kind=stray tenant=acme home=alpha" in warnings[0]
    assert "node=beta database=telemetry_ghost kind=orphan tenant=-" in warnings[1]
    # and nothing was deleted anywhere
    assert len(beta.databases()) == 5


def test_a_leftover_of_a_deleted_tenant_whose_id_ends_like_a_deletion_stamp_is_an_orphan(
    db, world: World
):
    # Given an active database of a tenant id that ends like a soft-deletion stamp, whose
    # tenant is gone (soft-deleted databases are listed apart: this one is not one)
    world.add("alpha").create_database("telemetry_trial-20250101T120000")

    # When the reconciler runs
    summary = run(world)

    # Then it is reported as an orphan, like any other
    assert {key: row["kind"] for key, row in recorded(db).items()} == {
        ("alpha", "telemetry_trial-20250101T120000"): "orphan"
    }
    assert summary["orphans"] == 1


def test_a_tenant_with_no_home_yet_has_strays_too(db, world: World):
    # Given a new tenant waiting for room (no server yet), whose name a misrouted writer's
    # first write made a database of on beta
    world.add("alpha")
    world.add("beta").create_database("telemetry_early")
    insert(db, "early", state="waiting_for_capacity")

    # When the reconciler runs
    summary = run(world)

    # Then it is reported: a stray of a tenant with no home
    assert {key: (row["kind"], row["home_node"]) for key, row in recorded(db).items()} == {
        ("beta", "telemetry_early"): ("stray", None)
    }
    assert summary["strays"] == 1


def test_a_server_that_leaves_the_pool_takes_its_records_with_it(db, world: World):
    # Given a stray and an orphan recorded on beta
    beta = stray_and_orphan_on_beta(db, world)
    assert len(recorded(db)) == 2

    # When beta leaves the nodes file
    del world.servers["beta"]
    beta.stop()
    run(world)

    # Then nothing is recorded of it: no alert stays up for a server nobody lists
    assert recorded(db) == {}
    assert stray_metric(world) == {
        ("alpha", "orphan"): 0.0,
        ("alpha", "stray"): 0.0,
    }


@pytest.mark.parametrize("published", [False, True], ids=["pending", "published"])
def test_a_tenant_deleted_while_the_servers_are_listed_is_no_orphan_yet(
    db, world: World, published
):
    # Given two tenants whose databases are on alpha, and a listing of alpha that takes 1 s
    server = world.add("alpha")
    for name in ("stays", "goes"):
        server.create_database(f"telemetry_{name}")
        insert(db, name, state="provisioned", node="alpha", provisioned_at=T0)
    server.set_latency(1.0)

    # When "goes" is deleted (its row removed, its database not yet) while alpha is listed,
    # the change still pending or already published (numbered after the run's version)
    running = threading.Thread(target=run, args=(world,))
    running.start()
    time.sleep(0.4)
    db.execute("DELETE FROM tenants WHERE tenant_id = 'goes'")
    if published:
        with get_engine().connect() as conn:
            assert locations.publish(conn, wait=True) == 1
    running.join()

    # Then the list, which may predate the deletion, reports nothing of it
    assert recorded(db) == {}

    # And the next run, listing after the deletion, reports the orphan
    server.set_latency(0)
    run(world)
    assert {key: row["kind"] for key, row in recorded(db).items()} == {
        ("alpha", "telemetry_goes"): "orphan"
    }


def test_the_table_follows_the_servers_that_answer(db, world: World, caplog):
    # Given a stray and an orphan on beta, seen by a first run
    beta = stray_and_orphan_on_beta(db, world)
    first = world.clock()

    # When beta is silent at the next run, it keeps what was last seen there
    world.clock.advance(60)
    beta.set_outage(True)
    summary = run(world)
    assert (summary["strays"], summary["orphans"]) == (0, 0)  # counted where listed only
    assert {k: v["last_seen_at"] for k, v in recorded(db).items()} == {
        ("beta", "telemetry_acme"): first,
        ("beta", "telemetry_ghost"): first,
    }

    # When it answers again, the stray is still there (first seen kept), the orphan is gone
    world.clock.advance(60)
    beta.set_outage(False)
    beta.delete_database("telemetry_ghost")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="worker.strays"):
        summary = run(world)
    assert recorded(db) == {
        ("beta", "telemetry_acme"): {
            "kind": "stray",
            "tenant_id": "acme",
            "home_node": "alpha",
            "first_seen_at": first,
            "last_seen_at": world.clock(),
        }
    }
    assert (summary["strays"], summary["orphans"]) == (1, 0)
    assert caplog.records == []  # known ones are not logged again
    # and the stray itself is still on beta: reported, never deleted
    assert "telemetry_acme" in beta.databases()


def test_a_server_silent_since_its_last_listing_shows_how_long(db, world: World):
    # Given alpha and beta listed by a run, and gamma, added later, never answering
    world.add("alpha")
    beta = world.add("beta")
    run(world)
    first = world.clock()
    world.add("gamma").set_outage(True)

    # When beta falls silent and two more runs come, ten minutes apart
    beta.set_outage(True)
    world.clock.advance(600)
    run(world)
    world.clock.advance(600)
    run(world)

    # Then alpha was listed by the last run, beta at the first one only, gamma never (0); beta
    # keeps its last count meanwhile, which is why its time matters
    assert listed_metric(world) == {
        "alpha": world.clock().timestamp(),
        "beta": first.timestamp(),
        "gamma": 0.0,
    }


def test_operators_read_them_from_the_cli_and_metrics(db, world: World, capsys):
    # Given a stray on beta whose name carries a right-to-left override (a server's names are
    # untrusted: recorded here directly, as the listing's copy keeps such names out)
    world.add("alpha")
    world.add("beta")
    insert(db, "acme", state="provisioned", node="alpha", provisioned_at=T0)
    hostile = "telemetry_acme\u202egnp.exe"
    db.execute(
        "INSERT INTO influxdb_strays VALUES "
        "('beta', 'telemetry_acme', 'stray', 'acme', 'alpha', %(t)s, %(t)s), "
        "('beta', %(hostile)s, 'orphan', NULL, NULL, %(t)s, %(t)s)",
        {"t": world.clock(), "hostile": hostile},
    )

    # Then tenantctl --json strays lists them, with times as ISO strings
    listed = cli(capsys, "--json", "strays")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {
            "node": "beta",
            "database": "telemetry_acme",
            "kind": "stray",
            "tenant_id": "acme",
            "home_node": "alpha",
            "first_seen_at": world.clock().isoformat(),
            "last_seen_at": world.clock().isoformat(),
        },
        {
            "node": "beta",
            "database": hostile,
            "kind": "orphan",
            "tenant_id": None,
            "home_node": None,
            "first_seen_at": world.clock().isoformat(),
            "last_seen_at": world.clock().isoformat(),
        },
    ]
    # and the table shows the override as its escape, never as a character a terminal obeys
    table = cli(capsys, "strays").stdout
    assert "\u202e" not in table
    assert "telemetry_acme\\u202egnp.exe" in table
    assert "(2 database(s))" in table

    # and /metrics has one gauge per server and kind, zero included
    assert stray_metric(world) == {
        ("alpha", "stray"): 0.0,
        ("alpha", "orphan"): 0.0,
        ("beta", "stray"): 1.0,
        ("beta", "orphan"): 1.0,
    }


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> subprocess.CompletedProcess[str]:
    """tenantctl in this process (tests/integration/test_cli_entry_point.py runs the program)."""
    code = tenantctl(list(argv))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["tenantctl", *argv], code, out, err)


def listed_metric(world: World) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProvisioningCollector(get_engine(), world.pool()))
    text = generate_latest(registry).decode()
    found = re.findall(
        r'tenant_provisioner_node_last_listed_timestamp_seconds\{node="(\w+)"\} (\S+)', text
    )
    return {node: float(value) for node, value in found}


def stray_metric(world: World) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProvisioningCollector(get_engine(), world.pool()))
    text = generate_latest(registry).decode()
    # (the exposition sorts the labels)
    found = re.findall(
        r'tenant_provisioner_stray_databases\{kind="(\w+)",node="(\w+)"\} (\S+)', text
    )
    return {(node, kind): float(value) for kind, node, value in found}
