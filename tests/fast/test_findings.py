"""What the reconciler owes a tenant row (worker.findings): level-triggered, one case each."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from tests.fast.conftest import T0
from worker.findings import Kind, View, find

GRACE = timedelta(seconds=60)
DB = "telemetry_acme"
VIEW = View(
    now=T0,
    listed_at=T0 - timedelta(seconds=1),
    grace=GRACE,
    stuck_after=T0 - timedelta(seconds=90),
    listings={"alpha": {DB}, "beta": set(), "gamma": None},
)
ANSWERED = View(
    now=T0,
    listed_at=T0 - timedelta(seconds=1),
    grace=GRACE,
    stuck_after=T0 - timedelta(seconds=90),
    listings={"alpha": {DB}, "beta": set()},
)
LONG_AGO = T0 - timedelta(hours=1)
JUST_NOW = T0 - timedelta(seconds=5)


def row(tenant_id: str = "acme", **columns: Any) -> SimpleNamespace:
    values = {
        "tenant_id": tenant_id,
        "influxdb_state": "pending",
        "influxdb_node": None,
        "influxdb_enqueued_at": None,
        "influxdb_next_attempt_at": None,
        "influxdb_updated_at": LONG_AGO,
        "influxdb_provisioned_at": None,
        "influxdb_error_reason": None,
        "influxdb_adopt": None,
        "influxdb_retry_chain": None,
        "influxdb_attempts": 0,
        "influxdb_create_sent_to": None,
    }
    values.update({f"influxdb_{k}": v for k, v in columns.items()})
    return SimpleNamespace(**values)


@pytest.mark.parametrize(
    ("given", "view", "kind", "node"),
    [
        # owed work whose message never went out, or went out long ago
        (row(), VIEW, Kind.PROVISION, None),
        (row(enqueued_at=LONG_AGO), VIEW, Kind.PROVISION, None),
        # queued a moment ago: its message is on its way
        (row(enqueued_at=JUST_NOW), VIEW, None, None),
        # rows from before the worker: located from the listings, once every server answered
        # (a silent one may hold the tenant's data, the copy found elsewhere a stray)
        (row(adopt="unmarked"), ANSWERED, Kind.RECORD_HOME, "alpha"),
        (row(adopt="unmarked"), VIEW, Kind.UNLOCATED, None),
        (row(adopt="unmarked", tenant_id="other"), VIEW, Kind.UNLOCATED, None),
        (row(adopt="unmarked", tenant_id="other"), ANSWERED, Kind.NEW_HOME, None),
        # a server that left the nodes file: its tenants wait there, whatever their state
        (row(node="delta"), VIEW, Kind.NODE_MISSING, "delta"),
        (
            row(node="delta", state="provisioned", provisioned_at=LONG_AGO),
            VIEW,
            Kind.NODE_MISSING,
            "delta",
        ),
        # a scheduled retry: its message owns it until overdue by the grace
        (row(state="retrying", next_attempt_at=JUST_NOW, retry_chain="m:1"), VIEW, None, None),
        (
            row(state="retrying", next_attempt_at=LONG_AGO, retry_chain="m:1"),
            VIEW,
            Kind.TAKE_OVER,
            None,
        ),
        # deletions: re-sent when lost, taken over when their retry is overdue
        (row(state="deprovisioning", enqueued_at=LONG_AGO), VIEW, Kind.DEPROVISION, None),
        (row(state="deprovisioning", enqueued_at=JUST_NOW), VIEW, None, None),
        (
            row(state="deprovisioning", next_attempt_at=LONG_AGO, retry_chain="m:1"),
            VIEW,
            Kind.TAKE_OVER,
            None,
        ),
        # an attempt older than the time limit: its worker died
        (row(state="provisioning", updated_at=LONG_AGO), VIEW, Kind.STUCK, None),
        (row(state="provisioning", updated_at=JUST_NOW), VIEW, None, None),
        # provisioned: gone from its server is drift; a server that did not answer says nothing
        (row(state="provisioned", node="beta", provisioned_at=LONG_AGO), VIEW, Kind.DRIFT, None),
        (row(state="provisioned", node="alpha", provisioned_at=LONG_AGO), VIEW, None, None),
        (row(state="provisioned", node="gamma", provisioned_at=LONG_AGO), VIEW, None, None),
        (row(state="provisioned", node="beta", provisioned_at=T0), VIEW, None, None),
        (row(state="provisioned", provisioned_at=LONG_AGO), ANSWERED, Kind.RECORD_HOME, "alpha"),
        (row(state="provisioned", provisioned_at=LONG_AGO), VIEW, None, None),
        # failed for a transient reason: resumed once its server answers, stalled until then
        (row(state="failed", error_reason="unreachable", node="alpha"), VIEW, Kind.RESUME, "alpha"),
        (row(state="failed", error_reason="timeout", node="gamma"), VIEW, Kind.STALLED, "gamma"),
        (row(state="failed", error_reason="server_error"), VIEW, Kind.STALLED, None),
        (row(state="failed", error_reason="server_error"), ANSWERED, Kind.RESUME, None),
        (
            row(state="failed", error_reason="unreachable", node="alpha", updated_at=T0),
            VIEW,
            Kind.STALLED,
            "alpha",
        ),
        # failed for a permanent reason: an operator decides
        (row(state="failed", error_reason="name_taken", node="alpha"), VIEW, None, None),
        (row(state="failed", error_reason="worker_lost", node="alpha"), VIEW, None, None),
        (row(state="waiting_for_capacity"), VIEW, None, None),
    ],
)
def test_what_a_row_is_owed(given, view, kind, node):
    finding = find(given, f"telemetry_{given.tenant_id}", view)
    if kind is None:
        assert finding is None
    else:
        assert finding is not None
        assert (finding.kind, finding.node) == (kind, node)


def test_a_row_from_before_the_worker_found_twice_is_ambiguous():
    view = View(
        now=T0,
        listed_at=T0,
        grace=GRACE,
        stuck_after=T0,
        listings={"alpha": {DB}, "beta": {DB}},
    )
    finding = find(row(adopt="unmarked"), DB, view)
    assert finding is not None
    assert (finding.kind, finding.detail) == (Kind.AMBIGUOUS, "alpha, beta")


@pytest.mark.parametrize(
    ("deleted_at", "kind"),
    [
        # deleted there after it was provisioned, and the name listed again: made again
        (JUST_NOW, Kind.REMADE),
        # an earlier deletion of that name (a tenant of the same id before this one): nothing
        (LONG_AGO - timedelta(seconds=1), None),
    ],
)
def test_a_provisioned_database_deleted_since_and_listed_again_is_remade(deleted_at, kind):
    view = replace(VIEW, deletions={("alpha", DB): deleted_at, ("beta", DB): T0})
    given = row(state="provisioned", node="alpha", provisioned_at=LONG_AGO)
    finding = find(given, DB, view)
    if kind is None:
        assert finding is None
    else:
        assert finding is not None and (finding.kind, finding.node) == (kind, "alpha")
    # Gone from the list as well: drift, whatever the deletions say
    drifted = find(given, DB, replace(view, listings={"alpha": set()}))
    assert drifted is not None and drifted.kind is Kind.DRIFT
