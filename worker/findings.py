"""What the reconciler owes one tenant, decided from what is - the row, the time, and one
listing per server - never from what a message claims happened (level-triggered).

``find`` is a pure function: ``worker.reconcile`` applies its findings under row guards.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.identity import Location, locate
from worker.listings import deleted_since
from worker.placement import reserved_only
from worker.states import RESUMABLE_REASONS, Adoption, ProvisioningState, Reason

# The columns of a tenants row that find() reads: all a reconcile batch needs to load.
COLUMNS = (
    "tenant_id",
    "influxdb_state",
    "influxdb_enqueued_at",
    "influxdb_next_attempt_at",
    "influxdb_updated_at",
    "influxdb_provisioned_at",
    "influxdb_node",
    "influxdb_error_reason",
    "influxdb_last_error",
    "influxdb_adopt",
    "influxdb_retry_chain",
    "influxdb_incarnation",
    "influxdb_attempts",
    "influxdb_create_sent_to",
)


class Kind(enum.StrEnum):
    """One kind of finding."""

    PROVISION = "provision"  # owed provisioning never queued, or its message was lost
    DEPROVISION = "deprovision"  # an interrupted deletion
    TAKE_OVER = "take_over"  # a scheduled retry is overdue: its message was lost
    STUCK = "stuck"  # an attempt outlived the task time limit: its worker died
    DRIFT = "drift"  # provisioned, and its database is gone from its server
    REMADE = "remade"  # provisioned, and its database was deleted since and made again
    RECORD_HOME = "record_home"  # a row without a server: its database was found on one
    NEW_HOME = "new_home"  # a row from before the worker: confirmed absent everywhere
    AMBIGUOUS = "ambiguous"  # a row from before the worker: found on several servers
    UNLOCATED = "unlocated"  # a row from before the worker: a server did not answer
    RESUME = "resume"  # failed for a transient reason, and its server answers again
    STALLED = "stalled"  # failed for a transient reason, its server still silent
    NODE_MISSING = "node_missing"  # its server left the nodes file: it waits there


@dataclass(frozen=True)
class Finding:
    kind: Kind
    node: str | None = None  # RECORD_HOME: where; RESUME/STALLED: which server
    detail: str | None = None


@dataclass(frozen=True)
class View:
    """What one reconcile run knows of the world when it judges a row."""

    now: datetime
    listed_at: datetime  # when the servers were listed
    grace: timedelta  # how long queued work may wait before its message counts as lost
    stuck_after: datetime  # an attempt updated before this has outlived the time limit
    listings: Mapping[str, Collection[str] | None]  # per configured server; None: no answer
    # (server, database) -> when that server last soft-deleted a database of that name (the
    # listing's NAME-YYYYMMDDTHHMMSS copies, InfluxDB's clock, UTC)
    deletions: Mapping[tuple[str, str], datetime] = field(default_factory=dict)
    # Servers left out of the nodes file that a listing saw within the hour: unanswered, to
    # locate a row from before the worker (its data may be there, and the server back)
    departed: tuple[str, ...] = ()

    def locate(self, database: str) -> Location:
        """Where a row without a server has its database (a server just left: unanswered)."""
        return locate(database, self.listings, self.departed)

    @property
    def all_answered(self) -> bool:
        return bool(self.listings) and all(n is not None for n in self.listings.values())


def find(row: Any, database: str, view: View) -> Finding | None:
    """What ``row`` (a tenants row) is owed, or None."""
    node: str | None = row.influxdb_node
    if node is not None and node not in view.listings and not reserved_only(row):
        return Finding(Kind.NODE_MISSING, node)  # (a mere reservation: its run lets it go)
    state = row.influxdb_state
    queued_long_ago = _lost(row.influxdb_enqueued_at, row.influxdb_updated_at, view)
    overdue = row.influxdb_next_attempt_at is None or (
        row.influxdb_next_attempt_at < view.now - view.grace
    )
    if state == ProvisioningState.PENDING:
        if node is None and row.influxdb_adopt == Adoption.UNMARKED:
            return _locate(database, view)
        return Finding(Kind.PROVISION) if queued_long_ago else None
    if state == ProvisioningState.RETRYING:
        return Finding(Kind.TAKE_OVER) if overdue else None
    if state == ProvisioningState.DEPROVISIONING:
        if row.influxdb_retry_chain is not None:
            return Finding(Kind.TAKE_OVER) if overdue else None
        return Finding(Kind.DEPROVISION) if queued_long_ago else None
    if state == ProvisioningState.PROVISIONING:
        return Finding(Kind.STUCK) if row.influxdb_updated_at < view.stuck_after else None
    if state == ProvisioningState.FAILED:
        return _resume(row, view)
    if state == ProvisioningState.PROVISIONED:
        return _verify(row, database, view)
    return None


# The longest a message re-sent behind a backlog waits before it is sent again, in graces.
MAX_RESEND_GRACES = 16


def _lost(sent_at: datetime | None, since: datetime, view: View) -> bool:
    """Whether owed work's message, sent at ``sent_at`` for a row in its state ``since``,
    counts as lost: never sent, or sent longer ago than the grace, or than the row had waited
    when it was sent (at most ``MAX_RESEND_GRACES`` graces). A message queued behind a backlog
    longer than the grace is sent again after one grace, then two, four...: not once a run."""
    if sent_at is None:
        return True
    waited = min(max(sent_at - since, view.grace), MAX_RESEND_GRACES * view.grace)
    return sent_at < view.now - waited


def _locate(database: str, view: View) -> Finding:
    location = view.locate(database)
    if location.home:
        return Finding(Kind.RECORD_HOME, location.home)
    if len(location.found) > 1:
        return Finding(Kind.AMBIGUOUS, detail=", ".join(location.found))
    if location.absent:
        return Finding(Kind.NEW_HOME)
    return Finding(Kind.UNLOCATED, detail=", ".join(location.unanswered))


def _resume(row: Any, view: View) -> Finding | None:
    if Reason.parse(row.influxdb_error_reason) not in RESUMABLE_REASONS:
        return None  # permanent: an operator decides
    node: str | None = row.influxdb_node
    answered = view.listings.get(node) is not None if node else view.all_answered
    # Failed after we listed: the answer we saw may predate the failure.
    if answered and row.influxdb_updated_at < view.listed_at:
        return Finding(Kind.RESUME, node)
    return Finding(Kind.STALLED, node)


def _verify(row: Any, database: str, view: View) -> Finding | None:
    if row.influxdb_provisioned_at is None or row.influxdb_provisioned_at >= view.listed_at:
        return None  # provisioned after we looked: the listings cannot tell
    node: str | None = row.influxdb_node
    if node is None:  # provisioned before the pool existed
        location = view.locate(database)
        if location.home:
            return Finding(Kind.RECORD_HOME, location.home)
        return Finding(Kind.DRIFT) if location.absent else None
    seen = view.listings.get(node)
    if seen is None:
        return None
    if database not in seen:
        return Finding(Kind.DRIFT)
    # Deleted behind our back after we provisioned it, and the name is back: a writer (InfluxDB
    # creates a database on the first write) or a person made it again, without its marker.
    deleted_at = view.deletions.get((node, database))
    if deleted_at is not None and deleted_since(deleted_at, row.influxdb_provisioned_at):
        # (Maybe an earlier tenant of the id, deleted as this one was made: the run reads the
        # database's markers before it acts, worker.reconcile.)
        return Finding(Kind.REMADE, node, f"{deleted_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
    return None
