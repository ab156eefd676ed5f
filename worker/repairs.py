"""The reconciler's repairs: what it does about one batch's findings (``worker.findings``).

Each change is guarded by the state (and the time) it was found in, and re-checked under the
row lock, skipping rows a worker holds: a worker may have moved the tenant since the row was
read, and the next run judges it again. The work the changes owe (a provisioning, a deletion)
is returned, to be published after the batch's transaction commits (``worker.reconcile``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from worker import store
from worker.findings import Finding, Kind, View
from worker.models import tenants
from worker.placement import lock_nodes
from worker.queues import Job
from worker.runs import new_chain, new_task_id
from worker.states import Adoption, ProvisioningState, Reason

logger = logging.getLogger(__name__)

Owed = tuple[str, Job, str | None]  # tenant, job, the task id that owns its chain (or None)


@dataclass
class Repaired:
    """What a run's repairs did, by kind (counted into its ``ReconcileSummary``)."""

    drift: int = 0
    remade: int = 0  # provisioned, then deleted behind our back and made again (by a write?)
    stuck: int = 0
    taken_over: int = 0  # retry chains whose message was lost, re-published once
    stalled: int = 0  # failed for a transient reason; resume when their server answers
    resumed: int = 0  # stalled tenants whose server answered again: a fresh episode
    deprovisioning: int = 0  # interrupted deletions queued again
    adopted: int = 0  # rows without a server matched to the server holding their database
    new_home: int = 0  # rows from before the worker, confirmed absent everywhere
    unlocated: int = 0  # rows from before the worker, a server silent: they wait
    ambiguous: int = 0  # rows from before the worker found on several servers: name_taken
    node_missing: int = 0  # tenants whose server left the nodes file


