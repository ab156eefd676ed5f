"""The reconciler's set-based pass is exact: it passes over only rows ``find`` owes nothing,
and for the rows it keeps, its narrowed view of the listings gives ``find`` the same answer
as the whole listings would."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.fast.conftest import T0
from worker import store
from worker.db import get_engine
from worker.findings import COLUMNS, Kind, View, find
from worker.listings import (
    LISTED_TABLE,
    clock_shift,
    deleted_since,
    on_our_clock,
    run_listings,
    soft_deleted,
)
from worker.states import Adoption, ProvisioningState, Reason

PREFIX = "telemetry_"
LISTED_AT = T0 - timedelta(minutes=1)
LONG_AGO = T0 - timedelta(hours=1)
JUST_NOW = T0 - timedelta(seconds=30)  # after the servers were listed
CONFIGURED = ("alpha", "beta", "silent")  # silent: configured, did not answer
NODES = (None, "alpha", "silent", "gone")  # gone: no longer in the nodes file
HOLDERS = ((), ("alpha",), ("beta",), ("alpha", "beta"))  # where the database is listed


def _rows() -> list[dict[str, Any]]:
    rows = []
    combos = itertools.product(
        ProvisioningState,
        NODES,
        (None, LONG_AGO, JUST_NOW),  # provisioned_at
        HOLDERS,
        (Reason.TIMEOUT, Reason.UNAUTHORIZED),
        (None, Adoption.UNMARKED),
        (None, LONG_AGO, JUST_NOW),  # enqueued_at, next_attempt_at, updated_at
    )
    for number, (state, node, provisioned_at, holders, reason, adopt, when) in enumerate(combos):
        rows.append(
            {
                "tenant_id": f"t{number:05d}",
                "state": state.value,
                "node": node,
                "provisioned_at": provisioned_at,
                "holders": holders,
                "reason": reason.value,
                "adopt": adopt.value if adopt else None,
                "when": when,
                "updated_at": when or LONG_AGO,
            }
        )
    return rows


def test_the_set_based_pass_keeps_every_row_find_owes_something(db):
    rows = _rows()
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node, "
            "influxdb_provisioned_at, influxdb_error_reason, influxdb_adopt, "
            "influxdb_enqueued_at, influxdb_next_attempt_at, influxdb_updated_at, "
            "influxdb_retry_chain) VALUES (%(tenant_id)s, 'n', %(state)s, %(node)s, "
            "%(provisioned_at)s, %(reason)s, %(adopt)s, %(when)s, %(when)s, %(updated_at)s, "
            "CASE WHEN %(when)s::timestamptz IS NULL THEN NULL ELSE 'chain:0' END)",
            rows,
        )
    listed: dict[str, set[str]] = {"alpha": set(), "beta": set()}
    for row in rows:
        for holder in row["holders"]:
            listed[holder].add(PREFIX + row["tenant_id"])
    whole = {"alpha": frozenset(listed["alpha"]), "beta": frozenset(listed["beta"]), "silent": None}

    def view(listings: Any) -> View:
        return View(T0, LISTED_AT, timedelta(seconds=60), T0 - timedelta(seconds=15), listings)

    with get_engine().connect() as conn:
        expected = {
            r.tenant_id: find(r, PREFIX + r.tenant_id, view(whole))
            for r in store.page(conn, "", len(rows), COLUMNS)
        }
        with run_listings(conn, PREFIX) as seen:
            with seen.copying() as copy_list:
                copy_list("alpha", listed["alpha"])
                copy_list("beta", listed["beta"])
            kept = seen.select_owed(CONFIGURED, LISTED_AT)
            narrowed = {}
            for batch in seen.batches(97, COLUMNS):
                batch_view = view(seen.view_of(batch, CONFIGURED))
                narrowed.update(
                    {r.tenant_id: find(r, PREFIX + r.tenant_id, batch_view) for r in batch}
                )

    owed = {tenant_id for tenant_id, finding in expected.items() if finding is not None}
    assert len(expected) == len(rows)
    assert owed <= narrowed.keys(), sorted(owed - narrowed.keys())[:5]
    assert {t: narrowed[t] for t in narrowed} == {t: expected[t] for t in narrowed}
    assert kept == len(narrowed)
    # And the pass is worth having: the healthy rows are passed over.
    healthy = [
        r["tenant_id"]
        for r in rows
        if r["state"] == ProvisioningState.PROVISIONED
        and r["node"] == "alpha"
        and "alpha" in r["holders"]
    ]
    assert healthy and not set(healthy) & narrowed.keys()
    assert len(narrowed) < len(rows) - len(healthy) / 2


def test_a_name_that_cannot_be_stored_is_skipped_not_fatal(db):
    # Given a provisioned tenant on alpha, and alpha's list holding its database beside names a
    # broken server might send: a NUL, a lone surrogate
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node, "
        "influxdb_provisioned_at) VALUES ('ok', 'n', 'provisioned', 'alpha', %s)",
        (LONG_AGO,),
    )
    with get_engine().connect() as conn, run_listings(conn, PREFIX) as seen:
        # When the list is copied and the owed rows selected
        with seen.copying() as copy_list:
            copy_list("alpha", ["bad\x00name", "\ud800", PREFIX + "ok"])
        kept = seen.select_owed(["alpha"], LISTED_AT)

    # Then the run goes on, and the tenant is seen where it is: nothing is owed
    assert kept == 0


@pytest.mark.parametrize("count", [3, 25_001])  # one write, and several (10,000 rows each)
def test_every_printable_name_is_copied_as_it_is(db, count):
    # Given lists holding names that mean something in COPY's text format - a backslash,
    # "\\N" (NULL), "\\t" - and names beyond ASCII, on two servers
    odd = [PREFIX + "a\\b", "\\N", "x\\ty", "\\", "fin\\", "télé_ü", "雲"]
    names = odd + [f"{PREFIX}n{i}" for i in range(count - 3)]
    with get_engine().connect() as conn, run_listings(conn, PREFIX) as seen:
        # When they are copied
        with seen.copying() as copy_list:
            copy_list("alpha", names)
            copy_list("beta", ["\\N", "bad\x00name"])
        stored = conn.execute(text(f"SELECT node, database FROM {LISTED_TABLE}")).all()

    # Then each is stored as it was sent, on its server's row; the unprintable one is skipped
    expected = [("alpha", name) for name in names] + [("beta", "\\N")]
    assert sorted(map(tuple, stored)) == sorted(expected)


def test_the_query_and_find_draw_the_made_again_line_in_the_same_place(db):
    # Given tenants provisioned 0.4 s into a second, each with its database listed on alpha and
    # a soft-deleted copy stamped (whole seconds) two and one seconds before, in the same
    # second, and the second after
    provisioned = LONG_AGO.replace(microsecond=400_000)
    offsets = {"before2": -2, "before1": -1, "same": 0, "after": 1}
    for tenant_id in offsets:
        db.execute(
            "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node, "
            "influxdb_provisioned_at) VALUES (%s, 'n', 'provisioned', 'alpha', %s)",
            (tenant_id, provisioned),
        )
    stamps = {
        t: provisioned.replace(microsecond=0) + timedelta(seconds=s) for t, s in offsets.items()
    }
    deleted = [f"{PREFIX}{t}-{stamp:%Y%m%dT%H%M%S}" for t, stamp in stamps.items()]

    # When the reconciler's query selects the owed rows, and find judges them
    with get_engine().connect() as conn, run_listings(conn, PREFIX) as seen:
        with seen.copying() as copy_list:
            copy_list("alpha", [PREFIX + t for t in offsets], deleted)
        seen.select_owed(["alpha"], LISTED_AT)
        judged = {}
        for batch in seen.batches(10, COLUMNS):
            listings = seen.view_of(batch, ["alpha"])
            batch_view = View(T0, LISTED_AT, timedelta(seconds=60), T0, listings, seen.deletions)
            judged.update({r.tenant_id: find(r, PREFIX + r.tenant_id, batch_view) for r in batch})

    # Then both, and deleted_since, take a deletion in the second of the provisioning or
    # later as after it, and none before
    assert {t for t in stamps if deleted_since(stamps[t], provisioned)} == {"same", "after"}
    assert judged.keys() == {"same", "after"}
    assert {finding.kind for finding in judged.values() if finding} == {Kind.REMADE}
    assert all(judged.values())


@pytest.mark.parametrize(
    ("date", "shift"),
    [
        ("Sat, 05 Dec 2026 11:00:00 GMT", timedelta(hours=1)),  # the server an hour behind
        ("Sat, 05 Dec 2026 12:00:00 +0100", timedelta(hours=1)),  # the same time, in a zone
        (None, None),  # no Date: read as if on our clock
        ("yesterday", None),
        ("Sat, 05 Dec 2026 11:00:00 -0000", None),  # no zone said
        ("Mon, 01 Jan 2026 00:00:00 +99999999999999999999999", None),  # overflows
    ],
)
def test_a_servers_clock_is_read_from_its_date_header(date, shift):
    assert clock_shift(date, datetime(2026, 12, 5, 12, tzinfo=UTC)) == shift


def test_a_stamp_that_leaves_real_time_is_not_judged():
    stamp = datetime(2026, 12, 5, 10, 10, 10, tzinfo=UTC)
    assert on_our_clock(stamp, timedelta(hours=-1)) == stamp - timedelta(hours=1)
    assert on_our_clock(stamp, None) == stamp
    # a server whose Date is in year 9999, or whose stamp is: nothing to compare
    assert on_our_clock(stamp, datetime.max.replace(tzinfo=UTC) - stamp) is None
    assert on_our_clock(datetime(9999, 12, 31, tzinfo=UTC), None) is None
    assert on_our_clock(datetime(1, 1, 2, tzinfo=UTC), timedelta(days=-5)) is None
    assert soft_deleted("telemetry_acme-20261205T101010-7") == ("telemetry_acme", stamp)
    assert soft_deleted("telemetry_acme-20261399T101010") == (
        "telemetry_acme-20261399T101010",
        None,
    )