class Repairs:
    """Applies one batch's findings, each guarded by the state it was found in."""

    def __init__(self, conn: Connection, view: View, summary: Repaired) -> None:
        self.conn, self.view, self.summary = conn, view, summary
        self.owed: list[Owed] = []

    def apply(self, findings: list[tuple[Any, Finding | None]]) -> list[Owed]:
        by_kind: dict[Kind, list[tuple[Any, Finding]]] = {}
        for row, finding in findings:
            if finding is not None:
                by_kind.setdefault(finding.kind, []).append((row, finding))
        for kind, items in by_kind.items():
            rows = [row for row, _ in items]
            getattr(self, f"_{kind.value}")(rows, [f for _, f in items])
        return self.owed

    def _provision(self, rows: list[Any], _: list[Finding]) -> None:
        self.owed.extend((r.tenant_id, Job.PROVISION, None) for r in rows)

    def _deprovision(self, rows: list[Any], _: list[Finding]) -> None:
        self.owed.extend((r.tenant_id, Job.DEPROVISION, None) for r in rows)
        self.summary.deprovisioning += len(rows)

    def _take_over(self, rows: list[Any], _: list[Finding]) -> None:
        # The scheduled retry's message is overdue: this run's message replaces it as the
        # chain's owner, so the lost one - should it turn up late - is absorbed.
        for row in rows:
            task_id = new_task_id()
            if store.take_over(self.conn, row, new_chain(task_id), self.view.now):
                job = (
                    Job.DEPROVISION
                    if row.influxdb_state == ProvisioningState.DEPROVISIONING
                    else Job.PROVISION
                )
                self.owed.append((row.tenant_id, job, task_id))
                self.summary.taken_over += 1

    def _stuck(self, rows: list[Any], _: list[Finding]) -> None:
        moved = self._to_pending(
            rows,
            ProvisioningState.PROVISIONING,
            tenants.c.influxdb_updated_at < self.view.stuck_after,
            reason=Reason.WORKER_LOST,
            message="attempt did not finish within the task time limit; re-queued",
            new_episode=False,  # the killed attempt counts
        )
        self.summary.stuck += len(moved)

    def _drift(self, rows: list[Any], _: list[Finding]) -> None:
        message = "database missing in InfluxDB; provisioning it again"
        self.summary.drift += len(self._provision_again(rows, message))

    def _remade(self, rows: list[Any], findings: list[Finding]) -> None:
        # Deleted behind our back after it was provisioned, and its name is back: a writer
        # (InfluxDB creates a database on the first write) or a person made it again.
        for row, finding in zip(rows, findings, strict=True):
            message = (
                f"database deleted on node {finding.node} at {finding.detail}, after it was "
                "provisioned, and made again (by a write?); taking it back if it has no marker"
            )
            if self._provision_again([row], message):
                logger.warning("tenant %s: %s", row.tenant_id, message)
                self.summary.remade += 1

    def _provision_again(self, rows: list[Any], message: str) -> list[str]:
        """Provisioned rows (still so, and since before the listing) whose database is gone
        from their server, or was made again there, back to pending. The run takes back a
        database of their name that holds no marker (``Adoption.REMADE``): it was made
        since, on their own server - by their writers, whose points it holds, not by an
        earlier tenant of the id (that one's deletion finished before this row existed). A
        database marked for anyone else stops name_taken (``worker.identity``)."""
        moved: list[str] = []
        for adopt in (Adoption.REMADE, None):  # no server (rows from before the pool): strict
            group = [r for r in rows if (r.influxdb_node is not None) == (adopt is not None)]
            if group:
                moved += self._to_pending(
                    group,
                    ProvisioningState.PROVISIONED,
                    tenants.c.influxdb_provisioned_at < self.view.listed_at,
                    reason=Reason.DRIFT,
                    message=message,
                    new_episode=True,
                    adopt=adopt,
                )
        return moved

    def _resume(self, rows: list[Any], findings: list[Finding]) -> None:
        for row, finding in zip(rows, findings, strict=True):
            where = f"node {finding.node}" if finding.node else "every node"
            self.summary.resumed += len(
                self._to_pending(
                    [row],
                    ProvisioningState.FAILED,
                    tenants.c.influxdb_updated_at < self.view.listed_at,
                    reason=Reason.parse(row.influxdb_error_reason) or Reason.UNREACHABLE,
                    message=f"{where} answers again; resumed after: {row.influxdb_last_error}",
                    new_episode=True,
                )
            )

    def _stalled(self, rows: list[Any], _: list[Finding]) -> None:
        self.summary.stalled += len(rows)

    def _node_missing(self, rows: list[Any], _: list[Finding]) -> None:
        self.summary.node_missing += len(rows)

    def _unlocated(self, rows: list[Any], _: list[Finding]) -> None:
        self.summary.unlocated += len(rows)

    def _record_home(self, rows: list[Any], findings: list[Finding]) -> None:
        # A transaction of its own, holding no tenant's row when it starts: it takes the nodes'
        # rows (name order), then only the tenants' rows nobody holds. A worker writes a tenant's
        # row, then its node's (the slot trigger); a placer locks a node's row, then writes a
        # tenant's: waiting on a tenant while holding nodes would deadlock with either.
        self.conn.commit()
        homes = {
            r.tenant_id: (f.node, r.influxdb_incarnation)
            for r, f in zip(rows, findings, strict=True)
            if f.node
        }
        lock_nodes(self.conn, [node for node, _ in homes.values()])
        adopted = set(store.record_homes(self.conn, homes))
        self.conn.commit()
        self.summary.adopted += len(adopted)
        # Pending ones go on to provisioning there: a 409, the identity check, the marker.
        # (A row held by a worker was skipped: that worker locates it, or the next run does.)
        pending = [
            r
            for r in rows
            if r.tenant_id in adopted and r.influxdb_state == ProvisioningState.PENDING
        ]
        self._provision(pending, [])

    def _new_home(self, rows: list[Any], _: list[Finding]) -> None:
        cleared = store.give_new_homes(self.conn, [r.tenant_id for r in rows], self.view.now)
        self.owed.extend((tenant_id, Job.PROVISION, None) for tenant_id in cleared)
        self.summary.new_home += len(cleared)

    def _ambiguous(self, rows: list[Any], findings: list[Finding]) -> None:
        for row, finding in zip(rows, findings, strict=True):
            message = (
                f"its database exists on nodes {finding.detail}; adopt the right one "
                "(tenantctl adopt TENANT --node NODE)"
            )
            store.fail_unplaced(self.conn, row, Reason.NAME_TAKEN, message, self.view.now)
        self.summary.ambiguous += len(rows)

    def _to_pending(
        self,
        rows: list[Any],
        expected: ProvisioningState,
        still_true: Any,
        *,
        reason: Reason,
        message: str,
        new_episode: bool,
        adopt: Adoption | None = None,
    ) -> list[str]:
        moved = store.to_pending(
            self.conn,
            [r.tenant_id for r in rows],
            expected,
            still_true,
            reason=reason,
            message=message,
            new_episode=new_episode,
            now=self.view.now,
            adopt=adopt,
        )
        self.owed.extend((tenant_id, Job.PROVISION, None) for tenant_id in moved)
        return moved
